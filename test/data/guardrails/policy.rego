# The policy the guardrail tests run under: readers read, writers write, DBAs change schemas, and
# a few guardrails apply to everyone. Deliberately close to the default bundle, plus one
# table-level rule (only hr reads hr.salaries) to test name resolution.
package gatehouse

default allow := false

allow if input.action in {"connect", "sql.session", "sql.read"}

allow if {
	input.action == "sql.write"
	"writers" in input.principal.groups
}

allow if {
	input.action in {"sql.ddl", "sql.admin"}
	"dba" in input.principal.groups
}

deny contains {"rule": "no-unbounded-write", "reason": "UPDATE or DELETE without WHERE"} if {
	input.command.kind in {"update", "delete"}
	not input.command.has_where
}

dangerous_function(f) if f in {
	"pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file",
	"lo_import", "lo_export", "pg_execute_server_program",
}

dangerous_function(f) if startswith(f, "dblink")

deny contains {"rule": "dangerous-function", "reason": sprintf("calling %s is not allowed", [f])} if {
	some f in input.command.functions
	dangerous_function(f)
}

deny contains {"rule": "hr-only", "reason": "only group hr reads hr.salaries"} if {
	"hr.salaries" in input.command.tables
	not "hr" in input.principal.groups
}
