// A 50 MB JSON response through the HTTP proxy, masked, against the same response unmasked (a
// caller the rules clear) and straight from the upstream, in the same run. The upstream is a child
// process that holds the document in memory and writes it in 64 KiB pieces (gzip-compressed once
// up front for the gzip case); the client is this process, reading and discarding. Reported per
// case: MB of body per CPU-second of the gateway process (utime+stime from /proc, so other work on
// the shared machine counts less), MB/s wall-clock, and the gateway's RSS growth; best and median of
// --runs, runs of the cases alternated.
//
//   node dist/bench/http-mask.js [--mb 50] [--runs 3]
//
// Plain HTTP on loopback (the gateway accepts it from loopback clients): TLS would add the same
// encryption cost to every case through the gateway.

import { type ChildProcess, spawn } from 'node:child_process'
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Agent, request } from 'undici'
import { REPO, TestGateway } from '../test/helpers/gateway.js'
import { arg } from './common.js'

const MB = arg('--mb', 50)
const RUNS = arg('--runs', 3)

// The upstream: the document of bench/json-mask.ts (a list endpoint: e-mail, SSN, nested address,
// orders with card numbers, tags), plain at /doc and gzip-compressed at /doc.gz.
const UPSTREAM = `
const http = require('node:http')
const zlib = require('node:zlib')
const parts = ['{"users":[']
let size = 10
for (let i = 0; size < ${MB} * 1048576; i++) {
  const u = {
    id: i, name: 'User Number ' + i, email: 'user' + i + '@example.com',
    ssn: (100 + (i % 800)) + '-' + (10 + (i % 89)) + '-' + (1000 + (i % 8999)),
    active: i % 3 === 0, score: i * 1.25,
    address: { street: i + ' Main Street', city: 'Springfield', zip: String(10000 + (i % 89999)), geo: { lat: 40.1 + i / 1e6, lng: -73.2 } },
    orders: [
      { id: i * 10, total: 12.5, card: '4111 1111 1111 1111', items: [{ sku: 'A-1', qty: 1 }] },
      { id: i * 10 + 1, total: 99.99, card: '5500 0000 0000 0004', items: [{ sku: 'B-2', qty: 3 }, { sku: 'C-3', qty: 1 }] },
    ],
    tags: ['alpha', 'beta', 'gamma\\u00e9'], note: null,
  }
  const s = (i === 0 ? '' : ',') + JSON.stringify(u)
  parts.push(s)
  size += Buffer.byteLength(s)
}
parts.push(']}')
const doc = Buffer.from(parts.join(''))
const gz = zlib.gzipSync(doc, { level: 6 })
http.createServer((req, res) => {
  const z = req.url.startsWith('/doc.gz')
  const body = z ? gz : doc
  res.writeHead(200, { 'content-type': 'application/json', ...(z ? { 'content-encoding': 'gzip' } : {}) })
  let p = 0
  const more = () => {
    while (p < body.length) {
      const piece = body.subarray(p, p + 65536)
      p += piece.length
      if (p >= body.length) return res.end(piece)
      if (!res.write(piece)) return res.once('drain', more)
    }
  }
  more()
}).listen(0, '127.0.0.1', function () { process.stdout.write(JSON.stringify({ port: this.address().port, bytes: doc.length, gz: gz.length }) + '\\n') })
`

const MASKING = `rules:
  - name: ssn
    json_paths: ["$.users[*].ssn"]
    strategy: redact
    clear_for: [pii]
  - name: emails
    json_paths: ["$..email"]
    connections: [heavy]
    strategy: hash
    clear_for: [pii]
  - name: cards
    json_paths: ["$..card"]
    connections: [heavy]
    strategy: partial
    keep: 4
    clear_for: [pii]
`

interface Case {
  readonly name: string
  readonly url: (gwPort: number, upPort: number) => string
  readonly token: 'clear' | 'masked' | null
}

const CASES: readonly Case[] = [
  { name: 'upstream directly', url: (_g, u) => `http://127.0.0.1:${u}/doc`, token: null },
  { name: 'gateway, unmasked (a cleared caller)', url: (g) => `http://127.0.0.1:${g}/c/light/doc`, token: 'clear' },
  { name: 'gateway, masked: $.users[*].ssn redact', url: (g) => `http://127.0.0.1:${g}/c/light/doc`, token: 'masked' },
  {
    name: 'gateway, masked: $..email hash + $.users[*].ssn redact + $..card partial',
    url: (g) => `http://127.0.0.1:${g}/c/heavy/doc`,
    token: 'masked',
  },
  {
    name: 'gateway, masked as above, upstream gzip (decoded to mask)',
    url: (g) => `http://127.0.0.1:${g}/c/heavy/doc.gz`,
    token: 'masked',
  },
]

