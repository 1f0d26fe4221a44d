# Unit tests for the default policy (`gatehouse policy test policies/` runs them with `opa test`).
# Each test evaluates ONE hop: the combination of hops, scope and approvals.yaml is the engine's,
# and default.cases.yaml tests it through the engine itself.
package gatehouse_test

import data.gatehouse

alice := {"id": "user:alice", "kind": "user", "groups": [], "scope": []}

writer := {"id": "user:wendy", "kind": "user", "groups": ["writers"], "scope": []}

admin := {"id": "user:admin", "kind": "user", "groups": ["gatehouse-admins"], "scope": []}

agent := {"id": "agent:summarizer", "kind": "agent", "groups": [], "scope": ["sql.read"]}

hop(principal, action, command) := {
	"principal": principal,
	"chain": [principal],
	"connection": {"name": "app", "protocol": "postgres", "labels": {"env": "dev"}},
	"action": action,
	"command": command,
	"approval": {"granted": false},
	"time": {"rfc3339": "2026-01-07T12:00:00Z", "unix": 1767787200, "weekday": "Wed", "hour": 12, "minute": 0},
}

select := {"kind": "select", "tables": ["public.orders"], "write_tables": [], "functions": [], "has_where": false}

update_all := {"kind": "update", "tables": ["public.orders"], "write_tables": ["public.orders"], "functions": [], "has_where": false}

test_anyone_connects if gatehouse.allow with input as hop(alice, "connect", {})

test_anyone_reads if gatehouse.allow with input as hop(alice, "sql.read", select)

test_reader_cannot_write if not gatehouse.allow with input as hop(alice, "sql.write", update_all)

test_writer_writes if gatehouse.allow with input as hop(writer, "sql.write", object.union(update_all, {"has_where": true}))

test_writer_cannot_create_tables if not gatehouse.allow with input as hop(writer, "sql.ddl", {"kind": "create_table"})

test_admin_runs_ddl if gatehouse.allow with input as hop(admin, "sql.ddl", {"kind": "create_table"})

test_nobody_runs_unclassified_sql if {
	not gatehouse.allow with input as hop(admin, "sql.other", {"kind": "do"})
	some d in gatehouse.deny with input as hop(admin, "sql.other", {"kind": "do"})
	d.rule == "unclassified-sql"
}

test_update_without_where_denied_even_for_admins if {
	some d in gatehouse.deny with input as hop(admin, "sql.write", update_all)
	d.rule == "no-unbounded-write"
}

test_update_with_where_not_denied if {
	count(gatehouse.deny) == 0 with input as hop(writer, "sql.write", object.union(update_all, {"has_where": true}))
}

test_dangerous_function_denied if {
	some d in gatehouse.deny with input as hop(alice, "sql.read", object.union(select, {"functions": ["pg_read_file"]}))
	d.rule == "dangerous-function"
}

test_dblink_family_denied if {
	some d in gatehouse.deny with input as hop(alice, "sql.read", object.union(select, {"functions": ["dblink_exec"]}))
	d.rule == "dangerous-function"
}

test_admin_may_call_dangerous_function if {
	count(gatehouse.deny) == 0 with input as hop(admin, "sql.read", object.union(select, {"functions": ["pg_ls_dir"]}))
}

test_agent_hop_allowed if gatehouse.allow with input as hop(agent, "sql.write", update_all)

test_agent_never_calls_dangerous_function if {
	some d in gatehouse.deny with input as hop(agent, "sql.read", object.union(select, {"functions": ["lo_export"]}))
	d.rule == "dangerous-function"
}

ssh_hop(principal, command) := object.union(hop(principal, "ssh.exec", command), {
	"chain": [alice, agent],
	"connection": {"name": "web", "protocol": "ssh", "labels": {}},
})

test_agent_never_runs_opaque_ssh_lines if {
	some d in gatehouse.deny with input as ssh_hop(agent, {"opaque": true, "opaque_reason": "a command substitution"})
	d.rule == "agents-no-opaque-commands"
}

test_agents_root_hop_refuses_opaque_ssh_lines_too if {
	some d in gatehouse.deny with input as ssh_hop(alice, {"opaque": true, "opaque_reason": "a redirection"})
	d.rule == "agents-no-opaque-commands"
}

test_plain_ssh_lines_are_not_refused_as_opaque if {
	denies := gatehouse.deny with input as ssh_hop(agent, {"opaque": false, "programs": [["ls"]]})
	every d in denies {
		d.rule != "agents-no-opaque-commands"
	}
}
