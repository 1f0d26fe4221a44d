// One client connection through the PostgreSQL proxy, from the first byte to the last:
//
//   startup  — SSLRequest/GSSENCRequest/CancelRequest/StartupMessage, startup parameters checked
//              against an allow-list (anything that could carry work past the classifier is refused)
//   auth     — the token is asked for with AuthenticationCleartextPassword (TLS required except on
//              loopback), then the engine identifies, decides `connect`, resolves the secret
//   relay    — once admitted, relay.ts and its layers (relay-base.ts, result-masking.ts,
//              results.ts, pipeline.ts): client messages framed and, for each statement, decided
//              and audited durably before the bytes go on; server messages scanned to attribute
//              results
//
// Nothing reaches the server before the caller is identified and the connect decision is made.

import { timingSafeEqual } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { Socket } from 'node:net'
import { TLSSocket } from 'node:tls'
import { serialize } from 'pg-protocol'
import type { Logger } from 'pino'
import { type GatehouseError, isGatehouseError } from '../kit/index.js'
import { parseSearchPath } from './sql/index.js'
import type { Decision, FastPathSession } from '../types.js'
import { BackendProtocolError } from './backend.js'
import { readSessionStart, SessionCatalog } from './catalog.js'
import {
  type Frame,
  FrontendCode,
  MAX_PASSWORD_MESSAGE,
  MessageReader,
  parsePassword,
  ProtocolError,
  StartupLengthError,
  type StartupPacket,
  StartupReader,
} from './frontend.js'
import { AUTH_CLEARTEXT, errorResponse, negotiateProtocolVersion, SSL_NO, SSL_YES } from './messages.js'
import { denialMessage, statementEvent } from './pipeline.js'
import { Expect, type LiveConnection, type PgShared } from './relay-base.js'
import { Relay } from './relay.js'
import { encodeStartupOptions, parseStartupOptions, setStatement, type StartupSetting, StartupOptionError } from './startup-options.js'
import { SessionSql, type Verdict } from './statements.js'
import { connectUpstream, isLoopback, type Upstream, type UpstreamAuth, type UpstreamOptions, type UpstreamTls } from './upstream.js'

export type { CancelTarget, PgShared } from './relay-base.js'
export { denialMessage } from './pipeline.js'

/** Startup parameters a client may set (lower-cased GUC names). `options` is read apart
 * (startup-options.ts: an allow-list, each setting judged as a SET); `replication` opens a
 * different protocol and is refused. */
const ALLOWED_STARTUP_PARAMS = new Set([
  'application_name',
  'client_encoding',
  'datestyle',
  'timezone',
  'extra_float_digits',
  'intervalstyle',
  'search_path',
  'statement_timeout',
  'lock_timeout',
  'idle_in_transaction_session_timeout',
  'bytea_output',
])

/** A client that has not authenticated in this time is disconnected (PostgreSQL: authentication_timeout = 1 min). */
const AUTH_TIMEOUT_MS = 60_000

export class PgConnection implements LiveConnection {
  private readonly log: Logger
  private client: Socket | TLSSocket
  private readonly clientAddress: string
  private tlsActive = false
  private phase: 'startup' | 'auth' | 'connecting' | 'ready' | 'closed' = 'startup'
  private readonly startupReader = new StartupReader()
  private readonly reader: MessageReader
  private startupParams = new Map<string, string>()
  /** What the client's `options` sets, judged and audited as SETs before the server is reached. */
  private startupSettings: readonly StartupSetting[] = []
  /** Set once the client is identified; the relay's from admission on. */
  private session: FastPathSession | null = null
  private upstream: Upstream | null = null
  /** The admitted session (null until the server connection is ready). */
  private relay: Relay | null = null
  private seq = 0
  private authTimer: NodeJS.Timeout | null = null
  private readonly abort = new AbortController()

