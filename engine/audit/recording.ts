// Session recordings under <data_dir>/recordings/<connection>/<session>.<ext>:
//
// - A SQL session is recorded as its timeline in JSON Lines (`.jsonl`): a header line, then one
//   line per statement, result, decision and session event, each with its offset from the start
//   (`t`, seconds) and the id and hash of the audit event it comes from, so a recording can be
//   checked against the tamper-evident log. The recorder follows the audit log (it is an
//   `AuditLog.onEvent` listener that queues and returns), so the hot path pays nothing more.
// - A terminal session (the SSH proxy) is recorded as asciicast v2 (`.cast`), which
//   `asciinema play` plays: the proxy opens a `TerminalRecording` and feeds it output and input.
//
// Retention is per connection (`audit.recordings`): whole recordings older than it are removed.
// The audit log keeps its own retention, so a pruned recording can still be rebuilt, without
// result rows, from the log (`timelineFromAudit`).

import { readdir, rm, stat } from 'node:fs/promises'
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import type { Logger } from 'pino'
import type { AuditLog, WrittenEvent } from './writer.js'
import { isoNow } from './clock.js'
import type { RecordingsConfig } from './config.js'
import { readAuditEvents } from './query.js'
import type { SegmentTrust } from './trusted.js'
import type { StoredAuditEvent } from '../types.js'

export const RECORDING_VERSION = 1

/** The first line of a SQL timeline recording. */
export interface TimelineHeader {
  readonly recording: typeof RECORDING_VERSION
  readonly kind: 'timeline'
  readonly session: string
  readonly connection: string | null
  readonly protocol: string | null
  readonly chain: readonly string[]
  readonly client: unknown
  readonly started: string
  /** The audit log the entries' ids refer to. */
  readonly log: string | null
}

/** One timeline entry: an audit event without the chain fields, with its offset and audit reference. */
export interface TimelineEntry {
  readonly t: number
  readonly time: string
  readonly type: string
  readonly audit: string
  readonly h: string | null
  readonly [key: string]: unknown
}

/** What a terminal proxy (SSH) feeds while a shell or exec runs; written as asciicast v2. */
export interface TerminalRecording {
  /** Bytes the session printed (stdout/stderr of the remote side). */
  output(data: Buffer | string): void
  /** Bytes the caller typed (recorded only when the connection asks for input recording). */
  input(data: Buffer | string): void
  resize(cols: number, rows: number): void
  /** A named point in the recording (asciicast "m" event), e.g. an exec's command line. */
  marker(label: string): void
  close(): void
}

/** What a terminal recording's header says: size, title, and who (session, chain, connection). */
export interface TerminalMetaFull {
  readonly cols: number
  readonly rows: number
  readonly title?: string
  readonly env?: Record<string, string>
  readonly recordInput?: boolean
  /** Extra header field (asciicast v2 players ignore unknown fields): the session and its chain. */
  readonly gatehouse?: { readonly session: string; readonly connection: string; readonly chain: readonly string[] }
}

const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/
const OMIT = new Set(['h', 'prev', 'id', 'time', 'session', 'chain', 'connection', 'type'])

export function recordingsDir(dataDir: string): string {
  return join(dataDir, 'recordings')
}

/** Finds a session's recording: `{path, kind}`, or null. */
export function findRecording(dir: string, session: string): { path: string; kind: 'timeline' | 'terminal' } | null {
  if (!SAFE_NAME.test(session)) return null
  let conns: string[]
  try {
    conns = readdirSync(dir)
  } catch {
    return null
  }
  for (const c of conns) {
    const cast = join(dir, c, `${session}.cast`)
    if (existsSync(cast)) return { path: cast, kind: 'terminal' }
    const jsonl = join(dir, c, `${session}.jsonl`)
    if (existsSync(jsonl)) return { path: jsonl, kind: 'timeline' }
  }
  return null
}

function entryOf(e: { type: string; time: string; id: string; h: string | null }, start: number, fields: Record<string, unknown>): string {
  const body: Record<string, unknown> = {
    t: Math.max(0, Math.round((Date.parse(e.time) - start) * 1000) / 1e6),
    time: e.time,
    type: e.type,
  }
  for (const [k, v] of Object.entries(fields)) if (!OMIT.has(k)) body[k] = v
  body.audit = e.id
  body.h = e.h
  return JSON.stringify(body)
}

