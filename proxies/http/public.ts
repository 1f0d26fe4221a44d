// What the HTTP proxy offers other plugins (the remote MCP plugin speaks HTTP to its upstreams the
// same way): the upstream pool over the gateway's dialer, and the scan that keeps injected
// credentials out of what a caller sees.

export { maskString, needlesFor } from './scrub.js'
export { createPool, type UpstreamSpec } from './upstream.js'
