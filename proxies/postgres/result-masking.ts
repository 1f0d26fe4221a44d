// Masking results on their way to the client: the statement's masking plan (masking.ts) meets the
// result's shape (RowDescription, or the Describe of the portal an Execute runs), DataRows and
// CopyData are rewritten while a statement's plan changes values, the server's error and notice
// texts are withheld when they could quote a masked value, and the result backstop checks every
// output column's origin (OID, attnum) against the catalog snapshot, withholding a result it
// cannot vouch for. Masking is switched on for a session by its first decision with mask
// obligations; until then every result streams through untouched.

import { createHmac, randomBytes } from 'node:crypto'
import { compileCopyMasker } from './copy-masker.js'
import { type ColumnAction, type ColumnPlan, compileRowMasker, type RowMasker } from './datarow-masker.js'
import { type LineageCatalogSnapshot, lineageCatalogFor } from './sql/lineage-catalog.js'
import type { LineageCatalog } from './sql/lineage.js'
import { columnMatches, type MaskingKeys, type MaskObligation } from '../kit/index.js'
import { KEEP, type MaskVerdict, matching, type OutputPlan, SessionMasking, type StatementMaskPlan, strictest } from './masking.js'
import { type ErrorFields, errorResponse, type FieldInfo, noticeResponse, parseRowDescription, readErrorFields } from './messages.js'
import type { NamedEntry } from './named.js'
import { type Admitted, Expect, type Expectation, RelayBase } from './relay-base.js'
import type { SessionCatalog } from './catalog.js'
import type { JudgedStatement, Verdict } from './statements.js'

/** SQLSTATE of a result withheld because the catalog moved under it: a serialization failure, which
 *  clients and drivers know to retry. */
const CATALOG_MOVED_CODE = '40001'

export const EMPTY = Buffer.alloc(0)

/** The text a withheld server message is replaced with, for the client and the audit alike. */
export function withheldMessage(code: string): string {
  return `gatehouse: the server's message is withheld because the statement reads masked columns (SQLSTATE ${code})`
}

/** An ErrorResponse/NoticeResponse with its text withheld: only severity and SQLSTATE remain. */
export function scrubbed(body: Buffer, kind: 'E' | 'N'): Buffer {
  const f = readErrorFields(body)
  const code = f.get('C') ?? 'XX000'
  const fields: ErrorFields = {
    severity: kind === 'N' ? 'NOTICE' : f.get('V') === 'FATAL' ? 'FATAL' : 'ERROR',
    code,
    message: withheldMessage(code),
  }
  return kind === 'E' ? errorResponse(fields) : noticeResponse(fields)
}

/**
 * SQLSTATE classes whose texts quote values whatever the statement: data exceptions (22: `invalid
 * input syntax for type integer: "…"`) and integrity constraint violations (23: `Key (email)=(…)`,
 * `Failing row contains (…)`). A trigger, a deferred constraint or a cast can raise them for a
 * statement that names no masked relation, so in a masking session they are always withheld.
 */
export function quotesValues(code: string): boolean {
  return code.startsWith('22') || code.startsWith('23')
}

/**
 * Statements that run work deferred to them, whose errors come from statements judged earlier:
 * the end of a transaction block materializes WITH HOLD cursors and checks DEFERRED constraints
 * (COMMIT, END, COMMIT AND CHAIN, PREPARE TRANSACTION, COMMIT PREPARED), SET CONSTRAINTS … IMMEDIATE
 * checks them at once, and CLOSE ends a cursor. ROLLBACK, ROLLBACK TO and RELEASE run none: the
 * server discards deferred triggers and cursors there.
 */
function runsDeferredWork(st: JudgedStatement): boolean {
  switch (st.kind) {
    case 'commit':
    case 'commit_prepared':
    case 'constraints_set':
    case 'close_portal':
      return true
    case 'prepare':
      // PREPARE TRANSACTION (sql.admin); an SQL PREPARE of a statement is sql.session.
      return st.action !== 'sql.session'
    default:
      return false
  }
}

/** Transaction control: no relation, no lineage, so no catalog is needed to plan it. A session
 * whose catalog cannot be read (or whose search_path cannot be told) can always end its block. */
