// The gateway's side of connectors: a TLS listener that connectors dial out to, their
// authentication as principals, the links they hold open, and dials through them.
//
// A connector authenticates with a service-account key (or a Gatehouse token) whose principal is a
// configured connector; its name comes from that identity, never from what it says. A link lives
// while its credential is valid and unrevoked (checked every REVOCATION_CHECK_MS), and while it
// answers pings. A session that uses a connector is bound at its start to one link; its dials go
// through that link, and when the link drops the session is ended with the connector's name.

import { randomBytes } from 'node:crypto'
import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  connect as h2connect,
  constants as h2,
  type IncomingHttpHeaders,
} from 'node:http2'
import type { Socket } from 'node:net'
import { createServer as createTlsServer, type Server, type TLSSocket } from 'node:tls'
import type { Logger } from 'pino'
import { GatehouseError } from '../errors.js'
import type { AuditEvent, Identity, SecretProver } from '../types.js'
import {
  ALPN,
  ATTACH_PATH,
  ATTACH_TIMEOUT_MS,
  type AttachHello,
  type AttachTargets,
  authorityOf,
  CREDENTIAL_PATH,
  ERROR_HEADER,
  LINK_WINDOW_BYTES,
  PING_INTERVAL_MS,
  PING_TIMEOUT_MS,
  PROVE_PATH,
  readJsonBody,
  REFUSED_PATH,
  SESSION_HEADER,
  STREAM_WINDOW_BYTES,
  TARGETS_PATH,
} from './protocol.js'
import { printable, type RefusalKind, refusalKind } from './attach-checks.js'
import { isJoinToken, JOIN_REFUSED, JoinRefused } from './join.js'
import { ControlRefused, connectorProver } from './prover.js'
import { TunnelSocket } from './tunnel-socket.js'

export interface Address {
  readonly host: string
  readonly port: number
}

export interface ConnectorConfig {
  readonly name: string
  /** The principal whose credential makes a link this connector (`service:edge-1`). */
  readonly principal: string
  /** Lifetime of the credentials minted for a connector that joined with a join token. */
  readonly credentialTtlSeconds: number
}

/** Join tokens and the short-lived credentials a joined connector holds (the gateway's identity service). */
export interface ConnectorCredentials {
  /** Uses up a join token: the connector it joins as and the token's id. Throws JoinRefused. */
  redeem(token: string, by: string): { readonly id: string; readonly connector: string }
  /** A short-lived credential for `principal`, derived from join token `source` (revoking it ends this). */
  mint(principal: string, source: string, ttlSeconds: number): Promise<{ readonly token: string; readonly identity: Identity }>
  /** The identity of a credential `mint` made; throws for any other credential. */
  verify(token: string): Promise<Identity>
  /** Refuses a replaced credential at once (its successor is with the connector). */
  retire(tokenId: string): void
}

/** A revocation drops a link within this time. */
export const REVOCATION_CHECK_MS = 250
/** A dial through a connector that is not answered in this time fails. */
export const TUNNEL_DIAL_TIMEOUT_MS = 10_000

export interface ConnectorHubOptions {
  readonly listen: Address
  /** The gateway's certificate and key (PEM): connectors verify or pin this certificate. */
  readonly certificate: { readonly cert: Buffer; readonly key: Buffer }
  readonly connectors: readonly ConnectorConfig[]
  /** `host:port` of every connection configured via connector `name`. */
  readonly targetsFor: (name: string) => readonly string[]
  readonly identify: (credential: string) => Promise<Identity>
  /** Join tokens and minted credentials; absent: connectors attach with service-account keys only. */
  readonly credentials?: ConnectorCredentials
  readonly revoked: (identity: Identity) => boolean
  readonly audit: (event: AuditEvent) => void
  /** Ends a live session (the link that carried it dropped). */
  readonly killSession: (id: string, reason: string) => void
  readonly log: Logger
}

