// Class 1 (server-side names) and the name-based cases of class 2 (EXECUTE of a prepared write,
// FETCH/MOVE on a portal bound to a write): what EXECUTE, FETCH and MOVE run is read from the
// server's own pg_prepared_statements / pg_cursors and judged and audited as the effective action,
// whatever PREPARE/DECLARE/DEALLOCATE/CLOSE/DISCARD, failures, rollbacks, case folding, quoting,
// functions (SPI) or the protocol level did to the name; protocol-level Execute runs exactly the
// Parse that was judged.

import assert from 'node:assert/strict'
import type { CaseContext, CorpusCase, CorpusStep } from '../helpers/pgcorpus.js'
import { serialize } from '../helpers/pgcorpus.js'

export const NAMES_SCHEMA = `
CREATE TABLE nm_t (id int PRIMARY KEY, v text);
INSERT INTO nm_t SELECT g, 'v' || g FROM generate_series(1, 3) g;
CREATE FUNCTION nm_spi_prepare() RETURNS int LANGUAGE plpgsql AS $$BEGIN EXECUTE 'PREPARE nm_spi AS UPDATE nm_t SET v = ''spi'' WHERE id = 1'; RETURN 1; END$$;
`

const rowsOf = (ctx: CaseContext): string => ctx.cluster.sql("SELECT string_agg(id || '=' || v, ',' ORDER BY id) FROM nm_t", 'corpus')
const untouched = (ctx: CaseContext): void => assert.equal(rowsOf(ctx), '1=v1,2=v2,3=v3', 'nm_t must be unchanged')
/** The audited statement events whose SQL is `sql`. */
const audited = (ctx: CaseContext, sql: string): Record<string, unknown>[] =>
  ctx.audit.filter((e) => e.type === 'statement' && e.sql === sql)
const effective = (ctx: CaseContext, sql: string, action: string, kind: string, inner: RegExp): void => {
  const ev = audited(ctx, sql)[0]
  assert.ok(ev, `no audit event for ${sql}`)
  assert.equal(ev.action, action, `${sql}: effective action`)
  assert.equal(ev.kind, kind, `${sql}: effective kind`)
  assert.match(String(ev.inner_sql), inner, `${sql}: inner statement`)
}
const reset = (ctx: CaseContext): void => void ctx.cluster.sql("UPDATE nm_t SET v = 'v' || id", 'corpus')

const q = (sql: string, expect: CorpusStep['expect'], rows?: (string | null)[][]): CorpusStep =>
  rows ? { sql, expect, rows } : { sql, expect }
const wire = (expect: CorpusStep['expect'], ...messages: Buffer[]): CorpusStep => ({ wire: messages, expect })

const named = (name: string, as: string, steps: CorpusStep[], check?: (ctx: CaseContext) => void): CorpusCase => ({
  name: `names: ${name}`,
  cls: '1',
  as,
  steps,
  ...(check ? { check } : {}),
})

