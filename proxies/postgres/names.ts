// Server-side names reached from SQL: EXECUTE name, FETCH/MOVE name. What they run is read from
// the server itself (pg_prepared_statements, pg_cursors on the session's own backend) right before
// the statement is judged, not from a model of PREPARE/DECLARE/DEALLOCATE/CLOSE/DISCARD,
// transactions and savepoints (WITH HOLD cursors, failed PREPAREs, functions that prepare or open
// cursors through SPI): the text the server holds is parsed and judged as the effective action.
//
// A name created or dropped earlier in the same query text is resolved from that text (the server
// would see it the same way, or stop at the error). A name looked up before the query can be stale
// only if something earlier in the same text could create names the gateway cannot see (a
// function, a write's trigger): such a statement is refused rather than guessed.

import type { Analysis, SqlAnalyzer, StatementFacts } from './sql/index.js'
import { INTERNAL_SQL_MARK } from './messages.js'

/** What the server holds under a name: `c:<name>` for a cursor or portal, `p:<name>` for a
 * prepared statement. `fromSql` is pg_prepared_statements.from_sql (null for cursors). */
export interface ServerName {
  readonly statement: string
  readonly fromSql: boolean | null
}
export type ServerNames = ReadonlyMap<string, ServerName>

/** The gateway's own lookup, run on the session's backend at a ReadyForQuery boundary. Every
 * operator, type and relation is schema-qualified: the session's search_path cannot redirect it. */
export const NAME_LOOKUP_SQL = `${INTERNAL_SQL_MARK}SELECT 'c:' OPERATOR(pg_catalog.||) name, statement, NULL::pg_catalog.bool FROM pg_catalog.pg_cursors WHERE name OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.text[]) UNION ALL SELECT 'p:' OPERATOR(pg_catalog.||) name, statement, from_sql FROM pg_catalog.pg_prepared_statements WHERE name OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.text[])`

/** A text[] literal of names (double-quoted elements, backslash-escaped). */
export function textArrayLiteral(names: readonly string[]): string {
  return `{${names.map((n) => `"${n.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`).join(',')}}`
}

/** Where an effective statement's text came from, for the audit. */
export type InnerSource = 'pg_prepared_statements' | 'pg_cursors' | 'this query'

export interface Resolved {
  /** The statement the name runs (classified), or null with `why` when it cannot be known. */
  readonly facts: StatementFacts | null
  readonly why: string
  /** The text the server holds (the whole query it came from), for the audit. */
  readonly text: string | null
  readonly source: InnerSource | null
}

/**
 * The statement a name runs, from the text the server holds. For a prepared statement made by SQL
 * the text is the whole query that held the PREPARE; for a cursor, the whole query that held the
 * DECLARE, or the Parse text of a protocol-level portal.
 */
export function resolveServerText(kind: 'c' | 'p', name: string, held: ServerName, analyze: (sql: string) => Analysis): Resolved {
  const source: InnerSource = kind === 'p' ? 'pg_prepared_statements' : 'pg_cursors'
  const unknown = (why: string): Resolved => ({ facts: null, why, text: held.statement, source })
  const a = analyze(held.statement)
  if (a.error !== null) return unknown(`the server's text for ${JSON.stringify(name)} could not be parsed`)
  if (kind === 'p') {
    if (held.fromSql === false) {
      const only = a.statements.length === 1 ? a.statements[0] : undefined
      return only
        ? { facts: only, why: '', text: held.statement, source }
        : unknown(`the server's text for ${JSON.stringify(name)} is not one statement`)
    }
    const matches = a.statements.filter((s) => s.prepare?.name === name)
    const m = matches.length === 1 ? matches[0]?.prepare?.inner : undefined
    return m
      ? { facts: m, why: '', text: held.statement, source }
      : unknown(`the server's text does not say which PREPARE made ${JSON.stringify(name)}`)
  }
  const declares = a.statements.filter((s) => s.cursor?.op === 'declare' && s.cursor.name === name)
  if (declares.length === 1) {
    const q = declares[0]?.cursor?.query
    return q ? { facts: q, why: '', text: held.statement, source } : unknown(`the cursor ${JSON.stringify(name)} has no query`)
  }
  if (declares.length === 0 && a.statements.length === 1) {
    // A portal bound through the protocol (its Parse text), or a cursor a function opened while
    // running this statement: judged as this statement (for a function, as calling it).
    const only = a.statements[0] as StatementFacts
    if (only.cursor?.op !== 'declare') return { facts: only, why: '', text: held.statement, source }
  }
  return unknown(`the server's text does not say which statement the cursor ${JSON.stringify(name)} runs`)
}

/**
 * The names one query text reaches (EXECUTE, FETCH, MOVE): resolved from the text itself when an
 * earlier statement of it prepared, declared, deallocated or closed them, from the server's own
 * tables otherwise (read once per text, before it runs), and refused when neither is exact.
 */
