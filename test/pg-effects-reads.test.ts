// Effects behind reading verbs (class 2: COPY of a write, EXPLAIN ANALYZE, data-modifying WITH,
// MERGE, row locks, SELECT INTO, NOTIFY), tried through a
// real gateway in front of a private PostgreSQL cluster whose own statement log (log_statement =
// all) is the ground truth (test/helpers/pgcorpus.ts): every case asserts that what the server
// executed is exactly what the gateway allowed and audited, and a refused case executed nothing.
// On top of that, each case checks the cluster directly: rows, the sequence, large objects, and
// (for the whole file) that a listener on a side connection received no notification. The schema
// and that fixture are in test/helpers/pg-effects.ts.
//
// Principals: `reader` (a user with no groups: sql.read and sql.session only), `bot` (an agent
// whose token is scoped to sql.read), `writer` (group writers, under the default guardrails,
// among them no-unbounded-write). The default policy bundle decides.
// Functions with side effects (class 5) are in pg-effects-functions.test.ts.

import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import type { CaseContext, CorpusCase } from './helpers/pgcorpus.js'
import { serialize } from './helpers/pgcorpus.js'
import { baseline, corpus, deniedEvent, listener, notifications, ok, refused, state, useEffectsCorpus } from './helpers/pg-effects.js'

// ---- class 2: effects behind reading verbs, tried by readers -------------------------------------

const WRITES_BEHIND_READS: string[] = [
  'COPY (DELETE FROM fx_t RETURNING *) TO STDOUT',
  "COPY (UPDATE fx_t SET v = 'x' WHERE id = 1 RETURNING id) TO STDOUT",
  "COPY (INSERT INTO fx_u VALUES (9, 'x') RETURNING *) TO STDOUT",
  'copy (delete from fx_t where id = 1 returning id) to stdout with (format csv)',
  '/* just a copy */ CoPy (dElEtE FrOm fx_t ReTuRnInG *) tO sTdOuT',
  'COPY (WITH d AS (DELETE FROM fx_t RETURNING *) SELECT * FROM d) TO STDOUT',
  "COPY (MERGE INTO fx_t USING (SELECT 1 AS id) s ON fx_t.id = s.id WHEN MATCHED THEN UPDATE SET v = 'm' RETURNING *) TO STDOUT",
  'EXPLAIN ANALYZE DELETE FROM fx_t WHERE id = 1',
  "EXPLAIN (ANALYZE) UPDATE fx_t SET v = 'e' WHERE id = 1",
  'EXPLAIN (ANALYZE true) DELETE FROM fx_t WHERE id = 1',
  'EXPLAIN (ANALYZE 1) DELETE FROM fx_t WHERE id = 1',
  'EXPLAIN (ANALYZE on) DELETE FROM fx_t WHERE id = 1',
  "EXPLAIN (ANALYZE 'TRUE') DELETE FROM fx_t WHERE id = 1",
  "EXPLAIN (FORMAT JSON, ANALYZE) INSERT INTO fx_u VALUES (1, 'e')",
  'EXPLAIN (COSTS off, Analyze TRUE, TIMING off) DELETE FROM fx_t WHERE id = 2',
  'EXPLAIN (analyze, analyze false) DELETE FROM fx_t WHERE id = 2',
  'EXPLAIN ANALYSE DELETE FROM fx_t WHERE id = 1',
  'EXPLAIN ANALYZE VERBOSE DELETE FROM fx_t WHERE id = 1',
  'explain (ANALYZE) with d as (delete from fx_t where id = 3 returning *) select * from d',
  'EXPLAIN ANALYZE SELECT * FROM fx_t FOR UPDATE',
  'EXPLAIN ANALYZE MERGE INTO fx_t USING fx_u ON fx_t.id = fx_u.id WHEN MATCHED THEN DELETE',
  'EXPLAIN ANALYZE CREATE TABLE fx_new AS SELECT 1',
  'EXPLAIN ANALYZE SELECT * INTO fx_new2 FROM fx_t',
  'WITH d AS (DELETE FROM fx_t WHERE id = 1 RETURNING *) SELECT * FROM d',
  "WITH a AS (SELECT 1), d AS (UPDATE fx_t SET v = 'c' WHERE id = 1 RETURNING *) SELECT * FROM a",
  "WITH RECURSIVE r(n) AS (SELECT 1), d AS (INSERT INTO fx_u VALUES (1, 'r') RETURNING *) SELECT * FROM r",
  'with "D" as (delete from fx_t where id = 4 returning *) table "D"',
  'WITH d AS (DELETE FROM fx_t WHERE id = 5 RETURNING *) SELECT 1',
  'WITH d AS (DELETE FROM fx_t WHERE id = 5 RETURNING *) VALUES (1)',
  'SELECT * FROM (WITH d AS (DELETE FROM fx_t WHERE id = 1 RETURNING *) SELECT * FROM d) s',
  "SELECT (WITH d AS (UPDATE fx_t SET v = 'n' WHERE id = 1 RETURNING 1) SELECT 1)",
  'MERGE INTO fx_t USING (SELECT 1 AS id) s ON fx_t.id = s.id WHEN MATCHED THEN UPDATE SET v = $$m$$',
  "MERGE INTO fx_u USING (SELECT 7 AS id) s ON fx_u.id = s.id WHEN NOT MATCHED THEN INSERT VALUES (s.id, 'm')",
  'merge into fx_t t using fx_u u on true when matched then delete',
  'SELECT * FROM fx_t FOR UPDATE',
  'SELECT * FROM fx_t FOR SHARE',
  'SELECT * FROM fx_t FOR NO KEY UPDATE',
  'SELECT * FROM fx_t FOR KEY SHARE',
  'SELECT * FROM fx_t FOR UPDATE SKIP LOCKED',
  'SELECT * FROM fx_t t FOR UPDATE OF t NOWAIT',
  'SELECT * FROM (SELECT * FROM fx_t FOR UPDATE) s',
  'SELECT * FROM fx_t WHERE id IN (SELECT id FROM fx_t FOR SHARE)',
  'WITH l AS (SELECT * FROM fx_t FOR UPDATE) SELECT * FROM l',
  'SELECT * FROM fx_view FOR UPDATE',
  'SELECT * INTO fx_into FROM fx_t',
  'SELECT 1 AS a INTO TEMP fx_tmp',
  'CREATE TABLE fx_ctas AS SELECT * FROM fx_t',
  'CREATE TEMP TABLE fx_ctas2 AS SELECT 1',
  'CREATE MATERIALIZED VIEW fx_mv AS SELECT 1',
  'SELECT 1; COPY (DELETE FROM fx_t WHERE id = 1 RETURNING id) TO STDOUT',
  'NOTIFY fx_chan',
  'LOCK TABLE fx_t IN ACCESS SHARE MODE',
]

