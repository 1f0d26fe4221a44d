# opa unit tests for single hops of the examples; examples.cases.yaml tests whole decisions.
package examples_test

import data.gatehouse

input_for(principal, chain, action, command, env) := {
	"principal": principal,
	"chain": chain,
	"connection": {"name": "app", "protocol": "postgres", "labels": {"env": env}},
	"action": action,
	"command": command,
	"approval": {"granted": false},
	"time": {"rfc3339": "2026-01-07T12:00:00Z", "unix": 1767787200, "weekday": "Wed", "hour": 12, "minute": 0},
}

analyst := {"id": "user:ana", "kind": "user", "groups": ["analysts", "writers"], "scope": []}

bot := {"id": "agent:bot", "kind": "agent", "groups": [], "scope": []}

test_analyst_cannot_write_prod if {
	some d in gatehouse.deny with input as input_for(analyst, [analyst], "sql.write", {"kind": "insert"}, "prod")
	d.rule == "analysts-read-only-on-prod"
}

test_analyst_writes_staging if {
	count(gatehouse.deny) == 0 with input as input_for(analyst, [analyst], "sql.write", {"kind": "insert"}, "staging")
}

test_agent_copy_program if {
	some d in gatehouse.deny with input as input_for(bot, [analyst, bot], "sql.other", {"kind": "copy", "program": true}, "dev")
	d.rule == "agent-copy-program"
}

test_weekend_write_denied if {
	weekend := object.union(input_for(analyst, [analyst], "sql.write", {"kind": "insert"}, "prod"), {"time": {"weekday": "Sat", "hour": 10, "minute": 0}})
	some d in gatehouse.deny with input as weekend
	d.rule == "prod-change-window"
}
