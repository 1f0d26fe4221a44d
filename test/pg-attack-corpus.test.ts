// Breaks found by an outside attacker (black box, from the docs) against the PostgreSQL proxy,
// each tried again through a real gateway in front of a private cluster whose statement log
// (log_statement = all) is the ground truth (test/helpers/pgcorpus.ts): a refused attack executed
// nothing on the server, and after every case the cluster's state is checked directly. Allowed
// work of the same families is tried too, so the fixes do not refuse ordinary use.
//
// Principals: `reader` (no groups: sql.read and sql.session), `bot` (an agent scoped to sql.read),
// `writer` (group writers, under the default guardrails, among them no-unbounded-write).

import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import pg from 'pg'
import { createSqlAnalyzer } from '../proxies/postgres/sql/index.js'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { type CaseContext, Corpus, type CorpusCase, type CorpusStep, serialize } from './helpers/pgcorpus.js'

const SCHEMA = `
CREATE TABLE pf_t (id int PRIMARY KEY, v text);
INSERT INTO pf_t SELECT g, 'v' || g FROM generate_series(1, 5) g;
CREATE TABLE pf_w (n int);
CREATE SEQUENCE pf_seq;
CREATE SEQUENCE pf_seq2;
CREATE VIEW pf_vlock AS SELECT * FROM pf_t FOR UPDATE;
CREATE VIEW pf_vshare AS SELECT id FROM pf_t FOR KEY SHARE;
CREATE VIEW pf_vnest AS SELECT * FROM pf_vlock;
CREATE VIEW pf_vact AS SELECT pid, query FROM pg_stat_activity;
CREATE VIEW pf_vact2 AS SELECT * FROM (SELECT query FROM pg_catalog.pg_stat_activity) s;
CREATE VIEW pf_vseq AS SELECT nextval('pf_seq') AS n;
CREATE VIEW pf_vok AS SELECT id, v FROM pf_t WHERE id > 0;
`

/** Rows of pf_t, the sequences, tables the attacks would create, large objects, advisory locks. */
const STATE_SQL = `SELECT (SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM pf_t) || '|' ||
  (SELECT last_value || ':' || is_called FROM pf_seq) || '|' || (SELECT last_value || ':' || is_called FROM pf_seq2) || '|' ||
  (SELECT count(*) FROM pg_class WHERE relname LIKE 'pf_made%') || '|' ||
  (SELECT count(*) FROM pg_largeobject_metadata) || '|' || (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory') AS s`

const W_ROWS = 'DELETE FROM pf_w; INSERT INTO pf_w SELECT g FROM generate_series(1, 5) g;'

const refused = (sql: string): CorpusStep => ({ sql, expect: 'refused' })
const ok = (sql: string, rows?: (string | null)[][]): CorpusStep => (rows ? { sql, expect: 'ok', rows } : { sql, expect: 'ok' })

const cases: (CorpusCase & { wRows?: number })[] = []

// ---- EXPLAIN with a repeated ANALYZE option: the server reads the last one ------------------------
for (const sql of [
  'explain (analyze off, analyze on) delete from pf_t where id = 5',
  'explain (analyze false, analyze true) insert into pf_t values (99, $$x$$)',
  "explain (analyze 'off', analyze 'on') delete from pf_t where id = 5",
  'explain (analyze 0, analyze 1) delete from pf_t where id = 5',
  'explain (ANALYZE Off, costs off, ANALYZE) delete from pf_t where id = 5',
  'explain (analyze off, analyze on) create table pf_made as select 1 as a',
  'explain (analyze false, analyze true) with d as (update pf_t set v = v || $$+$$ returning *) select * from d',
  'explain (analyze on, analyze off) delete from pf_t where id = 5',
])
  cases.push({ name: `bot: repeated ANALYZE runs nothing: ${sql}`, cls: 'B5', as: 'bot', steps: [refused(sql)] })
cases.push(
  {
    name: 'writer: repeated ANALYZE is no way around no-unbounded-write',
    cls: 'B5',
    as: 'writer',
    setup: W_ROWS,
    wRows: 5,
    steps: [refused('explain (analyze off, analyze on) delete from pf_w')],
  },
  {
    name: 'bot: plain EXPLAIN with ANALYZE off (once or repeated) still plans',
    cls: 'B5',
    as: 'bot',
    steps: [
      ok('explain (analyze off) delete from pf_t where id = 5'),
      ok('explain (analyze on, analyze off, analyze false) delete from pf_t where id = 5'.replace('analyze on, ', '')),
      ok('explain (costs off) select * from pf_t'),
    ],
  },
)

