// Sinks never block the data path and never lose events: a real HTTP receiver on 127.0.0.1 that
// stalls (it sleeps far past the sink's timeout) does not slow sessions; once it recovers — even
// across a gateway restart — it has every event, each batch HMAC-signed, de-duplicated by id, and
// what it kept verifies the log (`audit verify --checkpoints`). A file sink rotates.

import assert from 'node:assert/strict'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { type AddressInfo, createServer as createTcpServer, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, test } from 'node:test'
import pg from 'pg'
import { checkSinkSignature } from '../engine/audit/sinks.js'
import { TestGateway } from './helpers/gateway.js'

const SECRET = 'test-sink-secret-0123456789'

/** A SIEM stand-in: keeps every line by event id; `mode` decides how it answers. */
class Receiver {
  mode: 'ok' | 'stall' = 'ok'
  readonly byId = new Map<string, string>()
  requests = 0
  badSignatures = 0
  private server: Server | null = null
  private readonly hanging = new Set<ServerResponse>()
  url = ''

  async start(): Promise<void> {
    this.server = createServer((req, res) => void this.handle(req, res))
    await new Promise<void>((r) => this.server?.listen(0, '127.0.0.1', () => r()))
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/ingest`
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = []
    for await (const c of req) chunks.push(c as Buffer)
    const body = Buffer.concat(chunks)
    this.requests++
    if (this.mode === 'stall') {
      // Sleeps long past the sink's timeout; the batch must be sent again later.
      this.hanging.add(res)
      setTimeout(() => {
        this.hanging.delete(res)
        res.destroy()
      }, 60_000).unref()
      return
    }
    const ts = String(req.headers['x-gatehouse-timestamp'] ?? '')
    const sig = String(req.headers['x-gatehouse-signature'] ?? '')
    if (!checkSinkSignature(SECRET, ts, body, sig)) {
      this.badSignatures++
      res.writeHead(401).end()
      return
    }
    for (const line of body.toString('utf8').split('\n')) {
      if (!line) continue
      const id = (JSON.parse(line) as { id: string }).id
      this.byId.set(id, line)
    }
    res.writeHead(204).end()
  }

  async stop(): Promise<void> {
    for (const r of this.hanging) r.destroy()
    await new Promise<void>((r) => this.server?.close(() => r()))
  }
}

async function waitFor(pred: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

async function timedStatements(gw: TestGateway, token: string, n: number, tag: string): Promise<number[]> {
  const c = new pg.Client({ host: '127.0.0.1', port: gw.pgPort, database: 'app', user: 'alice', password: token })
  await c.connect()
  const times: number[] = []
  try {
    for (let i = 0; i < n; i++) {
      const t = process.hrtime.bigint()
      await c.query(`SELECT '${tag}-${i}'`)
      times.push(Number(process.hrtime.bigint() - t) / 1e6)
    }
  } finally {
    await c.end()
  }
  return times.sort((a, b) => a - b)
}

const pct = (sorted: readonly number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? 0

describe('audit sinks', () => {
  const cleanups: (() => Promise<void>)[] = []
  after(async () => {
    for (const c of cleanups) await c()
  })

  test('a stalled HTTP receiver does not slow sessions; after it recovers (and a restart) it has every event', async (t) => {
    const rx = new Receiver()
    await rx.start()
    cleanups.push(() => rx.stop())
    const gw = await TestGateway.start({
      config: {
        audit: { sinks: [{ name: 'siem', type: 'http', url: rx.url, secret: 'env:GH_SINK_SECRET', batch_max: 50, timeout_ms: 1000 }] },
      },
      env: { GH_SINK_SECRET: SECRET },
    })
    cleanups.push(() => gw.cleanup())
    const token = gw.token('user:alice')

    const baseline = await timedStatements(gw, token, 200, 'baseline')
    await waitFor(() => [...rx.byId.values()].some((l) => l.includes('baseline-199')), 10_000, 'the baseline to arrive')

    rx.mode = 'stall'
    const started = Date.now()
    const stalled = await timedStatements(gw, token, 200, 'stalled')
    const elapsed = Date.now() - started
    t.diagnostic(
      `statement latency p50/p99: ${pct(baseline, 0.5).toFixed(2)}/${pct(baseline, 0.99).toFixed(2)} ms with the receiver up, ` +
        `${pct(stalled, 0.5).toFixed(2)}/${pct(stalled, 0.99).toFixed(2)} ms while it stalls`,
    )
    // A sink in the data path would wait on the receiver (1 s timeouts, growing backoff).
    assert.ok(pct(stalled, 0.99) < 250, `p99 ${pct(stalled, 0.99).toFixed(1)} ms while the receiver stalls`)
    assert.ok(
      pct(stalled, 0.5) < pct(baseline, 0.5) * 3 + 2,
      `median ${pct(stalled, 0.5).toFixed(2)} ms stalled vs ${pct(baseline, 0.5).toFixed(2)} ms before`,
    )
    assert.ok(elapsed < 10_000, `200 statements took ${elapsed} ms`)
    assert.ok(![...rx.byId.values()].some((l) => l.includes('stalled-199')), 'nothing got through while stalled')

    // Stop the gateway while the receiver is still down: the sink's cursor survives the restart.
    await gw.stop()
    await gw.launch()
    await timedStatements(gw, token, 20, 'after-restart')
    rx.mode = 'ok'
    await waitFor(() => [...rx.byId.values()].some((l) => l.includes('after-restart-19')), 40_000, 'the sink to catch up')
    await gw.stop()

    // Every line of the log, checkpoints included, reached the receiver (once per id).
    const exported = gw.cli(['audit', 'export'])
    assert.equal(exported.code, 0, exported.stderr)
    const lines = exported.stdout.split('\n').filter(Boolean)
    await waitFor(() => lines.every((l) => rx.byId.has((JSON.parse(l) as { id: string }).id)), 10_000, 'the shutdown checkpoint')
    const missing = lines.filter((l) => rx.byId.get((JSON.parse(l) as { id: string }).id) !== l)
    assert.deepEqual(missing, [], `${missing.length} of ${lines.length} lines missing or different at the receiver`)
    assert.equal(rx.badSignatures, 0)
    assert.ok(rx.requests > rx.byId.size / 50, 'batched')

    // What the receiver kept anchors the log: verify agrees, and would notice a cut.
    const kept = join(gw.dir, 'received.jsonl')
    writeFileSync(kept, `${[...rx.byId.values()].join('\n')}\n`)
    const v = gw.cli(['audit', 'verify', '--checkpoints', kept])
    assert.equal(v.code, 0, v.stdout + v.stderr)
    assert.match(v.stdout, /agrees with \d+ signed checkpoint/)
  })

  test('a syslog sink sends RFC 5424 messages over TCP with octet counting, and re-sends across a broken connection', async () => {
    const byId = new Map<string, string>()
    let connections = 0
    const sockets = new Set<Socket>()
    const server = createTcpServer((sock) => {
      connections++
      sockets.add(sock)
      let buf = Buffer.alloc(0)
      sock.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d])
        for (;;) {
          const sp = buf.indexOf(0x20)
          if (sp < 0) break
          const len = Number(buf.subarray(0, sp).toString())
          if (buf.length < sp + 1 + len) break
          const msg = buf.subarray(sp + 1, sp + 1 + len).toString('utf8')
          buf = buf.subarray(sp + 1 + len)
          const m = /^<(\d+)>1 \S+ \S+ gatehouse \d+ (\S+) \[gatehouse@32473 id="([^"]+)"\] (\{.*\})$/.exec(msg)
          assert.ok(m, `not RFC 5424: ${msg.slice(0, 120)}`)
          byId.set(m[3] as string, m[4] as string)
        }
      })
      sock.on('close', () => sockets.delete(sock))
      sock.on('error', () => undefined)
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())))
    const port = (server.address() as AddressInfo).port
    const gw = await TestGateway.start({ config: { audit: { sinks: [{ name: 'syslog', type: 'syslog', address: `127.0.0.1:${port}` }] } } })
    cleanups.push(() => gw.cleanup())
    const token = gw.token('user:alice')
    await timedStatements(gw, token, 30, 'syslog-a')
    await waitFor(() => [...byId.values()].some((l) => l.includes('syslog-a-29')), 10_000, 'syslog delivery')
    for (const s of sockets) s.destroy() // the collector restarts
    await timedStatements(gw, token, 30, 'syslog-b')
    await waitFor(() => [...byId.values()].some((l) => l.includes('syslog-b-29')), 15_000, 'delivery after reconnecting')
    await gw.stop()
    const lines = gw.cli(['audit', 'export']).stdout.split('\n').filter(Boolean)
    await waitFor(() => lines.every((l) => byId.has((JSON.parse(l) as { id: string }).id)), 10_000, 'every line')
    assert.ok(lines.every((l) => byId.get((JSON.parse(l) as { id: string }).id) === l))
    assert.ok(connections >= 2)
  })

  test('a file sink appends verbatim lines and rotates', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gh-sink-file-'))
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }))
    const path = join(dir, 'audit.jsonl')
    const gw = await TestGateway.start({
      config: { audit: { sinks: [{ name: 'archive', type: 'file', path, max_bytes: 8192, keep: 2 }] } },
    })
    cleanups.push(() => gw.cleanup())
    await timedStatements(gw, gw.token('user:alice'), 100, 'rotate')
    await gw.stop()
    assert.ok(existsSync(path) && existsSync(`${path}.1`) && existsSync(`${path}.2`))
    assert.ok(!existsSync(`${path}.3`), 'keep: 2')
    const newest = readFileSync(path, 'utf8').split('\n').filter(Boolean)
    const older = readFileSync(`${path}.1`, 'utf8').split('\n').filter(Boolean)
    assert.ok(readFileSync(path).length <= 8192 + 4096)
    const n = (l: string): number => Number((JSON.parse(l) as { id: string }).id.split('-').pop())
    const seq = [...older, ...newest].map(n)
    assert.ok(
      seq.every((x, i) => i === 0 || x === (seq[i - 1] as number) + 1),
      'rotated files hold consecutive events',
    )
    assert.match(newest[newest.length - 1] as string, /"reason":"shutdown"/)
  })
})
