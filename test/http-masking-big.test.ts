// Long masked responses: 100 MB of JSON from a streaming upstream of our own, plain and gzip (many
// gzip members, as a server that compresses per flush sends them), through the gateway with rules
// applying. Every byte the client receives is searched for the masked values, the records are
// counted, and the gateway's peak RSS is sampled from /proc: it must stay flat (bounded, not
// proportional to the body) and the cost linear (the relay once re-copied a growing backlog at
// every resume: 100 MB took 151 s).

import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { gzipSync } from 'node:zlib'
import { Agent, request } from 'undici'
import { TestGateway } from './helpers/gateway.js'
import { listenLoopback, policiesWithMasking } from './helpers/http-masking.js'

/** Size of each response in MB (GH_TEST_BIG_MB to change it). */
const BIG_MB = Number(process.env.GH_TEST_BIG_MB ?? 100)
/** Growth of the gateway's RSS allowed while it relays one response: well under the body's size. */
const RSS_BOUND = 150 * 1024 * 1024

const MASKING = `rules:
  - name: emails
    json_paths: ["$..email"]
    strategy: hash
  - name: ssn
    json_paths: ["$.users[*].ssn"]
    strategy: redact
  - name: cards
    json_paths: ["$..cards[*].number"]
    strategy: partial
    keep: 4
`

function record(i: number): string {
  return JSON.stringify({
    id: i,
    name: `user ${i}`,
    email: `u${i}@corp.example`,
    ssn: `123-45-678${i % 10}`,
    cards: [{ number: `4111 1111 1111 ${String(1000 + (i % 9000))}` }],
    matrix: [
      [i, [i + 1, { email: `deep${i}@corp.example` }]],
      ['a', 'b'],
    ],
  })
}

/** About 1 MiB of records, each preceded by a comma (the first one's comma is left out). */
const BLOCK = (() => {
  let s = ''
  for (let i = 0; s.length < 1024 * 1024; i++) s += `,${record(i)}`
  return Buffer.from(s)
})()
const RECORDS_PER_BLOCK = BLOCK.toString().split('"ssn"').length - 1
// gzip members: a body compressed in independent pieces is still one gzip stream to a decoder.
const GZ_HEAD = gzipSync(Buffer.concat([Buffer.from('{"users":['), BLOCK.subarray(1)]))
const GZ_BLOCK = gzipSync(BLOCK)
const GZ_TAIL = gzipSync(']}')

function upstream(): Server {
  return createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x')
    const blocks = Number(url.searchParams.get('mb') ?? '1')
    const gz = url.pathname === '/big.gz'
    res.writeHead(200, { 'content-type': 'application/json', ...(gz ? { 'content-encoding': 'gzip' } : {}) })
    let n = 0
    const next = (): void => {
      while (n <= blocks) {
        const last = n === blocks
        const part = gz
          ? n === 0
            ? GZ_HEAD
            : last
              ? GZ_TAIL
              : GZ_BLOCK
          : n === 0
            ? Buffer.concat([Buffer.from('{"users":['), BLOCK.subarray(1)])
            : last
              ? Buffer.from(']}')
              : BLOCK
        n++
        if (last) {
          res.end(part)
          return
        }
        if (!res.write(part)) {
          res.once('drain', next)
          return
        }
      }
    }
    next()
  })
}

