// The server's answers, as the client will see them: each message is attributed to the statement
// it answers (the queue of expectations in relay-base.ts), the `result` audit event is written when
// a statement completes, prepared statements and portals are confirmed or failed, what a completed
// statement changed in the session is followed (search_path, names, DDL), and a refused
// statement's stand-in error is replaced with the gateway's own. The gateway's own questions to
// the server (which statement a name runs: names.ts) are asked and answered here, unseen by the
// client.

import { randomBytes } from 'node:crypto'
import { serialize } from 'pg-protocol'
import { BackendCode, frame, readCommandTag, readErrorFields, rowsFromTag } from './messages.js'
import { type NamedEntry, settle } from './named.js'
import { NAME_LOOKUP_SQL, type ServerName, type ServerNames, textArrayLiteral } from './names.js'
import { Expect, type Expectation } from './relay-base.js'
import { EMPTY, MaskingRelay, quotesValues, scrubbed, withheldMessage } from './result-masking.js'
import type { StatementEffect } from './statements.js'

/** How long the gateway waits for the server to answer its own name lookup. */
const LOOKUP_TIMEOUT_MS = 15_000

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

/**
 * Whether what the server sends now may come from work an earlier statement deferred (WITH HOLD
 * cursors, deferred constraints) rather than from the statement running: at a Sync, which ends an
 * implicit transaction, and anywhere in a simple Query of several statements once one of them has
 * its texts withheld (the server runs them as one implicit transaction) or after its last
 * statement completed.
 */
function deferredWork(h: Expectation | undefined): boolean {
  if (h?.kind === Expect.Sync) return true
  const r = h?.kind === Expect.Query ? h.record : null
  if (!r) return false
  return r.tags.length >= r.effects.length || (r.effects.length > 1 && r.masks?.some((p) => p?.scrubErrors === true) === true)
}

/** An extended-protocol batch after its error, until the server's ReadyForQuery for its Sync. */
interface FailedBatch {
  readonly error: { code: string; message: string }
  /** The Parse that failed, if the error was a Parse's: the Binds of its statement failed with it. */
  readonly parse: NamedEntry | null
  /** Statements (audit seqs) whose result is recorded. */
  readonly reported: number[]
}

/** The gateway's own query on the session's server connection, as its answers arrive. */
interface NameLookup {
  row(message: Buffer): void
  error(message: string): void
  done(): void
}

export abstract class ResultRelay extends MaskingRelay {
  /** Since the last ReadyForQuery: whether an error came, and the last command tag. */
  private errorSinceReady = false
  private lastTag: string | null = null
  /** The gateway's own query running on the server connection (lookupNames). */
  private lookup: NameLookup | null = null
  /** An extended-protocol message failed and the server skips the rest of its batch until Sync. */
  private failedBatch: FailedBatch | null = null

