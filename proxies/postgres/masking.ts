// Masking plans for one PostgreSQL session's statements (applied to results: result-masking.ts).
//
// When a decision carries mask obligations, every statement is traced to the table columns its
// output values come from (proxies/postgres/sql/lineage.ts: through aliases, expressions, subqueries, CTEs,
// views, cursors, prepared statements), and each output column gets an action: keep, mask with the
// strictest matching rule (projected as is: the rule's strategy; derived: redacted), or run the value
// detectors. The plan is fixed before the statement is forwarded; the result's RowDescription then
// gives the types and formats the row rewriter needs. What lineage cannot establish is refused (or,
// when masking.yaml says `unknown_lineage: mask`, every output column is redacted), and statements
// that would copy a masked column somewhere else are refused: a write launders as well as a read.

import type { CopyFormat } from './copy-masker.js'
import type { ColumnAction } from './datarow-masker.js'
import { analyzeLineage, type LineageCatalog, type OutputLineage, type RelationInfo, type StatementLineage } from './sql/lineage.js'
import { classifyCall, isHarmless } from './sql/functions.js'
import type { CatalogCheck } from './sql/lineage-catalog.js'
import { columnMatches, type MaskObligation } from '../kit/index.js'

export const KEEP: ColumnAction = { action: 'keep' }

/** Strictest first: null and redact reveal nothing, hash_session reveals equality within one
 *  session, hash equality across sessions, partial reveals characters. */
const STRICTNESS: Record<MaskObligation['strategy'], number> = { null: 0, redact: 1, hash_session: 2, hash: 3, partial: 4 }

/** One output column of a planned statement. */
export interface OutputPlan {
  readonly name: string
  readonly mask: ColumnAction
  /** The one base column projected as is (`schema.table.column`), if any. */
  readonly direct?: string
  /** `*` over a relation the catalog does not know: one or more columns, named by RowDescription. */
  readonly unknownStar?: string
}

/** How the results of one statement are masked. */
export interface StatementMaskPlan {
  /** Output columns in order; null when lineage says the statement returns no rows. */
  readonly outputs: readonly OutputPlan[] | null
  /** What a column gets when RowDescription does not match the plan (fail closed). */
  readonly fallback: ColumnAction
  readonly detectors: readonly string[]
  /** Server errors and notices may quote values of masked columns: replace their text. */
  readonly scrubErrors: boolean
  readonly copy: CopyFormat | null
  /** The obligations, for columns named only at RowDescription time. */
  readonly obligations: readonly MaskObligation[]
  /** Whether any row needs rewriting (false: rows stream untouched). */
  readonly active: boolean
  /** For the audit event: which output columns are masked, by which rule. */
  readonly masked: readonly { readonly column: string; readonly index: number; readonly rule: string; readonly strategy: string }[]
}

export type MaskVerdict = (
  | { readonly ok: true; readonly plans: readonly (StatementMaskPlan | null)[] }
  | { readonly ok: false; readonly rule: string; readonly reason: string }
) & {
  /** Relations the statement reads that the catalog snapshot does not know (created after it). */
  readonly unknownRelations: readonly string[]
  /** What to ask the server before the verdict may be trusted (the snapshot could be older than
   *  the statement); null when the statement touches no masked relation, view or unknown name. */
  readonly check: CatalogCheck | null
}

export interface MaskOptions {
  readonly strictPredicates: boolean
  readonly unknownLineage: 'refuse' | 'mask'
}

const DEFAULT_OPTIONS: MaskOptions = { strictPredicates: false, unknownLineage: 'refuse' }

/** The text the server holds for a name a statement reaches (names.ts), and where it was read. */
export interface HeldText {
  readonly sql: string
  readonly source: string
}

