// What the classifier says about one statement (StatementFacts) and a whole text (Analysis); the
// actions ordered by danger; the facts of a statement that could not be understood (`sql.other`).

import type { FunctionCall } from './functions.js'
import type { RelName } from './resolve.js'

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
  /** A transaction statement (BEGIN, COMMIT, SAVEPOINT…, `kind` says which): the savepoint it
   *  names, as the server folds it, and whether it is `… AND CHAIN`. */
  readonly transaction?: { readonly savepoint: string | null; readonly chain: boolean }
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