  readonly onServerData = (chunk: Buffer): void => {
    let out: Buffer[]
    try {
      out = this.scanner.scan(chunk)
    } catch (err) {
      this.log.error({ err: String(err) }, 'invalid data from the server')
      this.fatal('08P01', 'Gatehouse received an invalid message from the server')
      return
    }
    // A session ended while scanning (a withheld result mid-batch) sends nothing more.
    if (this.isClosed()) return
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
    if (!ok) this.upstream.socket.pause()
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
        if (h.kind === Expect.Close) {
          const c = h.close
          // Unless a Parse or Bind after the Close has taken the name again.
          if (c && (c.names.get(c.name) ?? null) === (h.target ?? null)) c.names.delete(c.name)
          this.shift()
        }
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
    if (this.lookup) return this.onLookupMessage(this.lookup, type, body)
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

  protected handleMessage(type: number, body: Buffer): Buffer | null {
    let h = this.head()
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
        // A Sync that ends an implicit transaction runs its deferred work too.
        return this.currentPlan(h)?.scrubErrors || (this.maskingOn && deferredWork(h)) ? scrubbed(body, 'N') : null
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
        if (effect) this.applyEffect(effect, tag)
        if (h.kind === Expect.Execute) this.finishRecord(h, tag)
        else h.record.tags.push(tag)
      }
      return null
    }
    if (type === BackendCode.ReadyForQuery) {
      if (this.failedBatch !== null) {
        this.skipUntilSync()
        h = this.head()
      }
      this.sql.onReadyForQuery(body[0] ?? 0x49, this.errorSinceReady, this.lastTag)
      this.errorSinceReady = false
      this.lastTag = null
      this.named.answered(h?.kind === Expect.Sync, body[0] === 0x49)
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
    const code = f.get('C') ?? ''
    // A server error may quote a value of a masked column (invalid input syntax for type integer:
    // "…"): withheld for the statement's plan, at a Sync (an implicit transaction's deferred
    // constraints), and for every error of a class that quotes values, in a session that masks.
    const withhold = this.currentPlan(h)?.scrubErrors === true || (this.maskingOn && (deferredWork(h) || quotesValues(code)))
    const replacement = h.record?.replacement ?? (withhold ? scrubbed(body, 'E') : null)
    // The audit and the recording keep what the client got: the SQLSTATE, not the value.
    const error = { code, message: withhold ? withheldMessage(code || 'XX000') : (f.get('M') ?? '') }
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
    if (h.kind === Expect.Sync) return replacement
    // Extended protocol: the failing message, then everything up to the next Sync is skipped —
    // what is queued now, and what the client sends before its Sync (skipUntilSync at ReadyForQuery).
    if (h.entry) settle(h.entry, 'failed')
    const failed: FailedBatch = { error, parse: h.kind === Expect.Parse ? h.entry : null, reported: [] }
    this.failedBatch = failed
    if (h.record) {
      h.record.error = error
      failed.reported.push(h.record.seq)
    }
    this.completeRecord(h)
    this.shift()
    for (let e = this.head(); e && e.kind !== Expect.Sync; e = this.head()) this.skipped(e, failed)
    return replacement
  }

  /**
   * A message the server skipped after an error earlier in its batch. A statement judged at a Bind
   * whose statement failed to parse failed with that error; one whose Bind already failed has its
   * result; anything else was not executed.
   */
  private skipped(e: Expectation, failed: FailedBatch): void {
    if (e.entry) settle(e.entry, e.kind === Expect.Parse ? 'skipped' : 'failed')
    const r = e.record
    if (r && !failed.reported.includes(r.seq)) {
      if (e.kind === Expect.Bind && failed.parse !== null && e.entry?.statement === failed.parse) r.error = failed.error
      else r.error = { code: 'skipped', message: 'not executed: an earlier message in the batch failed' }
      // One result per statement: its Bind's and its Execute's records are the same statement.
      failed.reported.push(r.seq)
      this.completeRecord(e)
    }
    // A simple Query in a failed batch is skipped too, and gets no ReadyForQuery of its own.
    if (e.kind === Expect.Query) this.readiesPending--
    this.shift()
  }

  /** At the ReadyForQuery of a failed batch: what the client sent after the error, up to the
   * batch's Sync, was skipped by the server (it has no answer of its own). */
  private skipUntilSync(): void {
    const failed = this.failedBatch
    if (failed === null) return
    this.failedBatch = null
    for (let e = this.head(); e && e.kind !== Expect.Sync; e = this.head()) this.skipped(e, failed)
  }

  /** A statement completed on the server: follow what it changed in the session. */
  protected applyEffect(e: StatementEffect, tag: string): void {
    this.named.applyNames(e)
    if (e.searchPath) this.sql.applySearchPath(e.searchPath)
    if (e.transaction) this.sql.applyTransaction(e.transaction, tag)
    if (e.createsRoutine) this.sql.noteCreatedRoutine(e.createsRoutine.kind, e.createsRoutine.name)
    if (e.ddl) {
      this.refreshedFor.clear()
      // The relation snapshot may be stale now; the next session of this connection reads it anew.
      this.catalog.invalidate()
    }
  }

  protected finishRecord(h: Expectation, tag: string | null): void {
    if (h.record && tag !== null) h.record.tags.push(tag)
    this.completeRecord(h)
    this.shift()
  }

  protected completeRecord(h: Expectation): void {
    const r = h.record
    if (!r || r.replacement) return
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

  /**
   * Reads the server's own prepared statements and cursors of these names (names.ts) on the
   * session's backend, between two of the client's batches: everything sent before is answered
   * first, and the answer never reaches the client. Mid-batch the server cannot be asked (an error
   * earlier in the batch would make it skip the question): then the reason is returned.
   */
  async lookupNames(names: readonly string[]): Promise<ServerNames | string> {
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
  protected onLookupMessage(l: NameLookup, type: number, body: Buffer): Buffer | null {
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
}
