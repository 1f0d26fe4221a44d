// Laundering corpus for masking: a chain that sees columns masked tries every route it has to a
// clear value other than an output column (side channels through functions, cardinality, error and
// timing oracles, server errors and notices, DDL, a catalog that changed under an open session,
// COPY encodings, deterministic hashes), plus the forms that already held. Each attempt runs on a
// private cluster through a real gateway (test/helpers/pgcorpus.ts) and asserts
//   - what the client received: no clear value of any masked column, in any of several encodings,
//     anywhere in the whole byte stream the gateway sent (startup and ParameterStatus included);
//   - what the server ran (its own statement log): a refused attempt ran nothing and no code, an
//     allowed one ran exactly what was audited, and nothing was left behind (stashed rows, large
//     objects, the sequence).
// Allowed work is tested too: a cleared chain and a masked one get the same rows for ordinary
// analytics queries, masked for the latter.

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import yaml from 'js-yaml'
import { REPO } from './helpers/gateway.js'
import { type CaseContext, Corpus, type CorpusCase, type Expectation } from './helpers/pgcorpus.js'

const SECRETS = [
  'ann.q7x@example.com',
  'bob.z9k@example.org',
  'cy.w4m@example.net',
  '123-45-6789',
  '987-65-4321',
  '555-12-3456',
  '4111111111111111',
  '5500005555555559',
  '340000000000009',
  'tok-9f8e7d6c',
]

const SCHEMA = `
CREATE SCHEMA gh_l;
CREATE TABLE gh_l.users (id int PRIMARY KEY, name text, email text, ssn text, card text, region text);
INSERT INTO gh_l.users VALUES
  (1, 'Ann', 'ann.q7x@example.com', '123-45-6789', '4111111111111111', 'north'),
  (2, 'Bob', 'bob.z9k@example.org', '987-65-4321', '5500005555555559', 'south'),
  (3, 'Cy', 'cy.w4m@example.net', '555-12-3456', '340000000000009', 'north');
CREATE TABLE gh_l.orders (id int PRIMARY KEY, user_id int, total numeric, placed date);
INSERT INTO gh_l.orders VALUES (1, 1, 10.50, '2026-01-02'), (2, 1, 4.00, '2026-02-03'), (3, 2, 99.99, '2026-02-03'), (4, 3, 1.25, '2026-03-04');
CREATE TABLE gh_l.notes (id serial PRIMARY KEY, body text);
CREATE TABLE gh_l.tokens (id int, token text);
INSERT INTO gh_l.tokens VALUES (1, 'tok-9f8e7d6c'), (2, 'tok-9f8e7d6c'), (3, 'tok-other-1');
CREATE SEQUENCE gh_l.seq;
CREATE VIEW gh_l.users_public AS SELECT id, name, email AS contact FROM gh_l.users;
CREATE VIEW gh_l.people AS SELECT id, name FROM gh_l.users;
CREATE VIEW gh_l.directory AS SELECT id, email AS contact FROM gh_l.users;
CREATE INDEX users_email_idx ON gh_l.users (email);
CREATE DOMAIN gh_l.mail AS text;
CREATE TABLE gh_l.contacts (id int, addr gh_l.mail);
INSERT INTO gh_l.contacts VALUES (1, 'ann.q7x@example.com');
CREATE FUNCTION gh_l.stash(v text) RETURNS text LANGUAGE sql AS $$ INSERT INTO gh_l.notes (body) VALUES (v) RETURNING body $$;
CREATE FUNCTION gh_l.leaky() RETURNS text LANGUAGE sql AS $$ SELECT email FROM gh_l.users ORDER BY id LIMIT 1 $$;
CREATE FUNCTION gh_l.ident(v text) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT v $$;
`

