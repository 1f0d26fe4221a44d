// The PostgreSQL benchmark (`npm run bench`): what a query costs through Gatehouse, side by side with
// a direct connection, a bare Node byte pump (bench/pump.ts, the floor of any Node proxy) and
// PgBouncer in session mode (the reference C proxy), all in the same run on the same machine.
//
//   node dist/bench/pgbench.js [--duration S] [--runs N] [--clients 1,8] [--warmup S] [--skip-init] [--no-write]
//                              [--cpu-prof DIR]
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

import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { chmodSync, chownSync, closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import yaml from 'js-yaml'

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const GATEHOUSE_BIN = join(REPO, 'cli/bin/gatehouse.js')
const PUMP_JS = join(REPO, 'dist/bench/pump.js')
const OUT_FILE = join(REPO, 'BENCHMARKS.md')

const PG_HOST = '127.0.0.1'
const PG_PORT = 5432
const PG_USER = 'postgres'
const PG_DB = 'test'
const SCALE = 10

// ---- options ------------------------------------------------------------------------------------

interface Options {
  readonly duration: number
  readonly runs: number
  readonly clients: readonly number[]
  readonly warmup: number
  readonly skipInit: boolean
  readonly write: boolean
  readonly cpuProfDir: string | null
}

function usage(msg: string): never {
  process.stderr.write(
    `pgbench bench: ${msg}\nusage: node dist/bench/pgbench.js [--duration S] [--runs N] [--clients 1,8] [--warmup S] [--skip-init] [--no-write] [--cpu-prof DIR]\n`,
  )
  process.exit(2)
}

function parseOptions(argv: readonly string[]): Options {
  let duration = 10
  let runs = 3
  let clients: number[] = [1, 8]
  let warmup = 2
  let skipInit = false
  let write = true
  let cpuProfDir: string | null = null
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
  return { duration, runs, clients, warmup, skipInit, write, cpuProfDir }
}

// ---- processes ----------------------------------------------------------------------------------

/** Everything this benchmark started, stopped in reverse order by `stopAll`. */
interface Started {
  readonly name: string
  /** The process to signal (for PgBouncer, the pgbouncer process itself rather than runuser). */
  readonly pid: number
  readonly child: ChildProcess
}

const started: Started[] = []
const tempDirs: string[] = []
/** Short-lived commands in flight (pgbench, psql, the CLI), killed if the benchmark is interrupted. */
const running = new Set<ChildProcess>()
let interrupted = false

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

async function stopAll(): Promise<void> {
  while (started.length > 0) {
    const s = started.pop()
    if (!s) break
    for (const pid of new Set([s.pid, s.child.pid ?? s.pid])) {
      if (alive(pid)) {
        try {
          process.kill(pid, 'SIGTERM')
        } catch {
          // already gone
        }
      }
    }
    const deadline = Date.now() + 5000
    while (Date.now() < deadline && (alive(s.pid) || (s.child.exitCode === null && s.child.signalCode === null))) await sleep(50)
    for (const pid of [s.pid, s.child.pid ?? s.pid]) if (alive(pid)) process.kill(pid, 'SIGKILL')
  }
  for (const d of tempDirs.splice(0)) rmSync(d, { recursive: true, force: true })
}

/** Last resort if the process exits without `stopAll` having run (e.g. an uncaught throw). */
process.on('exit', () => {
  for (const s of started) {
    for (const pid of [s.pid, s.child.pid ?? s.pid]) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {
        // already gone
      }
    }
  }
})

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    if (interrupted) return
    interrupted = true
    process.stderr.write(`\n${sig}: stopping everything started by the benchmark\n`)
    for (const c of running) c.kill('SIGKILL')
    void stopAll().finally(() => process.exit(130))
  })
}

interface Result {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs a command to completion (killed after `timeoutMs`), without blocking the event loop. */
function run(cmd: string, args: readonly string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<Result> {
  return new Promise((resolvePromise, reject) => {
    if (interrupted) {
      reject(new Error('interrupted'))
      return
    }
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] })
    running.add(child)
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString()
    })
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString()
    })
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.on('error', (err) => {
      clearTimeout(timer)
      running.delete(child)
      reject(err)
    })
    child.on('close', (code) => {
      clearTimeout(timer)
      running.delete(child)
      if (interrupted) reject(new Error('interrupted'))
      else resolvePromise({ code, stdout, stderr })
    })
  })
}

