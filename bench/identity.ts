// The identity benchmark: what identifying a caller costs, with a root token and with a
// delegated token of depth 3, and how many new authenticated sessions per second the PostgreSQL
// proxy admits, side by side with direct connections to the same server.
//
//   node dist/bench/identity.js [--duration S] [--runs N] [--iterations N]
//
// Part 1, in process: `TokenIssuer.verify` (signature, claims, chain rechecks, one revocation
// lookup per token id in SQLite) and a service-account key check, timed over many iterations.
// Part 2, through a real gateway (`gatehouse serve`, its own data directory, loopback only):
// `pgbench -C` (a new connection for every transaction, each running `SELECT 1`) with 1 client
// (latency of a whole connect) and 8 clients (sessions per second), against PostgreSQL directly,
// through Gatehouse with a root token, and with a depth-3 token; runs alternate, medians reported.
// The added microseconds per connect of the delegated token is its median connect time minus the
// root token's. Every process started here is stopped at the end, on error and on SIGINT.

import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import yaml from 'js-yaml'
import { gatewayReady, listenerPort } from './common.js'
import { loadConfigFile } from '../engine/config/config.js'
import { issuerFor } from '../cli/gateway/gateway.js'
import { ServiceKeys } from '../engine/identity/service-keys.js'
import { Store } from '../engine/store.js'
import { loadOrCreateSigningKey, TokenIssuer } from '../engine/identity/tokens.js'

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const BIN = join(REPO, 'cli/bin/gatehouse.js')

interface Options {
  duration: number
  runs: number
  iterations: number
}

function parse(argv: readonly string[]): Options {
  const o: Options = { duration: 5, runs: 3, iterations: 20000 }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const v = Number(argv[++i])
    if (!Number.isInteger(v) || v < 1) throw new Error(`${a} needs a positive integer`)
    if (a === '--duration') o.duration = v
    else if (a === '--runs') o.runs = v
    else if (a === '--iterations') o.iterations = v
    else throw new Error(`unknown argument ${a}; usage: node dist/bench/identity.js [--duration S] [--runs N] [--iterations N]`)
  }
  return o
}

const children = new Set<ChildProcess>()
const dirs: string[] = []
function cleanup(): void {
  for (const c of children) c.kill('SIGTERM')
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
}
process.on('exit', cleanup)
process.on('SIGINT', () => {
  cleanup()
  process.exit(130)
})

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 ? (s[m] ?? 0) : ((s[m - 1] ?? 0) + (s[m] ?? 0)) / 2
}

async function timeIt(n: number, f: () => Promise<unknown> | unknown): Promise<number> {
  for (let i = 0; i < Math.min(2000, n); i++) await f()
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < n; i++) await f()
  return Number(process.hrtime.bigint() - t0) / 1000 / n
}

async function inProcess(o: Options): Promise<string[]> {
  const dir = mkdtempSync(join(tmpdir(), 'gh-bench-id-'))
  dirs.push(dir)
  const key = await loadOrCreateSigningKey(dir)
  const store = new Store(dir)
  const issuer = new TokenIssuer(key, 'https://gatehouse.example-corp.com')
  const isRevoked = (j: string): boolean => store.isRevoked(j)
  const root = await issuer.issue({ subject: 'user:alice@example-corp.com', groups: ['analysts', 'writers'], ttlSeconds: 3600 })
  let t = root.token
  for (const [agent, scope] of [
    ['orchestrator', 'connection:app sql.*'],
    ['summarizer', 'sql.read'],
    ['reporter', ''],
  ] as const) {
    t = (await issuer.delegate(t, { agent, scope: scope.split(' ').filter(Boolean) }, isRevoked)).token
  }
  const keys = new ServiceKeys(store)
  const apiKey = keys.create({ name: 'etl', groups: ['loaders'], ttlSeconds: 3600 }).key
  // Alternating rounds, medians: the machine's noise hits both alike.
  const rounds: { root: number[]; d3: number[]; key: number[] } = { root: [], d3: [], key: [] }
  const n = Math.max(1, Math.floor(o.iterations / 5))
  for (let r = 0; r < 5; r++) {
    rounds.root.push(await timeIt(n, () => issuer.verify(root.token, isRevoked)))
    rounds.d3.push(await timeIt(n, () => issuer.verify(t, isRevoked)))
    rounds.key.push(await timeIt(n, () => keys.verify(apiKey)))
  }
  const rootUs = median(rounds.root)
  const d3Us = median(rounds.d3)
  const keyUs = median(rounds.key)
  store.close()
  return [
    '| credential | verify (µs, median of 5 rounds) |',
    '|---|---:|',
    `| root token (${root.token.length} chars) | ${rootUs.toFixed(1)} |`,
    `| delegated token, depth 3 (${t.length} chars) | ${d3Us.toFixed(1)} |`,
    `| service-account key | ${keyUs.toFixed(1)} |`,
    '',
    `Delegation adds ${(d3Us - rootUs).toFixed(1)} µs per verify at depth 3 (in process, ${o.iterations} iterations).`,
  ]
}

function run(
  cmd: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((res) => {
    const c = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] })
    children.add(c)
    let stdout = ''
    let stderr = ''
    c.stdout.on('data', (d: Buffer) => {
      stdout += d.toString()
    })
    c.stderr.on('data', (d: Buffer) => {
      stderr += d.toString()
    })
    c.on('exit', (code) => {
      children.delete(c)
      res({ code, stdout, stderr })
    })
  })
}

