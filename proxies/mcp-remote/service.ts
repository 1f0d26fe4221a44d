// The HTTP side: `/mcp-remote/<connection>` on the API listener. Every request carries the caller's
// Gatehouse token. An `initialize` without a session id opens a Gatehouse session (identity, the
// `connect` decision, the connection's secrets) and an upstream MCP session; the session id the
// agent gets is the gateway's own (the upstream's never leaves the gateway), bound to the exact
// token that opened it and to its connection. The engine ending the session (revocation, kill,
// expiry) closes both sides and every stream open on it.

import { createHash, randomUUID, timingSafeEqual } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { isIP } from 'node:net'
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js'
import { Bridge, type RemoteContext } from './bridge.js'

export const MOUNT_PATH = '/mcp-remote'
/** Open sessions at most, in all and per token (the least recently used is closed to make room). */
export const MAX_SESSIONS = 1000
export const MAX_SESSIONS_PER_TOKEN = 16
/**
 * Open sessions at most per delegation chain's root principal (`max_sessions_per_root` on the
 * connection being opened), counted over all remote MCP connections: an agent can mint sub-agent
 * tokens at will, so the per-token limit alone would let one chain take every slot of MAX_SESSIONS.
 */
export const DEFAULT_MAX_SESSIONS_PER_ROOT = 100
/** A session nobody used for this long is closed. */
export const SESSION_IDLE_MS = 30 * 60_000

const CONNECTION_NAME = /^[A-Za-z0-9_.-]{1,63}$/

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.end()
    return
  }
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers })
  res.end(JSON.stringify(body))
}

function rpcError(res: ServerResponse, status: number, code: number, message: string, headers: Record<string, string> = {}): void {
  sendJson(res, status, { jsonrpc: '2.0', error: { code, message }, id: null }, headers)
}

function tokenHash(token: string): Buffer {
  return createHash('sha256').update(token).digest()
}

/** A quoted-string value for WWW-Authenticate (RFC 9110 §5.6.4). */
function quoted(s: string): string {
  return `"${s.replace(/[\\"]/g, '\\$&').replace(/[\r\n]/g, ' ')}"`
}

function rootLimit(v: unknown): number {
  return typeof v === 'number' ? v : DEFAULT_MAX_SESSIONS_PER_ROOT
}

export class RemoteMcpService {
  private readonly sessions = new Map<string, Bridge>()
  /** Sessions being opened, per root principal: counted against its limit before they are listed. */
  private readonly opening = new Map<string, number>()
  private readonly sweeper: NodeJS.Timeout
  private stopped = false

  constructor(private readonly ctx: RemoteContext) {
    this.sweeper = setInterval(() => this.sweep(), 60_000)
    this.sweeper.unref()
  }

  private unauthorized(res: ServerResponse, description?: string): void {
    const params = ['realm="gatehouse"']
    if (description) params.push('error="invalid_token"', `error_description=${quoted(description)}`)
    sendJson(
      res,
      401,
      { error: description ? 'invalid_token' : 'unauthorized', error_description: description ?? 'a Gatehouse bearer token is required' },
      { 'www-authenticate': `Bearer ${params.join(', ')}` },
    )
  }

