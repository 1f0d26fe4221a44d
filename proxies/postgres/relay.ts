// The relay of an admitted session: what the client sends is framed and handled message by message
// — a simple Query, the extended protocol's Parse/Bind/Describe/Execute/Close/Sync, COPY data —
// each statement through the pipeline (pipeline.ts) before its bytes go on, in one loop that is
// never re-entered (`pump`). Also where the relay starts: the client's cancel key, the server's
// messages wired to results.ts, and the startup messages the client gets once admitted.

import { randomBytes, randomInt } from 'node:crypto'
import type { Decision } from '../types.js'
import {
  expectEmpty,
  type Frame,
  FrontendCode,
  parseBind,
  parseExecute,
  parseParse,
  parseQuery,
  parseTarget,
  ProtocolError,
} from './frontend.js'
import { AUTH_OK, BackendCode, backendKeyData } from './messages.js'
import { andThen, type NamedEntry, type ResolvedPortal } from './named.js'
import { obligationsOf, type Outgoing, PipelineRelay } from './pipeline.js'
import { Expect, type StatementRecord } from './relay-base.js'
import { sendCancel } from './upstream.js'

/** Written only to learn, from its callback, that every write before it has completed. */
const EMPTY_WRITE = Buffer.alloc(0)

/** Messages that start or continue an extended-protocol batch (until Sync). */
const EXTENDED_MESSAGES: ReadonlySet<number> = new Set([
  FrontendCode.Parse,
  FrontendCode.Bind,
  FrontendCode.Describe,
  FrontendCode.Execute,
  FrontendCode.Close,
  FrontendCode.Flush,
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

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`
}

function describeParam(p: Buffer | null, format: number): string | null {
  if (p === null) return null
  if (format === 1) return `\\x${p.toString('hex')}`
  return p.toString('utf8')
}

export class Relay extends PipelineRelay {
  private pumping = false
  private pausedWhilePumping = false
  /** The backend key the client was given (the server's never leaves the gateway). */
  pid = 0

  /**
   * Registers the client's cancel key, wires the server connection, and sends the client what
   * the server said at startup. Returns false when the server's settings already rule the session
   * out (lexingHolds has then ended it).
   */
  start(): boolean {
    this.reader.setLimit(this.shared.ctx.limits.maxMessageBytes)
    // Our own backend key: the server's never leaves the gateway.
    let pid = 0
    do pid = randomInt(1, 2 ** 31 - 1)
    while (this.shared.cancelKeys.has(pid))
    this.pid = pid
    const secret = randomBytes(4)
    const opts = this.upstreamOptions
    const up = this.upstream
    this.shared.cancelKeys.set(pid, {
      secret,
      cancel: () => {
        // A held statement is not on the server yet: cancelling it ends the wait (hold.ts).
        this.holdCancel?.abort()
        if (!this.host.isReady()) return
        sendCancel(opts, up.pid, up.secret).catch((err: unknown) => this.log.warn({ err: String(err) }, 'cancel forwarding failed'))
      },
    })
    this.session.onTerminate((reason) => {
      // A backend busy in a query reads nothing until it finishes: cancel the query, then end both sides.
      if (this.host.isReady()) sendCancel(opts, up.pid, up.secret).catch(() => undefined)
      this.fatal('57P01', `terminating connection: ${reason}`)
    })

    const server = up.socket
    server.on('data', this.onServerData)
    server.on('error', () => this.host.close('server connection error'))
    server.on('close', () => this.host.close('server closed the connection'))
    server.on('drain', () => this.client.resume())
    this.client.on('drain', () => server.resume())

    for (const m of up.startupMessages) {
      if (m[0] === BackendCode.ParameterStatus && !this.lexingHolds(m.subarray(5))) return false
    }
    this.client.cork()
    this.client.write(AUTH_OK)
    for (const m of up.startupMessages) this.client.write(m)
    this.client.write(backendKeyData(pid, secret))
    this.client.write(up.readyForQuery)
    this.client.uncork()
    return true
  }

  /** Bytes from the client (the session is ready). */
  onData(chunk: Buffer | null): void {
    if (chunk !== null) this.reader.push(chunk)
    if (!this.pumping) {
      if (chunk !== null || this.reader.pending > 0) void this.pump()
    }
    // While a decision or an audit write is awaited, stop reading rather than buffer without bound.
    else if (this.reader.pending > this.shared.ctx.limits.maxMessageBytes) {
      this.client.pause()
      this.pausedWhilePumping = true
    }
  }

  /**
   * Frames and handles what the client sent until only a partial message is left. One loop, never
   * re-entered: bytes that arrive while a decision or an audit write is awaited are pushed to the
   * reader by onData and taken by this same loop when it resumes, so no amount of buffered
   * or split input can deepen the stack.
   */
  protected async pump(): Promise<void> {
    this.pumping = true
    try {
      while (this.host.isReady()) {
        const f: Frame | null = this.reader.next()
        if (f === null) break
        const p = this.onClientFrame(f)
        if (p !== undefined) await p
      }
      this.flushToServer()
      this.recycleFrames()
    } catch (err) {
      this.host.protocolFailure(err)
    } finally {
      this.pumping = false
      if (this.pausedWhilePumping) {
        this.pausedWhilePumping = false
        this.client.resume()
      }
    }
  }

  /**
   * Every frame read so far has been handled (queued for the server, refused or held and done
   * with): the reader's retired large buffer may hold the next large frame once every write to
   * the server has completed — the frames queued from it are then no longer referenced. A write
   * that fails leaves it to the garbage collector.
   */
  private recycleFrames(): void {
    const retired = this.reader.retire()
    if (retired === null || !this.host.isReady()) return
    const server = this.upstream.socket
    if (server.writableLength === 0) this.reader.recycle(retired)
    else
      server.write(EMPTY_WRITE, (err) => {
        if (!err) this.reader.recycle(retired)
      })
  }

  /** Returns a promise only for frames that need a decision; the rest are handled in line. */
  protected onClientFrame(f: Frame): Promise<void> | undefined {
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
        const described = (d.kind === 'S' ? this.named.statements : this.named.portals).get(d.name) ?? null
        this.expect(Expect.Describe, null, null, described)
        this.queueForServer(f.raw)
        return undefined
      }
      case FrontendCode.Close: {
        const m = parseTarget(f.body, 'Close')
        // The name goes when the server confirms: after an error earlier in the batch it skips the Close.
        const names = m.kind === 'S' ? this.named.statements : this.named.portals
        this.expect(Expect.Close, null, null, names.get(m.name) ?? null, { names, name: m.name })
        this.queueForServer(f.raw)
        return undefined
      }
      case FrontendCode.Sync:
        expectEmpty(f.body, 'Sync')
        this.openBatchOpaque = false
        this.openBatch = false
        this.expect(Expect.Sync, null, null)
        this.named.batch++
        this.queueForServer(f.raw)
        return undefined
      case FrontendCode.Flush:
        expectEmpty(f.body, 'Flush')
        this.queueForServer(f.raw)
        return undefined
      case FrontendCode.CopyData:
      case FrontendCode.CopyDone:
      case FrontendCode.CopyFail:
        this.queueForServer(f.raw)
        return undefined
      case FrontendCode.Terminate:
        this.flushToServer()
        this.upstream.socket.end(f.raw)
        this.host.close('client terminated')
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

  protected onParse(f: Frame, m: ReturnType<typeof parseParse>): void {
    this.expect(Expect.Parse, this.named.parsed(m.name, m.sql), null)
    this.queueForServer(f.raw)
  }

  /** A Parse whose text must wait for the server's settings (lexicalGate); refused in place if it cannot. */
  protected async parseAfterGate(f: Frame, gate: Promise<void> | 'refuse'): Promise<void> {
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
  protected onQuery(f: Frame): Promise<void> | undefined {
    const sql = parseQuery(f.body)
    const gate = this.lexicalGate(sql)
    if (gate !== null) return this.queryAfterGate(f, sql, gate)
    return this.queryNow(f, sql)
  }

  protected queryNow(f: Frame, sql: string): Promise<void> | undefined {
    // A simple Query destroys the unnamed statement and portal (PostgreSQL exec_simple_query).
    this.named.statements.delete('')
    this.named.portals.delete('')
    return this.judgeAndSend({ raw: f.raw, kind: Expect.Query, sql, text: sql, params: null, portal: null, approvedBy: null })
  }

  protected async queryAfterGate(f: Frame, sql: string, gate: Promise<void> | 'refuse'): Promise<void> {
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
  protected onBind(f: Frame): Promise<void> | undefined {
    const m = parseBind(f.body)
    const stmt = this.named.statements.get(m.statement) ?? null
    const params = m.params.map((p, i) => describeParam(p, m.paramFormats[i] ?? 0))
    const entry = this.named.bound(m.portal, m.statement, stmt, params, m.resultFormats)
    return andThen(this.named.live(stmt), (live) => this.judgeBind(f.raw, entry, live))
  }

  protected judgeBind(raw: Buffer, entry: NamedEntry, stmt: NamedEntry | null): Promise<void> | undefined {
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

  /** An Execute, judged as the statement its portal runs (waiting first when that is not yet known). */
  protected onExecute(f: Frame): Promise<void> | undefined {
    const m = parseExecute(f.body)
    const portal = this.named.portals.get(m.portal) ?? null
    if (portal === null) return this.executeResolved(f.raw, null, null)
    return andThen(this.named.portalRuns(portal), (resolved) => this.executeResolved(f.raw, portal, resolved))
  }

  protected executeResolved(raw: Buffer, portal: NamedEntry | null, resolved: ResolvedPortal | null): Promise<void> | undefined {
    const judged = resolved?.entry?.judged
    if (judged && this.host.isReady()) {
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
        secret: judged.secret,
      }
      this.expect(Expect.Execute, null, record, portal)
      this.queueForServer(raw)
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
}
