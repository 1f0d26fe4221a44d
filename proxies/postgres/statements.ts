// Judging SQL for one PostgreSQL session: every statement of a query is classified (proxies/postgres/sql),
// its tables named as the server resolves them through the session's real search_path, and decided
// for every hop of the chain; the query runs only if every statement is allowed. The session state
// the server keeps and the classifier depends on — search_path, SQL-level prepared statements — is
// followed here from the server's own answers (a SET counts once it completed, and is undone when
// its transaction rolls back).

import type { Logger } from 'pino'
import type { Analysis, Catalog, SqlAnalyzer, SqlAction, StatementFacts } from './sql/index.js'
import { moreDangerous, otherFacts, qualify } from './sql/index.js'
import { builtinFunctionClass, type FunctionCatalog, classifyCall, isHarmless, opaqueCasts, opaqueOperators } from './sql/functions.js'
import { effectiveFacts, type InnerSource, type ServerNames, TextNames } from './names.js'
import { effectOf, type StatementEffect } from './effects.js'
import { type ExactPath, exactFrom, followTransaction } from './search-path.js'
import type { MaskObligation } from '../kit/index.js'
import type { Decision, FastPathSession } from '../types.js'

export type { StatementEffect } from './effects.js'
export { effectOf } from './effects.js'

export interface JudgedStatement {
  readonly sql: string
  readonly action: SqlAction
  readonly kind: string
  readonly decision: Decision['effect']
  readonly rules: readonly string[]
  /** The reading verb a write hides behind (COPY, EXPLAIN ANALYZE, a CTE's SELECT…), if any. */
  readonly wrapper?: string | null
  /** Calls that are not known-harmless built-ins. */
  readonly sideEffectFunctions?: readonly string[]
  /** For EXECUTE/FETCH/MOVE: the text the server holds for the name, judged as what runs. */
  readonly inner?: { readonly sql: string; readonly source: InnerSource; readonly via: string }
}

export interface Verdict {
  readonly decision: Decision
  /** True when running it cannot change session settings behind the gateway's back (lexicallyInert). */
  readonly inert?: boolean
  readonly statements: readonly JudgedStatement[]
  readonly effects: readonly StatementEffect[]
  /** Per statement, how its results are masked (set by the proxy once the decision allows). */
  readonly masks?: readonly (import('./masking.js').StatementMaskPlan | null)[] | null
}

export class SessionSql {
  /** The paths the session may have outside any transaction: one, unless a savepoint rollback
   * left it unknowable which SETs stood. */
  private base: string[][]
  /** Paths the session may have right now: `base` plus SETs of the open transaction. */
  private candidates: string[][]
  /** Non-local SETs inside the current transaction, in order. */
  private pending: string[][] = []
  private savepointRolledBack = false
  /** qualify() results for the current candidates; cleared whenever they change. */
  private readonly qualified = new Map<string, string[]>()
  private inTransaction = false
  /**
   * The search_path as the open transaction block has it, exactly: the path in effect now, the one
   * a COMMIT would keep (SET LOCAL changes only the first), and both as each savepoint saw them, so
   * a ROLLBACK TO restores the path it restores on the server. Null when that cannot be told (the
   * session starts a transaction with several possible paths, a ROLLBACK TO names a savepoint not
   * seen, … AND CHAIN): then every candidate path counts.
   */
  private exact: ExactPath | null
  /** Functions and operators this session created (or renamed to) since its catalog was read:
   *  they may shadow a built-in's name just like those in the catalog. */
  private readonly createdRoutines = { userFunctions: new Set<string>(), userOperators: new Set<string>() }
  /** Relation names (unqualified) whose catalog entries the statements judged since the last
   *  catalogNames() rest on: views, foreign tables, tables with row-level security, names the
   *  snapshot lacks. */
  private readonly checkNames = new Set<string>()
  /** Decisions by statement shape (decideShape); weak, so shapes the analyzer drops go too. */
  private reuse = new WeakMap<object, { readonly epoch: object; readonly paths: readonly string[][]; readonly decision: Decision }>()