// ---- the shape cache: a literal that changes what runs is never cached --------------------------
for (const [off, on] of [
  ['0', '1'],
  ["'false'", "'true'"],
  ["'off'", "'on'"],
  ['false', 'true'],
]) {
  cases.push({
    name: `bot: a cached plain EXPLAIN (analyze ${off}) is not reused for (analyze ${on})`,
    cls: 'B7',
    as: 'bot',
    steps: [ok(`explain (analyze ${off}) delete from pf_t where id = 3`), refused(`explain (analyze ${on}) delete from pf_t where id = 3`)],
  })
}
cases.push(
  {
    name: 'writer: a cached plain EXPLAIN of an unbounded DELETE is not reused for the executing form',
    cls: 'B7',
    as: 'writer',
    setup: W_ROWS,
    wRows: 5,
    steps: [ok('explain (analyze 0) delete from pf_w as x'), refused('explain (analyze 1) delete from pf_w as x')],
  },
  {
    name: 'reader: a cached ordinary set_config is not reused for a logging one',
    cls: 'B7',
    as: 'reader',
    steps: [
      ok("select set_config('search_path', 'public', false)", [['public']]),
      refused("select set_config('log_statement', 'none', false)"),
      ok('show log_statement', [['all']]),
    ],
  },
)

// ---- SET of settings: an allow-list of ordinary session settings ---------------------------------
for (const sql of [
  "SET log_statement = 'none'",
  'SET track_activities = off',
  'set local log_min_error_statement = panic',
  'SET log_duration = on',
  'SET log_parameter_max_length_on_error = 0',
  "SET dynamic_library_path = '/tmp'",
  'SET debug_discard_caches = 0',
  'SET ignore_checksum_failure = on',
  'SET "log_statement" TO DEFAULT',
  'RESET log_statement',
  'SET gh.tenant = 7',
  "SELECT set_config('log_statement', 'none', false)",
  "SELECT set_config('track_activities', 'off', true)",
  "SELECT set_config('app.tenant', '7', false)",
])
  cases.push({
    name: `bot: a setting outside the session allow-list is sql.admin: ${sql}`,
    cls: 'B10',
    as: 'bot',
    steps: [refused(sql)],
    check: (ctx) => assert.equal(ctx.audit.find((e) => e.type === 'statement')?.action, 'sql.admin'),
  })
cases.push(
  {
    name: 'reader: the refused SET left the server logging',
    cls: 'B10',
    as: 'reader',
    steps: [
      refused("SET log_statement = 'none'"),
      ok("select 'pf-still-logged'", [['pf-still-logged']]),
      ok('show log_statement', [['all']]),
    ],
    check: (ctx) =>
      assert.ok(
        ctx.executed.some((e) => e.sql.includes('pf-still-logged')),
        'the server logged the next statement',
      ),
  },
  {
    name: 'bot: ordinary session settings stay sql.session',
    cls: 'B10',
    as: 'bot',
    steps: [
      ok("SET statement_timeout = '5s'"),
      ok('SET search_path = public'),
      ok("SET TIME ZONE 'UTC'"),
      ok('SET datestyle = iso, mdy'),
      ok('set local lock_timeout = 1000'),
      ok('SET work_mem = 8192'),
      ok('SET extra_float_digits = 3'),
      ok('SET client_min_messages = warning'),
      ok("SELECT set_config('statement_timeout', '10s', false)", [['10s']]),
      ok('RESET statement_timeout'),
      ok('RESET ALL'),
    ],
  },
)

// ---- MERGE … ON <no target column> with UPDATE/DELETE is unbounded -------------------------------
for (const sql of [
  'merge into pf_w using (select 1) s on true when matched then delete',
  'merge into pf_w w using (select 1 as n) s on s.n = 1 when matched then delete',
  'merge into pf_w using (select 1) s on 1 = 1 when matched then update set n = 0',
  'merge into pf_w w using (select 1 as n) s on true when matched and true then delete',
  'explain analyze merge into pf_w using (select 1) s on true when matched then delete',
  'with m as (select 1) merge into pf_w using m on true when matched then delete',
])
  cases.push({
    name: `writer: MERGE bounded by nothing on the target is refused: ${sql}`,
    cls: 'MERGE',
    as: 'writer',
    setup: W_ROWS,
    wRows: 5,
    steps: [refused(sql)],
    check: (ctx) => {
      const e = ctx.audit.find((x) => x.type === 'statement' && x.decision === 'deny')
      assert.match(JSON.stringify(e), /no-unbounded-write/)
    },
  })
