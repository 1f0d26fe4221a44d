// What the lineage analysis needs from PostgreSQL, read in one round trip: every relation with its
// kind and columns (attnum order, dropped ones excluded), the definitions of views and materialized
// views with every name schema-qualified, and the names of functions and operators that live outside
// pg_catalog (any of them may shadow a builtin through search_path, or run SQL of its own).
//
// pg_get_viewdef qualifies a name only when it is not visible through the current search_path, so
// the query runs with `SET LOCAL search_path = pg_catalog`. Sent as ONE simple-protocol Query message
// the SET LOCAL lasts only for that message's implicit transaction; the session's own search_path
// is untouched afterwards. Run it outside a transaction block (at session start): inside one, SET
// LOCAL would last until the client's COMMIT.

import type { LineageCatalog, RelationInfo } from './lineage-types.js'
import { effectivePath, parseSearchPath } from './resolve.js'

/** The query (two statements, one Query message). Its second result holds the rows
 *  `tag, schema, name, relkind, columns (JSON array), definition`: tag 'r' a relation, 'f' the name
 *  of a function outside pg_catalog, 'o' of an operator outside pg_catalog implemented in a language
 *  that can run SQL (not C or internal: extension operators such as pg_trgm's % stay transparent),
 *  'F' / 'O' the names of pg_catalog's functions / operators (a name in neither list was created
 *  after the snapshot: it counts as user-defined), 'P' a row-level security policy that applies to
 *  this role: `'P', schema, relation, command, USING expression, WITH CHECK expression`. */
/** One relation's catalog version: its pg_class row, its columns' pg_attribute rows and its rules'
 *  pg_rewrite rows and its row-level security policies' pg_policy rows, each by (oid or attnum, xmin). Any DDL that changes what the relation is, which
 *  columns it has or what a view selects writes a new row version in one of them (a new xmin);
 *  VACUUM and ANALYZE update pg_class in place and leave it alone. */
export const RELATION_VERSION_SQL = `c.oid::text || '/' || c.xmin::text
    || '/' || coalesce((SELECT string_agg(a.attnum::text || ':' || a.xmin::text, ',' ORDER BY a.attnum) FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0), '')
    || '/' || coalesce((SELECT string_agg(r.oid::text || ':' || r.xmin::text, ',' ORDER BY r.oid) FROM pg_catalog.pg_rewrite r WHERE r.ev_class = c.oid), '')
    || '/' || coalesce((SELECT string_agg(p.oid::text || ':' || p.xmin::text, ',' ORDER BY p.oid) FROM pg_catalog.pg_policy p WHERE p.polrelid = c.oid), '')`

/** Whether row-level security applies to the session's role reading relation `c` (as the server
 *  decides it in check_enable_rls): enabled on the relation, the role neither superuser nor
 *  BYPASSRLS, and not the owner unless FORCE ROW LEVEL SECURITY. The policies of such a relation
 *  run for every statement that reads or writes it, whatever they call. */
const RLS_APPLIES_SQL = `c.relrowsecurity AND NOT (SELECT r.rolsuper OR r.rolbypassrls FROM pg_roles r WHERE r.rolname = current_user)
    AND (c.relforcerowsecurity OR NOT pg_has_role(c.relowner, 'USAGE'))`

