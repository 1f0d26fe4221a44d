// SQL facts from the real PostgreSQL grammar (libpg-query 18, WebAssembly). For each statement:
// its kind, the action of the table in docs/policies.md (normative), the tables read and written, every
// function called, whether an UPDATE/DELETE has a WHERE, and what it does to session state that
// the gateway must follow (SET search_path, PREPARE/EXECUTE/DEALLOCATE, transaction control).
//
// What cannot be fully understood is `sql.other`, the most dangerous class, never something
// harmless: a parse error, an unknown statement type, DO, CALL, COPY … PROGRAM, set_config with a
// computed name or value, EXECUTE of a statement the session never prepared.

import { type FunctionCall, opaqueOperators, SQL_TEXT_FUNCTIONS, sideEffectCalls } from './functions.js'
import type { RelName } from './resolve.js'
import { arr, nodeType, type Obj, obj, str, stringList } from './lineage-ast.js'
import { loadModule, parseSync } from 'libpg-query'
import { lexicalChange } from './lexical.js'
import { readsSessionText } from './session-text.js'

export type SqlAction = 'sql.session' | 'sql.read' | 'sql.write' | 'sql.ddl' | 'sql.admin' | 'sql.other'

/** The actions ordered by danger, for combining the statements of a query or a wrapped statement. */
const DANGER: Record<SqlAction, number> = {
  'sql.session': 0,
  'sql.read': 1,
  'sql.write': 2,
  'sql.ddl': 3,
  'sql.admin': 4,
  'sql.other': 5,
}

export function moreDangerous(a: SqlAction, b: SqlAction): SqlAction {
  return DANGER[a] >= DANGER[b] ? a : b
}

export interface SettingChange {
  /** Lower-case setting name; `all` for RESET ALL. */
  readonly name: string
  /** The new value as text, or null for RESET / SET … TO DEFAULT. */
  readonly value: string | null
  readonly local: boolean
}

export interface StatementFacts {
  /** The statement's own text (the part of a multi-statement query). */
  readonly sql: string
  readonly kind: string
  readonly action: SqlAction
  readonly tables: readonly RelName[]
  readonly writeTables: readonly RelName[]
  readonly functions: readonly string[]
  readonly hasWhere: boolean
  /** Why the statement is `sql.other` or otherwise unusual, for people reading a denial. */
  readonly note: string | null
  readonly settings: readonly SettingChange[]
  /** PREPARE name AS …: the inner statement, judged when executed. */
  readonly prepare: { readonly name: string; readonly inner: StatementFacts } | null
  /** EXECUTE name: resolved against the session's prepared statements. */
  readonly execute: string | null
  /** DEALLOCATE name (null name: ALL), DISCARD ALL. */
  readonly deallocate: { readonly name: string | null } | null
  /** COPY … PROGRAM. */
  readonly program: boolean
  /** True when a literal value changes the facts (SET, set_config): never cached by shape. */
  readonly literalSensitive: boolean
  /** DECLARE name, FETCH/MOVE name, CLOSE name (null name: CLOSE ALL), names as the server folds them. */
  readonly cursor: {
    readonly op: 'declare' | 'fetch' | 'close'
    readonly name: string | null
    /** For DECLARE: the cursor's query, which FETCH and MOVE run. */
    readonly query?: StatementFacts
  } | null
  /** Why the statement could change how the server reads SQL text (lexical.ts); refused when set. */
  readonly lexical: string | null
  /** Every function call as written (schema null when unqualified), for resolving against the
   *  server's catalog (a user function may shadow a built-in's name). */
  readonly calls: readonly FunctionCall[]
  /** Operators as written (`schema.op` when qualified with OPERATOR()), for the same reason. */
  readonly operators: readonly string[]
  /** Types named in casts (`x::t`, CAST(x AS t)), `schema.name` when qualified: a cast to a
   *  user-defined type or domain can run user code (input function, domain CHECK, user cast). */
  readonly castTypes: readonly string[]
  /** Calls that are not known-harmless built-ins by name alone (proxies/postgres/sql/functions.ts): a side
   *  effect, a user-defined or unknown function. The catalog can only add to them. */
  readonly sideEffectFunctions: readonly string[]
  /** Every INSERT/UPDATE/DELETE/MERGE the statement runs, wherever it sits (the statement itself,
   *  a data-modifying CTE, COPY (…) TO, EXPLAIN ANALYZE, CREATE TABLE AS). */
  readonly writes: readonly InnerWrite[]
  /** The reading verb the effective statement hides behind (`copy`, `select`, `explain_analyze`,
   *  `declare_cursor`, `create_table_as`…), when `kind` names the write it runs instead. */
  readonly wrapper: string | null
  /** CREATE FUNCTION/PROCEDURE/AGGREGATE/OPERATOR or a RENAME of one: a name that may shadow a
   *  built-in once the statement completes. */
  readonly createsRoutine: { readonly kind: 'function' | 'operator'; readonly name: string } | null
}

