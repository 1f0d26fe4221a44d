# The default Gatehouse policy: what decides when gatehouse.yaml has no `policies:` key.
# Copy this directory, change it, and point `policies:` at your copy.
#
# How a Gatehouse policy is read (docs/policies.md, "The policy contract"):
#
#   * The engine evaluates this package once for EVERY principal in the chain, root first.
#     `input.principal` is the hop being decided; `input.chain` is the whole chain.
#   * A command runs only if every hop has `allow == true` and no hop has a `deny` entry.
#   * A token's scope is enforced by the engine before any of this runs.
#   * `approval` entries (and approvals.yaml) hold a command until someone approves it;
#     `mask` entries (and masking.yaml) mask columns in what comes back.
#
# Test it like code: `gatehouse policy test policies/` runs the *_test.rego unit tests and the
# decision table in default.cases.yaml through the same WebAssembly engine the gateway uses.
package gatehouse

# Deny by default. A hop that no rule below allows denies the command, with the reason
# "no rule allows <action> for <principal>".
default allow := false

# Groups with more than the basics. `gatehouse-admins` is the group of the gateway's own admin
# (the token in <data_dir>/admin.token).
admins := {"gatehouse-admins"}

writers := {"writers"} | admins

schema_owners := {"dba"} | admins

# True when the hop being decided is in one of `groups`.
member_of(groups) if {
	some g in input.principal.groups
	g in groups
}

# Any authenticated principal may open a session: identity was checked before policy runs, and
# what a session may do is decided statement by statement below.
allow if input.action == "connect"

# Everyone may read, and manage their own session: BEGIN/COMMIT, SET of ordinary settings,
# cursors. (Security-relevant settings such as `role` are sql.admin, not sql.session.)
allow if input.action in {"sql.session", "sql.read"}

# INSERT, UPDATE, DELETE, MERGE, SELECT … FOR UPDATE, COPY … FROM STDIN: group writers.
allow if {
	input.action == "sql.write"
	member_of(writers)
}

# Schema changes (sql.ddl) and administration (sql.admin: roles, GRANT, ALTER SYSTEM,
# extensions, VACUUM, server-side COPY): DBAs and gatehouse admins. DDL on connections labelled
# env: prod also waits for a DBA's approval (approvals.yaml).
allow if {
	input.action in {"sql.ddl", "sql.admin"}
	member_of(schema_owners)
}

# sql.other (DO blocks, CALL, COPY … PROGRAM, anything the classifier cannot fully understand)
# is allowed to nobody: no rule above allows it, and guardrails.rego explains why.

# Agents carry no groups of their own. An agent's hop is allowed here; what it may do is
# narrowed by its token's scope (checked by the engine) and by its root's hop, which must allow
# the command too. Guardrails (guardrails.rego) still apply to the agent's hop.
allow if input.principal.kind == "agent"