async function startGateway(): Promise<{ pgPort: number; configFile: string; dataDir: string; proc: ChildProcess }> {
  const dir = mkdtempSync(join(tmpdir(), 'gh-bench-idgw-'))
  dirs.push(dir)
  const dataDir = join(dir, 'data')
  const configFile = join(dir, 'gatehouse.yaml')
  writeFileSync(
    configFile,
    yaml.dump({
      data_dir: dataDir,
      listen: { api: '127.0.0.1:0', postgres: '127.0.0.1:0' },
      log_level: 'warn',
      connections: [{ name: 'app', protocol: 'postgres', address: '127.0.0.1:5432', database: 'test', user: 'postgres' }],
    }),
  )
  const proc = spawn(process.execPath, [BIN, 'serve', '--config', configFile], { stdio: ['ignore', 'ignore', 'pipe'] })
  children.add(proc)
  let err = ''
  proc.stderr?.on('data', (d: Buffer) => {
    err += d.toString()
  })
  const run = await gatewayReady(dataDir, proc, () => err)
  return { pgPort: listenerPort(run.listeners.postgres), configFile, dataDir, proc }
}

async function pgbenchConnect(port: number, db: string, password: string | null, clients: number, seconds: number, script: string) {
  const env: NodeJS.ProcessEnv = { ...process.env, PGSSLMODE: 'disable', PGCONNECT_TIMEOUT: '5' }
  if (password !== null) env.PGPASSWORD = password
  else delete env.PGPASSWORD
  const r = await run(
    'pgbench',
    [
      '-n',
      '-C',
      '-h',
      '127.0.0.1',
      '-p',
      String(port),
      '-U',
      'postgres',
      '-c',
      String(clients),
      '-j',
      String(clients),
      '-T',
      String(seconds),
      '-f',
      script,
      db,
    ],
    env,
  )
  const tps = /tps = ([\d.]+)/.exec(r.stdout)
  if (r.code !== 0 || !tps) throw new Error(`pgbench failed (${r.code}): ${r.stderr || r.stdout}`)
  return Number(tps[1])
}

async function throughGateway(o: Options): Promise<string[]> {
  const gw = await startGateway()
  const config = loadConfigFile(gw.configFile)
  const cli = await run(
    process.execPath,
    [BIN, 'token', 'create', '--subject', 'user:alice', '--group', 'analysts', '--ttl', '1h', '--config', gw.configFile],
    process.env,
  )
  if (cli.code !== 0) throw new Error(`token create: ${cli.stderr}`)
  const rootToken = cli.stdout.trim()
  // The depth-3 chain is minted with the gateway's own key, as its token endpoint would.
  const issuer = new TokenIssuer(await loadOrCreateSigningKey(config.dataDir), issuerFor(config))
  let d3 = rootToken
  for (const [agent, scope] of [
    ['orchestrator', 'connection:app sql.*'],
    ['summarizer', 'sql.read'],
    ['reporter', ''],
  ] as const) {
    d3 = (await issuer.delegate(d3, { agent, scope: scope.split(' ').filter(Boolean) }, () => false)).token
  }
  const script = join(dirs[dirs.length - 1] ?? tmpdir(), 'select1.sql')
  writeFileSync(script, 'SELECT 1;\n')
  const targets: [string, number, string, string | null][] = [
    ['direct', 5432, 'test', null],
    ['gatehouse, root token', gw.pgPort, 'app', rootToken],
    ['gatehouse, depth-3 token', gw.pgPort, 'app', d3],
  ]
  const lines = ['| target | 1 client: connects/s | µs per connect | 8 clients: sessions/s |', '|---|---:|---:|---:|']
  const perConnect = new Map<string, number>()
  const results = new Map<string, { one: number[]; eight: number[] }>()
  for (const [name] of targets) results.set(name, { one: [], eight: [] })
  for (const [, port, db, pw] of targets) await pgbenchConnect(port, db, pw, 1, 1, script) // warm up
  for (let r = 0; r < o.runs; r++) {
    for (const [name, port, db, pw] of targets) {
      const res = results.get(name)
      res?.one.push(await pgbenchConnect(port, db, pw, 1, o.duration, script))
      res?.eight.push(await pgbenchConnect(port, db, pw, 8, o.duration, script))
    }
  }
  for (const [name] of targets) {
    const res = results.get(name) ?? { one: [0], eight: [0] }
    const one = median(res.one)
    perConnect.set(name, 1e6 / one)
    lines.push(`| ${name} | ${one.toFixed(0)} | ${(1e6 / one).toFixed(0)} | ${median(res.eight).toFixed(0)} |`)
  }
  const root = perConnect.get('gatehouse, root token') ?? 0
  const deep = perConnect.get('gatehouse, depth-3 token') ?? 0
  const direct = perConnect.get('direct') ?? 0
  lines.push(
    '',
    `Through the gateway a connect costs ${(root - direct).toFixed(0)} µs more than direct with a root token; a depth-3 token adds ${(deep - root).toFixed(0)} µs more (target under 200 µs). pgbench -C, SELECT 1 per connection, ${o.runs} runs of ${o.duration} s, medians.`,
  )
  gw.proc.kill('SIGTERM')
  await new Promise((r) => gw.proc.once('exit', r))
  children.delete(gw.proc)
  return lines
}

async function main(): Promise<void> {
  const o = parse(process.argv.slice(2))
  const out = ['# Identity benchmark', '', `${new Date().toISOString()}, Node ${process.version}`, '', '## Verify, in process', '']
  out.push(...(await inProcess(o)), '', '## Connect through the PostgreSQL proxy', '')
  out.push(...(await throughGateway(o)))
  process.stdout.write(`${out.join('\n')}\n`)
}

main().then(
  () => {
    cleanup()
    process.exit(0)
  },
  (err: unknown) => {
    process.stderr.write(`identity bench: ${err instanceof Error ? err.message : String(err)}\n`)
    cleanup()
    process.exit(1)
  },
)
