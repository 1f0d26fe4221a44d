# The worked examples of docs/policies.md, as a policy directory. base.rego says who may do
# what at all; each other file is one example, written as a `deny` (or in approvals.yaml and
# masking.yaml) so that it narrows the base, whoever the base allows.
#
#   gatehouse policy test examples/policies     # opa unit tests + examples.cases.yaml
#   gatehouse policy eval examples/policies --input some-input.yaml
package gatehouse

default allow := false

member_of(groups) if {
	some g in input.principal.groups
	g in groups
}

allow if input.action in {"connect", "sql.session", "sql.read"}

allow if {
	input.action == "sql.write"
	member_of({"writers", "oncall"})
}

allow if {
	input.action in {"sql.ddl", "sql.admin"}
	member_of({"dba", "oncall"})
}

# Agents: allowed on their own hop; their scope and their root's hop narrow them, and the
# examples below deny what no agent may do.
allow if input.principal.kind == "agent"
