// Small GETs through the HTTP proxy against the same upstream directly and through a bare Node
// reverse proxy (node:http piping to a keep-alive agent: the floor cost of any Node HTTP proxy).
// The load generator is autocannon (npm, pinned), run as its own process; runs alternate, medians
// are reported: requests/s, ratios, p50/p99 latency, and each proxy's CPU time per request
// (utime+stime of its process from /proc over the run ÷ requests). On a shared, loaded machine
// the absolute rates swing from one run to the next, so each round's gateway ÷ bare-proxy ratio
// (the two measured back to back) is reported too, as the median over the rounds.
//
//   node dist/bench/http.js [--duration S] [--runs N] [--connections C] [--warmup S]
//                           [--baseline DIR] [--undici]
//
// --baseline DIR: also runs the gateway of another built checkout (DIR/cli/bin/gatehouse.js, e.g.
// a worktree of main) in the same rounds, so a change is measured before and after in one run.
// --undici: also runs a bare proxy whose upstream client is an undici Pool driven through
// `dispatch`, as the gateway's is (what the upstream client alone costs).
//
// Everything is plain HTTP on loopback (the gateway's TLS would price the handshake, not the
// proxy). The gateway runs the default decisions with a policy file that allows the GETs, with
// the audit log on (fsync batched) and recordings on, as `gatehouse serve` does by default.

import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, cpSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import yaml from 'js-yaml'

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const BIN = join(REPO, 'cli/bin/gatehouse.js')
const AUTOCANNON = join(REPO, 'node_modules/autocannon/autocannon.js')

interface Args {
  readonly duration: number
  readonly runs: number
  readonly connections: number
  readonly warmup: number
  readonly baseline: string | null
  readonly undici: boolean
}

function parseArgs(argv: readonly string[]): Args {
  let duration = 5
  let runs = 3
  let connections = 10
  let warmup = 5
  let baseline: string | null = null
  let undici = false
  for (let i = 0; i < argv.length; i++) {
    const v = Number(argv[i + 1])
    if (argv[i] === '--duration') duration = v
    else if (argv[i] === '--runs') runs = v
    else if (argv[i] === '--connections') connections = v
    else if (argv[i] === '--warmup') warmup = v
    else if (argv[i] === '--baseline') baseline = resolve(String(argv[i + 1]))
    else if (argv[i] === '--undici') {
      undici = true
      continue
    } else continue
    i++
  }
  return { duration, runs, connections, warmup, baseline, undici }
}

const UPSTREAM = `
const http = require('node:http')
const body = JSON.stringify({ id: 1, title: 'a small JSON document', tags: ['bench', 'http'], ok: true })
http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
  res.end(body)
}).listen(0, '127.0.0.1', function () { process.stdout.write(String(this.address().port) + '\\n') })
`

const BARE_PROXY = `
const http = require('node:http')
const target = Number(process.argv[1])
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 })
http.createServer((req, res) => {
  const up = http.request({ host: '127.0.0.1', port: target, method: req.method, path: req.url, headers: req.headers, agent }, (r) => {
    res.writeHead(r.statusCode, r.headers)
    r.pipe(res)
  })
  up.on('error', () => { res.statusCode = 502; res.end() })
  req.pipe(up)
}).listen(0, '127.0.0.1', function () { process.stdout.write(String(this.address().port) + '\\n') })
`

const UNDICI_PROXY = `
const http = require('node:http')
const { Pool } = require(process.argv[2])
const pool = new Pool('http://127.0.0.1:' + process.argv[1], { connections: 64, pipelining: 1, keepAliveTimeout: 10000 })
const HOP = new Set(['connection', 'keep-alive', 'host', 'transfer-encoding', 'upgrade', 'te', 'trailer'])
http.createServer((req, res) => {
  const headers = {}
  const raw = req.rawHeaders
  for (let i = 0; i < raw.length; i += 2) if (!HOP.has(raw[i].toLowerCase())) headers[raw[i].toLowerCase()] = raw[i + 1]
  pool.dispatch({ method: req.method, path: req.url, headers, body: null }, {
    onRequestStart() {},
    onResponseStart(c, status, h) { res.writeHead(status, h) },
    onResponseData(c, chunk) { res.write(chunk) },
    onResponseEnd() { res.end() },
    onResponseError() { if (!res.headersSent) res.statusCode = 502; res.end() },
  })
}).listen(0, '127.0.0.1', function () { process.stdout.write(String(this.address().port) + '\\n') })
`