const class2: CorpusCase[] = []
for (const [i, sql] of WRITES_BEHIND_READS.entries()) {
  const as = i % 3 === 2 ? 'bot' : 'reader'
  class2.push({ name: `reader cannot write behind a reading verb: ${sql}`, cls: '2', as, steps: [refused(sql)] })
}
class2.push(
  {
    name: 'reader cannot EXECUTE a prepared write',
    cls: '2',
    as: 'reader',
    steps: [ok('PREPARE fx_p AS DELETE FROM fx_t WHERE id = 1'), refused('EXECUTE fx_p')],
  },
  {
    name: 'reader cannot EXECUTE a prepared UPDATE with parameters',
    cls: '2',
    as: 'bot',
    steps: [ok("PREPARE fx_p(int) AS UPDATE fx_t SET v = 'p' WHERE id = $1"), refused('EXECUTE fx_p(1)')],
  },
  {
    name: 'reader cannot EXECUTE a prepared data-modifying CTE',
    cls: '2',
    as: 'reader',
    steps: [ok('PREPARE fx_p AS WITH d AS (DELETE FROM fx_t RETURNING *) SELECT * FROM d'), refused('EXECUTE fx_p')],
  },
  {
    name: 'reader cannot EXECUTE a prepared locking read',
    cls: '2',
    as: 'reader',
    steps: [ok('PREPARE fx_p AS SELECT * FROM fx_t FOR UPDATE'), refused('EXECUTE fx_p')],
  },
  {
    name: 'reader cannot EXPLAIN ANALYZE EXECUTE a prepared write',
    cls: '2',
    as: 'reader',
    steps: [ok('PREPARE fx_p AS DELETE FROM fx_t WHERE id = 1'), refused('EXPLAIN ANALYZE EXECUTE fx_p')],
  },
  {
    name: 'CREATE TABLE AS EXECUTE is refused',
    cls: '2',
    as: 'reader',
    steps: [ok('PREPARE fx_p AS SELECT 1'), refused('CREATE TABLE fx_x AS EXECUTE fx_p')],
  },
  {
    name: 'reader cannot DECLARE a cursor that locks rows',
    cls: '2',
    as: 'reader',
    steps: [ok('BEGIN'), refused('DECLARE fx_c CURSOR FOR SELECT * FROM fx_t FOR UPDATE'), { sql: 'ROLLBACK', expect: 'any' }],
  },
  {
    name: 'reader cannot run a write behind COPY through the extended protocol',
    cls: '2',
    as: 'reader',
    steps: [
      {
        wire: [
          serialize.parse({ text: 'COPY (DELETE FROM fx_t RETURNING *) TO STDOUT' }),
          serialize.bind({}),
          serialize.execute({}),
          serialize.sync(),
        ],
        expect: 'refused',
      },
    ],
  },
  {
    name: 'reader cannot run a data-modifying CTE through the extended protocol',
    cls: '2',
    as: 'bot',
    steps: [
      {
        wire: [
          serialize.parse({ text: 'WITH d AS (DELETE FROM fx_t WHERE id = $1 RETURNING *) SELECT * FROM d' }),
          serialize.bind({ values: ['1'] }),
          serialize.execute({}),
          serialize.sync(),
        ],
        expect: 'refused',
      },
    ],
  },
)

