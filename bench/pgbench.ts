// The PostgreSQL benchmark (`npm run bench`): what a query costs through Gatehouse, side by side with
// a direct connection, a bare Node byte pump (bench/pump.ts, the floor of any Node proxy) and
// PgBouncer in session mode (the reference C proxy), all in the same run on the same machine.
//
//   node dist/bench/pgbench.js [--duration S] [--runs N] [--clients 1,8] [--modes simple,prepared]
//                              [--targets direct,pump,pgbouncer,gatehouse,gatehouse-mask,gatehouse-off,gatehouse-workers]
//                              [--warmup S] [--skip-init] [--no-write] [--cpu-prof DIR]
//                              [--workers N [--pin]] [--baseline DIR] [--syscalls]
//
// `--syscalls` also counts each proxy's system calls and context switches per statement (`perf
// stat` on kernel software events, bench/kernel-counts.ts): numbers a loaded host does not inflate.
//
// `--baseline DIR` adds the target `gatehouse-mask-base`: the `gatehouse-mask` configuration run
// from another checkout's build (DIR/dist, with node_modules beside it), so a change is measured
// against the build before it in the same run, runs alternated.
//
// `--workers N` adds the target `gatehouse-workers`: `gatehouse serve --workers N` (its CPU time is
// the primary's and every worker's). `--pin` runs that gateway under `taskset -c 0-(N-1)` and pgbench
// (with PostgreSQL wherever the system puts it) on the CPUs left, when there are any: on a host with
// spare cores this shows how throughput grows with workers; on a host with as many cores as
// workers the gateway, pgbench and PostgreSQL compete and it cannot.
//
// `--cpu-prof DIR` runs the gateway under `node --cpu-prof` (profile written to DIR when it stops;
// summarise it with `node dist/bench/cpuprofile.js DIR/*.cpuprofile`). Profiling slows the gateway,
// so such a run's numbers are not written to BENCHMARKS.md.
//
// Method: `pgbench -i -s 10` once, directly, into database `test`; then `pgbench -n -S -M simple
// -T S` (one SELECT per transaction, simple protocol) at each client count, runs alternated across
// the targets (direct, pump, pgbouncer, gatehouse, direct, pump, …), medians reported. Around every
// run the proxy process's utime+stime is read from /proc/<pid>/stat and divided by the number of
// transactions pgbench processed, which gives the proxy's CPU time per statement. The markdown table
// goes to stdout and to BENCHMARKS.md at the repository root. Every process started here is stopped
// at the end, on error and on SIGINT/SIGTERM; everything listens on loopback only.

import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { join, resolve } from 'node:path'
import {
  comparisons,
  fmt,
  fmtInt,
  machine,
  report,
  type RunShape,
  type Sample,
  SCALE,
  type Summary,
  summarise,
  table,
} from './pgbench-report.js'
import { countKernel, perfAvailable } from './kernel-counts.js'
import {
  auditCounts,
  CLK_TCK,
  direct,
  wasInterrupted,
  PG_DB,
  PG_HOST,
  PG_PORT,
  PG_USER,
  pgEnv,
  REPO,
  run,
  startGatehouse,
  startPgbouncer,
  startPump,
  stopAll,
  type Target,
  targetTicks,
} from './pgbench-servers.js'

const OUT_FILE = join(REPO, 'BENCHMARKS.md')

// ---- options ------------------------------------------------------------------------------------

interface Options extends RunShape {
  readonly targets: readonly Target['key'][]
  readonly skipInit: boolean
  readonly write: boolean
  readonly cpuProfDir: string | null
  readonly workers: number
  readonly pin: boolean
  readonly baseline: string | null
  readonly syscalls: boolean
}

function usage(msg: string): never {
  process.stderr.write(
    `pgbench bench: ${msg}\nusage: node dist/bench/pgbench.js [--duration S] [--runs N] [--clients 1,8] [--modes simple,prepared] [--targets direct,pump,…] [--warmup S] [--skip-init] [--no-write] [--cpu-prof DIR] [--workers N [--pin]] [--baseline DIR]\n`,
  )
  process.exit(2)
}

