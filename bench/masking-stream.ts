// A large SELECT streamed through Gatehouse with masking on, side by side with a direct connection
// in the same run (target: at least 60% of direct bytes per second).
//
//   node dist/bench/masking-stream.js [--rows N] [--runs N] [--ssn-strategy hash|redact|partial|null]
//
// Method: a table of 10 columns (2 of them classified: an e-mail with `partial`, an SSN with
// `hash`) and N rows (default 300,000) in a scratch database; `psql -At -c 'SELECT * FROM t'`
// writing to /dev/null, timed from spawn to exit, runs alternated across three targets: direct,
// Gatehouse with a caller who sees clear values (rows forwarded untouched), and Gatehouse with a
// caller who sees them masked (every row rewritten). Medians reported; the result bytes are the
// size of the direct run's output. Everything listens on loopback and is stopped at the end.

import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import yaml from 'js-yaml'
import { REPO, TestGateway } from '../test/helpers/gateway.js'
import { admin, arg } from './common.js'

const DB = 'gh_bench_masking'

function timed(conninfo: string, sql: string): Promise<{ ms: number; ok: boolean; err: string }> {
  return new Promise((done) => {
    const t0 = process.hrtime.bigint()
    const p = spawn('psql', ['-X', '-At', '-o', '/dev/null', '-d', conninfo, '-c', sql], { stdio: ['ignore', 'ignore', 'pipe'] })
    let err = ''
    p.stderr.on('data', (d: Buffer) => {
      err += d.toString()
    })
    p.on('close', (code) => done({ ms: Number(process.hrtime.bigint() - t0) / 1e6, ok: code === 0, err }))
  })
}

/** utime + stime of a process in milliseconds (clock ticks of 10 ms), from /proc. */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(rest[11]) + Number(rest[12])) * 10
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)] ?? 0
}

async function main(): Promise<void> {
  const rows = arg('--rows', 300_000)
  const runs = arg('--runs', 3)
  // The SSN column's strategy: hash (a keyed HMAC per value, the costliest) or redact/partial/null.
  const si = process.argv.indexOf('--ssn-strategy')
  const strategy = si >= 0 ? (process.argv[si + 1] ?? 'hash') : 'hash'
  admin(`DROP DATABASE IF EXISTS ${DB}`, 'test')
  admin(`CREATE DATABASE ${DB}`, 'test')
  admin(
    `CREATE TABLE t (id int, a text, b text, c text, d int, e text, email text, ssn text, f timestamptz, g text);
     INSERT INTO t SELECT i, md5(i::text), 'alpha beta', 'gamma', i * 7, 'x' || i, 'user' || i || '@example.com',
       lpad((i % 1000)::text, 3, '0') || '-45-' || lpad((i % 10000)::text, 4, '0'), now(), 'note ' || i FROM generate_series(1, ${rows}) i`,
    DB,
  )
  const dir = mkdtempSync(join(tmpdir(), 'gh-bench-mask-'))
  mkdirPolicies(dir, strategy)
  // GH_BENCH_CPU_PROF=DIR profiles the gateway (summarise with dist/bench/cpuprofile.js).
  const prof = process.env.GH_BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.GH_BENCH_CPU_PROF}`] : []
  let gw: TestGateway | null = null
  try {
    gw = await TestGateway.start({
      connections: [{ name: 'app', protocol: 'postgres', address: '127.0.0.1:5432', database: DB, user: 'postgres' }],
      config: { policies: join(dir, 'policies') },
      nodeArgs: prof,
    })
    const g = gw
    const port = g.pgPort
    const token = (...groups: string[]): string =>
      g.token(
        'user:bench',
        groups.flatMap((x) => ['--group', x]),
      )
    const targets = {
      direct: `host=127.0.0.1 port=5432 dbname=${DB} user=postgres sslmode=disable`,
      clear: `host=127.0.0.1 port=${port} dbname=app user=b sslmode=disable password=${token('pii-readers')}`,
      masked: `host=127.0.0.1 port=${port} dbname=app user=b sslmode=disable password=${token()}`,
    }
    const sql = 'SELECT * FROM t'
    const bytes = spawnSync('psql', ['-X', '-At', '-d', targets.direct, '-c', sql], { maxBuffer: 2 ** 31 }).stdout.length
    const samples: Record<keyof typeof targets, number[]> = { direct: [], clear: [], masked: [] }
    const cpu: Record<keyof typeof targets, number[]> = { direct: [], clear: [], masked: [] }
    const pid = g.proc?.pid ?? 0
    for (const conninfo of Object.values(targets)) await timed(conninfo, sql) // warm up
    for (let r = 0; r < runs; r++) {
      for (const [name, conninfo] of Object.entries(targets) as [keyof typeof targets, string][]) {
        const c0 = cpuMs(pid)
        const t = await timed(conninfo, sql)
        if (!t.ok) throw new Error(`${name}: ${t.err}`)
        samples[name].push(t.ms)
        cpu[name].push(cpuMs(pid) - c0)
      }
    }
    const mbps = (ms: number): number => bytes / 1e6 / (ms / 1000)
    const d = median(samples.direct)
    const lines = [
      `Streaming ${rows.toLocaleString('en')} rows × 10 columns (2 masked: e-mail partial, SSN ${strategy}), ${(bytes / 1e6).toFixed(1)} MB of psql output, median of ${runs}:`,
      '',
      '| target | time (ms) | MB/s | vs direct | gateway CPU (ms) |',
      '|---|---:|---:|---:|---:|',
      ...(['direct', 'clear', 'masked'] as const).map((k) => {
        const m = median(samples[k])
        const label =
          k === 'direct'
            ? 'direct'
            : k === 'clear'
              ? 'Gatehouse, caller sees clear values (rows untouched)'
              : 'Gatehouse, masking 2 of 10 columns'
        return `| ${label} | ${m.toFixed(0)} | ${mbps(m).toFixed(1)} | ${(d / m).toFixed(2)}× | ${k === 'direct' ? '–' : median(cpu[k]).toFixed(0)} |`
      }),
    ]
    process.stdout.write(`${lines.join('\n')}\n`)
  } finally {
    await gw?.cleanup()
    rmSync(dir, { recursive: true, force: true })
    admin(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`, 'test')
  }
}

function mkdirPolicies(dir: string, ssnStrategy: string): void {
  const p = join(dir, 'policies')
  spawnSync('mkdir', ['-p', p])
  for (const f of ['gatehouse.rego', 'guardrails.rego', 'approvals.yaml', 'mcp.rego']) {
    if (existsSync(join(REPO, 'policies', f))) writeFileSync(join(p, f), readFileSync(join(REPO, 'policies', f)))
  }
  writeFileSync(
    join(p, 'masking.yaml'),
    yaml.dump({
      rules: [
        { name: 'emails', columns: ['*.email'], strategy: 'partial', keep: 4, clear_for: ['pii-readers'] },
        { name: 'ssn', columns: ['*.ssn'], strategy: ssnStrategy, clear_for: ['pii-readers'] },
      ],
    }),
  )
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`)
  process.exit(1)
})