// ---- class 2: the unbounded-write rule cannot be passed by wrapping the write ---------------------

const UNBOUNDED: [string, string][] = [
  ['COPY (DELETE FROM fx_t RETURNING *) TO STDOUT', 'delete'],
  ['COPY (UPDATE fx_t SET v = v RETURNING *) TO STDOUT', 'update'],
  ['EXPLAIN ANALYZE DELETE FROM fx_t', 'delete'],
  ['EXPLAIN (ANALYZE 1, FORMAT YAML) UPDATE fx_t SET v = v', 'update'],
  ['EXPLAIN (costs off, ANALYZE on) DELETE FROM fx_t', 'delete'],
  ['WITH d AS (DELETE FROM fx_t RETURNING *) SELECT count(*) FROM d', 'delete'],
  ['WITH d AS (DELETE FROM fx_t RETURNING *) INSERT INTO fx_w SELECT id FROM d', 'delete'],
  ['WITH u AS (UPDATE fx_t SET v = v RETURNING *) UPDATE fx_w SET n = 1 WHERE n = -1', 'update'],
  ['WITH a AS (DELETE FROM fx_w WHERE n = -1 RETURNING *), b AS (DELETE FROM fx_t RETURNING *) SELECT 1', 'delete'],
  ['COPY (WITH d AS (DELETE FROM fx_t RETURNING *) SELECT * FROM d) TO STDOUT', 'delete'],
  ['EXPLAIN ANALYZE WITH d AS (DELETE FROM fx_t RETURNING 1) SELECT 1', 'delete'],
  ['WITH d AS (UPDATE fx_t SET v = v RETURNING *) SELECT * FROM fx_w FOR UPDATE', 'update'],
  ['INSERT INTO fx_w SELECT 1; DELETE FROM fx_t', 'delete'],
]
for (const [sql, kind] of UNBOUNDED) {
  class2.push({
    name: `writer cannot pass no-unbounded-write by wrapping: ${sql}`,
    cls: '2',
    as: 'writer',
    steps: [refused(sql)],
    check: (ctx) => {
      const e = deniedEvent(ctx)
      assert.ok((e.rules as string[]).includes('no-unbounded-write'), `decided by no-unbounded-write: ${JSON.stringify(e.rules)}`)
      if (e.kind !== undefined) assert.equal(e.kind, kind)
    },
  })
}
class2.push(
  {
    name: 'writer cannot EXECUTE a prepared unbounded DELETE',
    cls: '2',
    as: 'writer',
    steps: [ok('PREPARE fx_wp AS DELETE FROM fx_t'), refused('EXECUTE fx_wp')],
  },
  {
    name: 'writer cannot EXPLAIN ANALYZE EXECUTE a prepared unbounded UPDATE',
    cls: '2',
    as: 'writer',
    steps: [ok('PREPARE fx_wp AS UPDATE fx_t SET v = v'), refused('EXPLAIN ANALYZE EXECUTE fx_wp')],
  },
  {
    name: 'writer cannot pass no-unbounded-write through the extended protocol',
    cls: '2',
    as: 'writer',
    steps: [
      {
        wire: [
          serialize.parse({ text: 'COPY (DELETE FROM fx_t RETURNING *) TO STDOUT' }),
          serialize.bind({}),
          serialize.execute({}),
          serialize.sync(),
        ],
        expect: 'refused',
      },
    ],
  },
)

// ---- class 2: what stays allowed ---------------------------------------------------------------