/** Per-session masking state: the lineage of cursors and prepared statements, by name. */
export class SessionMasking {
  private readonly cursors = new Map<string, StatementLineage>()
  /** With the catalog they were analyzed on: the server plans a prepared statement again when a
   *  relation it reads changes, so a newer catalog means analyzing its text again. */
  private readonly prepared = new Map<string, { lineage: StatementLineage; catalog: LineageCatalog | null }>()
  private readonly lineageCache = new Map<string, StatementLineage[]>()
  /** Plain statements' lineage by shape (the analyzer's cached Analysis object stands for it). */
  private shapeLineage = new WeakMap<object, StatementLineage[]>()
  /** The last plan of a plain statement's lineage, with what it was planned under. */
  private readonly planMemo = new WeakMap<
    readonly StatementLineage[],
    { mask: readonly MaskObligation[]; opts: MaskOptions | undefined; catalog: LineageCatalog; verdict: MaskVerdict }
  >()
  private cachedFor: LineageCatalog | null = null
  /** Functions and aggregates this session created or renamed: user-defined whatever a catalog
   *  snapshot says (the snapshot is read on another connection and cannot see them uncommitted). */
  private readonly defined = new Set<string>()
  private withDefined: { base: LineageCatalog; size: number; catalog: LineageCatalog } | null = null

  constructor(
    private readonly catalog: () => LineageCatalog | null,
    /** The connection's detector setting: null = masking.yaml's list, else this list. */
    private readonly connectionDetectors: readonly string[] | null,
  ) {}

  /** Plans the masking of a query text (one plan per statement), or refuses it. */
  plan(
    sql: string,
    mask: readonly MaskObligation[],
    opts: MaskOptions | undefined,
    /** Per statement of `sql`, for EXECUTE/FETCH/MOVE: the text the server holds for the name
     *  (names.ts), which the statement was judged as; null where there is none. */
    held: readonly (HeldText | null)[] = [],
    /** The classifier's cached analysis of the text's shape (SqlAnalyzer), when it has one. */
    shape: object | null = null,
  ): MaskVerdict {
    const options = opts ?? DEFAULT_OPTIONS
    const catalog = this.sessionCatalog(this.catalog())
    // A plain statement's plan is a function of its shape's lineage, the obligations, the options
    // and the catalog: the same objects give the same plan, which is then not worked out again.
    const plain = shape !== null && catalog !== null && !held.some((h) => h !== null) ? this.shapeLineage.get(shape) : undefined
    if (plain !== undefined) {
      const m = this.planMemo.get(plain)
      if (m !== undefined && m.mask === mask && m.opts === opts && m.catalog === catalog) return m.verdict
    }
    const verdict = this.planFresh(sql, mask, options, held, shape, catalog)
    if (plain !== undefined && catalog !== null) this.planMemo.set(plain, { mask, opts, catalog, verdict })
    return verdict
  }

