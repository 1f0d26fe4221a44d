# MCP tool calls (proxies/mcp). `mcp.call` is a front door, like `connect`: any authenticated
# principal may call a tool, and what the tool then does is decided on its own — a `query` is
# decided statement by statement as sql.* on its connection, exactly as it is for psql, and the
# token's scope (connection:<name>, sql.read, …) narrows it there. To hide or refuse a tool, add
# a rule on `input.command.tool`, for example:
#
#   deny contains {"rule": "no-agent-exec", "reason": "agents may not run commands"} if {
#     input.action == "mcp.call"
#     input.command.tool == "exec"
#     input.principal.kind == "agent"
#   }
package gatehouse

allow if input.action == "mcp.call"