cases.push(
  {
    name: 'writer: MERGE joined on a target column still runs',
    cls: 'MERGE',
    as: 'writer',
    setup: W_ROWS,
    wRows: 4,
    steps: [ok('merge into pf_w w using (select 1 as n) s on w.n = s.n when matched then delete')],
  },
  {
    name: 'writer: MERGE whose action condition names the target, and an insert-only MERGE, run',
    cls: 'MERGE',
    as: 'writer',
    setup: W_ROWS,
    wRows: 5,
    steps: [
      ok('merge into pf_w w using (select 2 as n) s on true when matched and w.n = 2 then update set n = 2'),
      ok('merge into pf_w using (select 9 as n) s on false when not matched then insert values (s.n)'),
      ok('delete from pf_w where n = 9'),
    ],
  },
)

// ---- views run their definitions: row locks and other sessions' SQL count ------------------------
for (const [as, sql, action] of [
  ['bot', 'select * from pf_vlock', 'sql.write'],
  ['reader', 'select id from pf_vshare', 'sql.write'],
  ['bot', 'select * from pf_vnest where id = 1', 'sql.write'],
  ['reader', 'select * from (select * from pf_vnest) s', 'sql.write'],
  ['reader', "select * from pf_vact where query like '%OTHER%'", 'sql.admin'],
  ['bot', 'select query from public.pf_vact2', 'sql.admin'],
  ['bot', 'select * from pf_vseq', 'sql.write'],
] as const)
  cases.push({
    name: `${as}: reading a view runs its definition: ${sql}`,
    cls: 'B1',
    as,
    steps: [refused(sql)],
    check: (ctx) => assert.equal(ctx.audit.find((e) => e.type === 'statement')?.action, action),
  })
cases.push({
  name: 'reader: a plain view stays a read',
  cls: 'B1',
  as: 'reader',
  steps: [ok('select count(*) from pf_vok', [['5']]), ok('select v from pf_vok where id = 2', [['v2']])],
})

// ---- secrets in literals, escapes, bound values and the server's error text ----------------------
const noLeak = (ctx: CaseContext): void => {
  const text = JSON.stringify(ctx.audit)
  assert.doesNotMatch(text, /PWLEAK/, 'no secret in the statement or result audit events')
  assert.ok(
    ctx.audit.some((e) => e.type === 'statement'),
    'the statement is audited',
  )
}
for (const [sql, expect] of [
  ["select 'postgres://u:PWLEAK-0017@host/db'", 'ok'],
  ['select $$postgresql://user:PWLEAK-0056@h$$', 'ok'],
  ["select 'mysql://root:PWLEAK-0057@db'", 'ok'],
  ["select E'pass\\x77ord=PWLEAK-0052'", 'ok'],
  ["select E'\\x70assword=PWLEAK-0053'", 'ok'],
  ["select U&'\\0070assword=PWLEAK-0054'", 'ok'],
  ["select U&'!0070assword=PWLEAK-0055' UESCAPE '!'", 'ok'],
  ["select 'postgres://u:PWLEAK-0058@h/db'::int", 'error'],
  ["select 'password=PWLEAK-0044'::int", 'error'],
  ["select 'host=h password=PWLEAK-0049'::int", 'error'],
  ["select set_config('gh.password', 'PWLEAK-0073', false)::int", 'refused'],
  ["select E'pass\\x77ord=PWLEAK-0059'::int", 'error'],
] as const)
  cases.push({ name: `reader: no secret reaches the audit: ${sql}`, cls: 'B3/B4', as: 'reader', steps: [{ sql, expect }], check: noLeak })