export const NAMES_CASES: CorpusCase[] = [
  // --- EXECUTE: judged as the prepared statement the server holds ---
  named(
    'EXECUTE of a prepared read runs and is audited with its inner statement',
    'reader',
    [q('PREPARE nr AS SELECT v FROM nm_t WHERE id = 1', 'ok'), q('EXECUTE nr', 'ok', [['v1']])],
    (ctx) => effective(ctx, 'EXECUTE nr', 'sql.read', 'select', /PREPARE nr AS SELECT v FROM nm_t/),
  ),
  named(
    'EXECUTE of a prepared write is a write',
    'reader',
    [q("PREPARE nw AS UPDATE nm_t SET v = 'x' WHERE id = 1", 'ok'), q('EXECUTE nw', 'refused')],
    untouched,
  ),
  named(
    'EXECUTE of a prepared unbounded write meets the unbounded-write rule',
    'writer',
    [q("PREPARE nu AS UPDATE nm_t SET v = 'x'", 'ok'), q('EXECUTE nu', 'refused')],
    (ctx) => {
      untouched(ctx)
      assert.ok(((audited(ctx, 'EXECUTE nu')[0]?.rules ?? []) as string[]).includes('no-unbounded-write'))
    },
  ),
  named(
    'EXECUTE of a prepared DELETE without WHERE meets the rule too',
    'writer',
    [q('PREPARE nd AS DELETE FROM nm_t', 'ok'), q('EXECUTE nd', 'refused')],
    untouched,
  ),
  named(
    'an allowed EXECUTE of a write runs it and audits the UPDATE',
    'writer',
    [q("PREPARE nok AS UPDATE nm_t SET v = 'w' WHERE id = 2", 'ok'), q('EXECUTE nok', 'ok')],
    (ctx) => {
      effective(ctx, 'EXECUTE nok', 'sql.write', 'update', /UPDATE nm_t SET v = 'w' WHERE id = 2/)
      assert.equal(rowsOf(ctx), '1=v1,2=w,3=v3')
      reset(ctx)
    },
  ),
  named(
    'unquoted names fold: PREPARE W, EXECUTE w',
    'reader',
    [q("PREPARE NFold AS UPDATE nm_t SET v = 'x' WHERE id = 1", 'ok'), q('EXECUTE nfold', 'refused'), q('EXECUTE NFOLD', 'refused')],
    untouched,
  ),
  named(
    'a quoted name does not fold',
    'reader',
    [q('PREPARE "NQ" AS UPDATE nm_t SET v = \'x\' WHERE id = 1', 'ok'), q('EXECUTE "NQ"', 'refused'), q('EXECUTE nq', 'refused')],
    untouched,
  ),
  named(
    'PREPARE and EXECUTE of a write in one text',
    'reader',
    [q("PREPARE n1t AS UPDATE nm_t SET v = 'x' WHERE id = 1; EXECUTE n1t", 'refused')],
    untouched,
  ),
  named(
    'a PREPARE that fails as a duplicate leaves the first statement',
    'reader',
    [
      q('PREPARE ndup AS SELECT 1', 'ok'),
      q("PREPARE ndup AS UPDATE nm_t SET v = 'x' WHERE id = 1", 'error'),
      q('EXECUTE ndup', 'ok', [['1']]),
    ],
    (ctx) => {
      untouched(ctx)
      effective(ctx, 'EXECUTE ndup', 'sql.read', 'select', /PREPARE ndup AS SELECT 1/)
    },
  ),
  named(
    'a PREPARE after an error in the same text never happened',
    'reader',
    [
      q('SELECT 1/0; PREPARE nerr AS SELECT 1', 'error'),
      q("PREPARE nerr AS UPDATE nm_t SET v = 'x' WHERE id = 1", 'ok'),
      q('EXECUTE nerr', 'refused'),
    ],
    untouched,
  ),
  named(
    'DEALLOCATE then PREPARE of the same name as a write',
    'reader',
    [
      q('PREPARE nre AS SELECT 1', 'ok'),
      q('DEALLOCATE nre', 'ok'),
      q("PREPARE nre AS UPDATE nm_t SET v = 'x' WHERE id = 1", 'ok'),
      q('EXECUTE nre', 'refused'),
    ],
    untouched,
  ),
  named(
    'DEALLOCATE and re-PREPARE in one text, EXECUTE later',
    'reader',
    [
      q('PREPARE nre2 AS SELECT 1', 'ok'),
      q("DEALLOCATE nre2; PREPARE nre2 AS UPDATE nm_t SET v = 'x' WHERE id = 1", 'ok'),
      q('EXECUTE nre2', 'refused'),
    ],
    untouched,
  ),
  named('EXECUTE after DEALLOCATE ALL is refused', 'reader', [
    q('PREPARE nall AS SELECT 1', 'ok'),
    q('DEALLOCATE ALL', 'ok'),
    q('EXECUTE nall', 'refused'),
  ]),
  named('EXECUTE after DISCARD ALL is refused', 'reader', [
    q('PREPARE ndis AS SELECT 1', 'ok'),
    q('DISCARD ALL', 'ok'),
    q('EXECUTE ndis', 'refused'),
  ]),
  named(
    'a prepared write survives ROLLBACK and is still a write',
    'reader',
    [q('BEGIN', 'ok'), q("PREPARE nrb AS UPDATE nm_t SET v = 'x' WHERE id = 1", 'ok'), q('ROLLBACK', 'ok'), q('EXECUTE nrb', 'refused')],
    untouched,
  ),
  named(
    'a statement prepared by a function (SPI) is judged as what it is',
    'writer',
    [q('SELECT nm_spi_prepare()', 'any'), q('EXECUTE nm_spi', 'ok')],
    (ctx) => {
      effective(ctx, 'EXECUTE nm_spi', 'sql.write', 'update', /PREPARE nm_spi AS UPDATE nm_t/)
      reset(ctx)
    },
  ),
  named(
    'a protocol-level Parse of a write, EXECUTEd from SQL',
    'reader',
    [
      wire('ok', serialize.parse({ name: 'np', text: "UPDATE nm_t SET v = 'x' WHERE id = 1" }), serialize.sync()),
      q('EXECUTE np', 'refused'),
    ],
    untouched,
  ),
  named(
    'a protocol-level name is exact: EXECUTE NP folds, "NP" does not',
    'reader',
    [
      wire('ok', serialize.parse({ name: 'NP', text: "UPDATE nm_t SET v = 'x' WHERE id = 1" }), serialize.sync()),
      q('EXECUTE NP', 'refused'),
      q('EXECUTE "NP"', 'refused'),
    ],
    untouched,
  ),
  named(
    'a protocol-level Parse of a read, EXECUTEd from SQL',
    'reader',
    [
      wire('ok', serialize.parse({ name: 'npr', text: 'SELECT v FROM nm_t WHERE id = 3' }), serialize.sync()),
      q('EXECUTE npr', 'ok', [['v3']]),
    ],
    (ctx) => effective(ctx, 'EXECUTE npr', 'sql.read', 'select', /^SELECT v FROM nm_t WHERE id = 3$/),
  ),
  named('EXECUTE of a name nobody prepared', 'reader', [q('EXECUTE nobody', 'refused')]),
  named('EXECUTE after a function call in the same text is refused', 'writer', [
    q('PREPARE nfx AS SELECT 1', 'ok'),
    q('SELECT nm_spi_prepare(); EXECUTE nfx', 'refused'),
  ]),
  named(
    'protocol Bind of an SQL-prepared write is refused',
    'writer',
    [
      q("PREPARE nsq AS UPDATE nm_t SET v = 'x' WHERE id = 1", 'ok'),
      wire('refused', serialize.bind({ statement: 'nsq' }), serialize.execute({}), serialize.sync()),
    ],
    untouched,
  ),

  // --- FETCH / MOVE: judged as the cursor's or portal's statement ---
  named(
    'FETCH from a cursor over a read',
    'reader',
    [
      q('BEGIN', 'ok'),
      q('DECLARE fc CURSOR FOR SELECT v FROM nm_t ORDER BY id', 'ok'),
      q('FETCH 2 FROM fc', 'ok', [['v1'], ['v2']]),
      q('MOVE 1 IN fc', 'ok'),
      q('COMMIT', 'ok'),
    ],
    (ctx) => {
      effective(ctx, 'FETCH 2 FROM fc', 'sql.read', 'select', /DECLARE fc CURSOR FOR SELECT v FROM nm_t/)
      assert.equal(audited(ctx, 'FETCH 2 FROM fc')[0]?.via, 'fetch')
      assert.equal(audited(ctx, 'MOVE 1 IN fc')[0]?.via, 'move')
    },
  ),
  named(
    'FETCH on a protocol portal bound to UPDATE … RETURNING is a write',
    'reader',
    [
      q('BEGIN', 'ok'),
      wire(
        'any',
        serialize.parse({ text: "UPDATE nm_t SET v = 'x' WHERE id = 1 RETURNING id" }),
        serialize.bind({ portal: 'fupd' }),
        serialize.sync(),
      ),
      q('FETCH ALL FROM fupd', 'refused'),
      q('ROLLBACK', 'ok'),
    ],
    untouched,
  ),
  named(
    'MOVE on a portal bound to DELETE … RETURNING is a write',
    'reader',
    [
      q('BEGIN', 'ok'),
      wire(
        'any',
        serialize.parse({ text: 'DELETE FROM nm_t WHERE id = 2 RETURNING id' }),
        serialize.bind({ portal: 'fdel' }),
        serialize.sync(),
      ),
      q('MOVE ALL IN fdel', 'refused'),
      q('ROLLBACK', 'ok'),
    ],
    untouched,
  ),
  named(
    'FETCH on a portal bound to an unbounded UPDATE meets the unbounded-write rule',
    'writer',
    [
      q('BEGIN', 'ok'),
      wire('any', serialize.parse({ text: "UPDATE nm_t SET v = 'x' RETURNING id" }), serialize.bind({ portal: 'fall' }), serialize.sync()),
      q('FETCH ALL FROM fall', 'refused'),
      q('ROLLBACK', 'ok'),
    ],
    untouched,
  ),
  named(
    'an allowed FETCH of a write portal is audited as the UPDATE it ran',
    'writer',
    [
      q('BEGIN', 'ok'),
      wire(
        'any',
        serialize.parse({ text: "UPDATE nm_t SET v = 'f' WHERE id = 3 RETURNING id" }),
        serialize.bind({ portal: 'fok' }),
        serialize.sync(),
      ),
      q('FETCH ALL FROM fok', 'ok', [['3']]),
      q('ROLLBACK', 'ok'),
    ],
    (ctx) => {
      untouched(ctx)
      effective(ctx, 'FETCH ALL FROM fok', 'sql.write', 'update', /^UPDATE nm_t SET v = 'f' WHERE id = 3 RETURNING id$/)
    },
  ),
  named('DECLARE of a locking read is a write', 'reader', [
    q('BEGIN', 'ok'),
    q('DECLARE flk CURSOR FOR SELECT * FROM nm_t FOR UPDATE', 'refused'),
    q('ROLLBACK', 'ok'),
  ]),
  named('a WITH HOLD cursor rolled back with its transaction is gone', 'reader', [
    q('BEGIN', 'ok'),
    q('DECLARE fh CURSOR WITH HOLD FOR SELECT 1', 'ok'),
    q('ROLLBACK', 'ok'),
    q('FETCH fh', 'refused'),
  ]),
  named('a committed WITH HOLD cursor is still judged from the server', 'reader', [
    q('BEGIN', 'ok'),
    q('DECLARE fhc CURSOR WITH HOLD FOR SELECT v FROM nm_t WHERE id = 2', 'ok'),
    q('COMMIT', 'ok'),
    q('FETCH fhc', 'ok', [['v2']]),
    q('CLOSE fhc', 'ok'),
    q('FETCH fhc', 'refused'),
  ]),
  named('a cursor rolled back to a savepoint is gone', 'reader', [
    q('BEGIN', 'ok'),
    q('SAVEPOINT s', 'ok'),
    q('DECLARE fsp CURSOR FOR SELECT 1', 'ok'),
    q('ROLLBACK TO SAVEPOINT s', 'ok'),
    q('FETCH fsp', 'refused'),
    q('ROLLBACK', 'ok'),
  ]),
  named('cursor names fold unless quoted', 'reader', [
    q('BEGIN', 'ok'),
    q('DECLARE "FQ" CURSOR FOR SELECT v FROM nm_t WHERE id = 1', 'ok'),
    q('FETCH FQ', 'refused'),
    q('ROLLBACK', 'ok'),
    q('BEGIN', 'ok'),
    q('DECLARE "FQ" CURSOR FOR SELECT v FROM nm_t WHERE id = 1', 'ok'),
    q('FETCH "FQ"', 'ok', [['v1']]),
    q('COMMIT', 'ok'),
  ]),
  named('DECLARE and FETCH in one text', 'reader', [
    q('BEGIN', 'ok'),
    q('DECLARE f1t CURSOR FOR SELECT v FROM nm_t WHERE id = 3; FETCH f1t', 'ok', [['v3']]),
    q('COMMIT', 'ok'),
  ]),
  named('CLOSE then FETCH in one text', 'reader', [
    q('BEGIN', 'ok'),
    q('DECLARE fcl CURSOR FOR SELECT 1', 'ok'),
    q('CLOSE fcl; FETCH fcl', 'refused'),
    q('ROLLBACK', 'ok'),
  ]),
  named('CLOSE ALL then FETCH in one text', 'reader', [
    q('BEGIN', 'ok'),
    q('DECLARE fca CURSOR FOR SELECT 1', 'ok'),
    q('CLOSE ALL; FETCH fca', 'refused'),
    q('ROLLBACK', 'ok'),
  ]),
  named('a function call before FETCH in the same text is refused', 'writer', [
    q('BEGIN', 'ok'),
    q('DECLARE ffx CURSOR FOR SELECT 1', 'ok'),
    q('SELECT nm_spi_prepare(); FETCH ffx', 'refused'),
    q('ROLLBACK', 'ok'),
  ]),
  named('FETCH of a cursor nobody declared', 'reader', [q('BEGIN', 'ok'), q('FETCH nocursor', 'refused'), q('ROLLBACK', 'ok')]),
  named('FETCH in an aborted transaction is refused, not guessed', 'reader', [
    q('BEGIN', 'ok'),
    q('DECLARE fab CURSOR FOR SELECT 1', 'ok'),
    q('SELECT 1/0', 'error'),
    q('FETCH fab', 'refused'),
    q('ROLLBACK', 'ok'),
  ]),
  named('psql FETCH_COUNT style: DECLARE, FETCH FORWARD, CLOSE', 'reader', [
    q('BEGIN', 'ok'),
    q('DECLARE _psql_cursor NO SCROLL CURSOR FOR SELECT v FROM nm_t ORDER BY id', 'ok'),
    q('FETCH FORWARD 2 FROM _psql_cursor', 'ok', [['v1'], ['v2']]),
    q('FETCH FORWARD 2 FROM _psql_cursor', 'ok', [['v3']]),
    q('CLOSE _psql_cursor', 'ok'),
    q('COMMIT', 'ok'),
  ]),
  named('a scrollable cursor, FETCH BACKWARD and ABSOLUTE', 'reader', [
    q('BEGIN', 'ok'),
    q('DECLARE fsc SCROLL CURSOR FOR SELECT id FROM nm_t ORDER BY id', 'ok'),
    q('FETCH ABSOLUTE 3 FROM fsc', 'ok', [['3']]),
    q('FETCH BACKWARD 1 FROM fsc', 'ok', [['2']]),
    q('COMMIT', 'ok'),
  ]),

  // --- protocol level: Execute runs exactly the Parse that was judged ---
  named('a stale protocol portal name taken over by DECLARE after COMMIT', 'writer', [
    q('BEGIN', 'ok'),
    wire('ok', serialize.parse({ name: 'pst', text: 'SELECT 1' }), serialize.bind({ portal: 'pport', statement: 'pst' }), serialize.sync()),
    q('COMMIT', 'ok'),
    q('BEGIN', 'ok'),
    q('DECLARE pport CURSOR FOR SELECT v FROM nm_t WHERE id = 1 FOR UPDATE', 'ok'),
    wire('refused', serialize.execute({ portal: 'pport' }), serialize.sync()),
    q('ROLLBACK', 'ok'),
  ]),
  named(
    're-Parse of a name in the same batch: the duplicate fails, nothing after it runs',
    'reader',
    [
      wire('ok', serialize.parse({ name: 'prp', text: 'SELECT 1' }), serialize.sync()),
      wire(
        'any',
        serialize.parse({ name: 'prp', text: "UPDATE nm_t SET v = 'x' WHERE id = 1" }),
        serialize.bind({ statement: 'prp' }),
        serialize.execute({}),
        serialize.sync(),
      ),
    ],
    untouched,
  ),
  named(
    'Close then Parse of the same name as a write',
    'reader',
    [
      wire('ok', serialize.parse({ name: 'pcl', text: 'SELECT 1' }), serialize.sync()),
      wire(
        'refused',
        serialize.close({ type: 'S', name: 'pcl' }),
        serialize.parse({ name: 'pcl', text: "UPDATE nm_t SET v = 'x' WHERE id = 1" }),
        serialize.bind({ statement: 'pcl' }),
        serialize.execute({}),
        serialize.sync(),
      ),
    ],
    untouched,
  ),
  named(
    'the unnamed statement replaced after Bind: the portal runs what was bound',
    'reader',
    [
      wire(
        'ok',
        serialize.parse({ text: 'SELECT v FROM nm_t WHERE id = 1' }),
        serialize.bind({}),
        serialize.parse({ text: "UPDATE nm_t SET v = 'x' WHERE id = 1" }),
        serialize.execute({}),
        serialize.sync(),
      ),
    ],
    (ctx) => {
      untouched(ctx)
      assert.deepEqual(
        ctx.executed.map((e) => e.sql),
        ['SELECT v FROM nm_t WHERE id = 1'],
      )
    },
  ),
  named(
    'an error in the batch skips the rest: an allowed write after it never runs',
    'writer',
    [
      wire(
        'error',
        serialize.parse({ text: 'SELECT 1/0' }),
        serialize.bind({}),
        serialize.execute({}),
        serialize.parse({ name: 'perr', text: "UPDATE nm_t SET v = 'x' WHERE id = 1" }),
        serialize.bind({ statement: 'perr' }),
        serialize.execute({}),
        serialize.sync(),
      ),
    ],
    untouched,
  ),
  named(
    'a write Parse after a read Bind in the same batch is refused at its Execute',
    'reader',
    [
      wire(
        'refused',
        serialize.parse({ name: 'pa', text: 'SELECT 1' }),
        serialize.bind({ portal: 'pa_p', statement: 'pa' }),
        serialize.parse({ name: 'pb', text: 'DELETE FROM nm_t WHERE id = 1' }),
        serialize.bind({ portal: 'pb_p', statement: 'pb' }),
        serialize.execute({ portal: 'pb_p' }),
        serialize.sync(),
      ),
    ],
    untouched,
  ),
  named('Execute of a portal nobody bound is refused', 'reader', [
    wire('refused', serialize.execute({ portal: 'nobody' }), serialize.sync()),
  ]),
  named('a suspended portal keeps its statement across Executes', 'reader', [
    q('BEGIN', 'ok'),
    wire(
      'ok',
      serialize.parse({ text: 'SELECT id FROM nm_t ORDER BY id' }),
      serialize.bind({ portal: 'psus' }),
      serialize.execute({ portal: 'psus', rows: 1 }),
      serialize.sync(),
    ),
    wire('ok', serialize.execute({ portal: 'psus', rows: 1 }), serialize.sync()),
    q('COMMIT', 'ok'),
  ]),
]
