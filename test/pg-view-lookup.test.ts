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
import { type RelationCode, SessionSql } from '../proxies/postgres/statements.js'
import type { FastPathSession } from '../proxies/types.js'

// SessionSql keeps the session for deciding; withCatalog never touches it, so an empty stand-in
// is enough here (what is tested is classification alone).
const noSession = {} as FastPathSession

async function sessionWith(viewDefinition: (name: string) => RelationCode | null | undefined): Promise<SessionSql> {
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
    const sql = await sessionWith((name) => (name === 'public.v' ? { definition: "SELECT nextval('s')" } : null))
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

  test('a foreign table counts as remote code: a read becomes a write', async () => {
    const sql = await sessionWith((name) => (name === 'public.t' ? { definition: null, foreign: true } : null))
    const analyzer = await createSqlAnalyzer()
    const f = analyzer.analyze('SELECT * FROM t').statements[0]
    assert.ok(f)
    const checked = sql.withCatalog(f)
    assert.equal(checked.action, 'sql.write')
    assert.ok(checked.sideEffectFunctions.includes('FOREIGN TABLE(public.t)'), checked.sideEffectFunctions.join(','))
  })

  test('row-level security policies count as the statement: a function call there is a write, built-ins stay a read', async () => {
    const analyzer = await createSqlAnalyzer()
    const f = analyzer.analyze('SELECT * FROM t').statements[0]
    assert.ok(f)
    const calling = await sessionWith((name) => (name === 'public.t' ? { definition: null, policies: ['public.check_tenant(id)'] } : null))
    const checked = calling.withCatalog(f)
    assert.equal(checked.action, 'sql.write')
    assert.ok(checked.sideEffectFunctions.includes('public.check_tenant'), checked.sideEffectFunctions.join(','))
    const viaSubquery = await sessionWith((name) =>
      name === 'public.t'
        ? { definition: null, policies: ['id IN (SELECT v.id FROM public.v)'] }
        : name === 'public.v'
          ? { definition: "SELECT nextval('s') AS id" }
          : null,
    )
    assert.equal(viaSubquery.withCatalog(f).action, 'sql.write')
    const plain = await sessionWith((name) =>
      name === 'public.t' ? { definition: null, policies: ["(id > 0) AND (note = current_setting('app.tenant'::text))"] } : null,
    )
    assert.equal(plain.withCatalog(f).action, 'sql.read')
  })

  test('an unparseable policy is opaque (fail closed)', async () => {
    const analyzer = await createSqlAnalyzer()
    const f = analyzer.analyze('SELECT * FROM t').statements[0]
    assert.ok(f)
    const sql = await sessionWith((name) => (name === 'public.t' ? { definition: null, policies: ['id > ) garbage'] } : null))
    assert.ok(sql.withCatalog(f).sideEffectFunctions.includes('POLICY(public.t)'))
  })
})
