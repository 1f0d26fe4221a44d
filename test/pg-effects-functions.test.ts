// Functions with side effects under a read-only scope (class 5: sequences, functions behind
// domains, casts, operators, views and search_path, pg_notify, large objects, advisory locks), and
// the built-ins that stay reads, tried through a
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
// Effects behind reading verbs (class 2) are in pg-effects-reads.test.ts.

import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import type { CaseContext, CorpusCase } from './helpers/pgcorpus.js'
import { serialize } from './helpers/pgcorpus.js'
import { baseline, corpus, deniedEvent, listener, notifications, ok, refused, state, useEffectsCorpus } from './helpers/pg-effects.js'

// ---- class 5: functions with side effects under a read-only scope -------------------------------

const SIDE_EFFECT_CALLS: string[] = [
  "SELECT nextval('fx_seq')",
  "SELECT setval('fx_seq', 100)",
  "SELECT setval('fx_seq'::regclass, 5, false)",
  "SELECT pg_catalog.nextval('fx_seq')",
  `SELECT "nextval"('fx_seq')`,
  "SELECT NEXTVAL('FX_SEQ')",
  "SELECT id, nextval('fx_seq') FROM fx_t",
  "SELECT * FROM fx_t WHERE id = nextval('fx_seq')",
  "SELECT * FROM fx_t ORDER BY nextval('fx_seq')",
  "SELECT (SELECT nextval('fx_seq'))",
  "VALUES (nextval('fx_seq'))",
  "SELECT * FROM generate_series(1, nextval('fx_seq')::int)",
  "SELECT nextval(c.relname::regclass) FROM pg_class c WHERE c.relname = 'fx_seq'",
  'SELECT pg_advisory_lock(1)',
  'SELECT pg_advisory_lock_shared(1)',
  'SELECT pg_try_advisory_lock(1)',
  'SELECT pg_advisory_xact_lock(1)',
  'SELECT pg_try_advisory_xact_lock_shared(2)',
  'SELECT pg_advisory_lock(1, 2)',
  "SELECT pg_advisory_lock(hashtext('x'))",
  'SELECT pg_advisory_unlock_all()',
  'SELECT lo_create(0)',
  'SELECT lo_creat(-1)',
  "SELECT lo_from_bytea(0, '\\x41')",
  "SELECT lo_import('/etc/hostname')",
  'SELECT lo_unlink(1)',
  "SELECT lo_put(1, 0, '\\x41')",
  'SELECT lo_open(1, 131072)',
  "SELECT pg_notify('fx_chan', 'x')",
  "SELECT pg_notify(chan, 'x') FROM (VALUES ('fx_chan')) v(chan)",
  'SELECT txid_current()',
  'SELECT pg_current_xact_id()',
  'SELECT pg_terminate_backend(0)',
  'SELECT pg_cancel_backend(0)',
  'SELECT pg_reload_conf()',
  'SELECT pg_switch_wal()',
  'SELECT pg_stat_reset()',
  'SELECT pg_rotate_logfile()',
  "SELECT pg_create_restore_point('fx')",
  "SELECT pg_logical_emit_message(false, 'fx', 'm')",
  "SELECT brin_summarize_new_values('fx_t_pkey')",
  "SELECT pg_read_file('/etc/hostname')",
  "SELECT * FROM pg_ls_dir('.')",
  "SELECT query_to_xml('DELETE FROM fx_t RETURNING *', true, false, '')",
  "SELECT set_config('role', 'postgres', false)",
  'SELECT fx_bump()',
  'SELECT public.fx_bump()',
  'SELECT * FROM fx_bump()',
  'SELECT 1 WHERE fx_bump() > 0',
  'SELECT fx_pure(1)',
  'SELECT fx_lock(42)',
  `SELECT "fx_bump"()`,
  'SELECT id FROM fx_t ORDER BY fx_bump()',
  'SELECT count(*) FILTER (WHERE fx_bump() > 0) FROM fx_t',
  "SELECT abs('x')",
  "SELECT pg_catalog.abs(-1), public.abs('x')",
  'SELECT fx_s.timeofday()',
  'SELECT 1 === 1',
  'SELECT 1 OPERATOR(public.===) 1',
  'SELECT * FROM fx_t WHERE id === 1',
  'EXPLAIN SELECT fx_lock(43)',
  'EXPLAIN SELECT fx_pure(1)',
  "EXPLAIN ANALYZE SELECT nextval('fx_seq')",
  "COPY (SELECT nextval('fx_seq')) TO STDOUT",
  "SELECT * FROM fx_t t, LATERAL (SELECT nextval('fx_seq')) s",
  "WITH s AS (SELECT nextval('fx_seq')) SELECT * FROM s",
  "SELECT 1 UNION SELECT nextval('fx_seq')",
  "SELECT CASE WHEN false THEN nextval('fx_seq') END",
  "SELECT ARRAY[nextval('fx_seq')]",
  "SELECT coalesce(NULL, nextval('fx_seq'))",
  "SELECT 'x'::fx_dom",
  "SELECT CAST('x' AS public.fx_dom)",
  "SELECT ARRAY['x']::fx_dom[]",
  'SELECT (1::fx_ty).a',
  'SELECT * FROM fx_t TABLESAMPLE fx_bump(1)',
  'SELECT * FROM fx_vseq',
  'SELECT n FROM fx_vv',
  'SELECT count(*) FROM public.fx_vfn',
  'SELECT * FROM fx_t WHERE id IN (SELECT n FROM fx_vseq)',
]

