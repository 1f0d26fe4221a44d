// One client connection through the PostgreSQL proxy, from the first byte to the last:
//
//   startup  — SSLRequest/GSSENCRequest/CancelRequest/StartupMessage, startup parameters checked
//              against an allow-list (anything that could carry work past the classifier is refused)
//   auth     — the token is asked for with AuthenticationCleartextPassword (TLS required except on
//              loopback), then the engine identifies, decides `connect`, resolves the secret
//   relay    — client messages framed and, for Query and Execute, decided and audited durably
//              before the bytes go on; server messages scanned to attribute results, and a refused
//              statement's stand-in error replaced with the gateway's own
//
// Nothing reaches the server before the caller is identified and the connect decision is made.

import { createHmac, randomBytes, randomInt, timingSafeEqual } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { Socket } from 'node:net'
import { TLSSocket } from 'node:tls'
import { serialize } from 'pg-protocol'
import type { Logger } from 'pino'
import { type GatehouseError, isGatehouseError, type MaskingKeys, type MaskObligation } from '../kit/index.js'
import type { ApprovalOutcome, Decision, ProxyContext, ProxySession, SessionAuditEvent } from '../types.js'
import { BackendProtocolError, BackendScanner, type BackendHandler } from './backend.js'
import {
  expectEmpty,
  FrontendCode,
  type Frame,
  MAX_PASSWORD_MESSAGE,
  MessageReader,
  parseBind,
  parseExecute,
  parseParse,
  parsePassword,
  parseQuery,
  parseTarget,
  ProtocolError,
  StartupLengthError,
  StartupReader,
  type StartupPacket,
} from './frontend.js'
import {
  AUTH_CLEARTEXT,
  AUTH_OK,
  BackendCode,
  backendKeyData,
  type ErrorFields,
  errorResponse,
  frame,
  negotiateProtocolVersion,
  noticeResponse,
  readCommandTag,
  readErrorFields,
  rowsFromTag,
  SSL_NO,
  SSL_YES,
} from './messages.js'
import {
  connectUpstream,
  isLoopback,
  sendCancel,
  type Upstream,
  type UpstreamAuth,
  type UpstreamOptions,
  type UpstreamTls,
} from './upstream.js'
import { holdsSecret, mentionsPassword, redactSql } from './redact.js'
import { type Analysis, parseSearchPath, type SqlAnalyzer, type StatementFacts } from './sql/index.js'
import { type CatalogCache, readSessionStart } from './catalog.js'
import { SessionSql, type StatementEffect, type Verdict } from './statements.js'
import { lexicallySensitive } from './sql/lexical.js'
import { encodeStartupOptions, parseStartupOptions, setStatement, type StartupSetting, StartupOptionError } from './startup-options.js'
import { NAME_LOOKUP_SQL, type ServerName, type ServerNames, textArrayLiteral } from './names.js'
import * as hold from './hold.js'
import { compileCopyMasker } from './copy-masker.js'
import { compileRowMasker, type RowMasker } from './datarow-masker.js'
import { type CatalogCheck, type LineageCatalogSnapshot, lineageCatalogFor, snapshotCurrent } from './sql/lineage-catalog.js'
import type { LineageCatalog } from './sql/lineage.js'
import {
  backstopFinding,
  changesRows,
  columnPlans,
  type FieldInfo,
  parseRowDescription,
  SessionMasking,
  type StatementMaskPlan,
} from './masking.js'

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

/** A stand-in that the server rejects as a syntax error, so the server itself aborts whatever a
 * real error would abort (docs/architecture.md, "Refusing a statement the way PostgreSQL would"). */
const STAND_IN_SQL = 'gatehouse refused this statement'

/** Messages that start or continue an extended-protocol batch (until Sync). */
const EXTENDED_MESSAGES: ReadonlySet<number> = new Set([
  FrontendCode.Parse,
  FrontendCode.Bind,
  FrontendCode.Describe,
  FrontendCode.Execute,
  FrontendCode.Close,
  FrontendCode.Flush,
])

/** How long the gateway waits for the server to answer its own name lookup. */
const LOOKUP_TIMEOUT_MS = 15_000

/** Settings the gateway pins (upper case): the server must keep reading SQL as the gateway does. */
const PINNED_LEXING: ReadonlyMap<string, string> = new Map([
  ['standard_conforming_strings', 'ON'],
  ['client_encoding', 'UTF8'],
])

const LEXICAL_WAIT_DENIED: Decision = {
  effect: 'deny',
  rules: ['gatehouse:lexical-unsettled'],
  reason:
    'this text depends on standard_conforming_strings and client_encoding, and an earlier statement of the same batch may have changed them; send Sync first',
  reasons: [],
  policy: 'gatehouse',
}

const FUNCTION_CALL_DENIED: Decision = {
  effect: 'deny',
  rules: ['gatehouse:no-function-call'],
  reason: 'the FunctionCall protocol message is not allowed; call functions with SELECT',
  reasons: [],
  policy: 'gatehouse',
}

/** A client that has not authenticated in this time is disconnected (PostgreSQL: authentication_timeout = 1 min). */
const AUTH_TIMEOUT_MS = 60_000

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`
}

/** What a client reads when policy refuses: `gatehouse: denied by <rule> (<hop>): <reason>`. */
export function denialMessage(d: Decision): string {
  if (d.effect === 'hold') return `gatehouse: approval required from ${d.approvers.join(', ') || 'a reviewer'} (${d.rules.join(', ')})`
  if (d.effect !== 'deny') return 'gatehouse: refused'
  const first = d.reasons[0]
  if (!first) return `gatehouse: denied: ${d.reason}`
  const rule = first.rule || 'policy'
  return `gatehouse: denied by ${rule}${first.hop ? ` (${first.hop})` : ''}: ${first.reason}`
}

export interface CancelTarget {
  readonly secret: Buffer
  cancel(): void
}

/** State the plugin shares across connections: the cancel-key registry and live connections. */
export interface PgShared {
  readonly ctx: ProxyContext
  readonly cancelKeys: Map<number, CancelTarget>
  readonly connections: Set<PgConnection>
  readonly analyzer: SqlAnalyzer
  readonly catalogs: CatalogCache
  readonly maskKey: Buffer
}

/** A prepared statement or portal as the gateway believes the server has it. Entries sent in an
 * earlier Sync batch and not yet answered are uncertain: Execute waits for them to settle. */
interface NamedEntry {
  /** SQL text, or null when unknown (created by SQL-level PREPARE, or possibly replaced by it). */
  readonly sql: string | null
  /** For a statement created by SQL-level PREPARE: what it runs, as classified then. */
  readonly facts: StatementFacts | null
  readonly params: readonly (string | null)[] | null
  state: 'pending' | 'ok' | 'failed'
  readonly batch: number
  readonly prev: NamedEntry | null
  /** For a portal: the statement entry it was bound from. */
  readonly statement: NamedEntry | null
  /** A statement's own name; for a portal, the name of the statement it was bound from. */
  readonly statementName: string
  waiters: (() => void)[] | null
  /** The result shape the server described (Describe), read only while the session masks. */
  fields?: FieldInfo[] | null
  /** For a portal: the result format codes of its Bind. */
  resultFormats?: readonly number[]
  /** For a portal: the verdict its Bind was judged and audited with (onBind). */
  judged?: { readonly seq: number; readonly verdict: Verdict }
}

/** An executed statement waiting for its result, for the `result` audit event. */
interface StatementRecord {
  readonly seq: number
  /** performance.now() when it was sent (a number: no BigInt per statement). */
  readonly started: number
  rows: number
  tags: string[]
  error: { code: string; message: string } | null
  /** The gateway's own error, sent in place of the stand-in's error when the statement was refused. */
  readonly replacement: Buffer | null
  /** The statement may hold a secret (redact.ts): the server's error text, which can quote part of
   *  it (a malformed connection string, a syntax error), is not audited. */
  readonly secret?: boolean
  /** Per statement of the query, what it changes in the session once it completes. */
  readonly effects: readonly StatementEffect[]
  /** Per statement of the query, how its results are masked (null: not masked). */
  readonly masks: readonly (StatementMaskPlan | null)[] | null
  /** The chain's mask obligations for this statement: what the result backstop checks fields against. */
  readonly obligations?: readonly MaskObligation[]
}

enum Expect {
  Query,
  Parse,
  Bind,
  Describe,
  Execute,
  Close,
  Sync,
}

interface Expectation {
  readonly kind: Expect
  readonly entry: NamedEntry | null
  readonly record: StatementRecord | null
  /** For Execute: the portal it runs; for Describe: what is described (result shapes, for masking). */
  readonly target?: NamedEntry | null
}

function settle(e: NamedEntry, state: 'ok' | 'failed'): void {
  if (e.state !== 'pending') return
  e.state = state
  const w = e.waiters
  e.waiters = null
  if (w) for (const f of w) f()
}

/** An ErrorResponse/NoticeResponse with its text withheld: only severity and SQLSTATE remain. */
function scrubbed(body: Buffer, kind: 'E' | 'N'): Buffer {
  const f = readErrorFields(body)
  const code = f.get('C') ?? 'XX000'
  const fields: ErrorFields = {
    severity: kind === 'N' ? 'NOTICE' : f.get('V') === 'FATAL' ? 'FATAL' : 'ERROR',
    code,
    message: `gatehouse: the server's message is withheld because the statement reads masked columns (SQLSTATE ${code})`,
  }
  return kind === 'E' ? errorResponse(fields) : noticeResponse(fields)
}