  private planFresh(
    sql: string,
    mask: readonly MaskObligation[],
    options: MaskOptions,
    held: readonly (HeldText | null)[],
    shape: object | null,
    catalog: LineageCatalog | null,
  ): MaskVerdict {
    let lineages: StatementLineage[]
    if (catalog === null) lineages = [unresolvedLineage('the gateway could not read the catalog of this connection')]
    else {
      try {
        lineages = this.lineage(sql, catalog, held.some((h) => h !== null) ? null : shape)
      } catch (err) {
        lineages = [unresolvedLineage(`lineage analysis failed: ${err instanceof Error ? err.message : String(err)}`)]
      }
    }
    const columnRules = mask.filter((m) => m.detector === undefined)
    let detectors = mask.filter((m) => m.detector !== undefined).map((m) => m.detector as string)
    if (this.connectionDetectors !== null) detectors = detectors.filter((d) => this.connectionDetectors?.includes(d))
    const plans: (StatementMaskPlan | null)[] = []
    const unknownRelations = lineages.flatMap((l) => l.relations.filter((r) => !known(r, catalog)))
    // FETCH and EXECUTE take the lineage remembered at DECLARE / PREPARE.
    const effective: StatementLineage[] = []
    // A held text per statement only when the two splits of the query agree; otherwise a name's
    // statement cannot be matched to its text and is unresolved.
    const heldFor = (i: number): HeldText | null | 'mismatch' => {
      if (!held.some((h) => h !== null)) return null
      return held.length === lineages.length ? (held[i] ?? null) : 'mismatch'
    }
    for (const [i, raw] of lineages.entries()) {
      for (const f of raw.definesFunctions ?? []) this.defined.add(f)
      // DECLARE and PREPARE remember what the cursor / statement will return; FETCH and EXECUTE use it.
      if (raw.declare !== undefined) this.cursors.set(raw.declare.toLowerCase(), raw)
      if (raw.prepare !== undefined) this.prepared.set(raw.prepare.toLowerCase(), { lineage: raw, catalog })
      let l: StatementLineage = raw
      const h = raw.fetch !== undefined || raw.execute !== undefined ? heldFor(i) : null
      if (h === 'mismatch') {
        l = unresolvedLineage('the statement behind a server-side name could not be matched to its text')
      } else if (h !== null && h.source !== 'this query') {
        // Masked as what the server runs for the name, read from the server itself: never from a
        // lineage remembered at a DECLARE or PREPARE the name may no longer stand for.
        l =
          catalog === null
            ? unresolvedLineage('the gateway could not read the catalog of this connection')
            : this.heldLineage(raw, h, catalog)
      } else if (raw.fetch !== undefined) {
        // An open cursor keeps the plan it was declared with: its DECLARE-time lineage holds.
        const c = this.cursors.get(raw.fetch.toLowerCase())
        l = c
          ? { ...c, declare: undefined, copy: undefined }
          : unresolvedLineage(`cursor "${raw.fetch}" was not declared through the gateway`)
      } else if (raw.execute !== undefined) {
        const p = this.preparedLineage(raw.execute.toLowerCase(), catalog)
        l = p ? { ...p, prepare: undefined } : unresolvedLineage(`prepared statement "${raw.execute}" was not prepared through the gateway`)
      }
      effective.push(l)
    }
    const check = columnRules.length > 0 && catalog !== null ? catalogCheck(effective, columnRules, catalog) : null
    for (const [i, l] of effective.entries()) {
      const raw = lineages[i] as StatementLineage
      const verdict = planOne(l, columnRules, detectors, options, catalog)
      if (!verdict.ok) return { ...verdict, unknownRelations, check }
      // A DECLARE or PREPARE returns no rows itself. A DECLARE … WITH HOLD outside a block runs its
      // query at once (the cursor is materialized at the statement's implicit commit): its errors
      // are the query's.
      if (raw.prepare !== undefined) plans.push(null)
      else if (raw.declare !== undefined)
        plans.push(verdict.plan?.scrubErrors ? { ...verdict.plan, outputs: null, active: false, masked: [] } : null)
      else plans.push(verdict.plan)
    }
    return { ok: true, plans, unknownRelations, check }
  }

  /**
   * The lineage of the statement a FETCH/MOVE or EXECUTE runs, from the text the server holds for
   * the name: the DECLARE or PREPARE of that name in it, or, for a protocol-level portal or
   * statement, its single statement. Anything else is unresolved (refused).
   */
  private heldLineage(raw: StatementLineage, h: HeldText, catalog: LineageCatalog): StatementLineage {
    const cursor = raw.fetch !== undefined
    const name = (cursor ? raw.fetch : raw.execute) ?? ''
    let all: StatementLineage[]
    try {
      all = this.lineage(h.sql, catalog)
    } catch (err) {
      return unresolvedLineage(`lineage analysis failed: ${err instanceof Error ? err.message : String(err)}`)
    }
    const makers = all.filter((x) => (cursor ? x.declare : x.prepare) !== undefined)
    const same = makers.filter((x) => (cursor ? x.declare : x.prepare) === name)
    if (same.length === 1) return { ...(same[0] as StatementLineage), declare: undefined, prepare: undefined, copy: undefined }
    if (makers.length === 0 && all.length === 1) return all[0] as StatementLineage
    return unresolvedLineage(`the server's text for ${JSON.stringify(name)} does not say which statement it runs`)
  }