const TRANSACTION_KINDS = new Set([
  'begin',
  'start',
  'commit',
  'rollback',
  'savepoint',
  'release',
  'rollback_to',
  'commit_prepared',
  'rollback_prepared',
])

function transactionControl(st: JudgedStatement): boolean {
  return TRANSACTION_KINDS.has(st.kind) || (st.kind === 'prepare' && st.action !== 'sql.session')
}

/** The plan of a statement that returns nothing and whose server texts are withheld. */
function scrubOnly(obligations: readonly MaskObligation[]): StatementMaskPlan {
  return { outputs: null, fallback: KEEP, detectors: [], scrubErrors: true, copy: null, obligations, active: false, masked: [] }
}

/**
 * The column plans for a result, once its shape is known (RowDescription, or the fields of a
 * described statement/portal). `fields` null: only the column count is known (from a DataRow).
 */
export function columnPlans(
  plan: StatementMaskPlan,
  fields: readonly FieldInfo[] | null,
  count: number,
  formats: readonly number[] | null,
): ColumnPlan[] {
  const n = fields?.length ?? count
  const fmt = (i: number): 0 | 1 => {
    if (formats && formats.length > 0) return (formats.length === 1 ? formats[0] : formats[i]) === 1 ? 1 : 0
    return fields?.[i]?.format ?? 0
  }
  const typeOf = (i: number): number | null => fields?.[i]?.typeOid ?? null
  const actions = alignOutputs(plan, fields, n)
  return actions.map((mask, i) => ({ mask, typeOid: typeOf(i), format: fmt(i) }))
}

function alignOutputs(plan: StatementMaskPlan, fields: readonly FieldInfo[] | null, n: number): ColumnAction[] {
  const outputs = plan.outputs
  if (outputs === null) return new Array<ColumnAction>(n).fill(plan.fallback)
  const stars = outputs.filter((o) => o.unknownStar !== undefined)
  if (stars.length === 0) {
    if (outputs.length === n) return outputs.map((o) => o.mask)
    return new Array<ColumnAction>(n).fill(plan.fallback)
  }
  // `*` over relations the catalog does not know: the star takes whatever columns are left, which
  // are judged by the names the server gives them.
  // Two such stars cannot be told apart by column count: every column gets the fallback.
  const starCols = n - (outputs.length - stars.length)
  if (stars.length > 1 || starCols < 1) return new Array<ColumnAction>(n).fill(plan.fallback)
  const out: ColumnAction[] = []
  let col = 0
  for (const o of outputs) {
    if (o.unknownStar === undefined) {
      out.push(o.mask)
      col++
      continue
    }
    for (let k = 0; k < starCols; k++, col++) {
      const name = fields?.[col]?.name
      if (name === undefined) {
        out.push(plan.fallback)
        continue
      }
      const rel = o.unknownStar.includes('.') ? o.unknownStar : `?.${o.unknownStar}`
      const m = strictest(matching([`${rel}.${name}`], plan.obligations))
      out.push(
        m
          ? { action: 'mask', rule: m.rule, strategy: m.strategy, ...(m.keep !== undefined ? { keep: m.keep } : {}), derived: false }
          : plan.detectors.length > 0
            ? { action: 'detect', detectors: plan.detectors }
            : KEEP,
      )
    }
  }
  return out
}

/** Whether any column of a compiled plan changes values (otherwise rows are forwarded as they are). */
export function changesRows(cols: readonly ColumnPlan[]): boolean {
  return cols.some((c) => c.mask.action !== 'keep')
}

/**
 * The server's word on where each output column comes from, checked against the catalog snapshot
 * the statement was planned on. A RowDescription names, for every output that is a plain column,
 * the OID of its relation and its attnum: ground truth, whatever another client changed since the
 * snapshot was read. Returns why the result may not be sent (null: it may): a relation or column
 * the snapshot does not know, or a column a rule masks (by its name in the snapshot or the name the
 * server gives it) that the result's plan would send in clear. Costs a map lookup per field.
 */