/** The mask obligations of an allowed statement (none for a cleared chain). */
function obligationsOf(v: Verdict): readonly MaskObligation[] {
  return v.decision.effect === 'allow' ? v.decision.mask : []
}

/** SQLSTATE of a result withheld because the catalog moved under it: a serialization failure, which
 *  clients and drivers know to retry. */
const CATALOG_MOVED_CODE = '40001'

/** Whether an allowed statement carries mask obligations (checked without an await: the hot path). */
function needsMasking(v: Verdict, sql: string | null): sql is string {
  return v.decision.effect === 'allow' && v.decision.mask.length > 0 && sql !== null
}

const EMPTY = Buffer.alloc(0)

/** The text values of a DataRow message (type byte and length included). */
function dataRowText(message: Buffer): (string | null)[] {
  const n = message.readInt16BE(5)
  const out: (string | null)[] = []
  let p = 7
  for (let i = 0; i < n; i++) {
    const len = message.readInt32BE(p)
    p += 4
    if (len < 0) out.push(null)
    else {
      out.push(message.toString('utf8', p, p + len))
      p += len
    }
  }
  return out
}

function describeParam(p: Buffer | null, format: number): string | null {
  if (p === null) return null
  if (format === 1) return `\\x${p.toString('hex')}`
  return p.toString('utf8')
}

/** One statement on its way to the server: the message as received and what it runs. */
interface Outgoing {
  readonly raw: Buffer
  readonly kind: Expect
  /** The SQL that runs (null when the gateway does not know it). */
  readonly sql: string | null
  /** The text the classifier judges: `sql`, or `EXECUTE name` for a portal of an SQL-level PREPARE. */
  readonly text: string | null
  readonly params: readonly (string | null)[] | null
  /** The portal an Execute runs. */
  readonly portal: NamedEntry | null
  /** The approval request whose grant let this statement through (hold.ts), if any. */
  readonly approvedBy: string | null
}

/** What a portal will run. */
interface ResolvedPortal {
  /** The live portal entry (its Bind's verdict, when it was judged at Bind). */
  readonly entry?: NamedEntry
  readonly sql: string | null
  readonly facts: StatementFacts | null
  readonly name: string
  readonly params: readonly (string | null)[] | null
}

/** The `statement` audit event: what runs, how it was decided, and under which policy. */
function statementEvent(seq: number, { sql, params, approvedBy }: Outgoing, verdict: Verdict): SessionAuditEvent {
  const decision = verdict.decision
  const only = verdict.statements.length === 1 ? verdict.statements[0] : undefined
  const ev: Record<string, unknown> = { type: 'statement', seq, sql: sql === null ? null : redactSql(sql) }
  if (params)
    ev.params =
      sql !== null && mentionsPassword(sql)
        ? params.map(() => '[redacted]')
        : params.map((p) => (p !== null && holdsSecret(p) ? '[redacted]' : p))
  if (only) {
    ev.action = only.action
    ev.kind = only.kind
    if (only.wrapper) ev.wrapper = only.wrapper
    if (only.sideEffectFunctions && only.sideEffectFunctions.length > 0) ev.side_effect_functions = only.sideEffectFunctions
    if (only.inner) {
      // What EXECUTE/FETCH/MOVE ran: the text the server holds for the name (names.ts).
      ev.via = only.inner.via
      ev.inner_sql = redactSql(only.inner.sql)
      ev.inner_source = only.inner.source
    }
  } else if (verdict.statements.length > 1) {
    ev.statements = verdict.statements.map((st) => ({
      sql: redactSql(st.sql),
      action: st.action,
      kind: st.kind,
      ...(st.wrapper ? { wrapper: st.wrapper } : {}),
      ...(st.sideEffectFunctions && st.sideEffectFunctions.length > 0 ? { side_effect_functions: st.sideEffectFunctions } : {}),
      decision: st.decision,
      rules: st.rules,
      ...(st.inner ? { via: st.inner.via, inner_sql: redactSql(st.inner.sql), inner_source: st.inner.source } : {}),
    }))
  }
  ev.decision = decision.effect
  ev.rules = decision.rules
  if (decision.effect === 'deny') {
    ev.reason = decision.reason
    ev.hops = decision.reasons.map((r) => r.hop)
  } else if (decision.effect === 'hold') ev.approvers = decision.approvers
  if (approvedBy !== null) ev.approval = approvedBy
  if (verdict.masks) {
    // Which output columns are masked, by which rule (known before the statement runs).
    const masked = verdict.masks.flatMap((p, i) =>
      (p?.masked ?? []).map((m) => (verdict.masks && verdict.masks.length > 1 ? { statement: i, ...m } : m)),
    )
    if (masked.length > 0) ev.masked = masked
  }
  ev.policy_version = decision.policy
  return ev as SessionAuditEvent
}

export class PgConnection implements BackendHandler {
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
  private session: ProxySession | null = null
  private upstream: Upstream | null = null
  private scanner: BackendScanner | null = null
  private pumping = false
  private pausedWhilePumping = false
  private out: Buffer[] = []
  private expectations: Expectation[] = []
  private expectHead = 0
  private readonly statements = new Map<string, NamedEntry>()
  private readonly portals = new Map<string, NamedEntry>()
  private batch = 0
  private sql: SessionSql | null = null
  /** Since the last ReadyForQuery: whether an error came, and the last command tag. */
  private errorSinceReady = false
  private lastTag: string | null = null
  private seq = 0
  private ourPid = 0
  private authTimer: NodeJS.Timeout | null = null
  private readonly abort = new AbortController()
  /** `SET gatehouse.approval_wait|reason` (hold.ts); aborted by a CancelRequest while a statement is held. */
  private readonly approvalPrefs = new hold.ApprovalPrefs()
  private holdCancel: AbortController | null = null
  /** Masking state; the scanner reads result shapes once this session has had a mask obligation. */
  private masking: SessionMasking | null = null
  private maskingOn = false
  /** Rewrites the rows of the result being received (null: rows stream untouched). */
  private rowMasker: RowMasker | null = null
  private copyMasker: { rewrite(payload: Buffer): Buffer } | null = null
  /** An Execute whose masker is compiled at its first row, from the portal's described shape. */
  private lazyPlan: { plan: StatementMaskPlan; portal: NamedEntry | null } | null = null
  private lineageSnapshot: LineageCatalogSnapshot | null = null
  /** A result was withheld (the catalog moved under it): everything up to ReadyForQuery is dropped. */
  private backstopRefusal = false
  /** The catalog re-read that a withheld result started; the next statement is planned after it. */
  private pendingRefresh: Promise<boolean> | null = null
  private sessionMaskKeys: MaskingKeys | null = null
  private sessionUser = ''
  private boundCatalog: { key: string; catalog: LineageCatalog } | null = null
  /** Unknown relations a catalog refresh was already tried for (cleared by this session's DDL). */
  private readonly refreshedFor = new Set<string>()
  /** Query and Sync messages sent whose ReadyForQuery has not come back. */
  private readiesPending = 0
  /** Sync batches the server has answered (NamedEntry.batch below this: answered). */
  private answeredBatches = 0
  /** Extended-protocol messages were sent since the last Sync: the server is mid-batch. */
  private openBatch = false
  /** The portal of the Bind being judged (onBind), so a refusal can mark it failed. */
  private bindInJudgement: NamedEntry | null = null
  /** The gateway's own query running on the server connection (lookupNames). */
  private lookup: {
    row(message: Buffer): void
    error(message: string): void
    done(): void
  } | null = null
  private readyWaiters: (() => void)[] = []
  /** A statement that may have changed a setting was sent and its ReadyForQuery has not come. */
  private lexicalUnsettled = false
  /** Such a statement is in the extended-protocol batch not yet ended by Sync. */
  private openBatchOpaque = false

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