/** What `connectors list` and the API show. */
export interface ConnectorInfo {
  readonly name: string
  readonly link: string
  readonly principal: string
  readonly address: string
  readonly version: string
  readonly hostname: string
  readonly attached_at: string
  readonly last_seen: string
  readonly streams: number
  readonly sessions: number
}

class Link {
  readonly id = `l-${randomBytes(4).toString('hex')}`
  readonly attachedAt = new Date()
  lastSeen = Date.now()
  streams = 0
  /** Open streams per session id: a session is ended with the link only while it uses it. */
  readonly sessions = new Map<string, number>()
  closed = false
  /** A credential minted from a join token: replaced before it expires (`rotating` while it is). */
  rotation: { readonly source: string; readonly ttlSeconds: number; rotating: boolean } | null = null
  private pinger: NodeJS.Timeout | null = null

  constructor(
    readonly name: string,
    public identity: Identity,
    readonly address: string,
    readonly version: string,
    readonly hostname: string,
    readonly h2s: ClientHttp2Session,
  ) {}

  startPings(onDead: (why: string) => void): void {
    this.pinger = setInterval(() => {
      let answered = false
      const timer = setTimeout(() => {
        if (!answered) onDead('the connector stopped answering pings')
      }, PING_TIMEOUT_MS)
      timer.unref()
      try {
        this.h2s.ping((err) => {
          answered = true
          clearTimeout(timer)
          if (!err) this.lastSeen = Date.now()
        })
      } catch {
        onDead('the link cannot send pings')
      }
    }, PING_INTERVAL_MS)
    this.pinger.unref()
  }

  stopPings(): void {
    if (this.pinger) clearInterval(this.pinger)
  }

  info(): ConnectorInfo {
    const p = this.identity.chain[this.identity.chain.length - 1]
    return {
      name: this.name,
      link: this.id,
      principal: p?.id ?? '',
      address: this.address,
      version: this.version,
      hostname: this.hostname,
      attached_at: this.attachedAt.toISOString(),
      last_seen: new Date(this.lastSeen).toISOString(),
      streams: this.streams,
      sessions: this.sessions.size,
    }
  }
}

/** A session's way to its target: the link chosen when it started. */
interface Route {
  readonly link: Link
  readonly session: string
}

export class ConnectorHub {
  private server: Server | null = null
  private readonly links = new Set<Link>()
  /** Keyed by the session's own target object: only the session that was bound gets the tunnel. */
  private readonly routes = new WeakMap<object, Route>()
  private revocationTimer: NodeJS.Timeout | null = null
  private readonly pending = new Set<TLSSocket>()
  address: Address | null = null

  constructor(private readonly opts: ConnectorHubOptions) {}