const MASKING = {
  rules: [
    { name: 'emails', columns: ['gh_l.users.email', 'gh_l.contacts.addr'], strategy: 'partial', keep: 4, clear_for: ['pii-readers'] },
    { name: 'ssn', columns: ['gh_l.users.ssn'], strategy: 'hash', clear_for: ['pii-readers'] },
    { name: 'cards', columns: ['*.card'], strategy: 'redact', clear_for: ['pii-readers'] },
    { name: 'tokens', columns: ['gh_l.tokens.token'], strategy: 'hash_session', clear_for: ['pii-readers'] },
  ],
}

/** Every form a clear value could take on the way out. */
function forms(secret: string): string[] {
  const b = Buffer.from(secret, 'utf8')
  return [secret, secret.toUpperCase(), [...secret].reverse().join(''), b.toString('base64'), b.toString('hex')]
}

function leaks(bytes: Buffer): string[] {
  const text = bytes.toString('latin1')
  return SECRETS.flatMap(forms).filter((f) => text.includes(f))
}

/** Nothing left behind on the server: stashed values, large objects, a moved sequence. */
const LEFT_BEHIND = `SELECT (SELECT count(*) FROM gh_l.notes WHERE body ~ 'example|[0-9]{3}-[0-9]{2}-[0-9]{4}|4111|5500|3400|tok-')
  + (SELECT count(*) FROM pg_largeobject_metadata) + (SELECT CASE WHEN is_called THEN 1 ELSE 0 END FROM gh_l.seq)`

/** Undoes what the held (allowed) cases changed, so that later attempts see the same schema. */
const CLEANUP =
  "DROP INDEX IF EXISTS gh_l.gh_ok; ALTER TABLE gh_l.orders DROP CONSTRAINT IF EXISTS gh_ok; DROP FUNCTION IF EXISTS public.gh_fresh(text); DROP FUNCTION IF EXISTS public.initcap(text); DROP FUNCTION IF EXISTS public.gh_x(text); DROP FUNCTION IF EXISTS public.btrim(text); TRUNCATE gh_l.notes; SELECT setval('gh_l.seq', 1, false)"

interface Attempt {
  readonly cls: string
  readonly name: string
  /** One statement; or `prep` steps that must succeed, then the attempt. */
  readonly sql: string
  readonly prep?: readonly string[]
  /** More forms of the same attempt (other columns), run as further steps of the same session. */
  readonly variants?: readonly string[]
  /** What the last step must do (earlier steps must succeed). */
  readonly expect: Expectation
  /** A pattern the refusal's message must match (the reason, not just any denial). */
  readonly reason?: RegExp
  readonly as?: string
}

const COLS = ['email', 'ssn', 'card'] as const

/** One attempt per masked column (partial, hash, redact), as the steps of one session. */
function perColumn(cls: string, name: string, f: (c: string) => string, expect: Expectation): Attempt {
  const [first, ...rest] = COLS.map(f)
  return { cls, name, sql: first as string, variants: rest, expect }
}

/**
 * Attempts of one class with the same expectation and no preparation share a session, three at a
 * time (a session through the gateway is the expensive part of a case); each is still its own step,
 * judged on its own, and the server log must show that a refused group ran nothing.
 */
function grouped(list: readonly Attempt[]): Attempt[] {
  const out: Attempt[] = []
  for (const a of list) {
    const last = out[out.length - 1]
    const joinable = (x: Attempt): boolean => x.prep === undefined && x.reason === undefined && x.as === undefined
    if (last && joinable(last) && joinable(a) && last.cls === a.cls && last.expect === a.expect && size(last) < 9) {
      out[out.length - 1] = { ...last, name: `${last.name}; ${a.name}`, variants: [...(last.variants ?? []), a.sql, ...(a.variants ?? [])] }
    } else out.push(a)
  }
  return out
}

/** How many attempts (steps judged) an Attempt holds. */
function size(a: Attempt): number {
  return 1 + (a.variants?.length ?? 0)
}

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

