// The processes behind the PostgreSQL benchmark (bench/pgbench.ts): the targets it measures — a
// direct connection, a bare Node byte pump (bench/pump.ts), PgBouncer in session mode and the
// gateway — started on loopback, and stopped at the end, on error and on SIGINT/SIGTERM; plus how
// a short-lived command is run and how a process's CPU time is read.

import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { chmodSync, chownSync, closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import yaml from 'js-yaml'
import { gatewayReady, listenerPort, waitFor } from './common.js'

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const GATEHOUSE_BIN = join(REPO, 'cli/bin/gatehouse.js')
const PUMP_JS = join(REPO, 'dist/bench/pump.js')

export const PG_HOST = '127.0.0.1'
export const PG_PORT = 5432
export const PG_USER = 'postgres'
export const PG_DB = 'test'

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

/** True once SIGINT or SIGTERM arrived: everything started is being stopped. */
export function wasInterrupted(): boolean {
  return interrupted
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

export async function stopAll(): Promise<void> {
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
export function run(cmd: string, args: readonly string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<Result> {
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
export function pgEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
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

function tail(file: string, lines = 30): string {
  if (!existsSync(file)) return '(no log)'
  return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n')
}

/** utime + stime of a whole process (all threads), in clock ticks, from /proc/<pid>/stat. */
export function cpuTicks(pid: number): number {
  if (!existsSync(`/proc/${pid}/stat`)) throw new Error(`the proxy process ${pid} is no longer running`)
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // Fields after the command name (which is in parentheses and may contain spaces): state is
  // field 3, utime field 14, stime field 15.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return Number(rest[11]) + Number(rest[12])
}

export const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100

// ---- targets ------------------------------------------------------------------------------------

export interface Target {
  readonly key:
    | 'direct'
    | 'pump'
    | 'pgbouncer'
    | 'gatehouse'
    | 'gatehouse-off'
    | 'gatehouse-mask'
    | 'gatehouse-mask-base'
    | 'gatehouse-workers'
  readonly label: string
  readonly port: number
  readonly user: string
  readonly dbname: string
  readonly password: string | null
  /** The proxy process whose CPU is measured; null for direct. */
  readonly pid: number | null
  /** Every process of the proxy (`serve --workers N`: the primary and its workers, read when asked). */
  readonly pids?: () => number[]
  /** A gateway's `/metrics` (its audit writes are read from there). */
  readonly metricsUrl?: string
}

/**
 * A gateway's audit batch writes (each one write(2)) and commands audited so far, from its
 * metrics; null when they cannot be read.
 */
export async function auditCounts(t: Target): Promise<{ writes: number; commands: number } | null> {
  if (t.metricsUrl === undefined) return null
  try {
    const text = await (await fetch(t.metricsUrl, { signal: AbortSignal.timeout(10_000) })).text()
    let writes = Number.NaN
    let commands = 0
    for (const line of text.split('\n')) {
      if (line.startsWith('gatehouse_audit_append_seconds_count')) writes = Number(line.slice(line.lastIndexOf(' ') + 1))
      else if (line.startsWith('gatehouse_commands_total')) commands += Number(line.slice(line.lastIndexOf(' ') + 1))
    }
    return Number.isFinite(writes) && Number.isFinite(commands) ? { writes, commands } : null
  } catch {
    return null
  }
}

/** CPU ticks of a target's processes (all of them under `--workers`). */
export function targetTicks(t: Target): number {
  const pids = t.pids ? t.pids() : t.pid !== null ? [t.pid] : []
  return pids.reduce((n, pid) => n + cpuTicks(pid), 0)
}

export function direct(): Target {
  return { key: 'direct', label: 'direct', port: PG_PORT, user: PG_USER, dbname: PG_DB, password: null, pid: null }
}

export async function startPump(): Promise<Target> {
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

export async function startPgbouncer(): Promise<Target> {
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
  await waitFor(
    'pgbouncer',
    () => existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim() !== '',
    child,
    () => tail(logFile),
  )
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

/** The one masking rule of the `gatehouse-mask` target: on a table `pgbench -S` never reads. */
export const BENCH_MASK_RULE = {
  name: 'branch-filler',
  columns: ['pgbench_branches.filler'],
  strategy: 'redact',
  clear_for: ['pii-readers'],
}

/**
 * `masking`: the shipped bundle plus BENCH_MASK_RULE (policies copied to a temporary directory), so
 * every statement's decision carries a mask obligation that cannot apply to it.
 */
export async function startGatehouse(
  cpuProfDir: string | null,
  decisionsOff = false,
  masking = false,
  /** `serve --workers N`, optionally under `taskset -c <cpus>` (the workers inherit the mask). */
  workers: { readonly n: number; readonly cpus: string | null } | null = null,
  /** Another build's checkout (its `dist/` built, `node_modules` beside it): the gateway and its
   *  CLI come from there, so two builds are measured in the same run. */
  baseRepo: string | null = null,
): Promise<Target> {
  const bin = baseRepo !== null ? join(baseRepo, 'cli/bin/gatehouse.js') : GATEHOUSE_BIN
  const dir = mkdtempSync(join(tmpdir(), 'gh-bench-gatehouse-'))
  tempDirs.push(dir)
  const dataDir = join(dir, 'data')
  const configFile = join(dir, 'gatehouse.yaml')
  const logFile = join(dir, 'gatehouse.log')
  let policies: string | undefined
  if (masking) {
    policies = join(dir, 'policies')
    spawnSync('cp', ['-r', join(REPO, 'policies'), policies])
    writeFileSync(join(policies, 'masking.yaml'), yaml.dump({ rules: [BENCH_MASK_RULE], detectors: [] }))
  }
  writeFileSync(
    configFile,
    yaml.dump({
      data_dir: dataDir,
      listen: { api: '127.0.0.1:0', postgres: '127.0.0.1:0' },
      connections: [{ name: 'bench', protocol: 'postgres', address: `${PG_HOST}:${PG_PORT}`, database: PG_DB, user: PG_USER }],
      ...(policies ? { policies } : {}),
    }),
  )
  const logFd = openSync(logFile, 'a')
  // Started with node directly (the bin runs the server in its own process), so the pid is the server's.
  const profArgs = cpuProfDir !== null ? ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`] : []
  // Decisions off: bench/gateway-nodecide.ts, the same gateway with classification and policy
  // replaced by constants, so the difference prices them.
  const serverArgs = decisionsOff
    ? [join(REPO, 'dist/bench/gateway-nodecide.js'), configFile]
    : [bin, 'serve', '--config', configFile, ...(workers ? ['--workers', String(workers.n)] : [])]
  // taskset execs node in its own process: the pid stays the server's.
  const child =
    workers?.cpus != null
      ? spawn('taskset', ['-c', workers.cpus, process.execPath, ...profArgs, ...serverArgs], { stdio: ['ignore', logFd, logFd] })
      : spawn(process.execPath, [...profArgs, ...serverArgs], { stdio: ['ignore', logFd, logFd] })
  closeSync(logFd)
  started.push({ name: 'gatehouse', pid: child.pid ?? 0, child })
  const runInfo = await gatewayReady(dataDir, child, () => tail(logFile))
  const port = listenerPort(runInfo.listeners.postgres)
  // The CLI's start-up alone took over 30 s on a loaded host.
  const tok = await run(process.execPath, [bin, 'token', 'create', '--config', configFile, '--subject', 'user:bench'], process.env, 120_000)
  if (tok.code !== 0)
    throw new Error(`gatehouse token create failed (exit ${tok.code ?? 'killed after 120 s'}): ${tok.stderr}${tok.stdout}`)
  const password = tok.stdout.trim()
  const api = runInfo.listeners.api
  const common = {
    port,
    user: 'bench',
    dbname: 'bench',
    password,
    pid: runInfo.pid,
    ...(api !== undefined ? { metricsUrl: `http://${api}/metrics` } : {}),
  }
  if (decisionsOff) return { key: 'gatehouse-off', label: 'Gatehouse, decisions off', ...common }
  if (masking && baseRepo !== null) return { key: 'gatehouse-mask-base', label: 'Gatehouse + one masking rule, baseline build', ...common }
  if (masking) return { key: 'gatehouse-mask', label: 'Gatehouse + one masking rule', ...common }
  if (workers) {
    const pids = (): number[] => {
      const r = JSON.parse(readFileSync(join(dataDir, 'run.json'), 'utf8')) as { pid: number; workers?: { pid: number | null }[] }
      return [r.pid, ...(r.workers ?? []).flatMap((w) => (w.pid ? [w.pid] : []))]
    }
    const pinned = workers.cpus !== null ? `, CPUs ${workers.cpus}` : ''
    return { key: 'gatehouse-workers', label: `Gatehouse, ${workers.n} workers${pinned}`, ...common, pids }
  }
  return { key: 'gatehouse', label: 'Gatehouse', ...common }
}