  /** A prepared statement's lineage on the current catalog (null: not prepared through the gateway). */
  private preparedLineage(name: string, catalog: LineageCatalog | null): StatementLineage | null {
    const p = this.prepared.get(name)
    if (!p) return null
    if (p.catalog === catalog || catalog === null) return p.lineage
    let again: StatementLineage | undefined
    try {
      again = analyzeLineage(p.lineage.sql, catalog).find((x) => x.prepare?.toLowerCase() === name)
    } catch {
      again = undefined
    }
    const lineage = again ?? unresolvedLineage(`prepared statement "${name}" could not be analyzed again`)
    this.prepared.set(name, { lineage, catalog })
    return lineage
  }

  /** The catalog with this session's own functions counted as user-defined. */
  private sessionCatalog(base: LineageCatalog | null): LineageCatalog | null {
    if (base === null || this.defined.size === 0) return base
    if (this.withDefined?.base !== base || this.withDefined.size !== this.defined.size) {
      const defined = new Set(this.defined)
      const wrap = (b: LineageCatalog): LineageCatalog => ({
        relation: (sc, n) => b.relation(sc, n),
        isUserFunction: (n) => defined.has(n) || b.isUserFunction(n),
        isUserOperator: (n) => b.isUserOperator?.(n) === true,
        withSearchPath: (path) => wrap(b.withSearchPath ? b.withSearchPath(path) : b),
        relationsNamed: (n) => b.relationsNamed?.(n) ?? [],
        userCasts: () => b.userCasts?.() ?? [],
      })
      this.withDefined = { base, size: defined.size, catalog: wrap(base) }
    }
    return this.withDefined.catalog
  }

  /**
   * Lineage of a text, remembered by the text and, for a plain statement, by its shape: texts of
   * one shape differ only in literal values, and the lineage of a statement that names no
   * server-side object (PREPARE, DECLARE, EXECUTE, FETCH), defines nothing (functions, DDL) and
   * copies nothing reads the same relations and columns whatever its literals (a function that
   * reads a table named in a string is opaque whatever the string says). So a statement run with
   * ever new values (`WHERE id = 42`) is analyzed once, not once per value.
   */
  private lineage(sql: string, catalog: LineageCatalog, shape: object | null = null): StatementLineage[] {
    if (catalog !== this.cachedFor) {
      this.lineageCache.clear()
      this.shapeLineage = new WeakMap()
      this.cachedFor = catalog
    }
    if (shape !== null) {
      const byShape = this.shapeLineage.get(shape)
      if (byShape) return byShape
    }
    const hit = this.lineageCache.get(sql)
    if (hit) return hit
    const l = analyzeLineage(sql, catalog)
    if (this.lineageCache.size > 500) this.lineageCache.clear()
    this.lineageCache.set(sql, l)
    if (shape !== null && l.length === 1 && l.every(plainLineage)) this.shapeLineage.set(shape, l)
    return l
  }
}

/** A relation the lineage names (`schema.name`, `?.name` when the schema is unknown) in the catalog. */
function lookup(rel: string, catalog: LineageCatalog | null): RelationInfo | null {
  const dot = rel.indexOf('.')
  if (dot < 0 || rel.startsWith('?.')) return null
  return catalog?.relation(rel.slice(0, dot), rel.slice(dot + 1)) ?? null
}

/**
 * The names whose catalog entries the verdict rests on, when the statement touches a relation with
 * masked columns, a view (its definition may have changed to reach one), a relation the snapshot
 * does not know, or passes a masked value to a function (a user function of that name may have
 * appeared). A statement over base tables without masked columns only is not checked.
 */
