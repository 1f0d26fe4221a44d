// The audit benchmark: what the tamper-evident audit log costs.
//
//   node dist/bench/audit.js [--events N] [--duration S] [--clients 1,8] [--no-pgbench]
//
// 1. Append cost, in process, on real files in a temporary directory: µs per `append` of a typical
//    `statement` event and events/s, for one session and for 8 concurrent ones, with `fsync:
//    batched` and `fsync: always` (group commit: the fdatasync calls per event are reported too).
//    The serialization + SHA-256 chaining step is timed on its own against plain JSON.stringify.
// 2. `pgbench -n -S -M simple` through Gatehouse with each mode, side by side with a direct
//    connection, in a database this benchmark creates (`pgbench -i -s 1`) and drops.
//
// Not a test: numbers go to stdout as markdown. Everything listens on loopback and every process
// started here is stopped at the end.

import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import yaml from 'js-yaml'
import { AuditLog } from '../engine/audit/writer.js'
import { encodeLine, GENESIS_HASH } from '../engine/audit/format.js'
import type { AuditEvent } from '../engine/types.js'

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const BIN = join(REPO, 'cli/bin/gatehouse.js')
const DB = `gh_bench_audit_${process.pid}`

interface Options {
  readonly events: number
  readonly duration: number
  readonly clients: readonly number[]
  readonly pgbench: boolean
}

function parseOptions(argv: readonly string[]): Options {
  let events = 200_000
  let duration = 10
  let clients = [1, 8]
  let pgbench = true
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const v = argv[i + 1]
    if (a === '--no-pgbench') {
      pgbench = false
      continue
    }
    if (!v || !['--events', '--duration', '--clients'].includes(a ?? '')) {
      process.stderr.write('usage: node dist/bench/audit.js [--events N] [--duration S] [--clients 1,8] [--no-pgbench]\n')
      process.exit(2)
    }
    i++
    if (a === '--events') events = Number(v)
    else if (a === '--duration') duration = Number(v)
    else clients = v.split(',').map(Number)
  }
  return { events, duration, clients, pgbench }
}

const EVENT: AuditEvent = {
  type: 'statement',
  session: 's-0123456789ab',
  chain: ['user:alice', 'agent:summarizer'],
  connection: 'app',
  seq: 42,
  sql: 'SELECT abalance FROM pgbench_accounts WHERE aid = 48213;',
  action: 'sql.read',
  kind: 'select',
  decision: 'allow',
  rules: [],
  policy_version: 'sha256:d2375a2b3571c0ffee',
}

const EVENT_LINE_BYTES = encodeLine(GENESIS_HASH, '0123456789ab-1', new Date().toISOString(), JSON.stringify(EVENT)).line.length + 1

const yieldIo = (): Promise<void> => new Promise((r) => setImmediate(r))

function microSerialize(n: number): { json: number; chained: number } {
  const t0 = process.hrtime.bigint()
  let sink = 0
  for (let i = 0; i < n; i++) sink += JSON.stringify(EVENT).length
  const t1 = process.hrtime.bigint()
  let prev = GENESIS_HASH
  const time = new Date().toISOString()
  for (let i = 0; i < n; i++) {
    const r = encodeLine(prev, `0123456789ab-${i}`, time, JSON.stringify(EVENT))
    prev = r.h
    sink += r.line.length
  }
  const t2 = process.hrtime.bigint()
  if (sink < 0) process.stdout.write('')
  return { json: Number(t1 - t0) / n / 1000, chained: Number(t2 - t1) / n / 1000 }
}

interface AppendResult {
  readonly mode: string
  readonly sessions: number
  readonly events: number
  readonly seconds: number
  readonly usPerAppend: number
  /** The process's CPU time (user + system) per statement. */
  readonly cpuUsPerAppend: number
  readonly syncsPerEvent: number
  readonly writesPerEvent: number
}

/**
 * `sessions` concurrent appenders, each awaiting its append and then yielding to I/O the way a
 * proxy does between statements, plus one deferred `result` per statement.
 */
async function appendBench(mode: 'batched' | 'always', sessions: number, total: number, grouped = false): Promise<AppendResult> {
  const dir = mkdtempSync(join(tmpdir(), 'gh-bench-audit-'))
  const log = new AuditLog(join(dir, 'audit'), mode, 200)
  log.open()
  try {
    const per = Math.ceil(total / sessions)
    const s0 = { ...log.stats }
    const cpu0 = process.cpuUsage()
    const t0 = process.hrtime.bigint()
    await Promise.all(
      Array.from({ length: sessions }, async () => {
        for (let i = 0; i < per; i++) {
          await (grouped ? log.appendGrouped(EVENT) : log.append(EVENT))
          log.appendDeferred({ ...EVENT, type: 'result', rows: 1 })
          await yieldIo()
        }
      }),
    )
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9
    const cpu = process.cpuUsage(cpu0)
    const events = log.stats.events - s0.events
    return {
      mode,
      sessions,
      events,
      seconds,
      usPerAppend: (seconds * 1e6) / (per * sessions),
      cpuUsPerAppend: (cpu.user + cpu.system) / (per * sessions),
      syncsPerEvent: (log.stats.syncs - s0.syncs) / events,
      writesPerEvent: (log.stats.writes - s0.writes) / events,
    }
  } finally {
    log.close()
    rmSync(dir, { recursive: true, force: true })
  }
}

