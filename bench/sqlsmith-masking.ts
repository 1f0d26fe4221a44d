// How often masking refuses ordinary-looking random queries: SQLsmith's queries over a small schema
// with masked columns, replayed through a real gateway as a cleared chain and as a reader with no
// groups, with `strict_predicates` off and on. Also a leak hunt: every byte the reader receives is
// searched for the seeded secrets.
//
//   node dist/bench/sqlsmith-masking.js [--queries N] [--seed S] [--timeout-ms T] [--catalog]
//
// Needs Debian's `sqlsmith` (apt-get install sqlsmith) and the PostgreSQL 15 server programs.
// Method: a private PostgreSQL cluster (statement_timeout set on the database, so the server bounds
// every statement whatever the client sends); `sqlsmith --dry-run --exclude-catalog --seed S`
// generates N queries from that cluster's schema (with `--catalog`, system catalogs too). Each
// query runs once per chain over the simple protocol, one open session per chain. Both chains are
// outside `writers`, so writes (INSERT/UPDATE/DELETE/MERGE, SELECT … FOR UPDATE) are refused by
// policy for both and the database stays as seeded. Classes per chain: allowed (the server ran it,
// no error), refused by the gateway (42501 `gatehouse: …`, grouped by rule and reason), server
// errors (other SQLSTATEs, including the withheld text of an error on masked data, and timeouts).

import { spawnSync } from 'node:child_process'
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import yaml from 'js-yaml'
import pg from 'pg'
import { BIN, REPO, TestGateway } from '../test/helpers/gateway.js'
import { PgCluster } from '../test/helpers/pgserver.js'
import { arg } from './common.js'

const DB = 'shop'
const CUSTOMERS = 60

/** Deterministic secrets, distinctive enough that a byte match is not chance. */
const email = (i: number): string => `cust${i}.q7x${(i * 7919) % 9973}@secretmail.example`
const ssn = (i: number): string =>
  `${String(100 + ((i * 37) % 800)).padStart(3, '0')}-${String(10 + ((i * 13) % 89)).padStart(2, '0')}-${String(1000 + ((i * 7727) % 8999)).padStart(4, '0')}`

const SCHEMA = `
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text, ssn text, city text, vip boolean, created date);
CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers(id), amount numeric(10,2), status text, placed timestamptz);
CREATE TABLE products (id int PRIMARY KEY, title text, price numeric(10,2), tags text[]);
CREATE VIEW customer_orders AS
  SELECT c.id AS customer_id, c.name, c.email, c.city, o.id AS order_id, o.amount, o.status
  FROM customers c JOIN orders o ON o.customer_id = c.id;
INSERT INTO customers VALUES ${Array.from(
  { length: CUSTOMERS },
  (_, k) =>
    `(${k + 1}, 'Name ${k + 1}', '${email(k + 1)}', '${ssn(k + 1)}', '${['Oslo', 'Lyon', 'Porto', 'Graz'][k % 4]}', ${k % 5 === 0}, date '2024-01-01' + ${k})`,
).join(', ')};
INSERT INTO orders SELECT g, 1 + g % ${CUSTOMERS}, (g * 3.7)::numeric(10,2), (ARRAY['new','paid','shipped'])[1 + g % 3], timestamptz '2024-03-01' + g * interval '1 hour' FROM generate_series(1, 300) g;
INSERT INTO products SELECT g, 'product ' || g, (g * 1.5)::numeric(10,2), ARRAY['t' || g % 4] FROM generate_series(1, 40) g;
ANALYZE;
`

/** Every secret in the forms a careless rewrite could carry it: as is, upper case, reversed, hex, base64. */
function secretNeedles(): { secret: string; needle: Buffer }[] {
  const out: { secret: string; needle: Buffer }[] = []
  for (let i = 1; i <= CUSTOMERS; i++)
    for (const s of [email(i), ssn(i)]) {
      for (const form of [s, s.toUpperCase(), [...s].reverse().join(''), Buffer.from(s).toString('hex'), Buffer.from(s).toString('base64')])
        out.push({ secret: s, needle: Buffer.from(form) })
    }
  return out
}