function parseOptions(argv: readonly string[]): Options {
  let duration = 10
  let runs = 5
  let modes: ('simple' | 'prepared')[] = ['simple', 'prepared']
  let targets: Target['key'][] = ['direct', 'pump', 'pgbouncer', 'gatehouse', 'gatehouse-mask', 'gatehouse-off']
  let clients: number[] = [1, 8]
  let warmup = 2
  let skipInit = false
  let write = true
  let cpuProfDir: string | null = null
  let workers = 1
  let pin = false
  let baseline: string | null = null
  let syscalls = false
  const int = (flag: string, v: string | undefined, min: number): number => {
    const n = Number(v)
    if (v === undefined || !Number.isInteger(n) || n < min) usage(`${flag} needs an integer >= ${min}`)
    return n
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    switch (a) {
      case '--duration':
        duration = int(a, argv[++i], 1)
        break
      case '--runs':
        runs = int(a, argv[++i], 1)
        break
      case '--warmup':
        warmup = int(a, argv[++i], 0)
        break
      case '--clients': {
        const v = argv[++i]
        if (v === undefined) usage('--clients needs a list such as 1,8')
        clients = v.split(',').map((c) => int('--clients', c.trim(), 1))
        break
      }
      case '--modes': {
        const v = argv[++i] ?? ''
        modes = v.split(',').map((m) => {
          if (m !== 'simple' && m !== 'prepared') usage('--modes takes simple,prepared')
          return m
        })
        break
      }
      case '--workers':
        workers = int(a, argv[++i], 1)
        break
      case '--pin':
        pin = true
        break
      case '--syscalls':
        if (!perfAvailable()) usage('--syscalls needs perf (Debian package linux-perf)')
        syscalls = true
        break
      case '--baseline': {
        const v = argv[++i]
        if (v === undefined || !existsSync(join(v, 'dist/cli/main.js'))) usage('--baseline needs a checkout with dist/ built')
        baseline = resolve(v)
        break
      }
      case '--targets': {
        const v = argv[++i] ?? ''
        const known: Target['key'][] = [
          'direct',
          'pump',
          'pgbouncer',
          'gatehouse',
          'gatehouse-mask',
          'gatehouse-mask-base',
          'gatehouse-off',
          'gatehouse-workers',
        ]
        targets = v.split(',').map((k) => {
          const t = known.find((x) => x === k)
          if (t === undefined) usage(`--targets takes ${known.join(',')}`)
          return t
        })
        break
      }
      case '--skip-init':
        skipInit = true
        break
      case '--no-write':
        write = false
        break
      case '--cpu-prof': {
        const v = argv[++i]
        if (v === undefined) usage('--cpu-prof needs a directory')
        cpuProfDir = resolve(v)
        write = false
        break
      }
      default:
        usage(`unknown argument ${JSON.stringify(a)}`)
    }
  }
  if (workers > 1 && !targets.includes('gatehouse-workers')) targets = [...targets, 'gatehouse-workers']
  if (pin && workers === 1) usage('--pin goes with --workers N')
  if (baseline !== null && !targets.includes('gatehouse-mask-base')) targets = [...targets, 'gatehouse-mask-base']
  if (targets.includes('gatehouse-mask-base') && baseline === null) usage('gatehouse-mask-base needs --baseline DIR')
  return { duration, runs, clients, warmup, skipInit, write, cpuProfDir, modes, targets, workers, pin, baseline, syscalls }
}

// ---- pgbench ------------------------------------------------------------------------------------

function pgbenchEnv(t: Target): NodeJS.ProcessEnv {
  return pgEnv(t.password !== null ? { PGPASSWORD: t.password } : {})
}

function threadsFor(clients: number): number {
  return Math.min(clients, 2)
}

function num(out: string, re: RegExp, what: string): number {
  const m = re.exec(out)
  if (!m?.[1]) throw new Error(`pgbench output has no ${what}:\n${out}`)
  return Number(m[1])
}

/** With `--pin`, the CPUs pgbench runs on: those the pinned gateway does not use (null: any). */
let pgbenchCpus: string | null = null

