// Large query texts through Gatehouse against a direct connection: the time per query of 70 KB,
// 500 KB and 2 MB texts, in two forms — one long string literal, and a VALUES list of many small
// rows (many tokens: what the classifier, the shape and the audit line pay per token) — over one
// open connection each (node-postgres, simple protocol), runs alternated, medians reported; and the
// gateway process's own CPU time per query (from /proc: less disturbed by other load than wall time).
//
//   node dist/bench/large-query.js [--runs N] [--form literal|values] [--sizes 70,500,2048]
//
// Starts its own gateway (default policies, the machine's PostgreSQL at 127.0.0.1:5432 as
// connection `app`) and stops it at the end. GH_BENCH_CPU_PROF=DIR profiles the gateway
// (summarise with dist/bench/cpuprofile.js; GH_BENCH_CPU_PROF_INTERVAL=µs sets the sampling interval). Prints a markdown table; it is copied into
// BENCHMARKS.md by hand.

import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import yaml from 'js-yaml'
import pg from 'pg'

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const BIN = join(REPO, 'cli/bin/gatehouse.js')

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(name)
  const v = i >= 0 ? Number(process.argv[i + 1]) : def
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name} needs a positive integer`)
  return v
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)] ?? 0
}

/** A query of about `bytes` bytes: one string literal. */
function literalQuery(bytes: number): string {
  return `SELECT length('${'x'.repeat(bytes - 26)}') AS n`
}

/** A query of about `bytes` bytes: a VALUES list of small rows (about 20 bytes and 6 tokens each). */
function valuesQuery(bytes: number): string {
  const rows: string[] = []
  let size = 60
  for (let i = 0; size < bytes; i++) {
    const r = `(${i},'v${i % 1000}')`
    rows.push(r)
    size += r.length + 1
  }
  return `SELECT count(*) AS n FROM (VALUES ${rows.join(',')}) AS v(a, b)`
}

/** CPU time (user + system, ms) a process has used so far, from /proc (Linux; 0 elsewhere). */
function cpuMs(pid: number | undefined): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    // Fields 14 and 15 (utime, stime) in clock ticks of 10 ms.
    return (Number(f[11]) + Number(f[12])) * 10
  } catch {
    return 0
  }
}

async function time(c: pg.Client, sql: string): Promise<number> {
  const t0 = performance.now()
  await c.query(sql)
  return performance.now() - t0
}

async function main(): Promise<void> {
  const runs = arg('--runs', 7)
  const dir = mkdtempSync(join(tmpdir(), 'gh-bench-large-'))
  let server: ChildProcess | null = null
  const clients: pg.Client[] = []
  try {
    const configFile = join(dir, 'gatehouse.yaml')
    writeFileSync(
      configFile,
      yaml.dump({
        data_dir: join(dir, 'data'),
        listen: { api: '127.0.0.1:0', postgres: '127.0.0.1:0' },
        log_level: 'warn',
        connections: [{ name: 'app', protocol: 'postgres', address: '127.0.0.1:5432', database: 'test', user: 'postgres' }],
      }),
    )
    const interval = process.env.GH_BENCH_CPU_PROF_INTERVAL
    const prof = process.env.GH_BENCH_CPU_PROF
      ? ['--cpu-prof', `--cpu-prof-dir=${process.env.GH_BENCH_CPU_PROF}`, ...(interval ? [`--cpu-prof-interval=${interval}`] : [])]
      : []
    server = spawn(process.execPath, [...prof, BIN, 'serve', '--config', configFile], { stdio: 'ignore' })
    const runFile = join(dir, 'data', 'run.json')
    for (let i = 0; i < 1200 && !existsSync(runFile); i++) await new Promise((r) => setTimeout(r, 50))
    const info = JSON.parse(readFileSync(runFile, 'utf8')) as { listeners: Record<string, string> }
    const listen = info.listeners.postgres ?? ''
    const port = Number(listen.slice(listen.lastIndexOf(':') + 1))
    const tok = spawnSync(process.execPath, [BIN, 'token', 'create', '--config', configFile, '--subject', 'user:bench'], {
      encoding: 'utf8',
    })
    if (tok.status !== 0) throw new Error(tok.stderr)
    const direct = new pg.Client({ host: '127.0.0.1', port: 5432, database: 'test', user: 'postgres' })
    const gateway = new pg.Client({ host: '127.0.0.1', port, database: 'app', user: 'bench', password: tok.stdout.trim() })
    clients.push(direct, gateway)
    await direct.connect()
    await gateway.connect()

    const lines = [
      `Query texts sent with the simple protocol over one open connection, median of ${runs} (runs alternated):`,
      '',
      '| query | size | direct (ms) | gateway (ms) | gateway / direct | first: direct / gateway (ms) | gateway CPU per query (ms) |',
      '|---|---:|---:|---:|---:|---:|---:|',
    ]
    const fi = process.argv.indexOf('--form')
    const only = fi >= 0 ? process.argv[fi + 1] : null
    const si = process.argv.indexOf('--sizes')
    const sizes = (si >= 0 ? (process.argv[si + 1] ?? '') : '70,500,2048').split(',').map(Number)
    for (const [key, form, build] of [
      ['literal', 'one string literal', literalQuery],
      ['values', 'VALUES list', valuesQuery],
    ] as const) {
      if (only !== null && only !== key) continue
      for (const kb of sizes) {
        const sql = build(kb * 1024)
        // Warm-up: the first of each text pays for JIT and first-time allocations on both paths,
        // and on the gateway for the first parse of its shape (reported apart).
        const firstDirect = await time(direct, sql)
        const firstGateway = await time(gateway, sql)
        const d: number[] = []
        const g: number[] = []
        let cpu = 0
        for (let r = 0; r < runs; r++) {
          d.push(await time(direct, sql))
          const c0 = cpuMs(server.pid)
          g.push(await time(gateway, sql))
          cpu += cpuMs(server.pid) - c0
        }
        const md = median(d)
        const mg = median(g)
        const size = kb >= 1024 ? `${kb / 1024} MB` : `${kb} KB`
        lines.push(
          `| ${form} | ${size} | ${md.toFixed(1)} | ${mg.toFixed(1)} | ${(mg / md).toFixed(2)}× | ${firstDirect.toFixed(1)} / ${firstGateway.toFixed(1)} | ${(cpu / runs).toFixed(1)} |`,
        )
      }
    }
    process.stdout.write(`${lines.join('\n')}\n`)
  } finally {
    for (const c of clients) await c.end().catch(() => undefined)
    if (server) {
      const exited = new Promise((r) => server?.on('exit', r))
      server.kill('SIGTERM')
      await exited
    }
    rmSync(dir, { recursive: true, force: true })
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
  process.exit(1)
})