export const LINEAGE_CATALOG_SQL = `SET LOCAL search_path = pg_catalog;
SELECT 'r', n.nspname, c.relname, c.relkind::text,
  (SELECT json_agg(a.attname ORDER BY a.attnum) FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)::text,
  CASE WHEN c.relkind IN ('v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') THEN pg_get_viewdef(c.oid) END,
  ${RELATION_VERSION_SQL},
  (SELECT json_agg(a.attnum ORDER BY a.attnum) FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p') AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
UNION ALL
SELECT DISTINCT 'f', NULL, p.proname::text, NULL, NULL, NULL, NULL, NULL FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname <> 'pg_catalog' OR p.oid >= 16384
UNION ALL
SELECT 'k', NULL, c.oid::text, NULL, NULL, NULL, NULL, NULL FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind = 'S' OR (c.relkind IN ('r', 'v', 'm', 'f', 'p') AND n.nspname LIKE 'pg_temp%')
UNION ALL
SELECT DISTINCT 'o', NULL, o.oprname::text, NULL, NULL, NULL, NULL, NULL FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace
  JOIN pg_proc p ON p.oid = o.oprcode JOIN pg_language l ON l.oid = p.prolang WHERE (n.nspname <> 'pg_catalog' OR o.oid >= 16384) AND l.lanname NOT IN ('c', 'internal')
UNION ALL
SELECT DISTINCT 'F', NULL, p.proname::text, NULL, NULL, NULL, NULL, NULL FROM pg_proc p WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.oid < 16384
UNION ALL
SELECT DISTINCT 'O', NULL, o.oprname::text, NULL, NULL, NULL, NULL, NULL FROM pg_operator o WHERE o.oprnamespace = 'pg_catalog'::regnamespace AND o.oid < 16384
UNION ALL
SELECT 'P', n.nspname, c.relname, p.polcmd::text, pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid), NULL, NULL
  FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE ${RLS_APPLIES_SQL}
UNION ALL
SELECT DISTINCT 'c', NULL, format_type(k.castsource, NULL) || ' -> ' || format_type(k.casttarget, NULL), NULL, NULL, NULL, NULL, NULL
  FROM pg_cast k JOIN pg_proc p ON p.oid = k.castfunc JOIN pg_language l ON l.oid = p.prolang WHERE k.oid >= 16384 AND l.lanname NOT IN ('c', 'internal')`

/** A bigger catalog than this is refused (the lead's relation cap, with room for functions). */
export const MAX_LINEAGE_CATALOG_ROWS = 400_000

export type CatalogRow = readonly (string | null)[]

/** The parsed rows, independent of any search_path: bind it to a session with `lineageCatalogFor`. */
export interface LineageCatalogSnapshot {
  readonly relations: ReadonlyMap<string, RelationInfo>
  readonly functions: ReadonlySet<string>
  readonly operators: ReadonlySet<string>
  /** Relations by unqualified name, in every schema. */
  readonly byName: ReadonlyMap<string, readonly RelationInfo[]>
  /** pg_catalog's function and operator names; empty when the rows did not include them. */
  readonly builtinFunctions: ReadonlySet<string>
  readonly builtinOperators: ReadonlySet<string>
  /** User-defined casts whose function can run SQL (`source -> target`). */
  readonly casts: readonly string[]
  /** Each relation's catalog version (RELATION_VERSION_SQL), by `schema.name`; empty when the rows had none. */
  readonly versions: ReadonlyMap<string, string>
  /** Relations by OID with the attnum of each of their columns (parallel to `columns`), to check the
   *  origins the server names in a RowDescription; empty when the rows had no OIDs or attnums. */
  readonly byOid: ReadonlyMap<number, { readonly relation: RelationInfo; readonly attnums: readonly number[] }>
  /** OIDs of relations lineage does not describe but a result may come from: sequences and
   *  temporary relations (of any session: pg_class lists them all). */
  readonly outside: ReadonlySet<number>
}

export class LineageCatalogError extends Error {
  readonly code = 'GH_ERR_LINEAGE_CATALOG'
  override readonly name = 'LineageCatalogError'
}

function columnsOf(json: string | null, where: string): string[] {
  if (json === null) return []
  let v: unknown
  try {
    v = JSON.parse(json)
  } catch (err) {
    throw new LineageCatalogError(`columns of ${where} are not JSON`, { cause: err })
  }
  if (!Array.isArray(v) || !v.every((x): x is string => typeof x === 'string'))
    throw new LineageCatalogError(`columns of ${where} are not a list of names`)
  return v
}

