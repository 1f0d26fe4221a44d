// Routes to an unmasked representation beyond those of http-masking.test.ts, each a negative test:
// HTTP/1.0, pipelined requests, the upstream's chunked trailers, Content-Encoding spelled in upper
// case, `identity` listed with others, stacked encodings, and a decompression bomb (a small gzip
// body that inflates to 96 MB: decoded as the client reads, with the gateway's memory flat). Every
// byte the client received is searched for the masked values.

import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { brotliCompressSync, gzipSync } from 'node:zlib'
import { Agent, request } from 'undici'
import { TestGateway } from './helpers/gateway.js'
import { listenLoopback, policiesWithMasking } from './helpers/http-masking.js'
import { rawExchange, statusOf } from './helpers/httpd.js'

const MASKING = `rules:
  - name: emails
    json_paths: ["$..email"]
    connections: [stream]
    strategy: hash
  - name: ssn
    json_paths: ["$..ssn"]
    connections: [stream]
    strategy: redact
detectors:
  - { name: email, connections: [texts] }
  - { name: ssn, connections: [texts] }
  - { name: card, connections: [texts], clear_for: [billing] }
`
const TEXT = 'Dear ann.secret@corp.example,\nyour card 4111 1111 1111 1111 and ssn 123-45-6781 are on file.\n'
const SECRETS = ['ann.secret', '123-45-678', 'corp.example']
const USERS = JSON.stringify({ users: [{ email: 'ann.secret@corp.example', ssn: '123-45-6781' }] })
const BOMB_MB = 96
/** The gateway's RSS may grow this much meanwhile (garbage not yet collected; a decoded body held whole is more). */
const BOMB_RSS_MB = 64

function assertNoSecret(body: Buffer | string, where: string): void {
  const b = Buffer.isBuffer(body) ? body : Buffer.from(body, 'latin1')
  for (const s of SECRETS) assert.equal(b.indexOf(s), -1, `${where}: ${JSON.stringify(s)} reached the client`)
}

function upstream(): Server {
  const gz = gzipSync(USERS)
  // gzip members (one stream to a decoder): 1 MiB of padding compresses to about 1 KiB.
  const pad = gzipSync(Buffer.alloc(1048576, 0x41))
  const bomb = Buffer.concat([gzipSync('{"pad":"'), ...Array.from({ length: BOMB_MB }, () => pad), gzipSync(`",${USERS.slice(1)}`)])
  return createServer((req, res) => {
    const json = (body: Buffer | string, encoding?: string): void => {
      res.writeHead(200, { 'content-type': 'application/json', ...(encoding ? { 'content-encoding': encoding } : {}) })
      res.end(body)
    }
    switch (req.url) {
      case '/users':
        return json(USERS)
      case '/gzip-upper':
        return json(gz, 'GZIP')
      case '/identity':
        return json(USERS, 'identity')
      case '/identity-gzip':
        return json(gz, 'identity, gzip')
      case '/stacked-upper':
        return json(brotliCompressSync(gz), 'X-GZIP, BR')
      case '/bomb':
        return json(bomb, 'gzip')
      case '/text':
        if (req.headers.range) {
          res.writeHead(206, { 'content-type': 'text/plain', 'content-range': 'bytes 0-9/100' })
          res.end(TEXT.slice(0, 10))
          return
        }
        // Written in pieces that split the values.
        res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' })
        for (let i = 0; i < TEXT.length; i += 7) res.write(TEXT.slice(i, i + 7))
        res.end()
        return
      case '/text.gz':
        res.writeHead(200, { 'content-type': 'text/csv', 'content-encoding': 'gzip' })
        res.end(gzipSync(TEXT.repeat(1000)))
        return
      case '/text-koi8':
        res.writeHead(200, { 'content-type': 'text/plain; charset=koi8-r' })
        res.end(TEXT)
        return
      case '/trailers':
        res.writeHead(200, { 'content-type': 'application/json', trailer: 'x-user' })
        res.write(USERS)
        res.addTrailers({ 'x-user': 'ann.secret@corp.example' })
        res.end()
        return
      default:
        res.writeHead(404)
        res.end()
    }
  })
}

