// The PostgreSQL fidelity corpus harness: a private cluster whose own statement log
// (`log_statement = all`, jsonlog) is the ground truth of what ran, a real gateway in front of it,
// and a raw wire client, so that every case can assert
//
//   what the server executed  ==  what the gateway allowed and audited, in order
//
// (statements the gateway allowed but the server never ran must have an error in their `result`
// event), that a case whose every step is refused executed nothing and raised no NOTICE, and
// whatever state the case checks directly on the cluster (rows, sequences, locks). Steps after one
// that ended the session get a closed outcome.
//
// Adding cases: build a `CorpusCase` — `steps` run in one session through the gateway, each a
// simple Query (`sql`) or raw frontend messages (`wire`, built with `pg-protocol`'s serialize; end
// each batch with a Sync), each with the outcome it must have ('ok', 'refused' by the gateway,
// 'error' from the server, 'fatal' when the gateway must end the session, 'any'). `setup` runs
// directly on the cluster first; `check` reads the cluster afterwards; `audit` inspects the
// session's audit events (e.g. the effective action of a FETCH). Then:
//
//   const corpus = await Corpus.start({ principals: { reader: [], writer: ['writers'] } })
//   for (const c of cases) test(c.name, () => corpus.run(c))
//   after(() => corpus.stop())
//
// Each case gets its own application_name, which is how its server log records are found.
// Statements the gateway itself runs on the session's server connection start with
// INTERNAL_SQL_MARK and are left out of the comparison.

import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import { join } from 'node:path'
import { serialize } from 'pg-protocol'
import { loadSqlParser } from '../../proxies/postgres/sql/index.js'
import { redactSql } from '../../proxies/postgres/redact.js'
import { readAuditEvents } from '../../engine/audit/writer.js'
import { loadAuditKey } from '../../engine/audit/keys.js'
import { SegmentTrust } from '../../engine/audit/trusted.js'
import { INTERNAL_SQL_MARK } from '../../proxies/postgres/messages.js'
import { TestGateway } from './gateway.js'
import { type ClusterOptions, PgCluster, type ServerLogRecord } from './pgserver.js'

export { serialize }

export interface ServerError {
  readonly code: string
  readonly message: string
  readonly severity: string
}

/** What the server (through the gateway) answered to one step. */
export interface Outcome {
  readonly errors: ServerError[]
  readonly notices: string[]
  readonly rows: (string | null)[][]
  readonly tags: string[]
  /** Message types in order, e.g. "1 2 D C Z". */
  readonly types: string[]
  /** The session ended (a FATAL error or the connection closed). */
  closed: boolean
}

/** A raw PostgreSQL wire client: nothing between the test and the gateway guesses anything. */
export class WireSession {
  private buf: Buffer = Buffer.alloc(0)
  private waiter: (() => void) | null = null
  closed = false
  readonly parameters = new Map<string, string>()
  /** Every byte the gateway sent this client, in order (for byte searches of the whole stream). */
  readonly received: Buffer[] = []