const class5: CorpusCase[] = SIDE_EFFECT_CALLS.map((sql, i) => ({
  name: `reader cannot call a side effect: ${sql}`,
  cls: '5',
  as: i % 2 === 1 ? 'bot' : 'reader',
  steps: [refused(sql)],
  check: (ctx: CaseContext) => {
    const e = deniedEvent(ctx)
    assert.equal(e.action === 'sql.write' || e.action === 'sql.admin' || e.action === 'sql.other', true, `not a read: ${String(e.action)}`)
  },
}))
class5.push(
  {
    name: 'a function shadowing a built-in through search_path is not the built-in',
    cls: '5',
    as: 'reader',
    steps: [ok('SET search_path = fx_s, pg_catalog, public'), refused('SELECT timeofday()')],
  },
  {
    name: 'reader cannot DECLARE a cursor over a side effect',
    cls: '5',
    as: 'reader',
    steps: [ok('BEGIN'), refused("DECLARE fx_c CURSOR FOR SELECT nextval('fx_seq')"), { sql: 'ROLLBACK', expect: 'any' }],
  },
  {
    name: 'reader cannot EXECUTE a prepared side effect',
    cls: '5',
    as: 'reader',
    steps: [ok("PREPARE fx_p5 AS SELECT nextval('fx_seq')"), refused('EXECUTE fx_p5')],
  },
  {
    name: 'reader cannot pass a side effect as an EXECUTE parameter',
    cls: '5',
    as: 'bot',
    steps: [ok('PREPARE fx_p6(bigint) AS SELECT $1'), refused("EXECUTE fx_p6(nextval('fx_seq'))")],
  },
  {
    name: 'reader cannot call a side effect through the extended protocol',
    cls: '5',
    as: 'reader',
    steps: [
      {
        wire: [
          serialize.parse({ text: 'SELECT nextval($1)' }),
          serialize.bind({ values: ['fx_seq'] }),
          serialize.execute({}),
          serialize.sync(),
        ],
        expect: 'refused',
      },
    ],
  },
  {
    name: 'reader cannot NOTIFY through the extended protocol',
    cls: '5',
    as: 'bot',
    steps: [
      {
        wire: [
          serialize.parse({ text: 'SELECT pg_notify($1, $2)' }),
          serialize.bind({ values: ['fx_chan', 'x'] }),
          serialize.execute({}),
          serialize.sync(),
        ],
        expect: 'refused',
      },
    ],
  },
  {
    name: 'the refused side effect is audited with the calls that made it a write',
    cls: '5',
    as: 'reader',
    steps: [refused("SELECT lower(v), nextval('fx_seq'), fx_bump() FROM fx_t")],
    check: (ctx) => {
      const e = deniedEvent(ctx)
      assert.equal(e.action, 'sql.write')
      assert.deepEqual(e.side_effect_functions, ['fx_bump', 'nextval'])
    },
  },
)

