// Class 4: nothing that can run code reaches the server before its decision. Bind plans the
// statement, and planning evaluates immutable functions with constant (or, for a custom plan,
// parameter) arguments: a function raising a NOTICE shows whether anything ran. A refused
// statement must produce no NOTICE — neither to the client nor in the server's own log.

import assert from 'node:assert/strict'
import type { CaseContext, CorpusCase, CorpusStep } from '../helpers/pgcorpus.js'
import { serialize } from '../helpers/pgcorpus.js'

export const BEFORE_DECISION_SCHEMA = `
CREATE TABLE cb_t (id int);
INSERT INTO cb_t VALUES (1);
CREATE FUNCTION cb_noisy(int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$BEGIN RAISE NOTICE 'cb_noisy ran with %', $1; RETURN $1; END$$;
`

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
  assert.equal(ctx.cluster.sql("SELECT string_agg(id::text, ',') FROM cb_t", 'corpus'), '1')
}

const refusedWire = (name: string, as: string, ...messages: Buffer[]): CorpusCase => ({
  name: `before decision: ${name}`,
  cls: '4',
  as,
  steps: [{ wire: messages, expect: 'refused' }],
  check: noNotice,
})

const WRITES = [
  'UPDATE cb_t SET id = cb_noisy(1)',
  'DELETE FROM cb_t WHERE id = cb_noisy(2)',
  'INSERT INTO cb_t VALUES (cb_noisy(3))',
  'SELECT * FROM cb_t WHERE id = cb_noisy(4) FOR UPDATE',
  'UPDATE cb_t SET id = 1 WHERE cb_noisy(5) > 0',
]

const step = (sql: string, expect: CorpusStep['expect']): CorpusStep => ({ sql, expect })

export const BEFORE_DECISION_CASES: CorpusCase[] = [
  ...WRITES.map((w) =>
    refusedWire(
      `Parse/Bind/Execute of ${w}`,
      'reader',
      serialize.parse({ text: w }),
      serialize.bind({}),
      serialize.execute({}),
      serialize.sync(),
    ),
  ),
  ...WRITES.map((w) => refusedWire(`a Bind alone of ${w}`, 'reader', serialize.parse({ text: w }), serialize.bind({}), serialize.sync())),
  ...WRITES.slice(0, 3).map((w) =>
    refusedWire(
      `named statement and portal, Describe P, of ${w}`,
      'reader',
      serialize.parse({ name: 'cbs', text: w }),
      serialize.bind({ portal: 'cbp', statement: 'cbs' }),
      serialize.describe({ type: 'P', name: 'cbp' }),
      serialize.execute({ portal: 'cbp' }),
      serialize.sync(),
    ),
  ),
  refusedWire(
    'a custom plan folds the parameter into an immutable call',
    'reader',
    serialize.parse({ text: 'UPDATE cb_t SET id = cb_noisy($1)', types: [23] }),
    serialize.bind({ values: ['7'] }),
    serialize.execute({}),
    serialize.sync(),
  ),
  refusedWire(
    'an agent with sql.read',
    'bot',
    serialize.parse({ text: 'UPDATE cb_t SET id = cb_noisy(8)' }),
    serialize.bind({}),
    serialize.execute({}),
    serialize.sync(),
  ),
  refusedWire(
    'a refused Bind stops the rest of its batch',
    'reader',
    serialize.parse({ text: 'DELETE FROM cb_t WHERE id = cb_noisy(9)' }),
    serialize.bind({}),
    serialize.execute({}),
    serialize.parse({ name: 'cb_after', text: 'SELECT 1' }),
    serialize.bind({ statement: 'cb_after' }),
    serialize.execute({}),
    serialize.sync(),
  ),
  ...WRITES.slice(0, 3).map(
    (w): CorpusCase => ({
      name: `before decision: simple Query ${w}`,
      cls: '4',
      as: 'reader',
      steps: [step(w, 'refused')],
      check: noNotice,
    }),
  ),
  {
    name: 'before decision: Describe of a statement does not plan it (no NOTICE)',
    cls: '4',
    as: 'reader',
    steps: [
      {
        wire: [
          serialize.parse({ name: 'cbd', text: 'UPDATE cb_t SET id = cb_noisy(10)' }),
          serialize.describe({ type: 'S', name: 'cbd' }),
          serialize.sync(),
        ],
        expect: 'ok',
      },
      { wire: [serialize.bind({ statement: 'cbd' }), serialize.execute({}), serialize.sync()], expect: 'refused' },
    ],
    check: noNotice,
  },
  {
    name: 'before decision: an allowed statement still runs its function once',
    cls: '4',
    as: 'admin',
    steps: [
      {
        wire: [serialize.parse({ text: 'SELECT cb_noisy(11)' }), serialize.bind({}), serialize.execute({}), serialize.sync()],
        expect: 'ok',
        rows: [['11']],
      },
    ],
    check: (ctx) => {
      assert.equal(ctx.outcomes[0]?.notices.filter((n) => n.includes('cb_noisy ran with 11')).length, 1)
      assert.ok(ctx.log.some((r) => r.error_severity === 'NOTICE' && r.message.includes('cb_noisy ran with 11')))
    },
  },
  {
    name: 'before decision: a Bind judged once serves a portal executed in pieces',
    cls: '4',
    as: 'reader',
    steps: [
      step('BEGIN', 'ok'),
      {
        wire: [
          serialize.parse({ text: 'SELECT g FROM generate_series(1, 3) g' }),
          serialize.bind({ portal: 'cbpiece' }),
          serialize.execute({ portal: 'cbpiece', rows: 2 }),
          serialize.sync(),
        ],
        expect: 'ok',
        rows: [['1'], ['2']],
      },
      { wire: [serialize.execute({ portal: 'cbpiece', rows: 2 }), serialize.sync()], expect: 'ok', rows: [['3']] },
      step('COMMIT', 'ok'),
    ],
    check: (ctx) => {
      const ev = ctx.audit.filter((e) => e.type === 'statement' && e.sql === 'SELECT g FROM generate_series(1, 3) g')
      assert.equal(ev.length, 1, 'judged and audited once, at its Bind')
    },
  },
]
