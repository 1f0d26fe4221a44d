// Class 7: other sessions' SQL. Through the connection's one server role every caller could read
// every other caller's statements (literals included) in pg_stat_activity, pg_stat_get_activity()
// and pg_stat_statements. Reading them is administration (sql.admin): refused for callers who are
// not admins, by every spelling; admins still can; harmless statistics stay readable.

import assert from 'node:assert/strict'
import type { CorpusCase } from '../helpers/pgcorpus.js'
import { serialize } from '../helpers/pgcorpus.js'

export const SESSION_TEXT_SCHEMA = 'CREATE EXTENSION pg_stat_statements;'
export const SESSION_TEXT_CONF = "shared_preload_libraries = 'pg_stat_statements'"

const PEEKS: [string, string][] = [
  ['pg_stat_activity.query', 'SELECT query FROM pg_stat_activity'],
  ['qualified', 'SELECT query FROM pg_catalog.pg_stat_activity'],
  ['TABLE', 'TABLE pg_stat_activity'],
  ['odd casing', 'SeLeCt QuErY fRoM PG_STAT_ACTIVITY'],
  ['quoted', 'SELECT "query" FROM "pg_stat_activity"'],
  ['a count is still a read of the view', 'SELECT count(*) FROM pg_stat_activity'],
  ['row to JSON', 'SELECT to_json(a) FROM pg_stat_activity a'],
  ['scalar subquery', "SELECT (SELECT string_agg(query, ',') FROM pg_stat_activity)"],
  ['CTE', 'WITH a AS (SELECT * FROM pg_stat_activity) SELECT query FROM a'],
  ['join', 'SELECT a.query FROM pg_stat_activity a JOIN pg_database d ON d.oid = a.datid'],
  ['UNION', 'SELECT 1::text UNION ALL SELECT query FROM pg_stat_activity'],
  ['COPY of a query', 'COPY (SELECT query FROM pg_stat_activity) TO STDOUT'],
  ['EXPLAIN ANALYZE', 'EXPLAIN ANALYZE SELECT query FROM pg_stat_activity'],
  ['pg_stat_get_activity', 'SELECT query FROM pg_stat_get_activity(NULL)'],
  ['pg_stat_get_activity qualified', 'SELECT * FROM pg_catalog.pg_stat_get_activity(NULL::integer)'],
  ['pg_stat_get_backend_activity', 'SELECT pg_stat_get_backend_activity(s) FROM pg_stat_get_backend_idset() s'],
  ['pg_stat_statements view', 'SELECT query FROM pg_stat_statements'],
  ['pg_stat_statements qualified', 'SELECT query FROM public.pg_stat_statements'],
  ['pg_stat_statements function', 'SELECT query FROM pg_stat_statements(true)'],
  ['pg_stat_statements_info', 'SELECT * FROM pg_stat_statements_info'],
  ['a lateral call', 'SELECT x.query FROM pg_database d, LATERAL pg_stat_get_activity(NULL) x'],
]

const refused = (who: string, name: string, sql: string): CorpusCase => ({
  name: `session text (${who}): ${name}`,
  cls: '7',
  as: who,
  steps: [{ sql, expect: 'refused' }],
})

export const SESSION_TEXT_CASES: CorpusCase[] = [
  ...PEEKS.map(([n, sql]) => refused('reader', n, sql)),
  refused('bot', 'an agent with sql.read', 'SELECT query FROM pg_stat_activity'),
  refused('writer', 'a writer', 'SELECT query FROM pg_stat_activity'),
  {
    name: 'session text (reader): through the extended protocol',
    cls: '7',
    as: 'reader',
    steps: [
      {
        wire: [
          serialize.parse({ text: 'SELECT query FROM pg_stat_activity WHERE pid <> $1' }),
          serialize.bind({ values: ['0'] }),
          serialize.execute({}),
          serialize.sync(),
        ],
        expect: 'refused',
      },
    ],
  },
  {
    name: 'session text (reader): a cursor over pg_stat_activity',
    cls: '7',
    as: 'reader',
    steps: [
      { sql: 'BEGIN', expect: 'ok' },
      { sql: 'DECLARE peek CURSOR FOR SELECT query FROM pg_stat_activity', expect: 'refused' },
      { sql: 'ROLLBACK', expect: 'ok' },
    ],
  },
  {
    name: 'session text (reader): a prepared statement over pg_stat_activity is refused at EXECUTE',
    cls: '7',
    as: 'reader',
    steps: [
      { sql: 'PREPARE peek AS SELECT query FROM pg_stat_activity', expect: 'ok' },
      { sql: 'EXECUTE peek', expect: 'refused' },
    ],
  },
  {
    name: 'session text (admin): an admin still sees other sessions',
    cls: '7',
    as: 'admin',
    steps: [{ sql: "SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'client backend'", expect: 'ok', rows: [['t']] }],
    check: (ctx) => assert.equal(ctx.audit.find((e) => e.type === 'statement')?.action, 'sql.admin'),
  },
  {
    name: 'session text (admin): pg_stat_statements',
    cls: '7',
    as: 'admin',
    steps: [{ sql: 'SELECT count(*) >= 0 FROM pg_stat_statements', expect: 'ok', rows: [['t']] }],
  },
  {
    name: 'session text (reader): database statistics stay readable',
    cls: '7',
    as: 'reader',
    steps: [{ sql: "SELECT count(*) FROM pg_stat_database WHERE datname = 'corpus'", expect: 'ok', rows: [['1']] }],
  },
  {
    name: 'session text (reader): own prepared statements stay readable',
    cls: '7',
    as: 'reader',
    steps: [{ sql: 'SELECT count(*) FROM pg_prepared_statements', expect: 'ok', rows: [['0']] }],
  },
  {
    name: 'session text (reader): own backend pid',
    cls: '7',
    as: 'reader',
    steps: [{ sql: 'SELECT pg_backend_pid() > 0', expect: 'ok', rows: [['t']] }],
  },
]
