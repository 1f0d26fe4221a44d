// Laundering corpus for masking, side channels and oracles: a chain that sees columns masked tries
// to reach a clear value through functions whose effect outlives the statement (class 1), and
// through cardinality, error and timing oracles, with strict_predicates (class 2) and without it
// (class 3). Each attempt runs on a private cluster through a real gateway (the fixture is
// test/helpers/pg-laundering.ts, the harness test/helpers/pgcorpus.ts) and asserts
//   - what the client received: no clear value of any masked column, in any of several encodings,
//     anywhere in the whole byte stream the gateway sent (startup and ParameterStatus included);
//   - what the server ran (its own statement log): a refused attempt ran nothing and no code, an
//     allowed one ran exactly what was audited, and nothing was left behind (stashed rows, large
//     objects, the sequence).
// DDL, a catalog changed under an open session, COPY encodings and hash_session are in
// pg-laundering-ddl.test.ts.

import { after, before, describe, test } from 'node:test'
import { type Attempt, grouped, perColumn, reload, run, useLaunderingCorpus } from './helpers/pg-laundering.js'
import type { Expectation } from './helpers/pgcorpus.js'

/** Class 1: a masked value into a function whose effect outlives the statement. */
function sideChannels(): Attempt[] {
  const out: Attempt[] = []
  const forms1: [string, (c: string) => string][] = [
    ['advisory lock key', (c) => `SELECT pg_advisory_lock(hashtext(${c})) FROM gh_l.users`],
    ['try advisory lock', (c) => `SELECT pg_try_advisory_lock(length(${c})) FROM gh_l.users WHERE id = 1`],
    ['transaction advisory lock', (c) => `SELECT pg_advisory_xact_lock(ascii(${c})) FROM gh_l.users`],
    ['shared advisory lock, two keys', (c) => `SELECT pg_advisory_lock_shared(1, ascii(substr(${c}, 2, 1))) FROM gh_l.users`],
    ['setval', (c) => `SELECT setval('gh_l.seq', ascii(substr(${c}, 1, 1))) FROM gh_l.users WHERE id = 1`],
    ['nextval of a sequence named by the value', (c) => `SELECT nextval(${c}) FROM gh_l.users`],
    ['lo_from_bytea', (c) => `SELECT lo_from_bytea(0, convert_to(${c}, 'UTF8')) FROM gh_l.users`],
    ['lo_create with a computed oid', (c) => `SELECT lo_create(length(${c}) + 90000) FROM gh_l.users`],
    ['pg_notify', (c) => `SELECT pg_notify('gh_chan', ${c}) FROM gh_l.users`],
    ['set_config', (c) => `SELECT set_config('gh.x', ${c}, false) FROM gh_l.users`],
    [
      'set_config of application_name (reported to the client)',
      (c) => `SELECT set_config('application_name', ${c}, false) FROM gh_l.users`,
    ],
    ['set_config, qualified and quoted', (c) => `SELECT pg_catalog."set_config"('gh.y', ${c}, true) FROM gh_l.users`],
    ['pg_logical_emit_message', (c) => `SELECT pg_logical_emit_message(false, 'gh', ${c}) FROM gh_l.users`],
    ['user-defined function that stores its argument', (c) => `SELECT gh_l.stash(${c}) FROM gh_l.users`],
    ['user-defined IMMUTABLE function', (c) => `SELECT gh_l.ident(${c}) FROM gh_l.users`],
    ['side channel in WHERE', (c) => `SELECT id FROM gh_l.users WHERE pg_try_advisory_lock(hashtext(${c}))`],
    ['side channel in ORDER BY', (c) => `SELECT id FROM gh_l.users ORDER BY pg_notify('gh_chan', ${c})`],
    ['side channel through a CTE', (c) => `WITH x AS (SELECT ${c} AS v FROM gh_l.users) SELECT pg_notify('gh_chan', v) FROM x`],
    ['side channel in a scalar subquery', (c) => `SELECT (SELECT set_config('gh.z', ${c}, false) FROM gh_l.users LIMIT 1)`],
    ['side channel through the whole row', (c) => `SELECT pg_notify('gh_chan', u::text) FROM gh_l.users u WHERE ${c} IS NOT NULL`],
  ]
  for (const [name, f] of forms1) out.push(perColumn('1', name, f, 'refused'))
  out.push(
    {
      cls: '1',
      name: 'side channel through a view column',
      sql: "SELECT pg_notify('gh_chan', contact) FROM gh_l.users_public",
      expect: 'refused',
      reason: /pg_notify/,
    },
    {
      cls: '1',
      name: 'setval through a view',
      sql: "SELECT setval('gh_l.seq', length(contact)) FROM gh_l.directory",
      expect: 'refused',
      reason: /setval/,
    },
    {
      cls: '1',
      name: 'advisory lock, masked value via a join',
      sql: 'SELECT pg_advisory_lock(o.id + length(u.email)) FROM gh_l.orders o JOIN gh_l.users u ON u.id = o.user_id',
      expect: 'refused',
      reason: /pg_advisory_lock/,
    },
    {
      cls: '1',
      name: 'side channel inside EXPLAIN ANALYZE',
      sql: "EXPLAIN ANALYZE SELECT pg_notify('gh_chan', email) FROM gh_l.users",
      expect: 'refused',
    },
    {
      cls: '1',
      name: 'pg_sleep on a masked value (timing)',
      sql: 'SELECT pg_sleep(ascii(email) / 100000.0) FROM gh_l.users',
      expect: 'refused',
      reason: /delay/,
    },
    {
      cls: '1',
      name: 'pg_sleep_for on a masked value',
      sql: 'SELECT pg_sleep_for(make_interval(secs => length(ssn) / 1000.0)) FROM gh_l.users',
      expect: 'refused',
    },
    {
      cls: '1',
      name: 'held: pure functions of unmasked columns still run',
      sql: 'SELECT length(name), md5(region), now() > placed FROM gh_l.users u JOIN gh_l.orders o ON o.user_id = u.id',
      expect: 'ok',
    },
    {
      cls: '1',
      name: 'held: advisory lock on an unmasked key still runs',
      sql: 'SELECT pg_advisory_xact_lock(id) FROM gh_l.users WHERE id = 1',
      expect: 'ok',
    },
  )
  return out
}

