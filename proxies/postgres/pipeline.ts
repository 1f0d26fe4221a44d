// The statement pipeline: every statement the client sends is judged (classified and decided,
// statements.ts), planned for masking when its decision carries obligations (result-masking.ts),
// audited durably, and only then queued for the server — or held for approval (hold.ts), or
// refused in place: a stand-in the server rejects takes its place, so the server aborts exactly
// what a real error would, and its error is replaced with the gateway's own (results.ts).
//
// The common case — one statement that is not an EXECUTE, no mask obligations or obligations
// planned without a catalog question (maskNow) — is judged without an await (`judgeAndSend`);
// everything else is judged with awaits. Same decision, same audit event, same order. While
// several PostgreSQL connections are open the statement event is appended grouped
// (AuditLog.appendGrouped): the statements of all sessions that arrive in one event-loop turn
// share one write(2), and each is queued for the server once that write completed; a lone
// connection's statement is written at once (`auditNow`, `fsync: batched`) and queued in the same
// call.

import { randomBytes } from 'node:crypto'
import { serialize } from 'pg-protocol'
import type { Analysis } from './sql/index.js'
import { isGatehouseError, type MaskObligation, refusalMessage } from '../kit/index.js'
import type { ApprovalOutcome, Decision, SessionAuditEvent } from '../types.js'
import * as hold from './hold.js'
import { errorResponse, noticeResponse } from './messages.js'
import { type NamedEntry, settle } from './named.js'
import { holdsSecret, mentionsPassword, redactSql } from './redact.js'
import { Expect, type StatementRecord } from './relay-base.js'
import { ResultRelay } from './results.js'
import type { Verdict } from './statements.js'

/** A stand-in that the server rejects as a syntax error, so the server itself aborts whatever a
 * real error would abort (docs/architecture.md, "Refusing a statement the way PostgreSQL would"). */
const STAND_IN_SQL = 'gatehouse refused this statement'

/** What a client reads when policy refuses: `gatehouse: denied by <rule> (<hop>): <reason>`. */
export function denialMessage(d: Decision): string {
  return d.effect === 'allow' ? 'gatehouse: refused' : refusalMessage(d)
}

/** The mask obligations of an allowed statement (none for a cleared chain). */
export function obligationsOf(v: Verdict): readonly MaskObligation[] {
  return v.decision.effect === 'allow' ? v.decision.mask : []
}

/** Whether an allowed statement carries mask obligations (checked without an await: the hot path). */
function needsMasking(v: Verdict, sql: string | null): sql is string {
  return v.decision.effect === 'allow' && v.decision.mask.length > 0 && sql !== null
}

