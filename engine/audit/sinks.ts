// Audit sinks: copies of the log sent elsewhere — a file with rotation, an HTTP endpoint (batched,
// retried, HMAC-signed), syslog (RFC 5424 over TCP or TLS). A sink never sits in the data path:
// it reads the log's *files* from its own cursor, after the fact, so a slow or dead receiver costs
// sessions nothing, and once it recovers it catches up from where it stopped. The cursor is saved
// only after a batch is accepted, so delivery is at-least-once; every line carries the event's
// `id` for the receiver to de-duplicate on. Checkpoints are lines of the log, so sinks get them
// too, verbatim: a receiver can check the chain itself, and `audit verify --checkpoints` can use
// what it kept to find a clean cut.
//
// A sink with `checkpoints_only: true` is a witness: it sends only the signed records (segment
// headers and checkpoints), a few hundred bytes per second under load, so it can run on a host the
// gateway host cannot write. What it holds proves how far the log reached and what it said there:
// `audit verify --checkpoints` finds a clean cut or a rewrite against it. A checkpoint is written
// within `checkpoint_interval_ms` of an event and the sink is woken by that write, so a witness
// receives it within about a second (more only while the receiver is down: it catches up).

import { createHmac } from 'node:crypto'
import { mkdirSync, readFileSync } from 'node:fs'
import { type FileHandle, open, rename, rm, stat, writeFile } from 'node:fs/promises'
import { hostname } from 'node:os'
import { connect as netConnect, type Socket } from 'node:net'
import { join, parse } from 'node:path'
import { connect as tlsConnect } from 'node:tls'
import type { Logger } from 'pino'
import { parseSecretRef, resolveSecret } from '../secrets.js'
import type { FileSinkConfig, HttpSinkConfig, SinkConfig, SyslogSinkConfig } from './config.js'
import type { UnattestedRange } from './format.js'
import { listSegments, readHead } from './segments.js'
import { AuditTail, type LogPosition, logEdge } from './tail.js'
import type { SegmentTrust } from './trusted.js'

/** Where a sink sends batches. `send` resolves once the receiver has the batch; throws to retry. */
export interface SinkTransport {
  send(lines: readonly Buffer[], signal: AbortSignal): Promise<void>
  close(): Promise<void>
}

export interface SinkStatus {
  readonly name: string
  readonly type: SinkConfig['type']
  readonly position: LogPosition
  readonly lastId: string | null
  readonly sent: number
  readonly batches: number
  readonly failures: number
  readonly lastError: string | null
  readonly lastSuccess: string | null
}

const MAX_BATCH_BYTES = 1024 * 1024
const BACKOFF_MIN_MS = 250
const BACKOFF_MAX_MS = 30_000

/** Whether a line is a signed record (segment header or checkpoint): what a witness keeps. */
export function isSignedRecord(line: Buffer): boolean {
  const head = line.toString('latin1', 0, Math.min(line.length, 400))
  return head.includes('"type":"audit.checkpoint"') || head.includes('"type":"audit.segment"')
}

function idOf(line: Buffer): string | null {
  const m = /"id":"([^"]+)"/.exec(line.toString('latin1', 0, Math.min(line.length, 200)))
  return m ? (m[1] as string) : null
}

/** Runs one sink: reads batches from its cursor, sends them with retries, saves the cursor. */
export class SinkRunner {
  private readonly abort = new AbortController()
  private tail: AuditTail | null = null
  private loop: Promise<void> | null = null
  private status: Omit<SinkStatus, 'position'>
  private position: LogPosition = { segment: 1, offset: 0 }

  constructor(
    readonly config: SinkConfig,
    private readonly transport: SinkTransport,
    private readonly auditDir: string,
    private readonly cursorFile: string,
    private readonly log: Logger,
    private readonly trust: SegmentTrust,
    private readonly recovered: UnattestedRange | null = null,
  ) {
    this.status = {
      name: config.name,
      type: config.type,
      lastId: null,
      sent: 0,
      batches: 0,
      failures: 0,
      lastError: null,
      lastSuccess: null,
    }
  }