/** Class 2 (strict_predicates on): cardinality, error and timing oracles. */
function strictOracles(): Attempt[] {
  const out: Attempt[] = []
  const f2: [string, (c: string) => string][] = [
    ['LIMIT from a masked value', (c) => `SELECT id FROM gh_l.orders LIMIT (SELECT length(${c}) FROM gh_l.users WHERE id = 1)`],
    ['OFFSET from a masked value', (c) => `SELECT id FROM gh_l.orders OFFSET (SELECT ascii(${c}) - 40 FROM gh_l.users WHERE id = 1)`],
    ['set-returning function in the select list', (c) => `SELECT generate_series(1, length(${c})) FROM gh_l.users`],
    ['set-returning function in FROM', (c) => `SELECT count(*) FROM gh_l.users u, generate_series(1, ascii(u.${c}))`],
    ['LATERAL unnest of a split value', (c) => `SELECT count(*) FROM gh_l.users u, LATERAL unnest(string_to_array(u.${c}, '1'))`],
    ['cast that fails for some values', (c) => `SELECT ${c}::int FROM gh_l.users`],
    ['division by zero for one character', (c) => `SELECT 1 / (ascii(substr(${c}, 1, 1)) - 97) FROM gh_l.users`],
    ['substr one character at a time', (c) => `SELECT substr(${c}, 3, 1) FROM gh_l.users`],
    ['CASE that raises for a guess', (c) => `SELECT CASE WHEN ${c} LIKE 'a%' THEN 1 / 0 ELSE 1 END FROM gh_l.users`],
    ['WHERE on a masked value', (c) => `SELECT id FROM gh_l.users WHERE ${c} LIKE '4%'`],
    ['JOIN on a masked value', (c) => `SELECT a.id FROM gh_l.users a JOIN gh_l.users b ON a.${c} = b.${c}`],
    ['GROUP BY a masked value', (c) => `SELECT count(*) FROM gh_l.users GROUP BY ${c}`],
    ['ORDER BY a masked value', (c) => `SELECT id FROM gh_l.users ORDER BY ${c}`],
    ['HAVING on a masked value', (c) => `SELECT region FROM gh_l.users GROUP BY region HAVING max(${c}) > 'a'`],
    ['DISTINCT ON a masked value', (c) => `SELECT DISTINCT ON (${c}) id FROM gh_l.users`],
    ['UNION deduplicates against a guess', (c) => `SELECT ${c} FROM gh_l.users UNION SELECT 'guess'`],
    ['window partition on a masked value', (c) => `SELECT id, row_number() OVER (PARTITION BY ${c}) FROM gh_l.users`],
    ['EXPLAIN ANALYZE row counts', (c) => `EXPLAIN ANALYZE SELECT id FROM gh_l.users WHERE ${c} > 'm'`],
    ['EXPLAIN estimates from statistics', (c) => `EXPLAIN SELECT id FROM gh_l.users WHERE ${c} = 'guess'`],
    ['pg_sleep in a CASE (timing)', (c) => `SELECT CASE WHEN ${c} > 'm' THEN pg_sleep(0.01) END FROM gh_l.users`],
    ['EXISTS on a masked value', (c) => `SELECT EXISTS (SELECT 1 FROM gh_l.users WHERE ${c} = 'guess')`],
    ['max() of a masked value', (c) => `SELECT max(${c}) FROM gh_l.users`],
  ]
  for (const [name, f] of f2) out.push(perColumn('2', `strict: ${name}`, f, 'refused'))
  out.push(
    {
      cls: '2',
      name: 'strict: a view column in WHERE',
      sql: "SELECT id FROM gh_l.users_public WHERE contact LIKE 'a%'",
      expect: 'refused',
      reason: /strict_predicates/,
    },
    {
      cls: '2',
      name: 'strict: a computed view column',
      sql: 'SELECT lower(contact) FROM gh_l.directory',
      expect: 'refused',
      reason: /strict_predicates/,
    },
    { cls: '2', name: 'strict held: masked projection', sql: 'SELECT id, email, ssn, card FROM gh_l.users ORDER BY id', expect: 'ok' },
    {
      cls: '2',
      name: 'strict held: count of a masked column',
      sql: 'SELECT count(email), count(DISTINCT ssn) FROM gh_l.users',
      expect: 'ok',
    },
    {
      cls: '2',
      name: 'strict held: conditions on unmasked columns',
      sql: "SELECT id, email FROM gh_l.users WHERE region = 'north' ORDER BY name LIMIT 5",
      expect: 'ok',
    },
  )
  return out
}

