// The SQL analyzer the proxies use: classify.ts's facts, cached by statement shape (shape.ts) so
// the hot path pays for a parse once per shape, not once per statement.
//
// Why the cache is safe: a cache hit needs the same shape, i.e. the same text up to the values of
// literal constants (and whitespace, comments and the case of unquoted words, which the server
// ignores too). Facts are the same for any literal values except where a literal is a setting's
// name or value (SET, set_config): those statements are marked literalSensitive and never cached.
// Only single-statement texts that parsed cleanly are cached; the rest is parsed every time.
//
// The same argument lets a text with long string literals (a document, an image in hex) be parsed
// without them: the text with each long literal emptied has the same shape, so its facts — when
// they are cacheable, i.e. depend on no literal's value — are the facts of the text itself, the
// very facts a cache hit would return had the shorter text come first. Only the classification
// comes from the shorter text; what is audited, masked, redacted and forwarded is the text itself.

import { analyzeSql, loadSqlParser } from './classify.js'
import type { Analysis } from './facts.js'
import { LONG_LITERAL, shapeKey, withoutLongLiterals } from './shape.js'

export { loadSqlParser } from './classify.js'
export { type Analysis, moreDangerous, otherFacts, type SettingChange, type SqlAction, type StatementFacts } from './facts.js'
export { SESSION_SETTINGS, settingNeedsAdmin } from './settings.js'
export { type Catalog, effectivePath, parseSearchPath, qualify, type RelName } from './resolve.js'

export class SqlAnalyzer {
  private readonly cache = new Map<string, Analysis>()
  hits = 0
  misses = 0
  /** Misses classified from the text without its long literals. */
  shortened = 0

  constructor(private readonly maxEntries = 10_000) {}

  analyze(sql: string): Analysis {
    // An empty text is a query of no statements to PostgreSQL (EmptyQueryResponse), as are
    // whitespace and comments; libpg-query refuses only the empty string, so it is answered here.
    if (sql.length === 0) return { statements: [], error: null }
    const shape = shapeKey(sql)
    if (shape !== null) {
      const hit = this.cache.get(shape)
      if (hit) {
        this.hits++
        const f = hit.statements[0]
        return f ? { statements: [{ ...f, sql: sql.trim() }], error: null, shape: hit } : hit
      }
    }
    this.misses++
    if (shape !== null && sql.length >= LONG_LITERAL) {
      const shorter = withoutLongLiterals(sql)
      if (shorter !== null && shorter.shape === shape) {
        const a = analyzeSql(shorter.text)
        const f = a.statements[0]
        // A statement that holds another (PREPARE, DECLARE) keeps that one's text in its facts:
        // taken from the text itself, so the facts carry no shortened text anywhere.
        if (cacheable(a) && f?.prepare === null && f.cursor?.query === undefined) {
          this.remember(shape, a)
          this.shortened++
          return { statements: [{ ...f, sql: sql.trim() }], error: null, shape: a }
        }
      }
    }
    const a = analyzeSql(sql)
    if (shape !== null && cacheable(a)) {
      this.remember(shape, a)
      return { ...a, shape: a }
    }
    return a
  }

  private remember(shape: string, a: Analysis): void {
    if (this.cache.size >= this.maxEntries) {
      const oldest = this.cache.keys().next().value
      if (oldest !== undefined) this.cache.delete(oldest)
    }
    this.cache.set(shape, a)
  }
}

/** Whether an analysis holds for every text of its shape: one statement, parsed cleanly, whose
 * facts depend on no literal's value. */
function cacheable(a: Analysis): boolean {
  const only = a.statements[0]
  return a.error === null && a.statements.length === 1 && only !== undefined && !only.literalSensitive && !containsSensitivePrepare(a)
}

function containsSensitivePrepare(a: Analysis): boolean {
  return a.statements.some((s) => s.prepare?.inner.literalSensitive === true)
}

/** Loads the parser and returns a ready analyzer. */
export async function createSqlAnalyzer(maxEntries?: number): Promise<SqlAnalyzer> {
  await loadSqlParser()
  return new SqlAnalyzer(maxEntries)
}
