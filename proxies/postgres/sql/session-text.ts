// Other sessions' SQL. Every caller reaches the server through the connection's one role, so
// pg_stat_activity.query (and pg_stat_get_activity, pg_stat_statements) would show any caller the
// text — literals included — of every other caller's statements. Reading them is administration:
// a statement that names one of these relations or functions is `sql.admin`, which policy grants
// to administrators only.

import type { RelName } from './resolve.js'

/** Relations that carry the SQL text of other sessions, by name in any schema (an extension such as
 * pg_stat_statements can live in any schema). */
export const SESSION_TEXT_RELATIONS: ReadonlySet<string> = new Set(['pg_stat_activity', 'pg_stat_statements', 'pg_stat_statements_info'])

/** Functions that return other sessions' SQL text. */
export const SESSION_TEXT_FUNCTIONS: ReadonlySet<string> = new Set([
  'pg_stat_get_activity',
  'pg_stat_get_backend_activity',
  'pg_stat_statements',
])

/** Why a statement reads other sessions' SQL text (null: it does not). */
export function readsSessionText(tables: readonly RelName[], functions: readonly string[]): string | null {
  const rel = tables.find((t) => SESSION_TEXT_RELATIONS.has(t.name.toLowerCase()))
  if (rel) return `${rel.name} shows other sessions' SQL: reading it is administration`
  const fn = functions.find((f) => SESSION_TEXT_FUNCTIONS.has(f))
  if (fn) return `${fn} returns other sessions' SQL: calling it is administration`
  return null
}
