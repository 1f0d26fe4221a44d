// Column lineage for masking: for each statement, which output columns derive from which base
// columns, which columns are read by predicates, and which values flow into stored data. Built on
// the real PostgreSQL grammar (libpg-query, the parser classify.ts loads) and an in-memory catalog.
//
// The rule throughout is conservative: an expression's value derives from the union of everything
// inside it (a generic walk over every node, not a list of node types), so a construct we never
// thought of still carries its taint. What cannot be understood throws Unresolved, and the whole
// statement then reports `unresolved`: the caller fails closed. No catalog I/O happens here.

import { parseSync } from 'libpg-query'
import {
  Acc,
  arr,
  baseLin,
  CLEAR,
  derived,
  fail,
  type Lin,
  nodeType,
  names,
  type Obj,
  obj,
  str,
  stringList,
  Unresolved,
  unionLin,
} from './lineage-ast.js'

export { loadSqlParser } from './classify.js'
import { INERT_STATEMENTS, OPAQUE_BUILTINS, OPAQUE_RELATIONS, SINK_FUNCTIONS } from './lineage-lists.js'
import type {
  LineageCall,
  LineageCatalog,
  LineageDdl,
  LineageWrite,
  OutputLineage,
  RelationInfo,
  StatementLineage,
} from './lineage-types.js'

export type {
  LineageCall,
  LineageCatalog,
  LineageDdl,
  LineageWrite,
  OutputLineage,
  RelationInfo,
  Source,
  StatementLineage,
} from './lineage-types.js'
export { OPAQUE_BUILTINS, SINK_FUNCTIONS } from './lineage-lists.js'

/** Views inside views inside views…: deeper than this is refused rather than followed. */
export const MAX_VIEW_DEPTH = 16
/** Rounds of the recursive-CTE fixpoint; sources only grow, so this is reached only by pathological input. */
const MAX_FIXPOINT_ROUNDS = 32

interface Out {
  readonly name: string
  readonly lin: Lin
  /** `*` over an unknown relation or a function of unknown shape: the caller resolves it. */
  readonly unknownStar?: string
}

/** A column slot of a FROM item, in `*` order. `unknown` marks where an unknown relation's columns go. */
interface Slot {
  readonly name: string
  readonly lin: Lin
  readonly unknown?: string
  /** For an unknown relation: what each column name would derive from if it were a same-named relation. */
  readonly also?: ReadonlyMap<string, Lin>
  readonly spread?: string
}

/** A name a column can be qualified by (a table, alias, CTE, subquery, function, join alias). */
interface Entry {
  readonly refname: string | null
  readonly schema: string | null
  readonly star: readonly Slot[]
  /** Any column name resolves to this (a function returning a row of unknown shape). */
  readonly spread: Lin | null
  /** A catalog table (it has system columns). */
  readonly table?: boolean
}

interface Frame {
  readonly star: readonly Slot[]
  readonly entries: readonly Entry[]
}

interface CteScope {
  readonly map: Map<string, readonly Out[] | 'pending'>
  readonly parent: CteScope | null
}

interface Level {
  readonly frames: readonly Frame[]
  readonly outer: Level | null
  readonly ctes: CteScope | null
  readonly windows?: ReadonlyMap<string, Lin>
  /** Output columns, visible to ORDER BY / GROUP BY / DISTINCT ON by name or position. */
  readonly outs?: readonly Out[]
}

class Ctx {
  /** search_path changed by this statement: its new value, or 'unknown' when computed. */
  pathChange: string | null = null
  readonly relations = new Set<string>()
  readonly predicates = new Set<string>()
  readonly writes: LineageWrite[] = []
  readonly opaqueCalls = new Set<string>()
  readonly calls: LineageCall[] = []
  readonly computed = new Set<string>()
  readonly ddl: LineageDdl[] = []
  readonly defines: string[] = []
  readonly viewCache = new Map<string, readonly Lin[]>()
  readonly viewStack: string[] = []
  /** Relations whose row-level security policies are analysed already (or being analysed). */
  readonly policiesSeen = new Set<string>()

  constructor(readonly catalog: LineageCatalog) {}

  predicate(l: Lin): void {
    for (const s of l.sources) this.predicates.add(s)
    if (l.opaque !== null) this.opaqueCalls.add(l.opaque)
  }
  write(target: string, l: Lin): void {
    this.writes.push({ target, sources: [...l.sources].sort(), opaque: l.opaque })
  }
  attach(what: string, l: Lin): void {
    if (l.opaque !== null) this.opaqueCalls.add(l.opaque)
    this.ddl.push({ what, sources: [...l.sources].sort(), opaque: l.opaque })
  }
}

// ---------------------------------------------------------------------------------------------
// Expressions

function funcOpaque(ctx: Ctx, funcname: unknown): string | null {
  const parts = stringList(funcname)
  // As parsed: unquoted names are already lower-case, a quoted "LOWER" is not the builtin lower.
  const name = parts[parts.length - 1] ?? ''
  const schema = parts.length > 1 ? parts[parts.length - 2] : null
  if (schema !== null && schema !== undefined && schema !== 'pg_catalog') return `function ${parts.join('.')} is not built in`
  if (schema === null && ctx.catalog.isUserFunction(name)) return `function ${name} may be user-defined`
  if (OPAQUE_BUILTINS.has(name)) return `${name} reads data the statement does not show`
  return null
}

function operatorOpaque(ctx: Ctx, opname: unknown): string | null {
  const parts = stringList(opname)
  const name = parts[parts.length - 1] ?? ''
  const schema = parts.length > 1 ? parts[parts.length - 2] : null
  if (schema !== null && schema !== undefined && schema !== 'pg_catalog') return `operator ${parts.join('.')} is not built in`
  if (schema === null && ctx.catalog.isUserOperator?.(name) === true) return `operator ${name} may be user-defined`
  return null
}

/** The value of an expression: a column reference keeps `direct`; anything else is derived. */
function evalExpr(ctx: Ctx, node: unknown, lv: Level): Lin {
  const t = nodeType(node)
  if (t?.[0] === 'ColumnRef') return columnRef(ctx, t[1], lv)
  const acc = new Acc()
  walk(ctx, node, lv, acc)
  const l = acc.lin()
  if (l.sources.size > 0 && l.direct === null && !countOfColumns(t)) {
    for (const s of l.sources) ctx.computed.add(s)
    const casts = ctx.catalog.userCasts?.() ?? []
    if (casts.length > 0) {
      const why = `user-defined casts (${casts.slice(0, 3).join(', ')}) may run on computed values`
      ctx.opaqueCalls.add(why)
      return { ...l, opaque: l.opaque ?? why }
    }
  }
  return l
}

/** `count(*)`, `count(col)`, `count(DISTINCT col)`: counting cannot fail for any value. */
function countOfColumns(t: [string, Obj] | null): boolean {
  if (t?.[0] !== 'FuncCall') return false
  const f = t[1]
  const parts = stringList(f.funcname)
  if (parts.at(-1) !== 'count' || (parts.length > 1 && parts[0] !== 'pg_catalog') || parts.length > 2) return false
  if (f.agg_filter !== undefined || f.over !== undefined || f.agg_order !== undefined) return false
  return f.agg_star === true || arr(f.args).every((a) => nodeType(a)?.[0] === 'ColumnRef')
}

/** Adds the taint of everything under `node` to `acc`. */
function walk(ctx: Ctx, node: unknown, lv: Level, acc: Acc): void {
  if (Array.isArray(node)) {
    for (const x of node) walk(ctx, x, lv, acc)
    return
  }
  const o = obj(node)
  if (!o) return
  for (const [key, value] of Object.entries(o)) {
    const inner = obj(value)
    if (inner === null) {
      if (Array.isArray(value)) walk(ctx, value, lv, acc)
      continue
    }
    switch (key) {
      case 'ColumnRef':
        acc.add(columnRef(ctx, inner, lv))
        break
      case 'A_Const':
      case 'ParamRef':
      case 'TypeName':
        break
      case 'FuncCall': {
        const why = funcOpaque(ctx, inner.funcname)
        if (why !== null) {
          acc.opaque ??= why
          ctx.opaqueCalls.add(why)
        }
        const rest: Obj = { ...inner }
        delete rest.funcname
        delete rest.over
        const fparts = stringList(inner.funcname)
        const fname = fparts[fparts.length - 1] ?? ''
        const args = new Acc()
        walk(ctx, rest, lv, args)
        const al = args.lin()
        if (al.sources.size > 0 || al.opaque !== null)
          ctx.calls.push({
            name: fname,
            schema: fparts.length > 1 ? (fparts[fparts.length - 2] ?? null) : null,
            sources: [...al.sources].sort(),
            opaque: al.opaque,
          })
        if (SINK_FUNCTIONS.has(fname)) {
          ctx.write(`${fname}()`, al)
          if (fname === 'set_config') setConfigPath(ctx, inner.args)
        }
        acc.add(al)
        const over = obj(inner.over)
        if (over) {
          // A window function's value depends on how rows are partitioned and ordered.
          const named = str(over.refname) ?? str(over.name)
          if (named !== null && over.partitionClause === undefined && over.orderClause === undefined) {
            const w = lv.windows?.get(named)
            if (!w && !hasWindow(lv, named)) fail(`window ${named} is not defined`)
            if (w) acc.add(w)
          } else {
            if (named !== null) {
              const w = lv.windows?.get(named)
              if (w) acc.add(w)
            }
            const wl = evalExpr(ctx, [over.partitionClause, over.orderClause], lv)
            ctx.predicate(wl)
            acc.add(wl)
          }
        }
        break
      }
      case 'A_Expr': {
        const why = operatorOpaque(ctx, inner.name)
        if (why !== null) {
          acc.opaque ??= why
          ctx.opaqueCalls.add(why)
        }
        walk(ctx, inner, lv, acc)
        break
      }
      case 'SubLink': {
        const type = str(inner.subLinkType)
        const q = nodeType(inner.subselect)
        const outs = q?.[0] === 'SelectStmt' ? selectQuery(ctx, q[1], lv, lv.ctes) : fail('a subquery that is not a SELECT')
        // EXISTS answers from the inner WHERE (a predicate, recorded there), not from its outputs.
        if (type !== 'EXISTS_SUBLINK') for (const out of outs) addOut(acc, out)
        walk(ctx, inner.testexpr, lv, acc)
        if (inner.operName !== undefined) {
          const why = operatorOpaque(ctx, inner.operName)
          if (why !== null) acc.opaque ??= why
        }
        break
      }
      case 'SelectStmt':
        for (const out of selectQuery(ctx, inner, lv, lv.ctes)) addOut(acc, out)
        break
      case 'A_Indirection': {
        const l = indirection(ctx, inner, lv)
        if (l) acc.add(l)
        else walk(ctx, inner, lv, acc)
        break
      }
      default:
        walk(ctx, inner, lv, acc)
    }
  }
}

