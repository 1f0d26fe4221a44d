/**
 * Reading a relation runs its definition when it is a view, so the classifier must know which
 * relations are views. These tests pin what happens when it cannot know: the catalog of views was
 * not readable (a parse failure of the server's answer), and a read is then treated as running
 * opaque code — never as harmless.
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import pino from 'pino'
import { createSqlAnalyzer } from '../proxies/postgres/sql/index.js'
import { SessionSql } from '../proxies/postgres/statements.js'
import type { FastPathSession } from '../proxies/types.js'

// SessionSql keeps the session for deciding; withCatalog never touches it, so an empty stand-in
// is enough here (what is tested is classification alone).
const noSession = {} as FastPathSession

async function sessionWith(viewDefinition: (name: string) => string | null | undefined): Promise<SessionSql> {
  const analyzer = await createSqlAnalyzer()
  const catalog = { relations: new Set(['public.t', 'public.v']), schemas: new Set(['public']) }
  const functions = { userFunctions: new Set<string>(), userOperators: new Set<string>(), userTypes: new Set<string>() }
  return new SessionSql(
    analyzer,
    noSession,
    ['public'],
    'postgres',
    catalog,
    async () => 'not used',
    pino({ level: 'silent' }),
    functions,
    viewDefinition,
  )
}

describe('view definitions and the read-only action', () => {
  test('a table read stays a read when the catalog says it is not a view', async () => {
    const sql = await sessionWith(() => null)
    const analyzer = await createSqlAnalyzer()
    const f = analyzer.analyze('SELECT * FROM t').statements[0]
    assert.ok(f)
    assert.equal(sql.withCatalog(f).action, 'sql.read')
  })

  test('a view calling nextval makes reading it a write', async () => {
    const sql = await sessionWith((name) => (name === 'public.v' ? "SELECT nextval('s')" : null))
    const analyzer = await createSqlAnalyzer()
    const f = analyzer.analyze('SELECT * FROM v').statements[0]
    assert.ok(f)
    assert.equal(sql.withCatalog(f).action, 'sql.write')
  })

  test('when views cannot be known, a read counts as running opaque code (fail closed)', async () => {
    const sql = await sessionWith(() => undefined)
    const analyzer = await createSqlAnalyzer()
    const f = analyzer.analyze('SELECT * FROM t').statements[0]
    assert.ok(f)
    const checked = sql.withCatalog(f)
    assert.equal(checked.action, 'sql.write')
    assert.ok(checked.sideEffectFunctions.includes('VIEW(public.t)'), checked.sideEffectFunctions.join(','))
  })
})
