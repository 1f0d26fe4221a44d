// Column lineage (proxies/postgres/sql/lineage.ts) against a catalog read from the real PostgreSQL with the
// lineage-catalog SQL: the laundering corpus (test/data/laundering.yaml) case by case — each case's
// SQL also runs on the server (and is rolled back) so the corpus holds only real attacks — plus
// targeted checks of names, `direct`, predicates, COPY options, unknown relations, view cycles and
// functions that shadow builtins.

import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import fc from 'fast-check'
import yaml from 'js-yaml'
import pg from 'pg'
import {
  analyzeLineage,
  type LineageCatalog,
  loadSqlParser,
  type OutputLineage,
  type RelationInfo,
  type StatementLineage,
} from '../proxies/postgres/sql/lineage.js'
import { buildLineageCatalog, type CatalogRow, LINEAGE_CATALOG_SQL, parseLineageCatalog } from '../proxies/postgres/sql/lineage-catalog.js'
import { REPO } from './helpers/gateway.js'

interface Case {
  readonly name: string
  readonly sql: string
  readonly expect: 'masked' | 'withheld' | 'refused' | 'clear'
  readonly columns: readonly (number | string)[]
  readonly predicate: boolean
  readonly serverError: boolean
}
interface Corpus {
  readonly classified: readonly string[]
  readonly setup: string
  readonly teardown: string
  readonly cases: readonly Case[]
}

function loadCorpus(): Corpus {
  const raw: unknown = yaml.load(readFileSync(join(REPO, 'test/data/laundering.yaml'), 'utf8'))
  const o = raw as Record<string, unknown>
  const strings = (v: unknown, what: string): string[] => {
    assert.ok(Array.isArray(v) && v.every((x) => typeof x === 'string'), `${what} is a list of strings`)
    return v as string[]
  }
  assert.ok(typeof o.setup === 'string' && typeof o.teardown === 'string' && Array.isArray(o.cases))
  const cases = (o.cases as unknown[]).map((c): Case => {
    const r = c as Record<string, unknown>
    assert.ok(typeof r.name === 'string' && typeof r.sql === 'string', 'a case has name and sql')
    assert.ok(r.expect === 'masked' || r.expect === 'withheld' || r.expect === 'refused' || r.expect === 'clear', `${r.name}: expect`)
    const columns = r.columns === undefined ? [] : (r.columns as unknown[])
    assert.ok(
      columns.every((x) => typeof x === 'number' || typeof x === 'string'),
      `${r.name}: columns`,
    )
    if (r.expect === 'masked' || r.expect === 'withheld') assert.ok(columns.length > 0, `${r.name}: which columns`)
    return {
      name: r.name,
      sql: r.sql,
      expect: r.expect,
      columns: columns as (number | string)[],
      predicate: r.predicate === true,
      serverError: r.server_error === true,
    }
  })
  return { classified: strings(o.classified, 'classified'), setup: o.setup, teardown: o.teardown, cases }
}

/** masking.yaml's matching: a pattern matches schema.table.column from the right, `*` one segment. */
function classifier(patterns: readonly string[]): (source: string) => boolean {
  const split = patterns.map((p) => p.split('.'))
  return (source) => {
    const s = source.split('.')
    return split.some((p) => p.length <= s.length && p.every((seg, i) => seg === '*' || seg === s[s.length - p.length + i]))
  }
}

/** The rows the client gets: the last row-returning statement, FETCH/EXECUTE resolved the way the caller does. */
function rowsOf(stmts: readonly StatementLineage[]): readonly OutputLineage[] | null {
  const cursors = new Map<string, readonly OutputLineage[] | null>()
  const prepared = new Map<string, readonly OutputLineage[] | null>()
  let rows: readonly OutputLineage[] | null = null
  for (const s of stmts) {
    if (s.declare !== undefined) cursors.set(s.declare, s.outputs)
    else if (s.prepare !== undefined) prepared.set(s.prepare, s.outputs)
    else if (s.fetch !== undefined) rows = cursors.get(s.fetch) ?? null
    else if (s.execute !== undefined) rows = prepared.get(s.execute) ?? null
    else if (s.outputs !== null) rows = s.outputs
  }
  return rows
}

const corpus = loadCorpus()
const isClassified = classifier(corpus.classified)
const DB = `gh_lineage_${process.pid}`