async function pgbench(t: Target, clients: number, seconds: number, mode: 'simple' | 'prepared', syscalls = false): Promise<Sample> {
  const bench = [
    '-n',
    '-S',
    '-M',
    mode,
    '-T',
    String(seconds),
    '-c',
    String(clients),
    '-j',
    String(threadsFor(clients)),
    '-h',
    PG_HOST,
    '-p',
    String(t.port),
    '-U',
    t.user,
    t.dbname,
  ]
  const [cmd, args] = pgbenchCpus !== null ? ['taskset', ['-c', pgbenchCpus, 'pgbench', ...bench]] : ['pgbench', bench]
  const counter = syscalls && t.pid !== null ? await countKernel(t.pids ? t.pids() : [t.pid]) : null
  const auditBefore = await auditCounts(t)
  const before = targetTicks(t)
  const r = await run(cmd, args, pgbenchEnv(t), (seconds + 60) * 1000)
  const after = targetTicks(t)
  const kernel = counter !== null ? await counter.stop() : null
  const auditAfter = auditBefore !== null ? await auditCounts(t) : null
  if (r.code !== 0) throw new Error(`pgbench against ${t.label} failed (${r.code}):\n${r.stderr}${r.stdout}`)
  const out = r.stdout
  const transactions = num(out, /number of transactions actually processed: (\d+)/, 'transaction count')
  const failed = /number of failed transactions: (\d+)/.exec(out)?.[1]
  if (failed !== undefined && Number(failed) > 0) throw new Error(`pgbench against ${t.label}: ${failed} failed transactions`)
  if (transactions === 0) throw new Error(`pgbench against ${t.label} processed no transaction`)
  return {
    tps: num(out, /tps = ([\d.]+) \(without initial connection time\)/, 'tps'),
    latencyMs: num(out, /latency average = ([\d.]+) ms/, 'average latency'),
    transactions,
    cpuUsPerStmt: t.pid !== null ? (((after - before) / CLK_TCK) * 1e6) / transactions : null,
    ...(auditBefore !== null && auditAfter !== null && auditAfter.commands > auditBefore.commands
      ? { auditWritesPerStmt: (auditAfter.writes - auditBefore.writes) / (auditAfter.commands - auditBefore.commands) }
      : {}),
    ...(kernel !== null ? { syscallsPerStmt: kernel.syscalls / transactions, switchesPerStmt: kernel.switches / transactions } : {}),
  }
}

async function initTables(): Promise<void> {
  process.stderr.write(`initialising pgbench tables (scale ${SCALE}) directly in database ${PG_DB}…\n`)
  const r = await run(
    'pgbench',
    ['-i', '-s', String(SCALE), '-q', '-h', PG_HOST, '-p', String(PG_PORT), '-U', PG_USER, PG_DB],
    pgEnv(),
    600_000,
  )
  if (r.code !== 0) throw new Error(`pgbench -i failed:\n${r.stderr}`)
}