function headerOf(e: Record<string, unknown> & { session: string; time: string }, log: string | null): TimelineHeader {
  return {
    recording: RECORDING_VERSION,
    kind: 'timeline',
    session: e.session,
    connection: typeof e.connection === 'string' ? e.connection : null,
    protocol: typeof e.protocol === 'string' ? e.protocol : null,
    chain: Array.isArray(e.chain) ? (e.chain as string[]) : [],
    client: e.client ?? null,
    started: e.time,
    log,
  }
}

/**
 * A timeline recording file's lines as timeline entries: the file holds its header, then the
 * session's audit lines verbatim (and `rows` entries), converted here, off the hot path.
 */
export function timelineFromRecording(text: string): string[] {
  const lines = text.split('\n').filter(Boolean)
  const first = lines[0]
  if (first === undefined) return []
  let t0 = 0
  try {
    const header = JSON.parse(first) as { started?: unknown }
    t0 = typeof header.started === 'string' ? Date.parse(header.started) : 0
  } catch {
    return lines
  }
  const out = [first]
  for (const l of lines.slice(1)) {
    if (!l.startsWith('{"h":"')) {
      out.push(l)
      continue
    }
    try {
      const e = JSON.parse(l) as Record<string, unknown> & { type: string; time: string; id: string; h: string }
      out.push(entryOf({ type: e.type, time: e.time, id: e.id, h: e.h }, t0, e))
    } catch {
      out.push(l)
    }
  }
  return out
}

/**
 * Where a timeline recording disagrees with the audit log: every audit line in the file must be,
 * field for field, the event of the same id in the segments the audit key signed (the recording
 * lives beside the log and anyone who can write the data directory can edit it). A line whose
 * event is not in the log is a disagreement too. Returns one message per line, naming it.
 */
export function recordingMismatches(text: string, auditDir: string, session: string, trust: SegmentTrust): string[] {
  const events = new Map<string, string>()
  for (const e of readAuditEvents(auditDir, { session }, trust)) {
    // The reader's mark is not part of the line the recording copied.
    const { unattested: _mark, ...line } = e as StoredAuditEvent & { unattested?: unknown }
    events.set(String(e.id), JSON.stringify(line))
  }
  const problems: string[] = []
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i] as string
    if (!l.startsWith('{"h":"')) continue
    let e: Record<string, unknown>
    try {
      e = JSON.parse(l) as Record<string, unknown>
    } catch {
      problems.push(`recording line ${i + 1}: not a readable audit line`)
      continue
    }
    const id = typeof e.id === 'string' ? e.id : '(no id)'
    const logged = events.get(id)
    if (logged === undefined) problems.push(`recording line ${i + 1} (${id}): no such event of session ${session} in the audit log`)
    else if (logged !== JSON.stringify(e))
      problems.push(`recording line ${i + 1} (${id}): differs from the audit event it claims (altered)`)
  }
  return problems
}

/** Builds a session's timeline from the audit log alone (no recording file, or it was pruned). */
export function timelineFromAudit(auditDir: string, session: string, trust: SegmentTrust): string[] {
  const events = readAuditEvents(auditDir, { session }, trust)
  const first = events[0]
  if (!first) return []
  const start = events.find((e) => e.type === 'session.start') ?? first
  const log = typeof first.id === 'string' ? first.id.slice(0, first.id.lastIndexOf('-')) : null
  const lines = [JSON.stringify(headerOf(start as StoredAuditEvent & { session: string }, log))]
  const t0 = Date.parse(start.time)
  for (const e of events) {
    lines.push(entryOf({ type: e.type, time: e.time, id: e.id, h: typeof e.h === 'string' ? e.h : null }, t0, e))
  }
  return lines
}

/**
 * A session's lines not yet written, as UTF-8 bytes in one reusable buffer. Lines are encoded as
 * they arrive instead of kept as strings until the flush: thousands of retained strings per
 * interval cost more in garbage collection and copies than the recording's own write (see the
 * recorder figures in BENCHMARKS.md).
 */
export class PendingLines {
  private buf: Buffer = EMPTY_BUFFER
  private used = 0
  /** When the last line larger than KEEP_BUFFER_BYTES came. */
  private lastLarge = 0

  get empty(): boolean {
    return this.used === 0
  }