interface ChainResult {
  allowed: number
  refused: number
  serverErrors: number
  timeouts: number
  sessionsLost: number
  /** Responses containing a seeded secret in any form (expected for the cleared chain only). */
  secretResponses: number
  rules: Map<string, number>
  refusedQueries: Set<number>
  allowedQueries: Set<number>
  /** Per query: 'ok', 'refused', or the server's SQLSTATE (to list queries whose outcome differs between chains). */
  outcomes: string[]
  leaks: { query: string; secret: string }[]
  ms: number
}

/** A refusal's rule and reason with names and numbers folded, so similar refusals group together. */
function ruleKey(message: string): string {
  const m = /^gatehouse: denied by (\S+)(?: \([^)]*\))?: (.*)$/s.exec(message)
  const rule = m?.[1] ?? 'other'
  const reason = (m?.[2] ?? message)
    .replace(/"[^"]*"/g, 'X')
    .replace(/\b[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?\b/gi, 'X')
    .replace(/\b(user|agent|service):\S+/g, '$1:X')
    .replace(/\b\d+\b/g, 'N')
  return `${rule}: ${reason.slice(0, 110)}`
}

async function runChain(gw: TestGateway, token: string, queries: readonly string[], reader: boolean): Promise<ChainResult> {
  const needles = reader ? secretNeedles() : secretNeedles().filter((_, i) => i % 5 === 0)
  const res: ChainResult = {
    allowed: 0,
    refused: 0,
    serverErrors: 0,
    timeouts: 0,
    sessionsLost: 0,
    secretResponses: 0,
    rules: new Map(),
    refusedQueries: new Set(),
    allowedQueries: new Set(),
    outcomes: [],
    leaks: [],
    ms: 0,
  }
  let received: Buffer[] = []
  let client: pg.Client | null = null
  const open = async (): Promise<pg.Client> => {
    const c = new pg.Client({ host: '127.0.0.1', port: gw.pgPort, database: 'app', user: 'bench', password: token, query_timeout: 15_000 })
    c.on('error', () => undefined)
    await c.connect()
    // The raw server stream, so the search covers every byte (errors, notices, row descriptions), not just parsed rows.
    const stream = (c as unknown as { connection: { stream: NodeJS.ReadableStream } }).connection.stream
    stream.on('data', (d: Buffer) => received.push(d))
    return c
  }
  const t0 = performance.now()
  for (const [i, q] of queries.entries()) {
    client ??= await open()
    received = []
    try {
      await client.query(q)
      res.allowed++
      res.allowedQueries.add(i)
      res.outcomes[i] = 'ok'
    } catch (e) {
      const err = e as { code?: unknown; message?: unknown }
      const code = typeof err.code === 'string' ? err.code : ''
      const message = typeof err.message === 'string' ? err.message : String(e)
      if (code === '42501' && message.startsWith('gatehouse:') && !message.includes('withheld')) {
        res.refused++
        res.refusedQueries.add(i)
        res.outcomes[i] = 'refused'
        const k = ruleKey(message)
        res.rules.set(k, (res.rules.get(k) ?? 0) + 1)
      } else if (code === '57014') {
        res.timeouts++
        res.outcomes[i] = code
      } else if (code) {
        res.serverErrors++
        res.outcomes[i] = `${code} ${message.slice(0, 100)}`
      } else {
        // No SQLSTATE: the session ended or the client gave up; count it and start a fresh one.
        res.sessionsLost++
        await client.end().catch(() => undefined)
        client = null
      }
    }
    const all = Buffer.concat(received)
    const hit = needles.find((n) => all.includes(n.needle))
    if (hit) {
      res.secretResponses++
      if (reader) res.leaks.push({ query: q, secret: hit.secret })
    }
  }
  res.ms = performance.now() - t0
  await client?.end().catch(() => undefined)
  return res
}