  start(): void {
    this.loop = this.run().catch((err: unknown) => {
      this.log.error({ sink: this.config.name, err: String(err) }, 'audit sink stopped')
    })
  }

  /** Wakes the reader: the writer calls this after each write. */
  wake(): void {
    this.tail?.wake()
  }

  get state(): SinkStatus {
    return { ...this.status, position: this.tail?.position ?? this.position }
  }

  /** Gives the sink up to `drainMs` to send what is already in the log, then stops it. */
  async stop(drainMs = 0): Promise<void> {
    if (drainMs > 0) {
      const deadline = Date.now() + drainMs
      while (Date.now() < deadline && (await this.behind())) await new Promise((r) => setTimeout(r, 50))
    }
    this.abort.abort()
    this.tail?.wake()
    await this.loop
    await this.transport.close().catch(() => undefined)
    await this.tail?.close()
  }

  private async behind(): Promise<boolean> {
    const end = await logEdge(this.auditDir, 'end')
    const p = this.position
    return p.segment < end.segment || (p.segment === end.segment && p.offset < end.offset)
  }

  private loadCursor(): LogPosition | null {
    try {
      const c = JSON.parse(readFileSync(this.cursorFile, 'utf8')) as { segment?: unknown; offset?: unknown; id?: unknown }
      if (typeof c.segment === 'number' && typeof c.offset === 'number') {
        if (typeof c.id === 'string') this.status = { ...this.status, lastId: c.id }
        return { segment: c.segment, offset: c.offset }
      }
    } catch {
      /* no cursor yet */
    }
    return null
  }

  private async saveCursor(p: LogPosition, id: string | null): Promise<void> {
    const tmp = `${this.cursorFile}.tmp`
    await writeFile(tmp, `${JSON.stringify({ segment: p.segment, offset: p.offset, id, saved: new Date().toISOString() })}\n`, {
      mode: 0o600,
    })
    await rename(tmp, this.cursorFile)
  }

  /**
   * Whether a line goes to the receiver. The events a crash left unsigned (the range the recovery
   * checkpoint seals) are never shipped after the restart: they were read back from files anyone
   * could write while no gateway ran, and a copy made now would attest them. What a sink received
   * of them while their writer was alive is already at the receiver.
   */
  private ships(line: Buffer, log: string | null): boolean {
    if (isSignedRecord(line)) return true
    if (this.config.checkpointsOnly) return false
    if (!this.recovered) return true
    const id = idOf(line)
    const dash = id?.lastIndexOf('-') ?? -1
    if (id === null || dash < 0) return true
    const n = Number(id.slice(dash + 1))
    const inRange = n >= this.recovered.from && n <= this.recovered.to && (log === null || id.slice(0, dash) === log)
    return !inRange
  }