  constructor(
    private readonly analyzer: SqlAnalyzer,
    private readonly session: FastPathSession,
    private readonly initialPath: string[],
    private readonly user: string,
    private readonly catalog: Catalog | null,
    /** The server's own table of prepared statements and cursors for these names (names.ts), or
     * why it cannot be read now. */
    private readonly lookupNames: (names: readonly string[]) => Promise<ServerNames | string>,
    private readonly log: Logger,
    /** Non-built-in functions and operators (null: unknown, so every call is opaque). */
    private readonly functions: FunctionCatalog | null = null,
    /** The definition of a view by qualified name (null: not a view; undefined: the catalog of
     *  views could not be read, so whether it is one, and what it runs, cannot be told). */
    private viewDefinition: ((qualified: string) => RelationCode | null | undefined) | null = null,
  ) {
    this.base = [initialPath]
    this.candidates = [initialPath]
    this.exact = exactFrom(this.base)
  }

  /**
   * `judge` of an analysed text without a promise, for the common case — one statement that is not
   * an EXECUTE — so the proxy's hot path needs no await; null when the text needs `judge`.
   */
  judgeNow(analysis: Analysis, signal: AbortSignal): Verdict | null {
    const stmts = analysis.statements
    if (stmts.length !== 1) return null
    const raw = stmts[0] as StatementFacts
    if (raw.execute !== null || raw.cursor?.op === 'fetch') return null
    const only = this.withCatalog(raw)
    const d = only.lexical !== null ? lexicalDenial(only.lexical) : this.decideShape(analysis.shape ?? null, only, signal)
    return {
      decision: d,
      statements: [judgedOf(only, d)],
      effects: [effectOf(only)],
      inert: lexicallyInert(only),
    }
  }

  /** Classifies and decides a query text (null: the gateway does not know what will run).
   * `approval` only after ProxySession.requestApproval granted this very text (engine/approvals). */
  async judge(
    sql: string | null,
    signal: AbortSignal,
    approval?: { readonly granted: boolean },
    /** `sql` as the analyzer already read it (judgeNow's caller), so it is not parsed twice. */
    analyzed: Analysis | null = null,
  ): Promise<Verdict> {
    const analysis =
      sql === null
        ? { statements: [otherFacts('', 'the statement to execute is not known to the gateway')], error: null }
        : (analyzed ?? this.analyzer.analyze(sql))
    const stmts = analysis.statements
    if (stmts.length === 0) {
      // An empty query: nothing runs; it is still decided (as session housekeeping) and audited.
      const d = await this.decide(
        'sql.session',
        { sql: sql ?? '', kind: 'empty', tables: [], write_tables: [], functions: [], has_where: false, statements: 0 },
        signal,
      )
      return { decision: d, statements: [], effects: [] }
    }
    if (stmts.length === 1 && stmts[0]?.execute === null && stmts[0]?.cursor?.op !== 'fetch') {
      // The common case, without the bookkeeping a multi-statement query needs.
      const only = this.withCatalog(stmts[0])
      const d =
        only.lexical !== null
          ? lexicalDenial(only.lexical)
          : await this.decide(only.action, this.command(only, 1, this.candidates), signal, approval)
      return {
        decision: d,
        statements: [judgedOf(only, d)],
        effects: [effectOf(only)],
        inert: lexicallyInert(only),
      }
    }
    const judged: JudgedStatement[] = []
    const effects: StatementEffect[] = []
    const masks: MaskObligation[] = []
    const rules: string[] = []
    let denial: Decision | null = null
    let hold: Decision | null = null
    let policy = ''
    let inert = true
    // Later statements of one query run in the session as the earlier ones leave it: a SET
    // search_path or a PREPARE earlier in the text counts for the statements after it.
    let paths: readonly (readonly string[])[] = this.candidates
    const names = new TextNames(stmts, this.lookupNames)
    for (const raw of stmts) {
      const named = raw.execute !== null || raw.cursor?.op === 'fetch' ? await names.resolve(raw, this.analyzer) : null
      const facts = this.withCatalog(named === null ? raw : effectiveFacts(raw, named))
      const via = raw.execute !== null ? 'execute' : raw.kind
      const inner =
        named?.facts && named.text !== null && named.source !== null ? { sql: named.text, source: named.source, via } : undefined
      const command = this.command(facts, stmts.length, paths, inner)
      const eff = effectOf(raw)
      if (eff.searchPath)
        paths = unique([...(eff.searchPath.local ? paths : []), eff.searchPath.path === 'initial' ? this.initialPath : eff.searchPath.path])
      // A routine created earlier in the text may shadow a built-in for the statements after it.
      if (eff.createsRoutine) this.noteCreatedRoutine(eff.createsRoutine.kind, eff.createsRoutine.name)
      names.after(raw, lexicallyInert(facts))
      const d = facts.lexical !== null ? lexicalDenial(facts.lexical) : await this.decide(facts.action, command, signal, approval)
      inert &&= lexicallyInert(facts)
      policy = d.policy
      judged.push({ ...judgedOf(facts, d), ...(inner ? { inner } : {}) })
      effects.push(eff)
      rules.push(...d.rules)
      if (d.effect === 'deny') denial ??= d
      else if (d.effect === 'hold') hold ??= d
      else masks.push(...d.mask)
    }
    const decision: Decision = denial ?? hold ?? { effect: 'allow', rules: [...new Set(rules)], mask: masks, policy }
    return { decision, statements: judged, effects, inert }
  }