  async handle(req: IncomingMessage, res: ServerResponse, body: unknown): Promise<void> {
    if (this.stopped) return rpcError(res, 503, -32000, 'the gateway is shutting down')
    const url = new URL(req.url ?? '/', 'http://gatehouse.invalid')
    const rest = url.pathname.slice(MOUNT_PATH.length)
    const m = /^\/([^/]+)\/?$/.exec(rest)
    const connection = m?.[1]
    if (!connection || !CONNECTION_NAME.test(connection)) {
      return sendJson(res, 404, { error: 'remote MCP servers are at /mcp-remote/<connection>' })
    }
    if (req.method === 'OPTIONS') {
      res.writeHead(204, { allow: 'GET, POST, DELETE, OPTIONS' })
      res.end()
      return
    }
    const h = req.headers.authorization
    const bm = typeof h === 'string' ? /^Bearer +(\S+)\s*$/i.exec(h) : null
    const token = bm?.[1]
    if (!token) return this.unauthorized(res)
    const sid = req.headers['mcp-session-id']
    if (sid !== undefined) {
      if (typeof sid !== 'string') return rpcError(res, 400, -32000, 'one Mcp-Session-Id header')
      const b = this.sessions.get(sid)
      if (!b || b.closed) return rpcError(res, 404, -32001, 'Session not found')
      // A session is bound to the token that opened it (its exact bytes) and to its connection:
      // another token, even of the same chain, cannot ride on it.
      const hash = tokenHash(token)
      if (!timingSafeEqual(hash, b.tokenHash) || b.connectionName !== connection) {
        return rpcError(res, 403, -32001, 'this MCP session belongs to another token or connection')
      }
      if (b.identity.expiresAt * 1000 <= Date.now() || this.ctx.gateway.revoked(b.identity)) {
        b.close('the token that opened this session is no longer good')
        return this.unauthorized(res, 'the token is revoked or expired')
      }
      b.lastSeen = Date.now()
      return b.handle(req, res, body)
    }
    if (req.method !== 'POST' || !isInitializeRequest(body)) {
      return rpcError(res, 400, -32000, 'Bad Request: no valid session id (start with an initialize request)')
    }
    if (this.sessions.size >= MAX_SESSIONS) return rpcError(res, 503, -32000, 'too many open MCP sessions; try again later')
    const socket = req.socket
    const opened = await this.ctx.openSession({
      credential: token,
      connection,
      client: {
        address: `${isIP(socket.remoteAddress ?? '') === 6 ? `[${socket.remoteAddress}]` : socket.remoteAddress}:${socket.remotePort}`,
        application: body.params.clientInfo.name.slice(0, 200),
      },
    })
    if (!opened.ok) {
      const code = opened.error.code
      if (code === 'GH_ERR_AUTH') return this.unauthorized(res, opened.error.publicMessage)
      const status = code === 'GH_ERR_UNKNOWN_CONNECTION' ? 404 : code === 'GH_ERR_DENIED' ? 403 : 503
      return rpcError(res, status, -32000, opened.error.publicMessage)
    }
    const session = opened.session
    const root = session.identity.chain[0]?.id ?? ''
    const limit = rootLimit(session.settings.max_sessions_per_root)
    const mine = [...this.sessions.values()].filter((b) => !b.closed && b.identity.chain[0]?.id === root).length
    if (mine + (this.opening.get(root) ?? 0) >= limit) {
      session.end('too many remote MCP sessions for one delegation chain')
      return rpcError(
        res,
        429,
        -32000,
        `too many open MCP sessions for ${root} and the agents it delegated to (at most ${limit}); close some or let them idle out`,
      )
    }
    const hash = tokenHash(token)
    this.makeRoom(hash)
    const id = randomUUID()
    const bridge = new Bridge(this.ctx, session, id, hash, () => this.sessions.delete(id))
    session.onTerminate((reason) => bridge.close(reason))
    this.opening.set(root, (this.opening.get(root) ?? 0) + 1)
    try {
      await bridge.open(body)
    } catch (err) {
      this.ctx.log.warn({ err: String(err), session: session.id, connection }, 'the upstream MCP server could not be initialised')
      bridge.close('the upstream MCP server could not be reached')
      return rpcError(res, 502, -32000, 'the upstream MCP server could not be reached or refused to start a session')
    } finally {
      const n = (this.opening.get(root) ?? 1) - 1
      if (n > 0) this.opening.set(root, n)
      else this.opening.delete(root)
    }
    if (bridge.closed) return rpcError(res, 401, -32000, 'the session ended while it was being opened')
    this.sessions.set(id, bridge)
    this.ctx.log.info({ session: session.id, mcp_session: id, connection }, 'remote mcp session opened')
    return bridge.handle(req, res, body)
  }

  /** One token keeps at most MAX_SESSIONS_PER_TOKEN sessions: its least recently used ones close. */
  private makeRoom(hash: Buffer): void {
    const mine = [...this.sessions.values()].filter((b) => timingSafeEqual(b.tokenHash, hash))
    if (mine.length < MAX_SESSIONS_PER_TOKEN) return
    mine.sort((a, b) => a.lastSeen - b.lastSeen)
    for (const b of mine.slice(0, mine.length - MAX_SESSIONS_PER_TOKEN + 1)) b.close('too many sessions for one token')
  }

  private sweep(): void {
    const now = Date.now()
    for (const b of [...this.sessions.values()]) {
      if (now - b.lastSeen > SESSION_IDLE_MS) b.close('idle')
    }
  }

  async stop(reason: string): Promise<void> {
    this.stopped = true
    clearInterval(this.sweeper)
    await Promise.allSettled([...this.sessions.values()].map((b) => b.close(reason)))
  }
}
