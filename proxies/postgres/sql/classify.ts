// SQL facts from the real PostgreSQL grammar (libpg-query 18, WebAssembly). For each statement:
// its kind, the action of the table in docs/policies.md (normative), the tables read and written, every
// function called, whether an UPDATE/DELETE has a WHERE, and what it does to session state that
// the gateway must follow (SET search_path, PREPARE/EXECUTE/DEALLOCATE, transaction control).
//
// What cannot be fully understood is `sql.other`, the most dangerous class, never something
// harmless: a parse error, an unknown statement type, DO, CALL, COPY … PROGRAM, set_config with a
// computed name or value, EXECUTE of a statement the session never prepared.

import { opaqueOperators, sideEffectCalls } from './functions.js'
import type { RelName } from './resolve.js'
import { arr, nodeType, type Obj, obj, str, stringList } from './lineage-ast.js'
import { loadModule, parseSync } from 'libpg-query'
import { lexicalChange } from './lexical.js'
import { readsSessionText } from './session-text.js'
import {
  type Analysis,
  type InnerWrite,
  moreDangerous,
  otherFacts,
  type SettingChange,
  type SqlAction,
  type StatementFacts,
} from './facts.js'
import { settingNeedsAdmin } from './settings.js'
import { Collector, constText, relName, snake } from './collector.js'

let loaded: Promise<void> | null = null
/** The WebAssembly parser must be loaded once before the first parse. */
export function loadSqlParser(): Promise<void> {
  loaded ??= loadModule()
  return loaded
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
  transaction?: StatementFacts['transaction']
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
      d.transaction = { savepoint: str(s.savepoint_name), chain: s.chain === true }
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
    ...(d.transaction ? { transaction: d.transaction } : {}),
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