describe('HTTP response masking: 100 MB responses', () => {
  let dir = ''
  let up: Server
  let gw: TestGateway
  let port = 0
  let dispatcher: Agent
  let alice = ''

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gh-httpbig-'))
    up = upstream()
    const upPort = await listenLoopback(up)
    const policyDir = policiesWithMasking(dir, MASKING)
    gw = await TestGateway.start({
      connections: [{ name: 'stream', protocol: 'http', url: `http://127.0.0.1:${upPort}` }],
      config: { listen: { api: '127.0.0.1:0', postgres: 'off', ssh: 'off', http: '127.0.0.1:0' }, policies: policyDir },
      // GH_TEST_GW_NODE_ARGS: node options for the gateway (a profile, a heap limit) when measuring.
      ...(process.env.GH_TEST_GW_NODE_ARGS ? { nodeArgs: process.env.GH_TEST_GW_NODE_ARGS.split(' ') } : {}),
    })
    const run = JSON.parse(readFileSync(join(gw.dataDir, 'run.json'), 'utf8')) as { listeners: Record<string, string> }
    port = Number(run.listeners.http?.split(':').pop())
    dispatcher = new Agent({ connect: { ca: readFileSync(join(gw.dataDir, 'tls', 'cert.pem'), 'utf8') }, bodyTimeout: 300_000 })
    alice = gw.token('user:alice')
  })

  after(async () => {
    await dispatcher?.close()
    await gw?.cleanup()
    up?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  async function big(path: string): Promise<void> {
    const pid = gw.proc?.pid
    assert.ok(pid)
    const rss = (): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024
    const cpu = (): number => {
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? []
      return (Number(f[11]) + Number(f[12])) / 100 // utime + stime, in clock ticks of 1/100 s
    }
    const before = rss()
    const cpu0 = cpu()
    let peak = before
    const timer = setInterval(() => {
      peak = Math.max(peak, rss())
    }, 50)
    const started = Date.now()
    const r = await request(`https://localhost:${port}/c/stream${path}?mb=${BIG_MB}`, {
      headers: { authorization: `Bearer ${alice}`, 'accept-encoding': 'gzip' },
      dispatcher,
      reset: true,
    })
    assert.equal(r.statusCode, 200)
    assert.equal(r.headers['content-encoding'], undefined, 'sent decoded')
    let bytes = 0
    let tail = Buffer.alloc(0)
    let records = 0
    for await (const c of r.body) {
      const chunk = c as Buffer
      bytes += chunk.length
      // Searched across chunk boundaries: the end of the previous chunk with this one.
      const window = Buffer.concat([tail, chunk])
      for (const s of ['@corp.example', '123-45-678', '4111 1111 1111 ']) assert.equal(window.indexOf(s), -1, `${s} reached the client`)
      let p = window.indexOf('"ssn":"****"', Math.max(0, tail.length - 11))
      while (p >= 0) {
        records++
        p = window.indexOf('"ssn":"****"', p + 1)
      }
      tail = window.subarray(Math.max(0, window.length - 32))
    }
    clearInterval(timer)
    peak = Math.max(peak, rss())
    const cpuSecs = cpu() - cpu0
    const secs = (Date.now() - started) / 1000
    const growth = peak - before
    const mb = bytes / 1048576
    process.stdout.write(
      `# ${path}: ${mb.toFixed(1)} MB masked to the client in ${secs.toFixed(1)} s (${(mb / secs).toFixed(1)} MB/s), gateway CPU ${cpuSecs.toFixed(1)} s (${(mb / cpuSecs).toFixed(1)} MB per CPU-second), ${records} records; gateway RSS ${(before / 1048576).toFixed(0)} MB before, peak ${(peak / 1048576).toFixed(0)} MB (+${(growth / 1048576).toFixed(0)} MB)\n`,
    )
    assert.equal(records, BIG_MB * RECORDS_PER_BLOCK, 'every record arrived, masked')
    assert.match(tail.toString(), /\]\}$/, 'the document is complete')
    assert.ok(growth < RSS_BOUND, `gateway RSS grew by ${(growth / 1048576).toFixed(0)} MB for a ${BIG_MB} MB body`)
  }

  test(`${BIG_MB} MB of JSON, streamed plain: masked, every byte searched, gateway memory flat`, async () => {
    await big('/big')
  })

  test(`${BIG_MB} MB of JSON, gzip in many members: decoded, masked, every byte searched, gateway memory flat`, async () => {
    await big('/big.gz')
  })

  test('audit: the result events count every masked value of the long responses', () => {
    const results = gw.auditEvents().filter((e) => e.type === 'result' && e.action === 'http.request')
    assert.equal(results.length, 2)
    for (const e of results) {
      const masked = e.masked as { path: string; count: number }[]
      assert.equal(masked.find((m) => m.path === '$.users[*].ssn')?.count, BIG_MB * RECORDS_PER_BLOCK)
      assert.equal(masked.find((m) => m.path === '$..email')?.count, 2 * BIG_MB * RECORDS_PER_BLOCK)
    }
  })
})