  push(line: string): void {
    // Room for the worst case (3 bytes per UTF-16 unit) and the newline, so write() never truncates.
    const worst = line.length * 3 + 1
    if (this.buf.length - this.used < worst) this.grow(worst)
    this.used += this.buf.write(line, this.used, 'utf8')
    this.buf[this.used++] = 0x0a
  }

  /** A line already encoded (copied: `bytes` may be a view of a buffer that is reused). */
  pushBytes(bytes: Buffer): void {
    const worst = bytes.length + 1
    if (worst > KEEP_BUFFER_BYTES) this.lastLarge = Date.now()
    if (this.buf.length - this.used < worst) this.grow(worst)
    this.used += bytes.copy(this.buf, this.used)
    this.buf[this.used++] = 0x0a
  }

  /** The pending bytes; valid until the next push (the caller writes them synchronously). */
  take(): Buffer {
    const out = this.buf.subarray(0, this.used)
    // A burst grew the buffer: do not keep a large one for a session that has gone quiet. One that
    // keeps sending large statements keeps it (a fresh buffer of megabytes per statement costs a
    // page fault per page).
    if (this.buf.length > KEEP_BUFFER_BYTES && this.used * 4 < this.buf.length && Date.now() - this.lastLarge > KEEP_LARGE_MS)
      this.buf = EMPTY_BUFFER
    this.used = 0
    return out
  }

  clear(): void {
    this.buf = EMPTY_BUFFER
    this.used = 0
  }

  private grow(need: number): void {
    const next = Buffer.allocUnsafeSlow(Math.max(this.buf.length * 2, this.used + need, MIN_BUFFER_BYTES))
    this.buf.copy(next, 0, 0, this.used)
    this.buf = next
  }
}

const EMPTY_BUFFER = Buffer.alloc(0)
const MIN_BUFFER_BYTES = 8 * 1024
const KEEP_BUFFER_BYTES = 256 * 1024
/** A large buffer is kept while large lines came within this long. */
const KEEP_LARGE_MS = 10_000

interface Open {
  readonly path: string
  readonly start: number
  readonly pending: PendingLines
  /** The recording file, opened on the first flush and kept open until the session ends. */
  fd: number | null
  ended: boolean
}

/** Recordings are derived from the audit log (which is durable before work is forwarded), so they
 * are written in batches: every this often, one write(2) per session with new lines. */
const RECORDING_FLUSH_MS = 100

/** Writes SQL timelines from the audit log's events, and opens terminal recordings for proxies. */
export class Recorder {
  private readonly open = new Map<string, Open>()
  private timer: NodeJS.Timeout | null = null
  private flushTimer: NodeJS.Timeout | null = null
  private log: string | null = null
  /** Recordings with lines not yet written (ended ones included until their last flush). */
  private readonly dirty = new Set<Open>()

  constructor(
    readonly dir: string,
    private readonly config: RecordingsConfig,
    private readonly logger: Logger,
  ) {}

  /** Follows `audit`; prunes by retention now and every hour. */
  attach(audit: AuditLog): void {
    this.log = audit.identity.log
    audit.onEvent((w) => this.onEvent(w))
    void this.prune()
    this.timer = setInterval(() => void this.prune(), 3600_000)
    this.timer.unref()
  }

  private onEvent(w: WrittenEvent): void {
    const e = w.event
    const session = e.session
    if (typeof session !== 'string') return
    let r = this.open.get(session)
    if (!r) {
      if (e.type !== 'session.start' || !SAFE_NAME.test(session)) return
      const conn = typeof e.connection === 'string' && SAFE_NAME.test(e.connection) ? e.connection : '_'
      r = { path: join(this.dir, conn, `${session}.jsonl`), start: Date.parse(w.time), pending: new PendingLines(), fd: null, ended: false }
      this.open.set(session, r)
      r.pending.push(JSON.stringify(headerOf({ ...e, session, time: w.time }, this.log)))
    }
    // The audit line as written: no second serialization on the hot path. Readers turn it into a
    // timeline entry (timelineFromRecording).
    r.pending.pushBytes(w.bytes)
    if (e.type === 'session.end') {
      r.ended = true
      this.open.delete(session)
    }
    this.markDirty(r)
  }

  private markDirty(r: Open): void {
    this.dirty.add(r)
    if (!this.flushTimer) {
      this.flushTimer = setTimeout(() => this.flushAll(), RECORDING_FLUSH_MS)
      this.flushTimer.unref()
    }
  }