/** One data-modifying statement inside a statement. */
export interface InnerWrite {
  readonly kind: 'insert' | 'update' | 'delete' | 'merge'
  readonly table: RelName | null
  /** UPDATE/DELETE: a WHERE clause is present (MERGE: its ON condition, always). INSERT: false. */
  readonly hasWhere: boolean
}

export interface Analysis {
  readonly statements: readonly StatementFacts[]
  /** Set when the text could not be parsed: then `statements` holds one `sql.other` entry. */
  readonly error: string | null
  /** The analyzer's cache entry for the text's shape (proxies/postgres/sql/index.ts): the same object for
   * every text that differs only in literal values; absent when the text was not cached. */
  readonly shape?: object
}

let loaded: Promise<void> | null = null
/** The WebAssembly parser must be loaded once before the first parse. */
export function loadSqlParser(): Promise<void> {
  loaded ??= loadModule()
  return loaded
}

/**
 * Settings a session may change as `sql.session`: PostgreSQL 15's user-context (PGC_USERSET)
 * settings that change only how this session's own queries run or look. Everything else is
 * `sql.admin`: superuser-context settings (log_*, track_*, debug_*, dynamic_library_path, …, which
 * the gateway's upstream role could otherwise set), settings that change who the session is or
 * what it may do (role, session_authorization, row_security, default_transaction_read_only,
 * restrict_nonsystem_relation_kind), settings that change how SQL is lexed
 * (standard_conforming_strings, client_encoding, backslash_quote), settings that load code
 * (local_preload_libraries), that hide this session from the server's log or activity view
 * (log_parameter_max_length_on_error, debug_print_*, trace_*), and every unknown or custom
 * (`app.tenant`) name: a custom setting is often what a row-level security policy reads.
 */
export const SESSION_SETTINGS: ReadonlySet<string> = new Set([
  'application_name',
  'array_nulls',
  'bytea_output',
  'check_function_bodies',
  'client_min_messages',
  'commit_siblings',
  'constraint_exclusion',
  'cpu_index_tuple_cost',
  'cpu_operator_cost',
  'cpu_tuple_cost',
  'cursor_tuple_fraction',
  'datestyle',
  'default_statistics_target',
  'default_table_access_method',
  'default_tablespace',
  'default_text_search_config',
  'default_toast_compression',
  'default_transaction_isolation',
  'effective_cache_size',
  'effective_io_concurrency',
  'enable_async_append',
  'enable_bitmapscan',
  'enable_gathermerge',
  'enable_hashagg',
  'enable_hashjoin',
  'enable_incremental_sort',
  'enable_indexonlyscan',
  'enable_indexscan',
  'enable_material',
  'enable_memoize',
  'enable_mergejoin',
  'enable_nestloop',
  'enable_parallel_append',
  'enable_parallel_hash',
  'enable_partition_pruning',
  'enable_partitionwise_aggregate',
  'enable_partitionwise_join',
  'enable_seqscan',
  'enable_sort',
  'enable_tidscan',
  'extra_float_digits',
  'from_collapse_limit',
  'geqo',
  'geqo_effort',
  'geqo_generations',
  'geqo_pool_size',
  'geqo_seed',
  'geqo_selection_bias',
  'geqo_threshold',
  'gin_fuzzy_search_limit',
  'gin_pending_list_limit',
  'hash_mem_multiplier',
  'idle_in_transaction_session_timeout',
  'idle_session_timeout',
  'intervalstyle',
  'jit',
  'jit_above_cost',
  'jit_expressions',
  'jit_inline_above_cost',
  'jit_optimize_above_cost',
  'jit_tuple_deforming',
  'join_collapse_limit',
  'lc_monetary',
  'lc_numeric',
  'lc_time',
  'lock_timeout',
  'maintenance_io_concurrency',
  'maintenance_work_mem',
  'max_parallel_maintenance_workers',
  'max_parallel_workers',
  'max_parallel_workers_per_gather',
  'min_parallel_index_scan_size',
  'min_parallel_table_scan_size',
  'parallel_leader_participation',
  'parallel_setup_cost',
  'parallel_tuple_cost',
  'plan_cache_mode',
  'quote_all_identifiers',
  'random_page_cost',
  'recursive_worktable_factor',
  'search_path',
  'seq_page_cost',
  'statement_timeout',
  'synchronize_seqscans',
  'synchronous_commit',
  'temp_buffers',
  'temp_tablespaces',
  'timezone',
  'timezone_abbreviations',
  'transaction_deferrable',
  'transaction_isolation',
  'transform_null_equals',
  'work_mem',
  'xmlbinary',
  'xmloption',
])