  private constructor(private readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.received.push(d)
      this.buf = Buffer.concat([this.buf, d])
      this.wake()
    })
    socket.on('close', () => {
      this.closed = true
      this.wake()
    })
    socket.on('error', () => undefined)
  }

  private wake(): void {
    const w = this.waiter
    this.waiter = null
    w?.()
  }

  static async open(port: number, password: string, params: Record<string, string>): Promise<WireSession> {
    const socket = connect({ host: '127.0.0.1', port })
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve)
      socket.once('error', reject)
    })
    const s = new WireSession(socket)
    socket.write(startupPacket({ user: 'corpus', database: 'app', ...params }))
    for (;;) {
      const m = await s.next()
      if (m === null) throw new Error('the gateway closed the connection during startup')
      if (m.type === 'R' && m.body.readInt32BE(0) === 3) socket.write(serialize.password(password))
      else if (m.type === 'S') {
        const [k, v] = cstrings(m.body)
        s.parameters.set(k ?? '', v ?? '')
      } else if (m.type === 'E') throw new Error(`startup refused: ${JSON.stringify(errorOf(m.body))}`)
      else if (m.type === 'Z') return s
    }
  }

  /** The next whole message, or null once the connection is closed and drained. */
  private async next(): Promise<{ type: string; body: Buffer } | null> {
    for (;;) {
      if (this.buf.length >= 5) {
        const len = this.buf.readInt32BE(1)
        if (this.buf.length >= 1 + len) {
          const type = String.fromCharCode(this.buf[0] as number)
          const body = this.buf.subarray(5, 1 + len)
          this.buf = this.buf.subarray(1 + len)
          return { type, body }
        }
      }
      if (this.closed) return null
      await new Promise<void>((r) => {
        this.waiter = r
      })
    }
  }

  /** Sends raw frontend messages and reads replies until `readies` ReadyForQuery messages came —
   * or, with `until`, until a message of that type came (an ErrorResponse after a Flush, say). */
  async send(messages: readonly Buffer[], readies: number, timeoutMs = 15_000, until?: string): Promise<Outcome> {
    const o: Outcome = { errors: [], notices: [], rows: [], tags: [], types: [], closed: false }
    if (this.closed) {
      o.closed = true
      return o
    }
    this.socket.write(Buffer.concat(messages))
    const timer = setTimeout(() => this.socket.destroy(), timeoutMs)
    try {
      let seen = 0
      while (until !== undefined ? !o.types.includes(until) : seen < readies) {
        const m = await this.next()
        if (m === null) {
          o.closed = true
          break
        }
        o.types.push(m.type)
        switch (m.type) {
          case 'E': {
            const e = errorOf(m.body)
            o.errors.push(e)
            if (e.severity === 'FATAL') o.closed = true
            break
          }
          case 'N':
            o.notices.push(errorOf(m.body).message)
            break
          case 'D':
            o.rows.push(dataRow(m.body))
            break
          case 'C':
            o.tags.push(cstrings(m.body)[0] ?? '')
            break
          case 'S': {
            const [k, v] = cstrings(m.body)
            this.parameters.set(k ?? '', v ?? '')
            break
          }
          case 'Z':
            seen++
            break
          default:
        }
      }
    } finally {
      clearTimeout(timer)
    }
    return o
  }

  query(sql: string): Promise<Outcome> {
    return this.send([serialize.query(sql)], 1)
  }

  async close(): Promise<void> {
    if (!this.closed) {
      this.socket.end(serialize.end())
      await new Promise<void>((r) => {
        if (this.closed) r()
        else this.socket.once('close', () => r())
      })
    }
  }
}

/** A StartupMessage with exactly these parameters (pg-protocol's adds client_encoding itself). */
function startupPacket(params: Record<string, string>): Buffer {
  const body = Buffer.concat([
    Buffer.from([0, 3, 0, 0]),
    ...Object.entries(params).map(([k, v]) => Buffer.from(`${k}\0${v}\0`, 'utf8')),
    Buffer.from([0]),
  ])
  const len = Buffer.alloc(4)
  len.writeInt32BE(body.length + 4)
  return Buffer.concat([len, body])
}

function cstrings(body: Buffer): string[] {
  return body.toString('utf8').split('\0')
}

function errorOf(body: Buffer): ServerError {
  const f = new Map<string, string>()
  let i = 0
  while (i < body.length && body[i] !== 0) {
    const code = String.fromCharCode(body[i] as number)
    const end = body.indexOf(0, i + 1)
    f.set(code, body.toString('utf8', i + 1, end))
    i = end + 1
  }
  return { code: f.get('C') ?? '', message: f.get('M') ?? '', severity: f.get('V') ?? f.get('S') ?? '' }
}

function dataRow(body: Buffer): (string | null)[] {
  const n = body.readInt16BE(0)
  const out: (string | null)[] = []
  let p = 2
  for (let i = 0; i < n; i++) {
    const len = body.readInt32BE(p)
    p += 4
    if (len < 0) out.push(null)
    else {
      out.push(body.toString('utf8', p, p + len))
      p += len
    }
  }
  return out
}

export type Expectation = 'ok' | 'refused' | 'error' | 'fatal' | 'any'

