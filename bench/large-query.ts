// Large query texts through Gatehouse against a direct connection: the time per query of 70 KB,
// 500 KB and 2 MB texts, in two forms — one long string literal, and a VALUES list of many small
// rows (many tokens: what the classifier, the shape and the audit line pay per token) — over one
// open connection each (node-postgres, simple protocol), runs alternated, medians reported; and the
// gateway process's own CPU time per query (from /proc: less disturbed by other load than wall time)
// and its minor page faults per query (first touches of fresh memory, most of a large text's cost
// on a machine where a fault is expensive; BENCHMARKS.md).
//
//   node dist/bench/large-query.js [--runs N] [--form literal|values] [--sizes 70,500,2048]
//
// Starts its own gateway (default policies, the machine's PostgreSQL at 127.0.0.1:5432 as
// connection `app`) and stops it at the end. GH_BENCH_CPU_PROF=DIR profiles the gateway
// (summarise with dist/bench/cpuprofile.js; GH_BENCH_CPU_PROF_INTERVAL=µs sets the sampling interval). Prints a markdown table; it is copied into
// BENCHMARKS.md by hand.

import { readFileSync } from 'node:fs'
import pg from 'pg'
import { TestGateway } from '../test/helpers/gateway.js'
import { arg } from './common.js'

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

/** Minor page faults the process has taken so far (first touches of fresh memory), from /proc. */
function minorFaults(pid: number | undefined): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[7])
  } catch {
    return 0
  }
}

/** CPU time (ms) of the process's main thread alone (the JavaScript thread; the rest are GC
 * helpers and libuv's pool), from /proc/PID/task/PID/stat. */
function mainThreadCpuMs(pid: number | undefined): number {
  try {
    const stat = readFileSync(`/proc/${pid}/task/${pid}/stat`, 'utf8')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
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
  const interval = process.env.GH_BENCH_CPU_PROF_INTERVAL
  const prof = process.env.GH_BENCH_CPU_PROF
    ? ['--cpu-prof', `--cpu-prof-dir=${process.env.GH_BENCH_CPU_PROF}`, ...(interval ? [`--cpu-prof-interval=${interval}`] : [])]
    : []
  const gw = await TestGateway.start({
    connections: [{ name: 'app', protocol: 'postgres', address: '127.0.0.1:5432', database: 'test', user: 'postgres' }],
    config: { log_level: 'warn' },
    nodeArgs: prof,
  })
  const pid = gw.proc?.pid
  const clients: pg.Client[] = []
  try {
    const direct = new pg.Client({ host: '127.0.0.1', port: 5432, database: 'test', user: 'postgres' })
    const gateway = new pg.Client({ host: '127.0.0.1', port: gw.pgPort, database: 'app', user: 'bench', password: gw.token('user:bench') })
    clients.push(direct, gateway)
    await direct.connect()
    await gateway.connect()

    const lines = [
      `Query texts sent with the simple protocol over one open connection, median of ${runs} (runs alternated):`,
      '',
      '| query | size | direct (ms) | gateway (ms) | gateway / direct | first: direct / gateway (ms) | gateway CPU per query (ms) | of it, main thread (ms) | gateway page faults per query |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
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
        let main = 0
        let faults = 0
        for (let r = 0; r < runs; r++) {
          d.push(await time(direct, sql))
          const c0 = cpuMs(pid)
          const m0 = mainThreadCpuMs(pid)
          const f0 = minorFaults(pid)
          g.push(await time(gateway, sql))
          cpu += cpuMs(pid) - c0
          main += mainThreadCpuMs(pid) - m0
          faults += minorFaults(pid) - f0
        }
        const md = median(d)
        const mg = median(g)
        const size = kb >= 1024 ? `${kb / 1024} MB` : `${kb} KB`
        lines.push(
          `| ${form} | ${size} | ${md.toFixed(1)} | ${mg.toFixed(1)} | ${(mg / md).toFixed(2)}× | ${firstDirect.toFixed(1)} / ${firstGateway.toFixed(1)} | ${(cpu / runs).toFixed(1)} | ${(main / runs).toFixed(1)} | ${Math.round(faults / runs)} |`,
        )
      }
    }
    process.stdout.write(`${lines.join('\n')}\n`)
  } finally {
    for (const c of clients) await c.end().catch(() => undefined)
    await gw.cleanup()
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
  process.exit(1)
})