  private async run(): Promise<void> {
    // A new sink starts at the beginning of the log: it gets everything there is. So does a sink
    // whose cursor belongs to another log (the audit directory was replaced).
    const saved = this.loadCursor()
    const log = currentLogId(this.auditDir)
    const savedLog = this.status.lastId?.slice(0, this.status.lastId.lastIndexOf('-')) ?? null
    if (saved && log !== null && savedLog !== null && savedLog !== log) {
      this.log.warn(
        { sink: this.config.name, cursorLog: savedLog, log },
        'audit sink cursor is from another log; starting from the beginning',
      )
    }
    this.position = saved && (log === null || savedLog === null || savedLog === log) ? saved : await logEdge(this.auditDir, 'start')
    const signal = this.abort.signal
    const tail = new AuditTail(this.auditDir, this.position, { follow: true, signal, trust: this.trust })
    this.tail = tail
    const batchMax = this.config.type === 'http' ? this.config.batchMax : 1000
    while (!signal.aborted) {
      const batch = await tail.next(batchMax, MAX_BATCH_BYTES)
      if (!batch) break
      if (batch.skippedSegments > 0) {
        this.log.warn(
          { sink: this.config.name, segments: batch.skippedSegments },
          'audit sink fell behind retention: pruned segments were never sent',
        )
      }
      const lines = batch.lines.filter((line) => this.ships(line, log))
      if (lines.length === 0) {
        // Nothing for a witness here. The cursor is saved with the next batch it sends: after a
        // restart these lines are read and skipped again, which costs less than a cursor write
        // for every statement.
        this.position = batch.position
        continue
      }
      let delay = BACKOFF_MIN_MS
      for (;;) {
        try {
          await this.transport.send(lines, signal)
          break
        } catch (err) {
          if (signal.aborted) return
          this.status = { ...this.status, failures: this.status.failures + 1, lastError: err instanceof Error ? err.message : String(err) }
          if (this.status.failures === 1 || this.status.failures % 20 === 0) {
            this.log.warn({ sink: this.config.name, err: this.status.lastError, retryInMs: delay }, 'audit sink delivery failed; retrying')
          }
          await new Promise<void>((r) => {
            const t = setTimeout(r, delay)
            signal.addEventListener(
              'abort',
              () => {
                clearTimeout(t)
                r()
              },
              { once: true },
            )
          })
          if (signal.aborted) return
          delay = Math.min(delay * 2, BACKOFF_MAX_MS)
        }
      }
      const lastId = idOf(lines[lines.length - 1] as Buffer)
      this.position = batch.position
      this.status = {
        ...this.status,
        lastId,
        sent: this.status.sent + lines.length,
        batches: this.status.batches + 1,
        lastError: null,
        lastSuccess: new Date().toISOString(),
      }
      await this.saveCursor(batch.position, lastId)
    }
  }
}

// ---- transports ------------------------------------------------------------------------------------

/** Appends lines to a file, rotating it past `max_bytes` (`path.1` is the newest old file). */
export class FileSinkTransport implements SinkTransport {
  private fh: FileHandle | null = null
  private size = 0

  constructor(private readonly config: FileSinkConfig) {}

  async send(lines: readonly Buffer[]): Promise<void> {
    const body = Buffer.concat(lines.flatMap((l) => [l, NEWLINE]))
    if (!this.fh) await this.openFile()
    if (this.size > 0 && this.size + body.length > this.config.maxBytes) await this.rotate()
    const fh = this.fh as FileHandle
    await fh.write(body)
    await fh.datasync()
    this.size += body.length
  }

  private async openFile(): Promise<void> {
    this.fh = await open(this.config.path, 'a', 0o600)
    this.size = (await this.fh.stat()).size
  }

  private async rotate(): Promise<void> {
    await this.fh?.close()
    this.fh = null
    const p = this.config.path
    if (this.config.keep === 0) await rm(p, { force: true })
    else {
      await rm(`${p}.${this.config.keep}`, { force: true })
      for (let i = this.config.keep - 1; i >= 1; i--) {
        await rename(`${p}.${i}`, `${p}.${i + 1}`).catch(() => undefined)
      }
      await rename(p, `${p}.1`)
    }
    await this.openFile()
  }

  async close(): Promise<void> {
    await this.fh?.close()
    this.fh = null
  }
}

const NEWLINE = Buffer.from('\n')

/**
 * POSTs batches as JSON Lines (`application/x-ndjson`, the lines verbatim). With a secret, each
 * request carries `X-Gatehouse-Timestamp` (Unix seconds) and `X-Gatehouse-Signature: v1=<hex>`,
 * the HMAC-SHA256 of `<timestamp>.<body>` under the secret. Any 2xx accepts the batch; anything
 * else, a timeout or a network error is retried with backoff.
 */
export class HttpSinkTransport implements SinkTransport {
  private secret: string | null = null

  constructor(
    private readonly config: HttpSinkConfig,
    private readonly baseDir: string,
  ) {}

