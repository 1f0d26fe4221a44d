// Server errors in the extended protocol, through a real gateway and directly on the same private
// cluster: a statement that fails at Parse or at Bind (the planner folds `1/0`, or a parameter into
// it) is audited with the server's SQLSTATE, not as skipped; after an error in the middle of a
// pipelined batch — whatever of the batch the server skipped, and whenever the rest of the batch
// reached the gateway — the client's next batch runs exactly as on a direct connection, and results
// stay attributed to their statements (a masked result is still masked). The server's own
// statement log is the ground truth of what ran (helpers/pgcorpus.ts).

import assert from 'node:assert/strict'
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import yaml from 'js-yaml'
import pg from 'pg'
import { REPO } from './helpers/gateway.js'
import { type CaseContext, Corpus, type CorpusCase, type CorpusStep, type Outcome, serialize } from './helpers/pgcorpus.js'

const SECRET = 'SECRET-MAIL-4417@corp.example'

const SCHEMA = `
CREATE TABLE be_t (id int PRIMARY KEY, v int);
INSERT INTO be_t VALUES (1, 10), (2, 20);
CREATE TABLE be_c (id int PRIMARY KEY, email text);
INSERT INTO be_c VALUES (1, '${SECRET}');
`

const MASKING = {
  rules: [{ name: 'emails', columns: ['be_c.email'], strategy: 'partial', keep: 4, clear_for: ['pii-readers'] }],
  detectors: [],
}

const INT4 = 23

/** What a client can observe of a step: the message types, the SQLSTATEs, the rows, the tags. */
function observed(o: Outcome, rows: boolean): unknown {
  return {
    types: o.types.join(' '),
    errors: o.errors.map((e) => e.code),
    tags: o.tags,
    ...(rows ? { rows: o.rows } : {}),
    closed: o.closed,
  }
}

/** The statement audit event of `sql` and its result events. */
function auditOf(ctx: CaseContext, sql: string): { statement: Record<string, unknown>; results: Record<string, unknown>[] } {
  const statement = ctx.audit.find((e) => e.type === 'statement' && e.sql === sql)
  assert.ok(statement, `no statement event for ${sql}: ${JSON.stringify(ctx.audit)}`)
  return { statement, results: ctx.audit.filter((e) => e.type === 'result' && e.seq === statement.seq) }
}

/** The statement's only result event failed with `code`. */
const failedWith =
  (sql: string, code: string) =>
  (ctx: CaseContext): void => {
    const { statement, results } = auditOf(ctx, sql)
    assert.equal(statement.decision, 'allow')
    assert.equal(results.length, 1, `one result event for ${sql}: ${JSON.stringify(results)}`)
    assert.equal((results[0]?.error as { code?: string } | undefined)?.code, code, `${sql}: ${JSON.stringify(results)}`)
  }

/** The statement completed with `tag`. */
const completed =
  (sql: string, tag: string) =>
  (ctx: CaseContext): void => {
    const { results } = auditOf(ctx, sql)
    assert.deepEqual(
      results.map((r) => [r.tag, r.error]),
      [[tag, undefined]],
      `${sql}: ${JSON.stringify(results)}`,
    )
  }

const noSecret = (ctx: CaseContext): void => {
  const text = ctx.received.toString('latin1')
  assert.ok(!text.includes('SECRET-MAIL'), 'the masked value reached the client in clear')
}

const all =
  (...checks: ((ctx: CaseContext) => void)[]) =>
  (ctx: CaseContext): void => {
    for (const c of checks) c(ctx)
  }

interface BatchCase extends CorpusCase {
  /** Compare rows with the direct run too (not for masked results). */
  readonly sameRows?: boolean
}

const wire = (messages: Buffer[], extra: Partial<CorpusStep> = {}): CorpusStep => ({ wire: messages, expect: 'any', ...extra })