/** A token through the CLI, with a longer patience than the test helper's (this machine is shared and loaded). */
function token(gw: TestGateway, subject: string, args: readonly string[] = []): string {
  const r = spawnSync(process.execPath, [BIN, 'token', 'create', '--subject', subject, ...args, '--config', gw.configFile], {
    encoding: 'utf8',
    timeout: 180_000,
  })
  if (r.status !== 0) throw new Error(`token create failed: ${r.stderr}`)
  return r.stdout.trim()
}

function generate(cluster: PgCluster, n: number, seed: number, catalog: boolean): string[] {
  const r = spawnSync(
    'sqlsmith',
    [
      '--dry-run',
      `--max-queries=${n}`,
      `--seed=${seed}`,
      ...(catalog ? [] : ['--exclude-catalog']),
      `--target=host=127.0.0.1 port=${cluster.port} dbname=${DB} user=postgres`,
    ],
    { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024, timeout: 120_000 },
  )
  if (r.status !== 0) throw new Error(`sqlsmith failed (${r.status}): ${r.stderr}`)
  // --dry-run prints each query followed by a line holding ';'.
  const qs = r.stdout
    .split(/;\n/)
    .map((q) => q.trim())
    .filter(Boolean)
  if (qs.length < n) throw new Error(`sqlsmith produced ${qs.length} queries, wanted ${n}`)
  return qs.slice(0, n)
}