describe('column lineage: the laundering corpus against the real catalog', () => {
  let admin: pg.Client
  let client: pg.Client
  let catalog: LineageCatalog

  before(async () => {
    await loadSqlParser()
    admin = new pg.Client({ host: '127.0.0.1', port: 5432, database: 'test', user: 'postgres' })
    await admin.connect()
    // A database of our own: the end-to-end test builds the same schemas in `test` concurrently.
    await admin.query(`DROP DATABASE IF EXISTS ${DB}`)
    await admin.query(`CREATE DATABASE ${DB}`)
    client = new pg.Client({ host: '127.0.0.1', port: 5432, database: DB, user: 'postgres' })
    await client.connect()
    await client.query(corpus.setup)
    await client.query('ANALYZE')
    const results = (await client.query({ text: LINEAGE_CATALOG_SQL, rowMode: 'array' })) as unknown as pg.QueryResult<CatalogRow>[]
    assert.equal(results.length, 2, 'SET LOCAL and the SELECT')
    const rows = results[1]?.rows ?? []
    catalog = buildLineageCatalog(rows, '"$user", public', 'postgres')
    // The SET LOCAL ended with the Query message: the session's path is untouched.
    const path = await client.query<{ search_path: string }>('SHOW search_path')
    assert.equal(path.rows[0]?.search_path, '"$user", public')
  })

  after(async () => {
    await client?.end()
    await admin?.query(`DROP DATABASE IF EXISTS ${DB}`)
    await admin?.end()
  })

  test('the catalog reads relations, kinds, columns, qualified view definitions and user functions', () => {
    const users = catalog.relation('gh_mask', 'users')
    assert.deepEqual(users?.columns, ['id', 'name', 'email', 'ssn', 'card', 'note'])
    assert.equal(users?.kind, 'table')
    const v = catalog.relation('gh_mask', 'users_public')
    assert.equal(v?.kind, 'view')
    assert.match(v?.definition ?? '', /gh_mask\.users/)
    assert.equal(catalog.relation('gh_mask', 'user_cards')?.kind, 'view')
    assert.equal(catalog.relation(null, 'users'), null, 'gh_mask is not on the path')
    assert.equal(catalog.relation(null, 'pg_class')?.schema, 'pg_catalog')
    assert.equal(catalog.isUserFunction('email_of'), true)
    assert.equal(catalog.isUserFunction('lower'), false)
  })

  for (const c of corpus.cases) {
    test(`${c.expect}: ${c.name}`, async () => {
      // The case is a real attack: the server accepts it (rolled back, prepared statements dropped).
      await client.query('BEGIN')
      try {
        if (c.serverError) await assert.rejects(client.query(c.sql))
        else await client.query(c.sql)
      } finally {
        await client.query('ROLLBACK')
        await client.query('DEALLOCATE ALL')
      }
      const stmts = analyzeLineage(c.sql, catalog)
      const unresolved = stmts.find((s) => s.unresolved !== null)?.unresolved ?? null
      const launders = stmts.some((s) => s.writes.some((w) => w.opaque !== null || w.sources.some(isClassified)))
      const rows = rowsOf(stmts)
      const masked = (o: OutputLineage): boolean => o.opaque !== null || o.sources.some(isClassified)
      const wanted = (o: OutputLineage, i: number): boolean => c.columns.includes(i) || c.columns.includes(o.name)
      const detail = JSON.stringify(stmts, null, 1)
      switch (c.expect) {
        case 'masked':
          assert.equal(unresolved, null, detail)
          assert.equal(launders, false, detail)
          assert.ok(rows, `rows are returned: ${detail}`)
          for (const col of c.columns)
            assert.ok(typeof col === 'number' ? col < rows.length : rows.some((o) => o.name === col), `column ${col} exists`)
          rows.forEach((o, i) => {
            assert.equal(masked(o), wanted(o, i), `column ${i} (${o.name}): ${detail}`)
            if (wanted(o, i)) assert.equal(o.opaque, null, `column ${i} is masked by lineage, not opacity`)
          })
          break
        case 'withheld':
          if (unresolved !== null) break
          assert.ok(rows, detail)
          rows.forEach((o, i) => {
            if (wanted(o, i)) assert.notEqual(o.opaque, null, `column ${i} (${o.name}) is opaque: ${detail}`)
          })
          break
        case 'refused':
          assert.ok(unresolved !== null || launders, `refused: ${detail}`)
          break
        case 'clear':
          assert.equal(unresolved, null, detail)
          assert.equal(launders, false, detail)
          for (const o of rows ?? []) assert.equal(masked(o), false, `${o.name}: ${detail}`)
          assert.equal(
            stmts.some((s) => s.predicates.some(isClassified)),
            c.predicate,
            `predicates on classified columns: ${detail}`,
          )
          break
      }
    })
  }
})

// ---------------------------------------------------------------------------------------------
// Targeted checks against a small in-memory catalog.

