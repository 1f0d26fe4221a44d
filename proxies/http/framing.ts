// Request framing checks on top of Node's strict parser: whatever two HTTP implementations could
// read differently (where a request ends, which host it is for) is refused before anything else,
// so no second request can hide in the first one's body on the way upstream.

import type { IncomingMessage } from 'node:http'

/** Header field-name token characters (RFC 9110 §5.6.2). */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
/** Field-value characters: visible ASCII, space, tab, and obs-text (no CR, LF, NUL or other controls). */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/

/**
 * Headers with which many frameworks (Express method-override, Rails, Laravel, Google APIs) run a
 * method other than the request line's: the policy judges the request line, so a request that
 * carries one is refused rather than have the upstream run something else than what was judged.
 */
const METHOD_OVERRIDE = new Set(['x-http-method-override', 'x-http-method', 'x-method-override'])

/** Null when the request's framing is unambiguous; otherwise why it is refused. */
export function framingProblem(req: IncomingMessage): string | null {
  if (req.httpVersionMajor !== 1) return 'only HTTP/1.x is served'
  const raw = req.rawHeaders
  let contentLength = 0
  let transferEncoding = 0
  let host = 0
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string
    const value = raw[i + 1] as string
    if (!TOKEN.test(name)) return 'a header name has invalid characters'
    if (!FIELD_VALUE.test(value)) return `header ${name} has invalid characters`
    const lower = name.toLowerCase()
    if (lower === 'content-length') {
      contentLength++
      if (!/^[0-9]+$/.test(value)) return 'Content-Length is not a number'
    } else if (lower === 'transfer-encoding') {
      transferEncoding++
      if (value.trim().toLowerCase() !== 'chunked') return 'Transfer-Encoding other than "chunked" is refused'
    } else if (lower === 'host') host++
    else if (METHOD_OVERRIDE.has(lower)) return `${name} is refused: the method judged is the request line's`
  }
  if (contentLength > 1) return 'more than one Content-Length'
  if (transferEncoding > 1) return 'more than one Transfer-Encoding'
  if (contentLength > 0 && transferEncoding > 0) return 'both Content-Length and Transfer-Encoding'
  // HTTP/1.0 does not require Host, but the gateway routes by it (a connection's host names) and
  // checks absolute-form targets against it: a request without one is refused, not guessed at.
  if (host !== 1)
    return req.httpVersionMinor >= 1 || host > 1 ? 'exactly one Host header is required' : 'a Host header is required, in HTTP/1.0 too'
  return null
}

/**
 * The origin-form target of a request: `/…` as sent, or the path of an absolute-form target that
 * names this gateway's own Host. Null when the target names another host (or is `*`/authority form).
 */
export function originTarget(req: IncomingMessage): string | null {
  const url = req.url ?? ''
  if (url.startsWith('/')) return url
  if (!/^https?:\/\//i.test(url)) return null
  let u: URL
  try {
    u = new URL(url)
  } catch {
    return null
  }
  if (u.username || u.password) return null
  if (u.host.toLowerCase() !== String(req.headers.host ?? '').toLowerCase()) return null
  const afterAuthority = url.slice(url.indexOf('/', url.indexOf('//') + 2))
  return url.indexOf('/', url.indexOf('//') + 2) < 0 ? '/' : afterAuthority
}
