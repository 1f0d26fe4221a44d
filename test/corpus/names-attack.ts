// Server-side names and Bind, as an outside attacker used them: a portal bound through the protocol
// and run by SQL FETCH, a protocol portal taking the name of a closed SQL cursor, an SQL-prepared
// name replaced through protocol Close + Parse, a protocol-parsed name replaced by SQL DEALLOCATE /
// DISCARD + PREPARE, and functions the planner runs at Bind. For a read-only agent nothing may
// change on the server and nothing may run that the audit did not record as allowed; for a masked
// reader the seeded secret must never appear in the bytes the client receives.

import assert from 'node:assert/strict'
import type { CaseContext, CorpusCase, CorpusStep } from '../helpers/pgcorpus.js'
import { serialize } from '../helpers/pgcorpus.js'

export const SECRET = 'SECRET-EMAIL-7731@corp.example'

export const NAMES_ATTACK_SCHEMA = `
CREATE TABLE na_c (id int PRIMARY KEY, name text, email text);
INSERT INTO na_c VALUES (1, 'Ann', '${SECRET}'), (2, 'Bob', 'bob.other@corp.example');
CREATE TABLE na_t (id int PRIMARY KEY, v int);
INSERT INTO na_t SELECT g, g FROM generate_series(1, 6) g;
CREATE SEQUENCE na_s1;
CREATE SEQUENCE na_s2;
CREATE FUNCTION na_imm(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$BEGIN PERFORM nextval('na_s2'); RAISE NOTICE 'na_imm ran %', i; RETURN i; END$$;
CREATE VIEW na_act AS SELECT pid, query FROM pg_stat_activity;
CREATE VIEW na_act2 AS SELECT query FROM na_act;
CREATE FUNCTION na_e(i int) RETURNS int LANGUAGE sql STABLE AS 'SELECT email::int FROM na_c WHERE id = i';
`

/** masking.yaml for this corpus: na_c.email partial, strict predicates. */
export const NAMES_ATTACK_MASKING = {
  rules: [{ name: 'emails', columns: ['na_c.email'], strategy: 'partial', keep: 4, clear_for: ['pii-readers'] }],
  detectors: [],
  strict_predicates: true,
}

const rows = (ctx: CaseContext): string => ctx.cluster.sql("SELECT string_agg(id || '=' || v, ',' ORDER BY id) FROM na_t", 'corpus')
const seq = (ctx: CaseContext, s: string): string => ctx.cluster.sql(`SELECT last_value || '|' || is_called FROM ${s}`, 'corpus')
const untouched = (ctx: CaseContext): void => {
  assert.equal(rows(ctx), '1=1,2=2,3=3,4=4,5=5,6=6', 'na_t must be unchanged')
  assert.equal(seq(ctx, 'na_s1'), '1|false', 'na_s1 must not advance')
  assert.equal(seq(ctx, 'na_s2'), '1|false', 'na_s2 must not advance')
}
/** The client's byte stream holds no clear secret (nor its local part). */
const noSecret = (ctx: CaseContext): void => {
  const text = ctx.received.toString('latin1')
  assert.ok(!text.includes('SECRET-EMAIL'), 'the masked value reached the client in clear')
  assert.ok(!text.includes('bob.other'), 'the masked value reached the client in clear')
}
const noNotice = (ctx: CaseContext): void => {
  assert.deepEqual(
    ctx.log.filter((r) => r.error_severity === 'NOTICE').map((r) => r.message),
    [],
    'the server ran code (its log has a NOTICE)',
  )
  assert.deepEqual(
    ctx.outcomes.flatMap((o) => o.notices),
    [],
    'the client received a NOTICE',
  )
}
const both =
  (...checks: ((ctx: CaseContext) => void)[]) =>
  (ctx: CaseContext): void => {
    for (const c of checks) c(ctx)
  }

const q = (sql: string, expect: CorpusStep['expect']): CorpusStep => ({ sql, expect })
const wire = (expect: CorpusStep['expect'], ...messages: Buffer[]): CorpusStep => ({ wire: messages, expect })
const P = (name: string, text: string): Buffer => serialize.parse({ name, text })
const B = (portal: string, statement: string, values?: string[]): Buffer =>
  serialize.bind(values ? { portal, statement, values } : { portal, statement })
