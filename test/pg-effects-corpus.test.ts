// Effects behind reading verbs (class 2) and functions with side effects (class 5), tried through a
// real gateway in front of a private PostgreSQL cluster whose own statement log (log_statement =
// all) is the ground truth (test/helpers/pgcorpus.ts): every case asserts that what the server
// executed is exactly what the gateway allowed and audited, and a refused case executed nothing.
// On top of that, each case checks the cluster directly: rows, the sequence, large objects, and
// (for the whole file) that a listener on a side connection received no notification.
//
// Principals: `reader` (a user with no groups: sql.read and sql.session only), `bot` (an agent
// whose token is scoped to sql.read), `writer` (group writers, under the default guardrails,
// among them no-unbounded-write). The default policy bundle decides.

import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import pg from 'pg'
import { type CaseContext, Corpus, type CorpusCase, type CorpusStep, serialize } from './helpers/pgcorpus.js'

const SCHEMA = `
CREATE TABLE fx_t (id int PRIMARY KEY, v text);
INSERT INTO fx_t SELECT g, 'v' || g FROM generate_series(1, 5) g;
CREATE TABLE fx_u (id int, v text);
CREATE TABLE fx_w (n int);
CREATE SEQUENCE fx_seq;
CREATE VIEW fx_view AS SELECT id, v FROM fx_t;
CREATE FUNCTION fx_bump() RETURNS int LANGUAGE sql AS 'UPDATE fx_t SET v = ''bumped'' WHERE id = 1 RETURNING id';
CREATE FUNCTION fx_pure(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 + 1';
CREATE FUNCTION fx_lock(int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN PERFORM pg_advisory_lock($1); RETURN $1; END $$;
CREATE FUNCTION public.abs(text) RETURNS text LANGUAGE sql AS $$ UPDATE fx_t SET v = 'shadow' WHERE id = 2; SELECT 'x' $$;
CREATE FUNCTION fx_eq(int, int) RETURNS bool LANGUAGE plpgsql AS $$ BEGIN PERFORM nextval('fx_seq'); RETURN $1 = $2; END $$;
CREATE OPERATOR public.=== (function = fx_eq, leftarg = int, rightarg = int);
CREATE SCHEMA fx_s;
CREATE FUNCTION fx_s.timeofday() RETURNS text LANGUAGE sql AS $$ SELECT nextval('public.fx_seq')::text $$;
GRANT USAGE ON SCHEMA fx_s TO PUBLIC;
CREATE FUNCTION fx_chk(text) RETURNS bool LANGUAGE plpgsql AS $$ BEGIN PERFORM nextval('fx_seq'); RETURN true; END $$;
CREATE DOMAIN fx_dom AS text CHECK (fx_chk(VALUE));
CREATE TYPE fx_ty AS (a int);
CREATE FUNCTION fx_cast(int) RETURNS fx_ty LANGUAGE plpgsql AS $$ BEGIN PERFORM nextval('fx_seq'); RETURN ROW($1)::fx_ty; END $$;
CREATE CAST (int AS fx_ty) WITH FUNCTION fx_cast(int);
CREATE VIEW fx_vseq AS SELECT nextval('fx_seq') AS n;
CREATE VIEW fx_vv AS SELECT * FROM fx_vseq;
CREATE VIEW fx_vfn AS SELECT fx_bump() AS b;
CREATE VIEW fx_vok AS SELECT id, lower(v) AS v FROM fx_view;
`

/** Rows, the sequence, large objects and advisory locks, as one comparable string. */
const STATE_SQL = `SELECT (SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM fx_t) || '|' ||
  (SELECT count(*) FROM fx_u) || '|' || (SELECT last_value || ':' || is_called FROM fx_seq) || '|' ||
  (SELECT count(*) FROM pg_largeobject_metadata) || '|' || (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory')`

// Every case leaves this state as it found it (the writers' allowed cases touch only fx_w): checked
// after each case over one direct connection (a psql process per case would cost more than the case).
let baseline = ''

const refused = (sql: string): CorpusStep => ({ sql, expect: 'refused' })
const ok = (sql: string, rows?: (string | null)[][]): CorpusStep => (rows ? { sql, expect: 'ok', rows } : { sql, expect: 'ok' })

/** The audited statement (the first one the case refused), for checking what policy saw. */
function deniedEvent(ctx: CaseContext): Record<string, unknown> {
  const e = ctx.audit.find((x) => x.type === 'statement' && x.decision === 'deny')
  assert.ok(e, 'a denied statement is audited')
  return e
}

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
  let corpus: Corpus
  let listener: pg.Client
  let direct: pg.Client
  const notifications: string[] = []
  const state = async (): Promise<string> =>
    (await direct.query<{ s: string }>(`SELECT ${STATE_SQL.replace(/^SELECT /, '')} AS s`)).rows[0]?.s ?? ''

  before(async () => {
    corpus = await Corpus.start({
      principals: { reader: [], writer: ['writers'] },
      scopes: { bot: 'sql.read' },
      schema: SCHEMA,
    })
    direct = new pg.Client({ host: '127.0.0.1', port: corpus.cluster.port, user: 'postgres', database: 'corpus' })
    await direct.connect()
    baseline = await state()
    listener = new pg.Client({ host: '127.0.0.1', port: corpus.cluster.port, user: 'postgres', database: 'corpus' })
    await listener.connect()
    listener.on('notification', (n) => notifications.push(`${n.channel}:${n.payload ?? ''}`))
    await listener.query('LISTEN fx_chan')
  })

  after(async () => {
    await listener?.end().catch(() => undefined)
    await direct?.end().catch(() => undefined)
    await corpus?.stop()
  })

  for (const c of [...class2, ...class5])
    test(c.name, async () => {
      await corpus.run(c)
      assert.equal(await state(), baseline, 'rows, the sequence, large objects and advisory locks are as they were')
    })

  test('no notification reached a listener, and the corpus covered each class', async () => {
    await listener.query('SELECT 1') // delivers any pending notification
    assert.deepEqual(notifications, [])
    assert.ok((corpus.counts.get('2') ?? 0) >= 70, `class 2: ${corpus.counts.get('2')}`)
    assert.ok((corpus.counts.get('5') ?? 0) >= 70, `class 5: ${corpus.counts.get('5')}`)
  })
})
