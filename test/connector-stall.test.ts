// A stalled stream does not slow the others on the same connector link. In network namespaces
// made here (PostgreSQL in a private one, `gatehouse connector` beside it), one psql session runs
// a 1 GB `COPY … TO STDOUT` whose reader stops reading (or reads slowly), while `pgbench -S` runs
// through the same connector. Back-pressure must reach the PostgreSQL server (it waits on
// ClientWrite), the gateway must not buffer the COPY, and pgbench must keep most of its
// throughput. The TPS of each phase is printed as a diagnostic.

import assert from 'node:assert/strict'
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { after, before, describe, test } from 'node:test'
import { ConnectorLab, sleep, until } from './helpers/connector.js'

const lab = new ConnectorLab()
let token = ''
/** Seconds per pgbench phase: long enough to average out a loaded machine's noise, short enough for the suite. */
const PHASE_S = 6
/** ~1 GB: 1e6 rows of 1,000 bytes. */
const COPY_SQL = "COPY (select repeat('x', 1000) from generate_series(1, 1000000)) TO STDOUT"

before(async () => {
  try {
    lab.setUpNetwork()
    const init = spawnSync(
      'ip',
      ['netns', 'exec', lab.net.privateNs, 'pgbench', '-i', '-q', '-s', '2', '-h', lab.net.privateAddress, '-U', 'postgres', 'postgres'],
      { encoding: 'utf8', timeout: 120_000 },
    )
    assert.equal(init.status, 0, init.stderr)
    await lab.startGateway([
      {
        name: 'pg',
        protocol: 'postgres',
        address: `${lab.net.privateAddress}:5432`,
        database: 'postgres',
        user: 'postgres',
        via: 'edge-1',
      },
    ])
    token = lab.gateway.token('user:alice')
    const { key } = await lab.createKey('edge-1')
    lab.startConnector(key)
    await lab.attached(1)
  } catch (err) {
    await lab.cleanup()
    throw err
  }
})

after(() => lab.cleanup())

/** `pgbench -S` through the gateway and the connector for PHASE_S seconds: transactions and TPS. */
function pgbench(seconds = PHASE_S): Promise<{ tx: number; tps: number }> {
  return new Promise((resolve, reject) => {
    const p = spawn('pgbench', ['-n', '-S', '-c', '2', '-j', '1', '-T', String(seconds), lab.gateway.conninfo(token, 'pg')], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString()
    })
    p.stderr.on('data', (d: Buffer) => {
      out += d.toString()
    })
    p.once('close', (code) => {
      const tx = /number of transactions actually processed: (\d+)/.exec(out)
      const tps = /tps = ([\d.]+)/.exec(out)
      if (code !== 0 || !tx || !tps) reject(new Error(`pgbench exited ${code}: ${out}`))
      else resolve({ tx: Number(tx[1]), tps: Number(tps[1]) })
    })
  })
}

/** psql running COPY_SQL, its stdout a pipe this process reads only through `read` (never, when unused). */
function copySession(app: string): { proc: ChildProcess; read: (bytes: number) => number; exited: Promise<number | null> } {
  const proc = spawn('psql', ['-X', '-At', '-d', lab.gateway.conninfo(token, 'pg', `application_name=${app}`), '-c', COPY_SQL], {
    stdio: ['ignore', 'pipe', 'ignore'],
  })
  const out = proc.stdout
  if (!out) throw new Error('no stdout')
  out.pause()
  let total = 0
  return {
    proc,
    // Reads what is buffered, up to `bytes`: the slow reader calls this on a timer.
    read: (bytes: number) => {
      let got = 0
      for (;;) {
        const chunk = out.read() as Buffer | null
        if (chunk === null) break
        got += chunk.length
        if (got >= bytes) break
      }
      total += got
      return total
    },
    exited: new Promise((r) => proc.once('close', (code) => r(code))),
  }
}

/** Whether the private server's backend of `app` is blocked writing to its client (back-pressure reached it). */
function serverBlocked(app: string): boolean {
  return lab.net.privateSql(`select wait_event from pg_stat_activity where application_name = '${app}'`) === 'ClientWrite'
}

function gatewayRssMiB(): number {
  const pid = lab.gateway.proc?.pid
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return Number(m?.[1] ?? 0) / 1024
}

describe('connector: a stalled stream beside a busy one', () => {
  let baseline = { tx: 0, tps: 0 }

  test('baseline: pgbench -S through the connector alone', async (t) => {
    // A warm-up first: the gateway's first statements compile its policy paths.
    await pgbench(2)
    baseline = await pgbench()
    t.diagnostic(`baseline: ${baseline.tps.toFixed(0)} TPS (${baseline.tx} transactions in ${PHASE_S} s)`)
    assert.ok(baseline.tx > 0)
  })

  test('a 1 GB COPY whose reader stopped reading does not stall pgbench on the same link', async (t) => {
    const rssBefore = gatewayRssMiB()
    const copy = copySession('stalled-copy')
    try {
      await until('the COPY blocked on its client', () => serverBlocked('stalled-copy'), 60_000)
      const [link] = await lab.links()
      assert.equal(link?.streams, 1, 'the stalled COPY holds its stream open')
      const beside = await pgbench()
      t.diagnostic(
        `beside a stalled COPY: ${beside.tps.toFixed(0)} TPS (${beside.tx} transactions; ${((beside.tps / baseline.tps) * 100).toFixed(0)}% of baseline)`,
      )
      // Still stalled, still open: nothing was dropped to make room.
      assert.ok(serverBlocked('stalled-copy'), 'the COPY is still blocked on its client')
      assert.equal(copy.proc.exitCode, null)
      // A loaded two-core machine moves TPS by ±20% between runs; a starved stream would fall to ~0.
      assert.ok(beside.tps >= baseline.tps * 0.5, `pgbench fell to ${beside.tps} TPS from ${baseline.tps}`)
      // Flow control bounds what the gateway holds of the 1 GB: the stream's window and socket buffers.
      const grew = gatewayRssMiB() - rssBefore
      t.diagnostic(`gateway RSS grew ${grew.toFixed(0)} MiB while the COPY was stalled`)
      assert.ok(grew < 100, `the gateway's memory grew ${grew} MiB`)
    } finally {
      copy.proc.kill('SIGKILL')
      await copy.exited
    }
  })

  test('a COPY read slowly keeps flowing, and pgbench beside it keeps its throughput', async (t) => {
    const copy = copySession('slow-copy')
    // ~2 MB/s: 128 KiB every 60 ms.
    const timer = setInterval(() => copy.read(128 * 1024), 60)
    try {
      await until('the slow COPY flowing', () => copy.read(0) > 1024 * 1024, 60_000)
      const before = copy.read(0)
      const beside = await pgbench()
      const moved = copy.read(0) - before
      t.diagnostic(
        `beside a slowly read COPY: ${beside.tps.toFixed(0)} TPS (${((beside.tps / baseline.tps) * 100).toFixed(0)}% of baseline); the COPY moved ${(moved / 1048576).toFixed(1)} MiB meanwhile`,
      )
      assert.ok(moved > 1024 * 1024, 'the slow COPY kept moving')
      assert.ok(beside.tps >= baseline.tps * 0.5, `pgbench fell to ${beside.tps} TPS from ${baseline.tps}`)
    } finally {
      clearInterval(timer)
      copy.proc.kill('SIGKILL')
      await copy.exited
    }
    await sleep(200)
  })
})