/** The environment for libpq programs: no inherited PG* variables, so nothing leaks into startup. */
function pgEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v
  return { ...env, PGSSLMODE: 'disable', PGCONNECT_TIMEOUT: '10', ...extra }
}

function freePort(): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const srv = createServer()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address()
      const port = a !== null && typeof a === 'object' ? a.port : 0
      srv.close(() => resolvePromise(port))
    })
  })
}

async function waitFor(what: string, cond: () => boolean, child: ChildProcess, logFile: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (cond()) return
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${what} exited during start (${child.exitCode ?? child.signalCode}):\n${tail(logFile)}`)
    }
    await sleep(50)
  }
  throw new Error(`${what} did not become ready in ${timeoutMs / 1000}s:\n${tail(logFile)}`)
}

function tail(file: string, lines = 30): string {
  if (!existsSync(file)) return '(no log)'
  return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n')
}

/** utime + stime of a whole process (all threads), in clock ticks, from /proc/<pid>/stat. */
function cpuTicks(pid: number): number {
  if (!existsSync(`/proc/${pid}/stat`)) throw new Error(`the proxy process ${pid} is no longer running`)
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // Fields after the command name (which is in parentheses and may contain spaces): state is
  // field 3, utime field 14, stime field 15.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return Number(rest[11]) + Number(rest[12])
}

const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100

// ---- targets ------------------------------------------------------------------------------------

interface Target {
  readonly key: 'direct' | 'pump' | 'pgbouncer' | 'gatehouse' | 'gatehouse-off'
  readonly label: string
  readonly port: number
  readonly user: string
  readonly dbname: string
  readonly password: string | null
  /** The proxy process whose CPU is measured; null for direct. */
  readonly pid: number | null
}

function direct(): Target {
  return { key: 'direct', label: 'direct', port: PG_PORT, user: PG_USER, dbname: PG_DB, password: null, pid: null }
}

async function startPump(): Promise<Target> {
  if (!existsSync(PUMP_JS)) throw new Error(`${PUMP_JS} is missing: build first (npx tsc -p .)`)
  const child = spawn(process.execPath, [PUMP_JS, '--listen', '127.0.0.1:0', '--target', `${PG_HOST}:${PG_PORT}`], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  started.push({ name: 'pump', pid: child.pid ?? 0, child })
  const line = await new Promise<string>((resolvePromise, reject) => {
    let buf = ''
    const timer = setTimeout(() => reject(new Error('pump did not print its port in 10s')), 10_000)
    child.stdout?.on('data', (d: Buffer) => {
      buf += d.toString()
      const nl = buf.indexOf('\n')
      if (nl >= 0) {
        clearTimeout(timer)
        resolvePromise(buf.slice(0, nl))
      }
    })
    child.on('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`pump exited during start (${code})`))
    })
  })
  const info = JSON.parse(line) as { port: number; pid: number }
  return { key: 'pump', label: 'Node byte pump', port: info.port, user: PG_USER, dbname: PG_DB, password: null, pid: info.pid }
}

async function startPgbouncer(): Promise<Target> {
  const bin = ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer'].find((p) => existsSync(p))
  if (!bin) throw new Error('pgbouncer is not installed (Debian package `pgbouncer`; `npm run setup` installs it)')
  const dir = mkdtempSync(join(tmpdir(), 'gh-bench-pgbouncer-'))
  tempDirs.push(dir)
  const port = await freePort()
  const ini = join(dir, 'pgbouncer.ini')
  const pidFile = join(dir, 'pgbouncer.pid')
  const logFile = join(dir, 'pgbouncer.log')
  writeFileSync(join(dir, 'userlist.txt'), `"${PG_USER}" ""\n`)
  writeFileSync(
    ini,
    [
      '[databases]',
      `${PG_DB} = host=${PG_HOST} port=${PG_PORT} dbname=${PG_DB} user=${PG_USER}`,
      '',
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${port}`,
      'unix_socket_dir =',
      'auth_type = trust',
      `auth_file = ${join(dir, 'userlist.txt')}`,
      'pool_mode = session',
      'max_client_conn = 200',
      'default_pool_size = 100',
      `logfile = ${logFile}`,
      `pidfile = ${pidFile}`,
      'log_connections = 0',
      'log_disconnections = 0',
      '',
    ].join('\n'),
  )
  const asRoot = process.getuid?.() === 0
  if (asRoot) {
    // PgBouncer refuses to run as root: it runs as postgres, which must read the config and write
    // the log and pid files.
    const uid = Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout.trim())
    const gid = Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim())
    if (!Number.isInteger(uid) || !Number.isInteger(gid)) throw new Error('no `postgres` user to run pgbouncer as')
    for (const f of [dir, ini, join(dir, 'userlist.txt')]) chownSync(f, uid, gid)
    chmodSync(dir, 0o755)
  }
  const [cmd, args] = asRoot ? ['runuser', ['-u', 'postgres', '--', bin, ini]] : [bin, [ini]]
  const child = spawn(cmd, args, { stdio: 'ignore' })
  const entry = { name: 'pgbouncer', pid: child.pid ?? 0, child }
  started.push(entry)
  await waitFor('pgbouncer', () => existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim() !== '', child, logFile)
  const pid = Number(readFileSync(pidFile, 'utf8').trim())
  started[started.indexOf(entry)] = { ...entry, pid }
  // The pid file is written before the listener is necessarily up: wait until a query goes through.
  const deadline = Date.now() + 10_000
  for (;;) {
    const r = await run(
      'psql',
      ['-X', '-At', '-h', PG_HOST, '-p', String(port), '-U', PG_USER, '-d', PG_DB, '-c', 'select 1'],
      pgEnv(),
      15_000,
    )
    if (r.code === 0) break
    if (Date.now() > deadline) throw new Error(`pgbouncer does not answer: ${r.stderr}\n${tail(logFile)}`)
    await sleep(100)
  }
  return { key: 'pgbouncer', label: 'PgBouncer (session)', port, user: PG_USER, dbname: PG_DB, password: null, pid }
}