export interface CorpusStep {
  /** A simple Query. */
  readonly sql?: string
  /** Raw frontend messages (end each batch with a Sync; `readies` defaults to the Sync count). */
  readonly wire?: readonly Buffer[]
  readonly readies?: number
  /** Read replies until a message of this type came, instead of counting ReadyForQuery (a batch
   * ended by Flush, not Sync). */
  readonly until?: string
  readonly expect: Expectation
  /** Rows the step must return, exactly. */
  readonly rows?: (string | null)[][]
}

export interface CaseContext {
  readonly cluster: PgCluster
  /** The case's statement and result audit events, in order. */
  readonly audit: readonly Record<string, unknown>[]
  /** What the server executed for the case (ground truth), internal statements left out. */
  readonly executed: readonly ExecutedStatement[]
  readonly log: readonly ServerLogRecord[]
  readonly outcomes: readonly Outcome[]
  /** Every byte the gateway sent the case's client, startup included. */
  readonly received: Buffer
}

export interface CorpusCase {
  readonly name: string
  /** The class of attack it belongs to (cases are counted per class): '1', '2', 'B5', … */
  readonly cls: string
  /** Which principal runs it (a key of Corpus.start's `principals`). */
  readonly as: string
  readonly steps: readonly CorpusStep[]
  /** SQL run directly on the cluster (as the superuser) before the case. */
  readonly setup?: string
  /** Checks after the case, on the cluster directly and on the case's audit events. */
  readonly check?: (ctx: CaseContext) => void
  /** Extra startup parameters. */
  readonly params?: Record<string, string>
}

export interface ExecutedStatement {
  readonly sql: string
  /** For EXECUTE: the server's own note of the prepared statement it ran ("prepare: …"). */
  readonly detail: string | null
  readonly pid: number
}

/** The statements a server log says ran: `statement: …` and `execute <name>: …` records. */
export function executedStatements(records: readonly ServerLogRecord[]): ExecutedStatement[] {
  const out: ExecutedStatement[] = []
  for (const r of records) {
    if (r.error_severity !== 'LOG') continue
    let sql: string | null = null
    if (r.message.startsWith('statement: ')) sql = r.message.slice('statement: '.length)
    else if (r.message.startsWith('execute ')) {
      const colon = r.message.indexOf(': ')
      if (colon > 0) sql = r.message.slice(colon + 2)
    }
    if (sql === null || sql.startsWith(INTERNAL_SQL_MARK)) continue
    out.push({ sql, detail: r.detail ?? null, pid: r.pid })
  }
  return out
}

export interface CorpusOptions {
  /** Principal name → groups; a token is issued for each as `user:<name>` (or with `scopes`). */
  readonly principals: Readonly<Record<string, readonly string[]>>
  /** Principal name → scope string (e.g. "sql.read"): issued as `agent:<name>` under an admin. */
  readonly scopes?: Readonly<Record<string, string>>
  /** SQL run once on the cluster (database `corpus`) after it starts. */
  readonly schema?: string
  readonly cluster?: ClusterOptions
  /** Extra settings of the gateway's connection `app`. */
  readonly connection?: Record<string, unknown>
  /** Extra gateway config (policies, audit, …). */
  readonly config?: Record<string, unknown>
}

export class Corpus {
  private counter = 0
  readonly counts = new Map<string, number>()

  private constructor(
    readonly cluster: PgCluster,
    readonly gw: TestGateway,
    readonly tokens: ReadonlyMap<string, string>,
  ) {}

  static async start(opts: CorpusOptions): Promise<Corpus> {
    await loadSqlParser() // for redactSql, to match the audit's redacted texts with the server log
    const cluster = await PgCluster.start({ ...opts.cluster, statementLog: true })
    let gw: TestGateway | null = null
    try {
      cluster.sql('CREATE DATABASE corpus')
      if (opts.schema) cluster.sql(opts.schema, 'corpus')
      gw = await TestGateway.start({
        connections: [
          {
            name: 'app',
            protocol: 'postgres',
            address: `127.0.0.1:${cluster.port}`,
            database: 'corpus',
            user: 'postgres',
            labels: { env: 'test' },
            ...opts.connection,
          },
        ],
        config: opts.config,
      })
      const tokens = new Map<string, string>()
      for (const [name, groups] of Object.entries(opts.principals)) {
        tokens.set(name, await issueToken(gw, { subject: `user:${name}`, groups: [...groups] }))
      }
      for (const [name, scope] of Object.entries(opts.scopes ?? {})) {
        tokens.set(name, await issueToken(gw, { subject: `agent:${name}`, scope: scope.split(' ') }))
      }
      return new Corpus(cluster, gw, tokens)
    } catch (err) {
      await gw?.cleanup()
      cluster.stop()
      throw err
    }
  }

