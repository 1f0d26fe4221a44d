// Laundering corpus for masking, DDL and what follows it: a chain that sees columns masked tries to
// reach a clear value through DDL (class 4), a catalog that another client changed under its open
// session (class 5), COPY encodings (class 6) and deterministic hashes (class 7). Each attempt runs
// on a private cluster through a real gateway (the fixture is test/helpers/pg-laundering.ts, the
// harness test/helpers/pgcorpus.ts) and asserts
//   - what the client received: no clear value of any masked column, in any of several encodings,
//     anywhere in the whole byte stream the gateway sent (startup and ParameterStatus included);
//   - what the server ran (its own statement log): a refused attempt ran nothing and no code, an
//     allowed one ran exactly what was audited, and nothing was left behind (stashed rows, large
//     objects, the sequence).
// Allowed work is tested too: a cleared chain and a masked one get the same rows for ordinary
// analytics queries, masked for the latter. Side channels and oracles are in
// pg-laundering-oracles.test.ts.

import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { type Attempt, corpus, counts, grouped, leaks, perColumn, run, SECRETS, useLaunderingCorpus } from './helpers/pg-laundering.js'

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
  useLaunderingCorpus()

  for (const a of grouped([...ddl(), ...copyAndHash()])) test(`${a.cls}: ${a.name}`, () => run(a))

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
})