cases.push(
  {
    name: 'reader: a bound value holding a credential is redacted, and so is the error that quotes it',
    cls: 'B3/B4',
    as: 'reader',
    steps: [
      {
        wire: [
          serialize.parse({ text: 'select $1::text' }),
          serialize.bind({ values: ['host=x password=PWLEAK-0091'] }),
          serialize.execute({}),
          serialize.sync(),
        ],
        expect: 'ok',
      },
      {
        wire: [
          serialize.parse({ text: 'select $1::int' }),
          serialize.bind({ values: ['postgres://u:PWLEAK-0092@h'] }),
          serialize.execute({}),
          serialize.sync(),
        ],
        expect: 'error',
      },
    ],
    check: noLeak,
  },
  {
    name: 'reader: ordinary literals with @ and backslashes stay in the audit',
    cls: 'B3/B4',
    as: 'reader',
    steps: [ok("select 'ann@corp.example', E'a\\tb'"), ok("select 'https://example.org/x'")],
    check: (ctx) => {
      const text = JSON.stringify(ctx.audit)
      assert.match(text, /ann@corp\.example/)
      assert.match(text, /https:\/\/example\.org\/x/)
    },
  },
)

/** Every file under a directory, recursively. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n)
    return statSync(p).isDirectory() ? filesUnder(p) : [p]
  })
}

describe('attacks on the PostgreSQL proxy (server log as ground truth)', () => {
  let corpus: Corpus
  let direct: pg.Client
  let baseline = ''
  const state = async (): Promise<string> => (await direct.query<{ s: string }>(STATE_SQL)).rows[0]?.s ?? ''

  before(async () => {
    corpus = await Corpus.start({ principals: { reader: [], writer: ['writers'] }, scopes: { bot: 'sql.read' }, schema: SCHEMA })
    direct = new pg.Client({ host: '127.0.0.1', port: corpus.cluster.port, user: 'postgres', database: 'corpus' })
    await direct.connect()
    baseline = await state()
  })

  test('B3/B4: no secret anywhere in the gateway data directory (audit, recordings)', () => {
    for (const f of filesUnder(corpus.gw.dataDir)) assert.doesNotMatch(readFileSync(f, 'latin1'), /PWLEAK/, f)
  })

  after(async () => {
    await direct?.end().catch(() => undefined)
    await corpus?.stop()
  })

  for (const c of cases)
    test(`${c.cls}: ${c.name}`, async () => {
      await corpus.run(c)
      assert.equal(await state(), baseline, 'rows, sequences, created tables, large objects and advisory locks are as they were')
      if (c.wRows !== undefined) {
        const n = (await direct.query<{ n: string }>('SELECT count(*)::text AS n FROM pf_w')).rows[0]?.n
        assert.equal(n, String(c.wRows), 'rows of pf_w')
      }
    })
})

describe('the shape cache never reuses a read for a write', () => {
  // Each pair differs only in literal values (one shape): the first is analyzed and cached (if it
  // may be), then the second must get its own facts.
  const pairs: [string, string, (f: { action: string; writeTables: readonly { name: string }[] }) => void][] = [
    [
      'explain (analyze 0) delete from t where id = 1',
      'explain (analyze 1) delete from t where id = 1',
      (f) => assert.equal(f.action, 'sql.write'),
    ],
    ["explain (analyze 'off') delete from t", "explain (analyze 'on') delete from t", (f) => assert.equal(f.action, 'sql.write')],
    [
      "explain (analyze 'false', costs 'on') delete from t",
      "explain (analyze 'true', costs 'on') delete from t",
      (f) => assert.equal(f.action, 'sql.write'),
    ],
    [
      "select set_config('search_path', 'a', false)",
      "select set_config('log_statement', 'none', false)",
      (f) => assert.equal(f.action, 'sql.admin'),
    ],
    [
      "select nextval('s1'::regclass)",
      "select nextval('s2'::regclass)",
      (f) =>
        assert.deepEqual(
          f.writeTables.map((r) => r.name),
          ['s2'],
        ),
    ],
    [
      "select nextval('s1')",
      "select nextval('s2')",
      (f) =>
        assert.deepEqual(
          f.writeTables.map((r) => r.name),
          ['s2'],
        ),
    ],
    ["copy t to stdout (format 'text')", "copy t to stdout (format 'binary')", () => undefined],
    ['prepare p as explain (analyze 0) delete from t', 'prepare p as explain (analyze 1) delete from t', () => undefined],
  ]
  for (const [first, second, check] of pairs)
    test(`${first} → ${second}`, async () => {
      const analyzer = await createSqlAnalyzer()
      analyzer.analyze(first)
      const a = analyzer.analyze(second)
      assert.equal(a.shape, undefined, 'the second text is not answered from the cache')
      const f = a.statements[0]
      assert.ok(f)
      check(f)
    })
})