/**
 * The gateway's own placeholders (proxies/postgres/hold.ts): they steer how a held statement waits
 * and what reviewers read, never what is allowed, so any chain that may run SQL may set them. Only
 * these two names: any other `gatehouse.*` name is an ordinary custom setting.
 */
export const GATEWAY_SETTINGS: ReadonlySet<string> = new Set(['gatehouse.approval_wait', 'gatehouse.reason'])

/** Whether changing setting `name` (lower case) is `sql.admin` rather than `sql.session`. */
export function settingNeedsAdmin(name: string): boolean {
  return name !== 'all' && !SESSION_SETTINGS.has(name) && !GATEWAY_SETTINGS.has(name)
}

/** A constant's text value (A_Const with sval/ival/fval/boolval), else null. */
function constText(v: unknown): string | null {
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

function snake(type: string): string {
  return type
    .replace(/Stmt$/, '')
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .toLowerCase()
}

/** Walks a statement's tree, collecting relations (respecting CTE scopes) and function calls. */
class Collector {
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

function relName(r: Obj): RelName {
  const schema = str(r.schemaname)
  return { schema: schema === null || schema === '' ? null : schema, name: str(r.relname) ?? '' }
}

const ADMIN_STMTS = new Set([
  'CreateRoleStmt',
  'AlterRoleStmt',
  'AlterRoleSetStmt',
  'DropRoleStmt',
  'GrantStmt',
  'GrantRoleStmt',
  'AlterDefaultPrivilegesStmt',
  'AlterSystemStmt',
  'CreateExtensionStmt',
  'AlterExtensionStmt',
  'AlterExtensionContentsStmt',
  'VacuumStmt',
  'CheckPointStmt',
  'LoadStmt',
  'CreatedbStmt',
  'DropdbStmt',
  'AlterDatabaseStmt',
  'AlterDatabaseSetStmt',
  'AlterDatabaseRefreshCollStmt',
  'CreateTableSpaceStmt',
  'DropTableSpaceStmt',
  'AlterTableSpaceOptionsStmt',
  'ReassignOwnedStmt',
  'DropOwnedStmt',
  'AlterOwnerStmt',
  'CreateUserMappingStmt',
  'AlterUserMappingStmt',
  'DropUserMappingStmt',
  'CreateForeignServerStmt',
  'AlterForeignServerStmt',
  'CreateFdwStmt',
  'AlterFdwStmt',
  'ImportForeignSchemaStmt',
  'SecLabelStmt',
  'CreateSubscriptionStmt',
  'AlterSubscriptionStmt',
  'DropSubscriptionStmt',
  'CreatePublicationStmt',
  'AlterPublicationStmt',
  'CreateEventTrigStmt',
  'AlterEventTrigStmt',
  'CreatePLangStmt',
  'CreateConversionStmt',
  'CreateCastStmt',
  'CreateTransformStmt',
  'AlterCollationStmt',
  'AlterSystemStmt',
  'ReplicaIdentityStmt',
])

const DDL_STMTS = new Set([
  'CommentStmt',
  'TruncateStmt',
  'ReindexStmt',
  'ClusterStmt',
  'RefreshMatViewStmt',
  'RenameStmt',
  'RuleStmt',
  'ViewStmt',
  'IndexStmt',
  'DefineStmt',
  'CompositeTypeStmt',
  'AlterObjectSchemaStmt',
  'AlterObjectDependsStmt',
  'AlterEnumStmt',
  'AlterTSDictionaryStmt',
  'AlterTSConfigurationStmt',
  'AlterOperatorStmt',
  'AlterTypeStmt',
  'AlterStatsStmt',
  'AlterDomainStmt',
  'AlterFunctionStmt',
  'AlterPolicyStmt',
  'AlterSeqStmt',
  'AlterTableStmt',
  'AlterTableMoveAllStmt',
  'CreateTableAsStmt',
])

const LOCK_KINDS: Readonly<Record<string, string>> = {
  LCS_FORUPDATE: 'select_for_update',
  LCS_FORNOKEYUPDATE: 'select_for_no_key_update',
  LCS_FORSHARE: 'select_for_share',
  LCS_FORKEYSHARE: 'select_for_key_share',
}

function isDdlType(t: string): boolean {
  return DDL_STMTS.has(t) || /^(Create|Alter|Drop)[A-Za-z]*Stmt$/.test(t)
}

interface Draft {
  kind: string
  action: SqlAction
  note: string | null
  hasWhere: boolean
  writeTables: RelName[]
  prepare: StatementFacts['prepare']
  execute: string | null
  deallocate: StatementFacts['deallocate']
  program: boolean
  settings: SettingChange[]
  literalSensitive: boolean
  cursor: StatementFacts['cursor']
}

/**
 * Whether EXPLAIN runs its statement. The server reads its options in order and the last ANALYZE
 * wins (ExplainQuery, defGetBoolean: the integer 0 and the words false/off in any case are false).
 * The gateway does not depend on that order: EXPLAIN counts as running its statement if ANY
 * ANALYZE option has a value other than a false one, so `(ANALYZE off, ANALYZE on)` and
 * `(ANALYZE on, ANALYZE off)` both count (the second over-refuses, which costs nothing real).
 * A value the server rejects is an error there, so reading it as on cannot be wrong either.
 */
function explainAnalyzes(options: unknown): boolean {
  for (const x of arr(options)) {
    const d = obj(obj(x)?.DefElem)
    if (!d || str(d.defname) !== 'analyze') continue
    if (!isFalseOption(d.arg)) return true
  }
  return false
}

/** A DefElem argument the server reads as false (defGetBoolean). */
function isFalseOption(arg: unknown): boolean {
  if (arg === undefined || arg === null) return false
  const t = nodeType(arg)
  if (!t) return false
  const [k, v] = t
  if (k === 'Integer') return (typeof v.ival === 'number' ? v.ival : 0) === 0
  if (k === 'Boolean') return v.boolval !== true
  if (k === 'String') return ['false', 'off'].includes((str(v.sval) ?? '').toLowerCase())
  return false
}

/** Whether any option carries a value: a literal value (0/1, 'on') is replaced in the shape, so
 * two texts of one shape could differ in what the statement does. */
function optionHasValue(options: unknown): boolean {
  return arr(options).some((x) => {
    const d = obj(obj(x)?.DefElem)
    return d !== null && d.arg !== undefined && d.arg !== null
  })
}

function defElems(list: unknown): Map<string, string | null> {
  const out = new Map<string, string | null>()
  for (const x of arr(list)) {
    const d = obj(obj(x)?.DefElem)
    if (!d) continue
    out.set(str(d.defname) ?? '', constText(d.arg))
  }
  return out
}

function isFalse(v: string | null | undefined): boolean {
  return v === 'off' || v === 'false' || v === '0' || v === 'f'
}

/** Classifies one parsed statement (the `stmt` node) whose own text is `text`. */
function classifyNode(node: unknown, text: string): StatementFacts {
  const t = nodeType(node)
  const c = new Collector()
  if (!t) return otherFacts(text, 'the statement could not be understood')
  const [type, s] = t
  const d: Draft = {
    kind: snake(type),
    action: 'sql.other',
    note: null,
    hasWhere: false,
    writeTables: [],
    prepare: null,
    execute: null,
    deallocate: null,
    program: false,
    settings: [],
    literalSensitive: false,
    cursor: null,
  }
  switch (type) {
    case 'SelectStmt': {
      c.walk(node, [])
      d.action = 'sql.read'
      if (obj(s.intoClause)) {
        d.action = 'sql.ddl'
        d.kind = 'select_into'
        const rel = obj(obj(s.intoClause)?.rel)
        if (rel) d.writeTables.push(relName(rel))
      }
      if (c.locking) {
        // Row locks are writes: they block other sessions' writers until the transaction ends.
        d.action = moreDangerous(d.action, 'sql.write')
        d.writeTables.push(...c.tables)
        if (d.kind === 'select') d.kind = LOCK_KINDS[c.lockStrength ?? ''] ?? 'select_for_update'
      }
      break
    }
    case 'InsertStmt':
    case 'UpdateStmt':
    case 'DeleteStmt':
    case 'MergeStmt': {
      c.walk(node, [])
      d.action = 'sql.write'
      const rel = obj(s.relation)
      if (rel) d.writeTables.push(relName(rel))
      if (type === 'UpdateStmt' || type === 'DeleteStmt') d.hasWhere = s.whereClause !== undefined && s.whereClause !== null
      break
    }
    case 'ExplainStmt': {
      const inner = classifyNode(s.query, text)
      const literalSensitive = inner.literalSensitive || optionHasValue(s.options)
      if (explainAnalyzes(s.options)) {
        // EXPLAIN ANALYZE runs its statement: it is that statement, seen through a reading verb.
        return { ...inner, sql: text, wrapper: inner.wrapper ?? 'explain_analyze', literalSensitive }
      }
      // Plain EXPLAIN runs nothing, but planning folds immutable and estimates stable functions:
      // a call that is not known to be harmless still makes it a write.
      return {
        ...inner,
        sql: text,
        kind: 'explain',
        action: inner.sideEffectFunctions.length > 0 ? 'sql.write' : 'sql.read',
        settings: [],
        writes: [],
        writeTables: [],
        hasWhere: false,
        wrapper: null,
        literalSensitive,
      }
    }
    case 'DeclareCursorStmt': {
      const inner = classifyNode(s.query, text)
      const reads = inner.action === 'sql.read'
      return {
        ...inner,
        sql: text,
        kind: reads ? 'declare_cursor' : inner.kind,
        action: reads ? 'sql.read' : moreDangerous(inner.action, 'sql.write'),
        wrapper: reads ? null : (inner.wrapper ?? 'declare_cursor'),
        cursor: { op: 'declare', name: str(s.portalname) ?? '', query: inner },
      }
    }
    case 'FetchStmt':
      d.action = 'sql.read'
      d.kind = s.ismove ? 'move' : 'fetch'
      d.cursor = { op: 'fetch', name: str(s.portalname) ?? '' }
      break
    case 'VariableShowStmt':
      d.action = 'sql.read'
      d.kind = 'show'
      break
    case 'CopyStmt': {
      c.walk(node, [])
      // ENCODING 'x' decides whether the COPY is allowed (lexical.ts) and FORMAT 'binary' how its
      // output is read: option values are literals the shape drops, so a COPY with options is
      // never cached.
      if (optionHasValue(s.options)) d.literalSensitive = true
      const rel = obj(s.relation)
      if (s.is_program) {
        d.action = 'sql.other'
        d.program = true
        d.note = 'COPY … PROGRAM runs a shell command on the database server'
      } else if (typeof s.filename === 'string') {
        d.action = 'sql.admin'
        d.note = 'COPY to or from a server file'
        if (s.is_from && rel) d.writeTables.push(relName(rel))
      } else if (s.is_from) {
        d.action = 'sql.write'
        if (rel) d.writeTables.push(relName(rel))
      } else d.action = 'sql.read'
      break
    }
    case 'TransactionStmt': {
      const kind = str(s.kind) ?? ''
      d.kind = kind.replace('TRANS_STMT_', '').toLowerCase()
      d.action = 'sql.session'
      if (kind === 'TRANS_STMT_PREPARE' || kind === 'TRANS_STMT_COMMIT_PREPARED' || kind === 'TRANS_STMT_ROLLBACK_PREPARED') {
        d.action = 'sql.admin'
        d.note = 'two-phase commit'
      }
      const opts = defElems(s.options)
      if (isFalse(opts.get('transaction_read_only'))) {
        d.action = 'sql.admin'
        d.note = 'a read-write transaction overrides a read-only default'
      }
      break
    }
    case 'VariableSetStmt': {
      d.literalSensitive = true
      const kind = str(s.kind) ?? ''
      const name = (str(s.name) ?? '').toLowerCase()
      const local = s.is_local === true
      d.kind = kind === 'VAR_RESET' || kind === 'VAR_RESET_ALL' ? 'reset' : 'set'
      d.action = 'sql.session'
      if (kind === 'VAR_RESET_ALL') d.settings.push({ name: 'all', value: null, local: false })
      else if (kind === 'VAR_SET_MULTI') {
        // SET TRANSACTION … / SET SESSION CHARACTERISTICS AS TRANSACTION …
        const opts = defElems(s.args)
        if (isFalse(opts.get('transaction_read_only'))) {
          d.action = 'sql.admin'
          d.note = 'makes a read-only transaction writable'
        }
      } else {
        const args = arr(s.args)
          .map(constText)
          .map((v) => v ?? '')
        const value = kind === 'VAR_SET_VALUE' ? args.join(', ') : null
        d.settings.push({ name, value, local })
        if (settingNeedsAdmin(name)) {
          d.action = 'sql.admin'
          d.note = `setting ${name} is not an ordinary session setting`
        }
      }
      break
    }
    case 'PrepareStmt': {
      const inner = classifyNode(s.query, text)
      d.kind = 'prepare'
      d.action = 'sql.session'
      d.prepare = { name: str(s.name) ?? '', inner }
      break
    }
    case 'ExecuteStmt': {
      c.walk(s.params, [])
      d.kind = 'execute'
      d.execute = str(s.name) ?? ''
      d.action = 'sql.other' // until resolved against the session's prepared statements
      break
    }
    case 'DeallocateStmt':
      d.kind = 'deallocate'
      d.action = 'sql.session'
      d.deallocate = { name: s.isall === true || typeof s.name !== 'string' ? null : (s.name as string) }
      break
    case 'DiscardStmt':
      d.kind = 'discard'
      d.action = 'sql.session'
      // DISCARD PLANS drops cached plans only: prepared statements and cursors keep their names.
      if (str(s.target) === 'DISCARD_ALL') d.deallocate = { name: null }
      if (str(s.target) === 'DISCARD_ALL') d.settings.push({ name: 'all', value: null, local: false })
      break
    case 'ClosePortalStmt':
      d.action = 'sql.session'
      d.cursor = { op: 'close', name: str(s.portalname) }
      break
    case 'ListenStmt':
    case 'UnlistenStmt':
      d.action = 'sql.session'
      break
    case 'NotifyStmt':
    case 'LockStmt':
      c.walk(node, [])
      d.action = 'sql.write'
      d.writeTables.push(...c.tables)
      break
    case 'DoStmt':
      d.note = 'a DO block runs procedural code the classifier cannot see into'
      break
    case 'CallStmt':
      c.walk(node, [])
      d.note = 'CALL runs a procedure whose effects the classifier cannot see'
      break
    case 'CreateTableAsStmt':
      c.walk(node, [])
      d.action = 'sql.ddl'
      d.kind = str(s.objtype) === 'OBJECT_MATVIEW' ? 'create_materialized_view' : 'create_table_as'
      d.writeTables.push(...c.tables)
      if (nodeType(s.query)?.[0] === 'ExecuteStmt') {
        // CREATE TABLE AS EXECUTE runs a prepared statement the gateway would have to look up.
        d.action = 'sql.other'
        d.note = 'CREATE TABLE AS EXECUTE runs a prepared statement; run the EXECUTE on its own'
      }
      break
    default:
      c.walk(node, [])
      if (ADMIN_STMTS.has(type) || (type === 'DropStmt' && /EXTENSION|DATABASE|TABLESPACE|ROLE/.test(str(s.removeType) ?? ''))) {
        d.action = 'sql.admin'
      } else if (isDdlType(type)) {
        d.action = 'sql.ddl'
        if (type === 'DropStmt') d.kind = `drop_${(str(s.removeType) ?? 'object').replace('OBJECT_', '').toLowerCase()}`
        if (type === 'CreateStmt') d.kind = 'create_table'
        d.writeTables.push(...c.tables)
        if (type === 'DropStmt' && /TABLE|VIEW|SEQUENCE|INDEX/.test(str(s.removeType) ?? '')) {
          for (const o of arr(s.objects)) {
            const parts = stringList(obj(obj(o)?.List)?.items)
            const name = parts[parts.length - 1]
            if (name) d.writeTables.push({ schema: parts.length > 1 ? (parts[parts.length - 2] ?? null) : null, name })
          }
        }
      } else d.note = `statement type ${type} is not classified`
  }
  if (type !== 'DoStmt') {
    // Data-modifying CTEs, locking reads and set_config escalate whatever the statement is.
    if (c.dataModifyingCte) {
      d.action = moreDangerous(d.action, 'sql.write')
      d.writeTables.push(...c.cteWrites)
    }
    for (const st of c.settings) {
      d.settings.push(st)
      if (settingNeedsAdmin(st.name)) {
        d.action = moreDangerous(d.action, 'sql.admin')
        d.note = `set_config of ${st.name}: not an ordinary session setting`
      }
    }
    if (c.unknownSetConfig) {
      d.action = 'sql.other'
      d.note = 'set_config with a computed name or value'
    }
    if (c.sqlTextFunction !== null) {
      d.action = 'sql.other'
      d.note = `${c.sqlTextFunction} runs SQL given as text, which the classifier cannot see`
    }
  }
  const peek = readsSessionText(c.tables, [...c.functions])
  if (peek !== null) {
    d.action = moreDangerous(d.action, 'sql.admin')
    d.note = peek
  }
  const effective = effectiveWrite(d.kind, c.writes)
  const createsRoutine = routineCreated(type, s)
  if (c.writes.length > 0) {
    // COPY (DELETE … RETURNING …) TO STDOUT, a DELETE in a CTE, CREATE TABLE AS over one: the
    // statement is the write it runs, for the action, the unbounded-write rule and the audit.
    d.action = moreDangerous(d.action, 'sql.write')
    for (const w of c.writes) if (w.table) d.writeTables.push(w.table)
  }
  const operators = [...c.operators].sort()
  // set_config with constant arguments is judged as the SET it is (settings above); with computed
  // ones the statement is already sql.other.
  const calls = c.calls.filter((k) => !(k.name === 'set_config' && (k.schema === null || k.schema === 'pg_catalog')))
  const sideEffects = [...sideEffectCalls(calls, null), ...opaqueOperators(operators, null).map((o) => `OPERATOR(${o})`)]
  d.writeTables.push(...c.sequenceWrites)
  if (sideEffects.length > 0 && (d.action === 'sql.read' || d.action === 'sql.session')) {
    d.action = 'sql.write'
    d.note ??= `calls ${sideEffects.join(', ')}, which may change state (not a known-harmless built-in)`
  }
  return {
    sql: text,
    kind: effective.kind,
    action: d.action,
    tables: dedupe(c.tables),
    writeTables: dedupe(d.writeTables),
    functions: [...c.functions].sort(),
    hasWhere: c.writes.length > 0 ? effective.hasWhere : d.hasWhere,
    note: d.note,
    settings: d.settings,
    prepare: d.prepare,
    execute: d.execute,
    deallocate: d.deallocate,
    program: d.program,
    literalSensitive: d.literalSensitive || c.literalSensitive,
    cursor: d.cursor,
    lexical: lexicalChange(node),
    calls: c.calls,
    operators,
    castTypes: [...c.castTypes].sort(),
    sideEffectFunctions: sideEffects,
    writes: c.writes,
    wrapper: effective.kind !== d.kind ? d.kind : null,
    createsRoutine,
  }
}

function routineCreated(type: string, s: Obj): StatementFacts['createsRoutine'] {
  const last = (v: unknown): string | null => {
    const parts = stringList(v)
    return parts[parts.length - 1] ?? null
  }
  let name: string | null = null
  let kind: 'function' | 'operator' = 'function'
  if (type === 'CreateFunctionStmt') name = last(s.funcname)
  else if (type === 'DefineStmt' && (str(s.kind) === 'OBJECT_AGGREGATE' || str(s.kind) === 'OBJECT_OPERATOR')) {
    name = last(s.defnames)
    if (str(s.kind) === 'OBJECT_OPERATOR') kind = 'operator'
  } else if (type === 'RenameStmt' && /OBJECT_(FUNCTION|PROCEDURE|ROUTINE|AGGREGATE)/.test(str(s.renameType) ?? '')) name = str(s.newname)
  return name === null ? null : { kind, name }
}

/**
 * The kind and has_where a policy sees for a statement that runs writes: an unbounded UPDATE or
 * DELETE anywhere wins (so `no-unbounded-write` cannot be passed by wrapping one), then the
 * statement's own kind if it is a write, then the first write it runs.
 */
function effectiveWrite(kind: string, writes: readonly InnerWrite[]): { kind: string; hasWhere: boolean } {
  if (writes.length === 0) return { kind, hasWhere: false }
  const unbounded = writes.find((w) => (w.kind === 'update' || w.kind === 'delete' || w.kind === 'merge') && !w.hasWhere)
  if (unbounded) return { kind: unbounded.kind, hasWhere: false }
  const own = writes.find((w) => w.kind === kind)
  const chosen = own ?? writes.find((w) => w.kind !== 'insert') ?? (writes[0] as InnerWrite)
  return { kind: chosen.kind, hasWhere: chosen.hasWhere }
}

function dedupe(list: readonly RelName[]): RelName[] {
  const seen = new Set<string>()
  const out: RelName[] = []
  for (const r of list) {
    const k = `${r.schema ?? ''}\u0000${r.name}`
    if (!seen.has(k)) {
      seen.add(k)
      out.push(r)
    }
  }
  return out
}

export function otherFacts(sql: string, note: string): StatementFacts {
  return {
    sql,
    kind: 'unknown',
    action: 'sql.other',
    tables: [],
    writeTables: [],
    functions: [],
    hasWhere: false,
    note,
    settings: [],
    prepare: null,
    execute: null,
    deallocate: null,
    program: false,
    literalSensitive: true,
    cursor: null,
    lexical: null,
    calls: [],
    operators: [],
    castTypes: [],
    sideEffectFunctions: [],
    writes: [],
    wrapper: null,
    createsRoutine: null,
  }
}

/** Parses and classifies a text that may hold several statements. Call loadSqlParser() first. */
export function analyzeSql(sql: string): Analysis {
  let tree: unknown
  try {
    tree = parseSync(sql)
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err)
    return { statements: [otherFacts(sql, `the statement could not be parsed: ${msg}`)], error: msg }
  }
  const stmts = arr(obj(tree)?.stmts)
  if (stmts.length === 0) return { statements: [], error: null }
  // stmt_location/stmt_len are byte offsets into the UTF-8 text.
  const bytes = Buffer.from(sql, 'utf8')
  const out: StatementFacts[] = []
  for (const raw of stmts) {
    const r = obj(raw)
    const loc = typeof r?.stmt_location === 'number' ? r.stmt_location : 0
    const len = typeof r?.stmt_len === 'number' && r.stmt_len > 0 ? r.stmt_len : bytes.length - loc
    const text = bytes.toString('utf8', loc, loc + len).trim()
    out.push(classifyNode(r?.stmt, text))
  }
  return { statements: out, error: null }
}