export class TextNames {
  private readonly local = new Map<string, { readonly facts: StatementFacts | null; readonly text: string }>()
  private clearedPrepared = false
  private clearedCursors = false
  /** An earlier statement of this text that could create names the gateway cannot see. */
  private opaque: string | null = null
  private server: Promise<ServerNames | string> | null = null

  constructor(
    private readonly stmts: readonly StatementFacts[],
    private readonly lookup: (names: readonly string[]) => Promise<ServerNames | string>,
  ) {}

  async resolve(raw: StatementFacts, analyzer: SqlAnalyzer): Promise<Resolved> {
    const kind = raw.execute !== null ? 'p' : 'c'
    const name = raw.execute ?? raw.cursor?.name ?? ''
    const what = kind === 'p' ? 'prepared statement' : 'cursor'
    const unknown = (why: string): Resolved => ({ facts: null, why, text: null, source: null })
    const here = this.local.get(`${kind}:${name}`)
    if (here !== undefined) {
      if (here.facts === null) return unknown(`the ${what} ${JSON.stringify(name)} was dropped earlier in this query`)
      return { facts: here.facts, why: '', text: here.text, source: 'this query' }
    }
    if (kind === 'p' ? this.clearedPrepared : this.clearedCursors) return unknown(`every ${what} was dropped earlier in this query`)
    if (this.opaque !== null) {
      return unknown(
        `${JSON.stringify(this.opaque)} runs before it in the same query and may create server-side names the gateway cannot see; send it in a query of its own`,
      )
    }
    this.server ??= this.lookup([
      ...new Set(this.stmts.flatMap((s) => (s.execute !== null ? [s.execute] : s.cursor?.op === 'fetch' ? [s.cursor.name ?? ''] : []))),
    ])
    const server = await this.server
    if (typeof server === 'string') return unknown(server)
    const held = server.get(`${kind}:${name}`)
    if (held === undefined) return unknown(`the server has no ${what} named ${JSON.stringify(name)}`)
    return resolveServerText(kind, name, held, (sql) => analyzer.analyze(sql))
  }

  /** What a statement of the text does to names, for the statements after it (`inert`: running it
   * leaves the session's settings as they were, statements.ts lexicallyInert). */
  after(raw: StatementFacts, inert: boolean): void {
    if (raw.prepare) this.local.set(`p:${raw.prepare.name}`, { facts: raw.prepare.inner, text: raw.sql })
    if (raw.deallocate) {
      if (raw.deallocate.name !== null) this.local.set(`p:${raw.deallocate.name}`, { facts: null, text: raw.sql })
      else {
        this.clearedPrepared = true
        for (const k of [...this.local.keys()]) if (k.startsWith('p:')) this.local.delete(k)
        // DISCARD ALL closes every cursor too.
        if (raw.kind === 'discard') this.clearedCursors = true
      }
    }
    const c = raw.cursor
    if (c?.op === 'declare' && c.query) this.local.set(`c:${c.name ?? ''}`, { facts: c.query, text: raw.sql })
    if (c?.op === 'close') {
      if (c.name !== null) this.local.set(`c:${c.name}`, { facts: null, text: raw.sql })
      else {
        this.clearedCursors = true
        for (const k of [...this.local.keys()]) if (k.startsWith('c:')) this.local.delete(k)
      }
    }
    if (this.opaque === null && c?.op !== 'declare' && raw.prepare === null && !inert) this.opaque = raw.sql
  }
}

/** EXECUTE/FETCH/MOVE judged as what runs: the inner statement's facts under the outer text. */
export function effectiveFacts(raw: StatementFacts, r: Resolved): StatementFacts {
  if (r.facts === null) return { ...raw, action: 'sql.other', note: r.why }
  const inner = r.facts
  // The parameters of EXECUTE p(…) may call functions too.
  const functions = [...new Set([...inner.functions, ...raw.functions])].sort()
  const calls = [...inner.calls, ...raw.calls]
  const castTypes = [...new Set([...inner.castTypes, ...raw.castTypes])]
  const sideEffectFunctions = [...new Set([...inner.sideEffectFunctions, ...raw.sideEffectFunctions])].sort()
  const action =
    sideEffectFunctions.length > 0 && (inner.action === 'sql.read' || inner.action === 'sql.session') ? 'sql.write' : inner.action
  // `kind` is the inner statement's (`delete`, not `execute:delete`), so rules on kind and
  // has_where (no-unbounded-write) hold for it; `wrapper` and `via` say which verb reached it.
  return {
    ...inner,
    sql: raw.sql,
    functions,
    calls,
    castTypes,
    sideEffectFunctions,
    action,
    wrapper: raw.execute !== null ? 'execute' : raw.kind,
    prepare: null,
    deallocate: null,
    cursor: null,
    execute: null,
  }
}
