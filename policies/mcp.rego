# MCP. Two plugins decide MCP requests:
#
# - the gateway's own MCP server (proxies/mcp): `mcp.call` of its tools (query, exec, …) is a
#   front door, like `connect`; what a tool does is decided on its own — a `query` is decided
#   statement by statement as sql.* on its connection, exactly as it is for psql;
# - remote MCP servers (proxies/mcp-remote, connections of protocol `mcp-remote`): each
#   `tools/call` is `mcp.call` with `input.command.server` (the connection), `.tool` and
#   `.arguments`; `resources/read` is `mcp.resource` (`.uri`); `prompts/get` is `mcp.prompt`
#   (`.prompt`, `.arguments`). What a chain may not use is also left out of its lists.
#
# By default every authenticated principal may call tools and read resources and prompts of the
# connections it may connect to; a token's scope narrows that (`tool:<connection>/<tool>` entries
# name the only tools a delegated agent may call). To hide or refuse a tool, add a rule on
# `input.command.tool`, for example:
#
#   deny contains {"rule": "no-agent-exec", "reason": "agents may not run commands"} if {
#     input.action == "mcp.call"
#     input.command.tool == "exec"
#     input.principal.kind == "agent"
#   }
package gatehouse

allow if input.action == "mcp.call"

allow if input.action in {"mcp.resource", "mcp.prompt"}