/** The floor: one write(2) of a same-sized line per event, no chain, no log object. */
function rawWrite(n: number): number {
  const dir = mkdtempSync(join(tmpdir(), 'gh-bench-raw-'))
  const fd = openSync(join(dir, 'raw.jsonl'), 'a')
  const line = Buffer.from(`${encodeLine(GENESIS_HASH, 'x-1', new Date().toISOString(), JSON.stringify(EVENT)).line}\n`)
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < n; i++) writeSync(fd, line)
  const us = Number(process.hrtime.bigint() - t0) / 1e3 / n
  closeSync(fd)
  rmSync(dir, { recursive: true, force: true })
  return us
}

/** µs per `appendSync` of a statement event, back to back (batched: no sync). */
function hotPath(n: number): number {
  const dir = mkdtempSync(join(tmpdir(), 'gh-bench-hot-'))
  const log = new AuditLog(join(dir, 'audit'), 'batched', 200)
  log.open()
  try {
    for (let i = 0; i < 10_000; i++) log.appendSync(EVENT)
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < n; i++) log.appendSync(EVENT)
    return Number(process.hrtime.bigint() - t0) / 1e3 / n
  } finally {
    log.close()
    rmSync(dir, { recursive: true, force: true })
  }
}

/** The same loop with `append` replaced by nothing: the loop's own cost, to subtract. */
async function loopFloor(sessions: number, total: number): Promise<number> {
  const per = Math.ceil(total / sessions)
  const t0 = process.hrtime.bigint()
  await Promise.all(
    Array.from({ length: sessions }, async () => {
      for (let i = 0; i < per; i++) await yieldIo()
    }),
  )
  return Number(process.hrtime.bigint() - t0) / 1e3 / (per * sessions)
}

// ---- pgbench ---------------------------------------------------------------------------------------

function freePort(): Promise<number> {
  return new Promise((r) => {
    const s = createServer()
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port
      s.close(() => r(p))
    })
  })
}

function psqlDirect(db: string, sql: string): void {
  const r = spawnSync('psql', ['-X', '-q', '-h', '127.0.0.1', '-U', 'postgres', '-d', db, '-v', 'ON_ERROR_STOP=1', '-c', sql], {
    encoding: 'utf8',
  })
  if (r.status !== 0) throw new Error(`psql: ${r.stderr}`)
}

function pgbench(conninfo: string, clients: number, seconds: number): number {
  const r = spawnSync(
    'pgbench',
    ['-n', '-S', '-M', 'simple', '-c', String(clients), '-j', String(Math.min(clients, 2)), '-T', String(seconds), conninfo],
    { encoding: 'utf8', timeout: (seconds + 60) * 1000 },
  )
  const m = /tps = ([\d.]+) \((without initial connection time|excluding connections establishing)\)/.exec(r.stdout)
  if (!m) throw new Error(`pgbench failed: ${r.stdout}\n${r.stderr}`)
  return Number(m[1])
}

async function startGateway(root: string, fsync: 'batched' | 'always'): Promise<{ proc: ChildProcess; port: number; token: string }> {
  const port = await freePort()
  const dataDir = join(root, `data-${fsync}`)
  const configFile = join(root, `gatehouse-${fsync}.yaml`)
  writeFileSync(
    configFile,
    yaml.dump({
      data_dir: dataDir,
      listen: { api: '127.0.0.1:0', postgres: `127.0.0.1:${port}` },
      log_level: 'warn',
      audit: { fsync },
      connections: [{ name: 'bench', protocol: 'postgres', address: '127.0.0.1:5432', database: DB, user: 'postgres' }],
    }),
  )
  const proc = spawn(process.execPath, [BIN, 'serve', '--config', configFile], { stdio: ['ignore', 'ignore', 'inherit'] })
  const deadline = Date.now() + 20_000
  for (;;) {
    const t = spawnSync(process.execPath, [BIN, 'token', 'create', '--subject', 'user:bench', '--config', configFile], { encoding: 'utf8' })
    // Only through the API once the server runs (a token minted offline would work too, but then
    // the server would not yet be listening).
    const up = spawnSync('pg_isready', ['-h', '127.0.0.1', '-p', String(port)])
    if (t.status === 0 && up.status === 0) return { proc, port, token: t.stdout.trim() }
    if (Date.now() > deadline) throw new Error(`gateway did not start: ${t.stderr}`)
    await new Promise((r) => setTimeout(r, 200))
  }
}