export function backstopFinding(
  fields: readonly FieldInfo[],
  snap: LineageCatalogSnapshot | null,
  obligations: readonly MaskObligation[],
  cols: readonly ColumnPlan[] | null,
  outputs: readonly OutputPlan[] | null = null,
): string | null {
  if (obligations.length === 0) return null
  // The plan's outputs line up with the fields only without `*` over unknown relations.
  const aligned = outputs !== null && outputs.length === fields.length && outputs.every((o) => o.unknownStar === undefined) ? outputs : null
  for (let i = 0; i < fields.length; i++) {
    const f = fields[i] as FieldInfo
    if (f.tableOid === 0 || f.column <= 0) continue
    const masked = cols?.[i]?.mask.action === 'mask'
    if (!snap) {
      if (masked) continue
      return 'the gateway has no catalog snapshot to check the result against'
    }
    const known = snap.byOid.get(f.tableOid)
    if (!known) {
      if (snap.outside.has(f.tableOid)) continue
      return `column ${i + 1} of the result comes from a relation the gateway's catalog snapshot does not know`
    }
    const at = known.attnums.indexOf(f.column)
    if (at < 0)
      return `column ${i + 1} of the result is a column of ${known.relation.schema}.${known.relation.name} the gateway's catalog snapshot does not know`
    if (masked) continue
    const rel = `${known.relation.schema}.${known.relation.name}`
    const snapshotName = `${rel}.${known.relation.columns[at] as string}`
    // The name the server gives the output tells of a rename since the snapshot — unless the
    // statement chose that name itself for exactly the column the server reports (an alias).
    const out = aligned?.[i]
    const aliasOfSameColumn = out !== undefined && out.name === f.name && out.direct === snapshotName
    const names = aliasOfSameColumn ? [snapshotName] : [snapshotName, `${rel}.${f.name}`]
    if (obligations.some((o) => names.some((n) => columnMatches(o.column, n))))
      return `column ${i + 1} of the result is a masked column that the statement's plan did not mask`
  }
  return null
}

export abstract class MaskingRelay extends RelayBase {
  protected readonly catalog: SessionCatalog
  private readonly sessionUser: string
  /** Plans statements once the session has had a mask obligation. */
  private masking: SessionMasking | null = null
  /** Rewrites the rows of the result being received (null: rows stream untouched). */
  protected rowMasker: RowMasker | null = null
  protected copyMasker: { rewrite(payload: Buffer): Buffer } | null = null
  /** An Execute whose masker is compiled at its first row, from the portal's described shape. */
  protected lazyPlan: { plan: StatementMaskPlan; portal: NamedEntry | null } | null = null
  /** A result was withheld (the catalog moved under it): everything up to ReadyForQuery is dropped. */
  protected backstopRefusal = false
  /** The catalog re-read that a withheld result started; the next statement is planned after it. */
  private pendingRefresh: Promise<boolean> | null = null
  private sessionMaskKeys: MaskingKeys | null = null
  private boundCatalog: { key: string; catalog: LineageCatalog } | null = null
  /** Unknown relations a catalog refresh was already tried for (cleared by this session's DDL). */
  protected readonly refreshedFor = new Set<string>()

  constructor(a: Admitted) {
    super(a)
    this.catalog = a.catalog
    this.sessionUser = a.sessionUser
  }

  /** Re-reads the catalog snapshot; false when it could not. */
  private async refreshCatalog(): Promise<boolean> {
    if (!(await this.catalog.refresh())) return false
    this.boundCatalog = null
    this.sql.catalogChanged()
    return true
  }

  /**
   * Before a decision that rests on catalog entries of `names` (views, foreign tables, tables with
   * row-level security, names the snapshot lacks) is trusted: asks the server whether the snapshot
   * still holds for them, and reads it again when it moved (another client redefined a view). The
   * decision is then taken again on the fresh snapshot: 'refreshed'. 'unknown': neither could be
   * done, and the caller refuses.
   */
  protected async confirmCatalog(names: readonly string[]): Promise<'current' | 'refreshed' | 'unknown'> {
    // Without a snapshot every relation already counts as opaque code: nothing to confirm.
    if (this.catalog.snapshot === null || names.length === 0) return 'current'
    const current = await this.catalog.current({ relations: names, functions: [] })
    if (current === true) return 'current'
    if (current === false && (await this.refreshCatalog())) return 'refreshed'
    return 'unknown'
  }

