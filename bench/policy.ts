// Micro-benchmark of the decision engine with the default bundle: µs per decision for a one-hop
// and a three-hop chain, with the hop cache missing (every statement different) and hitting (the
// same statement again within the second). Run: npx tsc -p . && node dist/bench/policy.js

import { defaultPolicyDir } from '../engine/policy/sources.js'
import { loadPolicySource } from '../engine/policy/bundle.js'
import { PolicyEngine } from '../engine/policy/engine.js'
import { buildInputs } from '../engine/decide.js'
import type { DecisionRequest, Principal } from '../engine/types.js'

const alice: Principal = { id: 'user:alice', kind: 'user', groups: ['analysts', 'writers'], scope: [] }
const planner: Principal = { id: 'agent:planner', kind: 'agent', groups: [], scope: ['connection:app', 'sql.*'] }
const reader: Principal = { id: 'agent:reader', kind: 'agent', groups: [], scope: ['sql.read'] }
const connection = { name: 'app', protocol: 'postgres', labels: { env: 'prod' } }

function request(chain: Principal[], i: number): DecisionRequest {
  return {
    identity: { chain, tokenIds: chain.map((p) => p.id), expiresAt: 0 },
    connection,
    action: 'sql.read',
    command: {
      sql: `SELECT abalance FROM pgbench_accounts WHERE aid = ${i}`,
      kind: 'select',
      tables: ['public.pgbench_accounts'],
      write_tables: [],
      functions: [],
      has_where: true,
      statements: 1,
    },
  }
}

async function measure(engine: PolicyEngine, label: string, make: (i: number) => DecisionRequest, n: number): Promise<number> {
  for (let i = 0; i < 5000; i++) await engine.decide(make(i))
  const reqs = Array.from({ length: n }, (_, i) => make(i + 5000))
  const t = process.hrtime.bigint()
  for (const r of reqs) {
    const d = await engine.decide(r)
    if (d.effect !== 'allow') throw new Error(`unexpected ${d.effect}`)
  }
  const us = Number(process.hrtime.bigint() - t) / 1000 / n
  process.stdout.write(`${label.padEnd(34)} ${us.toFixed(2).padStart(7)} µs/decision\n`)
  return us
}

const bundle = await loadPolicySource(defaultPolicyDir())
const engine = new PolicyEngine(bundle)
process.stdout.write(`default bundle ${bundle.version}, node ${process.version}\n`)
for (const chain of [[alice], [alice, planner, reader]]) {
  const hops = `${chain.length} hop${chain.length > 1 ? 's' : ''}`
  await measure(engine, `${hops}, cache miss (distinct SQL)`, (i) => request(chain, i), 50_000)
  const same = request(chain, 1)
  await measure(engine, `${hops}, cache hit (same SQL)`, () => same, 200_000)
}
// The JSON the engine assembles is buildInputs' document, key for key.
const check = buildInputs(request([alice, planner], 7))
process.stdout.write(`input document keys: ${Object.keys(check[0] ?? {}).join(', ')}\n`)