  /**
   * decideNow for one statement, reusing the decision of an earlier statement of the same shape
   * while the engine's epoch (bundle and second) and the session's search paths are unchanged: the
   * two inputs then differ only in `command.sql`, which the epoch says the policy does not read.
   * Everything else in the command (action, kind, tables as qualified here, functions, has_where)
   * comes from the shape's facts. This skips building the command and the engine's input keys.
   */
  private decideShape(shape: object | null, only: StatementFacts, signal: AbortSignal): Decision {
    const epoch = shape !== null && !signal.aborted ? (this.session.decisionEpoch() ?? null) : null
    if (epoch !== null) {
      const hit = this.reuse.get(shape as object)
      if (hit !== undefined && hit.epoch === epoch && hit.paths === this.candidates) return hit.decision
    }
    const d = this.decideNow(only.action, this.command(only, 1, this.candidates), signal)
    // Kept only when the second did not turn during the decision (the input's time is that second)
    // and the engine answered: a failure is not an answer to reuse.
    if (epoch !== null && this.session.decisionEpoch() === epoch && !isFailure(d)) {
      this.reuse.set(shape as object, { epoch, paths: this.candidates, decision: d })
    }
    return d
  }

  private decideNow(action: string, command: Record<string, unknown>, signal: AbortSignal): Decision {
    try {
      return this.session.decideNow(action, command, signal)
    } catch (err) {
      return this.evaluationFailed(err)
    }
  }

  private async decide(
    action: string,
    command: Record<string, unknown>,
    signal: AbortSignal,
    approval?: { readonly granted: boolean },
  ): Promise<Decision> {
    try {
      return await this.session.decide(action, command, signal, approval)
    } catch (err) {
      return this.evaluationFailed(err)
    }
  }

  private evaluationFailed(err: unknown): Decision {
    this.log.error({ err: String(err), session: this.session.id }, 'policy evaluation failed')
    return {
      effect: 'deny',
      rules: ['gatehouse:evaluation-failed'],
      reason: 'the policy could not be evaluated',
      reasons: [{ rule: 'gatehouse:evaluation-failed', reason: 'the policy could not be evaluated', hop: '' }],
      policy: 'error',
    }
  }

  /**
   * The facts with the server's catalog applied: a call of a name that some non-built-in function
   * also carries, or an operator that is not a built-in, is opaque (it may run anything), and a
   * statement that reads becomes a write. The analyzer's facts (name-based) are kept otherwise.
   */
  withCatalog(f: StatementFacts): StatementFacts {
    const viewAction: { action: SqlAction | null; view: string } = { action: null, view: '' }
    const viaViews = this.viewDefinition !== null && f.tables.length > 0 ? this.viewCode(f.tables, 0, new Set(), viewAction) : null
    const checked = this.withCalls(f, viaViews)
    if (viewAction.action === null || moreDangerous(checked.action, viewAction.action) === checked.action) return checked
    // A view whose definition locks rows (FOR UPDATE/SHARE) or reads other sessions' SQL text
    // (pg_stat_activity) does so for whoever reads it: the statement is what it runs.
    return {
      ...checked,
      action: moreDangerous(checked.action, viewAction.action),
      note: `reads view ${viewAction.view}, whose definition is ${viewAction.action}`,
    }
  }