async function stopGateway(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null) return
  const done = new Promise((r) => proc.once('exit', r))
  proc.kill('SIGTERM')
  await done
}

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2))
  const out: string[] = []
  const say = (l = ''): void => {
    out.push(l)
    process.stdout.write(`${l}\n`)
  }
  say('## Audit log benchmark')
  say()
  say(`Node ${process.version}, ${process.platform}/${process.arch}; audit files on ${tmpdir()}.`)
  say()
  const ser = microSerialize(200_000)
  say(
    `Serialization of a statement event: JSON.stringify ${ser.json.toFixed(2)} µs; the chained line (prev, id, time, SHA-256) ${ser.chained.toFixed(2)} µs — the hash chain adds ${(ser.chained - ser.json).toFixed(2)} µs per event.`,
  )
  say(`For reference, a bare write(2) of such a line (${EVENT_LINE_BYTES} bytes) to a file costs ${rawWrite(200_000).toFixed(2)} µs here.`)
  say()
  const hot = hotPath(200_000)
  say(
    `The hot path, \`append\` of one statement event in a tight loop (fsync batched: serialize, chain, one write(2)): ${hot.toFixed(2)} µs per event.`,
  )
  say()
  say(
    '| fsync | append | sessions | events | events/s | µs per statement (its append + its deferred result, loop cost removed) | CPU µs per statement (loop included) | write(2) per event | fdatasync per event |',
  )
  say('|---|---|---|---|---|---|---|---|---|')
  for (const mode of ['batched', 'always'] as const) {
    // `grouped`: appendGrouped, the PostgreSQL proxy's statement path (one write per I/O turn).
    for (const grouped of [false, true]) {
      for (const sessions of [1, 8]) {
        const total = mode === 'always' ? Math.min(o.events, sessions === 1 ? 5_000 : 20_000) : o.events
        await appendBench(mode, sessions, Math.min(total, 2000), grouped) // warm-up
        const r = await appendBench(mode, sessions, total, grouped)
        const floor = await loopFloor(sessions, total)
        say(
          `| ${mode} | ${grouped ? 'grouped' : 'append'} | ${sessions} | ${r.events} | ${Math.round(r.events / r.seconds).toLocaleString('en-US')} | ${Math.max(0, r.usPerAppend - floor).toFixed(2)} | ${r.cpuUsPerAppend.toFixed(2)} | ${r.writesPerEvent.toFixed(3)} | ${r.syncsPerEvent.toFixed(3)} |`,
        )
      }
    }
  }
  say()
  say(
    'Each statement also queues its `result` event (appendDeferred); it goes out in the same write(2) as the next statement, or within 20 ms when none comes.',
  )

  if (!o.pgbench) return
  const root = mkdtempSync(join(tmpdir(), 'gh-bench-audit-pg-'))
  const procs: ChildProcess[] = []
  try {
    psqlDirect('test', `DROP DATABASE IF EXISTS ${DB}`)
    psqlDirect('test', `CREATE DATABASE ${DB}`)
    const init = spawnSync('pgbench', ['-i', '-s', '1', '-q', '-h', '127.0.0.1', '-U', 'postgres', DB], { encoding: 'utf8' })
    if (init.status !== 0) throw new Error(`pgbench -i: ${init.stderr}`)
    say()
    say(`### pgbench -n -S -M simple, ${o.duration} s per run (TPS, ratio to direct)`)
    say()
    say('| clients | direct | fsync batched | ratio | fsync always | ratio |')
    say('|---|---|---|---|---|---|')
    const gws = { batched: await startGateway(root, 'batched'), always: await startGateway(root, 'always') }
    procs.push(gws.batched.proc, gws.always.proc)
    const direct = `host=127.0.0.1 port=5432 user=postgres dbname=${DB}`
    const through = (g: { port: number; token: string }): string =>
      `host=127.0.0.1 port=${g.port} user=bench dbname=bench password=${g.token} sslmode=disable`
    for (const c of o.clients) {
      pgbench(through(gws.batched), c, 2)
      pgbench(through(gws.always), c, 2)
      const d = pgbench(direct, c, o.duration)
      const b = pgbench(through(gws.batched), c, o.duration)
      const a = pgbench(through(gws.always), c, o.duration)
      say(`| ${c} | ${d.toFixed(0)} | ${b.toFixed(0)} | ${(b / d).toFixed(2)} | ${a.toFixed(0)} | ${(a / d).toFixed(2)} |`)
    }
  } finally {
    for (const p of procs) await stopGateway(p)
    try {
      psqlDirect('test', `DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`)
    } catch {
      /* reported above */
    }
    rmSync(root, { recursive: true, force: true })
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`audit bench: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exit(1)
})