function startNode(script: string, args: string[] = []): Promise<{ proc: ChildProcess; port: number }> {
  const proc = spawn(process.execPath, ['-e', script, ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
  return new Promise((resolvePort, reject) => {
    proc.stdout?.once('data', (d: Buffer) => resolvePort({ proc, port: Number(d.toString().trim()) }))
    proc.once('exit', (code) => reject(new Error(`a bench server exited (${code})`)))
  })
}

function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return Number(rest[11]) + Number(rest[12])
}

const TICK_MS = 1000 / Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim() || 100)

interface Run {
  readonly rps: number
  readonly p50: number
  readonly p99: number
  readonly requests: number
  readonly non2xx: number
  readonly cpuUsPerRequest: number | null
}

function load(url: string, a: Args, headers: string[], pid: number | null): Run {
  const before = pid === null ? 0 : cpuTicks(pid)
  const r = spawnSync(
    process.execPath,
    [AUTOCANNON, '-c', String(a.connections), '-d', String(a.duration), '-j', ...headers.flatMap((h) => ['-H', h]), url],
    { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 },
  )
  if (r.status !== 0) throw new Error(`autocannon failed: ${r.stderr}`)
  const j = JSON.parse(r.stdout) as {
    requests: { average: number; total: number }
    latency: { p50: number; p99: number }
    non2xx: number
    '2xx': number
  }
  const after = pid === null ? 0 : cpuTicks(pid)
  const done = j['2xx'] + j.non2xx
  return {
    rps: j.requests.average,
    p50: j.latency.p50,
    p99: j.latency.p99,
    requests: done,
    non2xx: j.non2xx,
    cpuUsPerRequest: pid === null || done === 0 ? null : ((after - before) * TICK_MS * 1000) / done,
  }
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((x, y) => x - y)
  const m = Math.floor(s.length / 2)
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2))
  const dir = mkdtempSync(join(tmpdir(), 'gh-bench-http-'))
  const procs: ChildProcess[] = []
  try {
    const upstream = await startNode(UPSTREAM)
    procs.push(upstream.proc)
    const bare = await startNode(BARE_PROXY, [String(upstream.port)])
    procs.push(bare.proc)
    const policies = join(dir, 'policies')
    cpSync(join(REPO, 'policies'), policies, { recursive: true })
    rmSync(join(policies, 'default.cases.yaml'), { force: true })
    /** A gateway of the checkout whose CLI is `bin`, with its own config and data directory. */
    const startGateway = async (bin: string, name: string): Promise<{ proc: ChildProcess; port: number; auth: string }> => {
      const config = join(dir, `${name}.yaml`)
      writeFileSync(
        config,
        yaml.dump({
          data_dir: join(dir, `${name}-data`),
          log_level: 'warn',
          listen: { api: '127.0.0.1:0', postgres: 'off', ssh: 'off', http: '127.0.0.1:0' },
          policies,
          connections: [{ name: 'bench', protocol: 'http', url: `http://127.0.0.1:${upstream.port}` }],
        }),
      )
      // GH_BENCH_CPU_PROF=DIR: the gateway runs under `node --cpu-prof` (bench/cpuprofile.ts reads it).
      const prof = process.env.GH_BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.GH_BENCH_CPU_PROF}`] : []
      // GH_BENCH_NODE_FLAGS: more flags for the gateways' node (e.g. --perf-basic-prof for `perf record`).
      const flags = (process.env.GH_BENCH_NODE_FLAGS ?? '').split(' ').filter((f) => f !== '')
      const proc = spawn(process.execPath, [...prof, ...flags, bin, 'serve', '--config', config], {
        stdio: ['ignore', 'ignore', 'inherit'],
      })
      procs.push(proc)
      const runFile = join(dir, `${name}-data`, 'run.json')
      for (let i = 0; i < 1200 && !existsSync(runFile); i++) await new Promise((r) => setTimeout(r, 100))
      const run = JSON.parse(readFileSync(runFile, 'utf8')) as { listeners: Record<string, string> }
      const port = Number(run.listeners.http?.split(':').pop())
      const tok = spawnSync(process.execPath, [bin, 'token', 'create', '--subject', 'user:bench', '--ttl', '1h', '--config', config], {
        encoding: 'utf8',
      })
      if (tok.status !== 0) throw new Error(`token create: ${tok.stderr}`)
      return { proc, port, auth: `authorization=Bearer ${tok.stdout.trim()}` }
    }
    const gw = await startGateway(BIN, 'gatehouse')
    // GH_BENCH_PIDS=FILE: the processes' ids are written there (to attach `perf record -p`).
    if (process.env.GH_BENCH_PIDS) writeFileSync(process.env.GH_BENCH_PIDS, `gateway ${gw.proc.pid}\nbare ${bare.proc.pid}\n`)
    const targets = [
      { name: 'direct', url: `http://127.0.0.1:${upstream.port}/item`, headers: [] as string[], pid: null as number | null },
      { name: 'bare Node proxy', url: `http://127.0.0.1:${bare.port}/item`, headers: [], pid: bare.proc.pid ?? null },
      { name: 'Gatehouse', url: `http://127.0.0.1:${gw.port}/c/bench/item`, headers: [gw.auth], pid: gw.proc.pid ?? null },
    ]
    if (a.undici) {
      const u = await startNode(UNDICI_PROXY, [String(upstream.port), join(REPO, 'node_modules/undici/index.js')])
      procs.push(u.proc)
      targets.push({ name: 'undici bare proxy', url: `http://127.0.0.1:${u.port}/item`, headers: [], pid: u.proc.pid ?? null })
    }
    if (a.baseline) {
      const base = await startGateway(join(a.baseline, 'cli/bin/gatehouse.js'), 'baseline')
      targets.push({
        name: 'Gatehouse (baseline)',
        url: `http://127.0.0.1:${base.port}/c/bench/item`,
        headers: [base.auth],
        pid: base.proc.pid ?? null,
      })
    }
    // Warm up every path (JIT, pools, the session per connection).
    for (const t of targets) load(t.url, { ...a, duration: a.warmup }, t.headers, null)
    const results = new Map<string, Run[]>(targets.map((t) => [t.name, []]))
    for (let r = 0; r < a.runs; r++) {
      for (const t of targets) {
        const res = load(t.url, a, t.headers, t.pid)
        if (res.non2xx > 0) throw new Error(`${t.name}: ${res.non2xx} responses were not 2xx`)
        results.get(t.name)?.push(res)
        process.stderr.write(
          `run ${r + 1} ${t.name}: ${res.rps.toFixed(0)} req/s${res.cpuUsPerRequest === null ? '' : `, ${res.cpuUsPerRequest.toFixed(0)} µs CPU/request`}\n`,
        )
      }
    }
    const row = (name: string): { rps: number; p50: number; p99: number; cpu: number | null } => {
      const rs = results.get(name) ?? []
      const cpu = rs.map((x) => x.cpuUsPerRequest).filter((x): x is number => x !== null)
      return {
        rps: median(rs.map((x) => x.rps)),
        p50: median(rs.map((x) => x.p50)),
        p99: median(rs.map((x) => x.p99)),
        cpu: cpu.length ? median(cpu) : null,
      }
    }
    const direct = row('direct')
    const bareRow = row('bare Node proxy')
    const lines = [
      `HTTP proxy: ${a.connections} connections, ${a.duration}s × ${a.runs} runs (medians), GET of a ${98}-byte JSON document, plain HTTP on loopback`,
      '',
      '| path | requests/s | vs direct | vs bare proxy | p50 ms | p99 ms | proxy CPU µs/request |',
      '|---|---:|---:|---:|---:|---:|---:|',
    ]
    for (const t of targets) {
      const x = row(t.name)
      lines.push(
        `| ${t.name} | ${x.rps.toFixed(0)} | ${((100 * x.rps) / direct.rps).toFixed(0)}% | ${((100 * x.rps) / bareRow.rps).toFixed(0)}% | ${x.p50} | ${x.p99} | ${x.cpu === null ? '–' : x.cpu.toFixed(0)} |`,
      )
    }
    // Per round: each gateway's requests/s ÷ the bare proxy's in the same round, and the bare
    // proxy's CPU per request ÷ the gateway's (both robust to the machine's load drifting).
    const bareRuns = results.get('bare Node proxy') ?? []
    lines.push('', '| per round (median of rounds) | requests/s ÷ bare proxy | bare proxy CPU ÷ gateway CPU |', '|---|---:|---:|')
    for (const t of targets.filter((x) => x.name.startsWith('Gatehouse') || x.name.startsWith('undici'))) {
      const rs = results.get(t.name) ?? []
      const rps = rs.map((x, i) => x.rps / (bareRuns[i]?.rps ?? Number.NaN))
      const cpu = rs.map((x, i) => (bareRuns[i]?.cpuUsPerRequest ?? Number.NaN) / (x.cpuUsPerRequest ?? Number.NaN))
      lines.push(`| ${t.name} | ${(100 * median(rps)).toFixed(0)}% | ${(100 * median(cpu)).toFixed(0)}% |`)
    }
    process.stdout.write(`${lines.join('\n')}\n`)
  } finally {
    // Each process has exited (a profiled gateway writes its profile on the way out) before the
    // directory goes.
    await Promise.all(
      procs.map(
        (p) =>
          new Promise<void>((r) => {
            if (p.exitCode !== null || p.signalCode !== null) return r()
            p.once('exit', () => r())
            p.kill('SIGTERM')
            setTimeout(r, 10_000).unref()
          }),
      ),
    )
    rmSync(dir, { recursive: true, force: true })
  }
}

await main()