function procStat(pid: number): { cpu: number; rss: number } {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? []
  const rss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024
  return { cpu: (Number(f[11]) + Number(f[12])) / 100, rss }
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)] as number
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'gh-bench-httpmask-'))
  const up: ChildProcess = spawn(process.execPath, ['-e', UPSTREAM], { stdio: ['ignore', 'pipe', 'inherit'] })
  let gw: TestGateway | null = null
  const agent = new Agent({ bodyTimeout: 600_000, headersTimeout: 600_000 })
  try {
    const info = await new Promise<{ port: number; bytes: number; gz: number }>((resolve, reject) => {
      up.stdout?.once('data', (d: Buffer) => resolve(JSON.parse(d.toString()) as { port: number; bytes: number; gz: number }))
      up.once('exit', () => reject(new Error('the upstream exited')))
    })
    const policyDir = join(dir, 'policies')
    cpSync(join(REPO, 'policies'), policyDir, { recursive: true })
    rmSync(join(policyDir, 'default.cases.yaml'), { force: true })
    writeFileSync(join(policyDir, 'masking.yaml'), MASKING)
    gw = await TestGateway.start({
      connections: [
        { name: 'light', protocol: 'http', url: `http://127.0.0.1:${info.port}` },
        { name: 'heavy', protocol: 'http', url: `http://127.0.0.1:${info.port}` },
      ],
      config: { listen: { api: '127.0.0.1:0', postgres: 'off', ssh: 'off', http: '127.0.0.1:0' }, policies: policyDir },
    })
    const gwPort = Number(gw.listeners.http?.split(':').pop())
    const pid = gw.proc?.pid as number
    const tokens = { clear: gw.token('user:carol', ['--group', 'pii']), masked: gw.token('user:alice') }
    const mb = info.bytes / 1048576
    process.stdout.write(
      `document: ${mb.toFixed(1)} MB (gzip ${(info.gz / 1048576).toFixed(1)} MB); ${RUNS} runs per case, alternated; load average ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}\n`,
    )
    const samples = new Map<string, { cpuRate: number[]; wallRate: number[]; rss: number[] }>()
    const once = async (c: Case): Promise<void> => {
      const s0 = procStat(pid)
      let peak = s0.rss
      const timer = setInterval(() => {
        peak = Math.max(peak, procStat(pid).rss)
      }, 50)
      const t0 = process.hrtime.bigint()
      const r = await request(c.url(gwPort, info.port), {
        dispatcher: agent,
        headers: c.token === null ? {} : { authorization: `Bearer ${tokens[c.token]}` },
      })
      let n = 0
      for await (const chunk of r.body) n += (chunk as Buffer).length
      const secs = Number(process.hrtime.bigint() - t0) / 1e9
      clearInterval(timer)
      const s1 = procStat(pid)
      if (r.statusCode !== 200 || n < info.bytes * 0.5) throw new Error(`${c.name}: status ${r.statusCode}, ${n} bytes`)
      const e = samples.get(c.name) ?? { cpuRate: [], wallRate: [], rss: [] }
      // MB of the upstream's document (uncompressed) per second: the same work unit for every case.
      if (c.token !== null) e.cpuRate.push(mb / Math.max(0.01, s1.cpu - s0.cpu))
      e.wallRate.push(mb / secs)
      e.rss.push((Math.max(peak, s1.rss) - s0.rss) / 1048576)
      samples.set(c.name, e)
    }
    for (const c of CASES) await once(c) // warm-up, not counted
    samples.clear()
    for (let r = 0; r < RUNS; r++) for (const c of CASES) await once(c)
    process.stdout.write(
      '\n| case | MB per gateway CPU-second (best / median) | MB/s wall (median) | gateway RSS growth (max) |\n|---|---:|---:|---:|\n',
    )
    for (const c of CASES) {
      const e = samples.get(c.name)
      if (!e) continue
      const cpu = e.cpuRate.length > 0 ? `${Math.max(...e.cpuRate).toFixed(1)} / ${median(e.cpuRate).toFixed(1)}` : '–'
      const rss = c.token === null ? '–' : `+${Math.max(...e.rss).toFixed(0)} MB`
      process.stdout.write(`| ${c.name} | ${cpu} | ${median(e.wallRate).toFixed(1)} | ${rss} |\n`)
    }
  } finally {
    await agent.close()
    await gw?.cleanup()
    up.kill()
    rmSync(dir, { recursive: true, force: true })
  }
}

await main()