async function main(): Promise<void> {
  const n = arg('--queries', 600)
  const seed = arg('--seed', 17)
  const timeoutMs = arg('--timeout-ms', 2000)
  const catalog = process.argv.includes('--catalog')
  const cluster = await PgCluster.start()
  const policyDir = mkdtempSync(join(tmpdir(), 'gh-bench-sqlsmith-'))
  let gw: TestGateway | null = null
  try {
    cluster.sql(`CREATE DATABASE ${DB}`)
    cluster.sql(SCHEMA, DB)
    cluster.sql(`ALTER DATABASE ${DB} SET statement_timeout = ${timeoutMs}`)
    const tg = performance.now()
    const queries = generate(cluster, n, seed, catalog)
    console.log(
      `sqlsmith: ${queries.length} queries (seed ${seed}${catalog ? ', catalogs included' : ', --exclude-catalog'}) in ${((performance.now() - tg) / 1000).toFixed(1)} s`,
    )
    const touching = queries.filter((q) => /\b(customers|customer_orders)\b/.test(q)).length
    console.log(`  ${touching} of them name customers or customer_orders (the relations with masked columns)`)
    const before = cluster.sql(
      "SELECT (SELECT count(*) FROM customers) || '/' || (SELECT count(*) FROM orders) || '/' || (SELECT count(*) FROM products)",
      DB,
    )

    for (const f of ['gatehouse.rego', 'guardrails.rego', 'approvals.yaml']) copyFileSync(join(REPO, 'policies', f), join(policyDir, f))
    const rows: [string, ChainResult][] = []
    const leaks: { mode: string; query: string; secret: string }[] = []
    for (const strict of [false, true]) {
      writeFileSync(
        join(policyDir, 'masking.yaml'),
        yaml.dump({
          strict_predicates: strict,
          rules: [
            { name: 'emails', columns: [`public.customers.email`], strategy: 'partial', keep: 4, clear_for: ['pii-readers'] },
            { name: 'ssns', columns: [`public.customers.ssn`], strategy: 'redact', clear_for: ['pii-readers'] },
          ],
        }),
      )
      gw = await TestGateway.start({
        connections: [{ name: 'app', protocol: 'postgres', address: `127.0.0.1:${cluster.port}`, database: DB, user: 'postgres' }],
        config: { policies: policyDir },
      })
      const mode = `strict ${strict ? 'on' : 'off'}`
      const clearedToken = token(gw, 'user:pat', ['--group', 'pii-readers'])
      const readerToken = token(gw, 'user:mallory')
      const cleared = await runChain(gw, clearedToken, queries, false)
      rows.push([`${mode}, cleared (pii-readers)`, cleared])
      console.log(`  ${mode}, cleared chain done in ${(cleared.ms / 1000).toFixed(0)} s`)
      const reader = await runChain(gw, readerToken, queries, true)
      rows.push([`${mode}, reader (no groups)`, reader])
      for (const l of reader.leaks) leaks.push({ mode, ...l })
      const extra = [...reader.refusedQueries].filter((i) => !cleared.refusedQueries.has(i)).length
      const lost = [...reader.refusedQueries].filter((i) => cleared.allowedQueries.has(i)).length
      console.log(
        `${mode}: (reader refusals − cleared refusals) / total = (${reader.refused} − ${cleared.refused}) / ${queries.length} = ${((100 * (reader.refused - cleared.refused)) / queries.length).toFixed(1)} %; refused for the reader only: ${extra} (of which the cleared chain ran without error: ${lost}, ${((100 * lost) / queries.length).toFixed(1)} %)`,
      )
      const top = [...reader.rules]
        .filter(([k]) => !cleared.rules.has(k) || (cleared.rules.get(k) ?? 0) < (reader.rules.get(k) ?? 0))
        .sort((a, b) => b[1] - a[1])
      console.log(`  reader's refusals not matched by the cleared chain's, by rule (reader count / cleared count):`)
      for (const [k, v] of top.slice(0, 12))
        console.log(`    ${String(v).padStart(4)} / ${String(cleared.rules.get(k) ?? 0).padStart(4)}  ${k}`)
      const differ = queries
        .map((q, i) => [q, cleared.outcomes[i] ?? 'lost', reader.outcomes[i] ?? 'lost'] as const)
        .filter(([, a, b]) => a.split(' ')[0] !== b.split(' ')[0] && b !== 'refused')
      if (differ.length > 0) console.log(`  ${differ.length} queries with another outcome for the reader than refused (cleared → reader):`)
      for (const [q, a, b] of differ.slice(0, 5)) console.log(`    ${a} → ${b}\n      ${q.replace(/\s+/g, ' ').slice(0, 600)}`)
      await gw.cleanup()
      gw = null
    }

    console.log('')
    console.log('| chain | allowed | refused by gateway | server errors | timeouts | sessions lost | responses with a secret | wall |')
    console.log('|---|---:|---:|---:|---:|---:|---:|---:|')
    for (const [name, r] of rows)
      console.log(
        `| ${name} | ${r.allowed} | ${r.refused} | ${r.serverErrors} | ${r.timeouts} | ${r.sessionsLost} | ${r.secretResponses} | ${(r.ms / 1000).toFixed(0)} s |`,
      )
    console.log('')
    console.log("cleared chain's refusal rules (strict off):")
    for (const [k, v] of [...(rows[0]?.[1].rules ?? [])].sort((a, b) => b[1] - a[1]).slice(0, 8))
      console.log(`  ${String(v).padStart(4)}  ${k}`)
    const after = cluster.sql(
      "SELECT (SELECT count(*) FROM customers) || '/' || (SELECT count(*) FROM orders) || '/' || (SELECT count(*) FROM products)",
      DB,
    )
    console.log(`row counts customers/orders/products before ${before}, after ${after}`)
    if (leaks.length > 0) {
      console.log(`\n!!! MASKING BREAK: ${leaks.length} reader responses carried a seeded secret !!!`)
      for (const l of leaks.slice(0, 20)) console.log(`--- ${l.mode}, secret ${l.secret}:\n${l.query}\n`)
      process.exitCode = 1
    } else console.log('\nno seeded secret in any form reached the reader')
  } finally {
    await gw?.cleanup()
    rmSync(policyDir, { recursive: true, force: true })
    cluster.stop()
  }
}

await main()
