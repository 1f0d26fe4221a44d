# Example: writes to prod only inside a change window, Monday to Friday 07:00–18:59 UTC.
# input.time comes pre-parsed (UTC) because the WebAssembly runtime has no clock built-ins:
# time.now_ns() would fail `gatehouse policy build`.
package gatehouse

in_change_window if {
	input.time.weekday in {"Mon", "Tue", "Wed", "Thu", "Fri"}
	input.time.hour >= 7
	input.time.hour < 19
}

deny contains {
	"rule": "prod-change-window",
	"reason": sprintf("writes to prod are allowed Monday to Friday 07:00-19:00 UTC (now %s %02d:%02d)", [input.time.weekday, input.time.hour, input.time.minute]),
} if {
	input.action in {"sql.write", "sql.ddl", "sql.admin"}
	input.connection.labels.env == "prod"
	not in_change_window
}