  /** Writes every recording's pending lines: one write(2) each, to a file kept open per session. */
  private flushAll(): void {
    this.flushTimer = null
    for (const r of this.dirty) {
      try {
        if (!r.pending.empty) {
          if (r.fd === null) {
            mkdirSync(join(r.path, '..'), { recursive: true, mode: 0o700 })
            r.fd = openSync(r.path, 'a', 0o600)
          }
          const bytes = r.pending.take()
          let off = 0
          while (off < bytes.length) {
            const n = writeSync(r.fd, bytes, off, bytes.length - off)
            if (n <= 0) throw new Error('the recording write made no progress')
            off += n
          }
        }
      } catch (err) {
        r.pending.clear()
        this.logger.warn({ err: String(err), recording: r.path }, 'cannot write a session recording (the audit log has the events)')
      }
      if (r.ended && r.fd !== null) {
        closeSync(r.fd)
        r.fd = null
      }
    }
    this.dirty.clear()
  }

  /**
   * Adds the first result rows of a statement (already masked by the proxy) to a live session's
   * timeline, for connections whose config asks for them. The proxy calls this after masking;
   * rows never go to the audit log.
   */
  rows(session: string, seq: number, columns: readonly string[], rows: readonly (readonly unknown[])[]): void {
    const r = this.open.get(session)
    if (!r) return
    const time = new Date().toISOString()
    r.pending.push(JSON.stringify({ t: Math.max(0, (Date.parse(time) - r.start) / 1000), time, type: 'rows', seq, columns, rows }))
    this.markDirty(r)
  }

  /**
   * Adds a plugin's entry (already redacted and capped by the plugin) to a live session's timeline;
   * like rows, it never goes to the audit log. The entry's own fields cannot overwrite t, time or type.
   */
  entry(session: string, type: string, fields: Readonly<Record<string, unknown>>): void {
    const r = this.open.get(session)
    if (!r) return
    const now = Date.now()
    const time = isoNow(now)
    const t = Math.max(0, (now - r.start) / 1000)
    if (Object.hasOwn(fields, 't') || Object.hasOwn(fields, 'time') || Object.hasOwn(fields, 'type'))
      r.pending.push(JSON.stringify({ ...fields, t, time, type }))
    else {
      // The same line without copying the fields into a new object (one entry per HTTP request).
      const json = JSON.stringify(fields)
      r.pending.push(`${json.length > 2 ? `${json.slice(0, -1)},` : '{'}"t":${t},"time":"${time}","type":${JSON.stringify(type)}}`)
    }
    this.markDirty(r)
  }

  /** Opens an asciicast v2 recording for a terminal session (the SSH proxy's side of recording). */
  openTerminal(session: string, connection: string, meta: TerminalMetaFull): TerminalRecording {
    const conn = SAFE_NAME.test(connection) ? connection : '_'
    const dir = join(this.dir, conn)
    return new AsciicastWriter(join(dir, `${SAFE_NAME.test(session) ? session : 'session'}.cast`), meta)
  }

  /** Removes recordings older than their connection's retention. */
  async prune(now = Date.now()): Promise<string[]> {
    const removed: string[] = []
    let conns: string[]
    try {
      conns = await readdir(this.dir)
    } catch {
      return removed
    }
    for (const c of conns) {
      const retention = this.config.connections[c]?.retentionSeconds ?? this.config.retentionSeconds
      if (retention === null) continue
      const cutoff = now - retention * 1000
      let files: string[]
      try {
        files = await readdir(join(this.dir, c))
      } catch {
        continue
      }
      for (const f of files) {
        const p = join(this.dir, c, f)
        const s = await stat(p).catch(() => null)
        if (!s || s.mtimeMs >= cutoff) continue
        const session = f.replace(/\.(jsonl|cast)$/, '')
        if (this.open.has(session)) continue
        await rm(p, { force: true })
        removed.push(p)
      }
    }
    if (removed.length > 0) this.logger.info({ recordings: removed.length }, 'recordings removed by retention')
    return removed
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer)
    if (this.flushTimer) clearTimeout(this.flushTimer)
    for (const r of this.open.values()) r.ended = true
    for (const r of this.open.values()) this.dirty.add(r)
    this.flushAll()
  }
}

/** asciicast v2: a header line, then `[seconds, "o"|"i"|"r"|"m", data]` lines. */
export class AsciicastWriter implements TerminalRecording {
  private readonly fd: number
  private readonly start = process.hrtime.bigint()
  private readonly recordInput: boolean
  private closed = false