const CASES: BatchCase[] = [
  {
    name: 'a statement the planner fails at Bind (1/0 folded) is audited with 22012',
    cls: 'bind-error',
    as: 'reader',
    sameRows: true,
    steps: [
      wire([serialize.parse({ text: 'SELECT 1/0' }), serialize.bind({}), serialize.execute({}), serialize.sync()]),
      { sql: 'SELECT 1', expect: 'ok' },
    ],
    check: all(failedWith('SELECT 1/0', '22012'), completed('SELECT 1', 'SELECT 1')),
  },
  {
    name: 'a parameter folded into 1/$1 fails at Bind (custom plan) and is audited with 22012',
    cls: 'bind-error',
    as: 'reader',
    sameRows: true,
    steps: [
      wire([
        serialize.parse({ text: 'SELECT 1/$1::int AS x', types: [INT4] }),
        serialize.bind({ values: ['0'] }),
        serialize.describe({ type: 'P', name: '' }),
        serialize.execute({}),
        serialize.sync(),
      ]),
    ],
    check: failedWith('SELECT 1/$1::int AS x', '22012'),
  },
  {
    name: 'a named statement and portal failing at Bind, then bound again with a good value',
    cls: 'bind-error',
    as: 'reader',
    sameRows: true,
    steps: [
      wire([
        serialize.parse({ name: 'be_q', text: 'SELECT 10/$1::int AS x', types: [INT4] }),
        serialize.bind({ portal: 'be_p', statement: 'be_q', values: ['0'] }),
        serialize.execute({ portal: 'be_p' }),
        serialize.sync(),
        serialize.bind({ portal: 'be_p', statement: 'be_q', values: ['5'] }),
        serialize.execute({ portal: 'be_p' }),
        serialize.sync(),
      ]),
    ],
    check: (ctx) => {
      const codes = ctx.audit.filter((e) => e.type === 'result').map((e) => (e.error as { code?: string } | undefined)?.code ?? e.tag)
      assert.deepEqual(codes, ['22012', 'SELECT 1'])
    },
  },
  {
    name: 'a statement the server fails at Parse is audited with its SQLSTATE (42P01), not as skipped',
    cls: 'parse-error',
    as: 'reader',
    sameRows: true,
    steps: [wire([serialize.parse({ text: 'SELECT * FROM be_missing' }), serialize.bind({}), serialize.execute({}), serialize.sync()])],
    check: failedWith('SELECT * FROM be_missing', '42P01'),
  },
  {
    name: 'pipelined: an error at Bind, a Parse of the unnamed statement skipped, the next batch binds the unnamed statement',
    cls: 'pipeline',
    as: 'reader',
    sameRows: true,
    steps: [
      wire([
        serialize.parse({ text: 'SELECT 100/$1::int AS x', types: [INT4] }),
        serialize.bind({ values: ['0'] }),
        serialize.execute({}),
        // Skipped by the server: the unnamed statement is still the one above.
        serialize.parse({ text: 'SELECT 2 AS y' }),
        serialize.bind({}),
        serialize.execute({}),
        serialize.sync(),
        serialize.bind({ values: ['4'] }),
        serialize.execute({}),
        serialize.sync(),
      ]),
    ],
    check: (ctx) => {
      assert.deepEqual(ctx.outcomes[0]?.rows, [['25']])
      const codes = ctx.audit.filter((e) => e.type === 'result').map((e) => (e.error as { code?: string } | undefined)?.code ?? e.tag)
      assert.deepEqual(codes, ['22012', 'skipped', 'SELECT 1'])
    },
  },
  {
    name: 'pipelined: an error at Execute, a named Parse skipped, the next batches bind an earlier statement',
    cls: 'pipeline',
    as: 'reader',
    sameRows: true,
    steps: [
      wire([serialize.parse({ name: 'be_s1', text: 'SELECT v FROM be_t WHERE id = $1', types: [INT4] }), serialize.sync()]),
      wire([
        serialize.parse({ text: 'SELECT v / (v - 10) FROM be_t ORDER BY id' }),
        serialize.bind({}),
        serialize.execute({}),
        serialize.parse({ name: 'be_s2', text: 'SELECT 2' }),
        serialize.sync(),
        serialize.bind({ statement: 'be_s1', values: ['2'] }),
        serialize.execute({}),
        serialize.sync(),
        serialize.bind({ statement: 'be_s1', values: ['1'] }),
        serialize.execute({}),
        serialize.sync(),
      ]),
    ],
    check: (ctx) => assert.deepEqual(ctx.outcomes[1]?.rows, [['20'], ['10']]),
  },
  {
    name: 'pipelined: a Close the server skipped after an error leaves the statement, and the next batch binds it',
    cls: 'pipeline',
    as: 'reader',
    sameRows: true,
    steps: [
      wire([serialize.parse({ name: 'be_cs', text: 'SELECT 7 AS seven' }), serialize.sync()]),
      wire([
        serialize.parse({ text: 'SELECT 1/0' }),
        serialize.bind({}),
        serialize.execute({}),
        serialize.close({ type: 'S', name: 'be_cs' }),
        serialize.sync(),
        serialize.bind({ statement: 'be_cs' }),
        serialize.execute({}),
        serialize.sync(),
        serialize.close({ type: 'S', name: 'be_cs' }),
        serialize.sync(),
      ]),
    ],
    check: (ctx) => assert.deepEqual(ctx.outcomes[1]?.rows, [['7']]),
  },
  {
    name: 'an error before the rest of its batch arrived (Flush): later messages of the batch skipped, the next statements attributed and masked',
    cls: 'pipeline',
    as: 'reader',
    steps: [
      wire([serialize.parse({ text: 'SELECT 1/0' }), serialize.bind({}), serialize.execute({}), serialize.flush()], { until: 'E' }),
      wire([
        serialize.parse({ name: 'be_late', text: 'SELECT 2 AS late' }),
        serialize.parse({ text: 'SELECT 3 AS late' }),
        serialize.bind({}),
        serialize.execute({}),
        serialize.sync(),
      ]),
      { sql: 'SELECT email FROM be_c', expect: 'ok' },
      wire([serialize.parse({ text: 'SELECT id, email FROM be_c' }), serialize.bind({}), serialize.execute({}), serialize.sync()]),
      { sql: 'SELECT 4', expect: 'ok', rows: [['4']] },
    ],
    check: all(
      noSecret,
      failedWith('SELECT 1/0', '22012'),
      completed('SELECT email FROM be_c', 'SELECT 1'),
      completed('SELECT 4', 'SELECT 1'),
    ),
  },
  {
    name: 'an error before the rest of its batch arrived: the next batch binds the unnamed statement the skipped Parse did not replace',
    cls: 'pipeline',
    as: 'reader',
    sameRows: true,
    steps: [
      wire([serialize.parse({ text: 'SELECT 1/0' }), serialize.bind({}), serialize.execute({}), serialize.flush()], { until: 'E' }),
      wire([serialize.parse({ text: 'SELECT 3 AS late' }), serialize.sync()]),
      wire([serialize.bind({ values: [] }), serialize.execute({}), serialize.sync()]),
      { sql: 'SELECT 5', expect: 'ok', rows: [['5']] },
    ],
  },
]