/** Class 4: DDL by a chain that may run DDL but sees the columns masked. */
function ddl(): Attempt[] {
  const out: Attempt[] = []
  const f: [string, (c: string) => string][] = [
    ['index expression with a failing cast', (c) => `CREATE INDEX gh_i ON gh_l.users ((${c}::int))`],
    ['plain index on a masked column', (c) => `CREATE INDEX gh_i ON gh_l.users (${c})`],
    ['unique index on a masked column', (c) => `CREATE UNIQUE INDEX gh_i ON gh_l.users (${c})`],
    ['partial index over a masked predicate', (c) => `CREATE INDEX gh_i ON gh_l.users (id) WHERE ${c} LIKE 'a%'`],
    ['extended statistics (MCV lists hold values)', (c) => `CREATE STATISTICS gh_s (mcv) ON ${c}, region FROM gh_l.users`],
    ['CHECK constraint with a failing cast', (c) => `ALTER TABLE gh_l.users ADD CONSTRAINT gh_c CHECK (${c}::int > 0)`],
    ['CHECK constraint NOT VALID', (c) => `ALTER TABLE gh_l.users ADD CONSTRAINT gh_c CHECK (length(${c}) < 5) NOT VALID`],
    ['UNIQUE constraint', (c) => `ALTER TABLE gh_l.users ADD CONSTRAINT gh_c UNIQUE (${c})`],
    ['foreign key into a masked column', (c) => `CREATE TABLE gh_l.guesses (g text REFERENCES gh_l.users (${c}))`],
    ['ALTER COLUMN TYPE with a failing conversion', (c) => `ALTER TABLE gh_l.users ALTER COLUMN ${c} TYPE int USING ${c}::int`],
    ['ALTER COLUMN TYPE to a narrower type', (c) => `ALTER TABLE gh_l.users ALTER COLUMN ${c} TYPE varchar(3)`],
    [
      'generated column copying a masked value',
      (c) => `ALTER TABLE gh_l.users ADD COLUMN gh_g text GENERATED ALWAYS AS (lower(${c})) STORED`,
    ],
    ['view over a masked column', (c) => `CREATE VIEW gh_l.leak_v AS SELECT id, ${c} AS x FROM gh_l.users`],
    ['materialized view over a masked column', (c) => `CREATE MATERIALIZED VIEW gh_l.leak_m AS SELECT ${c} FROM gh_l.users`],
    ['CREATE TABLE AS', (c) => `CREATE TABLE gh_l.leak_t AS SELECT ${c} FROM gh_l.users`],
    ['rename a masked column', (c) => `ALTER TABLE gh_l.users RENAME COLUMN ${c} TO gh_plain`],
  ]
  for (const [name, g] of f) out.push(perColumn('4', name, g, 'refused'))
  out.push(
    {
      cls: '4',
      name: 'column default calling a function that reads masked data',
      sql: 'ALTER TABLE gh_l.notes ALTER COLUMN body SET DEFAULT gh_l.leaky()',
      expect: 'refused',
      reason: /opaque/,
    },
    {
      cls: '4',
      name: 'new table with a default calling such a function',
      sql: 'CREATE TABLE gh_l.leak_d (x text DEFAULT gh_l.leaky())',
      expect: 'refused',
    },
    {
      cls: '4',
      name: 'domain constraint added to a domain of a masked column',
      sql: "ALTER DOMAIN gh_l.mail ADD CONSTRAINT gh_dc CHECK (VALUE LIKE 'a%')",
      expect: 'refused',
    },
    {
      cls: '4',
      name: 'domain whose check runs a user function',
      sql: 'CREATE DOMAIN gh_l.d2 AS text CHECK (gh_l.stash(VALUE) IS NOT NULL)',
      expect: 'refused',
    },
    {
      cls: '4',
      name: 'user-defined operator',
      sql: 'CREATE OPERATOR gh_l.=== (LEFTARG = text, RIGHTARG = text, FUNCTION = texteq)',
      expect: 'refused',
    },
    {
      cls: '4',
      name: 'user-defined aggregate',
      sql: 'CREATE AGGREGATE gh_l.grab(text) (SFUNC = textcat, STYPE = text)',
      expect: 'refused',
    },
    { cls: '4', name: 'user-defined cast', sql: 'CREATE CAST (gh_l.mail AS int) WITH INOUT', expect: 'refused' },
    { cls: '4', name: 'CLUSTER orders rows by a masked index', sql: 'CLUSTER gh_l.users USING users_email_idx', expect: 'refused' },
    {
      cls: '4',
      name: 'trigger',
      sql: 'CREATE TRIGGER gh_t BEFORE UPDATE ON gh_l.users FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()',
      expect: 'refused',
    },
    {
      cls: '4',
      name: 'row-level security policy over a masked column',
      sql: "CREATE POLICY gh_p ON gh_l.users USING (email LIKE 'a%')",
      expect: 'refused',
    },
    {
      cls: '4',
      name: 'function created in the session, then called on a masked value',
      prep: ["CREATE FUNCTION public.gh_fresh(v text) RETURNS text LANGUAGE sql AS 'INSERT INTO gh_l.notes (body) VALUES (v) RETURNING v'"],
      sql: 'SELECT gh_fresh(email) FROM gh_l.users',
      expect: 'refused',
    },
    {
      cls: '4',
      name: 'function created in the session under a built-in name, ahead of pg_catalog',
      prep: [
        "CREATE FUNCTION public.initcap(v text) RETURNS text LANGUAGE sql AS 'INSERT INTO gh_l.notes (body) VALUES (v) RETURNING v'",
        'SET search_path = public, pg_catalog',
      ],
      sql: 'SELECT initcap(ssn) FROM gh_l.users',
      expect: 'refused',
    },
    {
      cls: '4',
      name: 'function renamed in the session to a built-in name',
      prep: [
        "CREATE FUNCTION public.gh_x(v text) RETURNS text LANGUAGE sql AS 'INSERT INTO gh_l.notes (body) VALUES (v) RETURNING v'",
        'ALTER FUNCTION public.gh_x(text) RENAME TO btrim',
        'SET search_path = public, pg_catalog',
      ],
      sql: 'SELECT count(btrim(card)) FROM gh_l.users',
      expect: 'refused',
    },
    { cls: '4', name: 'held: index on an unmasked column', sql: 'CREATE INDEX gh_ok ON gh_l.users (region)', expect: 'ok' },
    {
      cls: '4',
      name: 'held: CHECK on an unmasked column',
      sql: 'ALTER TABLE gh_l.orders ADD CONSTRAINT gh_ok CHECK (total >= 0)',
      expect: 'ok',
    },
  )
  return out
}