  constructor(path: string, meta: TerminalMetaFull) {
    // Synchronous on purpose: a terminal recording is opened once per session, before it starts.
    mkdirSync(join(path, '..'), { recursive: true, mode: 0o700 })
    this.fd = openSync(path, 'a', 0o600)
    this.recordInput = meta.recordInput === true
    const header = {
      version: 2,
      width: meta.cols,
      height: meta.rows,
      timestamp: Math.floor(Date.now() / 1000),
      ...(meta.title ? { title: meta.title } : {}),
      ...(meta.env ? { env: meta.env } : {}),
      ...(meta.gatehouse ? { gatehouse: meta.gatehouse } : {}),
    }
    writeSync(this.fd, `${JSON.stringify(header)}\n`)
  }

  private event(code: string, data: string): void {
    if (this.closed) return
    const t = Number(process.hrtime.bigint() - this.start) / 1e9
    writeSync(this.fd, `${JSON.stringify([Math.round(t * 1e6) / 1e6, code, data])}\n`)
  }

  output(data: Buffer | string): void {
    this.event('o', typeof data === 'string' ? data : data.toString('utf8'))
  }
  input(data: Buffer | string): void {
    if (this.recordInput) this.event('i', typeof data === 'string' ? data : data.toString('utf8'))
  }
  resize(cols: number, rows: number): void {
    this.event('r', `${cols}x${rows}`)
  }
  marker(label: string): void {
    this.event('m', label)
  }
  close(): void {
    if (this.closed) return
    this.closed = true
    closeSync(this.fd)
  }
}

/** Human-readable lines of a timeline recording (`sessions replay`). */
export function formatTimeline(lines: readonly string[]): string[] {
  const out: string[] = []
  for (const l of lines) {
    if (l === '') continue
    let e: Record<string, unknown>
    try {
      e = JSON.parse(l) as Record<string, unknown>
    } catch {
      continue
    }
    if (e.recording !== undefined) {
      const chain = Array.isArray(e.chain) ? (e.chain as string[]).join(' > ') : ''
      out.push(`session ${String(e.session)}  ${chain}  via ${String(e.connection)} (${String(e.protocol)})  started ${String(e.started)}`)
      continue
    }
    const t = `+${(typeof e.t === 'number' ? e.t : 0).toFixed(3)}s`.padStart(11)
    const seq = e.seq !== undefined ? `#${String(e.seq)}` : ''
    switch (e.type) {
      case 'statement': {
        const sql =
          typeof e.sql === 'string'
            ? e.sql
            : typeof e.command === 'string'
              ? e.command
              : typeof e.method === 'string' && typeof e.path === 'string'
                ? `${e.method} ${e.path}${e.query && typeof e.query === 'object' && Object.keys(e.query).length > 0 ? `?${new URLSearchParams(e.query as Record<string, string>).toString()}` : ''}`
                : '(unknown statement)'
        const params = Array.isArray(e.params) && e.params.length > 0 ? `  params ${JSON.stringify(e.params)}` : ''
        const rules = Array.isArray(e.rules) && e.rules.length > 0 ? ` [${(e.rules as string[]).join(', ')}]` : ''
        out.push(
          `${t}  ${seq.padEnd(5)} ${String(e.decision ?? '').padEnd(5)}${rules}  ${sql}${params}  (policy ${String(e.policy_version ?? '-')})`,
        )
        break
      }
      case 'result': {
        const tag = Array.isArray(e.tag) ? (e.tag as string[]).join('; ') : String(e.tag ?? '')
        const err = e.error && typeof e.error === 'object' ? `  error ${JSON.stringify(e.error)}` : ''
        const ms = typeof e.duration_ms === 'number' ? `  ${e.duration_ms.toFixed(2)} ms` : ''
        out.push(`${t}  ${seq.padEnd(5)} → ${tag}  rows=${String(e.rows ?? '')}${ms}${err}`)
        break
      }
      case 'rows':
        out.push(`${t}  ${seq.padEnd(5)}   ${JSON.stringify(e.rows)}`)
        break
      default: {
        const rest = Object.entries(e)
          .filter(([k]) => !['t', 'time', 'type', 'audit', 'h'].includes(k))
          .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
          .join('  ')
        out.push(`${t}  ${String(e.type)}  ${rest}`)
      }
    }
  }
  return out
}