/** Parses the rows of LINEAGE_CATALOG_SQL's SELECT. Throws on anything unexpected (fail closed). */
export function parseLineageCatalog(rows: readonly CatalogRow[]): LineageCatalogSnapshot {
  if (rows.length > MAX_LINEAGE_CATALOG_ROWS) throw new LineageCatalogError(`catalog larger than ${MAX_LINEAGE_CATALOG_ROWS} rows`)
  const relations = new Map<string, RelationInfo>()
  const functions = new Set<string>()
  const operators = new Set<string>()
  const builtinFunctions = new Set<string>()
  const builtinOperators = new Set<string>()
  const casts: string[] = []
  const versions = new Map<string, string>()
  const byOid = new Map<number, { relation: RelationInfo; attnums: number[] }>()
  const outside = new Set<number>()
  const policies = new Map<string, string[]>()
  for (const [tag, schema, name, , using, check] of rows) {
    if (tag !== 'P') continue
    if (typeof schema !== 'string' || typeof name !== 'string') throw new LineageCatalogError('a policy row without its relation')
    const list = policies.get(`${schema}.${name}`) ?? []
    for (const e of [using, check]) if (typeof e === 'string') list.push(e)
    policies.set(`${schema}.${name}`, list)
  }
  for (const row of rows) {
    const [tag, schema, name, relkind, columns, definition, version, attnums] = row
    if (typeof name !== 'string') throw new LineageCatalogError('a catalog row without a name')
    if (tag === 'f') functions.add(name)
    else if (tag === 'o') operators.add(name)
    else if (tag === 'F') builtinFunctions.add(name)
    else if (tag === 'O') builtinOperators.add(name)
    else if (tag === 'c') casts.push(name)
    else if (tag === 'k') outside.add(Number(name))
    else if (tag === 'P') continue
    else if (tag === 'r') {
      if (typeof schema !== 'string') throw new LineageCatalogError(`relation ${name} without a schema`)
      const kind = relkind === 'v' || relkind === 'm' ? 'view' : relkind === 'r' || relkind === 'p' || relkind === 'f' ? 'table' : null
      if (kind === null) throw new LineageCatalogError(`relation ${schema}.${name} of unknown kind ${String(relkind)}`)
      const relation: RelationInfo = {
        schema,
        name,
        kind,
        columns: columnsOf(columns ?? null, `${schema}.${name}`),
        definition: kind === 'view' ? (definition ?? null) : null,
        ...(relkind === 'f' ? { foreign: true } : {}),
        ...(policies.has(`${schema}.${name}`) ? { policies: policies.get(`${schema}.${name}`) ?? [] } : {}),
      }
      relations.set(`${schema}.${name}`, relation)
      if (typeof version === 'string') {
        versions.set(`${schema}.${name}`, version)
        const oid = Number(version.slice(0, version.indexOf('/')))
        // No live column: json_agg gives NULL (rows without the attnum field give undefined).
        const nums = attnums === undefined ? null : (attnumsOf(attnums, `${schema}.${name}`) ?? [])
        if (Number.isSafeInteger(oid) && oid > 0 && nums !== null && nums.length === relation.columns.length)
          byOid.set(oid, { relation, attnums: nums })
      }
    } else throw new LineageCatalogError(`unexpected catalog row tag ${String(tag)}`)
  }
  const byName = new Map<string, RelationInfo[]>()
  for (const r of relations.values()) {
    const list = byName.get(r.name)
    if (list) list.push(r)
    else byName.set(r.name, [r])
  }
  return { relations, byName, functions, operators, builtinFunctions, builtinOperators, casts, versions, byOid, outside }
}

function attnumsOf(json: string | null, where: string): number[] | null {
  if (json === null) return null
  let v: unknown
  try {
    v = JSON.parse(json)
  } catch (err) {
    throw new LineageCatalogError(`attnums of ${where} are not JSON`, { cause: err })
  }
  if (!Array.isArray(v) || !v.every((x): x is number => Number.isSafeInteger(x)))
    throw new LineageCatalogError(`attnums of ${where} are not a list of numbers`)
  return v
}

/** A LineageCatalog for a session: unqualified names resolve through its search_path as the server
 *  does (pg_catalog first unless placed explicitly; temporary relations are not in the snapshot). */
