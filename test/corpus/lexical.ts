// Class 3: lexical settings. Every way to make the server read SQL differently from the gateway's
// parser is refused (even for an administrator), the pins hold against role and database
// settings, and a change the gateway could not see (a function's set_config, a trigger) ends the
// session before any text whose reading depends on it is sent.

import assert from 'node:assert/strict'
import type { CorpusCase, CorpusStep } from '../helpers/pgcorpus.js'
import { serialize } from '../helpers/pgcorpus.js'

export const LEXICAL_SCHEMA = `
CREATE TABLE lex_t (id int PRIMARY KEY, v text);
INSERT INTO lex_t VALUES (1, 'one'), (2, 'two');
CREATE FUNCTION lex_noop() RETURNS int LANGUAGE sql AS 'SELECT 1';
CREATE FUNCTION lex_flip() RETURNS int LANGUAGE plpgsql AS $$BEGIN PERFORM set_config('standard_conforming_strings', 'off', false); RETURN 1; END$$;
CREATE FUNCTION lex_sjis() RETURNS int LANGUAGE plpgsql AS $$BEGIN PERFORM set_config('client_encoding', 'SJIS', false); RETURN 1; END$$;
CREATE TABLE lex_trig (id int);
CREATE FUNCTION lex_trig_fn() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN PERFORM set_config('standard_conforming_strings', 'off', false); RETURN NEW; END$$;
CREATE TRIGGER lex_trig_flip BEFORE INSERT ON lex_trig FOR EACH ROW EXECUTE FUNCTION lex_trig_fn();
`

const rows = (ctx: { cluster: { sql(s: string, db?: string): string } }): string =>
  ctx.cluster.sql("SELECT string_agg(id || '=' || v, ',' ORDER BY id) FROM lex_t", 'corpus')
const untouched = (ctx: { cluster: { sql(s: string, db?: string): string } }): void => assert.equal(rows(ctx), '1=one,2=two')

const refusedAsAdmin = (name: string, sql: string): CorpusCase => ({
  name: `lexical: ${name}`,
  cls: '3',
  as: 'admin',
  steps: [{ sql, expect: 'refused' }],
  check: (ctx) => {
    const st = ctx.audit.find((e) => e.type === 'statement')
    assert.deepEqual(st?.rules, ['gatehouse:lexical-setting'], `${name}: refused by the lexical rule`)
    assert.equal(ctx.cluster.sql('SHOW standard_conforming_strings'), 'on')
  },
})

const SETS: [string, string][] = [
  ['SET scs off', 'SET standard_conforming_strings = off'],
  ['SET scs TO off', 'SET standard_conforming_strings TO off'],
  ['SET SESSION scs', 'SET SESSION standard_conforming_strings = off'],
  ['SET LOCAL scs', 'SET LOCAL standard_conforming_strings = off'],
  ['set scs 0, odd casing', 'sEt Standard_Conforming_Strings=0'],
  ['SET quoted scs', 'SET "standard_conforming_strings" = off'],
  ['SET scs with a comment', 'SET /* x */ standard_conforming_strings -- y\n = off'],
  ['SET scs to its own value', 'SET standard_conforming_strings = on'],
  ['SET scs TO DEFAULT', 'SET standard_conforming_strings TO DEFAULT'],
  ['RESET scs', 'RESET standard_conforming_strings'],
  ['SET client_encoding SJIS', "SET client_encoding = 'SJIS'"],
  ['SET client_encoding TO BIG5', "SET client_encoding TO 'BIG5'"],
  ['SET NAMES', "SET NAMES 'GBK'"],
  ['SET LOCAL client_encoding', "SET LOCAL client_encoding = 'SJIS'"],
  ['RESET client_encoding', 'RESET client_encoding'],
  ['SET backslash_quote on', 'SET backslash_quote = on'],
  ['SET escape_string_warning off', 'SET escape_string_warning = off'],
  ['set_config scs', "SELECT set_config('standard_conforming_strings', 'off', false)"],
  ['set_config scs upper case, local', "SELECT set_config('STANDARD_CONFORMING_STRINGS', 'off', true)"],
  ['set_config qualified', "SELECT pg_catalog.set_config('standard_conforming_strings', 'off', false)"],
  ['set_config client_encoding', "SELECT set_config('client_encoding', 'SJIS', false)"],
  ['set_config computed name', "SELECT set_config(lower('STANDARD_conforming_strings'), 'off', false)"],
  ['set_config name from a row', "SELECT set_config(n, 'off', false) FROM (VALUES ('standard_conforming_strings')) v(n)"],
  ['set_config name from a parameter-like concat', "SELECT set_config('standard_' || 'conforming_strings', 'off', false)"],
  ['set_config in FROM', "SELECT * FROM set_config('backslash_quote', 'on', false)"],
  ['ALTER ROLE SET', 'ALTER ROLE postgres SET standard_conforming_strings = off'],
  ['ALTER ROLE ALL SET', "ALTER ROLE ALL SET client_encoding = 'SJIS'"],
  ['ALTER ROLE IN DATABASE SET', 'ALTER ROLE postgres IN DATABASE corpus SET backslash_quote = on'],
  ['ALTER DATABASE SET', 'ALTER DATABASE corpus SET standard_conforming_strings = off'],
  ['ALTER SYSTEM SET', 'ALTER SYSTEM SET standard_conforming_strings = off'],
  ['CREATE FUNCTION … SET', "CREATE FUNCTION lex_f() RETURNS int LANGUAGE sql SET standard_conforming_strings = off AS 'SELECT 1'"],
  ['CREATE PROCEDURE … SET', "CREATE PROCEDURE lex_p() LANGUAGE sql SET client_encoding = 'SJIS' AS 'SELECT 1'"],
  ['ALTER FUNCTION … SET', 'ALTER FUNCTION lex_noop() SET standard_conforming_strings = off'],
  ['COPY TO with ENCODING LATIN1', "COPY lex_t TO STDOUT (ENCODING 'LATIN1')"],
  ['COPY FROM with ENCODING SJIS', "COPY lex_t FROM STDIN WITH (FORMAT csv, ENCODING 'SJIS')"],
  ['COPY old-style ENCODING', "COPY lex_t TO STDOUT WITH ENCODING 'latin1'"],
  ['a SET after a harmless statement', 'SELECT 1; SET standard_conforming_strings = off'],
  ['PREPARE of a set_config', "PREPARE lex_prep AS SELECT set_config('standard_conforming_strings', 'off', false)"],
  ['EXPLAIN ANALYZE of a set_config', "EXPLAIN ANALYZE SELECT set_config('standard_conforming_strings', 'off', false)"],
  ['a CTE calling set_config', "WITH x AS (SELECT set_config('client_encoding', 'SJIS', false)) SELECT * FROM x"],
]

