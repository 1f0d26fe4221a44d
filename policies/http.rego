# HTTP requests through the HTTP proxy (proxies/http): action `http.request`, decided per request
# with `input.command.method`, `.path` (normalised: what the upstream receives), `.query`,
# `.headers` (credentials left out) and, for JSON bodies up to the connection's body_limit,
# `.body` (otherwise `.body_opaque: true`); a WebSocket upgrade has `.upgrade: "websocket"`.
# Reading (GET, HEAD, OPTIONS) is open to everyone, like
# sql.read; other methods need group writers, like sql.write. To close a path, deny the segment
# and everything under it (not a bare prefix: "/administrators" is another path):
#
#   deny contains {"rule": "no-admin", "reason": "the admin API is closed"} if {
#     input.action == "http.request"
#     startswith(concat("", [input.command.path, "/"]), "/admin/")
#   }
package gatehouse

allow if {
	input.action == "http.request"
	input.command.method in {"GET", "HEAD", "OPTIONS"}
}

allow if {
	input.action == "http.request"
	not input.command.method in {"GET", "HEAD", "OPTIONS"}
	member_of(writers)
}
