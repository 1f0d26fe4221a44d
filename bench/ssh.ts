// The SSH benchmark: what a file transfer and a keystroke cost through Gatehouse, side by side with
// a direct connection to the same OpenSSH sshd, in the same run on the same machine.
//
//   node dist/bench/ssh.js [--size MiB] [--runs N] [--keys N]
//
// 1. Throughput: the real `scp` client uploads a --size MiB file (default 1024) directly to sshd
//    (public key) and through Gatehouse (token as the password; the SFTP gate decides and audits
//    the file operations, recording on), runs alternated, medians reported as MB/s and the ratio.
// 2. Keystroke round trip: an ssh2 client (the same client code both ways) opens a PTY running
//    `cat`; one byte is sent and its echo awaited, --keys times (default 2000) after a warm-up;
//    median and p99 both ways and the microseconds Gatehouse adds.
//
// Everything listens on loopback; every process started here is stopped at the end and on error.

import { spawnSync } from 'node:child_process'
import { closeSync, openSync, readFileSync, rmSync, statSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import ssh2 from 'ssh2'
import { REPO, TestGateway } from '../test/helpers/gateway.js'
import { sshClientSetup, TestSshd } from '../test/helpers/sshd.js'

interface Options {
  readonly sizeMiB: number
  readonly runs: number
  readonly keys: number
}

function parseOptions(argv: readonly string[]): Options {
  const o = { sizeMiB: 1024, runs: 3, keys: 2000 }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const v = Number(argv[i + 1])
    if (!Number.isInteger(v) || v <= 0)
      throw new Error(`usage: node dist/bench/ssh.js [--size MiB] [--runs N] [--keys N] (bad value for ${a})`)
    if (a === '--size') o.sizeMiB = v
    else if (a === '--runs') o.runs = v
    else if (a === '--keys') o.keys = v
    else throw new Error(`unknown option ${a}`)
    i++
  }
  return o
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor((s.length - 1) / 2)] as number
}

function percentile(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] as number
}

function makeFile(path: string, mib: number): void {
  const fd = openSync(path, 'w')
  const chunk = Buffer.alloc(1024 * 1024)
  for (let i = 0; i < chunk.length; i += 4) chunk.writeUInt32LE((i * 2654435761) >>> 0, i)
  for (let i = 0; i < mib; i++) {
    chunk.writeUInt32LE(i, 0)
    writeSync(fd, chunk)
  }
  closeSync(fd)
}

/** One scp upload; seconds. */
function scp(args: readonly string[], env: Record<string, string>): number {
  const t0 = process.hrtime.bigint()
  const r = spawnSync('scp', args, { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 600_000 })
  if (r.status !== 0) throw new Error(`scp failed (${r.status}): ${r.stderr}`)
  return Number(process.hrtime.bigint() - t0) / 1e9
}