function catalogCheck(
  lineages: readonly StatementLineage[],
  rules: readonly MaskObligation[],
  catalog: LineageCatalog,
): CatalogCheck | null {
  const relations = new Set<string>()
  const functions = new Set<string>()
  let needed = false
  for (const l of lineages) {
    for (const r of l.relations) {
      const info = lookup(r, catalog)
      relations.add(info ? info.name : r.slice(r.indexOf('.') + 1))
      if (!info || info.kind === 'view' || relationClassified(r, rules, catalog)) needed = true
    }
    for (const c of l.calls ?? []) {
      if (c.schema !== null || matching(c.sources, rules).length === 0) continue
      functions.add(c.name)
      needed = true
    }
  }
  return needed ? { relations: [...relations].sort(), functions: [...functions].sort() } : null
}

/** A lineage that holds for every text of its shape (see SessionMasking.lineage). */
function plainLineage(l: StatementLineage): boolean {
  return (
    l.unresolved === null &&
    l.declare === undefined &&
    l.fetch === undefined &&
    l.prepare === undefined &&
    l.execute === undefined &&
    l.copy === undefined &&
    l.copyEncoding === undefined &&
    (l.definesFunctions?.length ?? 0) === 0 &&
    (l.ddl?.length ?? 0) === 0
  )
}

function known(rel: string, catalog: LineageCatalog | null): boolean {
  return lookup(rel, catalog) !== null
}

function unresolvedLineage(reason: string): StatementLineage {
  return { sql: '', outputs: null, relations: [], predicates: [], writes: [], opaqueCalls: [], unresolved: reason }
}

export function matching(sources: readonly string[], rules: readonly MaskObligation[]): MaskObligation[] {
  const out: MaskObligation[] = []
  for (const r of rules) if (sources.some((s) => columnMatches(r.column, s))) out.push(r)
  return out
}

export function strictest(list: readonly MaskObligation[]): MaskObligation | null {
  let best: MaskObligation | null = null
  for (const m of list) {
    if (
      best === null ||
      STRICTNESS[m.strategy] < STRICTNESS[best.strategy] ||
      (m.strategy === best.strategy && (m.keep ?? 0) < (best.keep ?? 0))
    )
      best = m
  }
  return best
}

/** Whether a relation (schema.name) has a column that one of `rules` masks. */
function relationClassified(rel: string, rules: readonly MaskObligation[], catalog: LineageCatalog | null): boolean {
  const info = lookup(rel, catalog)
  if (!info) return true // unknown: it may have any column
  return info.columns.some((c) => rules.some((r) => columnMatches(r.column, `${info.schema}.${info.name}.${c}`)))
}