  /** Opens a session directly on the cluster (as its superuser), for comparison with the gateway. */
  direct(): Promise<WireSession> {
    return WireSession.open(this.cluster.port, '', {
      user: 'postgres',
      database: 'corpus',
      application_name: `direct-${process.pid}-${++this.counter}`,
    })
  }

  /** Opens a session through the gateway as `as`, with a fresh application_name. */
  async session(as: string, params: Record<string, string> = {}): Promise<{ s: WireSession; app: string }> {
    const token = this.tokens.get(as)
    if (token === undefined) throw new Error(`no principal ${as} in this corpus`)
    const app = `corpus-${process.pid}-${++this.counter}`
    const s = await WireSession.open(this.gw.pgPort, token, { application_name: app, ...params })
    return { s, app }
  }

  /** Runs one case and asserts it (see the file comment). */
  async run(c: CorpusCase): Promise<CaseContext> {
    this.counts.set(c.cls, (this.counts.get(c.cls) ?? 0) + 1)
    if (c.setup) this.cluster.sql(c.setup, 'corpus')
    const { s, app } = await this.session(c.as, c.params)
    const outcomes: Outcome[] = []
    try {
      for (const step of c.steps) {
        const o =
          step.sql !== undefined
            ? await s.query(step.sql)
            : await s.send(step.wire ?? [], step.readies ?? syncCount(step.wire ?? []), 15_000, step.until)
        outcomes.push(o)
      }
    } finally {
      await s.close()
    }
    const log = await this.cluster.settled(app)
    const audit = await this.auditOf(app)
    const executed = executedStatements(log)
    const ctx: CaseContext = { cluster: this.cluster, audit, executed, log, outcomes, received: Buffer.concat(s.received) }
    for (const [i, step] of c.steps.entries()) assertStep(c.name, i, step, outcomes[i] as Outcome)
    assertExecutedWasAllowed(c.name, executed, audit)
    if (c.steps.every((st) => st.expect === 'refused')) {
      assert.deepEqual(
        executed.map((e) => e.sql),
        [],
        `${c.name}: a refused case must execute nothing on the server`,
      )
      const notices = log.filter((r) => r.error_severity === 'NOTICE' || r.error_severity === 'WARNING')
      assert.deepEqual(
        notices.map((r) => r.message),
        [],
        `${c.name}: a refused case must run no code on the server`,
      )
    }
    c.check?.(ctx)
    return ctx
  }

  /** The statement and result events of the session whose application_name is `app`. */
  async auditOf(app: string): Promise<Record<string, unknown>[]> {
    const dir = join(this.gw.dataDir, 'audit')
    const trust = new SegmentTrust([loadAuditKey(join(this.gw.dataDir, 'keys')).publicKey])
    const deadline = Date.now() + 10_000
    for (;;) {
      const all = readAuditEvents(dir, {}, trust) as unknown as Record<string, unknown>[]
      const start = all.find((e) => e.type === 'session.start' && (e.client as { application?: string } | undefined)?.application === app)
      const session = start?.session
      if (session !== undefined && all.some((e) => e.session === session && e.type === 'session.end')) {
        return all.filter((e) => e.session === session && (e.type === 'statement' || e.type === 'result'))
      }
      if (Date.now() > deadline) throw new Error(`no finished audited session for application ${app}`)
      await new Promise((r) => setTimeout(r, 20))
    }
  }

  async stop(): Promise<void> {
    await this.gw.cleanup()
    this.cluster.stop()
  }
}

/** A token from the gateway's API with its admin token (the CLI would cost a process start each). */
async function issueToken(gw: TestGateway, body: { subject: string; groups?: string[]; scope?: string[] }): Promise<string> {
  const admin = readFileSync(join(gw.dataDir, 'admin.token'), 'utf8').trim()
  const res = await fetch(`${gw.apiUrl}/v1/tokens`, {
    method: 'POST',
    headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })
  if (!res.ok) throw new Error(`token issue failed: ${res.status} ${await res.text()}`)
  return ((await res.json()) as { token: string }).token
}

