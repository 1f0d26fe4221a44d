// pgbench -S through gateway + connector against the same gateway dialling PostgreSQL directly, in
// one run with the rounds alternated (direct, tunnel, direct, …), so a loaded machine weighs on
// both alike:
//
//   node dist/bench/connector.js [--duration S] [--rounds N] [--clients C] [--cpu-prof DIR]
//
// One gateway, two connections to the machine's PostgreSQL (database `test`, `pgbench -i -s 10`
// when its tables are missing): `direct`, and `tunnel` with `via: edge-1`; `gatehouse connector`
// on this host attached over TLS with a pinned certificate. Around every round the CPU time
// (utime+stime from /proc) of the gateway and of the connector is read and divided by the
// transactions pgbench processed (one SELECT each). `--cpu-prof DIR` runs both under
// `node --cpu-prof` (summarise with `node dist/bench/cpuprofile.js DIR/*.cpuprofile`); profiled
// numbers are slower and only for finding where the time goes. Prints a markdown table.

import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { BIN, TestGateway } from '../test/helpers/gateway.js'
import { admin, arg } from './common.js'
import { CLK_TCK, cpuTicks } from './pgbench-servers.js'

const duration = arg('--duration', 10)
const rounds = arg('--rounds', 3)
const clients = arg('--clients', 4)
const profIndex = process.argv.indexOf('--cpu-prof')
const profDir = profIndex >= 0 ? (process.argv[profIndex + 1] ?? null) : null

interface Round {
  readonly target: 'direct' | 'tunnel'
  readonly tps: number
  readonly tx: number
  readonly gatewayUs: number
  readonly connectorUs: number
  /** The kernel's share of the connector's CPU (system calls, TCP): what no JavaScript change reaches. */
  readonly connectorSysShare: number
}

/** stime of a process, in clock ticks. */
function sysTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[12])
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2
}

function pgbench(conninfo: string, seconds: number): { tx: number; tps: number } {
  const r = spawnSync(
    'pgbench',
    ['-n', '-S', '-M', 'simple', '-c', String(clients), '-j', String(Math.min(2, clients)), '-T', String(seconds), conninfo],
    {
      encoding: 'utf8',
      timeout: (seconds + 120) * 1000,
    },
  )
  const tx = /number of transactions actually processed: (\d+)/.exec(r.stdout)
  const tps = /tps = ([\d.]+)/.exec(r.stdout)
  if (r.status !== 0 || !tx || !tps) throw new Error(`pgbench failed: ${r.stdout}${r.stderr}`)
  return { tx: Number(tx[1]), tps: Number(tps[1]) }
}