/** The same oracles without strict_predicates: they run, but no clear value reaches the client. */
function openOracles(): Attempt[] {
  const out: Attempt[] = []
  const f: [string, (c: string) => string, Expectation][] = [
    ['substr is redacted', (c) => `SELECT substr(${c}, 1, 1) FROM gh_l.users`, 'ok'],
    ['failing cast: error withheld', (c) => `SELECT ${c}::int FROM gh_l.users`, 'error'],
    ['failing cast to date: error withheld', (c) => `SELECT ${c}::date FROM gh_l.users`, 'error'],
    ['failing cast to json: error withheld', (c) => `SELECT ${c}::json FROM gh_l.users`, 'any'],
    ['failing regclass lookup: error withheld', (c) => `SELECT ${c}::regclass FROM gh_l.users`, 'error'],
    ['to_number: error withheld', (c) => `SELECT to_number(${c}, '9999') FROM gh_l.users`, 'any'],
    ['failing cast through a CTE', (c) => `WITH x AS (SELECT ${c} AS v FROM gh_l.users) SELECT v::numeric FROM x`, 'any'],
    ['failing cast in COPY', (c) => `COPY (SELECT ${c}::int FROM gh_l.users) TO STDOUT`, 'error'],
    ['xmlparse: error withheld', (c) => `SELECT xmlparse(document ${c}) FROM gh_l.users`, 'error'],
    ['jsonpath: error withheld', (c) => `SELECT ${c}::jsonpath FROM gh_l.users`, 'any'],
    ['SRF row count is visible, values are not', (c) => `SELECT generate_series(1, length(${c})) FROM gh_l.users`, 'ok'],
    ['UNION output is masked', (c) => `SELECT ${c} FROM gh_l.users UNION SELECT 'guess'`, 'ok'],
  ]
  for (const [name, g, e] of f) out.push(perColumn('3', name, g, e))
  out.push(
    { cls: '3', name: 'failing cast through a view', sql: 'SELECT contact::int FROM gh_l.users_public', expect: 'error' },
    { cls: '3', name: 'a domain-typed masked column cast', sql: 'SELECT addr::int FROM gh_l.contacts', expect: 'error' },
    {
      cls: '3',
      name: 'unique index build on a masked column (DDL error)',
      sql: 'CREATE UNIQUE INDEX gh_u ON gh_l.users ((substr(ssn, 1, 1)))',
      expect: 'refused',
    },
  )
  return out
}

describe('masking: laundering corpus (private cluster, server log as ground truth)', () => {
  useLaunderingCorpus()

  for (const a of grouped([...sideChannels(), ...openOracles()])) test(`${a.cls}: ${a.name}`, () => run(a))

  describe('with strict_predicates', () => {
    before(() => reload(true))
    after(() => reload(false))
    for (const a of grouped(strictOracles())) test(`${a.cls}: ${a.name}`, () => run(a))
  })
})