  // ---- startup ----------------------------------------------------------------------------

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
      } else if (this.phase === 'ready') {
        this.reader.push(chunk)
        if (!this.pumping) void this.pump()
        // While a decision or an audit write is awaited, stop reading rather than buffer without bound.
        else if (this.reader.pending > this.shared.ctx.limits.maxMessageBytes) {
          this.client.pause()
          this.pausedWhilePumping = true
        }
      }
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
    const session = result.session
    this.session = session
    if (this.startupSettings.length > 0 && !(await this.judgeStartupSettings(session))) return
    let upstream: Upstream
    try {
      upstream = await connectUpstream(this.upstreamOptions(session), this.abort.signal)
    } catch (err) {
      this.log.warn({ session: session.id, err: isGatehouseError(err) ? err.message : String(err) }, 'cannot open the server connection')
      session.end('server connection failed')
      this.session = null
      // The public message says why without internals (e.g. a refused password-exchange downgrade).
      const why = isGatehouseError(err) && err.code === 'GH_ERR_UPSTREAM' ? `: ${err.publicMessage}` : ''
      this.fatal('08006', `Gatehouse could not connect to the target server${why}`)
      return
    }
    try {
      // What the classifier needs to name tables as the server resolves them.
      const start = await readSessionStart(upstream.socket)
      const snapshot = await this.shared.catalogs.get(session.connection.name, upstream.socket)
      this.lineageSnapshot = snapshot.lineage
      this.sessionUser = start.user
      this.sql = new SessionSql(
        this.shared.analyzer,
        session,
        parseSearchPath(start.searchPath),
        start.user,
        snapshot.catalog,
        (names) => this.lookupNames(names),
        this.log,
        snapshot.functions,
        (name) => {
          if (this.lineageSnapshot === null) return undefined
          const rel = this.lineageSnapshot.relations.get(name)
          return rel?.kind === 'view' ? rel.definition : null
        },
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
    this.startRelay(session, upstream)
  }

  /**
   * Each setting of the client's `options` is judged and audited as the SET it is, through the
   * classifier and the engine like any statement, before the server is reached; a refusal (or a
   * failure to decide or audit) refuses the connection.
   */
  private async judgeStartupSettings(session: ProxySession): Promise<boolean> {
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

  private endRefused(session: ProxySession, code: string, message: string): void {
    session.end('startup setting refused')
    this.session = null
    this.fatal(code, message)
  }

  private upstreamOptions(session: ProxySession): UpstreamOptions {
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

  private startRelay(session: ProxySession, upstream: Upstream): void {
    if (this.authTimer) clearTimeout(this.authTimer)
    this.reader.setLimit(this.shared.ctx.limits.maxMessageBytes)
    this.scanner = new BackendScanner(this, this.shared.ctx.limits.maxMessageBytes)
    // Our own backend key: the server's never leaves the gateway.
    let pid = 0
    do pid = randomInt(1, 2 ** 31 - 1)
    while (this.shared.cancelKeys.has(pid))
    this.ourPid = pid
    const secret = randomBytes(4)
    const opts = this.upstreamOptions(session)
    this.shared.cancelKeys.set(pid, {
      secret,
      cancel: () => {
        // A held statement is not on the server yet: cancelling it ends the wait (hold.ts).
        this.holdCancel?.abort()
        const up = this.upstream
        if (!up || this.phase !== 'ready') return
        sendCancel(opts, up.pid, up.secret).catch((err: unknown) => this.log.warn({ err: String(err) }, 'cancel forwarding failed'))
      },
    })
    session.onTerminate((reason) => {
      // A backend busy in a query reads nothing until it finishes: cancel the query, then end both sides.
      const up = this.upstream
      if (up && this.phase === 'ready') sendCancel(opts, up.pid, up.secret).catch(() => undefined)
      this.fatal('57P01', `terminating connection: ${reason}`)
    })

    const server = upstream.socket
    server.on('data', this.onServerData)
    server.on('error', () => this.close('server connection error'))
    server.on('close', () => this.close('server closed the connection'))
    server.on('drain', () => this.client.resume())
    this.client.on('drain', () => server.resume())

    for (const m of upstream.startupMessages) {
      if (m[0] === BackendCode.ParameterStatus && !this.lexingHolds(m.subarray(5))) return
    }
    this.client.cork()
    this.client.write(AUTH_OK)
    for (const m of upstream.startupMessages) this.client.write(m)
    this.client.write(backendKeyData(pid, secret))
    this.client.write(upstream.readyForQuery)
    this.client.uncork()
    this.phase = 'ready'
    this.client.resume()
    if (this.reader.pending > 0) void this.pump()
  }

  // ---- client → server --------------------------------------------------------------------

  /**
   * Frames and handles what the client sent until only a partial message is left. One loop, never
   * re-entered: bytes that arrive while a decision or an audit write is awaited are pushed to the
   * reader by onStartupData and taken by this same loop when it resumes, so no amount of buffered
   * or split input can deepen the stack.
   */
  private async pump(): Promise<void> {
    this.pumping = true
    try {
      while (this.phase === 'ready') {
        const f: Frame | null = this.reader.next()
        if (f === null) break
        const p = this.onClientFrame(f)
        if (p !== undefined) await p
      }
      this.flushToServer()
    } catch (err) {
      this.protocolFailure(err)
    } finally {
      this.pumping = false
      if (this.pausedWhilePumping) {
        this.pausedWhilePumping = false
        this.client.resume()
      }
    }
  }

  private flushToServer(): void {
    const up = this.upstream
    if (!up || this.out.length === 0) return
    const out = this.out
    this.out = []
    let ok: boolean
    if (out.length === 1) ok = up.socket.write(out[0] as Buffer)
    else {
      up.socket.cork()
      for (const b of out) ok = up.socket.write(b)
      ok = up.socket.write(Buffer.alloc(0))
      up.socket.uncork()
    }
    if (!ok) this.client.pause()
  }

  private expect(kind: Expect, entry: NamedEntry | null, record: StatementRecord | null, target: NamedEntry | null = null): void {
    if (kind === Expect.Query || kind === Expect.Sync) this.readiesPending++
    this.expectations.push({ kind, entry, record, target })
    if (record?.masks && this.expectations.length - 1 === this.expectHead) this.headChanged()
  }

  /** Returns a promise only for frames that need a decision; the rest are handled in line. */
  private onClientFrame(f: Frame): Promise<void> | undefined {
    if (EXTENDED_MESSAGES.has(f.type)) this.openBatch = true
    switch (f.type) {
      case FrontendCode.Query:
        return this.onQuery(f)
      case FrontendCode.Parse: {
        const m = parseParse(f.body)
        const gate = this.lexicalGate(m.sql)
        if (gate !== null) return this.parseAfterGate(f, gate)
        this.onParse(f, m)
        return undefined
      }
      case FrontendCode.Bind:
        return this.onBind(f)
      case FrontendCode.Execute:
        return this.onExecute(f)
      case FrontendCode.Describe: {
        const d = parseTarget(f.body, 'Describe')
        const described = (d.kind === 'S' ? this.statements : this.portals).get(d.name) ?? null
        this.expect(Expect.Describe, null, null, described)
        this.out.push(f.raw)
        return undefined
      }
      case FrontendCode.Close: {
        const m = parseTarget(f.body, 'Close')
        ;(m.kind === 'S' ? this.statements : this.portals).delete(m.name)
        this.expect(Expect.Close, null, null)
        this.out.push(f.raw)
        return undefined
      }
      case FrontendCode.Sync:
        expectEmpty(f.body, 'Sync')
        this.openBatchOpaque = false
        this.openBatch = false
        this.expect(Expect.Sync, null, null)
        this.batch++
        this.out.push(f.raw)
        return undefined
      case FrontendCode.Flush:
        expectEmpty(f.body, 'Flush')
        this.out.push(f.raw)
        return undefined
      case FrontendCode.CopyData:
      case FrontendCode.CopyDone:
      case FrontendCode.CopyFail:
        this.out.push(f.raw)
        return undefined
      case FrontendCode.Terminate:
        this.flushToServer()
        this.upstream?.socket.end(f.raw)
        this.close('client terminated')
        return undefined
      case FrontendCode.FunctionCall:
        // The fast-path interface calls a function by OID: work no classifier can see.
        return this.sendOrRefuse(
          { raw: f.raw, kind: Expect.Query, sql: null, text: null, params: null, portal: null, approvedBy: null },
          { decision: FUNCTION_CALL_DENIED, statements: [], effects: [] },
        )
      case FrontendCode.Password:
        throw new ProtocolError('unexpected password message after authentication')
      default:
        throw new ProtocolError(`unexpected message type 0x${f.type.toString(16)}`)
    }
  }

  private onParse(f: Frame, m: ReturnType<typeof parseParse>): void {
    const prev = m.name === '' ? null : (this.statements.get(m.name) ?? null)
    const entry: NamedEntry = {
      sql: m.sql,
      facts: null,
      params: null,
      state: 'pending',
      batch: this.batch,
      prev,
      statement: null,
      waiters: null,
      statementName: m.name,
    }
    this.statements.set(m.name, entry)
    this.expect(Expect.Parse, entry, null)
    this.out.push(f.raw)
  }

  /** A Parse whose text must wait for the server's settings (lexicalGate); refused in place if it cannot. */
  private async parseAfterGate(f: Frame, gate: Promise<void> | 'refuse'): Promise<void> {
    const m = parseParse(f.body)
    if (gate === 'refuse') {
      // The server never sees it: a later Bind of the name is skipped after the stand-in's error.
      const o: Outgoing = { raw: f.raw, kind: Expect.Execute, sql: m.sql, text: m.sql, params: null, portal: null, approvedBy: null }
      await this.sendOrRefuse(o, { decision: LEXICAL_WAIT_DENIED, statements: [], effects: [] })
      return
    }
    await gate
    if (!this.isClosed()) this.onParse(f, m)
  }

  /** A simple Query. */
  private onQuery(f: Frame): Promise<void> | undefined {
    const sql = parseQuery(f.body)
    const gate = this.lexicalGate(sql)
    if (gate !== null) return this.queryAfterGate(f, sql, gate)
    return this.queryNow(f, sql)
  }

  private queryNow(f: Frame, sql: string): Promise<void> | undefined {
    // A simple Query destroys the unnamed statement and portal (PostgreSQL exec_simple_query).
    this.statements.delete('')
    this.portals.delete('')
    return this.judgeAndSend({ raw: f.raw, kind: Expect.Query, sql, text: sql, params: null, portal: null, approvedBy: null })
  }

  private async queryAfterGate(f: Frame, sql: string, gate: Promise<void> | 'refuse'): Promise<void> {
    if (gate === 'refuse') {
      const o: Outgoing = { raw: f.raw, kind: Expect.Query, sql, text: sql, params: null, portal: null, approvedBy: null }
      await this.sendOrRefuse(o, { decision: LEXICAL_WAIT_DENIED, statements: [], effects: [] })
      return
    }
    await gate
    if (!this.isClosed()) await this.queryNow(f, sql)
  }

  /**
   * A Bind plans its statement, and planning runs code (immutable functions are evaluated): so the
   * statement is judged and audited here, before the Bind reaches the server, and the portal's
   * Executes run under this verdict. A refused Bind never reaches the server; its portal counts
   * as failed, so an Execute of it is refused too.
   */
  private onBind(f: Frame): Promise<void> | undefined {
    const m = parseBind(f.body)
    const stmt = this.statements.get(m.statement) ?? null
    const params = m.params.map((p, i) => describeParam(p, m.paramFormats[i] ?? 0))
    const entry: NamedEntry = {
      sql: null,
      facts: null,
      params,
      state: 'pending',
      batch: this.batch,
      // A Bind that fails leaves no usable portal of that name (the transaction is aborted).
      prev: null,
      statement: stmt,
      waiters: null,
      statementName: m.statement,
      resultFormats: m.resultFormats,
    }
    this.portals.set(m.portal, entry)
    const live = this.firstLiveNow(stmt)
    if (live === undefined) return this.bindAfterWait(f.raw, entry, stmt as NamedEntry)
    return this.judgeBind(f.raw, entry, live)
  }

  private async bindAfterWait(raw: Buffer, entry: NamedEntry, stmt: NamedEntry): Promise<void> {
    await this.judgeBind(raw, entry, await this.firstLive(stmt))
  }

  private judgeBind(raw: Buffer, entry: NamedEntry, stmt: NamedEntry | null): Promise<void> | undefined {
    const sql = stmt?.sql ?? null
    this.bindInJudgement = entry
    const p = this.judgeAndSend({
      raw,
      kind: Expect.Bind,
      sql,
      // A statement created by SQL-level PREPARE is judged as the EXECUTE of it (names.ts).
      text: stmt?.facts ? `EXECUTE ${quoteIdent(entry.statementName)}` : sql,
      params: entry.params,
      portal: entry,
      approvedBy: null,
    })
    if (p === undefined) {
      this.bindInJudgement = null
      return undefined
    }
    return p.finally(() => {
      this.bindInJudgement = null
    })
  }

  /** An allowed Bind: the portal remembers its verdict, and the Bind goes to the server. */
  private bindAllowed(o: Outgoing, verdict: Verdict, seq: number): void {
    const entry = o.portal as NamedEntry
    entry.judged = { seq, verdict }
    this.expect(Expect.Bind, entry, null)
    this.out.push(o.raw)
    this.noteForwarded(Expect.Execute, verdict.inert === true)
  }

  /** An Execute, judged as the statement its portal runs (waiting first when that is not yet known). */
  private onExecute(f: Frame): Promise<void> | undefined {
    const m = parseExecute(f.body)
    const portal = this.portals.get(m.portal) ?? null
    const resolved = portal ? this.resolvePortalNow(portal) : null
    if (resolved === undefined) return this.onExecuteAfterWait(f.raw, portal as NamedEntry)
    return this.executeResolved(f.raw, portal, resolved)
  }

  private async onExecuteAfterWait(raw: Buffer, portal: NamedEntry): Promise<void> {
    await this.executeResolved(raw, portal, await this.resolvePortal(portal))
  }

  private executeResolved(raw: Buffer, portal: NamedEntry | null, resolved: ResolvedPortal | null): Promise<void> | undefined {
    const judged = resolved?.entry?.judged
    if (judged && this.phase === 'ready') {
      // Judged and audited at its Bind (onBind): the Execute runs under that verdict and seq.
      const record: StatementRecord = {
        seq: judged.seq,
        started: performance.now(),
        rows: 0,
        tags: [],
        error: null,
        replacement: null,
        effects: judged.verdict.effects,
        masks: judged.verdict.masks ?? null,
        obligations: obligationsOf(judged.verdict),
      }
      this.expect(Expect.Execute, null, record, portal)
      this.out.push(raw)
      this.noteForwarded(Expect.Execute, judged.verdict.inert === true)
      return undefined
    }
    const sql = resolved?.sql ?? null
    return this.judgeAndSend({
      raw,
      kind: Expect.Execute,
      sql,
      // A statement created by SQL-level PREPARE, bound and executed through the protocol, is
      // judged as the EXECUTE of it.
      text: resolved?.facts ? `EXECUTE ${quoteIdent(resolved.name)}` : sql,
      params: resolved?.params ?? null,
      portal,
      approvedBy: null,
    })
  }

  /**
   * Judges `o.text` and sends or refuses `o`. The common case — one statement, no masking, `fsync:
   * batched` — is judged, audited and queued for the server without an await; the rest goes
   * through judgeThenSend.
   */
  private judgeAndSend(o: Outgoing): Promise<void> | undefined {
    const analysis = o.text === null ? null : this.shared.analyzer.analyze(o.text)
    const now = analysis === null ? null : (this.sql as SessionSql).judgeNow(analysis, this.abort.signal)
    if (now !== null && !needsMasking(now, o.text)) return this.sendOrRefuseNow(o, now)
    return this.judgeThenSend(o, now, analysis)
  }

  private async judgeThenSend(o: Outgoing, judged: Verdict | null, analysis: Analysis | null): Promise<void> {
    let verdict = judged ?? (await (this.sql as SessionSql).judge(o.text, this.abort.signal, undefined, analysis))
    if (needsMasking(verdict, o.text)) verdict = await this.applyMasking(verdict, o.text)
    await this.sendOrRefuse(o, verdict)
  }

  /**
   * An allowed statement with mask obligations gets a masking plan per statement; one that would
   * launder a masked column, or whose output the gateway cannot trace, becomes a denial.
   */
  private async applyMasking(verdict: Verdict, sql: string): Promise<Verdict> {
    const d = verdict.decision
    if (d.effect !== 'allow') return verdict
    if (this.pendingRefresh) {
      const refresh = this.pendingRefresh
      this.pendingRefresh = null
      await refresh
    }
    this.masking ??= new SessionMasking(
      () => this.lineageCatalog(),
      Array.isArray(this.session?.settings.detectors) ? (this.session?.settings.detectors as string[]) : null,
    )
    if (!this.maskingOn) {
      this.maskingOn = true
      this.updateScan()
    }
    const held = verdict.statements.map((st) => st.inner ?? null)
    let mv = this.masking.plan(sql, d.mask, d.maskOptions, held)
    const fresh = mv.unknownRelations.filter((r) => !this.refreshedFor.has(r))
    if (fresh.length > 0) {
      // A relation created after this session's catalog snapshot (a view over a masked column,
      // say) must not pass as unknown: read the catalog again, once per name, and plan again.
      for (const r of fresh) this.refreshedFor.add(r)
      if (await this.refreshCatalog()) mv = this.masking.plan(sql, d.mask, d.maskOptions, held)
    }
    if (mv.check !== null) {
      // The snapshot may be older than this statement (a view redefined, a table renamed by
      // another client): ask the server, and plan again on a fresh snapshot when it moved.
      const current = await this.catalogCurrent(mv.check)
      if (current === false && (await this.refreshCatalog())) mv = this.masking.plan(sql, d.mask, d.maskOptions, held)
      else if (current !== true)
        mv = {
          ok: false,
          rule: 'gatehouse:stale-catalog',
          reason: 'the gateway could not confirm that its view of the catalog is current, and masked columns may be involved',
          unknownRelations: [],
          check: null,
        }
    }
    if (!mv.ok) {
      const reason = mv.reason
      return {
        ...verdict,
        decision: { effect: 'deny', rules: [mv.rule], reason, reasons: [{ rule: mv.rule, reason, hop: '' }], policy: d.policy },
      }
    }
    return { ...verdict, masks: mv.plans.some((p) => p !== null) ? mv.plans : null }
  }

  /**
   * The lineage catalog bound to the session's search_path. When a rolled-back savepoint leaves
   * several paths possible, none is chosen: lineage is then unknown (fail closed).
   */
  private lineageCatalog(): LineageCatalog | null {
    const snap = this.lineageSnapshot
    const paths = this.sql?.currentPaths() ?? []
    if (!snap || paths.length !== 1) return null
    const path = paths[0] as readonly string[]
    const key = path.join('\u0000')
    if (this.boundCatalog?.key !== key) this.boundCatalog = { key, catalog: lineageCatalogFor(snap, path, this.sessionUser) }
    return this.boundCatalog.catalog
  }

  /** Whether the lineage snapshot still holds for the names of `check`; null when it cannot be told. */
  private async catalogCurrent(check: CatalogCheck): Promise<boolean | null> {
    const session = this.session
    const snap = this.lineageSnapshot
    if (!session || !snap) return null
    try {
      const rows = await this.shared.catalogs.check(
        session.connection.name,
        async () => {
          // The gateway's own connection, shared by sessions: none of this client's startup settings.
          const opts = this.upstreamOptions(session)
          const params = new Map([
            ['client_encoding', 'UTF8'],
            ['application_name', 'gatehouse catalog check'],
            ['plan_cache_mode', 'force_generic_plan'],
          ])
          return (await connectUpstream({ ...opts, params })).socket
        },
        check,
      )
      return snapshotCurrent(snap, check, rows)
    } catch (err) {
      this.log.warn({ session: session.id, err: String(err) }, 'cannot check the catalog for masking')
      return null
    }
  }

  /** The masking key, and this session's own `hash_session` key (a random salt under the masking key). */
  private maskKeys(): MaskingKeys {
    this.sessionMaskKeys ??= {
      key: this.shared.maskKey,
      sessionKey: createHmac('sha256', this.shared.maskKey).update(randomBytes(32)).digest(),
    }
    return this.sessionMaskKeys
  }

  /** Re-reads the lineage catalog over a separate server connection; false when it could not. */
  private async refreshCatalog(): Promise<boolean> {
    const session = this.session
    if (!session) return false
    try {
      const snap = await this.shared.catalogs.refresh(session.connection.name, async () => {
        const up = await connectUpstream(this.upstreamOptions(session), this.abort.signal)
        return up.socket
      })
      this.lineageSnapshot = snap.lineage
      this.boundCatalog = null
      return true
    } catch (err) {
      this.log.warn({ session: session.id, err: String(err) }, 'cannot refresh the catalog for masking')
      return false
    }
  }

  /** What a portal will run: waits for entries from earlier Sync batches to be answered. */
  private async resolvePortal(portal: NamedEntry): Promise<ResolvedPortal> {
    const live = await this.firstLive(portal)
    if (!live) return { sql: null, facts: null, name: '', params: null }
    const stmt = live.statement ? await this.firstLive(live.statement) : null
    return { entry: live, sql: stmt?.sql ?? null, facts: stmt?.facts ?? null, name: live.statementName, params: live.params }
  }

  /** resolvePortal when nothing needs waiting for; undefined when something does. */
  private resolvePortalNow(portal: NamedEntry): ResolvedPortal | undefined {
    const live = this.firstLiveNow(portal)
    if (live === undefined) return undefined
    if (!live) return { sql: null, facts: null, name: '', params: null }
    const stmt = live.statement ? this.firstLiveNow(live.statement) : null
    if (stmt === undefined) return undefined
    return { entry: live, sql: stmt?.sql ?? null, facts: stmt?.facts ?? null, name: live.statementName, params: live.params }
  }

  /** firstLive without waiting: undefined when an entry of an earlier batch is still unanswered. */
  private firstLiveNow(e: NamedEntry | null): NamedEntry | null | undefined {
    let cur = e
    while (cur) {
      if (cur.state === 'pending' && cur.batch < this.batch) return undefined
      if (cur.state !== 'failed') return cur
      cur = cur.prev
    }
    return null
  }

  private async firstLive(e: NamedEntry | null): Promise<NamedEntry | null> {
    let cur = e
    while (cur) {
      if (cur.state === 'pending' && cur.batch < this.batch) {
        // Sent before the last Sync and unanswered: whether it took effect is not yet known.
        this.flushToServer()
        const c = cur
        await new Promise<void>((r) => {
          c.waiters ??= []
          c.waiters.push(r)
        })
      }
      if (cur.state !== 'failed') return cur
      cur = cur.prev
    }
    return null
  }

  /** sendOrRefuse without an await where the audit log allows it (`fsync: batched`). */
  private sendOrRefuseNow(o: Outgoing, verdict: Verdict): Promise<void> | undefined {
    const seq = ++this.seq
    const ev = statementEvent(seq, o, verdict)
    try {
      // Durable before forwarded: if the append fails, nothing is sent.
      if (!(this.session as ProxySession).auditNow(ev)) return this.auditThenForward(o, verdict, seq, ev)
    } catch (err) {
      this.auditFailed(err, o.kind, seq)
      return undefined
    }
    return this.forwardOrRefuse(o, verdict, seq)
  }

  /** Audits the statement durably, then forwards it, or refuses it in place. */
  private sendOrRefuse(o: Outgoing, verdict: Verdict): Promise<void> {
    const seq = ++this.seq
    return this.auditThenForward(o, verdict, seq, statementEvent(seq, o, verdict))
  }

  private async auditThenForward(o: Outgoing, verdict: Verdict, seq: number, ev: SessionAuditEvent): Promise<void> {
    try {
      // Durable before forwarded: if the append fails, nothing is sent.
      await (this.session as ProxySession).audit(ev)
    } catch (err) {
      this.auditFailed(err, o.kind, seq)
      return
    }
    await this.forwardOrRefuse(o, verdict, seq)
  }

  private auditFailed(err: unknown, kind: Expect, seq: number): void {
    this.log.error({ err: String(err), session: this.session?.id }, 'audit append failed; statement refused')
    this.refuseInPlace(
      kind,
      errorResponse({
        severity: 'ERROR',
        code: '58030',
        message: 'gatehouse: the audit log cannot record this statement, so it was not run',
      }),
      seq,
    )
  }

  /** After the statement's audit event is durable: queue it for the server, hold it, or refuse it. */
  private forwardOrRefuse(o: Outgoing, verdict: Verdict, seq: number): Promise<void> | undefined {
    if (this.phase !== 'ready') return undefined
    const kind = o.kind
    const decision = verdict.decision
    if (decision.effect === 'allow' && kind === Expect.Bind) {
      this.bindAllowed(o, verdict, seq)
      return undefined
    }
    if (decision.effect === 'allow') {
      const record: StatementRecord = {
        seq,
        started: performance.now(),
        rows: 0,
        tags: [],
        error: null,
        replacement: null,
        effects: verdict.effects,
        masks: verdict.masks ?? null,
        obligations: obligationsOf(verdict),
        // The server's error text may quote a literal or a bound value: withheld from the audit.
        secret: (o.sql !== null && mentionsPassword(o.sql)) || (o.params?.some((p) => p !== null && holdsSecret(p)) ?? false),
      }
      this.expect(kind, null, record, o.portal)
      this.out.push(o.raw)
      this.noteForwarded(kind, verdict.inert === true)
      this.approvalPrefs.note(this.shared.analyzer, verdict, o.sql)
      return undefined
    }
    if (decision.effect === 'hold' && o.approvedBy === null && this.session?.requestApproval) return this.holdStatement(o, verdict, seq)
    this.refuseInPlace(kind, errorResponse({ severity: 'ERROR', code: '42501', message: denialMessage(decision) }), seq)
    return undefined
  }

  /**
   * A held statement (engine/approvals; hold.ts): the client gets a NoticeResponse at once, the
   * statement waits — and nothing the client sent after it is read, so nothing overtakes it — until
   * reviewers decide; then it is decided again with the grant and forwarded, or refused in place.
   */
  private async holdStatement(o: Outgoing, verdict: Verdict, seq: number): Promise<void> {
    const { kind, sql, text, params } = o
    const session = this.session as ProxySession
    const decision = verdict.decision
    if (decision.effect !== 'hold' || !session.requestApproval) return
    const mixed = hold.mixedHolds(verdict)
    if (mixed) {
      this.refuseInPlace(kind, errorResponse({ severity: 'ERROR', code: '42501', message: mixed }), seq)
      return
    }
    // What came before the held statement is answered first, so the notice goes out between whole
    // server messages. The Flush makes the server send what it buffers mid-batch (ParseComplete,
    // BindComplete) and keeps the waiting server session from timing out (hold.ts).
    this.flushToServer()
    this.upstream?.socket.write(hold.FLUSH)
    while (this.head() !== undefined && !this.isClosed()) await new Promise((r) => setTimeout(r, 5))
    if (this.isClosed()) return
    const bound = hold.bindable(verdict, text, text !== sql)
    const cancel = new AbortController()
    const onClose = (): void => cancel.abort()
    this.abort.signal.addEventListener('abort', onClose, { once: true })
    this.holdCancel = cancel
    let outcome: ApprovalOutcome
    try {
      outcome = await session.requestApproval({
        action: hold.heldAction(verdict, 'sql.other'),
        decision,
        display: text === null ? '(a statement the gateway cannot see)' : redactSql(text),
        // A text that does not name what runs binds the approval to this one wait (hold.bindable).
        fingerprint: hold.statementFingerprint(bound ? text : `${text}\0${session.id}\0${randomBytes(16).toString('hex')}`, params),
        reason: this.approvalPrefs.reason,
        wait: bound ? this.approvalPrefs.wait : true,
        signal: cancel.signal,
        onRequested: (id, groups) => {
          if (!this.isClosed()) this.client.write(noticeResponse(hold.holdNotice(id, groups)))
        },
      })
    } catch (err) {
      if (isGatehouseError(err) && err.code === 'GH_ERR_DENIED') {
        // Refused by the approvals service itself (too many requests waiting): say why.
        this.refuseInPlace(kind, errorResponse({ severity: 'ERROR', code: '42501', message: err.publicMessage }), seq)
        return
      }
      this.log.error({ err: String(err), session: session.id }, 'approval request failed; statement refused')
      const message = 'gatehouse: the approval request could not be recorded, so the statement was not run'
      this.refuseInPlace(kind, errorResponse({ severity: 'ERROR', code: '58030', message }), seq)
      return
    } finally {
      this.holdCancel = null
      this.abort.signal.removeEventListener('abort', onClose)
    }
    if (this.isClosed()) return
    if (outcome.status !== 'granted') {
      this.refuseInPlace(kind, errorResponse(hold.holdError(outcome)), seq)
      return
    }
    // Everything but the hold still applies: a deny still denies, masks still mask.
    let again = await (this.sql as SessionSql).judge(text, this.abort.signal, { granted: true })
    if (needsMasking(again, text)) again = await this.applyMasking(again, text)
    await this.sendOrRefuse({ ...o, approvedBy: outcome.request }, again)
  }

  /**
   * Sends a stand-in that fails on the server, so PostgreSQL aborts exactly what a real error
   * would, and arranges for its error to be replaced with `error`. For Execute the stand-in is a
   * Parse of invalid SQL into a throwaway named statement (the unnamed one stays as it was).
   */
  private refuseInPlace(kind: Expect, error: Buffer, seq: number): undefined {
    // A refused Bind never reaches the server: its portal is unusable.
    if (kind === Expect.Bind && this.bindInJudgement) settle(this.bindInJudgement, 'failed')
    const record: StatementRecord = {
      seq,
      started: performance.now(),
      rows: 0,
      tags: [],
      error: null,
      replacement: error,
      effects: [],
      masks: null,
    }
    if (kind === Expect.Execute || kind === Expect.Bind) {
      this.out.push(serialize.parse({ name: `gatehouse_refused_${randomBytes(6).toString('hex')}`, text: STAND_IN_SQL }))
      this.expect(Expect.Execute, null, record)
    } else {
      this.out.push(serialize.query(STAND_IN_SQL))
      this.expect(Expect.Query, null, record)
    }
    return undefined
  }

  // ---- server → client --------------------------------------------------------------------

  private readonly onServerData = (chunk: Buffer): void => {
    let out: Buffer[]
    try {
      out = (this.scanner as BackendScanner).scan(chunk)
    } catch (err) {
      this.log.error({ err: String(err) }, 'invalid data from the server')
      this.fatal('08P01', 'Gatehouse received an invalid message from the server')
      return
    }
    // A session ended while scanning (a withheld result mid-batch) sends nothing more.
    if (this.phase === 'closed') return
    let ok = true
    if (out.length === 1) ok = this.client.write(out[0] as Buffer)
    else if (out.length > 8) {
      // Masked results come back as one buffer per row: one copy is far cheaper than a write each.
      ok = this.client.write(Buffer.concat(out))
    } else if (out.length > 1) {
      this.client.cork()
      for (const b of out) ok = this.client.write(b)
      this.client.uncork()
    }
    if (!ok) this.upstream?.socket.pause()
  }

  private head(): Expectation | undefined {
    return this.expectations[this.expectHead]
  }

  private shift(): void {
    this.expectHead++
    if (this.maskingOn) this.headChanged()
    if (this.expectHead > 64 && this.expectHead * 2 > this.expectations.length) {
      this.expectations = this.expectations.slice(this.expectHead)
      this.expectHead = 0
    }
  }

  onStreamed(type: number): void {
    const h = this.head()
    if (!h) return
    switch (type) {
      case BackendCode.DataRow:
        if (h.record) h.record.rows++
        return
      case BackendCode.ParseComplete:
        if (h.kind === Expect.Parse) {
          if (h.entry) settle(h.entry, 'ok')
          this.shift()
        }
        return
      case BackendCode.BindComplete:
        if (h.kind === Expect.Bind) {
          if (h.entry) settle(h.entry, 'ok')
          this.shift()
        }
        return
      case BackendCode.CloseComplete:
        if (h.kind === Expect.Close) this.shift()
        return
      case BackendCode.RowDescription:
      case BackendCode.NoData:
        if (h.kind === Expect.Describe) this.shift()
        return
      case BackendCode.EmptyQueryResponse:
      case BackendCode.PortalSuspended:
        if (h.kind === Expect.Execute) this.finishRecord(h, null)
        return
      default:
    }
  }

  /** A DataRow or CopyData while rows are masked: rewritten, or null to forward it as is. */
  onRow(type: number, message: Buffer): Buffer | null {
    if (this.lookup) {
      if (type === BackendCode.DataRow) this.lookup.row(message)
      return EMPTY
    }
    if (this.backstopRefusal) return EMPTY
    if (type === BackendCode.CopyData) {
      if (!this.copyMasker) return null
      const body = message.subarray(5)
      const out = this.copyMasker.rewrite(body)
      return out === body ? null : frame(BackendCode.CopyData, out)
    }
    const r = this.expectations[this.expectHead]?.record
    if (r) r.rows++
    if (this.lazyPlan) this.compileLazy(message)
    const m = this.rowMasker
    if (!m) return null
    const out = m.rewrite(message)
    return out === message ? null : out
  }

  onMessage(type: number, body: Buffer): Buffer | null {
    if (this.lookup) return this.onLookupMessage(type, body)
    if (!this.backstopRefusal) return this.handleMessage(type, body)
    // A withheld result: the session's bookkeeping follows the server, the client sees only the
    // error already sent and the ReadyForQuery that ends the batch.
    const r = this.handleMessage(type, body)
    if (type === BackendCode.ReadyForQuery) {
      this.backstopRefusal = false
      this.updateScan()
      return r
    }
    if (type === BackendCode.ParameterStatus || type === BackendCode.NotificationResponse) return r
    return EMPTY
  }

  private handleMessage(type: number, body: Buffer): Buffer | null {
    const h = this.head()
    switch (type) {
      case BackendCode.ParameterStatus:
        this.lexingHolds(body)
        return null
      // Collected only while this session masks (BackendScanner.setMasking).
      case BackendCode.RowDescription:
        return this.onRowDescription(h, body)
      case BackendCode.CopyOutResponse:
        this.onCopyOut(h, body)
        return null
      case BackendCode.NoticeResponse:
        return this.currentPlan(h)?.scrubErrors ? scrubbed(body, 'N') : null
      default:
    }
    if (type === BackendCode.CommandComplete) {
      const tag = readCommandTag(body)
      this.lastTag = tag
      if (this.rowMasker || this.copyMasker) {
        this.rowMasker = null
        this.copyMasker = null
        this.updateScan()
      }
      if (h?.record) {
        const effect = h.record.effects[h.kind === Expect.Execute ? 0 : h.record.tags.length]
        if (effect) this.applyEffect(effect)
        if (h.kind === Expect.Execute) this.finishRecord(h, tag)
        else h.record.tags.push(tag)
      }
      return null
    }
    if (type === BackendCode.ReadyForQuery) {
      this.sql?.onReadyForQuery(body[0] ?? 0x49, this.errorSinceReady, this.lastTag)
      this.errorSinceReady = false
      this.lastTag = null
      if (h?.kind === Expect.Sync) this.answeredBatches++
      // Outside a transaction block no portal survives (protocol portals are never WITH HOLD):
      // forget those of answered batches, so a later DECLARE of the name is not taken for them.
      if (body[0] === 0x49) {
        for (const [name, p] of this.portals) if (p.batch < this.answeredBatches) this.portals.delete(name)
      }
      if (h && (h.kind === Expect.Query || h.kind === Expect.Sync)) {
        this.readiesPending--
        if (h.kind === Expect.Query) this.finishRecord(h, null)
        else this.shift()
      }
      if (this.readiesPending === 0) {
        // Every ParameterStatus of what was sent has arrived (the server sends them before this).
        if (!this.openBatchOpaque) this.lexicalUnsettled = false
        const w = this.readyWaiters
        this.readyWaiters = []
        for (const f of w) f()
      }
      return null
    }
    // ErrorResponse
    this.errorSinceReady = true
    if (!h) return null
    const f = readErrorFields(body)
    const error = { code: f.get('C') ?? '', message: f.get('M') ?? '' }
    // A server error may quote a value of a masked column (invalid input syntax for type integer: "…").
    const replacement = h.record?.replacement ?? (this.currentPlan(h)?.scrubErrors ? scrubbed(body, 'E') : null)
    if (this.rowMasker || this.copyMasker || this.lazyPlan) {
      this.rowMasker = null
      this.copyMasker = null
      this.lazyPlan = null
      this.updateScan()
    }
    if (h.kind === Expect.Query) {
      if (h.record && !h.record.error) h.record.error = error
      return replacement
    }
    if (h.kind === Expect.Sync) return null
    // Extended protocol: the failing message, then everything up to the next Sync is skipped.
    if (h.entry) settle(h.entry, 'failed')
    if (h.record) h.record.error = error
    this.completeRecord(h)
    this.shift()
    for (let e = this.head(); e && e.kind !== Expect.Sync; e = this.head()) {
      if (e.entry) settle(e.entry, 'failed')
      if (e.record) {
        e.record.error = { code: 'skipped', message: 'not executed: an earlier message in the batch failed' }
        this.completeRecord(e)
      }
      this.shift()
    }
    return replacement
  }

  // ---- the gateway's own questions to the server ------------------------------------------

  /**
   * Reads the server's own prepared statements and cursors of these names (names.ts) on the
   * session's backend, between two of the client's batches: everything sent before is answered
   * first, and the answer never reaches the client. Mid-batch the server cannot be asked (an error
   * earlier in the batch would make it skip the question): then the reason is returned.
   */
  private async lookupNames(names: readonly string[]): Promise<ServerNames | string> {
    if (this.openBatch)
      return 'the server cannot be asked which statement the name runs in the middle of an extended-protocol batch; send Sync first'
    this.flushToServer()
    while (this.readiesPending > 0 && !this.isClosed()) await new Promise<void>((r) => this.readyWaiters.push(r))
    const up = this.upstream
    const scanner = this.scanner
    if (!up || !scanner || this.isClosed()) return 'the session ended'
    const name = `gatehouse_names_${randomBytes(6).toString('hex')}`
    return await new Promise<ServerNames | string>((resolve) => {
      const rows = new Map<string, ServerName>()
      let error: string | null = null
      const finish = (answer: ServerNames | string): void => {
        clearTimeout(timer)
        this.lookup = null
        scanner.setDivert(false)
        resolve(answer)
      }
      const timer = setTimeout(() => {
        finish('the server did not answer')
        this.fatal('08006', 'gatehouse: the server did not answer the gateway in time')
      }, LOOKUP_TIMEOUT_MS)
      this.lookup = {
        row: (message) => {
          const cols = dataRowText(message)
          if (cols.length === 3 && cols[0] != null && cols[1] != null)
            rows.set(cols[0], { statement: cols[1], fromSql: cols[2] == null ? null : cols[2] === 't' })
        },
        error: (message) => {
          error ??= message
        },
        done: () => finish(error !== null ? `the server's prepared statements and cursors could not be read (${error})` : rows),
      }
      scanner.setDivert(true)
      up.socket.write(
        Buffer.concat([
          serialize.parse({ name, text: NAME_LOOKUP_SQL }),
          serialize.bind({ portal: name, statement: name, values: [textArrayLiteral(names)] }),
          serialize.execute({ portal: name }),
          serialize.close({ type: 'P', name }),
          serialize.close({ type: 'S', name }),
          serialize.sync(),
        ]),
      )
    })
  }

  /** A server message while the gateway's own query runs: kept from the client, except the
   * asynchronous ones (notifications, notices, parameter changes). */
  private onLookupMessage(type: number, body: Buffer): Buffer | null {
    const l = this.lookup as NonNullable<typeof this.lookup>
    switch (type) {
      case BackendCode.ErrorResponse:
        l.error(readErrorFields(body).get('M') ?? 'error')
        return EMPTY
      case BackendCode.ReadyForQuery:
        l.done()
        return EMPTY
      case BackendCode.ParameterStatus:
        this.lexingHolds(body)
        return null
      case BackendCode.NotificationResponse:
      case BackendCode.NoticeResponse:
        return null
      default:
        return EMPTY
    }
  }

  // ---- how the server reads SQL -------------------------------------------------------------

  /**
   * A ParameterStatus from the server: the ground truth of how it reads SQL. If it no longer reads
   * text the way the gateway's parser does, nothing more may be judged, so the session ends.
   * Returns false (and has ended the session) in that case.
   */
  private lexingHolds(body: Buffer): boolean {
    const end = body.indexOf(0)
    const name = body.toString('utf8', 0, end).toLowerCase()
    const value = body.toString('utf8', end + 1, body.indexOf(0, end + 1))
    const pinned = PINNED_LEXING.get(name)
    if (pinned === undefined || value.toUpperCase() === pinned) return true
    this.log.warn({ session: this.session?.id, setting: name, value }, 'the server reads SQL differently now; session ended')
    this.fatal(
      '08P01',
      `gatehouse: the server reports ${name} = ${value}; Gatehouse reads SQL with ${name} = ${pinned.toLowerCase() === 'on' ? 'on' : pinned} only, so the session was ended`,
    )
    return false
  }

  /**
   * Whether a text may be sent now. After a statement that could have changed a setting (a write's
   * trigger, a user function's set_config), the server tells the new value only in ParameterStatus
   * before ReadyForQuery; a text whose lexing depends on those settings waits for that answer. In an
   * unfinished extended-protocol batch the answer cannot come before Sync: such a text is refused.
   * Returns null when it may go now, a promise when it may go after the wait, 'refuse' otherwise.
   */
  private lexicalGate(text: string): Promise<void> | null | 'refuse' {
    if (!this.lexicalUnsettled || !lexicallySensitive(text)) return null
    if (this.openBatchOpaque) return 'refuse'
    this.flushToServer()
    if (this.readiesPending === 0) return null
    return new Promise<void>((r) => this.readyWaiters.push(r))
  }

  private noteForwarded(kind: Expect, inert: boolean): void {
    if (inert) return
    this.lexicalUnsettled = true
    if (kind === Expect.Execute) this.openBatchOpaque = true
  }

  // ---- masking results ---------------------------------------------------------------------

  private updateScan(): void {
    this.scanner?.setMasking(
      this.maskingOn,
      this.rowMasker !== null || this.copyMasker !== null || this.lazyPlan !== null || this.backstopRefusal,
    )
  }

  /** The expectation at the head changed: an Execute's rows are masked per its plan. */
  private headChanged(): void {
    this.rowMasker = null
    this.copyMasker = null
    this.lazyPlan = null
    const h = this.head()
    if (h?.kind === Expect.Execute) {
      const plan = h.record?.masks?.[0] ?? null
      if (plan?.active) this.lazyPlan = { plan, portal: h.target ?? null }
    }
    this.updateScan()
  }

  /** The plan of the statement whose results are arriving now. */
  private currentPlan(h: Expectation | undefined): StatementMaskPlan | null {
    const r = h?.record
    if (!r?.masks) return null
    return r.masks[h?.kind === Expect.Execute ? 0 : r.tags.length] ?? null
  }

  private onRowDescription(h: Expectation | undefined, body: Buffer): Buffer | null {
    const fields = parseRowDescription(body)
    if (h?.kind === Expect.Describe) {
      if (h.target) h.target.fields = fields
      // The Execute this Describe announces, if the batch has one: checked now, before its rows.
      const exec = this.nextExecute()
      this.shift()
      const plan = exec?.record?.masks?.[0] ?? null
      const finding = exec?.record
        ? backstopFinding(
            fields,
            this.lineageSnapshot,
            exec.record.obligations ?? [],
            plan?.active ? columnPlans(plan, fields, fields.length, null) : null,
            plan?.outputs ?? null,
          )
        : null
      return finding === null ? null : this.withholdResult(exec, finding, 1)
    }
    const plan = this.currentPlan(h)
    this.lazyPlan = null
    this.rowMasker = null
    let cols: ReturnType<typeof columnPlans> | null = null
    if (plan?.active) {
      cols = columnPlans(plan, fields, fields.length, null)
      if (changesRows(cols)) this.rowMasker = compileRowMasker(cols, this.maskKeys())
    }
    const finding = h?.record?.obligations?.length
      ? backstopFinding(fields, this.lineageSnapshot, h.record.obligations, cols, plan?.outputs ?? null)
      : null
    if (finding !== null) return this.withholdResult(h, finding, 0)
    this.updateScan()
    return null
  }

  /** The first Execute queued after the head, before the batch's Sync. */
  private nextExecute(): Expectation | undefined {
    for (let i = this.expectHead + 1; i < this.expectations.length; i++) {
      const e = this.expectations[i]
      if (!e || e.kind === Expect.Sync) return undefined
      if (e.kind === Expect.Execute) return e
    }
    return undefined
  }

  /**
   * A result whose columns the catalog snapshot cannot vouch for (another client changed the
   * catalog since it was read): its RowDescription and rows never reach the client, an error does,
   * and the catalog is read again for the next statement. When more statements of the batch were
   * already sent (the server runs them regardless), the client could not tell what ran: the
   * session ends instead. `executesAllowed`: how many Executes may follow the head in the batch.
   */
  private withholdResult(h: Expectation | undefined, finding: string, executesAllowed: number): Buffer {
    const message = `gatehouse: the catalog changed during the statement (${finding}); its result was withheld, retry the statement`
    if (h?.record && !h.record.error) h.record.error = { code: CATALOG_MOVED_CODE, message }
    this.backstopRefusal = true
    this.rowMasker = null
    this.copyMasker = null
    this.lazyPlan = null
    this.updateScan()
    this.refreshedFor.clear()
    if (this.session) this.shared.catalogs.invalidate(this.session.connection.name)
    this.pendingRefresh = this.refreshCatalog()
    this.log.warn({ session: this.session?.id, finding }, 'result withheld: the catalog moved since the snapshot')
    let later = 0
    for (let i = this.expectHead + 1; i < this.expectations.length; i++) {
      const e = this.expectations[i]
      if (!e || e.kind === Expect.Sync) break
      if (e.kind === Expect.Execute || e.kind === Expect.Query) later++
    }
    const moreInQuery = h?.kind === Expect.Query && h.record !== null && h.record.effects.length > h.record.tags.length + 1
    if (moreInQuery || later > executesAllowed) {
      this.fatal(CATALOG_MOVED_CODE, `${message}; later statements of the batch had already been sent, so the session was ended`)
      return EMPTY
    }
    return errorResponse({ severity: 'ERROR', code: CATALOG_MOVED_CODE, message })
  }

  /** First row of an Execute: its shape comes from the portal's or statement's Describe. */
  private compileLazy(message: Buffer): void {
    const lp = this.lazyPlan
    this.lazyPlan = null
    if (!lp) return
    const portal = lp.portal
    let fields = portal?.fields ?? null
    let formats: readonly number[] | null = null
    if (!fields) {
      // Described as a statement: the formats are the Bind's, not the zeros of RowDescription.
      fields = portal?.statement?.fields ?? null
      formats = portal?.resultFormats ?? null
    }
    const count = message.length >= 7 ? message.readInt16BE(5) : 0
    // Without a described shape the types are unknown, and masked values become NULL.
    const cols = columnPlans(lp.plan, fields && fields.length === count ? fields : null, count, formats ?? portal?.resultFormats ?? null)
    this.rowMasker = changesRows(cols) ? compileRowMasker(cols, this.maskKeys()) : null
    this.updateScan()
  }

  private onCopyOut(h: Expectation | undefined, body: Buffer): void {
    const plan = this.currentPlan(h)
    this.lazyPlan = null
    this.copyMasker = null
    if (plan?.active) {
      const count = body.readInt16BE(1)
      const cols = columnPlans(plan, null, count, null)
      if (changesRows(cols)) {
        if (!plan.copy || body[0] !== 0) {
          // Planned as masked but not in a format the gateway can rewrite: never let it through.
          this.fatal('42501', 'gatehouse: this COPY would return masked columns in a format the gateway cannot mask')
          return
        }
        this.copyMasker = compileCopyMasker(cols, plan.copy, this.maskKeys())
      }
    }
    this.updateScan()
  }

  /** A statement completed on the server: follow what it changed in the session. */
  private applyEffect(e: StatementEffect): void {
    if (e.prepare) {
      const { name, inner } = e.prepare
      this.statements.set(name, {
        sql: null,
        facts: inner,
        params: null,
        state: 'ok',
        batch: this.batch,
        prev: null,
        statement: null,
        waiters: null,
        statementName: name,
      })
    }
    if (e.deallocate) {
      if (e.deallocate.name === null) this.statements.clear()
      else this.statements.delete(e.deallocate.name)
    }
    // A portal name taken over by SQL (DECLARE) or dropped by it (CLOSE, DISCARD ALL) is no longer
    // the one a protocol Bind made: an Execute of it is then not resolved from the gateway's table.
    if (e.cursor) {
      if (e.cursor.name === null) this.portals.clear()
      else this.portals.delete(e.cursor.name)
    }
    if (e.searchPath) this.sql?.applySearchPath(e.searchPath)
    if (e.createsRoutine) this.sql?.noteCreatedRoutine(e.createsRoutine.kind, e.createsRoutine.name)
    if (e.ddl) this.refreshedFor.clear()
    if (e.ddl && this.session) {
      // The relation snapshot may be stale now; the next session of this connection reads it anew.
      this.shared.catalogs.invalidate(this.session.connection.name)
    }
  }

  private finishRecord(h: Expectation, tag: string | null): void {
    if (h.record && tag !== null) h.record.tags.push(tag)
    this.completeRecord(h)
    this.shift()
  }

  private completeRecord(h: Expectation): void {
    const r = h.record
    if (!r || !this.session || r.replacement) return
    const rows = r.tags.length === 1 ? (rowsFromTag(r.tags[0] as string) ?? r.rows) : r.rows
    const ev: { type: 'result'; [key: string]: unknown } = {
      type: 'result',
      seq: r.seq,
      tag: r.tags.length === 1 ? r.tags[0] : r.tags,
      rows,
      duration_ms: performance.now() - r.started,
    }
    if (r.error) ev.error = r.secret ? { code: r.error.code, message: '[redacted: the statement may hold a secret]' } : r.error
    this.session.auditLater(ev)
  }

  // ---- endings ----------------------------------------------------------------------------

  private protocolFailure(err: unknown): void {
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
    if (this.ourPid) this.shared.cancelKeys.delete(this.ourPid)
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
  private isClosed(): boolean {
    return this.phase === 'closed'
  }

  get sessionId(): string | null {
    return this.session?.id ?? null
  }
}