function planOne(
  l: StatementLineage,
  rules: readonly MaskObligation[],
  detectors: readonly string[],
  options: MaskOptions,
  catalog: LineageCatalog | null,
): { ok: true; plan: StatementMaskPlan | null } | { ok: false; rule: string; reason: string } {
  const readsClassified =
    rules.length > 0 &&
    (l.relations.some((r) => relationClassified(r, rules, catalog)) || l.outputs?.some((o) => o.opaque !== null) === true)
  // Code the gateway cannot see into (a user-defined function, a builtin that runs SQL) may read a
  // masked column and return or store it anywhere: with column rules in force it is refused, unless
  // masking.yaml chose `unknown_lineage: mask` (its outputs are then redacted).
  if (rules.length > 0 && l.opaqueCalls.length > 0 && options.unknownLineage === 'refuse') {
    return {
      ok: false,
      rule: 'gatehouse:opaque-call',
      reason: `this statement runs code the gateway cannot see into (${l.opaqueCalls.join('; ')}), which could read masked columns; a chain that sees masked columns may not run it`,
    }
  }
  // Writes that copy a masked column elsewhere are refused, whatever the strategy.
  for (const w of l.writes) {
    if (w.opaque !== null && rules.length > 0) {
      return {
        ok: false,
        rule: 'gatehouse:opaque-call',
        reason: `the value written into ${w.target} may carry masked columns (${w.opaque})`,
      }
    }
    const hit = matching(w.sources, rules)[0]
    if (hit) {
      const src = w.sources.find((s) => columnMatches(hit.column, s)) ?? hit.column
      return {
        ok: false,
        rule: hit.rule,
        reason: `${src} is masked for this chain (rule ${hit.rule}); it may not be copied into ${w.target}`,
      }
    }
  }
  // A value written into a hash_session column by a chain that sees it masked could be a guess,
  // compared with the stored values by their tokens in the same session: the strategy's promise
  // is that a masked chain cannot test values, so such writes are refused.
  for (const w of l.writes) {
    const into = rules.find((r) => r.strategy === 'hash_session' && columnMatches(r.column, w.target))
    if (into) {
      return {
        ok: false,
        rule: into.rule,
        reason: `${w.target} is masked for this chain with strategy hash_session (rule ${into.rule}); it may not write into it (a written guess could be compared by its token)`,
      }
    }
  }
  // A masked value passed to a function that is not known to be free of effects can be stored
  // where the caller reads it back (a lock key, a sequence, a large object, a setting…); a timing
  // function turns it into a delay the caller can measure.
  for (const call of l.calls ?? []) {
    const hit = matching(call.sources, rules)[0]
    if (!hit) continue
    const cls = classifyCall(call, null)
    if (isHarmless(cls) && cls !== 'timing') continue
    const src = call.sources.find((x) => columnMatches(hit.column, x)) ?? hit.column
    const fn = call.schema === null ? call.name : `${call.schema}.${call.name}`
    return {
      ok: false,
      rule: hit.rule,
      reason: `${src} is masked for this chain (rule ${hit.rule}); it may not be passed to ${fn}(), which ${
        cls === 'timing' ? 'turns it into a delay' : 'is not known to be free of side effects'
      }`,
    }
  }
  // DDL that attaches an expression or key to stored data evaluates masked values server-side
  // (a failing cast or check, a duplicate key, statistics, an index order): refused, as is DDL
  // that lets code the gateway cannot see run wherever values flow.
  for (const d of l.ddl ?? []) {
    const hit = matching(d.sources, rules)[0]
    if (hit) {
      const src = d.sources.find((x) => columnMatches(hit.column, x)) ?? hit.column
      return {
        ok: false,
        rule: hit.rule,
        reason: `${src} is masked for this chain (rule ${hit.rule}); it may not be used in a ${d.what}`,
      }
    }
    if (d.opaque !== null && rules.length > 0) {
      return {
        ok: false,
        rule: 'gatehouse:opaque-call',
        reason: `${d.what}: ${d.opaque}; a chain that sees masked columns may not create it`,
      }
    }
  }
  if (l.copyEncoding !== undefined && readsClassified) {
    return {
      ok: false,
      rule: 'gatehouse:masking',
      reason: `COPY with ENCODING '${l.copyEncoding}' of a relation with masked columns: masking splits fields in UTF-8; leave the encoding out`,
    }
  }
  if (options.strictPredicates) {
    const hit = matching(l.predicates, rules)[0]
    if (hit) {
      const src = l.predicates.find((s) => columnMatches(hit.column, s)) ?? hit.column
      return {
        ok: false,
        rule: hit.rule,
        reason: `${src} is masked for this chain (rule ${hit.rule}) and strict_predicates forbids conditions on it`,
      }
    }
    const computed = matching(l.computed ?? [], rules)[0]
    if (computed) {
      const src = (l.computed ?? []).find((x) => columnMatches(computed.column, x)) ?? computed.column
      return {
        ok: false,
        rule: computed.rule,
        reason: `${src} is masked for this chain (rule ${computed.rule}) and strict_predicates forbids computing on it (an expression can fail for some values only)`,
      }
    }
  }
  const redactAll: ColumnAction = { action: 'mask', rule: 'gatehouse:unknown-lineage', strategy: 'redact', derived: true }
  if (l.unresolved !== null) {
    if (!readsClassified && l.relations.length > 0 && rules.length > 0) return { ok: true, plan: keepPlan(l, detectors, rules) }
    if (rules.length === 0) return { ok: true, plan: keepPlan(l, detectors, rules) }
    if (options.unknownLineage === 'refuse') {
      return {
        ok: false,
        rule: 'gatehouse:unknown-lineage',
        reason: `the gateway cannot tell which columns this statement returns (${l.unresolved}), and masked columns may be among them`,
      }
    }
    return {
      ok: true,
      plan: {
        outputs: null,
        fallback: redactAll,
        detectors,
        scrubErrors: true,
        copy: copyFormat(l),
        obligations: rules,
        active: true,
        masked: [],
      },
    }
  }
  const masked: { column: string; index: number; rule: string; strategy: string }[] = []
  const outputs: OutputPlan[] | null =
    l.outputs?.map((o, i) => {
      const mask = actionFor(o, rules, detectors)
      if (mask.action === 'mask')
        masked.push({
          column: o.name,
          index: i,
          rule: mask.rule,
          strategy: mask.derived ? (mask.strategy === 'null' ? 'null' : 'redact') : mask.strategy,
        })
      if (o.unknownStar !== undefined) return { name: o.name, mask, unknownStar: o.unknownStar }
      return o.direct !== null ? { name: o.name, mask, direct: o.direct } : { name: o.name, mask }
    }) ?? null
  const copy = copyFormat(l)
  const active = outputs === null ? readsClassified : outputs.some((o) => o.mask.action !== 'keep' || o.unknownStar !== undefined)
  if (l.copy?.format === 'binary' && active) {
    return { ok: false, rule: 'gatehouse:masking', reason: 'COPY in binary format cannot be masked; use the text or csv format' }
  }
  return {
    ok: true,
    plan: {
      outputs,
      fallback: readsClassified ? redactAll : KEEP,
      detectors,
      // DDL on a relation counts as reading it (validating a constraint, building an index).
      scrubErrors: readsClassified,
      copy,
      obligations: rules,
      active: active || readsClassified,
      masked,
    },
  }
}