  private withCalls(f: StatementFacts, viaViews: string[] | null): StatementFacts {
    if (f.calls.length === 0 && f.operators.length === 0 && f.castTypes.length === 0 && viaViews === null) return f
    const added: string[] = []
    // Reading a view runs its definition: its calls count as the statement's own.
    if (viaViews !== null) for (const label of viaViews) if (!added.includes(label)) added.push(label)
    for (const c of f.calls) {
      const label = c.schema === null ? c.name : `${c.schema}.${c.name}`
      if (f.sideEffectFunctions.includes(label)) continue
      const shadowed = this.createdRoutines.userFunctions.has(c.name) || this.functions === null
      const cls = classifyCall(c, this.functions)
      // set_config of a constant setting is judged as SET by the analyzer (computed: sql.other).
      if (shadowed || !(isHarmless(cls) || cls === 'setting')) added.push(label)
    }
    const created = this.createdRoutines
    for (const op of opaqueOperators(f.operators, this.functions))
      if (!f.sideEffectFunctions.includes(`OPERATOR(${op})`)) added.push(`OPERATOR(${op})`)
    for (const op of f.operators) if (created.userOperators.has(op) && !added.includes(`OPERATOR(${op})`)) added.push(`OPERATOR(${op})`)
    for (const t of opaqueCasts(f.castTypes, this.functions)) added.push(`CAST(${t})`)
    if (added.length === 0) return f
    const sideEffectFunctions = [...new Set([...f.sideEffectFunctions, ...added])].sort()
    const escalate = f.action === 'sql.read' || f.action === 'sql.session'
    return {
      ...f,
      sideEffectFunctions,
      action: escalate ? 'sql.write' : f.action,
      note: escalate ? `calls ${sideEffectFunctions.join(', ')}, which may change state (not a known-harmless built-in)` : f.note,
    }
  }

  /**
   * The calls that are not harmless in the definitions of the views among `tables` (and of the
   * views those read, to a depth of 16), in the row-level security policies that apply to them,
   * and foreign tables among them, as labels; null when there are none. A view definition or a
   * policy that cannot be analysed counts as opaque.
   */
  private viewCode(
    tables: StatementFacts['tables'],
    depth: number,
    seen: Set<string>,
    worst: { action: SqlAction | null; view: string },
  ): string[] | null {
    const lookup = this.viewDefinition
    if (lookup === null) return null
    let out: string[] | null = null
    const add = (label: string): void => {
      out ??= []
      if (!out.includes(label)) out.push(label)
    }
    for (const r of tables) {
      const names = r.schema !== null ? [`${r.schema}.${r.name}`] : this.qualifiedCached(r)
      for (const name of names) {
        if (seen.has(name)) continue
        seen.add(name)
        const code = lookup(name)
        if (code === null) continue
        // The decision rests on this relation's catalog entry (or on its absence): the caller
        // checks it against the server before trusting the decision (catalogNames).
        if (this.checkNames.size < 1000) this.checkNames.add(name.slice(name.indexOf('.') + 1))
        if (code !== undefined && code.absent === true) continue
        // Unknown is not harmless: a relation that may be a view may run anything its definition
        // calls, so it counts as opaque code (a read becomes a write).
        if (code === undefined) {
          add(`VIEW(${name})`)
          continue
        }
        // A foreign table runs whatever its wrapper does (a query on another server, a program
        // the server starts): remote code, like dblink.
        if (code.foreign === true) add(`FOREIGN TABLE(${name})`)
        // Row-level security policies run for whoever the server applies them to: their calls
        // are the statement's own, like a view's.
        if (code.policies !== undefined) {
          for (const expr of code.policies) {
            if (depth >= 16) {
              add(`POLICY(${name})`)
              break
            }
            const a = this.analyzer.analyze(`SELECT (${expr}) FROM ${quoteName(name)}`)
            const p = a.statements[0]
            if (a.error !== null || a.statements.length !== 1 || !p) {
              add(`POLICY(${name})`)
              continue
            }
            for (const label of this.withCatalogOf(p).sideEffectFunctions) add(label)
            for (const label of this.viewCode(p.tables, depth + 1, seen, worst) ?? []) add(label)
          }
        }
        const def = code.definition
        if (def === null) continue
        if (depth >= 16) {
          add(`VIEW(${name})`)
          continue
        }
        const a = this.analyzer.analyze(def)
        const v = a.statements[0]
        if (a.error !== null || a.statements.length !== 1 || !v) {
          add(`VIEW(${name})`)
          continue
        }
        const checked = this.withCatalogOf(v)
        for (const label of checked.sideEffectFunctions) add(label)
        // The definition's own action (row locks: sql.write; other sessions' SQL: sql.admin).
        if (v.action !== 'sql.read' && (worst.action === null || moreDangerous(worst.action, v.action) !== worst.action)) {
          worst.action = v.action
          worst.view = name
        }
        for (const label of this.viewCode(v.tables, depth + 1, seen, worst) ?? []) add(label)
      }
    }
    return out
  }

