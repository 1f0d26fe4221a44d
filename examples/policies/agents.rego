# Example: agents may never call pg_read_file, pg_ls_dir, lo_export, dblink* or run COPY … PROGRAM,
# whoever they act for. The rule looks at the agent's own hop (input.principal), so a chain
# user → agent is denied at the agent, even when the user could do it.
package gatehouse

agent_forbidden_functions := {"pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "lo_import", "lo_export"}

forbidden_for_agents(f) if f in agent_forbidden_functions

forbidden_for_agents(f) if startswith(f, "dblink")

deny contains {
	"rule": "agent-forbidden-function",
	"reason": sprintf("agents may not call %s", [f]),
} if {
	input.principal.kind == "agent"
	some f in input.command.functions
	forbidden_for_agents(f)
}

# COPY … TO/FROM PROGRAM runs a shell command on the database server. The classifier reports it
# as kind "copy" with program: true (and action sql.other, which base.rego allows nobody anyway).
deny contains {
	"rule": "agent-copy-program",
	"reason": "agents may not run COPY … PROGRAM",
} if {
	input.principal.kind == "agent"
	input.command.kind == "copy"
	input.command.program == true
}

# Example: any chain that contains an agent may not write to prod unless its root is in group
# oncall. input.chain is the whole chain, root first; the rule fires on each agent's hop.
deny contains {
	"rule": "agent-writes-prod-oncall-only",
	"reason": "a chain with an agent may write to prod only when its root is in oncall",
} if {
	input.principal.kind == "agent"
	input.action in {"sql.write", "sql.ddl", "sql.admin"}
	input.connection.labels.env == "prod"
	not "oncall" in input.chain[0].groups
}