  async start(): Promise<void> {
    const server = createTlsServer({
      cert: this.opts.certificate.cert,
      key: this.opts.certificate.key,
      minVersion: 'TLSv1.2',
      ALPNProtocols: [ALPN],
      handshakeTimeout: ATTACH_TIMEOUT_MS,
    })
    server.on('secureConnection', (sock) => {
      sock.on('error', () => undefined)
      this.accept(sock, `${sock.remoteAddress}:${sock.remotePort}`)
    })
    server.on('tlsClientError', (err, sock) => {
      this.opts.log.warn({ client: `${sock.remoteAddress}:${sock.remotePort}`, err: err.message }, 'connector TLS handshake failed')
    })
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(
          new GatehouseError(
            'GH_ERR_CONFIG',
            `listen.connectors ${authorityOf(this.opts.listen.host, this.opts.listen.port)}: cannot listen (${err.code ?? err.message})`,
            { cause: err },
          ),
        ),
      )
      server.listen(this.opts.listen.port, this.opts.listen.host, () => resolve())
    })
    const a = server.address()
    if (a && typeof a === 'object') this.address = { host: a.address, port: a.port }
    this.server = server
    this.revocationTimer = setInterval(() => this.checkCredentials(), REVOCATION_CHECK_MS)
    this.revocationTimer.unref()
  }

  async stop(reason: string): Promise<void> {
    if (this.revocationTimer) clearInterval(this.revocationTimer)
    for (const s of this.pending) s.destroy()
    for (const l of [...this.links]) this.drop(l, reason, false)
    const server = this.server
    this.server = null
    if (server) await new Promise<void>((r) => server.close(() => r()))
  }

  list(): ConnectorInfo[] {
    return [...this.links].map((l) => l.info()).sort((a, b) => a.name.localeCompare(b.name) || a.attached_at.localeCompare(b.attached_at))
  }

  /** Whether any of `names` has a live link (the one a new session would use): its connector, id and principal. */
  pick(names: readonly string[]): { readonly name: string; readonly link: object; readonly id: string; readonly principal: string } | null {
    let best: Link | null = null
    for (const l of this.links) {
      if (l.closed || !names.includes(l.name)) continue
      // The least busy link: load spreads over replicas and over connectors serving one target.
      if (best === null || l.streams < best.streams) best = l
    }
    return best ? { name: best.name, link: best, id: best.id, principal: best.identity.chain[0]?.id ?? '' } : null
  }

  /** Binds a session's target object to the link `pick` chose for it. */
  bind(target: object, picked: { readonly link: object }, session: string): void {
    if (!(picked.link instanceof Link)) throw new Error('not a link of this hub')
    this.routes.set(target, { link: picked.link, session })
  }

  /** The tunnel for a bound target; null when `target` is not a bound session's. */
  dial(target: Address, signal?: AbortSignal): Promise<Socket> | null {
    const route = this.routes.get(target)
    if (!route) return null
    return this.open(route, target, signal)
  }

  /**
   * Proofs of the secret `ref` of `connection`, asked of the connector carrying the session bound
   * to `target` (at the time of asking: the session is bound once admitted). The secret stays
   * with the connector; a refusal or an unreachable connector fails closed (GH_ERR_SECRET).
   */
  prover(target: Address, connection: string, ref: string): SecretProver {
    return connectorProver(connection, authorityOf(target.host, target.port), ref, () => {
      const route = this.routes.get(target)
      if (!route || route.link.closed) return null
      const h2s = route.link.h2s
      return {
        connector: route.link.name,
        session: route.session,
        ask: (req, signal) => this.control(h2s, 'POST', PROVE_PATH, req, signal),
      }
    })
  }

  private open(route: Route, target: Address, signal?: AbortSignal): Promise<Socket> {
    const { link } = route
    const name = link.name
    const where = authorityOf(target.host, target.port)
    const refusal = (why: string, cause?: unknown): GatehouseError =>
      new GatehouseError('GH_ERR_UPSTREAM', `cannot reach ${where} through connector ${name}: ${why}`, {
        cause,
        publicMessage: `the target server is unreachable through connector ${name}: ${why}`,
      })
    if (link.closed) return Promise.reject(refusal('the connector is not connected'))
    return new Promise<Socket>((resolve, reject) => {
      let settled = false
      let stream: ClientHttp2Stream
      try {
        stream = link.h2s.request(
          { [h2.HTTP2_HEADER_METHOD]: 'CONNECT', [h2.HTTP2_HEADER_AUTHORITY]: where, [SESSION_HEADER]: route.session },
          { endStream: false },
        )
      } catch (err) {
        reject(refusal('the link is closing', err))
        return
      }
      link.streams++
      link.sessions.set(route.session, (link.sessions.get(route.session) ?? 0) + 1)
      stream.once('close', () => {
        link.streams--
        const n = (link.sessions.get(route.session) ?? 1) - 1
        if (n <= 0) link.sessions.delete(route.session)
        else link.sessions.set(route.session, n)
      })
      const fail = (why: string, cause?: unknown): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
        stream.close(h2.NGHTTP2_CANCEL)
        reject(refusal(why, cause))
      }
      const timer = setTimeout(() => fail('timed out'), TUNNEL_DIAL_TIMEOUT_MS)
      const onAbort = (): void => fail('aborted')
      signal?.addEventListener('abort', onAbort, { once: true })
      const down = (): boolean => link.closed || link.h2s.closed || link.h2s.destroyed
      stream.once('error', (err) => fail(down() ? 'the connector disconnected' : err.message, err))
      stream.once('close', () => fail(down() ? 'the connector disconnected' : 'the stream was closed'))
      stream.once('response', (headers: IncomingHttpHeaders) => {
        const status = Number(headers[h2.HTTP2_HEADER_STATUS])
        if (status !== 200) {
          const why = headers[ERROR_HEADER]
          fail(typeof why === 'string' && why.length > 0 ? why.slice(0, 200) : `refused (${status})`)
          return
        }
        if (settled) return
        settled = true
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
        stream.removeAllListeners('error')
        resolve(
          new TunnelSocket(
            stream,
            (err) => {
              const gone = down()
              const why = gone ? 'the connector disconnected' : `the stream to the target was cut (${err.message})`
              // The session is ended first, so its client is told the connector's name before the
              // plugin sees its upstream fail.
              this.opts.killSession(route.session, gone ? `connector ${name} disconnected` : `connector ${name}: ${why}`)
              return refusal(why, err)
            },
            () => down() || (stream.rstCode !== undefined && stream.rstCode !== h2.NGHTTP2_NO_ERROR),
          ),
        )
      })
    })
  }

  private accept(sock: TLSSocket, address: string): void {
    if (sock.alpnProtocol !== ALPN) {
      this.opts.log.warn({ client: address }, 'a connection to the connector listener did not negotiate h2; closed')
      sock.destroy()
      return
    }
    this.pending.add(sock)
    sock.once('close', () => this.pending.delete(sock))
    const h2s = h2connect('http://connector', {
      createConnection: () => sock,
      settings: { enablePush: false, initialWindowSize: STREAM_WINDOW_BYTES },
    })
    h2s.on('error', (err) => this.opts.log.warn({ client: address, err: err.message }, 'connector link error'))
    h2s.once('connect', () => {
      try {
        h2s.setLocalWindowSize(LINK_WINDOW_BYTES)
      } catch {
        // The link is already closing: attach fails below.
      }
    })
    const timer = setTimeout(() => {
      this.opts.log.warn({ client: address }, 'a connector did not attach in time; closed')
      h2s.destroy()
    }, ATTACH_TIMEOUT_MS)
    this.attach(h2s, address)
      .then((link) => {
        clearTimeout(timer)
        this.pending.delete(sock)
        if (link === null) return
        this.links.add(link)
        h2s.once('close', () => this.drop(link, 'the link closed', true))
        link.startPings((why) => this.drop(link, why, true))
      })
      .catch((err: unknown) => {
        clearTimeout(timer)
        this.opts.log.warn({ client: address, err: String(err) }, 'connector attach failed')
        h2s.destroy()
      })
  }

  /** Asks for the connector's hello, authenticates it and tells it its targets; null: refused. */
  private async attach(h2s: ClientHttp2Session, address: string): Promise<Link | null> {
    const hello = await this.control(h2s, 'GET', ATTACH_PATH, null)
    const h = hello as Partial<AttachHello> | null
    if (!h || typeof h.credential !== 'string' || typeof h.version !== 'string') throw new Error('malformed attach answer')
    // What a connector says about itself is shown to operators (`connectors list`, a terminal):
    // anything but printable ASCII becomes '?', so it cannot fake lines or send terminal escapes.
    const version = printable(h.version, 64)
    const hostname = typeof h.hostname === 'string' ? printable(h.hostname, 255) : ''
    // The connector is told why in general terms (`reason`, naming no principal: whoever can reach
    // the listener must not learn whose a token is); the log and the audit get the kind and detail.
    const refuse = async (reason: string, chain: readonly string[], kind: RefusalKind, detail = reason): Promise<null> => {
      this.opts.log.warn({ client: address, kind, reason: detail }, 'connector refused')
      this.opts.audit({ type: 'connector.refused', session: null, chain, connection: null, address, kind, reason: detail })
      await this.control(h2s, 'POST', REFUSED_PATH, { reason }).catch(() => undefined)
      h2s.close()
      setTimeout(() => h2s.destroy(), 1000).unref()
      return null
    }
    const creds = this.opts.credentials
    let identity: Identity
    /** Set when the connector joined now: its first credential and the join token's id. */
    let joined: { readonly id: string; readonly token: string } | null = null
    /** The join token a minted credential comes from: such a credential is short-lived and replaced. */
    let source: string | null = null
    if (isJoinToken(h.credential)) {
      if (!creds) return refuse('authentication failed: join tokens are not accepted here', [], 'join_disabled')
      let join: { readonly id: string; readonly connector: string }
      try {
        join = creds.redeem(h.credential, address)
      } catch (err) {
        const detail = err instanceof JoinRefused ? err.detail : String(err)
        return refuse(`authentication failed: ${JOIN_REFUSED}`, [], refusalKind(detail), detail)
      }
      const conf = this.opts.connectors.find((c) => c.name === join.connector)
      if (!conf)
        return refuse(
          'the connector this join token names is no longer configured',
          [],
          'unconfigured',
          `connector ${join.connector} is no longer configured`,
        )
      const minted = await creds.mint(conf.principal, join.id, conf.credentialTtlSeconds)
      identity = minted.identity
      joined = { id: join.id, token: minted.token }
      source = join.id
    } else {
      try {
        // A credential minted at an earlier join (and rotated since), else a service-account key or token.
        const viaJoin = creds ? await creds.verify(h.credential).catch(() => null) : null
        if (viaJoin) source = viaJoin.tokenIds[0] ?? null
        identity = viaJoin ?? (await this.opts.identify(h.credential))
      } catch (err) {
        const detail = err instanceof Error ? err.message.slice(0, 200) : 'the credential was not accepted'
        return refuse('authentication failed: the credential is invalid, expired or revoked', [], refusalKind(detail), detail)
      }
    }
    const chain = identity.chain.map((p) => p.id)
    const principal = identity.chain[identity.chain.length - 1]
    const conf = identity.chain.length === 1 && principal ? this.opts.connectors.find((c) => c.principal === principal.id) : undefined
    if (!conf)
      return refuse(
        "the credential is not a configured connector's",
        chain,
        'not_a_connector',
        `${chain.join(' > ')} is not a configured connector`,
      )
    const link = new Link(conf.name, identity, address, version, hostname, h2s)
    if (source !== null) link.rotation = { source, ttlSeconds: conf.credentialTtlSeconds, rotating: false }
    const targets: AttachTargets = {
      name: conf.name,
      targets: this.opts.targetsFor(conf.name),
      ...(joined ? { credential: joined.token } : {}),
    }
    await this.control(h2s, 'POST', TARGETS_PATH, targets)
    this.opts.audit({
      type: 'connector.attached',
      session: null,
      chain,
      connection: null,
      connector: conf.name,
      link: link.id,
      address,
      version,
      ...(joined ? { joined: joined.id } : {}),
      ...(source !== null ? { credential_expires_at: new Date(identity.expiresAt * 1000).toISOString() } : {}),
    })
    this.opts.log.info({ connector: conf.name, link: link.id, client: address, version, joined: joined?.id }, 'connector attached')
    return link
  }

  /** Replaces a minted credential before it expires: the new one goes to the connector, the old one is retired. */
  private async rotate(link: Link): Promise<void> {
    const creds = this.opts.credentials
    const r = link.rotation
    if (!creds || !r || r.rotating) return
    r.rotating = true
    const principal = link.identity.chain[0]?.id ?? ''
    try {
      const minted = await creds.mint(principal, r.source, r.ttlSeconds)
      if (link.closed) return
      await this.control(link.h2s, 'POST', CREDENTIAL_PATH, { credential: minted.token })
      const old = link.identity.tokenIds.filter((t) => t !== r.source)
      link.identity = minted.identity
      for (const t of old) creds.retire(t)
      this.opts.audit({
        type: 'connector.rotated',
        session: null,
        chain: minted.identity.chain.map((p) => p.id),
        connection: null,
        connector: link.name,
        link: link.id,
        replaced: old,
        credential_expires_at: new Date(minted.identity.expiresAt * 1000).toISOString(),
      })
      this.opts.log.info({ connector: link.name, link: link.id }, 'connector credential rotated')
    } catch (err) {
      // Retried at the next check; a link whose credential runs out is dropped by checkCredentials.
      this.opts.log.warn({ connector: link.name, link: link.id, err: String(err) }, 'connector credential rotation failed')
    } finally {
      r.rotating = false
    }
  }

  /** One control request on the link; resolves with the answer's JSON body (null when empty). */
  private control(h2s: ClientHttp2Session, method: string, path: string, body: unknown, signal?: AbortSignal): Promise<unknown> {
    return new Promise((resolve, reject) => {
      let req: ClientHttp2Stream
      try {
        req = h2s.request(
          { [h2.HTTP2_HEADER_METHOD]: method, [h2.HTTP2_HEADER_PATH]: path, 'content-type': 'application/json' },
          { endStream: body === null, ...(signal ? { signal } : {}) },
        )
      } catch (err) {
        reject(err)
        return
      }
      req.once('error', reject)
      // A control answer is due within the attach time: a silent connector fails the request.
      req.setTimeout(ATTACH_TIMEOUT_MS, () => req.close(h2.NGHTTP2_CANCEL))
      req.once('close', () => reject(new Error(`${path}: no answer`)))
      req.once('response', (headers) => {
        const status = Number(headers[h2.HTTP2_HEADER_STATUS])
        if (status === 204) {
          req.resume()
          resolve(null)
          return
        }
        if (status !== 200) {
          req.resume()
          const why = headers[ERROR_HEADER]
          reject(
            typeof why === 'string' && why.length > 0 ? new ControlRefused(why.slice(0, 200)) : new Error(`${path} answered ${status}`),
          )
          return
        }
        readJsonBody(req).then(resolve, reject)
      })
      if (body !== null) req.end(JSON.stringify(body))
    })
  }

  private checkCredentials(): void {
    const now = Date.now() / 1000
    for (const l of this.links) {
      if (l.closed) continue
      if (this.opts.revoked(l.identity)) this.drop(l, 'its credential was revoked', true)
      else if (l.identity.expiresAt <= now) this.drop(l, 'its credential expired', true)
      // A third of its life left: a minted credential is replaced (a missed rotation is retried here).
      else if (l.rotation && !l.rotation.rotating && l.identity.expiresAt - now <= l.rotation.ttlSeconds / 3) void this.rotate(l)
    }
  }

  private drop(link: Link, reason: string, audit: boolean): void {
    if (link.closed) return
    link.closed = true
    link.stopPings()
    this.links.delete(link)
    const sessions = [...link.sessions.keys()]
    // The sessions first, so each client is told the connector's name before its stream is cut.
    for (const id of sessions) this.opts.killSession(id, `connector ${link.name} disconnected: ${reason}`)
    if (audit) {
      this.opts.audit({
        type: 'connector.detached',
        session: null,
        chain: link.identity.chain.map((p) => p.id),
        connection: null,
        connector: link.name,
        link: link.id,
        reason,
        sessions,
      })
    }
    this.opts.log.warn({ connector: link.name, link: link.id, reason, sessions: sessions.length }, 'connector detached')
    // Streams get a moment to carry the sessions' last words, then the link goes.
    link.h2s.close()
    setTimeout(() => link.h2s.destroy(), 500).unref()
  }
}
