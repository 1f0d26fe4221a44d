# Example: only group hr reads hr.salaries. command.tables is schema-qualified as the server
# resolves it (through the session's search_path), so `SELECT * FROM salaries` after
# `SET search_path = hr` is hr.salaries too. An agent has no groups: it is judged through its
# root's hop, so an agent reads salaries only for someone in hr.
package gatehouse

deny contains {
	"rule": "hr-salaries",
	"reason": "only group hr may read hr.salaries",
} if {
	"hr.salaries" in input.command.tables
	input.principal.kind != "agent"
	not "hr" in input.principal.groups
}