function keepPlan(l: StatementLineage, detectors: readonly string[], rules: readonly MaskObligation[]): StatementMaskPlan {
  const det: ColumnAction = detectors.length > 0 ? { action: 'detect', detectors } : KEEP
  return {
    outputs: l.outputs?.map((o) => ({ name: o.name, mask: det })) ?? null,
    fallback: det,
    detectors,
    scrubErrors: false,
    copy: copyFormat(l),
    obligations: rules,
    active: detectors.length > 0,
    masked: [],
  }
}

function copyFormat(l: StatementLineage): CopyFormat | null {
  const c = l.copy
  if (!c) return null
  if (c.format === 'binary') return null
  return { format: c.format, delimiter: c.delimiter, null: c.null, quote: c.quote, escape: c.escape, header: c.header }
}

function actionFor(o: OutputLineage, rules: readonly MaskObligation[], detectors: readonly string[]): ColumnAction {
  if (o.opaque !== null && rules.length > 0) {
    // The value may come from anywhere (a user-defined function, a builtin that runs SQL): redact it.
    return { action: 'mask', rule: 'gatehouse:opaque', strategy: 'redact', derived: true }
  }
  const hits = matching(o.sources, rules)
  const m = strictest(hits)
  if (m) {
    // Projected as is (through views too): the rule's own strategy; derived in any way: redacted.
    const direct = o.directVia.some((d) => columnMatches(m.column, d))
    return { action: 'mask', rule: m.rule, strategy: m.strategy, ...(m.keep !== undefined ? { keep: m.keep } : {}), derived: !direct }
  }
  return detectors.length > 0 ? { action: 'detect', detectors } : KEEP
}