/** Two messages in one write: the second must not reach the server before the first's answer. */
const pipelined = (first: string, second: string): CorpusStep => ({
  wire: [serialize.query(first), serialize.query(second)],
  readies: 2,
  expect: 'fatal',
})

export const LEXICAL_CASES: CorpusCase[] = [
  ...SETS.map(([n, sql]) => refusedAsAdmin(n, sql)),
  {
    name: 'lexical: a Parse of SET standard_conforming_strings is refused at Execute',
    cls: '3',
    as: 'admin',
    steps: [
      {
        wire: [
          serialize.parse({ text: 'SET standard_conforming_strings = off' }),
          serialize.bind({}),
          serialize.execute({}),
          serialize.sync(),
        ],
        expect: 'refused',
      },
    ],
  },
  {
    name: 'lexical: SET LOCAL inside a transaction is refused, the transaction goes on',
    cls: '3',
    as: 'admin',
    steps: [
      { sql: 'BEGIN', expect: 'ok' },
      { sql: 'SET LOCAL standard_conforming_strings = off', expect: 'refused' },
      { sql: 'ROLLBACK', expect: 'ok' },
      { sql: 'SHOW standard_conforming_strings', expect: 'ok', rows: [['on']] },
    ],
  },
  {
    name: 'lexical: the pins hold against role and database settings',
    cls: '3',
    as: 'reader',
    setup: "ALTER ROLE postgres SET standard_conforming_strings = off; ALTER DATABASE corpus SET client_encoding = 'SJIS'",
    steps: [
      { sql: 'SHOW standard_conforming_strings', expect: 'ok', rows: [['on']] },
      { sql: 'SHOW client_encoding', expect: 'ok', rows: [['UTF8']] },
      { sql: "SELECT 'a\\b'", expect: 'ok', rows: [['a\\b']] },
    ],
    check: (ctx) =>
      ctx.cluster.sql('ALTER ROLE postgres RESET standard_conforming_strings; ALTER DATABASE corpus RESET client_encoding', 'corpus'),
  },
  {
    name: 'lexical: a client asking for SJIS at startup gets UTF8 from the server',
    cls: '3',
    as: 'reader',
    params: { client_encoding: 'SJIS' },
    steps: [{ sql: 'SHOW client_encoding', expect: 'ok', rows: [['UTF8']] }],
  },
  {
    name: 'lexical: a function that turns standard_conforming_strings off ends the session',
    cls: '3',
    as: 'admin',
    steps: [
      { sql: 'SELECT lex_flip()', expect: 'fatal' },
      { sql: "SELECT 'still here'", expect: 'fatal' },
    ],
  },
  {
    name: 'lexical: a function that switches client_encoding ends the session',
    cls: '3',
    as: 'admin',
    steps: [{ sql: 'SELECT lex_sjis()', expect: 'fatal' }],
  },
  {
    name: 'lexical: a trigger that turns standard_conforming_strings off ends the session',
    cls: '3',
    as: 'admin',
    steps: [{ sql: 'INSERT INTO lex_trig VALUES (1)', expect: 'fatal' }],
  },
  {
    name: 'lexical: a pipelined backslash text never reaches a server that reads it differently',
    cls: '3',
    as: 'admin',
    // Read with standard_conforming_strings off, the literal ends at \' and the DELETE runs.
    steps: [pipelined('SELECT lex_flip()', "SELECT 'x\\'; DELETE FROM lex_t; -- '")],
    check: (ctx) => {
      untouched(ctx)
      assert.deepEqual(
        ctx.executed.map((e) => e.sql),
        ['SELECT lex_flip()'],
      )
    },
  },
  {
    name: 'lexical: a pipelined non-ASCII text waits for the answer too',
    cls: '3',
    as: 'admin',
    steps: [pipelined('SELECT lex_sjis()', "SELECT 'é'; DELETE FROM lex_t")],
    check: (ctx) => {
      untouched(ctx)
      assert.deepEqual(
        ctx.executed.map((e) => e.sql),
        ['SELECT lex_sjis()'],
      )
    },
  },
  {
    name: 'lexical: a Parse after a possibly-changing Execute in the same batch is refused',
    cls: '3',
    as: 'admin',
    steps: [
      {
        wire: [
          serialize.parse({ text: 'SELECT lex_flip()' }),
          serialize.bind({}),
          serialize.execute({}),
          serialize.parse({ name: 'lex_s', text: "SELECT 'x\\'; DELETE FROM lex_t; -- '" }),
          serialize.bind({ statement: 'lex_s' }),
          serialize.execute({}),
          serialize.sync(),
        ],
        // Refused in place: the stand-in's error aborts the implicit transaction, which takes the
        // function's set_config back with it, so the session goes on reading SQL as before.
        expect: 'refused',
      },
      { sql: 'SHOW standard_conforming_strings', expect: 'ok', rows: [['on']] },
    ],
    check: (ctx) => {
      untouched(ctx)
      const texts = ctx.executed.map((e) => e.sql)
      assert.deepEqual(texts, ['SELECT lex_flip()', 'SHOW standard_conforming_strings'])
      assert.ok(ctx.audit.some((e) => e.type === 'statement' && (e.rules as string[]).includes('gatehouse:lexical-unsettled')))
    },
  },
  {
    name: 'lexical: after a statement that might change settings, the next backslash text waits and runs',
    cls: '3',
    as: 'admin',
    steps: [{ wire: [serialize.query('SELECT lex_noop()'), serialize.query("SELECT 'a\\b'")], readies: 2, expect: 'ok' }],
    check: (ctx) => assert.ok(ctx.outcomes[0]?.rows.some((r) => r[0] === 'a\\b')),
  },
  {
    name: 'lexical: SHOW standard_conforming_strings',
    cls: '3',
    as: 'reader',
    steps: [{ sql: 'SHOW standard_conforming_strings', expect: 'ok', rows: [['on']] }],
  },
  {
    name: 'lexical: a backslash is a plain character',
    cls: '3',
    as: 'reader',
    steps: [{ sql: "SELECT 'a\\'", expect: 'ok', rows: [['a\\']] }],
  },
  {
    name: 'lexical: E-strings still escape',
    cls: '3',
    as: 'reader',
    steps: [{ sql: "SELECT E'a\\\\b', E'\\''", expect: 'ok', rows: [['a\\b', "'"]] }],
  },
  { name: 'lexical: non-ASCII text', cls: '3', as: 'reader', steps: [{ sql: "SELECT 'héllo ✓'", expect: 'ok', rows: [['héllo ✓']] }] },
  {
    name: 'lexical: ordinary settings still work',
    cls: '3',
    as: 'reader',
    steps: [{ sql: "SET datestyle = 'ISO, DMY'; SET search_path = public", expect: 'ok' }],
  },
  {
    name: 'lexical: COPY with ENCODING UTF8 is fine',
    cls: '3',
    as: 'reader',
    steps: [{ sql: "COPY lex_t TO STDOUT (ENCODING 'UTF8')", expect: 'ok' }],
  },
  {
    name: 'lexical: current_setting is a read',
    cls: '3',
    as: 'reader',
    steps: [{ sql: "SELECT current_setting('client_encoding')", expect: 'ok', rows: [['UTF8']] }],
  },
  {
    name: 'lexical: RESET ALL keeps the pins',
    cls: '3',
    as: 'reader',
    steps: [
      { sql: 'RESET ALL', expect: 'ok' },
      { sql: 'SHOW standard_conforming_strings', expect: 'ok', rows: [['on']] },
    ],
  },
]