// Ordinary analytics with built-in functions stay reads.
const HARMLESS: [string, (string | null)[][] | undefined][] = [
  ['SELECT count(*), sum(id), avg(id)::int, max(v), min(v) FROM fx_t', [['5', '15', '3', 'v5', 'v1']]],
  [
    "SELECT lower(v), upper(v), length(v), substr(v, 1, 1), replace(v, 'v', 'w'), concat_ws('-', id, v) FROM fx_t WHERE id = 1",
    [['v1', 'V1', '2', 'v', 'w1', '1-v1']],
  ],
  [
    "SELECT date_trunc('day', now()) <= now(), extract(year FROM now()) > 2000, now() - interval '1 day' < now(), to_char(now(), 'YYYY') > '2000'",
    [['t', 't', 't', 't']],
  ],
  ["SELECT jsonb_build_object('id', id, 'v', v)::text FROM fx_t WHERE id = 2", [['{"v": "v2", "id": 2}']]],
  [
    'SELECT row_number() OVER (ORDER BY id), rank() OVER (ORDER BY v), lag(v) OVER (ORDER BY id) FROM fx_t WHERE id <= 2 ORDER BY id',
    [
      ['1', '1', null],
      ['2', '2', 'v1'],
    ],
  ],
  ["SELECT array_agg(id ORDER BY id)::text, string_agg(v, ',' ORDER BY id) FROM fx_t", [['{1,2,3,4,5}', 'v1,v2,v3,v4,v5']]],
  ['SELECT coalesce(NULL, 1), nullif(1, 2), greatest(1, 2), least(1, 2)', [['1', '1', '2', '1']]],
  ["SELECT count(*) FROM fx_t WHERE v LIKE 'v%' AND v ILIKE 'V%' AND v ~ 'v' AND id BETWEEN 1 AND 5 AND id IN (1, 2, 3, 4, 5)", [['5']]],
  ['SELECT random() < 2, gen_random_uuid() IS NOT NULL, clock_timestamp() IS NOT NULL', [['t', 't', 't']]],
  ["SELECT current_setting('search_path') <> '', current_user IS NOT NULL, version() IS NOT NULL", [['t', 't', 't']]],
  ['SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY id) FROM fx_t', [['3']]],
  ["SELECT pg_size_pretty(pg_total_relation_size('fx_t')) IS NOT NULL", [['t']]],
  [
    "SELECT md5(v), split_part(v, 'v', 2), encode(sha256(v::bytea), 'hex') <> '' FROM fx_t WHERE id = 1",
    [['6654c734ccab8f440ff0825eb443dc7f', '1', 't']],
  ],
  ["SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'", [['0']]],
  ["SELECT set_config('extra_float_digits', '2', false)", [['2']]],
  ['SELECT pg_sleep(0)', [['']]],
  ['SELECT txid_current_if_assigned() IS NULL', [['t']]],
  ['SELECT count(*) FROM fx_view', [['5']]],
  ['SELECT v FROM fx_vok WHERE id = 4', [['v4']]],
  ["SELECT pg_catalog.lower('A')", [['a']]],
  ["SELECT 'a' || 'b', 1 + 2 * 3, 2 ^ 3, @ -5, '{1,2}'::int[] @> '{1}'", [['ab', '7', '8', '5', 't']]],
  ['SELECT to_jsonb(t)::text FROM fx_t t WHERE id = 3', [['{"v": "v3", "id": 3}']]],
  ["SELECT currval('fx_seq')", undefined],
  ['SELECT count(*) FROM fx_t TABLESAMPLE BERNOULLI (100)', [['5']]],
  ["SELECT '1'::int + 1, CAST('2' AS bigint), 'a'::text, '[1,2)'::int4range @> 1", [['2', '2', 'a', 't']]],
]
for (const [sql, rows] of HARMLESS) {
  class5.push({
    name: `reader: harmless built-ins stay a read: ${sql}`,
    cls: '5',
    as: 'reader',
    steps: [rows === undefined ? { sql, expect: 'error' } : ok(sql, rows)],
    check: (ctx) => {
      const e = ctx.audit.find((x) => x.type === 'statement')
      assert.equal(e?.action, 'sql.read')
    },
  })
}

describe('effects behind reading verbs and side-effect functions (server log as ground truth)', () => {
  useEffectsCorpus()

  for (const c of class5)
    test(c.name, async () => {
      await corpus.run(c)
      assert.equal(await state(), baseline, 'rows, the sequence, large objects and advisory locks are as they were')
    })

  test('no notification reached a listener, and the corpus covered class 5', async () => {
    await listener.query('SELECT 1') // delivers any pending notification
    assert.deepEqual(notifications, [])
    assert.ok((corpus.counts.get('5') ?? 0) >= 70, `class 5: ${corpus.counts.get('5')}`)
  })
})