  /** The session's planner; the first statement with mask obligations switches masking on. */
  private startMasking(): SessionMasking {
    this.masking ??= new SessionMasking(
      () => this.lineageCatalog(),
      Array.isArray(this.session.settings.detectors) ? (this.session.settings.detectors as string[]) : null,
    )
    if (!this.maskingOn) {
      this.maskingOn = true
      this.updateScan()
    }
    return this.masking
  }

  /**
   * applyMasking without an await, for the common case: no catalog re-read pending, no relation
   * the snapshot lacks, no catalog check needed (the statement reads no classified relation, view
   * or function over masked columns), no server-side name behind it. Returns null when the
   * statement needs the full path. `shape`: the classifier's cached analysis of the text's shape,
   * under which the statement's lineage is remembered (masking.ts).
   */
  protected maskNow(verdict: Verdict, sql: string, shape: object | null): Verdict | null {
    const d = verdict.decision
    if (d.effect !== 'allow') return null
    const tx = this.transactionOnly(verdict)
    if (tx !== null) return tx
    if (this.pendingRefresh !== null) return null
    if (verdict.statements.some((st) => st.inner !== undefined && st.inner !== null)) return null
    const mv = this.startMasking().plan(sql, d.mask, d.maskOptions, [], shape)
    if (mv.unknownRelations.some((r) => !this.refreshedFor.has(r)) || mv.check !== null) return null
    return this.masked(verdict, mv)
  }

  /**
   * An allowed statement with mask obligations gets a masking plan per statement; one that would
   * launder a masked column, or whose output the gateway cannot trace, becomes a denial.
   */
  protected async applyMasking(verdict: Verdict, sql: string): Promise<Verdict> {
    const d = verdict.decision
    if (d.effect !== 'allow') return verdict
    const tx = this.transactionOnly(verdict)
    if (tx !== null) return tx
    if (this.pendingRefresh) {
      const refresh = this.pendingRefresh
      this.pendingRefresh = null
      await refresh
    }
    const masking = this.startMasking()
    const held = verdict.statements.map((st) => st.inner ?? null)
    let mv = masking.plan(sql, d.mask, d.maskOptions, held)
    const fresh = mv.unknownRelations.filter((r) => !this.refreshedFor.has(r))
    if (fresh.length > 0) {
      // A relation created after this session's catalog snapshot (a view over a masked column,
      // say) must not pass as unknown: read the catalog again, once per name, and plan again.
      for (const r of fresh) this.refreshedFor.add(r)
      if (await this.refreshCatalog()) mv = masking.plan(sql, d.mask, d.maskOptions, held)
    }
    if (mv.check !== null) {
      // The snapshot may be older than this statement (a view redefined, a table renamed by
      // another client): ask the server, and plan again on a fresh snapshot when it moved.
      const current = await this.catalog.current(mv.check)
      if (current === false && (await this.refreshCatalog())) mv = masking.plan(sql, d.mask, d.maskOptions, held)
      else if (current !== true)
        mv = {
          ok: false,
          rule: 'gatehouse:stale-catalog',
          reason: 'the gateway could not confirm that its view of the catalog is current, and masked columns may be involved',
          unknownRelations: [],
          check: null,
        }
    }
    return this.masked(verdict, mv)
  }

  /** A text of transaction control only: planned without the catalog, its errors withheld where
   * it can run deferred work (null: the text is something else). */
  private transactionOnly(verdict: Verdict): Verdict | null {
    if (verdict.statements.length === 0 || !verdict.statements.every(transactionControl)) return null
    this.startMasking()
    return this.masked(verdict, { ok: true, plans: verdict.statements.map(() => null), unknownRelations: [], check: null })
  }