  constructor(
    socket: Socket,
    private readonly shared: PgShared,
  ) {
    this.client = socket
    this.clientAddress = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`
    this.log = shared.ctx.log.child({ client: this.clientAddress })
    this.reader = new MessageReader(MAX_PASSWORD_MESSAGE)
    socket.setNoDelay(true)
    socket.on('error', () => this.close('client connection error'))
    socket.on('close', () => this.close('client disconnected'))
    socket.once('data', this.onFirstData)
    this.authTimer = setTimeout(() => this.fatal('08006', 'authentication timed out'), AUTH_TIMEOUT_MS)
    this.authTimer.unref()
    shared.connections.add(this)
  }

  /** The first byte tells a direct TLS handshake (PostgreSQL 17 `sslnegotiation=direct`) from a packet. */
  private readonly onFirstData = (chunk: Buffer): void => {
    if (chunk[0] === 0x16 && !this.tlsActive) {
      this.client.pause()
      this.client.unshift(chunk)
      this.upgradeTls(['postgresql'])
      return
    }
    this.client.on('data', this.onStartupData)
    this.onStartupData(chunk)
  }

  private readonly onStartupData = (chunk: Buffer): void => {
    try {
      if (this.phase === 'startup') {
        this.startupReader.push(chunk)
        while (this.phase === 'startup') {
          const pkt: StartupPacket | null = this.startupReader.next()
          if (pkt === null) break
          this.onStartupPacket(pkt)
        }
      } else if (this.phase === 'auth') {
        this.reader.push(chunk)
        const f = this.reader.next()
        if (f) this.onPassword(f)
      } else if (this.phase === 'connecting') {
        // A well-behaved client waits for AuthenticationOk; anything it sends early is kept, up to
        // one message's worth, after which the socket stops being read.
        this.reader.push(chunk)
        if (this.reader.pending > MAX_PASSWORD_MESSAGE) this.client.pause()
      } else if (this.phase === 'ready') this.relay?.onData(chunk)
    } catch (err) {
      this.protocolFailure(err)
    }
  }

  private upgradeTls(alpn?: string[]): void {
    const raw = this.client
    raw.removeListener('data', this.onStartupData)
    const tls = new TLSSocket(raw, {
      isServer: true,
      secureContext: this.shared.ctx.tls.secureContext,
      ...(alpn ? { ALPNProtocols: alpn } : {}),
    })
    this.tlsActive = true
    this.client = tls
    tls.on('error', () => this.close('TLS error'))
    tls.on('close', () => this.close('client disconnected'))
    tls.on('data', this.onStartupData)
  }

  private onStartupPacket(pkt: StartupPacket): void {
    switch (pkt.kind) {
      case 'ssl':
        if (this.tlsActive) throw new ProtocolError('SSLRequest on an encrypted connection')
        // Bytes after the SSLRequest and before the handshake would be read as if encrypted
        // (CVE-2021-23214): refuse them.
        if (this.startupReader.pending > 0) throw new ProtocolError('data after SSLRequest')
        this.client.write(SSL_YES)
        this.upgradeTls()
        return
      case 'gssenc':
        this.client.write(SSL_NO)
        return
      case 'cancel':
        this.phase = 'closed'
        this.handleCancel(pkt.pid, pkt.secret)
        this.client.end()
        return
      case 'startup':
        this.onStartup(pkt.minor, pkt.params)
    }
  }

  private handleCancel(pid: number, secret: Buffer): void {
    const target = this.shared.cancelKeys.get(pid)
    if (!target || target.secret.length !== secret.length || !timingSafeEqual(target.secret, secret)) {
      this.log.warn('cancel request with an unknown key ignored')
      return
    }
    target.cancel()
  }

  private onStartup(minor: number, params: ReadonlyMap<string, string>): void {
    const unsupportedOptions: string[] = []
    const passed = new Map<string, string>()
    for (const [k, v] of params) {
      const key = k.toLowerCase()
      if (key === 'user' || key === 'database') continue
      if (key.startsWith('_pq_.')) {
        unsupportedOptions.push(k)
        continue
      }
      if (key === 'options') {
        let settings: StartupSetting[]
        try {
          settings = parseStartupOptions(v)
        } catch (err) {
          if (!(err instanceof StartupOptionError)) throw err
          this.fatal('08004', err.publicMessage, 'Startup options may set only ordinary session settings, each as -c name=value.')
          return
        }
        this.startupSettings = settings
        if (settings.length > 0) passed.set('options', encodeStartupOptions(settings))
        continue
      }
      if (!ALLOWED_STARTUP_PARAMS.has(key)) {
        this.fatal(
          '08004',
          `startup parameter "${k}" is not allowed through Gatehouse`,
          'Only ordinary session settings may be sent at startup; set others with SET, where policy decides them.',
        )
        return
      }
      passed.set(k, v)
    }
    const user = params.get('user')
    if (!user) {
      this.fatal('28000', 'no PostgreSQL user name specified in startup packet')
      return
    }
    this.startupParams = new Map([...passed, ['user', user], ['database', params.get('database') || user]])
    if (minor > 0 || unsupportedOptions.length > 0) this.client.write(negotiateProtocolVersion(unsupportedOptions))
    const remote = this.client instanceof TLSSocket ? (this.client as TLSSocket).remoteAddress : this.client.remoteAddress
    if (!this.tlsActive && !this.shared.ctx.tls.allowPlaintext && !isLoopback(remote ?? '')) {
      this.fatal('28000', 'Gatehouse requires TLS for token authentication from this address', 'Connect with sslmode=require.')
      return
    }
    this.phase = 'auth'
    this.client.write(AUTH_CLEARTEXT)
    // A client may pipeline its password right behind the startup packet.
    const rest = this.startupReader.takeRest()
    if (rest.length > 0) {
      this.reader.push(rest)
      const f = this.reader.next()
      if (f) this.onPassword(f)
    }
  }

  private onPassword(f: Frame): void {
    if (f.type !== FrontendCode.Password) throw new ProtocolError('expected a password message')
    const token = parsePassword(f.body)
    this.phase = 'connecting'
    void this.admit(token)
  }

  private async admit(token: string): Promise<void> {
    const ctx = this.shared.ctx
    const database = this.startupParams.get('database') ?? ''
    const result = await ctx.openSession({
      credential: token,
      connection: database,
      client: {
        address: this.clientAddress,
        user: this.startupParams.get('user') ?? '',
        application: this.startupParams.get('application_name') ?? '',
      },
    })
    if (this.phase === 'closed') {
      if (result.ok) result.session.end('client disconnected during authentication')
      return
    }
    if (!result.ok) {
      this.refuseStartup(result.error, database)
      return
    }
    const session = this.shared.ctx.fastPath.session(result.session)
    this.session = session
    if (this.startupSettings.length > 0 && !(await this.judgeStartupSettings(session))) return
    let upstream: Upstream
    try {
      upstream = await connectUpstream(this.upstreamOptions(session), this.abort.signal)
    } catch (err) {
      this.log.warn({ session: session.id, err: isGatehouseError(err) ? err.message : String(err) }, 'cannot open the server connection')
      session.end('server connection failed')
      this.session = null
      // The public message says why without internals (e.g. a refused password-exchange downgrade,
      // a connector that would not prove the password).
      const why = isGatehouseError(err) && (err.code === 'GH_ERR_UPSTREAM' || err.code === 'GH_ERR_SECRET') ? `: ${err.publicMessage}` : ''
      this.fatal('08006', `Gatehouse could not connect to the target server${why}`)
      return
    }
    let sql: SessionSql
    let catalog: SessionCatalog
    let sessionUser: string
    try {
      // What the classifier needs to name tables as the server resolves them.
      const start = await readSessionStart(upstream.socket)
      const snapshot = await this.shared.catalogs.get(session.connection.name, upstream.socket)
      catalog = new SessionCatalog(
        this.shared.catalogs,
        session.connection.name,
        snapshot.lineage,
        this.upstreamOptions(session),
        this.abort.signal,
        this.log,
        session.id,
      )
      sessionUser = start.user
      sql = new SessionSql(
        this.shared.analyzer,
        session,
        parseSearchPath(start.searchPath),
        start.user,
        snapshot.catalog,
        (names) => (this.relay ? this.relay.lookupNames(names) : Promise.resolve('the session is not ready')),
        this.log,
        snapshot.functions,
        catalog.viewDefinition,
      )
    } catch (err) {
      this.log.warn({ session: session.id, err: String(err) }, 'cannot read the session catalog')
      upstream.socket.destroy()
      session.end('server connection failed')
      this.session = null
      this.fatal('08006', 'Gatehouse could not prepare the server connection')
      return
    }
    if (this.isClosed()) {
      upstream.socket.destroy()
      session.end('client disconnected during authentication')
      return
    }
    this.upstream = upstream
    this.startRelay(session, upstream, sql, catalog, sessionUser)
  }

  /**
   * Each setting of the client's `options` is judged and audited as the SET it is, through the
   * classifier and the engine like any statement, before the server is reached; a refusal (or a
   * failure to decide or audit) refuses the connection.
   */
  private async judgeStartupSettings(session: FastPathSession): Promise<boolean> {
    for (const setting of this.startupSettings) {
      const sql = setStatement(setting)
      const facts = this.shared.analyzer.analyze(sql).statements
      const only = facts.length === 1 ? facts[0] : undefined
      let decision: Decision
      if (!only || only.action !== 'sql.session' || only.kind !== 'set') {
        const reason = `startup setting ${setting.name} is not an ordinary session setting`
        decision = {
          effect: 'deny',
          rules: ['gatehouse:startup-option'],
          reason,
          reasons: [{ rule: 'gatehouse:startup-option', reason, hop: '' }],
          policy: 'gatehouse',
        }
      } else {
        const command = { sql, kind: only.kind, tables: [], write_tables: [], functions: only.functions, has_where: false, statements: 1 }
        try {
          decision = await session.decide(only.action, command, this.abort.signal)
        } catch (err) {
          this.log.error({ err: String(err), session: session.id }, 'policy evaluation failed for a startup setting')
          const reason = 'the policy could not be evaluated'
          decision = {
            effect: 'deny',
            rules: ['gatehouse:evaluation-failed'],
            reason,
            reasons: [{ rule: 'gatehouse:evaluation-failed', reason, hop: '' }],
            policy: 'error',
          }
        }
      }
      const seq = ++this.seq
      const verdict: Verdict = {
        decision,
        statements: only ? [{ sql, action: only.action, kind: only.kind, decision: decision.effect, rules: decision.rules }] : [],
        effects: [],
      }
      const ev = {
        ...statementEvent(
          seq,
          { raw: Buffer.alloc(0), kind: Expect.Query, sql, text: sql, params: null, portal: null, approvedBy: null },
          verdict,
        ),
        startup_option: true,
      }
      try {
        await session.audit(ev)
      } catch (err) {
        this.log.error({ err: String(err), session: session.id }, 'audit append failed; startup setting refused')
        this.endRefused(session, '58030', 'gatehouse: the audit log cannot record a startup setting, so the connection was refused')
        return false
      }
      if (this.isClosed()) {
        session.end('client disconnected during authentication')
        return false
      }
      if (decision.effect !== 'allow') {
        // No approval wait at startup: a setting that needs one is refused like a denied one.
        this.endRefused(session, '42501', `${denialMessage(decision)} (startup option ${setting.name})`)
        return false
      }
    }
    return true
  }

  private endRefused(session: FastPathSession, code: string, message: string): void {
    session.end('startup setting refused')
    this.session = null
    this.fatal(code, message)
  }

  private upstreamOptions(session: FastPathSession): UpstreamOptions {
    const s = session.settings
    const params = new Map<string, string>()
    for (const [k, v] of this.startupParams) {
      if (k !== 'user' && k !== 'database' && k.toLowerCase() !== 'client_encoding') params.set(k, v)
    }
    // The gateway reads SQL as UTF-8, so the server must too: a client encoding such as SJIS could
    // make the server run a different statement than the one decided. The server reports UTF8 in
    // ParameterStatus and clients adopt it.
    params.set('client_encoding', 'UTF8')
    // Pinned the same way: startup parameters win over role, database and server defaults, and
    // every later change is refused (proxies/postgres/sql/lexical.ts) or ends the session (onParameterStatus).
    params.set('standard_conforming_strings', 'on')
    params.set('backslash_quote', 'safe_encoding')
    return {
      target: session.target,
      database: typeof s.database === 'string' ? s.database : session.connection.name,
      user: typeof s.user === 'string' ? s.user : 'postgres',
      password: session.secrets.get('password'),
      ...(session.provers?.has('password') ? { prover: session.provers.get('password') } : {}),
      tls: (typeof s.tls === 'string' ? s.tls : 'disable') as UpstreamTls,
      ca: typeof s.ca === 'string' ? readFileSync(s.ca) : undefined,
      auth: typeof s.auth === 'string' ? (s.auth as UpstreamAuth) : 'scram-sha-256',
      params,
      dial: this.shared.ctx.dial,
    }
  }

  private refuseStartup(err: GatehouseError, database: string): void {
    switch (err.code) {
      case 'GH_ERR_AUTH':
        this.fatal('28P01', err.publicMessage)
        return
      case 'GH_ERR_UNKNOWN_CONNECTION':
        this.fatal('3D000', `connection "${database}" does not exist`, 'Use the name of a Gatehouse connection as the database name.')
        return
      case 'GH_ERR_DENIED':
        this.fatal('42501', err.publicMessage)
        return
      case 'GH_ERR_SECRET':
      case 'GH_ERR_UPSTREAM':
        this.fatal('08006', `Gatehouse could not connect to the target server: ${err.publicMessage}`)
        return
      default:
        this.fatal('08006', err.publicMessage)
    }
  }

  private startRelay(session: FastPathSession, upstream: Upstream, sql: SessionSql, catalog: SessionCatalog, sessionUser: string): void {
    if (this.authTimer) clearTimeout(this.authTimer)
    const relay = new Relay({
      host: this,
      shared: this.shared,
      log: this.log,
      client: this.client,
      reader: this.reader,
      session,
      upstream,
      upstreamOptions: this.upstreamOptions(session),
      sql,
      catalog,
      sessionUser,
      signal: this.abort.signal,
      seq: this.seq,
    })
    this.relay = relay
    // The server's settings may rule the session out, or it may have ended meanwhile.
    if (!relay.start() || this.isClosed()) return
    this.phase = 'ready'
    this.client.resume()
    if (this.reader.pending > 0) relay.onData(null)
  }

  protocolFailure(err: unknown): void {
    if (err instanceof StartupLengthError) {
      // PostgreSQL closes without a word (ProcessStartupPacket: COMMERROR, then return).
      this.log.info({ err: err.message }, 'invalid startup packet; connection closed')
      this.close('invalid startup packet')
      return
    }
    if (err instanceof ProtocolError) {
      this.log.warn({ err: err.message, session: this.session?.id }, 'protocol violation; closing the session')
      this.fatal('08P01', err.publicMessage)
      return
    }
    if (err instanceof BackendProtocolError) {
      this.fatal('08P01', 'Gatehouse received an invalid message from the server')
      return
    }
    this.log.error({ err: err instanceof Error ? err.stack : String(err) }, 'internal error in the PostgreSQL proxy')
    this.fatal('XX000', 'internal error in the gateway')
  }

  /** Sends a FATAL error to the client and closes both sides. */
  fatal(code: string, message: string, hint?: string): void {
    if (this.phase === 'closed') return
    this.close(`fatal ${code}: ${message}`, errorResponse({ severity: 'FATAL', code, message, ...(hint ? { hint } : {}) }))
  }

  /** Closes both sides; `last` is the client's final message (a FATAL), written before the end. */
  close(reason: string, last?: Buffer): void {
    if (this.phase === 'closed') {
      return
    }
    this.phase = 'closed'
    this.abort.abort()
    if (this.authTimer) clearTimeout(this.authTimer)
    if (this.relay) this.shared.cancelKeys.delete(this.relay.pid)
    const up = this.upstream
    if (up) {
      if (!up.socket.destroyed) up.socket.end(serialize.end())
      setTimeout(() => up.socket.destroy(), 1000).unref()
    }
    const c = this.client
    if (reason === 'client disconnected' || reason === 'client terminated') c.destroy()
    else {
      // Whatever is queued for the client (the server's own FATAL, say) is flushed and the end
      // follows at once, as from PostgreSQL; a client that does not read loses its socket anyway.
      if (!c.destroyed) {
        if (last) c.end(last)
        else c.end()
      }
      setTimeout(() => c.destroy(), 1000).unref()
    }
    this.session?.end(reason)
    this.shared.connections.delete(this)
  }

  /** A method, not a field read, so TypeScript does not carry narrowing across an await. */
  isClosed(): boolean {
    return this.phase === 'closed'
  }

  /** Admitted, and not closed. */
  isReady(): boolean {
    return this.phase === 'ready'
  }

  get sessionId(): string | null {
    return this.session?.id ?? null
  }
}
