// What the HTTP-speaking plugins (HTTP, Kubernetes, remote MCP) share at the socket and header level.

import type { IncomingMessage, Server as HttpServer } from 'node:http'
import type { Socket } from 'node:net'
import { type SecureContext, TLSSocket } from 'node:tls'

/**
 * Request headers never forwarded to an upstream: those that describe one hop (RFC 9110 §7.6.1) and
 * the caller's own credentials for the gateway. `Expect: 100-continue` is answered to the caller by
 * node:http itself, and the upstream request is sent with its whole body.
 */
export const HOP_BY_HOP_HEADERS: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'host',
  'authorization',
  'proxy-authorization',
  'expect',
])

const NO_TOKENS: ReadonlySet<string> = new Set()
/** The last `Connection` value and its tokens: clients repeat one value (`keep-alive`) on every request. */
let lastConnection = ''
let lastTokens: ReadonlySet<string> = NO_TOKENS

/** The header names a request's `Connection` header lists: they describe this hop too (RFC 9110 §7.6.1). */
export function connectionTokens(req: IncomingMessage): ReadonlySet<string> {
  const v = req.headers.connection
  if (v === undefined) return NO_TOKENS
  const text = String(v)
  if (text === lastConnection) return lastTokens
  const tokens: ReadonlySet<string> = new Set(
    text
      .toLowerCase()
      .split(',')
      .map((s) => s.trim()),
  )
  lastConnection = text
  lastTokens = tokens
  return tokens
}

/** Whether a socket's remote address is this host's own (plaintext is accepted only from there). */
export function isLoopback(addr: string | undefined): boolean {
  if (!addr) return false
  return addr === '::1' || addr.startsWith('127.') || addr.startsWith('::ffff:127.')
}

export interface SniffOptions {
  readonly secureContext: SecureContext
  /** Plaintext from any address (the operator's `tls: off`); otherwise from loopback only. */
  readonly allowPlaintext: boolean
  /** The answer to a plaintext connection that may not go on (a whole HTTP response). */
  readonly plaintextRefusal: string
}

/**
 * Hands a raw connection to `http` as TLS when its first byte is a handshake record, as plaintext
 * from loopback (or anywhere when allowed), and otherwise answers `plaintextRefusal` and closes. One listener serves both, so
 * a caller that forgot `https://` gets a clear answer instead of a TLS alert it cannot read.
 */
export function sniffTls(socket: Socket, http: HttpServer, opts: SniffOptions): void {
  socket.setTimeout(30_000, () => socket.destroy())
  socket.once('data', (first: Buffer) => {
    socket.setTimeout(0)
    socket.pause()
    socket.unshift(first)
    if (first[0] === 0x16) {
      const tls = new TLSSocket(socket, { isServer: true, secureContext: opts.secureContext, ALPNProtocols: ['http/1.1'] })
      tls.on('error', () => tls.destroy())
      http.emit('connection', tls)
      return
    }
    if (!opts.allowPlaintext && !isLoopback(socket.remoteAddress)) {
      socket.end(opts.plaintextRefusal)
      return
    }
    http.emit('connection', socket)
    // The first chunk was put back into the paused stream: let the HTTP parser have it.
    socket.resume()
  })
}