export function lineageCatalogFor(snap: LineageCatalogSnapshot, searchPath: string | readonly string[], user: string): LineageCatalog {
  const path = effectivePath(typeof searchPath === 'string' ? parseSearchPath(searchPath) : searchPath, user).filter((s) => s !== 'pg_temp')
  return {
    relation(schema: string | null, name: string): RelationInfo | null {
      if (schema !== null) return snap.relations.get(`${schema}.${name}`) ?? null
      for (const s of path) {
        const hit = snap.relations.get(`${s}.${name}`)
        if (hit) return hit
      }
      return null
    },
    isUserFunction: (name: string): boolean =>
      snap.functions.has(name) || (snap.builtinFunctions.size > 0 && !snap.builtinFunctions.has(name)),
    isUserOperator: (name: string): boolean =>
      snap.operators.has(name) || (snap.builtinOperators.size > 0 && !snap.builtinOperators.has(name)),
    withSearchPath: (next: string): LineageCatalog => lineageCatalogFor(snap, next, user),
    relationsNamed: (name: string): readonly RelationInfo[] => snap.byName.get(name) ?? [],
    userCasts: (): readonly string[] => snap.casts,
  }
}

/** Rows plus the session's search path (the raw setting or parsed names) and user → a catalog. */
export function buildLineageCatalog(rows: readonly CatalogRow[], searchPath: string | readonly string[], user: string): LineageCatalog {
  return lineageCatalogFor(parseLineageCatalog(rows), searchPath, user)
}

/** What the server says now about the names a statement depends on (rows of `CATALOG_CHECK_SQL`). */
export interface CatalogCheck {
  readonly relations: readonly string[]
  readonly functions: readonly string[]
}

/**
 * One query answering, for the relation names ($1) and function names ($2) given (`name[]`
 * parameters): every relation of such a name in any schema with its version (`'r', schema, name,
 * version`) and every function of such a name that is not a built-in (`'f', null, name, null`).
 * Meant to be prepared once: planning it costs far more than running it. `= ANY ($n)` lets both
 * lookups use the catalogs' name indexes.
 */
export const CATALOG_CHECK_SQL = `SELECT 'r', n.nspname::text, c.relname::text, ${RELATION_VERSION_SQL}
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname = ANY ($1::pg_catalog.name[]) AND c.relkind IN ('r', 'v', 'm', 'f', 'p') AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
UNION ALL
SELECT DISTINCT 'f', NULL, p.proname::text, NULL FROM pg_catalog.pg_proc p
WHERE p.proname = ANY ($2::pg_catalog.name[]) AND (p.pronamespace <> 'pg_catalog'::pg_catalog.regnamespace OR p.oid >= 16384)`

/** A list of names as the text form of a `name[]` parameter (a Bind value: never lexed as SQL). */
export function nameArray(list: readonly string[]): string {
  return `{${list.map((n) => `"${n.replace(/[\\"]/g, (c) => `\\${c}`)}"`).join(',')}}`
}

/** The Bind values of CATALOG_CHECK_SQL for a check. */
export function catalogCheckParams(check: CatalogCheck): [string, string] {
  return [nameArray(check.relations), nameArray(check.functions)]
}

/**
 * Whether the snapshot still describes the names checked: the same relations of each name, each
 * at the same version, and no user function of a checked name that the snapshot did not know.
 * A snapshot read without versions never validates.
 */
export function snapshotCurrent(snap: LineageCatalogSnapshot, check: CatalogCheck, rows: readonly CatalogRow[]): boolean {
  if (snap.versions.size === 0) return false
  const now = new Map<string, Map<string, string>>()
  const userFns = new Set<string>()
  for (const [tag, schema, name, version] of rows) {
    if (tag === 'r' && typeof schema === 'string' && typeof name === 'string') {
      const bySchema = now.get(name) ?? new Map<string, string>()
      bySchema.set(schema, version ?? '')
      now.set(name, bySchema)
    } else if (tag === 'f' && typeof name === 'string') userFns.add(name)
  }
  for (const name of check.relations) {
    const before = snap.byName.get(name) ?? []
    const current = now.get(name) ?? new Map<string, string>()
    if (before.length !== current.size) return false
    for (const r of before) {
      const v = snap.versions.get(`${r.schema}.${r.name}`)
      if (v === undefined || current.get(r.schema) !== v) return false
    }
  }
  for (const f of check.functions) if (userFns.has(f) !== snap.functions.has(f)) return false
  return true
}
