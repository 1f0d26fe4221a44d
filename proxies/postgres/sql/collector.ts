// The tree walk behind classification: relations (respecting CTE scopes), function calls,
// operators and casts, sequences, and the helpers that read constants and names off the tree.

import { type FunctionCall, SQL_TEXT_FUNCTIONS } from './functions.js'
import { arr, nodeType, type Obj, obj, str, stringList } from './lineage-ast.js'
import type { RelName } from './resolve.js'
import type { InnerWrite, SettingChange } from './facts.js'

/** A constant's text value (A_Const with sval/ival/fval/boolval), else null. */
export function constText(v: unknown): string | null {
  const t = nodeType(v)
  if (t?.[0] !== 'A_Const') return null
  const c = t[1]
  if (c.isnull) return null
  const s = obj(c.sval)?.sval
  if (typeof s === 'string') return s
  const i = obj(c.ival)
  if (i) return String(i.ival ?? 0)
  const f = obj(c.fval)?.fval
  if (typeof f === 'string') return f
  const b = obj(c.boolval)
  if (b) return b.boolval ? 'on' : 'off'
  return null
}

export function snake(type: string): string {
  return type
    .replace(/Stmt$/, '')
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .toLowerCase()
}

/** Walks a statement's tree, collecting relations (respecting CTE scopes) and function calls. */
export class Collector {
  readonly tables: RelName[] = []
  readonly functions = new Set<string>()
  readonly settings: SettingChange[] = []
  dataModifyingCte = false
  locking = false
  unknownSetConfig = false
  sqlTextFunction: string | null = null
  literalSensitive = false
  readonly cteWrites: RelName[] = []
  readonly calls: FunctionCall[] = []
  readonly operators = new Set<string>()
  readonly castTypes = new Set<string>()
  readonly writes: InnerWrite[] = []
  readonly sequenceWrites: RelName[] = []
  lockStrength: string | null = null

  walk(node: unknown, scopes: readonly ReadonlySet<string>[]): void {
    if (Array.isArray(node)) {
      for (const x of node) this.walk(x, scopes)
      return
    }
    const o = obj(node)
    if (!o) return
    // Fields typed RangeVar (InsertStmt.relation, IntoClause.rel, …) come without the wrapper.
    if (typeof o.relname === 'string') {
      this.rangeVar(o, scopes)
      return
    }
    for (const [key, value] of Object.entries(o)) {
      const inner = obj(value)
      if (key === 'RangeVar' && inner) {
        this.rangeVar(inner, scopes)
        continue
      }
      if (key === 'FuncCall' && inner) this.funcCall(inner)
      if (key === 'A_Expr' && inner) this.operator(inner)
      if (key === 'TypeCast' && inner) {
        const names = stringList(obj(inner.typeName)?.names)
        if (names.length > 0) this.castTypes.add(names.join('.'))
      }
      if (key === 'RangeTableSample' && inner) {
        // TABLESAMPLE method(…) calls the method's handler function.
        const parts = stringList(inner.method)
        const name = parts[parts.length - 1]
        if (name) this.calls.push({ schema: parts.length > 1 ? (parts[parts.length - 2] ?? null) : null, name })
      }
      if (inner && (key === 'SelectStmt' || key === 'InsertStmt' || key === 'UpdateStmt' || key === 'DeleteStmt' || key === 'MergeStmt')) {
        this.statementWithCtes(key, inner, scopes)
        continue
      }
      if (typeof value === 'object' && value !== null) this.walk(value, scopes)
    }
  }

  private statementWithCtes(key: string, s: Obj, scopes: readonly ReadonlySet<string>[]): void {
    if (key === 'SelectStmt' && arr(s.lockingClause).length > 0) {
      this.locking = true
      this.lockStrength ??= str(obj(obj(arr(s.lockingClause)[0])?.LockingClause)?.strength)
    }
    if (key !== 'SelectStmt') {
      const rel = obj(s.relation)
      const kind = key === 'InsertStmt' ? 'insert' : key === 'UpdateStmt' ? 'update' : key === 'DeleteStmt' ? 'delete' : 'merge'
      this.writes.push({
        kind,
        table: rel ? relName(rel) : null,
        hasWhere:
          kind === 'merge'
            ? mergeBounded(s)
            : (kind === 'update' || kind === 'delete') && s.whereClause !== undefined && s.whereClause !== null,
      })
    }
    const w = obj(s.withClause)
    if (!w) {
      this.walk(s, scopes)
      return
    }
    const ctes = arr(w.ctes)
      .map((c) => obj(obj(c)?.CommonTableExpr))
      .filter((c): c is Obj => c !== null)
    const names = ctes.map((c) => str(c.ctename) ?? '')
    const recursive = w.recursive === true
    ctes.forEach((c, i) => {
      // A non-recursive CTE sees only the CTEs before it: `WITH t AS (SELECT * FROM t)` reads the table t.
      const visible = new Set(recursive ? names : names.slice(0, i))
      const q = nodeType(c.ctequery)
      if (q && (q[0] === 'InsertStmt' || q[0] === 'UpdateStmt' || q[0] === 'DeleteStmt' || q[0] === 'MergeStmt')) {
        this.dataModifyingCte = true
        const rel = obj(obj(q[1].relation))
        if (rel) this.cteWrites.push(relName(rel))
      }
      this.walk(c.ctequery, [...scopes, visible])
    })
    const rest: Obj = { ...s }
    delete rest.withClause
    this.walk(rest, [...scopes, new Set(names)])
  }