async function main(): Promise<void> {
  try {
    admin('select 1 from pgbench_branches limit 1', 'test')
  } catch {
    const init = spawnSync('pgbench', ['-i', '-q', '-s', '10', '-h', '127.0.0.1', '-U', 'postgres', 'test'], { encoding: 'utf8' })
    if (init.status !== 0) throw new Error(`pgbench -i failed: ${init.stderr}`)
  }
  if (profDir) mkdirSync(profDir, { recursive: true })
  const prof = (name: string): string[] =>
    profDir ? ['--cpu-prof', '--cpu-prof-dir', profDir, '--cpu-prof-name', `${name}.cpuprofile`] : []
  const pg = { protocol: 'postgres', address: '127.0.0.1:5432', database: 'test', user: 'postgres' }
  const gw = await TestGateway.start({
    connections: [
      { name: 'direct', ...pg },
      { name: 'tunnel', ...pg, via: 'edge-1' },
    ],
    config: {
      listen: { api: '127.0.0.1:0', postgres: '127.0.0.1:0', connectors: '127.0.0.1:0' },
      connectors: [{ name: 'edge-1' }],
      log_level: 'warn',
    },
    nodeArgs: prof('gateway'),
  })
  let connector: ChildProcess | null = null
  try {
    const adminToken = readFileSync(join(gw.dataDir, 'admin.token'), 'utf8').trim()
    const res = await fetch(`${gw.apiUrl}/v1/service-keys`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'edge-1' }),
    })
    const { key } = (await res.json()) as { key: string }
    const keyFile = join(gw.dir, 'edge-1.key')
    writeFileSync(keyFile, key, { mode: 0o600 })
    const fingerprint = new X509Certificate(readFileSync(join(gw.dataDir, 'tls/cert.pem'))).fingerprint256
    connector = spawn(
      process.execPath,
      [
        ...prof('connector'),
        BIN,
        'connector',
        '--gateway',
        `https://127.0.0.1:${gw.port('connectors')}`,
        '--fingerprint',
        fingerprint,
        '--token-file',
        keyFile,
        '--log-level',
        'warn',
      ],
      { stdio: 'ignore' },
    )
    const deadline = Date.now() + 60_000
    for (;;) {
      const l = (await (
        await fetch(`${gw.apiUrl}/v1/connectors`, { headers: { authorization: `Bearer ${adminToken}` } })
      ).json()) as unknown[]
      if (l.length > 0) break
      if (Date.now() > deadline) throw new Error('the connector did not attach')
      await new Promise((r) => setTimeout(r, 100))
    }
    const token = gw.token('user:bench', ['--ttl', '2h'])
    const gwPid = gw.proc?.pid ?? 0
    const cPid = connector.pid ?? 0
    // Warm-up on both paths: the first statements compile the policy's paths and JIT the relay.
    pgbench(gw.conninfo(token, 'direct'), 3)
    pgbench(gw.conninfo(token, 'tunnel'), 3)
    const results: Round[] = []
    for (let i = 0; i < rounds; i++) {
      for (const target of ['direct', 'tunnel'] as const) {
        const g0 = cpuTicks(gwPid)
        const c0 = cpuTicks(cPid)
        const cs0 = sysTicks(cPid)
        const r = pgbench(gw.conninfo(token, target), duration)
        const g = cpuTicks(gwPid) - g0
        const c = cpuTicks(cPid) - c0
        const cs = sysTicks(cPid) - cs0
        const round: Round = {
          target,
          tps: r.tps,
          tx: r.tx,
          gatewayUs: ((g / CLK_TCK) * 1e6) / r.tx,
          connectorUs: target === 'tunnel' ? ((c / CLK_TCK) * 1e6) / r.tx : 0,
          connectorSysShare: target === 'tunnel' && c > 0 ? cs / c : 0,
        }
        results.push(round)
        process.stderr.write(`${JSON.stringify(round)}\n`)
      }
    }
    const d = results.filter((r) => r.target === 'direct')
    const t = results.filter((r) => r.target === 'tunnel')
    const lines = [
      `pgbench -n -S -M simple -c ${clients} -j ${Math.min(2, clients)} -T ${duration}, ${rounds} alternated rounds; load average ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`,
      '',
      '| round | TPS direct | TPS tunnel | gateway µs/stmt direct | gateway µs/stmt tunnel | connector µs/stmt | tunnel CPU / direct CPU |',
      '|---|---:|---:|---:|---:|---:|---:|',
      ...d.map((x, i) => {
        const y = t[i] as Round
        return `| ${i + 1} | ${x.tps.toFixed(0)} | ${y.tps.toFixed(0)} | ${x.gatewayUs.toFixed(0)} | ${y.gatewayUs.toFixed(0)} | ${y.connectorUs.toFixed(0)} | ${((y.gatewayUs + y.connectorUs) / x.gatewayUs).toFixed(2)} |`
      }),
    ]
    const md = {
      dTps: median(d.map((x) => x.tps)),
      tTps: median(t.map((x) => x.tps)),
      dG: median(d.map((x) => x.gatewayUs)),
      tG: median(t.map((x) => x.gatewayUs)),
      tC: median(t.map((x) => x.connectorUs)),
    }
    lines.push(
      `| median | ${md.dTps.toFixed(0)} | ${md.tTps.toFixed(0)} | ${md.dG.toFixed(0)} | ${md.tG.toFixed(0)} | ${md.tC.toFixed(0)} | ${((md.tG + md.tC) / md.dG).toFixed(2)} |`,
    )
    process.stdout.write(`${lines.join('\n')}\n`)
  } finally {
    if (connector && connector.exitCode === null) {
      const exited = new Promise((r) => connector?.once('exit', r))
      connector.kill('SIGTERM')
      await exited
    }
    await gw.cleanup()
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`)
  process.exit(1)
})