describe('HTTP response masking: other routes to the clear body', () => {
  let dir = ''
  let up: Server
  let gw: TestGateway
  let port = 0
  let ca = ''
  let dispatcher: Agent
  let alice = ''

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gh-httproutes-'))
    up = upstream()
    const upPort = await listenLoopback(up)
    const policyDir = policiesWithMasking(dir, MASKING)
    gw = await TestGateway.start({
      connections: [
        { name: 'stream', protocol: 'http', url: `http://127.0.0.1:${upPort}` },
        { name: 'texts', protocol: 'http', url: `http://127.0.0.1:${upPort}` },
      ],
      config: { listen: { api: '127.0.0.1:0', postgres: 'off', ssh: 'off', http: '127.0.0.1:0' }, policies: policyDir },
    })
    port = Number(gw.listeners.http?.split(':').pop())
    ca = readFileSync(join(gw.dataDir, 'tls', 'cert.pem'), 'utf8')
    dispatcher = new Agent({ connect: { ca }, bodyTimeout: 60_000 })
    alice = gw.token('user:alice')
  })

  after(async () => {
    await dispatcher?.close()
    await gw?.cleanup()
    up?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  async function get(
    path: string,
    opts: { token?: string; connection?: string; headers?: Record<string, string> } = {},
  ): Promise<{ status: number; headers: Record<string, unknown>; body: Buffer; trailers: Record<string, unknown> }> {
    const r = await request(`https://localhost:${port}/c/${opts.connection ?? 'stream'}${path}`, {
      headers: { authorization: `Bearer ${opts.token ?? alice}`, 'accept-encoding': 'gzip, br', te: 'trailers', ...opts.headers },
      dispatcher,
      reset: true,
    })
    const body = Buffer.from(await r.body.arrayBuffer())
    return { status: r.statusCode, headers: r.headers, body, trailers: r.trailers }
  }

  test('Content-Encoding in upper case, identity beside gzip, x-gzip and br stacked: decoded and masked', async () => {
    for (const p of ['/gzip-upper', '/identity', '/identity-gzip', '/stacked-upper']) {
      const r = await get(p)
      assert.equal(r.status, 200, p)
      assert.equal(r.headers['content-encoding'], undefined, p)
      assertNoSecret(r.body, p)
      assert.equal((JSON.parse(r.body.toString()) as { users: { ssn: string }[] }).users[0]?.ssn, '****', p)
    }
  })

  test("the upstream's trailers never reach the client", async () => {
    const r = await get('/trailers')
    assert.equal(r.status, 200)
    assertNoSecret(r.body, 'trailers body')
    assertNoSecret(JSON.stringify(r.trailers), 'trailers')
    assertNoSecret(JSON.stringify(r.headers), 'trailer header')
  })

  test('HTTP/1.0 and pipelined HTTP/1.1 requests get masked bodies', async () => {
    const auth = `Authorization: Bearer ${alice}\r\n`
    const old = await rawExchange(port, `GET /c/stream/users HTTP/1.0\r\nHost: localhost\r\n${auth}\r\n`, { ca })
    assert.equal(statusOf(old), 200)
    assertNoSecret(old, 'HTTP/1.0')
    assert.match(old, /"ssn":"\*\*\*\*"/)
    const two = await rawExchange(
      port,
      `GET /c/stream/users HTTP/1.1\r\nHost: localhost\r\n${auth}\r\nGET /c/stream/gzip-upper HTTP/1.1\r\nHost: localhost\r\n${auth}Connection: close\r\n\r\n`,
      { ca },
    )
    assert.equal(two.match(/^HTTP\/1\.1 200/gm)?.length, 2, 'both answered')
    assertNoSecret(two, 'pipelined')
    assert.equal(two.match(/"ssn":"\*\*\*\*"/g)?.length, 2)
  })

  test('text bodies: the detectors mask values split across chunks, gzip decoded, Range dropped; an unknown charset is refused', async () => {
    const t = await get('/text', { connection: 'texts', headers: { range: 'bytes=0-9' } })
    assert.equal(t.status, 200)
    assert.equal(t.body.toString(), 'Dear ****,\nyour card **** and ssn **** are on file.\n')
    const z = await get('/text.gz', { connection: 'texts' })
    assert.equal(z.status, 200)
    assert.equal(z.headers['content-encoding'], undefined)
    assertNoSecret(z.body, 'text.gz')
    assert.equal(z.body.toString().split('\n').length, 2001)
    const k = await get('/text-koi8', { connection: 'texts' })
    assert.equal(k.status, 502)
    assertNoSecret(k.body, 'koi8')
    // A detector's clear_for group sees its matches; the others stay masked.
    const billing = gw.token('user:bill', ['--group', 'billing'])
    const b = await get('/text', { connection: 'texts', token: billing })
    assert.equal(b.body.toString(), 'Dear ****,\nyour card 4111 1111 1111 1111 and ssn **** are on file.\n')
    const audit = gw.auditEvents().filter((e) => e.type === 'result' && e.action === 'http.request')
    const masked = audit.flatMap((e) => (e.masked as { detector?: string; count: number }[] | undefined) ?? [])
    assert.ok(masked.some((m) => m.detector === 'card' && m.count === 1000))
    assert.ok(masked.some((m) => m.detector === 'email'))
  })

  test(`a gzip bomb (${BOMB_MB} MB from a small body) is decoded as the client reads, memory flat, masked`, async () => {
    const pid = gw.proc?.pid
    assert.ok(pid)
    const rss = (): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024
    const before = rss()
    let peak = before
    const timer = setInterval(() => {
      peak = Math.max(peak, rss())
    }, 20)
    const r = await request(`https://localhost:${port}/c/stream/bomb`, {
      headers: { authorization: `Bearer ${alice}` },
      dispatcher,
      reset: true,
    })
    assert.equal(r.statusCode, 200)
    let bytes = 0
    let tail = Buffer.alloc(0)
    for await (const c of r.body) {
      const window = Buffer.concat([tail, c as Buffer])
      assertNoSecret(window, 'bomb')
      bytes += (c as Buffer).length
      tail = window.subarray(Math.max(0, window.length - 200))
    }
    clearInterval(timer)
    assert.ok(bytes > BOMB_MB * 1048576)
    assert.match(tail.toString(), /"ssn":"\*\*\*\*"/)
    const growth = (peak - before) / 1048576
    process.stdout.write(`# gzip bomb: ${(bytes / 1048576).toFixed(1)} MB decoded, gateway RSS +${growth.toFixed(0)} MB\n`)
    assert.ok(growth < BOMB_RSS_MB, `gateway RSS grew by ${growth.toFixed(0)} MB`)
  })
})