// ---- main ---------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2))
  const command = `node dist/bench/pgbench.js${process.argv.length > 2 ? ` ${process.argv.slice(2).join(' ')}` : ''}`
  const t0 = Date.now()
  const m = await machine()
  if (!opts.skipInit) await initTables()

  const targets: Target[] = []
  const want = (k: Target['key']): boolean => opts.targets.includes(k)
  if (want('direct')) targets.push(direct())
  if (want('pump')) targets.push(await startPump())
  if (want('pgbouncer')) targets.push(await startPgbouncer())
  if (want('gatehouse')) targets.push(await startGatehouse(opts.cpuProfDir))
  // Profiled too when it is the only gateway (the configuration the issue's targets are about).
  if (want('gatehouse-mask')) targets.push(await startGatehouse(want('gatehouse') ? null : opts.cpuProfDir, false, true))
  const baseProf = want('gatehouse') || want('gatehouse-mask') ? null : opts.cpuProfDir
  if (want('gatehouse-mask-base')) targets.push(await startGatehouse(baseProf, false, true, null, opts.baseline))
  if (want('gatehouse-off')) targets.push(await startGatehouse(null, true))
  if (want('gatehouse-workers')) {
    const cores = availableParallelism()
    const cpus = opts.pin ? `0-${Math.min(opts.workers, cores) - 1}` : null
    if (opts.pin && cores > opts.workers) pgbenchCpus = `${opts.workers}-${cores - 1}`
    if (opts.pin && cores <= opts.workers)
      process.stderr.write(`note: ${cores} CPUs for ${opts.workers} pinned workers: pgbench and PostgreSQL share their CPUs\n`)
    targets.push(await startGatehouse(null, false, false, { n: opts.workers, cpus }))
  }
  for (const t of targets) {
    process.stderr.write(`${t.label}: 127.0.0.1:${t.port}${t.pid !== null ? ` (pid ${t.pid})` : ''}\n`)
  }

  const maxClients = Math.max(...opts.clients)
  if (opts.warmup > 0) {
    for (const t of targets) {
      process.stderr.write(`warm-up ${t.label} (${opts.warmup} s, ${maxClients} clients)\n`)
      for (const mode of opts.modes) await pgbench(t, maxClients, opts.warmup, mode)
    }
  }

  const samples = new Map<string, Sample[]>()
  const total = opts.modes.length * opts.clients.length * opts.runs * targets.length
  let n = 0
  for (const mode of opts.modes) {
    for (const clients of opts.clients) {
      for (let r = 0; r < opts.runs; r++) {
        for (const t of targets) {
          const s = await pgbench(t, clients, opts.duration, mode, opts.syscalls)
          n++
          process.stderr.write(
            `[${n}/${total}] -M ${mode}, ${clients} clients, run ${r + 1}, ${t.label}: ${fmtInt(s.tps)} tps, ${fmt(s.latencyMs, 3)} ms` +
              `${s.cpuUsPerStmt !== null ? `, ${fmt(s.cpuUsPerStmt, 1)} µs CPU/stmt` : ''}` +
              `${s.auditWritesPerStmt !== undefined ? `, ${fmt(s.auditWritesPerStmt, 2)} audit writes/stmt` : ''}` +
              `${s.syscallsPerStmt !== undefined ? `, ${fmt(s.syscallsPerStmt, 2)} syscalls and ${fmt(s.switchesPerStmt ?? Number.NaN, 2)} context switches/stmt` : ''}\n`,
          )
          const key = `${mode}/${clients}/${t.key}`
          samples.set(key, [...(samples.get(key) ?? []), s])
        }
      }
    }
  }

  const summaries: Summary[] = []
  for (const mode of opts.modes) {
    for (const clients of opts.clients) {
      for (const t of targets) summaries.push(summarise(t, clients, samples.get(`${mode}/${clients}/${t.key}`) ?? [], mode))
    }
  }
  const md = report(opts, m, summaries, command, (Date.now() - t0) / 1000)
  process.stdout.write(`${table(summaries)}\n\n${comparisons(summaries, opts.clients, opts.modes)}\n`)
  if (opts.write) {
    // The sections after "## Method" come from the other benchmarks: keep them.
    let rest = ''
    if (existsSync(OUT_FILE)) {
      const old = readFileSync(OUT_FILE, 'utf8')
      const method = old.indexOf('\n## Method')
      const next = method >= 0 ? old.indexOf('\n## ', method + 1) : -1
      if (next >= 0) rest = old.slice(next)
    }
    writeFileSync(OUT_FILE, md.replace(/\n+$/, '\n') + rest)
    process.stderr.write(`wrote ${OUT_FILE}\n`)
  }
}

try {
  await main()
  await stopAll()
  const profDir = parseOptions(process.argv.slice(2)).cpuProfDir
  if (profDir !== null) process.stderr.write(`gateway CPU profile in ${profDir}: node dist/bench/cpuprofile.js ${profDir}/*.cpuprofile\n`)
} catch (err) {
  // An interrupt stops everything itself and exits.
  if (wasInterrupted()) await new Promise(() => undefined)
  process.stderr.write(`benchmark failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
  await stopAll()
  process.exit(1)
}