async function startGatehouse(cpuProfDir: string | null, decisionsOff = false): Promise<Target> {
  const dir = mkdtempSync(join(tmpdir(), 'gh-bench-gatehouse-'))
  tempDirs.push(dir)
  const dataDir = join(dir, 'data')
  const configFile = join(dir, 'gatehouse.yaml')
  const logFile = join(dir, 'gatehouse.log')
  writeFileSync(
    configFile,
    yaml.dump({
      data_dir: dataDir,
      listen: { api: '127.0.0.1:0', postgres: '127.0.0.1:0' },
      connections: [{ name: 'bench', protocol: 'postgres', address: `${PG_HOST}:${PG_PORT}`, database: PG_DB, user: PG_USER }],
    }),
  )
  const logFd = openSync(logFile, 'a')
  // Started with node directly (the bin runs the server in its own process), so the pid is the server's.
  const profArgs = cpuProfDir !== null ? ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`] : []
  // Decisions off: bench/gateway-nodecide.ts, the same gateway with classification and policy
  // replaced by constants, so the difference prices them.
  const serverArgs = decisionsOff
    ? [join(REPO, 'dist/bench/gateway-nodecide.js'), configFile]
    : [GATEHOUSE_BIN, 'serve', '--config', configFile]
  const child = spawn(process.execPath, [...profArgs, ...serverArgs], { stdio: ['ignore', logFd, logFd] })
  closeSync(logFd)
  started.push({ name: 'gatehouse', pid: child.pid ?? 0, child })
  const runFile = join(dataDir, 'run.json')
  await waitFor('gatehouse', () => existsSync(runFile), child, logFile)
  const runInfo = JSON.parse(readFileSync(runFile, 'utf8')) as { pid: number; listeners: Record<string, string> }
  const pg = runInfo.listeners.postgres ?? ''
  const port = Number(pg.slice(pg.lastIndexOf(':') + 1))
  const tok = await run(
    process.execPath,
    [GATEHOUSE_BIN, 'token', 'create', '--config', configFile, '--subject', 'user:bench'],
    process.env,
    30_000,
  )
  if (tok.code !== 0) throw new Error(`gatehouse token create failed: ${tok.stderr}`)
  const password = tok.stdout.trim()
  return decisionsOff
    ? { key: 'gatehouse-off', label: 'Gatehouse, decisions off', port, user: 'bench', dbname: 'bench', password, pid: runInfo.pid }
    : { key: 'gatehouse', label: 'Gatehouse', port, user: 'bench', dbname: 'bench', password, pid: runInfo.pid }
}

// ---- pgbench ------------------------------------------------------------------------------------

interface Sample {
  readonly tps: number
  readonly latencyMs: number
  readonly transactions: number
  /** Proxy CPU per statement in microseconds; null for direct. */
  readonly cpuUsPerStmt: number | null
}

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

async function pgbench(t: Target, clients: number, seconds: number): Promise<Sample> {
  const args = [
    '-n',
    '-S',
    '-M',
    'simple',
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
  const before = t.pid !== null ? cpuTicks(t.pid) : 0
  const r = await run('pgbench', args, pgbenchEnv(t), (seconds + 60) * 1000)
  const after = t.pid !== null ? cpuTicks(t.pid) : 0
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

// ---- report -------------------------------------------------------------------------------------

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  const hi = s[mid] ?? Number.NaN
  const lo = s[mid - 1] ?? hi
  return s.length % 2 === 1 ? hi : (lo + hi) / 2
}

const fmtInt = (n: number): string => Math.round(n).toLocaleString('en-US')
const fmt = (n: number, digits: number): string => (Number.isFinite(n) ? n.toFixed(digits) : '–')

interface Summary {
  readonly target: Target
  readonly clients: number
  readonly samples: readonly Sample[]
  readonly tps: number
  readonly latencyMs: number
  readonly cpuUsPerStmt: number | null
}

function summarise(target: Target, clients: number, samples: readonly Sample[]): Summary {
  const cpu = samples.map((s) => s.cpuUsPerStmt).filter((c): c is number => c !== null)
  return {
    target,
    clients,
    samples,
    tps: median(samples.map((s) => s.tps)),
    latencyMs: median(samples.map((s) => s.latencyMs)),
    cpuUsPerStmt: cpu.length > 0 ? median(cpu) : null,
  }
}

function table(summaries: readonly Summary[]): string {
  const rows: string[] = [
    '| clients | target | TPS (median) | vs direct | latency avg (ms) | added latency per query (µs) | proxy CPU per statement (µs) | TPS of each run |',
    '|---:|---|---:|---:|---:|---:|---:|---|',
  ]
  for (const s of summaries) {
    const d = summaries.find((x) => x.clients === s.clients && x.target.key === 'direct')
    const ratio = d ? s.tps / d.tps : Number.NaN
    const added = d && s.target.key !== 'direct' ? fmt((s.latencyMs - d.latencyMs) * 1000, 1) : '–'
    rows.push(
      `| ${s.clients} | ${s.target.label} | ${fmtInt(s.tps)} | ${fmt(ratio, 3)} | ${fmt(s.latencyMs, 3)} | ${added} | ${
        s.cpuUsPerStmt !== null ? fmt(s.cpuUsPerStmt, 1) : '–'
      } | ${s.samples.map((x) => fmtInt(x.tps)).join(', ')} |`,
    )
  }
  return rows.join('\n')
}

function comparisons(summaries: readonly Summary[], clientCounts: readonly number[]): string {
  const lines: string[] = []
  for (const c of clientCounts) {
    const get = (k: Target['key']): Summary | undefined => summaries.find((s) => s.clients === c && s.target.key === k)
    const d = get('direct')
    const p = get('pump')
    const b = get('pgbouncer')
    const g = get('gatehouse')
    const off = get('gatehouse-off')
    if (!d || !p || !b || !g) continue
    const cpuRatio = g.cpuUsPerStmt !== null && p.cpuUsPerStmt !== null ? g.cpuUsPerStmt / p.cpuUsPerStmt : Number.NaN
    const cpuExtra = g.cpuUsPerStmt !== null && p.cpuUsPerStmt !== null ? g.cpuUsPerStmt - p.cpuUsPerStmt : Number.NaN
    lines.push(
      `- **${c} client${c === 1 ? '' : 's'}**: Gatehouse ${fmt(g.tps / d.tps, 3)}× direct TPS, ${fmt(g.tps / p.tps, 3)}× the pump's, ` +
        `${fmt(g.tps / b.tps, 3)}× PgBouncer's; added latency ${fmt((g.latencyMs - d.latencyMs) * 1000, 1)} µs/query ` +
        `(pump ${fmt((p.latencyMs - d.latencyMs) * 1000, 1)}, PgBouncer ${fmt((b.latencyMs - d.latencyMs) * 1000, 1)}); ` +
        `gateway CPU ${fmt(g.cpuUsPerStmt ?? Number.NaN, 1)} µs/statement = ${fmt(cpuRatio, 1)}× the pump's ` +
        `(+${fmt(cpuExtra, 1)} µs), PgBouncer ${fmt(b.cpuUsPerStmt ?? Number.NaN, 1)} µs.`,
    )
    // Runs are alternated, so run r of the pump and of Gatehouse are neighbours in time: their ratio
    // cancels most of the drift of a shared host that the medians of each target keep.
    const paired = g.samples.map((x, i) => x.tps / (p.samples[i]?.tps ?? Number.NaN)).filter(Number.isFinite)
    if (paired.length > 0) {
      lines.push(
        `  Run by run (each Gatehouse run next to a pump run): ${paired.map((r) => fmt(r, 3)).join(', ')} of the pump's TPS, ` +
          `median ${fmt(median(paired), 3)}.`,
      )
    }
    if (off && off.cpuUsPerStmt !== null && g.cpuUsPerStmt !== null) {
      lines.push(
        `  Decisions (classification + policy, default bundle, one hop) cost ${fmt(g.cpuUsPerStmt - off.cpuUsPerStmt, 1)} µs of CPU per statement ` +
          `and ${fmt((1 - g.tps / off.tps) * 100, 1)}% of TPS (${fmtInt(g.tps)} vs ${fmtInt(off.tps)} with decisions off).`,
      )
    }
  }
  return lines.join('\n')
}

