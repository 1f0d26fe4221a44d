// Decision time per SQL statement as the PostgreSQL proxy pays it: classification (shape cache hit,
// or a cold parse with the real grammar) plus the per-hop Rego/WASM decision with the default
// bundle, for a one-hop and a three-hop chain. Prints µs per statement; writes nothing.
// Run: npx tsc -p . && node dist/bench/decisions.js

import { loadPolicySource } from '../engine/policy/bundle.js'
import { PolicyEngine } from '../engine/policy/engine.js'
import { defaultPolicyDir } from '../engine/policy/sources.js'
import { createSqlAnalyzer, qualify, type SqlAnalyzer } from '../proxies/postgres/sql/index.js'
import type { DecisionRequest, Principal } from '../engine/types.js'

const alice: Principal = { id: 'user:alice', kind: 'user', groups: ['writers'], scope: [] }
const a1: Principal = { id: 'agent:planner', kind: 'agent', groups: [], scope: ['connection:bench', 'sql.*'] }
const a2: Principal = { id: 'agent:reader', kind: 'agent', groups: [], scope: ['sql.read'] }
const connection = { name: 'bench', protocol: 'postgres', labels: { env: 'prod' } }
const PATH = [['$user', 'public']]

function request(analyzer: SqlAnalyzer, chain: Principal[], sql: string): DecisionRequest {
  const f = analyzer.analyze(sql).statements[0]
  if (!f) throw new Error('no statement')
  return {
    identity: { chain, tokenIds: chain.map((p) => p.id), expiresAt: 0 },
    connection,
    action: f.action,
    command: {
      sql: f.sql,
      kind: f.kind,
      tables: f.tables.flatMap((r) => qualify(r, PATH, 'postgres', null)),
      write_tables: [],
      functions: f.functions,
      has_where: f.hasWhere,
      statements: 1,
    },
  }
}

async function measure(label: string, n: number, step: (i: number) => Promise<void>): Promise<void> {
  for (let i = 0; i < 3000; i++) await step(-i - 1)
  const t = process.hrtime.bigint()
  for (let i = 0; i < n; i++) await step(i)
  const us = Number(process.hrtime.bigint() - t) / n / 1000
  process.stdout.write(`| ${label} | ${us.toFixed(1)} |\n`)
}

async function main(): Promise<void> {
  const engine = new PolicyEngine(await loadPolicySource(defaultPolicyDir()))
  const analyzer = await createSqlAnalyzer(100_000)
  process.stdout.write('| per statement: classify + decide | µs |\n|---|---:|\n')
  for (const [name, chain] of [
    ['1 hop', [alice]],
    ['3 hops', [alice, a1, a2]],
  ] as const) {
    // Cached shape: the literal changes every time (as in pgbench -S), the shape does not.
    await measure(`${name}, cached shape`, 20_000, async (i) => {
      const d = await engine.decide(request(analyzer, [...chain], `SELECT abalance FROM pgbench_accounts WHERE aid = ${i + 1000000}`))
      if (d.effect !== 'allow') throw new Error(`unexpected ${d.effect}`)
    })
    // Cold parse: every statement a new shape (a new alias), so the grammar runs every time.
    await measure(`${name}, cold parse`, 5_000, async (i) => {
      const d = await engine.decide(
        request(
          analyzer,
          [...chain],
          `SELECT abalance AS c${name.length}_${i + 1000000} FROM pgbench_accounts a JOIN pgbench_branches b USING (bid) WHERE aid = 1`,
        ),
      )
      if (d.effect !== 'allow') throw new Error(`unexpected ${d.effect}`)
    })
  }
  process.stdout.write(`\nshape cache: ${analyzer.hits} hits, ${analyzer.misses} misses\n`)
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
  process.exit(1)
})