/** set_config('search_path', …) changes how later statements resolve names. */
function setConfigPath(ctx: Ctx, args: unknown): void {
  const [n, v] = arr(args).map((a) => {
    const c = nodeType(a)
    return c?.[0] === 'A_Const' ? str(obj(c[1].sval)?.sval) : null
  })
  if (n === null || n === undefined) ctx.pathChange = 'unknown'
  else if (n.toLowerCase() === 'search_path') ctx.pathChange = v ?? 'unknown'
}

function hasWindow(lv: Level, name: string): boolean {
  return lv.windows?.has(name) === true
}

function addOut(acc: Acc, out: Out): void {
  if (out.unknownStar !== undefined) fail(`a subquery value over ${out.unknownStar}, whose columns the catalog does not know`)
  acc.add(out.lin)
}

/** `(u).email`: the field of a whole-row value; null when it is not that simple case. */
function indirection(ctx: Ctx, ind: Obj, lv: Level): Lin | null {
  const argT = nodeType(ind.arg)
  const first = names(ind.indirection)[0]
  if (argT?.[0] !== 'ColumnRef' || first === null || first === undefined) return null
  const fields = names(argT[1].fields)
  if (fields.length !== 1 || fields[0] === null || fields[0] === undefined) return null
  const entry = findEntry(lv, fields[0], null)
  if (!entry || lookupColumn(lv, fields[0]) !== null) return null
  const l = entryColumn(entry, first)
  const acc = new Acc()
  if (l) acc.add(l)
  else acc.add(wholeRow(entry))
  // The remaining indirection (array subscripts…) only computes on the value.
  walk(ctx, arr(ind.indirection).slice(1), lv, acc)
  return acc.lin()
}

// ---------------------------------------------------------------------------------------------
// Name resolution

function wholeRow(e: Entry): Lin {
  const acc = new Acc()
  for (const s of e.star) {
    if (s.unknown !== undefined) fail(`a whole-row value of ${s.unknown}, whose columns the catalog does not know`)
    acc.add(s.lin)
  }
  if (e.spread) acc.add(e.spread)
  return acc.lin()
}

/** Columns every table has; they hold no user data and are not in the catalog's column lists. */
const SYSTEM_COLUMNS: ReadonlySet<string> = new Set(['ctid', 'xmin', 'xmax', 'cmin', 'cmax', 'tableoid'])

/** A column of a relation the catalog does not know: named after it, plus any same-named relation's. */
function unknownColumn(s: Slot, name: string): Lin {
  const own = baseLin(`${s.unknown ?? '?'}.${name}`)
  const also = s.also?.get(name)
  return also ? derived(unionLin(own, also)) : own
}

function entryColumn(e: Entry, name: string): Lin | null {
  let found: Lin | null = null
  let unknown: Slot | null = null
  for (const s of e.star) {
    if (s.unknown !== undefined) unknown ??= s
    else if (s.spread === undefined && s.name === name) found = found ? unionLin(found, s.lin) : s.lin
  }
  if (found) return found
  if (unknown !== null) return unknownColumn(unknown, name)
  if (e.spread) return derived(e.spread)
  return SYSTEM_COLUMNS.has(name) && e.table ? CLEAR : null
}

/** An unqualified column name in one level: the FROM items' columns (merged JOIN USING columns once). */
function lookupColumn(lv: Level, name: string): Lin | null {
  let found: Lin | null = null
  const hypothetical = new Acc()
  let unknown = false
  for (const f of lv.frames) {
    for (const s of f.star) {
      if (s.unknown !== undefined) {
        hypothetical.add(unknownColumn(s, name))
        unknown = true
      } else if (s.spread === undefined && s.name === name) found = found ? unionLin(found, s.lin) : s.lin
    }
    for (const e of f.entries) {
      if (e.spread) {
        hypothetical.add(derived(e.spread))
        unknown = true
      }
    }
  }
  if (found) return found
  if (unknown) return hypothetical.lin()
  return SYSTEM_COLUMNS.has(name) && lv.frames.some((f) => f.entries.some((e) => e.table)) ? CLEAR : null
}

/** True when `name` is not a known column of any FROM item here (only one an unknown relation may have). */
function isHypothetical(lv: Level, name: string): boolean {
  return !lv.frames.some((f) => f.star.some((s) => s.unknown === undefined && s.spread === undefined && s.name === name))
}

function findEntry(lv: Level, refname: string, schema: string | null): Entry | null {
  for (const f of lv.frames) {
    for (const e of f.entries) {
      if (e.refname === refname && (schema === null || e.schema === schema)) return e
    }
  }
  return null
}

function columnRef(ctx: Ctx, ref: Obj, lv: Level): Lin {
  const fields = names(ref.fields)
  const star = fields.length > 0 && fields[fields.length - 1] === null
  if (fields.some((f, i) => f === null && i !== fields.length - 1)) fail('a column reference that cannot be read')
  const parts = fields.filter((f): f is string => f !== null)
  for (let l: Level | null = lv; l !== null; l = l.outer) {
    const hit = resolveIn(l, parts, star)
    if (hit) {
      if (hit.opaque !== null) ctx.opaqueCalls.add(hit.opaque)
      return hit
    }
  }
  fail(`column ${parts.join('.')}${star ? '.*' : ''} cannot be resolved`)
}

function resolveIn(lv: Level, parts: readonly string[], star: boolean): Lin | null {
  const [a, b, c, d] = parts
  if (star) {
    if (parts.length === 0) {
      const acc = new Acc()
      for (const f of lv.frames) for (const e of f.entries) acc.add(wholeRow(e))
      return lv.frames.length > 0 ? acc.lin() : null
    }
    const e =
      parts.length === 1
        ? findEntry(lv, a as string, null)
        : findEntry(lv, parts[parts.length - 1] as string, parts[parts.length - 2] ?? null)
    return e ? wholeRow(e) : null
  }
  if (parts.length === 1 && a !== undefined) {
    const col = lookupColumn(lv, a)
    // A known column wins over a table of the same name; a FROM item's name wins over a column an
    // unknown relation might have (its whole row then cannot be enumerated: unresolved).
    const e = findEntry(lv, a, null)
    if (col && !(e && isHypothetical(lv, a))) return col
    if (e) return wholeRow(e)
    if (col) return col
    if (lv.outs) {
      const o = lv.outs.filter((x) => x.name === a)
      if (o.length > 0) return o.map((x) => x.lin).reduce(unionLin)
    }
    return null
  }
  if (parts.length === 2 && a !== undefined && b !== undefined) {
    const e = findEntry(lv, a, null)
    if (e) return entryColumn(e, b) ?? fail(`column ${a}.${b} does not exist in the catalog's view of ${a}`)
    // schema.table as a whole-row value, or a composite column's field: both derive from the row.
    const rel = findEntry(lv, b, a)
    if (rel) return wholeRow(rel)
    const col = lookupColumn(lv, a)
    if (col) return derived(col)
    return null
  }
  if (parts.length === 3 && a !== undefined && b !== undefined && c !== undefined) {
    const e = findEntry(lv, b, a)
    if (e) return entryColumn(e, c) ?? fail(`column ${a}.${b}.${c} does not exist in the catalog`)
    const t = findEntry(lv, a, null)
    if (t) return derived(entryColumn(t, b) ?? wholeRow(t))
    return null
  }
  if (parts.length === 4 && b !== undefined && c !== undefined && d !== undefined) {
    const e = findEntry(lv, c, b)
    if (e) return entryColumn(e, d) ?? fail(`column ${parts.join('.')} does not exist in the catalog`)
    return null
  }
  return null
}

// ---------------------------------------------------------------------------------------------
// FROM

function qualOf(info: { schema: string; name: string }): string {
  return `${info.schema}.${info.name}`
}

function lookupCte(scope: CteScope | null, name: string): readonly Out[] | 'pending' | null {
  for (let s = scope; s !== null; s = s.parent) {
    const hit = s.map.get(name)
    if (hit !== undefined) return hit
  }
  return null
}

function outsToStar(outs: readonly Out[]): Slot[] {
  return outs.map((o) => (o.unknownStar !== undefined ? { name: '*', lin: CLEAR, unknown: o.unknownStar } : { name: o.name, lin: o.lin }))
}

function renameStar(star: readonly Slot[], colnames: readonly string[]): Slot[] {
  if (colnames.length === 0) return [...star]
  if (star.some((s) => s.unknown !== undefined || s.spread !== undefined)) fail('column aliases over columns the catalog does not know')
  if (colnames.length > star.length) fail('more column aliases than columns')
  return star.map((s, i) => ({ ...s, name: colnames[i] ?? s.name }))
}

/** The columns of a catalog relation (through a view's definition, recursively). */
function relationStar(
  ctx: Ctx,
  schema: string | null,
  name: string,
): { qual: string; star: Slot[]; schema: string | null; table: boolean } {
  const info = ctx.catalog.relation(schema, name)
  if (!info) {
    const qual = `${schema ?? '?'}.${name}`
    ctx.relations.add(qual)
    const also = new Map<string, Lin>()
    for (const c of schema === null ? (ctx.catalog.relationsNamed?.(name) ?? []) : []) {
      for (const sl of relationStar(ctx, c.schema, c.name).star) {
        const prev = also.get(sl.name)
        also.set(sl.name, prev ? unionLin(prev, sl.lin) : sl.lin)
      }
    }
    return { qual, star: [{ name: '*', lin: CLEAR, unknown: qual, also }], schema, table: false }
  }
  const qual = qualOf(info)
  const table = info.kind === 'table'
  ctx.relations.add(qual)
  if (info.policies !== undefined) policyLineage(ctx, info, qual)
  if (OPAQUE_RELATIONS.has(qual) || info.foreign === true) {
    const why =
      info.foreign === true
        ? `${qual} is a foreign table (its rows come from outside this database)`
        : `${qual} holds sample values of every column`
    ctx.opaqueCalls.add(why)
    return {
      qual,
      schema: info.schema,
      table,
      star: info.columns.map((c) => ({ name: c, lin: { sources: new Set([`${qual}.${c}`]), direct: null, via: [], opaque: why } })),
    }
  }
  if (table || info.definition === null) {
    return { qual, schema: info.schema, table, star: info.columns.map((c) => ({ name: c, lin: baseLin(`${qual}.${c}`) })) }
  }
  const def = viewLineage(ctx, qual, info)
  return {
    qual,
    schema: info.schema,
    table,
    star: info.columns.map((c, i) => {
      const d = def[i] ?? CLEAR
      const own = `${qual}.${c}`
      const sources = new Set([own, ...d.sources])
      return { name: c, lin: { sources, direct: d.direct, via: d.direct === null ? [] : [own, ...d.via], opaque: d.opaque } }
    }),
  }
}

