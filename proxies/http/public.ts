// What the HTTP proxy offers other plugins built on HTTP (the remote MCP plugin speaks HTTP to its
// upstreams the same way; the Kubernetes proxy serves kubectl the same way): the upstream pool
// over the gateway's dialer, the scan that keeps injected credentials out of what a caller sees,
// the framing checks and the `/c/<connection>` routing.

export { framingProblem, originTarget } from './framing.js'
export { maskString, needlesFor } from './scrub.js'
export { route, type Routed } from './target.js'
export { createPool, parseUpstreamUrl, type UpstreamSpec, upstreamSpec } from './upstream.js'