const E = (portal = ''): Buffer => serialize.execute({ portal })
const S = (): Buffer => serialize.sync()
const CloseS = (name: string): Buffer => serialize.close({ type: 'S', name })
const CloseP = (name: string): Buffer => serialize.close({ type: 'P', name })

const attack = (name: string, as: string, steps: CorpusStep[], check: (ctx: CaseContext) => void): CorpusCase => ({
  name: `names attack: ${name}`,
  cls: '1',
  as,
  steps,
  check,
})

/** How a name is dropped from SQL before it is taken again. */
const SQL_DROPS = ['DISCARD ALL', 'DEALLOCATE ALL', 'DEALLOCATE p', 'DEALLOCATE PREPARE p']

export const NAMES_ATTACK_CASES: CorpusCase[] = [
  // B6: the planner runs functions at Bind
  attack(
    'B6 Bind of select f_imm(7) by a read-only agent runs nothing',
    'bot',
    [wire('refused', P('', 'SELECT na_imm(7)'), B('', ''), E(), S())],
    both(untouched, noNotice),
  ),
  attack(
    'B6 Bind with a parameter folded into an immutable function runs nothing',
    'bot',
    [wire('refused', P('', 'SELECT * FROM na_t WHERE v = na_imm($1::int)'), B('', '', ['3']), E(), S())],
    both(untouched, noNotice),
  ),
  attack(
    'B6 Bind alone (no Execute) of an immutable function runs nothing',
    'bot',
    [wire('refused', P('', 'SELECT * FROM na_t WHERE v = na_imm($1::int)'), B('', '', ['3']), S())],
    both(untouched, noNotice),
  ),
  attack(
    'B6 a stable function estimated at Bind does not echo a masked value in an error',
    'reader',
    [wire('refused', P('', 'SELECT * FROM na_t WHERE v = na_e($1::int)'), B('', '', ['1']), E(), S())],
    noSecret,
  ),
  attack(
    'B6 the same with a named statement and portal, Bind alone',
    'reader',
    [wire('refused', P('b6', 'SELECT * FROM na_t WHERE v = na_e($1::int)'), B('b6p', 'b6', ['1']), S())],
    noSecret,
  ),

  // B8: a protocol portal never Executed, run by SQL FETCH
  attack(
    'B8 a portal bound to DELETE … RETURNING, FETCHed from SQL by a read-only agent',
    'bot',
    [
      q('BEGIN', 'ok'),
      wire('any', P('', 'DELETE FROM na_t WHERE id = 6 RETURNING *'), B('pd', ''), S()),
      q('FETCH ALL FROM pd', 'refused'),
      q('COMMIT', 'any'),
    ],
    untouched,
  ),
  attack(
    'B8 a portal bound to nextval, FETCHed from SQL by a read-only agent',
    'bot',
    [
      q('BEGIN', 'ok'),
      wire('any', P('', "SELECT nextval('na_s1')"), B('px', ''), S()),
      q('FETCH ALL FROM px', 'refused'),
      q('COMMIT', 'any'),
    ],
    untouched,
  ),
  attack(
    'B8 the same in one Sync batch with a named statement, MOVE instead of FETCH',
    'bot',
    [
      q('BEGIN', 'ok'),
      wire('any', P('b8', 'DELETE FROM na_t WHERE id = 5 RETURNING *'), B('pm', 'b8'), S()),
      q('MOVE ALL IN pm', 'refused'),
      q('ROLLBACK', 'any'),
    ],
    untouched,
  ),
  attack(
    'B8 a portal over the masked column FETCHed by a masked reader',
    'reader',
    [q('BEGIN', 'ok'), wire('any', P('', 'SELECT email FROM na_c'), B('pe', ''), S()), q('FETCH ALL FROM pe', 'any'), q('COMMIT', 'any')],
    noSecret,
  ),

  // B9: an SQL cursor name reused by a protocol portal after CLOSE
  ...(['sql', 'protocol'] as const).flatMap((how) => [
    attack(
      `B9 cursor closed by ${how} CLOSE, name rebound by a portal over the masked column (reader)`,
      'reader',
      [
        q('BEGIN', 'ok'),
        q('DECLARE c CURSOR FOR SELECT name FROM na_c', 'ok'),
        how === 'sql' ? q('CLOSE c', 'ok') : wire('ok', CloseP('c'), S()),
        wire('any', P('', 'SELECT email FROM na_c'), B('c', ''), S()),
        q('FETCH ALL FROM c', 'any'),
        q('COMMIT', 'any'),
      ],
      noSecret,
    ),
    attack(
      `B9 cursor closed by ${how} CLOSE, name rebound by a portal over DELETE (read-only agent)`,
      'bot',
      [
        q('BEGIN', 'ok'),
        q('DECLARE c CURSOR FOR SELECT v FROM na_t', 'ok'),
        how === 'sql' ? q('CLOSE c', 'ok') : wire('ok', CloseP('c'), S()),
        wire('any', P('', 'DELETE FROM na_t WHERE id = 5 RETURNING v'), B('c', ''), S()),
        q('FETCH ALL FROM c', 'refused'),
        q('COMMIT', 'any'),
      ],
      untouched,
    ),
  ]),
  attack(
    'B9 in one Sync batch: Close(P) of the cursor, Parse, Bind of its name (reader)',
    'reader',
    [
      q('BEGIN', 'ok'),
      q('DECLARE "C9" CURSOR FOR SELECT name FROM na_c', 'ok'),
      wire('any', CloseP('C9'), P('', 'SELECT email FROM na_c'), B('C9', ''), S()),
      q('FETCH ALL FROM "C9"', 'any'),
      q('COMMIT', 'any'),
    ],
    noSecret,
  ),
  attack(
    'B9 WITH HOLD cursor closed, name rebound by a portal inside a new transaction (reader)',
    'reader',
    [
      q('BEGIN', 'ok'),
      q('DECLARE ch CURSOR WITH HOLD FOR SELECT name FROM na_c', 'ok'),
      q('COMMIT', 'ok'),
      q('BEGIN', 'ok'),
      q('CLOSE ch', 'ok'),
      wire('any', P('', 'SELECT email FROM na_c'), B('ch', ''), S()),
      q('FETCH ALL FROM ch', 'any'),
      q('COMMIT', 'any'),
    ],
    noSecret,
  ),
  attack(
    'B9 cursor rolled back to a savepoint, name rebound by a portal (reader)',
    'reader',
    [
      q('BEGIN', 'ok'),
      q('SAVEPOINT s', 'ok'),
      q('DECLARE cs CURSOR FOR SELECT name FROM na_c', 'ok'),
      q('ROLLBACK TO SAVEPOINT s', 'ok'),
      wire('any', P('', 'SELECT email FROM na_c'), B('cs', ''), S()),
      q('FETCH ALL FROM cs', 'any'),
      q('COMMIT', 'any'),
    ],
    noSecret,
  ),

  // B11: SQL PREPARE replaced through protocol Close + Parse
  attack(
    'B11 PREPARE p, Close(S) p, Parse p over the masked column, EXECUTE p (reader)',
    'reader',
    [q('PREPARE p AS SELECT name FROM na_c', 'ok'), wire('any', CloseS('p'), P('p', 'SELECT email FROM na_c'), S()), q('EXECUTE p', 'any')],
    noSecret,
  ),
  attack(
    'B11 the same across batches: Close(S) alone, then Parse',
    'reader',
    [
      q('PREPARE p AS SELECT name FROM na_c', 'ok'),
      wire('any', CloseS('p'), S()),
      wire('any', P('p', 'SELECT email FROM na_c'), S()),
      q('EXECUTE p', 'any'),
    ],
    noSecret,
  ),
  attack(
    'B11 inside a transaction, quoted name',
    'reader',
    [
      q('BEGIN', 'ok'),
      q('PREPARE "P11" AS SELECT name FROM na_c', 'ok'),
      wire('any', CloseS('P11'), P('P11', 'SELECT email FROM na_c'), S()),
      q('EXECUTE "P11"', 'any'),
      q('COMMIT', 'any'),
    ],
    noSecret,
  ),
  attack(
    'B11 agent: PREPARE p, Close(S), Parse p as DELETE, EXECUTE p',
    'bot',
    [
      q('PREPARE p AS SELECT v FROM na_t', 'ok'),
      wire('any', CloseS('p'), P('p', 'DELETE FROM na_t WHERE id = 4 RETURNING v'), S()),
      q('EXECUTE p', 'refused'),
    ],
    untouched,
  ),
  attack(
    'B11 PREPARE p, Close(S) p, Parse p over the masked column, protocol Bind/Execute of p (reader)',
    'reader',
    [
      q('PREPARE p AS SELECT name FROM na_c', 'ok'),
      wire('any', CloseS('p'), P('p', 'SELECT email FROM na_c'), S()),
      wire('any', B('', 'p'), E(), S()),
    ],
    noSecret,
  ),

  // B12: a protocol-parsed name replaced from SQL
  ...SQL_DROPS.flatMap((drop) => [
    attack(
      `B12 Parse p (read), ${drop}, PREPARE p AS DELETE, Bind/Execute p (read-only agent)`,
      'bot',
      [
        wire('ok', P('p', 'SELECT v FROM na_t'), S()),
        q(drop, 'ok'),
        q('PREPARE p AS DELETE FROM na_t WHERE id = 4 RETURNING v', 'ok'),
        wire('refused', B('', 'p'), E(), S()),
      ],
      untouched,
    ),
    attack(
      `B12 Parse p (name), ${drop}, PREPARE p over the masked column, Bind/Execute p (reader)`,
      'reader',
      [
        wire('ok', P('p', 'SELECT name FROM na_c'), S()),
        q(drop, 'ok'),
        q('PREPARE p AS SELECT email FROM na_c', 'ok'),
        wire('any', B('', 'p'), E(), S()),
      ],
      noSecret,
    ),
  ]),
  attack(
    'B12 DEALLOCATE and PREPARE in one text, then Bind/Execute (read-only agent)',
    'bot',
    [
      wire('ok', P('p', 'SELECT v FROM na_t'), S()),
      q('DEALLOCATE p; PREPARE p AS DELETE FROM na_t WHERE id = 4 RETURNING v', 'ok'),
      wire('refused', B('', 'p'), E(), S()),
    ],
    untouched,
  ),
  attack(
    'B12 DISCARD PLANS keeps the name: the read still runs (positive)',
    'bot',
    [wire('ok', P('p', 'SELECT v FROM na_t WHERE id = 1'), S()), q('DISCARD PLANS', 'ok'), wire('ok', B('', 'p'), E(), S())],
    untouched,
  ),
  attack(
    'B12 inside a transaction: Parse p, DEALLOCATE p, PREPARE p AS DELETE, Bind/Execute p',
    'bot',
    [
      q('BEGIN', 'ok'),
      wire('ok', P('p', 'SELECT v FROM na_t'), S()),
      q('DEALLOCATE p', 'ok'),
      q('PREPARE p AS DELETE FROM na_t WHERE id = 4 RETURNING v', 'ok'),
      wire('refused', B('', 'p'), E(), S()),
      q('ROLLBACK', 'any'),
    ],
    untouched,
  ),

  // B1 addendum: other sessions' SQL through a view
  attack('a view over pg_stat_activity is administration (reader)', 'reader', [q('SELECT * FROM na_act', 'refused')], untouched),
  attack('a view over pg_stat_activity is administration (read-only agent)', 'bot', [q('SELECT query FROM na_act', 'refused')], untouched),
  attack('a view over a view over pg_stat_activity (read-only agent)', 'bot', [q('SELECT * FROM na_act2', 'refused')], untouched),
  attack(
    'a view over pg_stat_activity through the protocol (read-only agent)',
    'bot',
    [wire('refused', P('', 'SELECT * FROM na_act'), B('', ''), E(), S())],
    untouched,
  ),

  // positives: allowed work through names still works
  attack(
    'positive: a reader FETCHes a portal over the masked column and sees it masked',
    'reader',
    [
      q('BEGIN', 'ok'),
      q('DECLARE pos CURSOR FOR SELECT id, email FROM na_c ORDER BY id', 'ok'),
      q('FETCH ALL FROM pos', 'ok'),
      q('COMMIT', 'ok'),
    ],
    (ctx) => {
      noSecret(ctx)
      assert.equal(ctx.outcomes[2]?.rows.length, 2)
    },
  ),
  attack(
    'positive: the agent Parses, Binds, Executes a read',
    'bot',
    [wire('ok', P('ok', 'SELECT v FROM na_t WHERE id = $1::int'), B('', 'ok', ['2']), E(), S())],
    (ctx) => {
      untouched(ctx)
      assert.deepEqual(ctx.outcomes[0]?.rows, [['2']])
    },
  ),
]