const audited = (kind: string, wrapper: string | null) => (ctx: CaseContext) => {
  const e = ctx.audit.find((x) => x.type === 'statement' && x.decision === 'allow' && x.kind === kind)
  assert.ok(e, `an allowed ${kind} is audited: ${JSON.stringify(ctx.audit)}`)
  assert.equal(e.action, 'sql.write')
  assert.equal(e.wrapper ?? null, wrapper)
}
class2.push(
  {
    name: 'writer: a bounded DELETE behind COPY runs',
    cls: '2',
    as: 'writer',
    steps: [ok('COPY (DELETE FROM fx_w WHERE n = -1 RETURNING *) TO STDOUT')],
    check: audited('delete', 'copy'),
  },
  {
    name: 'writer: a bounded UPDATE under EXPLAIN ANALYZE runs',
    cls: '2',
    as: 'writer',
    steps: [ok('EXPLAIN (ANALYZE, COSTS off, TIMING off, SUMMARY off) UPDATE fx_w SET n = n WHERE n = -1')],
    check: audited('update', 'explain_analyze'),
  },
  {
    name: 'writer: a bounded DELETE in a CTE runs',
    cls: '2',
    as: 'writer',
    steps: [ok('WITH d AS (DELETE FROM fx_w WHERE n = -1 RETURNING *) SELECT count(*) FROM d', [['0']])],
    check: audited('delete', 'select'),
  },
  {
    name: 'writer: MERGE runs',
    cls: '2',
    as: 'writer',
    steps: [ok('MERGE INTO fx_w USING (SELECT 100 AS n) s ON fx_w.n = s.n WHEN NOT MATCHED THEN INSERT VALUES (s.n)')],
    check: (ctx) => {
      audited('merge', null)(ctx)
      assert.equal(ctx.cluster.sql('SELECT count(*) FROM fx_w WHERE n = 100', 'corpus'), '1')
    },
  },
  {
    name: 'writer: a locking read runs',
    cls: '2',
    as: 'writer',
    steps: [ok('SELECT * FROM fx_w FOR UPDATE')],
    check: audited('select_for_update', null),
  },
  {
    name: 'writer: a prepared bounded UPDATE runs',
    cls: '2',
    as: 'writer',
    steps: [ok('PREPARE fx_wq AS UPDATE fx_w SET n = n WHERE n = -1'), ok('EXECUTE fx_wq')],
  },
  {
    name: 'writer: an INSERT behind COPY runs',
    cls: '2',
    as: 'writer',
    steps: [ok('COPY (INSERT INTO fx_w VALUES (7) RETURNING n) TO STDOUT')],
    check: audited('insert', 'copy'),
  },
  {
    name: 'reader: COPY of a query runs',
    cls: '2',
    as: 'reader',
    steps: [ok('COPY (SELECT * FROM fx_t ORDER BY id) TO STDOUT')],
  },
  { name: 'reader: COPY of a table runs', cls: '2', as: 'bot', steps: [ok('COPY fx_t TO STDOUT (FORMAT csv)')] },
  {
    name: 'reader: EXPLAIN without ANALYZE of a DELETE runs nothing and is a read',
    cls: '2',
    as: 'reader',
    steps: [ok('EXPLAIN DELETE FROM fx_t')],
  },
  {
    name: 'reader: EXPLAIN (ANALYZE off)',
    cls: '2',
    as: 'reader',
    steps: [ok('EXPLAIN (ANALYZE off) DELETE FROM fx_t')],
  },
  {
    name: 'reader: EXPLAIN (ANALYZE false, COSTS off)',
    cls: '2',
    as: 'bot',
    steps: [ok("EXPLAIN (ANALYZE false, COSTS off) UPDATE fx_t SET v = 'x'")],
  },
  { name: 'reader: EXPLAIN (ANALYZE 0)', cls: '2', as: 'reader', steps: [ok('EXPLAIN (ANALYZE 0) DELETE FROM fx_t')] },
  {
    name: 'reader: EXPLAIN ANALYZE of a SELECT',
    cls: '2',
    as: 'reader',
    steps: [ok('EXPLAIN (ANALYZE, COSTS off, TIMING off, SUMMARY off) SELECT count(*) FROM fx_t')],
  },
  {
    name: 'reader: a reading CTE',
    cls: '2',
    as: 'reader',
    steps: [ok('WITH s AS (SELECT * FROM fx_t) SELECT count(*) FROM s', [['5']])],
  },
  {
    name: 'reader: a cursor over a plain SELECT',
    cls: '2',
    as: 'reader',
    steps: [
      ok('BEGIN'),
      ok('DECLARE fx_c CURSOR FOR SELECT id FROM fx_t ORDER BY id'),
      ok('FETCH 2 FROM fx_c', [['1'], ['2']]),
      ok('COMMIT'),
    ],
  },
  {
    name: 'reader: a prepared SELECT',
    cls: '2',
    as: 'bot',
    steps: [ok('PREPARE fx_rp(int) AS SELECT v FROM fx_t WHERE id = $1'), ok('EXECUTE fx_rp(3)', [['v3']])],
  },
)

describe('effects behind reading verbs and side-effect functions (server log as ground truth)', () => {
  useEffectsCorpus()

  for (const c of class2)
    test(c.name, async () => {
      await corpus.run(c)
      assert.equal(await state(), baseline, 'rows, the sequence, large objects and advisory locks are as they were')
    })

  test('no notification reached a listener, and the corpus covered class 2', async () => {
    await listener.query('SELECT 1') // delivers any pending notification
    assert.deepEqual(notifications, [])
    assert.ok((corpus.counts.get('2') ?? 0) >= 70, `class 2: ${corpus.counts.get('2')}`)
  })
})
