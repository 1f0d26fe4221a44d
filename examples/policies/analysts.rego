# Example: analysts may only read `env: prod` connections — on prod, an analyst can connect,
# manage the session and read, nothing else, whatever other group it is in.
package gatehouse

deny contains {
	"rule": "analysts-read-only-on-prod",
	"reason": sprintf("analysts may only read on %s (env: prod)", [input.connection.name]),
} if {
	"analysts" in input.principal.groups
	input.connection.labels.env == "prod"
	not input.action in {"connect", "sql.session", "sql.read"}
}
