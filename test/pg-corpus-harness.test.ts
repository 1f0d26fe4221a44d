// The corpus harness itself (helpers/pgcorpus.ts): a private cluster's statement log is the ground
// truth; allowed statements appear in it exactly as audited, refused ones never do.

import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { assertExecutedWasAllowed, Corpus, type CorpusCase, executedStatements, serialize } from './helpers/pgcorpus.js'

const SCHEMA = `
CREATE TABLE harness_t (id int PRIMARY KEY, v text);
INSERT INTO harness_t SELECT g, 'v' || g FROM generate_series(1, 3) g;
`

const rowsOf = (ctx: { cluster: { sql(s: string, db?: string): string } }): string =>
  ctx.cluster.sql("SELECT string_agg(id || v, ',' ORDER BY id) FROM harness_t", 'corpus')

const CASES: CorpusCase[] = [
  {
    name: 'a read runs and is audited',
    cls: 'harness',
    as: 'reader',
    steps: [{ sql: 'SELECT v FROM harness_t WHERE id = 1', expect: 'ok', rows: [['v1']] }],
  },
  {
    name: 'a refused write runs nothing',
    cls: 'harness',
    as: 'reader',
    steps: [{ sql: "UPDATE harness_t SET v = 'x'", expect: 'refused' }],
    check: (ctx) => assert.equal(rowsOf(ctx), '1v1,2v2,3v3'),
  },
  {
    name: 'an allowed write runs once',
    cls: 'harness',
    as: 'writer',
    steps: [{ sql: "UPDATE harness_t SET v = 'w' WHERE id = 3", expect: 'ok' }],
    check: (ctx) => {
      assert.equal(rowsOf(ctx), '1v1,2v2,3w')
      assert.deepEqual(
        ctx.executed.map((e) => e.sql),
        ["UPDATE harness_t SET v = 'w' WHERE id = 3"],
      )
    },
  },
  {
    name: 'the extended protocol is logged at Execute',
    cls: 'harness',
    as: 'reader',
    steps: [
      {
        wire: [
          serialize.parse({ text: 'SELECT v FROM harness_t WHERE id = $1' }),
          serialize.bind({ values: ['2'] }),
          serialize.execute({}),
          serialize.sync(),
        ],
        expect: 'ok',
        rows: [['v2']],
      },
    ],
    check: (ctx) =>
      assert.deepEqual(
        ctx.executed.map((e) => e.sql),
        ['SELECT v FROM harness_t WHERE id = $1'],
      ),
  },
]

describe('corpus harness', () => {
  let corpus: Corpus
  before(async () => {
    corpus = await Corpus.start({ principals: { reader: [], writer: ['writers'] }, schema: SCHEMA })
  })
  after(async () => {
    await corpus?.stop()
  })
  for (const c of CASES) test(c.name, () => corpus.run(c).then(() => undefined))

  test('a statement the server ran that the gateway never audited fails the comparison', () => {
    const executed = executedStatements([
      { pid: 1, error_severity: 'LOG', message: 'statement: DELETE FROM harness_t', application_name: 'x' },
    ])
    const audit = [
      { type: 'statement', seq: 1, sql: 'SELECT 1', decision: 'allow' },
      { type: 'result', seq: 1, error: { code: '42P01' } },
    ]
    assert.throws(() => assertExecutedWasAllowed('negative', executed, audit), /which the gateway did not allow/)
    const refused = [{ type: 'statement', seq: 1, sql: 'DELETE FROM harness_t', decision: 'deny' }]
    assert.throws(() => assertExecutedWasAllowed('negative', executed, refused), /which the gateway did not allow/)
  })
})