/** Class 6: COPY with an encoding on a masked relation; class 7: hash_session. */
function copyAndHash(): Attempt[] {
  return [
    {
      cls: '6',
      name: 'COPY table TO STDOUT (ENCODING SJIS)',
      sql: "COPY gh_l.users TO STDOUT (ENCODING 'SJIS')",
      expect: 'refused',
      reason: /ENCODING/,
    },
    {
      cls: '6',
      name: 'COPY query (ENCODING LATIN1)',
      sql: "COPY (SELECT email FROM gh_l.users) TO STDOUT WITH (ENCODING 'LATIN1')",
      expect: 'refused',
    },
    {
      cls: '6',
      name: 'COPY column list CSV (ENCODING BIG5)',
      sql: "COPY gh_l.users (id, card) TO STDOUT (FORMAT csv, ENCODING 'BIG5')",
      expect: 'refused',
    },
    {
      cls: '6',
      name: 'COPY through a view (ENCODING GBK)',
      sql: "COPY (SELECT contact FROM gh_l.users_public) TO STDOUT (ENCODING 'GBK')",
      expect: 'refused',
    },
    {
      cls: '6',
      name: 'COPY FROM STDIN (ENCODING SJIS) into a masked table',
      sql: "COPY gh_l.users (id) FROM STDIN (ENCODING 'SJIS')",
      expect: 'refused',
    },
    { cls: '6', name: 'held: COPY in UTF-8 is masked', sql: 'COPY gh_l.users TO STDOUT (FORMAT csv)', expect: 'ok' },
    { cls: '6', name: 'held: COPY of a table without masked columns', sql: 'COPY gh_l.orders TO STDOUT', expect: 'ok' },
    {
      cls: '7',
      name: 'hash_session: INSERT of a guess into the column',
      sql: "INSERT INTO gh_l.tokens VALUES (9, 'tok-guess')",
      expect: 'refused',
      reason: /hash_session/,
    },
    {
      cls: '7',
      name: 'hash_session: UPDATE to a guess',
      sql: "UPDATE gh_l.tokens SET token = 'tok-guess' WHERE id = 3",
      expect: 'refused',
    },
    { cls: '7', name: 'hash_session: COPY FROM into the column', sql: 'COPY gh_l.tokens (token) FROM STDIN', expect: 'refused' },
    { cls: '7', name: 'hash_session: read is masked', sql: 'SELECT id, token FROM gh_l.tokens ORDER BY id', expect: 'ok' },
  ]
}

