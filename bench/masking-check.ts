// What the per-statement catalog check costs a masked session, and that statements over tables
// without masked columns do not pay it.
//
//   node dist/bench/masking-check.js [--queries N] [--rounds N]
//
// Method: a real gateway on the machine's PostgreSQL, a masking rule on t.email, one session of a
// chain that sees it masked and one of a cleared chain. Each round times N one-row queries
// (simple protocol, one at a time) of each kind, kinds interleaved round by round; reported: the
// median over rounds of the mean latency per query.
//   plain  — SELECT v FROM p WHERE id = $n   (a table without masked columns: no check)
//   view   — SELECT note FROM vt WHERE id = … (a view: checked before each statement)
//   masked — SELECT email FROM t WHERE id = … (a masked relation: checked, and masked)
// Writes nothing but its scratch database, dropped at the end.

import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import yaml from 'js-yaml'
import pg from 'pg'
import { LOCAL_PG, REPO, TestGateway } from '../test/helpers/gateway.js'
import { admin, arg } from './common.js'

const DB = 'gh_bench_mcheck'

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0

async function main(): Promise<void> {
  const queries = arg('--queries', 500)
  const rounds = arg('--rounds', 5)
  admin(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`, 'postgres')
  admin(`CREATE DATABASE ${DB}`, 'postgres')
  admin(
    "CREATE TABLE t (id int PRIMARY KEY, email text, note text); CREATE TABLE p (id int PRIMARY KEY, v text); CREATE VIEW vt AS SELECT id, note FROM t; INSERT INTO t SELECT g, 'u' || g || '@example.com', 'n' || g FROM generate_series(1, 1000) g; INSERT INTO p SELECT g, 'v' || g FROM generate_series(1, 1000) g",
    DB,
  )
  const policyDir = mkdtempSync(join(tmpdir(), 'gh-bench-mcheck-'))
  for (const f of ['gatehouse.rego', 'guardrails.rego', 'approvals.yaml']) copyFileSync(join(REPO, 'policies', f), join(policyDir, f))
  writeFileSync(
    join(policyDir, 'masking.yaml'),
    yaml.dump({ rules: [{ name: 'emails', columns: ['public.t.email'], strategy: 'partial', keep: 4, clear_for: ['pii-readers'] }] }),
  )
  const gw = await TestGateway.start({ connections: [{ ...LOCAL_PG, database: DB }], config: { policies: policyDir } })
  const clients: pg.Client[] = []
  try {
    const open = async (token: string): Promise<pg.Client> => {
      const c = new pg.Client({ host: '127.0.0.1', port: gw.pgPort, database: 'app', user: 'bench', password: token })
      await c.connect()
      clients.push(c)
      return c
    }
    const masked = await open(gw.token('user:mallory'))
    const cleared = await open(gw.token('user:pat', ['--group', 'pii-readers']))
    const kinds: [string, pg.Client, (i: number) => string][] = [
      ['plain, masked chain (no check)', masked, (i) => `SELECT v FROM p WHERE id = ${(i % 1000) + 1}`],
      ['view, masked chain (checked)', masked, (i) => `SELECT note FROM vt WHERE id = ${(i % 1000) + 1}`],
      ['masked relation, masked chain (checked, masked)', masked, (i) => `SELECT email FROM t WHERE id = ${(i % 1000) + 1}`],
      ['plain, cleared chain (no masking)', cleared, (i) => `SELECT v FROM p WHERE id = ${(i % 1000) + 1}`],
      ['view, cleared chain (no masking)', cleared, (i) => `SELECT note FROM vt WHERE id = ${(i % 1000) + 1}`],
    ]
    const results = new Map<string, number[]>()
    for (const [, c, q] of kinds) for (let i = 0; i < 50; i++) await c.query(q(i)) // warm up
    for (let r = 0; r < rounds; r++) {
      for (const [name, c, q] of kinds) {
        const t0 = performance.now()
        for (let i = 0; i < queries; i++) await c.query(q(i))
        const us = ((performance.now() - t0) * 1000) / queries
        results.set(name, [...(results.get(name) ?? []), us])
      }
    }
    console.log(`catalog check: ${queries} queries × ${rounds} rounds per kind, median of the rounds' mean latency`)
    for (const [name] of kinds)
      console.log(
        `  ${name.padEnd(52)} ${median(results.get(name) ?? [])
          .toFixed(0)
          .padStart(6)} µs/query`,
      )
  } finally {
    for (const c of clients) await c.end().catch(() => undefined)
    await gw.cleanup()
    rmSync(policyDir, { recursive: true, force: true })
    admin(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`, 'postgres')
  }
}

await main()