  private rangeVar(r: Obj, scopes: readonly ReadonlySet<string>[]): void {
    const rel = relName(r)
    if (rel.schema === null && scopes.some((s) => s.has(rel.name))) return // a CTE reference
    this.tables.push(rel)
  }

  private operator(e: Obj): void {
    const parts = stringList(e.name)
    // BETWEEN is spelled by name but runs the >= and <= operators found for the argument types.
    if (/BETWEEN/.test(str(e.kind) ?? '')) {
      this.operators.add('>=')
      this.operators.add('<=')
    } else if (parts.length > 0) this.operators.add(parts.join('.'))
  }

  private funcCall(f: Obj): void {
    const parts = stringList(f.funcname)
    const exact = parts[parts.length - 1] ?? ''
    const name = exact.toLowerCase()
    if (name === '') return
    this.calls.push({ schema: parts.length > 1 ? (parts[parts.length - 2] ?? null) : null, name: exact })
    this.functions.add(name)
    if (SQL_TEXT_FUNCTIONS.has(name)) this.sqlTextFunction ??= name
    if ((name === 'nextval' || name === 'setval') && parts.length <= 2) {
      // The sequence a read would advance is a write target a policy can scope. Its name is a
      // literal ('s1', 's1'::regclass): two texts of one shape name different sequences.
      this.literalSensitive = true
      const seq = sequenceName(constText(uncast(arr(f.args)[0])))
      if (seq) this.sequenceWrites.push(seq)
    }
    if (name === 'set_config') {
      // set_config(name, value, is_local) is SET by another spelling.
      this.literalSensitive = true
      const args = arr(f.args)
      const n = constText(args[0])
      const v = constText(args[1])
      const local = constText(args[2])
      if (n === null || v === null || (args.length > 2 && local === null)) this.unknownSetConfig = true
      else this.settings.push({ name: n.toLowerCase(), value: v, local: local === 'on' || local === 'true' || local === 't' })
    }
  }
}

/** Whether a ColumnRef qualified by one of `names` occurs anywhere under `node`. */
function refersTo(node: unknown, names: ReadonlySet<string>): boolean {
  if (Array.isArray(node)) return node.some((x) => refersTo(x, names))
  const o = obj(node)
  if (!o) return false
  const ref = obj(o.ColumnRef)
  if (ref) {
    const parts = stringList(ref.fields)
    if (parts.length >= 2 && names.has(parts[parts.length - 2] ?? '')) return true
  }
  return Object.values(o).some((v) => typeof v === 'object' && v !== null && refersTo(v, names))
}

/**
 * MERGE has no WHERE: the rows an UPDATE or DELETE action reaches are bounded only by the ON
 * condition or the action's own AND condition. `ON true` (or `ON s.x = 1`) matches every row of the
 * target, so a condition counts as bounding only if it names a column of the target, qualified by
 * the target's alias or name (an unqualified column could be the source's). A MERGE whose only
 * actions insert or do nothing is bounded.
 */
function mergeBounded(s: Obj): boolean {
  const rel = obj(s.relation)
  const names = new Set<string>()
  if (rel) {
    const alias = str(obj(obj(rel.alias)?.Alias ?? rel.alias)?.aliasname)
    if (alias) names.add(alias)
    else {
      const r = relName(rel)
      names.add(r.name)
    }
  }
  const onBounds = refersTo(s.joinCondition, names)
  for (const c of arr(s.mergeWhenClauses)) {
    const w = obj(obj(c)?.MergeWhenClause)
    if (!w) return false
    const cmd = str(w.commandType)
    if (cmd !== 'CMD_UPDATE' && cmd !== 'CMD_DELETE') continue
    // WHEN NOT MATCHED BY SOURCE reaches the target rows the ON condition does not match.
    const bySource = str(w.matchKind) === 'MERGE_WHEN_NOT_MATCHED_BY_SOURCE'
    if ((bySource || !onBounds) && !refersTo(w.condition, names)) return false
  }
  return true
}

/** The argument of a cast to regclass or text ('s1'::regclass), else the node itself. */
function uncast(v: unknown): unknown {
  const t = nodeType(v)
  if (t?.[0] !== 'TypeCast') return v
  const names = stringList(obj(t[1].typeName)?.names)
  const type = names[names.length - 1]
  return type === 'regclass' || type === 'text' ? t[1].arg : v
}

/** A regclass literal ('s', 'public.s', '"My Seq"') as a relation name, or null. */
function sequenceName(text: string | null): RelName | null {
  if (text === null) return null
  const parts: string[] = []
  const re = /\s*(?:"((?:[^"]|"")*)"|([^."\s]+))\s*(\.|$)/gy
  let m: RegExpExecArray | null = re.exec(text)
  while (m !== null) {
    parts.push(m[1] !== undefined ? m[1].replace(/""/g, '"') : (m[2] ?? '').toLowerCase())
    if (m[3] === '') break
    m = re.exec(text)
  }
  if (parts.length === 0 || parts.length > 2) return null
  return parts.length === 2 ? { schema: parts[0] ?? null, name: parts[1] ?? '' } : { schema: null, name: parts[0] ?? '' }
}

export function relName(r: Obj): RelName {
  const schema = str(r.schemaname)
  return { schema: schema === null || schema === '' ? null : schema, name: str(r.relname) ?? '' }
}