/** Keystroke round trips (µs) in a PTY running cat, through an ssh2 client with `auth`. */
async function keystrokes(port: number, auth: Record<string, unknown>, n: number): Promise<number[]> {
  const client = new ssh2.Client()
  await new Promise<void>((resolve, reject) => {
    client.on('ready', () => resolve())
    client.on('error', reject)
    client.connect({ host: '127.0.0.1', port, readyTimeout: 30_000, ...auth })
  })
  const ch = await new Promise<ssh2.ClientChannel>((resolve, reject) =>
    client.exec('stty raw -echo; echo ready; exec cat', { pty: { term: 'xterm', rows: 24, cols: 80 } }, (err, c) =>
      err ? reject(err) : resolve(c),
    ),
  )
  let pending: (() => void) | null = null
  let seen = ''
  ch.on('data', (d: Buffer) => {
    seen += d.toString('latin1')
    if (pending && seen.length > 0) {
      seen = ''
      const p = pending
      pending = null
      p()
    }
  })
  await new Promise<void>((resolve) => {
    const t = setInterval(() => {
      if (seen.includes('ready')) {
        clearInterval(t)
        seen = ''
        resolve()
      }
    }, 10)
  })
  const times: number[] = []
  const warm = Math.min(200, Math.floor(n / 5))
  for (let i = 0; i < n + warm; i++) {
    const t0 = process.hrtime.bigint()
    await new Promise<void>((resolve) => {
      pending = resolve
      ch.write('k')
    })
    if (i >= warm) times.push(Number(process.hrtime.bigint() - t0) / 1000)
  }
  ch.end()
  client.end()
  return times
}

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2))
  const sshd = await TestSshd.start()
  let gw: TestGateway | null = null
  try {
    gw = await TestGateway.start({
      connections: [sshd.connection('web-1', { record: true })],
      config: { listen: { api: '127.0.0.1:0', ssh: '127.0.0.1:0' }, policies: join(REPO, 'test/data/ssh') },
    })
    const run = JSON.parse(readFileSync(join(gw.dataDir, 'run.json'), 'utf8')) as { listeners: Record<string, string> }
    const gwPort = Number((run.listeners.ssh ?? '').split(':').pop())
    const token = gw.token('user:bench')
    const src = join(gw.dir, 'payload.bin')
    makeFile(src, o.sizeMiB)
    const bytes = statSync(src).size
    const dest = join(sshd.dir, 'payload.bin')
    const direct = [
      '-F',
      '/dev/null',
      '-i',
      sshd.clientKeyPath,
      '-o',
      'IdentitiesOnly=yes',
      '-o',
      'StrictHostKeyChecking=no',
      '-o',
      'UserKnownHostsFile=/dev/null',
      '-o',
      'LogLevel=ERROR',
      '-P',
      String(sshd.port),
      src,
      `${sshd.user}@127.0.0.1:${dest}`,
    ]
    const c = sshClientSetup(gw.dir, token)
    const through = [...c.opts, '-P', String(gwPort), src, `web-1@127.0.0.1:${dest}`]
    const t: { direct: number[]; gatehouse: number[] } = { direct: [], gatehouse: [] }
    process.stderr.write(`scp of ${o.sizeMiB} MiB, ${o.runs} runs each, alternated\n`)
    for (let i = 0; i < o.runs; i++) {
      t.direct.push(scp(direct, {}))
      rmSync(dest, { force: true })
      t.gatehouse.push(scp(through, c.env))
      if (statSync(dest).size !== bytes) throw new Error('the upload through Gatehouse is incomplete')
      rmSync(dest, { force: true })
      process.stderr.write(`  run ${i + 1}: direct ${t.direct[i]?.toFixed(2)} s, gatehouse ${t.gatehouse[i]?.toFixed(2)} s\n`)
    }
    rmSync(src, { force: true })
    const mbps = (s: number): number => bytes / 1e6 / s
    const dMbps = mbps(median(t.direct))
    const gMbps = mbps(median(t.gatehouse))

    process.stderr.write(`keystroke round trips: ${o.keys} each way\n`)
    const kd = await keystrokes(sshd.port, { username: sshd.user, privateKey: readFileSync(sshd.clientKeyPath) }, o.keys)
    const kg = await keystrokes(gwPort, { username: 'web-1', password: token }, o.keys)
    const row = (name: string, xs: number[]): string => `| ${name} | ${median(xs).toFixed(0)} µs | ${percentile(xs, 99).toFixed(0)} µs |`
    const lines = [
      `## SSH (${new Date().toISOString().slice(0, 10)}, ${o.sizeMiB} MiB scp, ${o.runs} runs, ${o.keys} keystrokes)`,
      '',
      '| scp upload (sftp protocol) | MB/s (median) |',
      '|---|---|',
      `| direct to sshd | ${dMbps.toFixed(1)} |`,
      `| through Gatehouse (recording on) | ${gMbps.toFixed(1)} |`,
      `| ratio | ${((gMbps / dMbps) * 100).toFixed(1)} % |`,
      '',
      '| keystroke round trip (PTY, cat) | p50 | p99 |',
      '|---|---|---|',
      row('direct to sshd', kd),
      row('through Gatehouse', kg),
      `| added by Gatehouse | ${(median(kg) - median(kd)).toFixed(0)} µs | ${(percentile(kg, 99) - percentile(kd, 99)).toFixed(0)} µs |`,
      '',
    ]
    process.stdout.write(`${lines.join('\n')}\n`)
  } finally {
    await gw?.cleanup()
    await sshd.stop()
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`ssh bench: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exit(1)
})