  /** withCatalog without views (a view's own calls, against the catalog). */
  private withCatalogOf(f: StatementFacts): StatementFacts {
    const lookup = this.viewDefinition
    this.viewDefinition = null
    try {
      return this.withCatalog(f)
    } finally {
      this.viewDefinition = lookup
    }
  }

  /** The relation names collected since the last call (see checkNames), sorted; the set is emptied. */
  catalogNames(): string[] {
    const out = [...this.checkNames].sort()
    this.checkNames.clear()
    return out
  }

  /** The catalog snapshot was read again: decisions remembered by shape rest on the old one. */
  catalogChanged(): void {
    this.reuse = new WeakMap()
  }

  /** A function or operator this session created: its name may shadow a built-in from now on. */
  noteCreatedRoutine(kind: 'function' | 'operator', name: string): void {
    const set = kind === 'function' ? this.createdRoutines.userFunctions : this.createdRoutines.userOperators
    if (set.has(name)) return
    set.add(name)
    this.reuse = new WeakMap()
  }

  private command(
    f: StatementFacts,
    count: number,
    paths: readonly (readonly string[])[],
    inner?: { readonly sql: string; readonly source: InnerSource; readonly via: string },
  ): Record<string, unknown> {
    const q = (list: StatementFacts['tables']): string[] => {
      if (list.length === 0) return []
      if (list.length === 1 && paths === this.candidates) return this.qualifiedCached(list[0] as StatementFacts['tables'][number])
      return [...new Set(list.flatMap((r) => qualify(r, paths, this.user, this.catalog)))]
    }
    return {
      sql: f.sql,
      kind: f.kind,
      tables: q(f.tables),
      write_tables: q(f.writeTables),
      functions: f.functions,
      side_effect_functions: f.sideEffectFunctions,
      has_where: f.hasWhere,
      statements: count,
      ...(f.wrapper !== null ? { wrapper: f.wrapper } : {}),
      ...(f.writes.length > 0
        ? {
            writes: f.writes.map((w) => ({
              kind: w.kind,
              table: w.table ? (q([w.table])[0] ?? null) : null,
              has_where: w.hasWhere,
            })),
          }
        : {}),
      ...(f.program ? { program: true } : {}),
      ...(f.note ? { note: f.note } : {}),
      ...(inner ? { inner_sql: inner.sql, via: inner.via } : {}),
    }
  }

  /** Qualified names under the session's current paths, remembered until the paths change. */
  private qualifiedCached(r: StatementFacts['tables'][number]): string[] {
    const key = r.schema === null ? r.name : `${r.schema}\u0000${r.name}`
    let v = this.qualified.get(key)
    if (!v) {
      v = qualify(r, this.candidates, this.user, this.catalog)
      if (this.qualified.size > 1000) this.qualified.clear()
      this.qualified.set(key, v)
    }
    return v
  }

  /** The search paths the session may have right now (more than one only after a savepoint rollback). */
  currentPaths(): readonly (readonly string[])[] {
    return this.candidates
  }

  // ---- following the server's session state --------------------------------------------------

  /** A statement completed: its SET of search_path (or a RESET) takes effect, pending its transaction. */
  applySearchPath(e: NonNullable<StatementEffect['searchPath']>): void {
    const path = e.path === 'initial' ? this.initialPath : e.path
    if (!e.local) this.pending.push(path)
    if (this.exact) {
      this.exact.current = path
      if (!e.local) this.exact.kept = path
    }
    // Until the ReadyForQuery that says whether a transaction block is open, the SET may still be
    // undone with its implicit transaction: both paths count.
    if (this.inTransaction && this.exact) this.setCandidates([path])
    else this.addCandidate(path)
  }

  /**
   * A transaction statement completed with this command tag: COMMIT (its tag is ROLLBACK when the
   * block had failed), ROLLBACK, PREPARE TRANSACTION, SAVEPOINT, RELEASE, ROLLBACK TO, each also
   * … AND CHAIN. The server's own rules for settings: a COMMIT keeps the SETs, a ROLLBACK undoes
   * them, a ROLLBACK TO restores what the savepoint saw, SET LOCAL ends with its block.
   */
  applyTransaction(t: NonNullable<StatementEffect['transaction']>, tag: string): void {
    if (!this.exact) return
    if (!followTransaction(this.exact, t, tag)) this.exact = null
    else if (this.inTransaction) this.setCandidates([this.exact.current])
  }

