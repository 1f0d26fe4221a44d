// `gatehouse policy explain "SQL"`: the facts the classifier extracts, exactly as a policy sees
// them in `input.action` and `input.command` — what a policy author needs while writing a rule.

import { type Catalog, createSqlAnalyzer, parseSearchPath, qualify } from './index.js'
import { sqlShape } from './shape.js'

export interface ExplainedStatement {
  readonly action: string
  readonly command: Record<string, unknown>
  readonly settings: readonly { name: string; value: string | null; local: boolean }[]
  readonly prepares: string | null
  readonly executes: string | null
}

export interface Explanation {
  readonly statements: readonly ExplainedStatement[]
  readonly parse_error: string | null
  /** Whether later texts of the same shape reuse these facts without a parse. */
  readonly cached_by_shape: boolean
  readonly search_path: readonly string[]
}

export async function explainSql(
  sql: string,
  opts: { searchPath?: string; user?: string; catalog?: Catalog | null } = {},
): Promise<Explanation> {
  const analyzer = await createSqlAnalyzer()
  const a = analyzer.analyze(sql)
  const initial = parseSearchPath(opts.searchPath ?? '"$user", public')
  let path = initial
  const user = opts.user ?? 'postgres'
  const q = (rels: readonly { schema: string | null; name: string }[]): string[] => [
    ...new Set(rels.flatMap((r) => qualify(r, [path], user, opts.catalog ?? null))),
  ]
  // Like the proxy, a SET search_path earlier in the text counts for the statements after it.
  const statements = a.statements.map((s) => {
    const explained = explainOne(s)
    for (const st of s.settings) {
      if (st.name === 'search_path') path = st.value === null ? initial : parseSearchPath(st.value)
      if (st.name === 'all') path = initial
    }
    return explained
  })
  function explainOne(s: (typeof a.statements)[number]): ExplainedStatement {
    return {
      action: s.action,
      command: {
        sql: s.sql,
        kind: s.kind,
        tables: q(s.tables),
        write_tables: q(s.writeTables),
        functions: s.functions,
        side_effect_functions: s.sideEffectFunctions,
        has_where: s.hasWhere,
        statements: a.statements.length,
        // The same fields, in the same form, as the PostgreSQL proxy builds (proxies/postgres/statements.ts).
        ...(s.wrapper !== null ? { wrapper: s.wrapper } : {}),
        ...(s.writes.length > 0
          ? { writes: s.writes.map((w) => ({ kind: w.kind, table: w.table ? (q([w.table])[0] ?? null) : null, has_where: w.hasWhere })) }
          : {}),
        ...(s.program ? { program: true } : {}),
        ...(s.note ? { note: s.note } : {}),
      },
      settings: s.settings,
      prepares: s.prepare ? `${s.prepare.name}: ${s.prepare.inner.action} (${s.prepare.inner.kind})` : null,
      executes: s.execute,
    }
  }
  const only = a.statements[0]
  return {
    statements,
    parse_error: a.error,
    cached_by_shape:
      sqlShape(sql) !== null && a.error === null && a.statements.length === 1 && only !== undefined && !only.literalSensitive,
    search_path: initial,
  }
}