interface Machine {
  readonly nproc: string
  readonly cpu: string
  readonly node: string
  readonly pgbench: string
  readonly pgbouncer: string
  readonly server: string
  readonly load: string
}

async function machine(): Promise<Machine> {
  const cpuinfo = existsSync('/proc/cpuinfo') ? readFileSync('/proc/cpuinfo', 'utf8') : ''
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? 'unknown'
  const first = (cmd: string, args: string[]): string => spawnSync(cmd, args, { encoding: 'utf8' }).stdout?.split('\n')[0]?.trim() ?? '?'
  const bouncerBin = ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer'].find((p) => existsSync(p)) ?? 'pgbouncer'
  const server = await run(
    'psql',
    ['-X', '-At', '-h', PG_HOST, '-p', String(PG_PORT), '-U', PG_USER, '-d', PG_DB, '-c', 'show server_version'],
    pgEnv(),
    15_000,
  )
  return {
    nproc: first('nproc', []),
    cpu: model,
    node: process.version,
    pgbench: first('pgbench', ['--version']),
    pgbouncer: first(bouncerBin, ['--version']),
    server: server.code === 0 ? `PostgreSQL ${server.stdout.trim()}` : '?',
    load: existsSync('/proc/loadavg') ? readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ') : '?',
  }
}