/**
 * Row-level security policies run for whoever reads or writes the relation: their expressions count
 * as part of the statement, like a view's definition (a masked column passed to a function there
 * is such a call; a user-defined function there is opaque code). Analysed as `SELECT (expr) FROM
 * rel`, so their columns are the relation's own; a policy that cannot be analysed is opaque.
 */
function policyLineage(ctx: Ctx, info: RelationInfo, qual: string): void {
  if (ctx.policiesSeen.has(qual)) return
  ctx.policiesSeen.add(qual)
  const rel = `${quoteIdent(info.schema)}.${quoteIdent(info.name)}`
  for (const expr of info.policies ?? []) {
    let stmt: Obj | null = null
    try {
      const t = nodeType(obj(arr(obj(parseSync(`SELECT (${expr}) FROM ${rel}`))?.stmts)[0])?.stmt)
      if (t?.[0] === 'SelectStmt') stmt = t[1]
    } catch {
      stmt = null
    }
    if (stmt === null) {
      ctx.opaqueCalls.add(`a row-level security policy of ${qual} that the gateway cannot analyse`)
      continue
    }
    selectQuery(ctx, stmt, null, null)
  }
}

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`
}

function viewLineage(ctx: Ctx, qual: string, info: RelationInfo): readonly Lin[] {
  const hit = ctx.viewCache.get(qual)
  if (hit) return hit
  if (ctx.viewStack.includes(qual)) fail(`view ${qual} refers to itself`)
  if (ctx.viewStack.length >= MAX_VIEW_DEPTH) fail(`views nested deeper than ${MAX_VIEW_DEPTH}`)
  ctx.viewStack.push(qual)
  try {
    let tree: unknown
    try {
      tree = parseSync(info.definition ?? '')
    } catch {
      fail(`the definition of view ${qual} cannot be parsed`)
    }
    const stmts = arr(obj(tree)?.stmts)
    const t = nodeType(obj(stmts[0])?.stmt)
    if (stmts.length !== 1 || t?.[0] !== 'SelectStmt') fail(`the definition of view ${qual} is not one SELECT`)
    const outs = selectQuery(ctx, t[1], null, null)
    if (outs.length !== info.columns.length || outs.some((o) => o.unknownStar !== undefined))
      fail(`the definition of view ${qual} does not match its columns`)
    const lins = outs.map((o) => o.lin)
    ctx.viewCache.set(qual, lins)
    return lins
  } finally {
    ctx.viewStack.pop()
  }
}

function rangeVarFrame(ctx: Ctx, rv: Obj, lv: Level): Frame {
  const schemaRaw = str(rv.schemaname)
  const schema = schemaRaw === null || schemaRaw === '' ? null : schemaRaw
  const name = str(rv.relname) ?? fail('a relation without a name')
  const alias = obj(rv.alias)
  const aliasname = str(alias?.aliasname)
  const colnames = stringList(alias?.colnames)
  if (schema === null) {
    const cte = lookupCte(lv.ctes, name)
    if (cte === 'pending') fail(`CTE ${name} is used before its columns are known`)
    if (cte) {
      const star = renameStar(outsToStar(cte), colnames)
      return { star, entries: [{ refname: aliasname ?? name, schema: null, star, spread: null }] }
    }
  }
  const r = relationStar(ctx, schema, name)
  const star = renameStar(r.star, colnames)
  return { star, entries: [{ refname: aliasname ?? name, schema: aliasname ? null : r.schema, star, spread: null, table: r.table }] }
}

/** Set-returning functions whose result columns are known without the catalog. */
const FUNCTION_COLUMNS: Readonly<Record<string, readonly string[] | 'name'>> = {
  generate_series: 'name',
  generate_subscripts: 'name',
  unnest: 'name',
  jsonb_array_elements: ['value'],
  jsonb_array_elements_text: ['value'],
  json_array_elements: ['value'],
  json_array_elements_text: ['value'],
  jsonb_object_keys: 'name',
  json_object_keys: 'name',
  jsonb_each: ['key', 'value'],
  jsonb_each_text: ['key', 'value'],
  json_each: ['key', 'value'],
  json_each_text: ['key', 'value'],
  regexp_matches: 'name',
  regexp_split_to_table: 'name',
  string_to_table: 'name',
  jsonb_path_query: 'name',
}

/** json_populate_record(null::schema.table, …) and friends return the columns of that row type. */
const POPULATE = new Set(['json_populate_record', 'jsonb_populate_record', 'json_populate_recordset', 'jsonb_populate_recordset'])

function populateColumns(ctx: Ctx, fn: string, call: Obj | undefined): readonly string[] | undefined {
  if (!POPULATE.has(fn)) return undefined
  const first = nodeType(arr(call?.args)[0])
  if (first?.[0] !== 'TypeCast') return undefined
  const parts = stringList(obj(first[1].typeName)?.names)
  const name = parts[parts.length - 1]
  if (name === undefined || parts.length > 2 || arr(obj(first[1].typeName)?.arrayBounds).length > 0) return undefined
  return ctx.catalog.relation(parts.length === 2 ? (parts[0] ?? null) : null, name)?.columns
}

function functionFrame(ctx: Ctx, rf: Obj, lv: Level): Frame {
  const alias = obj(rf.alias)
  const aliasname = str(alias?.aliasname)
  const colnames = stringList(alias?.colnames)
  const items = arr(rf.functions).map((f) => arr(obj(obj(f)?.List)?.items))
  const acc = new Acc()
  let star: Slot[] | null = []
  let fname = 'function'
  for (const [call, coldef] of items) {
    const l = derived(evalExpr(ctx, call, lv))
    // The arguments of a function in FROM decide how many rows it returns.
    ctx.predicate(l)
    acc.add(l)
    const fc = nodeType(call)
    const fn = fc?.[0] === 'FuncCall' ? (stringList(fc[1].funcname).pop() ?? '') : ''
    fname = fn || fname
    // The column definition list: per function in ROWS FROM, for the whole item otherwise.
    const defs = arr(items.length === 1 && rf.coldeflist !== undefined ? rf.coldeflist : coldef)
      .map((c) => str(obj(obj(c)?.ColumnDef)?.colname))
      .filter((c): c is string => c !== null)
    const known = defs.length > 0 ? defs : (FUNCTION_COLUMNS[fn] ?? populateColumns(ctx, fn, fc?.[1]))
    if (star === null || known === undefined) {
      star = null
      continue
    }
    if (known === 'name') {
      // unnest(a, b) in FROM returns one column per argument.
      const n = fn === 'unnest' ? Math.max(1, arr(obj(fc?.[1])?.args).length) : 1
      for (let i = 0; i < n; i++)
        star.push({ name: items.length === 1 && aliasname && colnames.length === 0 && n === 1 ? aliasname : fn, lin: l })
    } else for (const c of known) star.push({ name: c, lin: l })
  }
  const spread = acc.lin()
  if (star === null) {
    if (colnames.length > 0) {
      star = colnames.map((c) => ({ name: c, lin: spread }))
      if (rf.ordinality === true) star.pop()
    } else star = [{ name: '*', lin: spread, spread: fname }]
  }
  if (rf.ordinality === true) star.push({ name: 'ordinality', lin: CLEAR })
  const renamed = star.some((s) => s.spread !== undefined) ? star : renameStar(star, colnames)
  return {
    star: renamed,
    entries: [
      { refname: aliasname ?? fname, schema: null, star: renamed, spread: renamed.some((s) => s.spread !== undefined) ? spread : null },
    ],
  }
}

function fromItem(ctx: Ctx, node: unknown, lv: Level, left: readonly Frame[]): Frame {
  const t = nodeType(node)
  if (!t) fail('a FROM item that cannot be read')
  const [type, n] = t
  // Functions and LATERAL subqueries see the FROM items to their left.
  const lateralLv: Level = { frames: left, outer: lv.outer, ctes: lv.ctes }
  switch (type) {
    case 'RangeVar':
      return rangeVarFrame(ctx, n, lv)
    case 'RangeSubselect': {
      const q = nodeType(n.subquery)
      if (q?.[0] !== 'SelectStmt') fail('a subquery in FROM that is not a SELECT')
      const inner: Level = n.lateral === true ? lateralLv : { frames: [], outer: lv.outer, ctes: lv.ctes }
      const outs = selectQuery(ctx, q[1], inner.frames.length > 0 ? inner : inner.outer, lv.ctes)
      const alias = obj(n.alias)
      const star = renameStar(outsToStar(outs), stringList(alias?.colnames))
      return { star, entries: [{ refname: str(alias?.aliasname), schema: null, star, spread: null }] }
    }
    case 'RangeFunction':
      return functionFrame(ctx, n, lateralLv)
    case 'RangeTableSample': {
      const f = fromItem(ctx, n.relation, lv, left)
      ctx.predicate(evalExpr(ctx, [n.args, n.repeatable], lateralLv))
      return f
    }
    case 'RangeTableFunc':
    case 'JsonTable': {
      // XMLTABLE / JSON_TABLE: every column derives from the document and the path expressions.
      const l = derived(evalExpr(ctx, n, lateralLv))
      const alias = obj(n.alias)
      const refname = str(alias?.aliasname) ?? (type === 'JsonTable' ? 'json_table' : 'xmltable')
      const star: Slot[] = [{ name: '*', lin: l, spread: refname }]
      return { star, entries: [{ refname, schema: null, star, spread: l }] }
    }
    case 'JoinExpr':
      return joinFrame(ctx, n, lv, left)
    default:
      fail(`FROM item ${type} is not understood`)
  }
}

function joinFrame(ctx: Ctx, j: Obj, lv: Level, left: readonly Frame[]): Frame {
  const l = fromItem(ctx, j.larg, lv, left)
  const r = fromItem(ctx, j.rarg, lv, [...left, l])
  const both: Level = { frames: [...left, l, r], outer: lv.outer, ctes: lv.ctes }
  if (j.quals !== undefined) ctx.predicate(evalExpr(ctx, j.quals, both))
  let using = stringList(j.usingClause)
  if (j.isNatural === true) {
    if ([...l.star, ...r.star].some((s) => s.unknown !== undefined || s.spread !== undefined))
      fail('NATURAL JOIN over columns the catalog does not know')
    const rn = new Set(r.star.map((s) => s.name))
    using = [...new Set(l.star.map((s) => s.name).filter((n) => rn.has(n)))]
  }
  const type = str(j.jointype)
  const merged: Slot[] = using.map((name) => {
    const a = lookupColumn({ frames: [l], outer: null, ctes: null }, name) ?? fail(`JOIN USING column ${name} is missing on the left`)
    const b = lookupColumn({ frames: [r], outer: null, ctes: null }, name) ?? fail(`JOIN USING column ${name} is missing on the right`)
    ctx.predicate(unionLin(a, b))
    const u = unionLin(a, b)
    const keep = type === 'JOIN_FULL' ? null : type === 'JOIN_RIGHT' ? b : a
    const lin: Lin = keep?.direct ? { sources: u.sources, direct: keep.direct, via: keep.via, opaque: u.opaque } : derived(u)
    return { name, lin }
  })
  const used = new Set(using)
  const star = [...merged, ...l.star.filter((s) => !used.has(s.name)), ...r.star.filter((s) => !used.has(s.name))]
  const alias = obj(j.alias)
  if (alias) {
    const renamed = renameStar(star, stringList(alias.colnames))
    return { star: renamed, entries: [{ refname: str(alias.aliasname), schema: null, star: renamed, spread: null }] }
  }
  const entries = [...l.entries, ...r.entries]
  const ua = obj(j.join_using_alias)
  if (ua) entries.push({ refname: str(ua.aliasname), schema: null, star: merged, spread: null })
  return { star, entries }
}

function fromClause(ctx: Ctx, items: unknown, lv: Level): Frame[] {
  const frames: Frame[] = []
  for (const it of arr(items)) frames.push(fromItem(ctx, it, lv, frames))
  return frames
}

// ---------------------------------------------------------------------------------------------
// Queries

function withClause(ctx: Ctx, w: unknown, outer: Level | null, parent: CteScope | null): CteScope | null {
  const wc = obj(w)
  if (!wc) return parent
  const scope: CteScope = { map: new Map(), parent }
  const recursive = wc.recursive === true
  for (const c of arr(wc.ctes)) {
    const cte = obj(obj(c)?.CommonTableExpr) ?? fail('a WITH item that cannot be read')
    const name = str(cte.ctename) ?? fail('a CTE without a name')
    const colnames = stringList(cte.aliascolnames)
    const rename = (outs: readonly Out[]): Out[] =>
      renameStar(outsToStar(outs), colnames).map((s, i) => ({ ...(outs[i] as Out), name: s.name }))
    // SEARCH … SET col and CYCLE … USING path add columns (visible outside the CTE only) that
    // hold the listed columns' values.
    const extra = (r: Out[]): Out[] => {
      const over = (list: unknown): Lin => {
        const acc = new Acc()
        for (const n of stringList(list))
          acc.add(r.find((o) => o.name === n)?.lin ?? fail(`SEARCH/CYCLE column ${n} is not a column of ${name}`))
        return derived(acc.lin())
      }
      const search = obj(cte.search_clause)
      if (search) r.push({ name: str(search.search_seq_column) ?? 'search', lin: over(search.search_col_list) })
      const cycle = obj(cte.cycle_clause)
      if (cycle) {
        r.push({ name: str(cycle.cycle_mark_column) ?? 'is_cycle', lin: CLEAR })
        r.push({ name: str(cycle.cycle_path_column) ?? 'path', lin: over(cycle.cycle_col_list) })
      }
      return r
    }
    const q = nodeType(cte.ctequery) ?? fail(`CTE ${name} cannot be read`)
    const lv: Level = { frames: [], outer, ctes: scope }
    if (q[0] !== 'SelectStmt') {
      scope.map.set(name, extra(rename(statementOuts(ctx, q[0], q[1], outer, scope) ?? fail(`CTE ${name} returns nothing`))))
      continue
    }
    if (!recursive) {
      scope.map.set(name, extra(rename(selectQuery(ctx, q[1], lv.outer, scope))))
      continue
    }
    // WITH RECURSIVE: the non-recursive arm gives the columns; then the whole query is analyzed
    // with the CTE's current lineage until no column gains a source (sources only grow).
    scope.map.set(name, 'pending')
    const base = q[1].op === 'SETOP_UNION' && obj(q[1].larg) ? (obj(q[1].larg) as Obj) : q[1]
    let cur = rename(selectQuery(ctx, base, outer, scope))
    let stable = false
    for (let round = 0; round < MAX_FIXPOINT_ROUNDS && !stable; round++) {
      scope.map.set(name, cur)
      const next = rename(selectQuery(ctx, q[1], outer, scope))
      if (next.length !== cur.length) fail(`recursive CTE ${name} changes its column count`)
      stable = next.every((o, i) => {
        const c = cur[i] as Out
        return (
          [...o.lin.sources].every((s) => c.lin.sources.has(s)) &&
          (o.lin.opaque === null || c.lin.opaque !== null) &&
          (c.lin.direct === null || o.lin.direct === c.lin.direct)
        )
      })
      cur = next.map((o, i) => ({ ...o, lin: unionLin(cur[i]?.lin ?? CLEAR, o.lin) }))
    }
    if (!stable) fail(`recursive CTE ${name} did not settle`)
    scope.map.set(name, extra(cur))
  }
  return scope
}

function isStarTarget(val: unknown): Obj | null {
  const t = nodeType(val)
  if (t?.[0] !== 'ColumnRef') return null
  const f = names(t[1].fields)
  return f.length > 0 && f[f.length - 1] === null ? t[1] : null
}

function expandStar(ref: Obj, lv: Level): Out[] {
  const parts = names(ref.fields).filter((f): f is string => f !== null)
  let star: readonly Slot[]
  if (parts.length === 0) {
    if (lv.frames.length === 0) fail('SELECT * without FROM')
    star = lv.frames.flatMap((f) => f.star)
  } else {
    let e: Entry | null = null
    for (let l: Level | null = lv; l !== null && !e; l = l.outer) {
      e =
        parts.length === 1
          ? findEntry(l, parts[0] as string, null)
          : findEntry(l, parts[parts.length - 1] as string, parts[parts.length - 2] ?? null)
    }
    if (!e) fail(`${parts.join('.')}.* cannot be resolved`)
    star = e.star
  }
  return star.map((s) => {
    if (s.unknown !== undefined) return { name: '*', lin: CLEAR, unknownStar: s.unknown }
    if (s.spread !== undefined) {
      if (s.lin.sources.size > 0 || s.lin.opaque !== null) fail(`* over ${s.spread}, whose result columns are not known`)
      return { name: '*', lin: CLEAR, unknownStar: s.spread }
    }
    return { name: s.name, lin: s.lin }
  })
}

/** `(u).*` in a select list: one output per column of u, when u is a FROM item's whole row. */
function expandFieldStar(ctx: Ctx, ind: Obj, lv: Level): Out[] {
  const arg = nodeType(ind.arg)
  const f = arg?.[0] === 'ColumnRef' ? names(arg[1].fields) : []
  const only = f[0]
  if (arr(ind.indirection).length !== 1 || f.length !== 1 || only === null || only === undefined) {
    fail('(…).* over a value whose columns are not known')
  }
  let e: Entry | null = null
  for (let l: Level | null = lv; l !== null && !e; l = l.outer) {
    if (lookupColumn(l, only)) fail(`(${only}).* over a column whose fields are not known`)
    e = findEntry(l, only, null)
  }
  if (!e) fail(`(${only}).* cannot be resolved`)
  const ref: Obj = { fields: [{ String: { sval: only } }, { A_Star: {} }] }
  columnRef(ctx, ref, lv)
  return expandStar(ref, lv)
}

/** How PostgreSQL labels an output column, where that is cheap to know. */
function label(node: unknown): string {
  const t = nodeType(node)
  if (!t) return '?column?'
  const [type, n] = t
  switch (type) {
    case 'ColumnRef': {
      const f = names(n.fields)
      return f[f.length - 1] ?? '?column?'
    }
    case 'FuncCall':
      return stringList(n.funcname).pop() ?? '?column?'
    case 'TypeCast': {
      const inner = label(n.arg)
      if (inner !== '?column?') return inner
      return stringList(obj(n.typeName)?.names).pop() ?? '?column?'
    }
    case 'A_Indirection': {
      const f = names(n.indirection).filter((x): x is string => x !== null)
      return f[f.length - 1] ?? label(n.arg)
    }
    case 'CollateClause':
      return label(n.arg)
    case 'CaseExpr':
      return 'case'
    case 'CoalesceExpr':
      return 'coalesce'
    case 'MinMaxExpr':
      return str(n.op) === 'IS_LEAST' ? 'least' : 'greatest'
    case 'A_ArrayExpr':
      return 'array'
    case 'RowExpr':
      return 'row'
    case 'SubLink': {
      const k = str(n.subLinkType)
      if (k === 'EXISTS_SUBLINK') return 'exists'
      if (k === 'ARRAY_SUBLINK') return 'array'
      if (k === 'EXPR_SUBLINK') {
        const q = obj(nodeType(n.subselect)?.[1])
        const first = obj(obj(arr(q?.targetList)[0])?.ResTarget)
        return str(first?.name) ?? label(first?.val)
      }
      return '?column?'
    }
    default:
      return '?column?'
  }
}

function targetList(ctx: Ctx, list: unknown, lv: Level): Out[] {
  const outs: Out[] = []
  for (const t of arr(list)) {
    const rt = obj(obj(t)?.ResTarget) ?? fail('a target that cannot be read')
    const star = isStarTarget(rt.val)
    if (star) {
      outs.push(...expandStar(star, lv))
      continue
    }
    const ind = nodeType(rt.val)
    if (ind?.[0] === 'A_Indirection' && names(ind[1].indirection).at(-1) === null) {
      outs.push(...expandFieldStar(ctx, ind[1], lv))
      continue
    }
    outs.push({ name: str(rt.name) ?? label(rt.val), lin: evalExpr(ctx, rt.val, lv) })
  }
  return outs
}

/** ORDER BY / GROUP BY items: input columns, output names and output positions all count. */
function sortPredicates(ctx: Ctx, items: unknown, lv: Level, outs: readonly Out[]): void {
  const withOuts: Level = { ...lv, outs }
  for (const it of arr(items)) {
    const t = nodeType(it)
    const expr = t?.[0] === 'SortBy' ? t[1].node : it
    const c = nodeType(expr)
    if (c?.[0] === 'A_Const') {
      const pos = obj(c[1].ival)
      const n = pos ? Number(pos.ival ?? 0) : Number.NaN
      const o = outs[n - 1]
      if (o) ctx.predicate(o.lin)
      continue
    }
    ctx.predicate(evalExpr(ctx, expr, withOuts))
    // A bare name may mean the output column of that name even when an input column has it too.
    if (c?.[0] === 'ColumnRef') {
      const f = names(c[1].fields)
      if (f.length === 1) for (const o of outs) if (o.name === f[0]) ctx.predicate(o.lin)
    }
  }
}

/** A SELECT (plain, set operation or VALUES): its outputs; predicates and writes go to ctx. */
function selectQuery(ctx: Ctx, s: Obj, outer: Level | null, ctes: CteScope | null): Out[] {
  const scope = withClause(ctx, s.withClause, outer, ctes)
  const op = str(s.op) ?? 'SETOP_NONE'
  let outs: Out[]
  let lv: Level = { frames: [], outer, ctes: scope }
  if (op !== 'SETOP_NONE') {
    const l = selectQuery(ctx, obj(s.larg) ?? fail('a set operation without its left side'), outer, scope)
    const r = selectQuery(ctx, obj(s.rarg) ?? fail('a set operation without its right side'), outer, scope)
    if (l.length !== r.length) fail('set operation sides with different column counts')
    if ([...l, ...r].some((o) => o.unknownStar !== undefined)) fail('a set operation over columns the catalog does not know')
    // INTERSECT and EXCEPT return values of the left side, but which rows survive depends on the right.
    outs = l.map((o, i) => ({ name: o.name, lin: unionLin(o.lin, (r[i] as Out).lin) }))
    // Without ALL, rows are compared to remove duplicates (or to match the other side): a condition.
    if (s.all !== true) for (const o of outs) ctx.predicate(o.lin)
  } else if (s.valuesLists !== undefined) {
    const rows = arr(s.valuesLists).map((v) => arr(obj(obj(v)?.List)?.items))
    const width = rows[0]?.length ?? 0
    if (rows.some((r) => r.length !== width)) fail('VALUES lists of different lengths')
    outs = []
    for (let i = 0; i < width; i++) {
      let lin: Lin | null = null
      for (const r of rows) {
        const v = evalExpr(ctx, r[i], lv)
        lin = lin ? unionLin(lin, v) : v
      }
      outs.push({ name: `column${i + 1}`, lin: lin ?? CLEAR })
    }
  } else {
    lv = { frames: fromClause(ctx, s.fromClause, lv), outer, ctes: scope }
    if (s.windowClause !== undefined) {
      const windows = new Map<string, Lin>()
      for (const w of arr(s.windowClause)) {
        const wd = obj(obj(w)?.WindowDef)
        if (!wd) continue
        const l = evalExpr(ctx, [wd.partitionClause, wd.orderClause], { ...lv, windows })
        const base = str(wd.refname)
        windows.set(str(wd.name) ?? '', base !== null && windows.has(base) ? unionLin(windows.get(base) as Lin, derived(l)) : derived(l))
        ctx.predicate(l)
      }
      lv = { ...lv, windows }
    }
    outs = targetList(ctx, s.targetList, lv)
    if (s.whereClause !== undefined) ctx.predicate(evalExpr(ctx, s.whereClause, lv))
    if (s.havingClause !== undefined) ctx.predicate(evalExpr(ctx, s.havingClause, lv))
    sortPredicates(ctx, s.groupClause, lv, outs)
    sortPredicates(ctx, s.distinctClause, lv, outs)
  }
  sortPredicates(ctx, s.sortClause, lv, outs)
  for (const e of [s.limitCount, s.limitOffset]) if (e !== undefined) ctx.predicate(evalExpr(ctx, e, lv))
  return outs
}

// ---------------------------------------------------------------------------------------------
// Writes

function relTarget(rv: Obj): { schema: string | null; name: string } {
  const s = str(rv.schemaname)
  const name = str(rv.relname) ?? fail('a relation without a name')
  return { schema: s !== null && s !== '' ? s : rv.relpersistence === 't' ? 'pg_temp' : null, name }
}

/** The target of a write: its columns (through the catalog) and the name to report. */
function writeTarget(ctx: Ctx, rv: Obj): { qual: string; star: Slot[]; columns: string[] | null; entry: Entry } {
  const t = relTarget(rv)
  const r = relationStar(ctx, t.schema, t.name)
  const known = r.star.every((s) => s.unknown === undefined)
  const alias = str(obj(rv.alias)?.aliasname)
  const entry: Entry = { refname: alias ?? t.name, schema: alias ? null : r.schema, star: r.star, spread: null, table: r.table }
  return { qual: r.qual, star: r.star, columns: known ? r.star.map((s) => s.name) : null, entry }
}

/** Columns named in INSERT (a) / SET a = … (subscripts and fields still write column a). */
function resTargetName(t: unknown): string {
  return str(obj(obj(t)?.ResTarget)?.name) ?? fail('a target column that cannot be read')
}

/** RETURNING sees the row as written: each column derives from itself and what was written into it. */
function returning(
  ctx: Ctx,
  s: Obj,
  target: { star: Slot[]; entry: Entry },
  written: Map<string, Lin>,
  frames: readonly Frame[],
  lv: Level,
): Out[] | null {
  const list = obj(s.returningClause)?.exprs ?? s.returningList
  if (list === undefined || arr(list).length === 0) return null
  const star = target.star.map((sl) => {
    const w = written.get(sl.name)
    return w ? { ...sl, lin: derived(unionLin(sl.lin, w)) } : sl
  })
  const entry: Entry = { ...target.entry, star }
  const alt = (refname: string): Entry => ({ refname, schema: null, star, spread: null })
  const frame: Frame = { star, entries: [entry, alt('old'), alt('new')] }
  return targetList(ctx, list, { frames: [frame, ...frames], outer: lv.outer, ctes: lv.ctes })
}

function addWritten(written: Map<string, Lin>, col: string, l: Lin): void {
  const prev = written.get(col)
  written.set(col, prev ? unionLin(prev, l) : l)
}

function insertStmt(ctx: Ctx, s: Obj, outer: Level | null, ctes: CteScope | null): Out[] | null {
  const scope = withClause(ctx, s.withClause, outer, ctes)
  const lv: Level = { frames: [], outer, ctes: scope }
  const target = writeTarget(ctx, obj(s.relation) ?? fail('INSERT without a table'))
  const cols = arr(s.cols).map(resTargetName)
  const q = nodeType(s.selectStmt)
  let values: Out[] = []
  if (q?.[0] === 'SelectStmt') values = selectQuery(ctx, q[1], outer, scope)
  else if (q !== null) fail('INSERT from something that is not a query')
  const into = cols.length > 0 ? cols : target.columns
  const written = new Map<string, Lin>()
  values.forEach((v, i) => {
    if (v.unknownStar !== undefined) fail(`INSERT of * over ${v.unknownStar}, whose columns the catalog does not know`)
    const col = into?.[i]
    if (col === undefined) {
      ctx.write(target.qual, v.lin)
      return
    }
    addWritten(written, col, v.lin)
  })
  const oc = obj(s.onConflictClause)
  let excludedStar = target.star.map((sl) => ({ ...sl, lin: written.get(sl.name) ?? CLEAR }))
  if (!target.columns) excludedStar = [...written].map(([name, lin]) => ({ name, lin }))
  if (oc) {
    const frames: Frame[] = [
      { star: target.star, entries: [target.entry, { refname: 'excluded', schema: null, star: excludedStar, spread: null }] },
    ]
    const ocLv: Level = { frames, outer, ctes: scope }
    for (const t of arr(oc.targetList)) {
      const rt = obj(obj(t)?.ResTarget) ?? fail('ON CONFLICT target that cannot be read')
      addWritten(written, resTargetName(t), evalExpr(ctx, rt.val, ocLv))
    }
    if (oc.whereClause !== undefined) ctx.predicate(evalExpr(ctx, oc.whereClause, ocLv))
  }
  for (const [col, l] of written) ctx.write(`${target.qual}.${col}`, l)
  return returning(ctx, s, target, written, [], lv)
}

/** SET a = …, (a, b) = (…): the columns written and what flows into each. */
function setList(ctx: Ctx, list: unknown, lv: Level, written: Map<string, Lin>): void {
  for (const t of arr(list)) {
    const rt = obj(obj(t)?.ResTarget) ?? fail('a SET target that cannot be read')
    const col = resTargetName(t)
    const v = nodeType(rt.val)
    // (a, b) = (SELECT x, y …) arrives as one MultiAssignRef per column over the same source.
    const value = v?.[0] === 'MultiAssignRef' ? derived(evalExpr(ctx, v[1].source, lv)) : evalExpr(ctx, rt.val, lv)
    // Subscripted or field assignment keeps part of the old value.
    addWritten(written, col, arr(rt.indirection).length > 0 ? derived(value) : value)
  }
}

function updateStmt(ctx: Ctx, s: Obj, outer: Level | null, ctes: CteScope | null): Out[] | null {
  const scope = withClause(ctx, s.withClause, outer, ctes)
  const base: Level = { frames: [], outer, ctes: scope }
  const target = writeTarget(ctx, obj(s.relation) ?? fail('UPDATE without a table'))
  const tframe: Frame = { star: target.star, entries: [target.entry] }
  const from = fromClause(ctx, s.fromClause, { ...base, frames: [] })
  const lv: Level = { frames: [tframe, ...from], outer, ctes: scope }
  const written = new Map<string, Lin>()
  setList(ctx, s.targetList, lv, written)
  if (s.whereClause !== undefined) ctx.predicate(evalExpr(ctx, s.whereClause, lv))
  for (const [col, l] of written) ctx.write(`${target.qual}.${col}`, l)
  return returning(ctx, s, target, written, from, lv)
}

function deleteStmt(ctx: Ctx, s: Obj, outer: Level | null, ctes: CteScope | null): Out[] | null {
  const scope = withClause(ctx, s.withClause, outer, ctes)
  const target = writeTarget(ctx, obj(s.relation) ?? fail('DELETE without a table'))
  const using = fromClause(ctx, s.usingClause, { frames: [], outer, ctes: scope })
  const lv: Level = { frames: [{ star: target.star, entries: [target.entry] }, ...using], outer, ctes: scope }
  if (s.whereClause !== undefined) ctx.predicate(evalExpr(ctx, s.whereClause, lv))
  return returning(ctx, s, target, new Map(), using, lv)
}

function mergeStmt(ctx: Ctx, s: Obj, outer: Level | null, ctes: CteScope | null): Out[] | null {
  const scope = withClause(ctx, s.withClause, outer, ctes)
  const target = writeTarget(ctx, obj(s.relation) ?? fail('MERGE without a table'))
  const src = fromItem(ctx, s.sourceRelation, { frames: [], outer, ctes: scope }, [])
  const lv: Level = { frames: [{ star: target.star, entries: [target.entry] }, src], outer, ctes: scope }
  ctx.predicate(evalExpr(ctx, s.joinCondition, lv))
  const written = new Map<string, Lin>()
  for (const w of arr(s.mergeWhenClauses)) {
    const m = obj(obj(w)?.MergeWhenClause) ?? fail('a MERGE action that cannot be read')
    if (m.condition !== undefined) ctx.predicate(evalExpr(ctx, m.condition, lv))
    const cmd = str(m.commandType)
    if (cmd === 'CMD_UPDATE') setList(ctx, m.targetList, lv, written)
    else if (cmd === 'CMD_INSERT') {
      const cols = arr(m.targetList).map(resTargetName)
      const into = cols.length > 0 ? cols : (target.columns ?? [])
      arr(m.values).forEach((v, i) => {
        const col = into[i]
        if (col === undefined) ctx.write(target.qual, evalExpr(ctx, v, lv))
        else addWritten(written, col, evalExpr(ctx, v, lv))
      })
    }
  }
  for (const [col, l] of written) ctx.write(`${target.qual}.${col}`, l)
  return returning(ctx, s, target, written, [src], lv)
}

/** Outputs of a statement that can stand where a query does (CTE, COPY, PREPARE, DECLARE). */
function statementOuts(ctx: Ctx, type: string, s: Obj, outer: Level | null, ctes: CteScope | null): Out[] | null {
  switch (type) {
    case 'SelectStmt':
      return selectQuery(ctx, s, outer, ctes)
    case 'InsertStmt':
      return insertStmt(ctx, s, outer, ctes)
    case 'UpdateStmt':
      return updateStmt(ctx, s, outer, ctes)
    case 'DeleteStmt':
      return deleteStmt(ctx, s, outer, ctes)
    case 'MergeStmt':
      return mergeStmt(ctx, s, outer, ctes)
    default:
      fail(`${type} where a query was expected`)
  }
}

/** CREATE TABLE AS / SELECT INTO / CREATE VIEW: each output column flows into the new relation. */
function createFrom(ctx: Ctx, rv: Obj, colNames: readonly string[], outs: readonly Out[]): void {
  const t = relTarget(rv)
  const qual = `${t.schema ?? '?'}.${t.name}`
  outs.forEach((o, i) => {
    if (o.unknownStar !== undefined) {
      if (o.lin.sources.size === 0 && o.lin.opaque === null) ctx.write(qual, CLEAR)
      else fail('a copy of columns the catalog does not know')
      return
    }
    ctx.write(`${qual}.${colNames[i] ?? o.name}`, o.lin)
  })
}

function columnExprWrite(ctx: Ctx, rv: Obj, col: string, expr: unknown): void {
  const target = writeTarget(ctx, rv)
  const lv: Level = { frames: [{ star: target.star, entries: [target.entry] }], outer: null, ctes: null }
  ctx.write(`${target.qual}.${col}`, evalExpr(ctx, expr, lv))
}

function generatedExpr(def: unknown): unknown {
  for (const c of arr(obj(obj(def)?.ColumnDef)?.constraints)) {
    const k = obj(obj(c)?.Constraint)
    if (k && str(k.contype) === 'CONSTR_GENERATED') return k.raw_expr
  }
  return undefined
}

/** A relation's columns as one FROM item, for expressions DDL attaches to it. */
function tableLevel(ctx: Ctx, rv: Obj): { qual: string; lv: Level; entry: Entry } {
  const target = writeTarget(ctx, rv)
  return {
    qual: target.qual,
    entry: target.entry,
    lv: { frames: [{ star: target.star, entries: [target.entry] }], outer: null, ctes: null },
  }
}

/** A plain column named by DDL (an index key, a constraint's key column): its lineage. */
function namedColumn(entry: Entry, col: string): Lin {
  return entryColumn(entry, col) ?? fail(`column ${col} is not in the catalog`)
}

/** A table constraint (or a column's constraints): every column and expression it evaluates. */
function constraintLineage(ctx: Ctx, con: Obj, t: { qual: string; lv: Level; entry: Entry }, column: string | null): void {
  const type = str(con.contype) ?? ''
  const what = `${type.replace('CONSTR_', '').toLowerCase()} constraint on ${t.qual}`
  const acc = new Acc()
  if (column !== null && type !== 'CONSTR_DEFAULT' && type !== 'CONSTR_GENERATED' && type !== 'CONSTR_IDENTITY') {
    const own = entryColumn(t.entry, column)
    if (own) acc.add(own)
  }
  if (con.raw_expr !== undefined && type !== 'CONSTR_GENERATED') acc.add(evalExpr(ctx, con.raw_expr, t.lv))
  for (const k of [...stringList(con.keys), ...stringList(con.including), ...stringList(con.fk_attrs)]) acc.add(namedColumn(t.entry, k))
  for (const e of arr(con.exclusions)) {
    const pair = arr(obj(e)?.List ? obj(obj(e)?.List)?.items : e)
    const el = obj(obj(pair[0])?.IndexElem)
    if (el) acc.add(indexElem(ctx, el, t))
  }
  if (con.where_clause !== undefined) acc.add(evalExpr(ctx, con.where_clause, t.lv))
  const pk = obj(con.pktable)
  if (pk) {
    // A foreign key compares this table's values with the referenced ones: an equality test on them.
    const ref = tableLevel(ctx, pk)
    const cols = stringList(con.pk_attrs)
    if (cols.length === 0) acc.add(wholeRow(ref.entry))
    for (const k of cols) acc.add(namedColumn(ref.entry, k))
  }
  if (acc.sources.size > 0 || acc.opaque !== null) ctx.attach(what, acc.lin())
}

function indexElem(ctx: Ctx, el: Obj, t: { lv: Level; entry: Entry }): Lin {
  const name = str(el.name)
  if (name !== null) return namedColumn(t.entry, name)
  return evalExpr(ctx, el.expr, t.lv)
}

function alterTable(ctx: Ctx, s: Obj): void {
  const rv = obj(s.relation) ?? fail('ALTER TABLE without a table')
  const t = tableLevel(ctx, rv)
  for (const c of arr(s.cmds)) {
    const cmd = obj(obj(c)?.AlterTableCmd)
    if (!cmd) continue
    const sub = str(cmd.subtype)
    switch (sub) {
      case 'AT_AddConstraint': {
        const con = obj(obj(cmd.def)?.Constraint)
        if (con) constraintLineage(ctx, con, t, null)
        break
      }
      case 'AT_ColumnDefault':
        if (cmd.def !== undefined && cmd.def !== null)
          ctx.attach(`default of ${t.qual}.${str(cmd.name) ?? ''}`, evalExpr(ctx, cmd.def, t.lv))
        break
      case 'AT_ValidateConstraint':
      case 'AT_ClusterOn':
      case 'AT_SetNotNull':
        // Checks (or orders by) stored values of columns the statement does not name: all of them.
        ctx.attach(`${sub.slice(3)} on ${t.qual}`, wholeRow(t.entry))
        break
      default:
        break
    }
    switch (sub) {
      case 'AT_AddColumn': {
        const g = generatedExpr(cmd.def)
        const def = obj(obj(cmd.def)?.ColumnDef)
        const col = str(def?.colname) ?? ''
        if (g !== undefined) columnExprWrite(ctx, rv, col, g)
        for (const k of arr(def?.constraints)) {
          const con = obj(obj(k)?.Constraint)
          if (con && str(con.contype) !== 'CONSTR_GENERATED') constraintLineage(ctx, con, t, null)
        }
        if (def?.raw_default !== undefined) ctx.attach(`default of ${t.qual}.${col}`, evalExpr(ctx, def.raw_default, t.lv))
        break
      }
      case 'AT_AlterColumnType': {
        // ALTER COLUMN a TYPE … USING expr rewrites a from any column of the row; the conversion
        // itself runs on every stored value of a (and fails for some).
        const using = obj(obj(cmd.def)?.ColumnDef)?.raw_default
        if (using !== undefined) columnExprWrite(ctx, rv, str(cmd.name) ?? '', using)
        ctx.attach(`type change of ${t.qual}.${str(cmd.name) ?? ''}`, derived(namedColumn(t.entry, str(cmd.name) ?? '')))
        break
      }
      case 'AT_SetExpression':
        columnExprWrite(ctx, rv, str(cmd.name) ?? '', cmd.def)
        break
      case 'AT_AddInherit':
      case 'AT_AttachPartition': {
        // Rows of the child become rows of the parent: its columns flow into the parent's.
        const childRv =
          str(cmd.subtype) === 'AT_AddInherit'
            ? rv
            : (obj(obj(obj(cmd.def)?.PartitionCmd)?.name) ?? fail('ATTACH PARTITION without a table'))
        const parentRv = str(cmd.subtype) === 'AT_AddInherit' ? (obj(cmd.def) ?? fail('INHERIT without a parent')) : rv
        const child = writeTarget(ctx, childRv)
        const parent = writeTarget(ctx, parentRv)
        for (const sl of child.star) {
          if (sl.unknown !== undefined) fail(`rows of ${sl.unknown}, whose columns the catalog does not know, join ${parent.qual}`)
          ctx.write(`${parent.qual}.${sl.name}`, sl.lin)
        }
        break
      }
      default:
        break
    }
  }
}

/** A relation or column under a new name or schema: its classification must follow it. */
function moveRelation(ctx: Ctx, rv: Obj, schema: string | null, name: string, column: string | null, newColumn: string | null): void {
  const from = writeTarget(ctx, rv)
  const to = `${schema ?? from.qual.slice(0, from.qual.lastIndexOf('.'))}.${name}`
  for (const sl of from.star) {
    if (sl.unknown !== undefined) {
      ctx.write(
        column !== null && newColumn !== null ? `${to}.${newColumn}` : to,
        baseLin(column !== null ? `${sl.unknown}.${column}` : `${sl.unknown}.*`),
      )
      continue
    }
    if (column !== null && sl.name !== column) continue
    ctx.write(`${to}.${column !== null && newColumn !== null ? newColumn : sl.name}`, sl.lin)
  }
}

const RELATION_OBJECTS = new Set(['OBJECT_TABLE', 'OBJECT_VIEW', 'OBJECT_MATVIEW', 'OBJECT_FOREIGN_TABLE'])

function copyOptions(s: Obj): NonNullable<StatementLineage['copy']> {
  const opts = new Map<string, unknown>()
  for (const o of arr(s.options)) {
    const d = obj(obj(o)?.DefElem)
    if (d) opts.set(str(d.defname) ?? '', d.arg)
  }
  const text = (k: string): string | null => {
    const a = opts.get(k)
    return a === undefined ? null : (str(obj(obj(a)?.String)?.sval) ?? null)
  }
  const fmt = (text('format') ?? 'text').toLowerCase()
  if (fmt !== 'text' && fmt !== 'csv' && fmt !== 'binary') fail(`COPY format ${fmt} is not understood`)
  const csv = fmt === 'csv'
  const h = opts.get('header')
  let header = false
  if (h !== undefined) {
    const b = obj(obj(h)?.Boolean)
    const v = (text('header') ?? '').toLowerCase()
    header = b ? b.boolval === true : h === null || ['true', 'on', '1', 'match'].includes(v) || obj(obj(h)?.Integer)?.ival === 1
  }
  const quote = text('quote') ?? '"'
  return {
    format: fmt,
    delimiter: text('delimiter') ?? (csv ? ',' : '\t'),
    null: text('null') ?? (csv ? '' : '\\N'),
    quote,
    escape: text('escape') ?? quote,
    header,
  }
}

interface Result {
  outputs: Out[] | null
  extra?: Partial<Pick<StatementLineage, 'declare' | 'fetch' | 'prepare' | 'execute' | 'copy' | 'copyEncoding'>>
}

function statement(ctx: Ctx, type: string, s: Obj): Result {
  switch (type) {
    case 'SelectStmt': {
      const outs = selectQuery(ctx, s, null, null)
      const into = obj(s.intoClause)
      if (into) {
        createFrom(ctx, obj(into.rel) ?? fail('SELECT INTO without a table'), stringList(into.colNames), outs)
        return { outputs: null }
      }
      return { outputs: outs }
    }
    case 'InsertStmt':
    case 'UpdateStmt':
    case 'DeleteStmt':
    case 'MergeStmt':
      return { outputs: statementOuts(ctx, type, s, null, null) }
    case 'CreateTableAsStmt': {
      const q = nodeType(s.query) ?? fail('CREATE TABLE AS without a query')
      if (q[0] === 'ExecuteStmt') fail('CREATE TABLE AS EXECUTE copies the result of a prepared statement')
      const into = obj(s.into) ?? fail('CREATE TABLE AS without a table')
      createFrom(
        ctx,
        obj(into.rel) ?? fail('CREATE TABLE AS without a table'),
        stringList(into.colNames),
        statementOuts(ctx, q[0], q[1], null, null) ?? [],
      )
      return { outputs: null }
    }
    case 'ViewStmt': {
      const q = nodeType(s.query) ?? fail('CREATE VIEW without a query')
      createFrom(
        ctx,
        obj(s.view) ?? fail('CREATE VIEW without a name'),
        stringList(s.aliases),
        statementOuts(ctx, q[0], q[1], null, null) ?? [],
      )
      return { outputs: null }
    }
    case 'CreateStmt': {
      const rv = obj(s.relation) ?? fail('CREATE TABLE without a name')
      const t = relTarget(rv)
      const qual = `${t.schema ?? '?'}.${t.name}`
      const cols = arr(s.tableElts)
        .map((e) => str(obj(obj(e)?.ColumnDef)?.colname))
        .filter((c): c is string => c !== null)
      const star: Slot[] = cols.map((c) => ({ name: c, lin: baseLin(`${qual}.${c}`) }))
      const lv: Level = { frames: [{ star, entries: [{ refname: t.name, schema: null, star, spread: null }] }], outer: null, ctes: null }
      for (const e of arr(s.tableElts)) {
        const g = generatedExpr(e)
        if (g !== undefined) ctx.write(`${qual}.${str(obj(obj(e)?.ColumnDef)?.colname) ?? ''}`, evalExpr(ctx, g, lv))
      }
      // Constraints of the new table: a foreign key into a masked column tests guesses against it.
      const nt = { qual, lv, entry: lv.frames[0]?.entries[0] as Entry }
      for (const e of arr(s.tableElts)) {
        const tc = obj(obj(e)?.Constraint)
        if (tc) constraintLineage(ctx, tc, nt, null)
        const cd = obj(obj(e)?.ColumnDef)
        for (const k of arr(cd?.constraints)) {
          const con = obj(obj(k)?.Constraint)
          if (con && str(con.contype) !== 'CONSTR_GENERATED') constraintLineage(ctx, con, nt, str(cd?.colname))
        }
      }
      for (const k of arr(s.constraints)) {
        const con = obj(obj(k)?.Constraint)
        if (con) constraintLineage(ctx, con, nt, null)
      }
      return { outputs: null }
    }
    case 'AlterTableStmt':
      if (str(s.objtype) === 'OBJECT_TYPE') return { outputs: null }
      alterTable(ctx, s)
      return { outputs: null }
    case 'IndexStmt': {
      const t = tableLevel(ctx, obj(s.relation) ?? fail('CREATE INDEX without a table'))
      const acc = new Acc()
      for (const e of [...arr(s.indexParams), ...arr(s.indexIncludingParams)]) {
        const el = obj(obj(e)?.IndexElem)
        if (el) acc.add(indexElem(ctx, el, t))
      }
      if (s.whereClause !== undefined) acc.add(evalExpr(ctx, s.whereClause, t.lv))
      ctx.attach(`index on ${t.qual}`, acc.lin())
      return { outputs: null }
    }
    case 'CreateStatsStmt': {
      const rels = arr(s.relations)
      const first = obj(obj(rels[0])?.RangeVar)
      if (rels.length !== 1 || !first) fail('CREATE STATISTICS over something other than one table')
      const t = tableLevel(ctx, first)
      const acc = new Acc()
      for (const e of arr(s.exprs)) {
        const el = obj(obj(e)?.StatsElem) ?? fail('a statistics element that cannot be read')
        const name = str(el.name)
        acc.add(name !== null ? namedColumn(t.entry, name) : evalExpr(ctx, el.expr, t.lv))
      }
      ctx.attach(`statistics on ${t.qual}`, acc.lin())
      return { outputs: null }
    }
    case 'ClusterStmt': {
      const rv = obj(s.relation)
      // Rows are rewritten in the order of an index: their physical order (ctid) then tells it.
      if (rv) ctx.attach('CLUSTER', wholeRow(tableLevel(ctx, rv).entry))
      else ctx.attach('CLUSTER', { ...CLEAR, opaque: 'CLUSTER without a table reorders every clustered table' })
      return { outputs: null }
    }
    case 'CreateDomainStmt':
    case 'AlterDomainStmt': {
      const star: Slot[] = [{ name: 'value', lin: CLEAR }]
      const lv: Level = { frames: [{ star, entries: [] }], outer: null, ctes: null }
      const cons = type === 'CreateDomainStmt' ? arr(s.constraints) : [s.def]
      for (const k of cons) {
        const con = obj(obj(k)?.Constraint)
        if (con?.raw_expr !== undefined) ctx.attach('domain constraint', evalExpr(ctx, con.raw_expr, lv))
      }
      const sub = str(s.subtype)
      if (type === 'AlterDomainStmt' && (sub === 'C' || sub === 'V' || sub === 'N'))
        // The new check runs over every stored value of every column of this type: which columns
        // those are is not in the catalog the analysis has, so masked ones may be among them.
        ctx.attach('domain constraint', { ...CLEAR, opaque: 'a domain constraint is checked against every column of the domain' })
      return { outputs: null }
    }
    case 'DefineStmt': {
      const kind = str(s.kind)
      // Operators and aggregates are reached by ordinary syntax (`=`, `max(x)`), a base type by
      // every conversion to it: each runs the functions it names wherever a value reaches it.
      if (kind === 'OBJECT_OPERATOR' || kind === 'OBJECT_AGGREGATE' || kind === 'OBJECT_TYPE')
        ctx.attach(`CREATE ${kind.slice(7)}`, {
          ...CLEAR,
          opaque: `a new ${kind.slice(7).toLowerCase()} runs user code wherever ordinary syntax reaches it`,
        })
      if (kind === 'OBJECT_AGGREGATE') ctx.defines.push(stringList(s.defnames).pop() ?? '')
      return { outputs: null }
    }
    case 'CreateFunctionStmt':
      ctx.defines.push(stringList(s.funcname).pop() ?? '')
      return { outputs: null }
    case 'RenameStmt': {
      const kind = str(s.renameType)
      const rv = obj(s.relation)
      const newname = str(s.newname) ?? fail('RENAME without a new name')
      if (kind === 'OBJECT_SCHEMA') fail('renaming a schema moves every relation in it')
      if (kind === 'OBJECT_FUNCTION' || kind === 'OBJECT_PROCEDURE' || kind === 'OBJECT_ROUTINE' || kind === 'OBJECT_AGGREGATE')
        ctx.defines.push(newname)
      if ((kind === 'OBJECT_COLUMN' || kind === 'OBJECT_ATTRIBUTE') && rv) {
        const t = relTarget(rv)
        moveRelation(ctx, rv, null, t.name, str(s.subname) ?? '', newname)
      } else if (kind !== null && RELATION_OBJECTS.has(kind) && rv) moveRelation(ctx, rv, null, newname, null, null)
      return { outputs: null }
    }
    case 'AlterObjectSchemaStmt': {
      const rv = obj(s.relation)
      const kind = str(s.objectType)
      if (kind !== null && RELATION_OBJECTS.has(kind) && rv) moveRelation(ctx, rv, str(s.newschema), relTarget(rv).name, null, null)
      return { outputs: null }
    }
    case 'CopyStmt': {
      const rv = obj(s.relation)
      const encoding = arr(s.options)
        .map((o) => obj(obj(o)?.DefElem))
        .find((d) => str(d?.defname) === 'encoding')
      const enc = encoding ? { copyEncoding: str(obj(obj(encoding.arg)?.String)?.sval) ?? '?' } : {}
      let outs: Out[]
      if (rv) {
        const target = writeTarget(ctx, rv)
        const att = stringList(s.attlist)
        if (s.is_from === true) {
          for (const c of att.length > 0 ? att : (target.columns ?? [])) ctx.write(`${target.qual}.${c}`, CLEAR)
          return { outputs: null, extra: enc }
        }
        const star: readonly Slot[] =
          att.length > 0
            ? att.map((c) => ({ name: c, lin: entryColumn(target.entry, c) ?? fail(`COPY column ${c} is not in the catalog`) }))
            : target.star
        outs = star.map((sl) =>
          sl.unknown !== undefined ? { name: '*', lin: CLEAR, unknownStar: sl.unknown } : { name: sl.name, lin: sl.lin },
        )
      } else {
        const q = nodeType(s.query) ?? fail('COPY without a table or query')
        outs = statementOuts(ctx, q[0], q[1], null, null) ?? []
      }
      if (s.is_program === true || typeof s.filename === 'string') {
        // COPY … TO a file or program stores the rows where the gateway never sees them again.
        const target = s.is_program === true ? 'program' : `file:${str(s.filename) ?? ''}`
        const acc = new Acc()
        for (const o of outs) {
          if (o.unknownStar !== undefined) fail(`COPY of ${o.unknownStar}, whose columns the catalog does not know, out of band`)
          acc.add(o.lin)
        }
        ctx.write(target, acc.lin())
        return { outputs: null, extra: enc }
      }
      return { outputs: outs, extra: { copy: copyOptions(s), ...enc } }
    }
    case 'ExplainStmt': {
      const q = nodeType(s.query) ?? fail('EXPLAIN without a statement')
      const analyze = arr(s.options).some((o) => {
        const d = obj(obj(o)?.DefElem)
        if (str(d?.defname) !== 'analyze') return false
        const v =
          str(obj(obj(d?.arg)?.String)?.sval) ?? (obj(obj(d?.arg)?.Boolean) ? String(obj(obj(d?.arg)?.Boolean)?.boolval === true) : 'true')
        return !['false', 'off', '0'].includes(v.toLowerCase())
      })
      const writesBefore = ctx.writes.length
      statement(ctx, q[0], q[1])
      // Without ANALYZE the statement is only planned: nothing is written.
      if (!analyze) ctx.writes.splice(writesBefore)
      return { outputs: [{ name: 'QUERY PLAN', lin: CLEAR }] }
    }
    case 'DeclareCursorStmt': {
      const q = nodeType(s.query) ?? fail('DECLARE without a query')
      return { outputs: statementOuts(ctx, q[0], q[1], null, null), extra: { declare: str(s.portalname) ?? '' } }
    }
    case 'FetchStmt':
      return { outputs: null, extra: { fetch: str(s.portalname) ?? '' } }
    case 'PrepareStmt': {
      const q = nodeType(s.query) ?? fail('PREPARE without a statement')
      const inner = statement(ctx, q[0], q[1])
      return { outputs: inner.outputs, extra: { ...inner.extra, prepare: str(s.name) ?? '' } }
    }
    case 'ExecuteStmt': {
      // A parameter computed from table data would flow into the prepared statement's outputs.
      const p = evalExpr(ctx, s.params, { frames: [], outer: null, ctes: null })
      if (p.sources.size > 0 || p.opaque !== null) fail('EXECUTE with a parameter computed from table data')
      return { outputs: null, extra: { execute: str(s.name) ?? '' } }
    }
    case 'VariableShowStmt': {
      const name = str(s.name) ?? 'setting'
      if (name.toLowerCase() === 'all') return { outputs: ['name', 'setting', 'description'].map((n) => ({ name: n, lin: CLEAR })) }
      return { outputs: [{ name, lin: CLEAR }] }
    }
    case 'CreateSchemaStmt': {
      for (const e of arr(s.schemaElts)) {
        const t = nodeType(e) ?? fail('CREATE SCHEMA element that cannot be read')
        statement(ctx, t[0], t[1])
      }
      return { outputs: null }
    }
    case 'DoStmt':
      return fail('a DO block runs code the lineage analysis cannot see into')
    case 'CallStmt':
      return fail('CALL runs a procedure the lineage analysis cannot see into')
    case 'CreateTrigStmt':
    case 'CreateEventTrigStmt':
    case 'RuleStmt':
      return fail('a trigger or rule runs code on later statements that the lineage analysis cannot see')
    default:
      // Nothing here returns or moves data now (a function body runs later, and its calls are opaque).
      if (INERT_STATEMENTS.has(type)) return { outputs: null }
      fail(`statement type ${type} is not understood by the lineage analysis`)
  }
}

function toOutput(o: Out): OutputLineage {
  const base: OutputLineage = {
    name: o.name,
    sources: [...o.lin.sources].sort(),
    direct: o.lin.direct,
    directVia: o.lin.via,
    opaque: o.lin.opaque,
  }
  return o.unknownStar !== undefined ? { ...base, unknownStar: o.unknownStar } : base
}

function analyzeOne(stmt: unknown, text: string, catalog: LineageCatalog, ctx = new Ctx(catalog)): StatementLineage {
  const done = (r: Partial<StatementLineage>): StatementLineage => ({
    sql: text,
    outputs: null,
    relations: [...ctx.relations].sort(),
    predicates: [...ctx.predicates].sort(),
    writes: ctx.writes,
    opaqueCalls: [...ctx.opaqueCalls].sort(),
    calls: ctx.calls,
    computed: [...ctx.computed].sort(),
    ddl: ctx.ddl,
    definesFunctions: ctx.defines,
    unresolved: null,
    ...r,
  })
  try {
    const t = nodeType(stmt) ?? fail('the statement cannot be read')
    const r = statement(ctx, t[0], t[1])
    return done({ outputs: r.outputs?.map(toOutput) ?? null, ...r.extra })
  } catch (err) {
    if (err instanceof Unresolved) return done({ unresolved: err.message })
    // Anything else (a tree shape never seen) is just as much "not understood": fail closed.
    return done({ unresolved: `lineage analysis failed: ${err instanceof Error ? err.message : String(err)}` })
  }
}

/** search_path as a SET statement leaves it: the value, 'default', or 'unknown'; null if not a SET of it. */
function setPath(stmt: unknown): string | null {
  const t = nodeType(stmt)
  if (t?.[0] !== 'VariableSetStmt') return null
  const s = t[1]
  const kind = str(s.kind)
  if (kind === 'VAR_RESET_ALL') return 'default'
  if ((str(s.name) ?? '').toLowerCase() !== 'search_path') return null
  if (kind === 'VAR_SET_DEFAULT' || kind === 'VAR_RESET') return 'default'
  if (kind !== 'VAR_SET_VALUE') return 'unknown'
  const parts = arr(s.args).map((a) => {
    const c = nodeType(a)
    const v = c?.[0] === 'A_Const' ? str(obj(c[1].sval)?.sval) : null
    // Quote each name again so parseSearchPath keeps its case and commas.
    return v === null ? null : `"${v.replace(/"/g, '""')}"`
  })
  return parts.every((p) => p !== null) ? parts.join(', ') : 'unknown'
}

