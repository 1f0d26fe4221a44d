// The HTTP listener: one port serving TLS (the gateway's certificate) and, for loopback clients
// only unless `tls.allow_plaintext`, plain HTTP; Node's strict parser behind it. A client
// connection keeps one Gatehouse session per (token, connection) it uses, so keep-alive traffic
// pays for identity once; the engine ending a session (revocation, kill, expiry) closes the client
// connection and every request open on it.

import { createHash } from 'node:crypto'
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, ServerResponse } from 'node:http'
import { createServer as createNetServer, isIP, type Server as NetServer, type Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import type { Pool } from 'undici'
import { sniffTls } from '../kit/index.js'
import type { Address, ProxySession } from '../types.js'
import { type ConnectionPlan, type HttpContext, runExchange } from './exchange.js'
import { framingProblem, originTarget } from './framing.js'
import { quoted, sendProblem } from './respond.js'
import { needlesFor } from './scrub.js'
import { checkQuery, type HostRoutes, normalisePath, type Routed, route, routeWhole, TargetError } from './target.js'
import { createPool, upstreamSpec } from './upstream.js'
import { UPGRADED } from './websocket.js'

/** Sessions one client connection may hold (distinct tokens × connections). */
const MAX_SESSIONS_PER_SOCKET = 8
export const DEFAULT_BODY_LIMIT = 64 * 1024
export const DEFAULT_RECORD_BYTES = 4096

interface SocketState {
  /** The session being opened (a promise) or opened (the slot itself: keep-alive needs no await). */
  readonly sessions: Map<string, Promise<SessionSlot> | SessionSlot>
  seq: number
  /** The last token seen on this client connection and its hash (keep-alive repeats it). */
  lastToken: string | null
  lastTokenHash: string
}

type SessionSlot = { ok: true; session: ProxySession; plan: ConnectionPlan } | { ok: false; status: number; detail: string }

/** The name part of a Host header value, lower-case (no port; brackets kept for IPv6). */
function hostName(host: string): string {
  const colon = host.lastIndexOf(':')
  const name = colon > host.lastIndexOf(']') ? host.slice(0, colon) : host
  return name.toLowerCase()
}

const PLAINTEXT_REFUSED = 'gatehouse: use https (plaintext HTTP is accepted from loopback clients only)\n'

/** The gateway token the request carries: `Authorization: Bearer` or `Proxy-Authorization: Bearer`. */
function bearer(req: IncomingMessage): { token: string } | { problem: string } | null {
  const found: string[] = []
  for (const h of ['authorization', 'proxy-authorization'] as const) {
    const v = req.headers[h]
    if (typeof v !== 'string') continue
    const m = /^Bearer[ ]+([A-Za-z0-9\-._~+/]+=*)\s*$/i.exec(v)
    if (m) found.push(m[1] as string)
  }
  if (found.length === 0) return null
  if (found.length === 2 && found[0] !== found[1]) return { problem: 'Authorization and Proxy-Authorization carry different tokens' }
  return { token: found[0] as string }
}

export class HttpProxyServer {
  private readonly http: HttpServer
  private readonly net: NetServer
  private readonly sockets = new Set<Socket>()
  private readonly pools = new Map<string, Pool>()
  private stopping = false

  constructor(
    private readonly ctx: HttpContext,
    private readonly hosts: HostRoutes,
  ) {
    this.http = createHttpServer(
      {
        insecureHTTPParser: false,
        requireHostHeader: true,
        joinDuplicateHeaders: false,
        maxHeaderSize: 16 * 1024,
        headersTimeout: 30_000,
        requestTimeout: 0,
        keepAliveTimeout: 5_000,
      },
      (req, res) => void this.onRequest(req, res),
    )
    this.http.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
      // The parser refused the bytes (smuggling attempts land here): answer 400 and close.
      if (socket.writable && !socket.destroyed) {
        const body = JSON.stringify({
          type: 'urn:gatehouse:problem:400',
          title: 'Bad request',
          status: 400,
          detail: 'malformed HTTP request',
        })
        socket.end(
          `HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
        )
      } else socket.destroy()
      this.ctx.log.debug({ code: err.code }, 'malformed HTTP request refused')
    })
    this.http.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => this.onUpgrade(req, socket, head))
    this.http.on('connect', (_req: IncomingMessage, socket: Socket) => {
      socket.end('HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\nconnection: close\r\n\r\n')
    })
    this.net = createNetServer({ noDelay: true }, (socket) => this.onConnection(socket))
  }

  async listen(at: Address): Promise<Address> {
    await new Promise<void>((resolve, reject) => {
      this.net.once('error', reject)
      this.net.listen(at.port, at.host, () => {
        this.net.off('error', reject)
        resolve()
      })
    })
    const a = this.net.address()
    return a && typeof a === 'object' ? { host: a.address, port: a.port } : at
  }

  async stop(reason: string): Promise<void> {
    this.stopping = true
    this.net.close()
    for (const s of this.sockets) s.destroy()
    this.ctx.log.info({ reason }, 'http proxy stopped')
    await Promise.allSettled([...this.pools.values()].map((p) => p.close()))
  }

  /** TLS when the first byte is a handshake record; plaintext only where allowed. */
  private onConnection(socket: Socket): void {
    if (this.stopping) {
      socket.destroy()
      return
    }
    this.sockets.add(socket)
    socket.once('close', () => this.sockets.delete(socket))
    socket.on('error', () => socket.destroy())
    sniffTls(socket, this.http, {
      secureContext: this.ctx.tls.secureContext,
      allowPlaintext: this.ctx.tls.allowPlaintext,
      plaintextRefusal: `HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: ${PLAINTEXT_REFUSED.length}\r\nconnection: close\r\n\r\n${PLAINTEXT_REFUSED}`,
    })
  }

  private state(req: IncomingMessage): SocketState {
    const s = req.socket as Socket & { gatehouseHttp?: SocketState }
    if (!s.gatehouseHttp) {
      const st: SocketState = { sessions: new Map(), seq: 0, lastToken: null, lastTokenHash: '' }
      s.gatehouseHttp = st
      s.once('close', () => {
        st.lastToken = null
        for (const p of st.sessions.values()) {
          if (p instanceof Promise) void p.then((slot) => slot.ok && slot.session.end('client closed'))
          else if (p.ok) p.session.end('client closed')
        }
        st.sessions.clear()
      })
    }
    return s.gatehouseHttp
  }

  /**
   * An upgrade goes through the same steps as a request (framing, routing, login, decision with
   * `upgrade: "websocket"`, audit) on a response written to the raw socket, so every refusal is
   * the same problem document; only an allowed WebSocket is relayed (websocket.ts). Other
   * upgrades, and upgrade requests with a body, are refused.
   */
  private onUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    socket.on('error', () => socket.destroy())
    const res = new ServerResponse(req)
    res.shouldKeepAlive = false
    res.assignSocket(socket)
    res.once('finish', () => {
      if (!UPGRADED.has(socket)) socket.end()
    })
    if (String(req.headers.upgrade ?? '').toLowerCase() !== 'websocket')
      sendProblem(res, { status: 501, title: 'Not implemented', detail: 'only WebSocket upgrades are served' })
    else if (req.headers['transfer-encoding'] !== undefined || (req.headers['content-length'] ?? '0') !== '0')
      sendProblem(res, { status: 400, title: 'Bad request', detail: 'an upgrade request has no body' })
    else void this.onRequest(req, res, { socket, head })
  }

  private async onRequest(req: IncomingMessage, res: ServerResponse, upgrade?: { socket: Socket; head: Buffer }): Promise<void> {
    const framing = framingProblem(req)
    if (framing) return this.refuse(res, 400, framing)
    if (req.method === 'CONNECT') return this.refuse(res, 405, 'CONNECT is not served')
    const target = originTarget(req)
    if (target === null)
      return this.refuse(res, 400, 'the request target must be a path on this gateway (absolute-form to another host is refused)')
    if (target.includes('#')) return this.refuse(res, 400, 'a request target has no fragment')
    const routed = this.routeOf(req, target)
    if (typeof routed === 'number') {
      return routed === 421
        ? this.refuse(res, 421, 'the Host header names another host than the TLS server name (SNI) this connection was opened for')
        : this.refuse(res, 404, `no connection here: requests go to /c/<connection>/<path>, or to a host name a connection lists in hosts:`)
    }
    const cred = bearer(req)
    if (cred === null) {
      return sendProblem(
        res,
        { status: 401, title: 'Unauthorized', detail: 'a Gatehouse token is required: Authorization: Bearer <token>' },
        { 'www-authenticate': 'Bearer realm="gatehouse"' },
      )
    }
    if ('problem' in cred) return this.refuse(res, 400, cred.problem)
    const opening = this.sessionFor(req, cred.token, routed.connection)
    const slot = opening instanceof Promise ? await opening : opening
    if (!slot.ok) {
      const headers: Record<string, string> =
        slot.status === 401
          ? { 'www-authenticate': `Bearer realm="gatehouse", error="invalid_token", error_description=${quoted(slot.detail)}` }
          : {}
      return sendProblem(
        res,
        { status: slot.status, title: slot.status === 401 ? 'Unauthorized' : 'Refused', detail: slot.detail },
        headers,
      )
    }
    let path: string
    try {
      const settings = slot.session.settings
      path = normalisePath(routed.rawPath, {
        caseInsensitive: settings.path_case === 'insensitive',
        pathParams: settings.path_params === true,
      })
      checkQuery(routed.rawQuery)
    } catch (err) {
      if (err instanceof TargetError) return this.refuse(res, 400, err.message)
      throw err
    }
    const st = this.state(req)
    await runExchange({
      ctx: this.ctx,
      session: slot.session,
      plan: slot.plan,
      seq: ++st.seq,
      method: req.method ?? 'GET',
      path,
      rawQuery: routed.rawQuery,
      host: routed.byHost ? (req.headers.host ?? null) : null,
      req,
      res,
      ...(upgrade ? { upgrade } : {}),
    }).catch((err: unknown) => {
      this.ctx.log.error({ err: String(err), session: slot.session.id }, 'request failed')
      if (!res.headersSent) this.refuse(res, 500, 'the gateway failed on this request')
      else res.destroy()
    })
  }

  /**
   * The connection a request names: by its Host header when a connection lists that host in
   * `hosts:` (the whole path is that connection's), otherwise by the `/c/<connection>/` prefix.
   * 421 when the TLS server name is one connection's host and the Host header another name; 404
   * when nothing names a connection.
   */
  private routeOf(req: IncomingMessage, target: string): Routed | 404 | 421 {
    if (this.hosts.size === 0) return route(target) ?? 404
    const host = req.headers.host ?? ''
    const sni = (req.socket as Partial<TLSSocket>).servername
    if (typeof sni === 'string' && this.hosts.claims(sni) && sni.toLowerCase() !== hostName(host)) return 421
    const byHost = this.hosts.lookup(host)
    if (byHost !== null) return routeWhole(byHost, target)
    return route(target) ?? 404
  }

  private refuse(res: ServerResponse, status: number, detail: string): void {
    const title =
      status === 404 ? 'Not found' : status === 405 ? 'Method not allowed' : status === 421 ? 'Misdirected request' : 'Bad request'
    sendProblem(res, { status, title, detail })
    // After a framing refusal the rest of the bytes cannot be trusted: no keep-alive.
    if (status === 400) res.once('finish', () => res.socket?.destroySoon?.())
  }

  private sessionFor(req: IncomingMessage, token: string, connection: string): Promise<SessionSlot> | SessionSlot {
    const st = this.state(req)
    if (st.lastToken !== token) {
      st.lastToken = token
      st.lastTokenHash = createHash('sha256').update(token).digest('hex')
    }
    const key = `${st.lastTokenHash}\0${connection}`
    const known = st.sessions.get(key)
    if (known) return known
    if (st.sessions.size >= MAX_SESSIONS_PER_SOCKET) {
      return { ok: false, status: 429, detail: 'too many distinct tokens or connections on one client connection' }
    }
    const socket = req.socket
    const opened = this.open(token, connection, socket)
    st.sessions.set(key, opened)
    // A refusal is not cached: the next request tries again (a token may have been renewed).
    void opened.then((slot) => {
      if (st.sessions.get(key) !== opened) return
      if (slot.ok) st.sessions.set(key, slot)
      else st.sessions.delete(key)
    })
    return opened
  }

  private async open(token: string, connection: string, socket: Socket): Promise<SessionSlot> {
    const r = await this.ctx.openSession({
      credential: token,
      connection,
      client: {
        address: `${isIP(socket.remoteAddress ?? '') === 6 ? `[${socket.remoteAddress}]` : socket.remoteAddress}:${socket.remotePort}`,
      },
    })
    if (!r.ok) {
      const code = r.error.code
      const status = code === 'GH_ERR_AUTH' ? 401 : code === 'GH_ERR_UNKNOWN_CONNECTION' ? 404 : code === 'GH_ERR_DENIED' ? 403 : 503
      return { ok: false, status, detail: r.error.publicMessage }
    }
    const session = r.session
    // The engine ends the session: the client connection and its open requests end with it.
    session.onTerminate((reason) => {
      this.ctx.log.info({ session: session.id, reason }, 'http session ended by the gateway')
      socket.destroy()
      session.end(reason)
    })
    if (socket.destroyed) session.end('client closed')
    try {
      return { ok: true, session, plan: this.plan(session) }
    } catch (err) {
      session.end('upstream settings unusable')
      this.ctx.log.error({ err: String(err), connection }, 'cannot set up the upstream')
      return { ok: false, status: 502, detail: 'the upstream of this connection is not usable' }
    }
  }

  private plan(session: ProxySession): ConnectionPlan {
    const s = session.settings
    const inject = new Map<string, string>()
    for (const [k, v] of session.secrets) {
      if (k.startsWith('inject_headers.')) inject.set(k.slice('inject_headers.'.length).toLowerCase(), v)
    }
    let pool = this.pools.get(session.connection.name)
    const spec = upstreamSpec(s, session.secrets)
    if (!pool) {
      pool = createPool(this.ctx, spec)
      this.pools.set(session.connection.name, pool)
    }
    return {
      pool,
      spec,
      fast: this.ctx.fastPath.session(session),
      reuse: new Map(),
      inject,
      needles: needlesFor(inject.values()),
      bodyLimit: typeof s.body_limit === 'number' ? s.body_limit : DEFAULT_BODY_LIMIT,
      recordBytes: typeof s.record_body_bytes === 'number' ? s.record_body_bytes : DEFAULT_RECORD_BYTES,
    }
  }
}