function report(opts: Options, m: Machine, summaries: readonly Summary[], command: string, elapsedS: number): string {
  const date = new Date().toISOString().replace(/\.\d+Z$/, 'Z')
  return `# Benchmarks

PostgreSQL through Gatehouse, side by side with a direct connection, a bare Node byte pump and
PgBouncer, measured in the same run. Generated by \`bench/pgbench.ts\`; rerun it to refresh this file.

- **Date**: ${date}
- **Machine**: ${m.nproc} CPUs, ${m.cpu}; ${m.server}, ${m.pgbench}, ${m.pgbouncer}, Node ${m.node}
  (load average ${m.load} when the run started)
- **Command**: \`${command}\` (${Math.round(elapsedS)} s)
- **Workload**: \`pgbench -n -S -M simple -T ${opts.duration}\` (one primary-key SELECT per transaction, simple
  query protocol) on \`pgbench -i -s ${SCALE}\` tables, ${opts.runs} runs per target and client count,
  alternated, medians; threads \`-j\` = min(clients, 2).

${table(summaries)}

${comparisons(summaries, opts.clients)}

## Method

- **Targets.** *direct*: PostgreSQL 15 on 127.0.0.1:5432. *Node byte pump* (\`bench/pump.ts\`): a
  separate Node process that accepts a socket, connects to the server and \`pipe\`s both ways with
  \`noDelay\`, nothing else — the floor cost of any proxy written in Node. *PgBouncer* in session mode
  (\`auth_type = trust\`), as \`postgres\`. *Gatehouse*: \`gatehouse serve\` with its own temporary data
  directory and one connection \`bench\` (→ 127.0.0.1:5432, database test, user postgres), the client
  authenticating with a token from \`gatehouse token create --subject user:bench\`, default settings
  otherwise (no \`policies:\` key, so the bundle shipped in \`policies/\`; default \`audit\`): every
  statement is classified, decided by the policy engine and audited durably before it is forwarded.
- **Order.** The tables are initialised once, directly. Each target gets a ${opts.warmup} s warm-up
  (not counted, so the JIT has compiled the hot paths). Then for each client count the runs go
  direct, pump, PgBouncer, Gatehouse, direct, pump, … so that drift on the machine hits all targets
  alike; the table shows the median of the runs (and every run's TPS).
- **TPS and latency** are pgbench's own figures (\`tps … without initial connection time\`,
  \`latency average\`). *vs direct* is TPS divided by direct's median; *added latency per query* is
  the median average latency minus direct's, at the same client count (at 1 client this is the
  round-trip cost the proxy adds; at more clients it also includes queueing for the CPUs).
- **Proxy CPU per statement**: utime + stime of the proxy process (all its threads) from
  \`/proc/<pid>/stat\` just before and just after each pgbench run, in clock ticks
  (CLK_TCK = ${CLK_TCK}), divided by the transactions pgbench reports (each \`-S\` transaction is one
  statement). It includes each run's connection set-up (a few sessions per run, negligible next to
  tens of thousands of statements). It is the least machine-dependent number here: TPS ratios depend
  on how many CPUs pgbench, the server and the proxy share (${m.nproc} here), CPU per statement does not.
- **Where the gateway's time goes**: \`node dist/bench/pgbench.js --clients 1 --runs 1 --cpu-prof DIR\`
  runs the gateway under \`node --cpu-prof\` (those numbers are not written here), then
  \`node dist/bench/cpuprofile.js DIR/*.cpuprofile\` lists the functions and files with the most self
  time. The profile samples wall time while the main thread is busy, so on a machine with few CPUs a
  socket \`write\` that wakes the peer is charged for the time spent waiting to be scheduled again.
- Everything listens on loopback only; every process started is stopped at the end.
`
}