function fakeCatalog(rels: readonly RelationInfo[], functions: readonly string[] = []): LineageCatalog {
  const byName = new Map(rels.map((r) => [`${r.schema}.${r.name}`, r]))
  return {
    relation: (schema, name) => byName.get(`${schema ?? 'public'}.${name}`) ?? null,
    isUserFunction: (name) => functions.includes(name),
  }
}

const T = (name: string, columns: string[], schema = 'public'): RelationInfo => ({ schema, name, kind: 'table', columns, definition: null })
const V = (name: string, columns: string[], definition: string): RelationInfo => ({
  schema: 'public',
  name,
  kind: 'view',
  columns,
  definition,
})
const CAT = fakeCatalog(
  [
    T('users', ['id', 'email', 'name']),
    T('orders', ['id', 'user_id', 'card']),
    V('v1', ['e'], 'SELECT email AS e FROM public.users'),
    V('loop_a', ['x'], 'SELECT x FROM public.loop_b'),
    V('loop_b', ['x'], 'SELECT x FROM public.loop_a'),
  ],
  ['lower_shadow', 'upper'],
)

function one(sql: string, cat: LineageCatalog = CAT): StatementLineage {
  const s = analyzeLineage(sql, cat)
  assert.equal(s.length, 1, sql)
  return s[0] as StatementLineage
}