  async send(lines: readonly Buffer[], signal: AbortSignal): Promise<void> {
    if (this.config.secret !== null && this.secret === null) {
      const ref = parseSecretRef(this.config.secret, this.baseDir)
      if (!ref) throw new Error(`sink ${this.config.name}: secret is not a secret reference`)
      this.secret = await resolveSecret(ref)
    }
    const body = Buffer.concat(lines.flatMap((l) => [l, NEWLINE]))
    const ts = String(Math.floor(Date.now() / 1000))
    const headers: Record<string, string> = {
      'content-type': 'application/x-ndjson',
      'x-gatehouse-sink': this.config.name,
      'x-gatehouse-events': `${idOf(lines[0] as Buffer) ?? ''}..${idOf(lines[lines.length - 1] as Buffer) ?? ''}`,
    }
    if (this.secret !== null) {
      headers['x-gatehouse-timestamp'] = ts
      headers['x-gatehouse-signature'] = `v1=${createHmac('sha256', this.secret).update(`${ts}.`).update(body).digest('hex')}`
    }
    const res = await fetch(this.config.url, {
      method: 'POST',
      headers,
      body,
      signal: AbortSignal.any([signal, AbortSignal.timeout(this.config.timeoutMs)]),
    })
    await res.arrayBuffer().catch(() => undefined)
    if (res.status < 200 || res.status > 299) throw new Error(`HTTP ${res.status} from ${this.config.url}`)
  }

  async close(): Promise<void> {}
}

/** The receiver's side of the signature: true when `signature` signs `body` at `timestamp`. */
export function checkSinkSignature(secret: string, timestamp: string, body: Buffer, signature: string): boolean {
  const want = `v1=${createHmac('sha256', secret).update(`${timestamp}.`).update(body).digest('hex')}`
  return want.length === signature.length && Buffer.compare(Buffer.from(want), Buffer.from(signature)) === 0
}

/**
 * RFC 5424 messages over TCP or TLS with octet-counting framing (RFC 6587). Syslog has no
 * acknowledgement, so after a broken connection the transport re-sends what it sent in the last
 * `RESEND_WINDOW_MS` before the new batch: duplicates (same event ids) rather than gaps.
 */
export class SyslogSinkTransport implements SinkTransport {
  private socket: Socket | null = null
  private recent: { at: number; frames: Buffer[] }[] = []
  private broken = false
  private readonly host =
    hostname()
      .replace(/[^\x21-\x7e]/g, '')
      .slice(0, 255) || '-'

  constructor(private readonly config: SyslogSinkConfig) {}

  private frame(line: Buffer): Buffer {
    const text = line.toString('latin1', 0, Math.min(line.length, 600))
    const type = /"type":"([^"]+)"/.exec(text)?.[1] ?? 'event'
    const time = /"time":"([^"]+)"/.exec(text)?.[1] ?? new Date().toISOString()
    const id = /"id":"([^"]+)"/.exec(text)?.[1] ?? '-'
    const severity = /"decision":"(deny|hold)"/.test(text) ? 5 : 6
    const pri = this.config.facility * 8 + severity
    const msgid = type.replace(/[^\x21-\x7e]/g, '').slice(0, 32)
    const head = Buffer.from(`<${pri}>1 ${time} ${this.host} gatehouse ${process.pid} ${msgid} [gatehouse@32473 id="${id}"] `, 'latin1')
    const msg = Buffer.concat([head, line])
    return Buffer.concat([Buffer.from(`${msg.length} `, 'latin1'), msg])
  }

  private connect(signal: AbortSignal): Promise<Socket> {
    return new Promise<Socket>((resolve, reject) => {
      const opts = { host: this.config.host, port: this.config.port }
      const s = this.config.tls
        ? tlsConnect({ ...opts, ...(this.config.ca ? { ca: readFileSync(this.config.ca) } : {}), servername: this.config.host })
        : netConnect(opts)
      const fail = (err: Error): void => {
        s.destroy()
        reject(err)
      }
      s.once('error', fail)
      s.setTimeout(10_000, () => fail(new Error('syslog connection timed out')))
      signal.addEventListener('abort', () => fail(new Error('stopped')), { once: true })
      s.once(this.config.tls ? 'secureConnect' : 'connect', () => {
        s.removeListener('error', fail)
        s.setTimeout(0)
        s.on('error', () => {
          this.broken = true
        })
        s.on('close', () => {
          this.broken = true
        })
        resolve(s)
      })
    })
  }

  async send(lines: readonly Buffer[], signal: AbortSignal): Promise<void> {
    const frames = lines.map((l) => this.frame(l))
    if (!this.socket || this.broken) {
      this.socket?.destroy()
      this.socket = null
      this.socket = await this.connect(signal)
      const resend = this.broken ? this.recent.flatMap((r) => r.frames) : []
      this.broken = false
      if (resend.length > 0) await this.write(Buffer.concat(resend))
    }
    await this.write(Buffer.concat(frames))
    const now = Date.now()
    this.recent.push({ at: now, frames })
    while (this.recent.length > 0 && (this.recent[0]?.at ?? now) < now - RESEND_WINDOW_MS) this.recent.shift()
  }

  private write(data: Buffer): Promise<void> {
    const s = this.socket as Socket
    return new Promise<void>((resolve, reject) => {
      s.write(data, (err) => (err ? reject(err) : resolve()))
    }).catch((err: unknown) => {
      this.broken = true
      throw err
    })
  }

  async close(): Promise<void> {
    this.socket?.end()
    this.socket = null
  }
}