describe('masking: laundering corpus (private cluster, server log as ground truth)', () => {
  let corpus: Corpus
  let policyDir: string
  const counts = new Map<string, number>()

  const writeMasking = (strict: boolean): void => {
    writeFileSync(join(policyDir, 'masking.yaml'), yaml.dump({ ...MASKING, strict_predicates: strict }))
  }
  const version = (): string => (JSON.parse(corpus.gw.cli(['policy', 'status', '--json']).stdout) as { version: string }).version
  const reload = async (strict: boolean): Promise<void> => {
    const before = version()
    writeMasking(strict)
    for (let i = 0; i < 100 && version() === before; i++) await new Promise((r) => setTimeout(r, 100))
    assert.notEqual(version(), before, 'masking.yaml was reloaded')
  }

  before(async () => {
    policyDir = mkdtempSync(join(tmpdir(), 'gh-launder-policy-'))
    for (const f of ['gatehouse.rego', 'guardrails.rego', 'approvals.yaml']) copyFileSync(join(REPO, 'policies', f), join(policyDir, f))
    writeMasking(false)
    corpus = await Corpus.start({
      principals: { mallory: ['writers', 'dba'], cleared: ['pii-readers', 'writers', 'dba'] },
      schema: SCHEMA,
      config: { policies: policyDir },
    })
  })

  after(async () => {
    await corpus?.stop()
    rmSync(policyDir, { recursive: true, force: true })
    const lines = [...counts].sort().map(([k, v]) => `class ${k}: ${v}`)
    console.log(`laundering attempts: ${[...counts.values()].reduce((a, b) => a + b, 0)} (${lines.join(', ')})`)
  })

  const attempt = (a: Attempt): CorpusCase => {
    const tried = [a.sql, ...(a.variants ?? [])]
    return {
      name: a.name,
      cls: a.cls,
      as: a.as ?? 'mallory',
      steps: [...(a.prep ?? []).map((sql) => ({ sql, expect: 'ok' as const })), ...tried.map((sql) => ({ sql, expect: a.expect }))],
      check: (ctx: CaseContext) => {
        assert.deepEqual(leaks(ctx.received), [], `${a.name}: clear values reached the client`)
        for (const o of ctx.outcomes.slice(a.prep?.length ?? 0)) {
          if (a.reason) assert.match(o.errors.map((e) => e.message).join('\n'), a.reason)
          // A server error of a statement reading masked columns keeps its SQLSTATE, not its text.
          for (const e of o.errors) if (e.code !== '42501') assert.match(e.message, /withheld because the statement reads masked columns/)
        }
        // Nothing left behind on the server; then undo what the held cases changed.
        assert.equal(admin(LEFT_BEHIND, CLEANUP), '0', `${a.name}: something was left behind on the server`)
      },
    }
  }

  /** The first command's output; every command runs (psql -c … -c …), in one process. */
  const admin = (...sql: string[]): string => {
    const r = spawnSync(
      'psql',
      [
        '-X',
        '-At',
        '-h',
        '127.0.0.1',
        '-p',
        String(corpus.cluster.port),
        '-U',
        'postgres',
        '-d',
        'corpus',
        ...sql.flatMap((q) => ['-c', q]),
      ],
      {
        encoding: 'utf8',
        timeout: 30_000,
      },
    )
    if (r.status !== 0) throw new Error(`psql failed: ${r.stderr}`)
    return r.stdout.trim().split('\n')[0] ?? ''
  }

  const run = async (a: Attempt): Promise<void> => {
    counts.set(a.cls, (counts.get(a.cls) ?? 0) + size(a))
    await corpus.run(attempt(a))
  }

  for (const a of grouped([...sideChannels(), ...openOracles(), ...ddl(), ...copyAndHash()])) test(`${a.cls}: ${a.name}`, () => run(a))

  test('5: a view redefined by another client during an open session is masked at once', async () => {
    counts.set('5', (counts.get('5') ?? 0) + 1)
    const { s } = await corpus.session('mallory')
    try {
      const first = await s.query('SELECT id, name FROM gh_l.people ORDER BY id')
      assert.deepEqual(first.errors, [])
      assert.deepEqual(first.rows, [
        ['1', 'Ann'],
        ['2', 'Bob'],
        ['3', 'Cy'],
      ])
      assert.deepEqual((await s.query('PREPARE gh_q AS SELECT id, name FROM gh_l.people ORDER BY id')).errors, [])
      // A migration, directly on the server: the view's `name` column now carries e-mail addresses.
      corpus.cluster.sql('CREATE OR REPLACE VIEW gh_l.people AS SELECT id, email AS name FROM gh_l.users', 'corpus')
      const second = await s.query('SELECT id, name FROM gh_l.people ORDER BY id')
      assert.deepEqual(second.errors, [])
      assert.deepEqual(
        second.rows.map((r) => r[1]),
        ['****.com', '****.org', '****.net'],
      )
      // The server plans the prepared statement again on the new definition; so does the gateway.
      const executed = await s.query('EXECUTE gh_q')
      assert.deepEqual(executed.errors, [])
      assert.deepEqual(
        executed.rows.map((r) => r[1]),
        ['****.com', '****.org', '****.net'],
      )
      const derived = await s.query('SELECT upper(name) FROM gh_l.people ORDER BY id')
      assert.deepEqual(
        derived.rows.map((r) => r[0]),
        ['****', '****', '****'],
      )
      // A masked column renamed in a view by another client: still masked under its new name.
      corpus.cluster.sql('ALTER VIEW gh_l.directory RENAME COLUMN contact TO info', 'corpus')
      const renamed = await s.query('SELECT info FROM gh_l.directory ORDER BY id')
      assert.deepEqual(renamed.errors, [])
      assert.deepEqual(
        renamed.rows.map((r) => r[0]),
        ['****.com', '****.org', '****.net'],
      )
      assert.deepEqual(leaks(Buffer.concat(s.received)), [])
    } finally {
      await s.close()
      corpus.cluster.sql(
        'CREATE OR REPLACE VIEW gh_l.people AS SELECT id, name FROM gh_l.users; ALTER VIEW gh_l.directory RENAME COLUMN info TO contact',
        'corpus',
      )
    }
  })

  test('5: a view over a masked column created by another client during an open session is masked', async () => {
    counts.set('5', (counts.get('5') ?? 0) + 1)
    const { s } = await corpus.session('mallory')
    try {
      assert.deepEqual((await s.query('SELECT count(*) FROM gh_l.orders')).errors, [])
      corpus.cluster.sql('CREATE VIEW gh_l.fresh_v AS SELECT id, email AS alias, upper(ssn) AS x FROM gh_l.users', 'corpus')
      const r = await s.query('SELECT alias, x FROM gh_l.fresh_v ORDER BY id')
      assert.deepEqual(r.errors, [])
      assert.deepEqual(
        r.rows.map((x) => x[0]),
        ['****.com', '****.org', '****.net'],
      )
      assert.deepEqual(
        r.rows.map((x) => x[1]),
        ['****', '****', '****'],
      )
      assert.deepEqual(leaks(Buffer.concat(s.received)), [])
    } finally {
      await s.close()
      corpus.cluster.sql('DROP VIEW IF EXISTS gh_l.fresh_v', 'corpus')
    }
  })

  test('7: hash_session tokens match within a session and differ between sessions', async () => {
    counts.set('7', (counts.get('7') ?? 0) + 1)
    const read = async (): Promise<(string | null)[]> => {
      const { s } = await corpus.session('mallory')
      try {
        const r = await s.query('SELECT token FROM gh_l.tokens ORDER BY id')
        assert.deepEqual(r.errors, [])
        assert.deepEqual(leaks(Buffer.concat(s.received)), [])
        return r.rows.map((x) => x[0] ?? null)
      } finally {
        await s.close()
      }
    }
    const a = await read()
    const b = await read()
    assert.match(a[0] ?? '', /^[0-9a-f]{32}$/)
    assert.equal(a[0], a[1], 'equal values, equal tokens within a session')
    assert.notEqual(a[0], a[2])
    assert.notEqual(a[0], b[0], 'the same value has another token in another session')
  })

  test('allowed work: a cleared chain and a masked one get the same rows for ordinary analytics', async () => {
    const queries = [
      'SELECT region, count(*) FROM gh_l.users GROUP BY region ORDER BY region',
      'SELECT u.name, sum(o.total) FROM gh_l.users u JOIN gh_l.orders o ON o.user_id = u.id GROUP BY u.name ORDER BY 1',
      'SELECT id, name, email, ssn, card FROM gh_l.users ORDER BY id',
      "SELECT date_trunc('month', placed)::date AS m, count(*), avg(total)::numeric(10,2) FROM gh_l.orders GROUP BY 1 ORDER BY 1",
      'SELECT u.id, u.email, count(o.id) FROM gh_l.users u LEFT JOIN gh_l.orders o ON o.user_id = u.id GROUP BY u.id, u.email ORDER BY u.id',
      'SELECT count(*), count(*) FILTER (WHERE region = $$north$$), max(total) FROM gh_l.users u JOIN gh_l.orders o ON o.user_id = u.id',
      'SELECT id, contact FROM gh_l.users_public ORDER BY id',
      'WITH t AS (SELECT user_id, sum(total) s FROM gh_l.orders GROUP BY user_id) SELECT u.name, t.s, rank() OVER (ORDER BY t.s DESC) FROM t JOIN gh_l.users u ON u.id = t.user_id ORDER BY 3',
    ]
    const masked = await corpus.session('mallory')
    const cleared = await corpus.session('cleared')
    try {
      for (const q of queries) {
        const m = await masked.s.query(q)
        const c = await cleared.s.query(q)
        assert.deepEqual(m.errors, [], q)
        assert.deepEqual(c.errors, [], q)
        assert.equal(m.rows.length, c.rows.length, q)
        for (const [i, row] of m.rows.entries()) {
          const clear = c.rows[i] ?? []
          for (const [j, v] of row.entries()) {
            const cv = clear[j] ?? null
            if (v !== cv)
              assert.ok(cv !== null && SECRETS.includes(cv), `${q}: row ${i} column ${j}: ${v} vs ${cv} (only masked values may differ)`)
          }
        }
      }
      assert.deepEqual(leaks(Buffer.concat(masked.s.received)), [])
    } finally {
      await masked.s.close()
      await cleared.s.close()
    }
  })

  describe('with strict_predicates', () => {
    before(() => reload(true))
    after(() => reload(false))
    for (const a of grouped(strictOracles())) test(`${a.cls}: ${a.name}`, () => run(a))
  })
})