describe('column lineage: details', () => {
  before(() => loadSqlParser())

  test('names as PostgreSQL labels them; direct only for a column projected as is', () => {
    const s = one(
      "SELECT email, email AS e, u.email::text, lower(email), 'a' || email, (SELECT max(name) FROM users), 1, CASE WHEN true THEN 1 END FROM users u",
    )
    assert.deepEqual(
      s.outputs?.map((o) => o.name),
      ['email', 'e', 'email', 'lower', '?column?', 'max', '?column?', 'case'],
    )
    assert.deepEqual(
      s.outputs?.map((o) => o.direct),
      ['public.users.email', 'public.users.email', null, null, null, null, null, null],
    )
    assert.deepEqual(s.outputs?.[3]?.sources, ['public.users.email'])
    assert.deepEqual(s.outputs?.[6]?.sources, [])
    assert.deepEqual(s.relations, ['public.users'])
  })

  test('through a view: the view column and its base column; direct is the base column', () => {
    const s = one('SELECT e FROM v1')
    assert.deepEqual(s.outputs?.[0]?.sources, ['public.users.email', 'public.v1.e'])
    assert.equal(s.outputs?.[0]?.direct, 'public.users.email')
    assert.deepEqual(s.outputs?.[0]?.directVia, ['public.v1.e', 'public.users.email'])
    assert.deepEqual(s.relations, ['public.users', 'public.v1'])
  })

  test('a view cycle is unresolved, not a hang', () => {
    assert.match(one('SELECT x FROM loop_a').unresolved ?? '', /refers to itself/)
  })

  test('predicates: WHERE, JOIN, GROUP BY, HAVING, ORDER BY (by name and position), LIMIT, window, EXISTS', () => {
    const s = one(
      'SELECT u.id AS k FROM users u JOIN orders o ON o.user_id = u.id WHERE u.name > $1 AND EXISTS (SELECT 1 FROM orders x WHERE x.card = u.email) GROUP BY u.id HAVING count(o.card) > 0 ORDER BY k LIMIT (SELECT count(*) FROM users)',
    )
    assert.deepEqual(s.predicates, [
      'public.orders.card',
      'public.orders.user_id',
      'public.users.email',
      'public.users.id',
      'public.users.name',
    ])
    assert.deepEqual(s.outputs?.[0]?.sources, ['public.users.id'])
  })

  test('a function the catalog says is user-defined is opaque, even under a builtin name', () => {
    const s = one('SELECT upper(name), lower(name), public.anything(id) FROM users')
    assert.match(s.outputs?.[0]?.opaque ?? '', /upper may be user-defined/)
    assert.equal(s.outputs?.[1]?.opaque, null)
    assert.match(s.outputs?.[2]?.opaque ?? '', /public\.anything is not built in/)
    assert.equal(one('SELECT pg_catalog.upper(name) FROM users').outputs?.[0]?.opaque, null)
  })

  test('an opaque call in WHERE is reported for the statement', () => {
    const s = one("SELECT id FROM users WHERE lower_shadow(name) = 'x'")
    assert.equal(s.outputs?.[0]?.opaque, null)
    assert.equal(s.opaqueCalls.length, 1)
  })

  test('unknown relations: qualified columns are named, * is left to RowDescription, whole rows are unresolved', () => {
    const s = one('SELECT t.a, b, * FROM other.thing t')
    assert.deepEqual(s.outputs?.[0]?.sources, ['other.thing.a'])
    assert.deepEqual(s.outputs?.[1]?.sources, ['other.thing.b'])
    assert.equal(s.outputs?.[2]?.unknownStar, 'other.thing')
    assert.deepEqual(s.outputs?.[2]?.sources, [])
    assert.match(one('SELECT row_to_json(t) FROM nowhere t').unresolved ?? '', /does not know/)
  })

  test('a column the catalog does not have is unresolved (fail closed)', () => {
    assert.match(one('SELECT secret FROM users').unresolved ?? '', /secret/)
    assert.match(one('SELECT u.secret FROM users u').unresolved ?? '', /secret/)
  })

  test('COPY options', () => {
    assert.deepEqual(one('COPY users TO STDOUT').copy, {
      format: 'text',
      delimiter: '\t',
      null: '\\N',
      quote: '"',
      escape: '"',
      header: false,
    })
    assert.deepEqual(one("COPY users TO STDOUT WITH CSV HEADER DELIMITER ';' QUOTE '''' NULL 'NULL'").copy, {
      format: 'csv',
      delimiter: ';',
      null: 'NULL',
      quote: "'",
      escape: "'",
      header: true,
    })
    assert.equal(one('COPY users (email) TO STDOUT (FORMAT binary)').copy?.format, 'binary')
    const from = one('COPY users (email) FROM STDIN')
    assert.equal(from.outputs, null)
    assert.deepEqual(
      from.writes.map((w) => w.target),
      ['public.users.email'],
    )
  })

  test('DECLARE, FETCH, PREPARE, EXECUTE, EXPLAIN', () => {
    const [d, f] = analyzeLineage('DECLARE c CURSOR FOR SELECT email FROM users; FETCH 5 FROM c', CAT)
    assert.equal(d?.declare, 'c')
    assert.deepEqual(d?.outputs?.[0]?.sources, ['public.users.email'])
    assert.equal(f?.fetch, 'c')
    assert.equal(f?.outputs, null)
    const p = one('PREPARE q(int) AS SELECT email FROM users WHERE id = $1')
    assert.equal(p.prepare, 'q')
    assert.deepEqual(p.outputs?.[0]?.sources, ['public.users.email'])
    assert.equal(one('EXECUTE q(1)').execute, 'q')
    assert.match(one('EXECUTE q((SELECT email FROM users LIMIT 1))').unresolved ?? '', /parameter/)
    const e = one('EXPLAIN SELECT email FROM users')
    assert.deepEqual(
      e.outputs?.map((o) => o.sources.length),
      [0],
    )
    assert.equal(one('EXPLAIN INSERT INTO orders (card) SELECT email FROM users').writes.length, 0)
    assert.equal(one('EXPLAIN (ANALYZE) INSERT INTO orders (card) SELECT email FROM users').writes.length, 1)
  })

  test('writes name their target column and sources', () => {
    assert.deepEqual(one('UPDATE users SET name = email').writes, [
      { target: 'public.users.name', sources: ['public.users.email'], opaque: null },
    ])
    assert.deepEqual(
      one('INSERT INTO orders SELECT id, id, email FROM users').writes.map((w) => [w.target, w.sources]),
      [
        ['public.orders.id', ['public.users.id']],
        ['public.orders.user_id', ['public.users.id']],
        ['public.orders.card', ['public.users.email']],
      ],
    )
    assert.deepEqual(one('ALTER TABLE users RENAME COLUMN email TO mail').writes, [
      { target: 'public.users.mail', sources: ['public.users.email'], opaque: null },
    ])
    assert.match(one('ALTER SCHEMA public RENAME TO p2').unresolved ?? '', /schema/)
    assert.deepEqual(
      one('CREATE TABLE t2 (a text, b text GENERATED ALWAYS AS (upper(a)) STORED)').writes.map((w) => w.target),
      ['?.t2.b'],
    )
    assert.deepEqual(
      one('ALTER TABLE orders ATTACH PARTITION users FOR VALUES IN (1)').writes.map((w) => w.target),
      ['public.orders.id', 'public.orders.email', 'public.orders.name'],
    )
  })

  test('statements that run code the analysis cannot see are unresolved', () => {
    for (const sql of [
      'DO $$ BEGIN PERFORM 1; END $$',
      'CALL p()',
      'CREATE TRIGGER t AFTER INSERT ON users FOR EACH ROW EXECUTE FUNCTION f()',
    ]) {
      assert.notEqual(one(sql).unresolved, null, sql)
    }
    assert.equal(one('BEGIN').unresolved, null)
    assert.equal(one('SET search_path = x').unresolved, null)
  })

  test('statements run in order: SET search_path and CREATE FUNCTION change the later ones', () => {
    const [, after] = analyzeLineage('SET search_path = elsewhere; SELECT email FROM users', CAT)
    assert.match(after?.unresolved ?? '', /search_path/, 'a catalog that cannot follow the path fails closed')
    const [, computed] = analyzeLineage("SELECT set_config('search_path', name, false) FROM users; SELECT 1", CAT)
    assert.match(computed?.unresolved ?? '', /search_path/)
    const [, reset] = analyzeLineage('SET search_path = elsewhere; RESET search_path; SELECT email FROM users', CAT).slice(1)
    assert.deepEqual(reset?.outputs?.[0]?.sources, ['public.users.email'])
    const [, call] = analyzeLineage(
      "CREATE FUNCTION lower(text) RETURNS text LANGUAGE sql AS 'SELECT 1'; SELECT lower(name) FROM users",
      CAT,
    )
    assert.match(call?.outputs?.[0]?.opaque ?? '', /lower/)
  })

  test('functions that send their arguments elsewhere are writes', () => {
    assert.deepEqual(one("SELECT pg_notify('c', email) FROM users").writes, [
      { target: 'pg_notify()', sources: ['public.users.email'], opaque: null },
    ])
    assert.deepEqual(one("SELECT set_config('x.y', name, false) FROM users").writes[0]?.sources, ['public.users.name'])
  })

  test('(u).* and u.* expand in the select list; ROW(u.*) and u are one whole-row value', () => {
    assert.deepEqual(
      one('SELECT (u).*, u.*, ROW(u.*), u FROM users u').outputs?.map((o) => o.name),
      ['id', 'email', 'name', 'id', 'email', 'name', 'row', 'u'],
    )
    assert.match(one('SELECT (f(x)).* FROM users').unresolved ?? '', /not known/)
  })

  test('system columns are clear; an unqualified relation off the path still counts same-named relations', () => {
    assert.deepEqual(
      one('SELECT ctid, u.xmin, tableoid FROM users u').outputs?.map((o) => o.sources.length),
      [0, 0, 0],
    )
    const cat = buildLineageCatalog([['r', 'hidden', 'people', 'r', '["id","email"]', null]], '"$user", public', 'me')
    const s = one('SELECT email, id FROM people', cat)
    assert.deepEqual(s.outputs?.[0]?.sources, ['?.people.email', 'hidden.people.email'])
    assert.equal(s.outputs?.[0]?.direct, null)
  })

  test('a parse error is unresolved', () => {
    const s = analyzeLineage('SELEC email FROM users', CAT)
    assert.equal(s.length, 1)
    assert.match(s[0]?.unresolved ?? '', /parsed/)
  })

  test('search_path resolution of the catalog builder', () => {
    const snap = parseLineageCatalog([
      ['r', 'a', 't', 'r', '["x"]', null],
      ['r', 'b', 't', 'v', '["y"]', 'SELECT 1 AS y'],
      ['r', 'pg_catalog', 'pg_class', 'r', '["oid"]', null],
      ['f', null, 'f1', null, null, null],
      ['o', null, '===', null, null, null],
    ])
    assert.equal(snap.relations.size, 3)
    const cat = buildLineageCatalog(
      [
        ['r', 'a', 't', 'r', '["x"]', null],
        ['r', 'b', 't', 'v', '["y"]', 'SELECT 1 AS y'],
      ],
      'b, a',
      'me',
    )
    assert.equal(cat.relation(null, 't')?.schema, 'b')
    assert.equal(cat.relation('a', 't')?.columns[0], 'x')
    assert.equal(buildLineageCatalog([['r', 'a', 't', 'r', '["x"]', null]], '"$user", a', 'me').relation(null, 't')?.schema, 'a')
    assert.equal(buildLineageCatalog([['r', 'me', 't', 'r', '["x"]', null]], '"$user", a', 'me').relation(null, 't')?.schema, 'me')
    assert.throws(() => parseLineageCatalog([['r', 'a', 't', 'r', 'not json', null]]), /not JSON/)
    assert.throws(() => parseLineageCatalog([['x', 'a', 't', 'r', '[]', null]]), /unexpected/)
  })

  test('never throws, whatever the text', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 80 }), (s) => {
        for (const r of analyzeLineage(`SELECT ${s} FROM users`, CAT)) assert.ok(r.unresolved !== null || Array.isArray(r.writes))
      }),
      { numRuns: 300 },
    )
  })
})