const RESEND_WINDOW_MS = 5000

export function transportFor(config: SinkConfig, baseDir: string): SinkTransport {
  switch (config.type) {
    case 'file':
      return new FileSinkTransport(config)
    case 'http':
      return new HttpSinkTransport(config, baseDir)
    case 'syslog':
      return new SyslogSinkTransport(config)
  }
}

export function sinkCursorDir(dataDir: string): string {
  return join(dataDir, 'audit-sinks')
}

/**
 * A worker of `serve --workers N` ships its own segment series: its file sinks write beside the
 * configured file (`audit.jsonl` → `audit.w2.jsonl`), since two writers cannot share one file.
 */
export function sinkForWorker(c: SinkConfig, worker: number | null): SinkConfig {
  if (worker === null || c.type !== 'file') return c
  const p = parse(c.path)
  return { ...c, path: join(p.dir, `${p.name}.w${worker}${p.ext}`) }
}

/**
 * Starts a runner per configured sink; cursors live in <data_dir>/audit-sinks/<name>.json, and a
 * worker's in <data_dir>/audit-sinks/w<N>/<name>.json.
 */
export function startSinks(
  configs: readonly SinkConfig[],
  auditDir: string,
  dataDir: string,
  baseDir: string,
  log: Logger,
  trust: SegmentTrust,
  recovered: UnattestedRange | null = null,
  worker: number | null = null,
): SinkRunner[] {
  if (configs.length === 0) return []
  const dir = worker === null ? sinkCursorDir(dataDir) : join(sinkCursorDir(dataDir), `w${worker}`)
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  return configs.map((c) => {
    const r = new SinkRunner(
      sinkForWorker(c, worker),
      transportFor(sinkForWorker(c, worker), baseDir),
      auditDir,
      join(dir, `${c.name}.json`),
      log.child({ sink: c.name }),
      trust,
      recovered,
    )
    r.start()
    return r
  })
}

/** The id of the log in `auditDir`, from its first segment's header; null if there is none. */
function currentLogId(auditDir: string): string | null {
  const first = listSegments(auditDir).segments[0]
  if (!first) return null
  try {
    const head = readHead(first.path, 4096).toString('utf8')
    return /"type":"audit\.segment"[^\n]*?"log":"([0-9a-f]+)"/.exec(head)?.[1] ?? null
  } catch {
    return null
  }
}

/** For status output: how many bytes of log a position is behind the end. */
export async function bytesBehind(auditDir: string, p: LogPosition): Promise<number> {
  const end = await logEdge(auditDir, 'end')
  if (p.segment === end.segment) return Math.max(0, end.offset - p.offset)
  let total = 0
  for (const s of listSegments(auditDir).segments) {
    if (s.index < p.segment || s.index > end.segment) continue
    const size = (await stat(s.path).catch(() => ({ size: 0 }))).size
    total += s.index === p.segment ? size - p.offset : s.index === end.segment ? end.offset : size
  }
  return total
}