  /** The verdict with its masking plans, or the refusal the planner gave. */
  private masked(verdict: Verdict, mv: MaskVerdict): Verdict {
    const d = verdict.decision
    if (!mv.ok) {
      const reason = mv.reason
      return {
        ...verdict,
        decision: { effect: 'deny', rules: [mv.rule], reason, reasons: [{ rule: mv.rule, reason, hop: '' }], policy: d.policy },
      }
    }
    // The server's text for a statement that runs deferred work can quote values read by an
    // earlier statement (a WITH HOLD cursor's query, a deferred foreign key's key): withheld. When
    // the statements cannot be lined up with their plans, every statement's texts are.
    const obligations = d.effect === 'allow' ? d.mask : []
    const st = verdict.statements
    const aligned = st.length === mv.plans.length
    const anyDeferred = st.some(runsDeferredWork)
    const plans = mv.plans.map((p, i) =>
      (aligned ? runsDeferredWork(st[i] as JudgedStatement) : anyDeferred) ? { ...(p ?? scrubOnly(obligations)), scrubErrors: true } : p,
    )
    return { ...verdict, masks: plans.some((p) => p !== null) ? plans : null }
  }

  /**
   * The lineage catalog bound to the session's search_path. When a rolled-back savepoint leaves
   * several paths possible, none is chosen: lineage is then unknown (fail closed).
   */
  protected lineageCatalog(): LineageCatalog | null {
    const snap = this.catalog.snapshot
    const paths = this.sql.currentPaths() ?? []
    if (!snap || paths.length !== 1) return null
    const path = paths[0] as readonly string[]
    const key = path.join('\u0000')
    if (this.boundCatalog?.key !== key) this.boundCatalog = { key, catalog: lineageCatalogFor(snap, path, this.sessionUser) }
    return this.boundCatalog.catalog
  }

  /** The masking key, and this session's own `hash_session` key (a random salt under the masking key). */
  protected maskKeys(): MaskingKeys {
    this.sessionMaskKeys ??= {
      key: this.shared.maskKey,
      sessionKey: createHmac('sha256', this.shared.maskKey).update(randomBytes(32)).digest(),
    }
    return this.sessionMaskKeys
  }

  protected updateScan(): void {
    this.scanner.setMasking(
      this.maskingOn,
      this.rowMasker !== null || this.copyMasker !== null || this.lazyPlan !== null || this.backstopRefusal,
    )
  }

  /** The expectation at the head changed: an Execute's rows are masked per its plan. */
  protected headChanged(): void {
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
  protected currentPlan(h: Expectation | undefined): StatementMaskPlan | null {
    const r = h?.record
    if (!r?.masks) return null
    return r.masks[h?.kind === Expect.Execute ? 0 : r.tags.length] ?? null
  }

  protected onRowDescription(h: Expectation | undefined, body: Buffer): Buffer | null {
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
            this.catalog.snapshot,
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
      ? backstopFinding(fields, this.catalog.snapshot, h.record.obligations, cols, plan?.outputs ?? null)
      : null
    if (finding !== null) return this.withholdResult(h, finding, 0)
    this.updateScan()
    return null
  }

  /**
   * A result whose columns the catalog snapshot cannot vouch for (another client changed the
   * catalog since it was read): its RowDescription and rows never reach the client, an error does,
   * and the catalog is read again for the next statement. When more statements of the batch were
   * already sent (the server runs them regardless), the client could not tell what ran: the
   * session ends instead. `executesAllowed`: how many Executes may follow the head in the batch.
   */
  protected withholdResult(h: Expectation | undefined, finding: string, executesAllowed: number): Buffer {
    const message = `gatehouse: the catalog changed during the statement (${finding}); its result was withheld, retry the statement`
    if (h?.record && !h.record.error) h.record.error = { code: CATALOG_MOVED_CODE, message }
    this.backstopRefusal = true
    this.rowMasker = null
    this.copyMasker = null
    this.lazyPlan = null
    this.updateScan()
    this.refreshedFor.clear()
    this.catalog.invalidate()
    this.pendingRefresh = this.refreshCatalog()
    this.log.warn({ session: this.session.id, finding }, 'result withheld: the catalog moved since the snapshot')
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
  protected compileLazy(message: Buffer): void {
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

  protected onCopyOut(h: Expectation | undefined, body: Buffer): void {
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
}