function syncCount(msgs: readonly Buffer[]): number {
  return msgs.filter((m) => m[0] === 0x53 && m.length === 5).length
}

function assertStep(name: string, i: number, step: CorpusStep, o: Outcome): void {
  const where = `${name}, step ${i + 1} (${step.sql ?? 'wire'})`
  const denied = o.errors.filter((e) => e.code === '42501' && e.message.startsWith('gatehouse:'))
  switch (step.expect) {
    case 'ok':
      assert.deepEqual(o.errors, [], `${where}: must succeed, got ${JSON.stringify(o.errors)}`)
      assert.equal(o.closed, false, `${where}: the session must stay open`)
      break
    case 'refused':
      assert.ok(denied.length > 0, `${where}: must be refused by the gateway, got ${JSON.stringify(o.errors)}`)
      break
    case 'error':
      assert.ok(o.errors.length > 0 && denied.length === 0, `${where}: must fail on the server, got ${JSON.stringify(o.errors)}`)
      break
    case 'fatal':
      assert.ok(o.closed, `${where}: the gateway must end the session, got ${JSON.stringify(o.errors)}`)
      break
    case 'any':
  }
  if (step.rows) assert.deepEqual(o.rows, step.rows, `${where}: rows`)
}

/**
 * Every statement the server executed was allowed and audited, in order. A statement may run more
 * than once under one audit event (a portal's Executes, judged at its Bind), as many times as it
 * has results. An allowed statement the server did not run has an error result, or no result at
 * all (a Bind whose portal was never executed: nothing ran).
 */
export function assertExecutedWasAllowed(
  name: string,
  executed: readonly ExecutedStatement[],
  audit: readonly Record<string, unknown>[],
): void {
  const allowed = audit.filter((e) => e.type === 'statement' && e.decision === 'allow')
  const results = new Map<unknown, Record<string, unknown>[]>()
  for (const e of audit) if (e.type === 'result') results.set(e.seq, [...(results.get(e.seq) ?? []), e])
  const notRun = (ev: Record<string, unknown>): void => {
    const r = results.get(ev.seq) ?? []
    assert.ok(
      r.length === 0 || r.some((x) => x.error !== undefined),
      `${name}: the gateway allowed ${JSON.stringify(ev.sql)}, the server did not run it, and its result has no error`,
    )
  }
  let j = 0
  let last: Record<string, unknown> | null = null
  let runs = 0
  // A statement that failed may never have run (an error at Parse or Bind is not an execution):
  // when the same text was allowed more often than the server ran it from here on, a failed one
  // is taken as not run.
  const failedOnly = (ev: Record<string, unknown>): boolean => {
    const r = results.get(ev.seq) ?? []
    return r.length > 0 && r.every((x) => x.error !== undefined)
  }
  const surplus = (i: number, k: number, sql: string): boolean =>
    allowed.slice(k).filter((e) => e.sql === sql).length > executed.slice(i).filter((e) => redactSql(e.sql) === sql).length
  for (const [i, ex] of executed.entries()) {
    if (last !== null && last.sql === redactSql(ex.sql) && runs < (results.get(last.seq)?.length ?? 0)) {
      runs++
      continue
    }
    // The audit holds the text with its secrets redacted; the server's log holds what ran.
    const audited = redactSql(ex.sql)
    while (j < allowed.length) {
      const ev = allowed[j] as Record<string, unknown>
      if (ev.sql === audited && !(failedOnly(ev) && surplus(i, j, audited))) break
      notRun(ev)
      j++
    }
    assert.ok(
      j < allowed.length,
      `${name}: the server executed ${JSON.stringify(ex.sql)}, which the gateway did not allow and audit (in this order); audited: ${JSON.stringify(allowed.map((e) => e.sql))}`,
    )
    last = allowed[j++] as Record<string, unknown>
    runs = 1
  }
  for (; j < allowed.length; j++) notRun(allowed[j] as Record<string, unknown>)
}