/** One statement on its way to the server: the message as received and what it runs. */
export interface Outgoing {
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

/** The `statement` audit event: what runs, how it was decided, and under which policy. */
export function statementEvent(seq: number, { sql, params, approvedBy }: Outgoing, verdict: Verdict): SessionAuditEvent {
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

/** The record of an allowed statement, until its result comes. */
function allowedRecord(o: Outgoing, verdict: Verdict, seq: number): StatementRecord {
  return {
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
}

export abstract class PipelineRelay extends ResultRelay {
  /** The portal of the Bind being judged (onBind), so a refusal can mark it failed. */
  protected bindInJudgement: NamedEntry | null = null

  /**
   * Judges `o.text` and sends or refuses `o`. The common case — one statement, no masking or
   * masking planned without a catalog question — is judged without an await; the rest goes
   * through judgeThenSend.
   */
  protected judgeAndSend(o: Outgoing): Promise<void> | undefined {
    const analysis = o.text === null ? null : this.shared.analyzer.analyze(o.text)
    const now = analysis === null ? null : this.sql.judgeNow(analysis, this.signal)
    // A decision that rests on a view's definition (or a foreign table, a table's row-level
    // security, a relation the snapshot lacks) is confirmed against the server first.
    const names = this.sql.catalogNames()
    if (names.length > 0) return this.judgeThenSend(o, null, analysis, now === null ? undefined : { verdict: now, names })
    if (now !== null) {
      if (!needsMasking(now, o.text)) return this.sendOrRefuseNow(o, now)
      // Masking planned without an await when no catalog question is open (maskNow).
      const masked = this.maskNow(now, o.text, analysis?.shape ?? null)
      if (masked !== null) return this.sendOrRefuseNow(o, masked)
    }
    return this.judgeThenSend(o, now, analysis)
  }

  protected async judgeThenSend(
    o: Outgoing,
    judged: Verdict | null,
    analysis: Analysis | null,
    first?: { readonly verdict: Verdict; readonly names: readonly string[] },
  ): Promise<void> {
    let verdict = judged ?? (await this.judgeFresh(o.text, analysis, undefined, first))
    if (needsMasking(verdict, o.text)) verdict = await this.applyMasking(verdict, o.text)
    await this.sendOrRefuse(o, verdict)
  }

  /**
   * Judges `text` on a catalog snapshot confirmed current for the relations the decision rests on
   * (SessionSql.catalogNames): the policy decision and masking lineage are taken on the same
   * freshness-checked catalog (docs/masking.md, "Catalog freshness"). `first`: a judgement already
   * made, with the names it collected.
   */
  protected async judgeFresh(
    text: string | null,
    analysis: Analysis | null,
    approval?: { readonly granted: boolean },
    first?: { readonly verdict: Verdict; readonly names: readonly string[] },
  ): Promise<Verdict> {
    let verdict = first?.verdict
    let names = first?.names
    if (verdict === undefined || names === undefined) {
      verdict = await this.sql.judge(text, this.signal, approval, analysis)
      names = this.sql.catalogNames()
    }
    if (names.length === 0) return verdict
    const state = await this.confirmCatalog(names)
    if (state === 'current') return verdict
    if (state === 'refreshed') {
      const again = await this.sql.judge(text, this.signal, approval, analysis)
      // Collected on the snapshot just read: nothing further to confirm.
      this.sql.catalogNames()
      return again
    }
    const rule = 'gatehouse:stale-catalog'
    const reason =
      'the gateway could not confirm that its view of the catalog is current, and this statement reads a view, a foreign table, a table with row-level security or a relation it did not know'
    return {
      ...verdict,
      decision: { effect: 'deny', rules: [rule], reason, reasons: [{ rule, reason, hop: '' }], policy: verdict.decision.policy },
    }
  }

  /**
   * sendOrRefuse without an await while this is the gateway's only PostgreSQL connection and the
   * log allows it (`fsync: batched`): no other session's statement can share the write, so the
   * grouped append would only add the wait for the end of the turn.
   */
  protected sendOrRefuseNow(o: Outgoing, verdict: Verdict): Promise<void> | undefined {
    if (this.shared.connections.size > 1) return this.sendOrRefuse(o, verdict)
    const seq = ++this.seq
    const ev = statementEvent(seq, o, verdict)
    try {
      // Durable before forwarded: if the append fails, nothing is sent.
      if (!this.session.auditNow(ev)) return this.auditThenForward(o, verdict, seq, ev)
    } catch (err) {
      this.auditFailed(err, o.kind, seq)
      return undefined
    }
    return this.forwardOrRefuse(o, verdict, seq)
  }

  /** Audits the statement durably (grouped with the turn's other appends), then forwards it, or refuses it in place. */
  protected sendOrRefuse(o: Outgoing, verdict: Verdict): Promise<void> {
    const seq = ++this.seq
    return this.auditThenForward(o, verdict, seq, statementEvent(seq, o, verdict))
  }

  protected async auditThenForward(o: Outgoing, verdict: Verdict, seq: number, ev: SessionAuditEvent): Promise<void> {
    try {
      // Durable before forwarded: if the append fails, nothing is sent.
      await this.session.auditGrouped(ev)
    } catch (err) {
      this.auditFailed(err, o.kind, seq)
      return
    }
    await this.forwardOrRefuse(o, verdict, seq)
  }

  protected auditFailed(err: unknown, kind: Expect, seq: number): void {
    this.log.error({ err: String(err), session: this.session.id }, 'audit append failed; statement refused')
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
  protected forwardOrRefuse(o: Outgoing, verdict: Verdict, seq: number): Promise<void> | undefined {
    if (!this.host.isReady()) return undefined
    const kind = o.kind
    const decision = verdict.decision
    if (decision.effect === 'allow' && kind === Expect.Bind) {
      this.bindAllowed(o, verdict, seq)
      return undefined
    }
    if (decision.effect === 'allow') {
      this.expect(kind, null, allowedRecord(o, verdict, seq), o.portal)
      this.queueForServer(o.raw)
      this.noteForwarded(kind, verdict.inert === true)
      this.approvalPrefs.note(this.shared.analyzer, verdict, o.sql)
      return undefined
    }
    if (decision.effect === 'hold' && o.approvedBy === null && this.session.requestApproval) return this.holdStatement(o, verdict, seq)
    this.refuseInPlace(kind, errorResponse({ severity: 'ERROR', code: '42501', message: denialMessage(decision) }), seq)
    return undefined
  }

  /**
   * A held statement (engine/approvals; hold.ts): the client gets a NoticeResponse at once, the
   * statement waits — and nothing the client sent after it is read, so nothing overtakes it — until
   * reviewers decide; then it is decided again with the grant and forwarded, or refused in place.
   */
  protected async holdStatement(o: Outgoing, verdict: Verdict, seq: number): Promise<void> {
    const { kind, sql, text, params } = o
    const session = this.session
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
    this.upstream.socket.write(hold.FLUSH)
    while (this.head() !== undefined && !this.isClosed()) await new Promise((r) => setTimeout(r, 5))
    if (this.isClosed()) return
    const bound = hold.bindable(verdict, text, text !== sql)
    const cancel = new AbortController()
    const onClose = (): void => cancel.abort()
    this.signal.addEventListener('abort', onClose, { once: true })
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
      this.signal.removeEventListener('abort', onClose)
    }
    if (this.isClosed()) return
    if (outcome.status !== 'granted') {
      this.refuseInPlace(kind, errorResponse(hold.holdError(outcome)), seq)
      return
    }
    // Everything but the hold still applies: a deny still denies, masks still mask.
    let again = await this.judgeFresh(text, null, { granted: true })
    if (needsMasking(again, text)) again = await this.applyMasking(again, text)
    await this.sendOrRefuse({ ...o, approvedBy: outcome.request }, again)
  }

  /**
   * Sends a stand-in that fails on the server, so PostgreSQL aborts exactly what a real error
   * would, and arranges for its error to be replaced with `error`. For Execute the stand-in is a
   * Parse of invalid SQL into a throwaway named statement (the unnamed one stays as it was).
   */
  protected refuseInPlace(kind: Expect, error: Buffer, seq: number): undefined {
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
      this.queueForServer(serialize.parse({ name: `gatehouse_refused_${randomBytes(6).toString('hex')}`, text: STAND_IN_SQL }))
      this.expect(Expect.Execute, null, record)
    } else {
      this.queueForServer(serialize.query(STAND_IN_SQL))
      this.expect(Expect.Query, null, record)
    }
    return undefined
  }

  /** An allowed Bind: the portal remembers its verdict, and the Bind goes to the server. Its
   * record stands for the statement until an Execute runs it: an error at Bind (planning folds
   * `1/0`) is the statement's result. */
  protected bindAllowed(o: Outgoing, verdict: Verdict, seq: number): void {
    const entry = o.portal as NamedEntry
    const record = allowedRecord(o, verdict, seq)
    entry.judged = { seq, verdict, secret: record.secret === true }
    this.expect(Expect.Bind, entry, record)
    this.queueForServer(o.raw)
    this.noteForwarded(Expect.Execute, verdict.inert === true)
  }
}
