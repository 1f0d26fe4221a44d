// The SQL analyzer the proxies use: classify.ts's facts, cached by statement shape (shape.ts) so
// the hot path pays for a parse once per shape, not once per statement.
//
// Why the cache is safe: a cache hit needs the same shape, i.e. the same text up to the values of
// literal constants (and whitespace, comments and the case of unquoted words, which the server
// ignores too). Facts are the same for any literal values except where a literal is a setting's
// name or value (SET, set_config): those statements are marked literalSensitive and never cached.
// Only single-statement texts that parsed cleanly are cached; the rest is parsed every time.

import { analyzeSql, type Analysis, loadSqlParser } from './classify.js'
import { sqlShape } from './shape.js'

export { loadSqlParser, moreDangerous, otherFacts, SESSION_SETTINGS, settingNeedsAdmin } from './classify.js'
export type { Analysis, RelName, SettingChange, SqlAction, StatementFacts } from './classify.js'
export { type Catalog, effectivePath, parseSearchPath, qualify } from './resolve.js'

export class SqlAnalyzer {
  private readonly cache = new Map<string, Analysis>()
  hits = 0
  misses = 0

  constructor(private readonly maxEntries = 10_000) {}

  analyze(sql: string): Analysis {
    // An empty text is a query of no statements to PostgreSQL (EmptyQueryResponse), as are
    // whitespace and comments; libpg-query refuses only the empty string, so it is answered here.
    if (sql.length === 0) return { statements: [], error: null }
    const shape = sqlShape(sql)
    if (shape !== null) {
      const hit = this.cache.get(shape)
      if (hit) {
        this.hits++
        const f = hit.statements[0]
        return f ? { statements: [{ ...f, sql: sql.trim() }], error: null, shape: hit } : hit
      }
    }
    this.misses++
    const a = analyzeSql(sql)
    const only = a.statements[0]
    if (shape !== null && a.error === null && a.statements.length === 1 && only && !only.literalSensitive && !containsSensitivePrepare(a)) {
      if (this.cache.size >= this.maxEntries) {
        const oldest = this.cache.keys().next().value
        if (oldest !== undefined) this.cache.delete(oldest)
      }
      this.cache.set(shape, a)
      return { ...a, shape: a }
    }
    return a
  }
}

function containsSensitivePrepare(a: Analysis): boolean {
  return a.statements.some((s) => s.prepare?.inner.literalSensitive === true)
}

/** Loads the parser and returns a ready analyzer. */
export async function createSqlAnalyzer(maxEntries?: number): Promise<SqlAnalyzer> {
  await loadSqlParser()
  return new SqlAnalyzer(maxEntries)
}