// ---- main ---------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2))
  const command = `node dist/bench/pgbench.js${process.argv.length > 2 ? ` ${process.argv.slice(2).join(' ')}` : ''}`
  const t0 = Date.now()
  const m = await machine()
  if (!opts.skipInit) await initTables()

  const targets: Target[] = [direct()]
  targets.push(await startPump())
  targets.push(await startPgbouncer())
  targets.push(await startGatehouse(opts.cpuProfDir))
  targets.push(await startGatehouse(null, true))
  for (const t of targets) {
    process.stderr.write(`${t.label}: 127.0.0.1:${t.port}${t.pid !== null ? ` (pid ${t.pid})` : ''}\n`)
  }

  const maxClients = Math.max(...opts.clients)
  if (opts.warmup > 0) {
    for (const t of targets) {
      process.stderr.write(`warm-up ${t.label} (${opts.warmup} s, ${maxClients} clients)\n`)
      await pgbench(t, maxClients, opts.warmup)
    }
  }

  const samples = new Map<string, Sample[]>()
  const total = opts.clients.length * opts.runs * targets.length
  let n = 0
  for (const clients of opts.clients) {
    for (let r = 0; r < opts.runs; r++) {
      for (const t of targets) {
        const s = await pgbench(t, clients, opts.duration)
        n++
        process.stderr.write(
          `[${n}/${total}] ${clients} clients, run ${r + 1}, ${t.label}: ${fmtInt(s.tps)} tps, ${fmt(s.latencyMs, 3)} ms` +
            `${s.cpuUsPerStmt !== null ? `, ${fmt(s.cpuUsPerStmt, 1)} µs CPU/stmt` : ''}\n`,
        )
        const key = `${clients}/${t.key}`
        samples.set(key, [...(samples.get(key) ?? []), s])
      }
    }
  }

  const summaries: Summary[] = []
  for (const clients of opts.clients) {
    for (const t of targets) summaries.push(summarise(t, clients, samples.get(`${clients}/${t.key}`) ?? []))
  }
  const md = report(opts, m, summaries, command, (Date.now() - t0) / 1000)
  process.stdout.write(`${table(summaries)}\n\n${comparisons(summaries, opts.clients)}\n`)
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
  if (interrupted) await new Promise(() => undefined)
  process.stderr.write(`benchmark failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
  await stopAll()
  process.exit(1)
}