/** Functions created earlier in the same text: the catalog snapshot cannot know them yet. */
function createdFunction(stmt: unknown): string | null {
  const t = nodeType(stmt)
  if (t?.[0] !== 'CreateFunctionStmt') return null
  return stringList(t[1].funcname).pop() ?? ''
}

/** One entry per statement of `sql`. The parser must be loaded (loadSqlParser) first. */
export function analyzeLineage(sql: string, catalog: LineageCatalog): StatementLineage[] {
  let tree: unknown
  try {
    tree = parseSync(sql)
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err)
    return [
      {
        sql,
        outputs: null,
        relations: [],
        predicates: [],
        writes: [],
        opaqueCalls: [],
        unresolved: `the statement could not be parsed: ${msg}`,
      },
    ]
  }
  const bytes = Buffer.from(sql, 'utf8')
  // Statements run in order: a SET search_path or CREATE FUNCTION changes how later ones resolve.
  let current: LineageCatalog | null = catalog
  let pathUnknown = false
  const created = new Set<string>()
  const out: StatementLineage[] = []
  for (const raw of arr(obj(tree)?.stmts)) {
    const r = obj(raw)
    const loc = typeof r?.stmt_location === 'number' ? r.stmt_location : 0
    const len = typeof r?.stmt_len === 'number' && r.stmt_len > 0 ? r.stmt_len : bytes.length - loc
    const text = bytes.toString('utf8', loc, loc + len).trim()
    const base: LineageCatalog | null = current
    const cat: LineageCatalog | null =
      base === null || created.size === 0
        ? base
        : {
            relation: (s, n) => base.relation(s, n),
            isUserFunction: (n) => created.has(n) || base.isUserFunction(n),
            isUserOperator: (n) => base.isUserOperator?.(n) === true,
          }
    const ctx: Ctx | null = cat ? new Ctx(cat) : null
    out.push(
      ctx === null || pathUnknown
        ? {
            sql: text,
            outputs: null,
            relations: [],
            predicates: [],
            writes: [],
            opaqueCalls: [],
            unresolved: 'search_path was changed earlier in the query to a value the analysis cannot follow',
          }
        : analyzeOne(r?.stmt, text, ctx.catalog, ctx),
    )
    const fn = createdFunction(r?.stmt)
    if (fn) created.add(fn)
    const path: string | null = setPath(r?.stmt) ?? ctx?.pathChange ?? null
    if (path === 'default') current = catalog
    else if (path === 'unknown') pathUnknown = true
    else if (path !== null) current = catalog.withSearchPath ? catalog.withSearchPath(path) : null
  }
  return out
}