describe('PostgreSQL extended-protocol errors and pipelines, gateway against direct', () => {
  let corpus: Corpus
  let policyDir = ''
  before(async () => {
    policyDir = mkdtempSync(join(tmpdir(), 'gh-batch-policy-'))
    for (const f of ['gatehouse.rego', 'guardrails.rego', 'approvals.yaml']) copyFileSync(join(REPO, 'policies', f), join(policyDir, f))
    writeFileSync(join(policyDir, 'masking.yaml'), yaml.dump(MASKING))
    corpus = await Corpus.start({ principals: { reader: [] }, schema: SCHEMA, config: { policies: policyDir } })
  })
  after(async () => {
    await corpus?.stop()
    if (policyDir) rmSync(policyDir, { recursive: true, force: true })
  })

  for (const c of CASES) {
    test(c.name, async () => {
      // Directly on the cluster first: what the client must see through the gateway too.
      const d = await corpus.direct()
      const direct: Outcome[] = []
      try {
        for (const st of c.steps) {
          direct.push(
            st.sql !== undefined
              ? await d.query(st.sql)
              : await d.send(st.wire ?? [], st.readies ?? syncs(st.wire ?? []), 15_000, st.until),
          )
        }
      } finally {
        await d.close()
      }
      const ctx = await corpus.run(c)
      assert.deepEqual(
        ctx.outcomes.map((o) => observed(o, c.sameRows === true)),
        direct.map((o) => observed(o, c.sameRows === true)),
        'the client must see what a direct connection sees',
      )
    })
  }

  test('a driver (node-postgres) running 1/$1 with 0: the audit records 22012, the next query runs', async () => {
    const app = `be-driver-${process.pid}`
    const client = new pg.Client({
      host: '127.0.0.1',
      port: corpus.gw.pgPort,
      database: 'app',
      user: 'reader',
      password: corpus.tokens.get('reader'),
      application_name: app,
    })
    await client.connect()
    try {
      await assert.rejects(client.query('SELECT 1/$1::int AS x', [0]), (err: { code?: string }) => err.code === '22012')
      await assert.rejects(
        client.query({ name: 'be_named', text: 'SELECT 7/$1::int AS x', values: [0] }),
        (err: { code?: string }) => err.code === '22012',
      )
      const ok = await client.query({ name: 'be_named', text: 'SELECT 7/$1::int AS x', values: [7] })
      assert.deepEqual(ok.rows, [{ x: 1 }])
    } finally {
      await client.end()
    }
    const audit = await corpus.auditOf(app)
    const results = audit.filter((e) => e.type === 'result').map((e) => (e.error as { code?: string } | undefined)?.code ?? e.tag)
    assert.deepEqual(results, ['22012', '22012', 'SELECT 1'])
  })
})

function syncs(msgs: readonly Buffer[]): number {
  return msgs.filter((m) => m[0] === 0x53 && m.length === 5).length
}