  private setCandidates(paths: string[][]): void {
    if (paths.length === this.candidates.length && paths.every((p, i) => sameArr(p, this.candidates[i] as string[]))) return
    this.candidates = paths
    this.qualified.clear()
  }

  private addCandidate(path: string[]): void {
    this.candidates = unique([...this.candidates, path])
    this.qualified.clear()
  }

  /**
   * ReadyForQuery: `status` is I (idle), T (in a transaction) or E (failed transaction). At idle,
   * the transaction's SETs stand if it committed without error, and are undone otherwise.
   */
  onReadyForQuery(status: number, hadError: boolean, lastTag: string | null): void {
    if (status !== 0x49) {
      if (this.inTransaction && lastTag === 'ROLLBACK') this.savepointRolledBack = true
      this.inTransaction = true
      if (this.exact) this.setCandidates([this.exact.current])
      return
    }
    const committed = !hadError && lastTag !== 'ROLLBACK'
    if (this.exact) {
      // Transaction statements already moved `start`; an error undoes the implicit transaction.
      const stands = hadError ? this.exact.start : this.exact.kept
      if (this.base.length !== 1 || !sameArr(this.base[0] as string[], stands)) this.base = [stands]
    } else if (committed && this.pending.length > 0) {
      // After ROLLBACK TO SAVEPOINT any of the SETs may or may not stand: keep every possibility.
      this.base = this.savepointRolledBack ? unique([...this.base, ...this.pending]) : [this.pending[this.pending.length - 1] as string[]]
    }
    if (this.candidates !== this.base) this.qualified.clear()
    this.candidates = this.base
    this.pending = []
    this.inTransaction = false
    this.savepointRolledBack = false
    this.exact = exactFrom(this.base)
  }
}

/** Distinct paths. Never truncated: dropping one would lose a table the statement may read. Only
 * a session that SETs many different paths inside rolled-back savepoints grows it, at its own cost. */
function unique(list: readonly (readonly string[])[]): string[][] {
  const out: string[][] = []
  for (const p of list) if (!out.some((c) => sameArr(c, p))) out.push([...p])
  return out
}

function sameArr(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i])
}

function judgedOf(f: StatementFacts, d: Decision): JudgedStatement {
  return {
    sql: f.sql,
    action: f.action,
    kind: f.kind,
    decision: d.effect,
    rules: d.rules,
    wrapper: f.wrapper,
    sideEffectFunctions: f.sideEffectFunctions,
  }
}

/** A statement that could change how the server reads SQL (proxies/postgres/sql/lexical.ts) is refused
 * whatever the policy says: the gateway could no longer judge what the server runs. */
export function lexicalDenial(reason: string): Decision {
  return {
    effect: 'deny',
    rules: [LEXICAL_RULE],
    reason,
    reasons: [{ rule: LEXICAL_RULE, reason, hop: '' }],
    policy: 'gatehouse',
  }
}

export const LEXICAL_RULE = 'gatehouse:lexical-setting'

/**
 * Whether running the statement leaves the session's settings as they were: a read or session
 * statement that calls only reviewed harmless built-ins. Anything else (a write can fire a
 * trigger, a user function can call set_config) may change how the server reads the next text,
 * which the gateway learns only from the server's ParameterStatus at ReadyForQuery.
 */
export function lexicallyInert(f: StatementFacts): boolean {
  if (f.action !== 'sql.read' && f.action !== 'sql.session') return false
  if (f.execute !== null || f.cursor?.op === 'fetch') return false
  for (const fn of f.functions) if (!isHarmless(builtinFunctionClass(fn))) return false
  return true
}

/** A decision that reports an evaluation failure rather than the policy's answer. */
function isFailure(d: Decision): boolean {
  return d.policy === 'error' || d.rules.includes('policy-error')
}

/** What reading a relation runs besides its rows: a view's definition, a foreign table's wrapper,
 *  row-level security policies (lineage-types.ts RelationInfo). */
export interface RelationCode {
  readonly definition: string | null
  readonly foreign?: boolean
  readonly policies?: readonly string[]
  /** Not in the snapshot (created after it was read, or not there at all): no code known. */
  readonly absent?: boolean
}

/** `schema.name` (from the catalog, unquoted) as SQL. */
function quoteName(qualified: string): string {
  const dot = qualified.indexOf('.')
  const q = (n: string): string => `"${n.replace(/"/g, '""')}"`
  return dot < 0 ? q(qualified) : `${q(qualified.slice(0, dot))}.${q(qualified.slice(dot + 1))}`
}
