// Masking HTTP response bodies (json_paths rules) against json-server and a streaming upstream of
// our own: nested arrays, gzip/deflate/br, NDJSON, server-sent events (100 MB bodies:
// http-masking-big.test.ts), every route that could hand over an unmasked representation (Range, HEAD,
// conditional requests, content negotiation, unknown encodings, broken JSON) refused or neutralised,
// and every byte the client received searched for the masked values. A cleared chain (a group in
// clear_for, or unmask:<rule> in an agent's scope) gets the clear values.

import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib'
import { Agent, request } from 'undici'
import { TestGateway } from './helpers/gateway.js'
import { listenLoopback, policiesWithMasking } from './helpers/http-masking.js'
import { type JsonServer, startJsonServer } from './helpers/httpd.js'

const MASKING = `rules:
  - name: emails
    json_paths: ["$..email"]
    strategy: hash
    clear_for: [pii]
  - name: ssn
    json_paths: ["$.users[*].ssn", "$[*].ssn", "$.ssn", "$.object.ssn"]
    connections: [api, stream]
    strategy: redact
    clear_for: [pii]
  - name: cards
    json_paths: ["$..cards[*].number"]
    connections: [{ labels: { data: customers } }]
    strategy: partial
    keep: 4
    clear_for: [pii]
`

const USERS = [
  {
    id: 1,
    name: 'Ann',
    email: 'ann.secret@corp.example',
    ssn: '123-45-6781',
    cards: [{ number: '4111 1111 1111 1111' }],
    tags: [['x', ['y']]],
  },
  {
    id: 2,
    name: 'Bob',
    email: 'bob.secret@corp.example',
    ssn: '123-45-6782',
    cards: [],
    profile: { contact: { email: 'bob.home@corp.example' } },
  },
]
/** Substrings of the masked values: none may reach a caller that is not cleared. */
const SECRETS = ['ann.secret', 'bob.secret', 'bob.home', '123-45-678', '4111 1111 1111', 'corp.example']

function assertNoSecret(body: Buffer | string, where: string): void {
  const b = Buffer.isBuffer(body) ? body : Buffer.from(body)
  for (const s of SECRETS) assert.equal(b.indexOf(s), -1, `${where}: ${JSON.stringify(s)} reached the client`)
  // nor in a JSON-escaped or base64 spelling
  for (const s of SECRETS) assert.equal(b.indexOf(Buffer.from(s).toString('base64').slice(0, 12)), -1, `${where}: base64 of ${s}`)
}

function upstream(): Server {
  const users = JSON.stringify({ users: USERS })
  return createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://x')
    const json = (body: string | Buffer, headers: Record<string, string> = {}): void => {
      res.writeHead(200, { 'content-type': 'application/json', ...headers })
      res.end(body)
    }
    switch (url.pathname) {
      case '/users':
        // Answers a Range request with a slice, a matching If-None-Match with 304: the gateway must
        // never let either through when rules apply.
        if (req.headers.range) {
          res.writeHead(206, { 'content-type': 'application/json', 'content-range': `bytes 0-39/${users.length}` })
          res.end(users.slice(0, 40))
          return
        }
        if (req.headers['if-none-match'] === '"v1"') {
          res.writeHead(304, { etag: '"v1"' })
          res.end()
          return
        }
        return json(users, { etag: '"v1"', 'content-md5': 'abc', 'content-length': String(Buffer.byteLength(users)) })
      case '/echo-headers':
        return json(JSON.stringify({ headers: req.headers }))
      case '/gzip':
        return json(gzipSync(users), { 'content-encoding': 'gzip' })
      case '/deflate':
        return json(deflateSync(users), { 'content-encoding': 'deflate' })
      case '/br':
        return json(brotliCompressSync(users), { 'content-encoding': 'br' })
      case '/gzip-br':
        return json(brotliCompressSync(gzipSync(users)), { 'content-encoding': 'gzip, br' })
      case '/zstd':
        return json(users, { 'content-encoding': 'zstd' })
      case '/csv':
        res.writeHead(200, { 'content-type': 'text/csv' })
        res.end(USERS.map((u) => `${u.id},${u.email},${u.ssn}`).join('\n'))
        return
      case '/latin1':
        return json(users, { 'content-type': 'application/json; charset=iso-8859-1' })
      case '/no-type':
        res.writeHead(200)
        res.end(users)
        return
      case '/empty':
        res.writeHead(204)
        res.end()
        return
      case '/broken':
        // Valid up to a masked value, then broken, then a value that would be masked: the client
        // must get a cut stream, never the rest.
        res.writeHead(200, { 'content-type': 'application/json' })
        res.write('{"users":[{"email":"ann.secret@corp.example"},')
        setTimeout(() => res.end('{"ssn": tru, "email":"bob.secret@corp.example"}]}'), 50)
        return
      case '/ndjson':
        res.writeHead(200, { 'content-type': 'application/x-ndjson' })
        res.end(`${USERS.map((u) => JSON.stringify({ type: 'ADDED', object: u })).join('\n')}\n`)
        return
      case '/sse': {
        res.writeHead(200, { 'content-type': 'text/event-stream' })
        res.write(': hello\n\n')
        let n = 0
        const t = setInterval(() => {
          const u = USERS[n % 2]
          // data split over two lines, CRLF line ends on odd events
          const eol = n % 2 === 1 ? '\r\n' : '\n'
          res.write(
            `id: ${n}${eol}event: user${eol}data: {"user":${JSON.stringify(u)},${eol}data: "email":"x${n}.secret@corp.example"}${eol}${eol}`,
          )
          if (++n === 4) {
            clearInterval(t)
            res.end()
          }
        }, 20)
        return
      }
      case '/negotiated':
        // An upstream that labels its answer with whatever type the caller asked for.
        res.writeHead(200, { 'content-type': String(req.headers.accept ?? 'application/json') })
        res.end(JSON.stringify({ users: USERS }, null, 2))
        return
      case '/sse-bom':
        res.writeHead(200, { 'content-type': 'text/event-stream' })
        res.end(`\ufeffdata: ${JSON.stringify(USERS[0])}\n\n`)
        return
      case '/sse-bad':
        res.writeHead(200, { 'content-type': 'text/event-stream' })
        res.end('data: {"email":"ann.secret@corp.example"}\n\ndata: not json bob.secret@corp.example\n\n')
        return
      default:
        res.writeHead(404, { 'content-type': 'application/json' })
        res.end('{"error":"not found"}')
    }
  })
}

describe('HTTP response masking', () => {
  let dir = ''
  let jsonServer: JsonServer
  let up: Server
  let gw: TestGateway
  let port = 0
  let dispatcher: Agent
  let alice = ''
  let carol = ''

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gh-httpmask-'))
    jsonServer = await startJsonServer(join(dir, 'json'), {
      users: USERS,
      posts: [{ id: 1, title: 'hello', author: { email: 'ann.secret@corp.example' } }],
    })
    up = upstream()
    const upPort = await listenLoopback(up)
    const policyDir = policiesWithMasking(dir, MASKING)
    gw = await TestGateway.start({
      connections: [
        {
          name: 'api',
          protocol: 'http',
          url: `http://127.0.0.1:${jsonServer.port}`,
          path_case: 'insensitive',
          labels: { data: 'customers' },
        },
        { name: 'stream', protocol: 'http', url: `http://127.0.0.1:${upPort}`, labels: { data: 'customers' } },
        { name: 'plain', protocol: 'http', url: `http://127.0.0.1:${upPort}` },
      ],
      config: {
        listen: { api: '127.0.0.1:0', postgres: 'off', ssh: 'off', http: '127.0.0.1:0' },
        policies: policyDir,
      },
    })
    const run = JSON.parse(readFileSync(join(gw.dataDir, 'run.json'), 'utf8')) as { listeners: Record<string, string> }
    port = Number(run.listeners.http?.split(':').pop())
    dispatcher = new Agent({ connect: { ca: readFileSync(join(gw.dataDir, 'tls', 'cert.pem'), 'utf8') }, bodyTimeout: 300_000 })
    alice = gw.token('user:alice')
    carol = gw.token('user:carol', ['--group', 'pii'])
  })

  after(async () => {
    await dispatcher?.close()
    await gw?.cleanup()
    await jsonServer?.stop()
    up?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  async function get(
    path: string,
    token: string,
    opts: { method?: 'GET' | 'HEAD'; headers?: Record<string, string> } = {},
  ): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer; error: string | null }> {
    // A response cut before its first body byte ends the request before any status.
    const r = await request(`https://localhost:${port}${path}`, {
      method: opts.method ?? 'GET',
      headers: { authorization: `Bearer ${token}`, ...opts.headers },
      dispatcher,
      // A fresh connection each time: on a loaded machine a kept-alive one can be closed by the
      // gateway's idle timeout just as it is reused.
      reset: true,
    }).catch((err: unknown) => ({ statusCode: 0, headers: {}, body: null, err: String(err) }))
    if (r.body === null) return { status: 0, headers: {}, body: Buffer.alloc(0), error: 'err' in r ? r.err : 'no body' }
    const parts: Buffer[] = []
    let error: string | null = null
    try {
      for await (const c of r.body) parts.push(c as Buffer)
    } catch (err) {
      error = String(err)
    }
    return { status: r.statusCode, headers: r.headers, body: Buffer.concat(parts), error }
  }

  test('json-server: values at the paths are masked for a caller without the group, nested arrays included', async () => {
    const r = await get('/c/api/users', alice)
    assert.equal(r.status, 200)
    const users = JSON.parse(r.body.toString()) as Record<string, unknown>[]
    assertNoSecret(r.body, 'users')
    assert.equal(users[0]?.ssn, '****')
    assert.match(String(users[0]?.email), /^[0-9a-f]{32}$/)
    assert.deepEqual(users[0]?.cards, [{ number: '****1111' }])
    assert.deepEqual(users[0]?.tags, [['x', ['y']]])
    assert.match(String((users[1]?.profile as { contact: { email: string } } | undefined)?.contact.email), /^[0-9a-f]{32}$/)
    assert.notEqual(users[0]?.email, users[1]?.email)
    const one = await get('/c/api/users/1', alice)
    assert.equal((JSON.parse(one.body.toString()) as { email: string }).email, users[0]?.email, 'hash is stable across requests')
    const post = await get('/c/api/posts/1', alice)
    assertNoSecret(post.body, 'posts/1')
    assert.equal(r.headers['content-length'], undefined)
    assert.equal(r.headers.etag, undefined)
  })

  test('a cleared chain gets the clear values; an agent needs unmask:<rule> for each rule', async () => {
    const r = await get('/c/api/users', carol)
    assert.deepEqual(JSON.parse(r.body.toString()), USERS)
    const s = await get('/c/stream/users', carol)
    assert.deepEqual(JSON.parse(s.body.toString()), { users: USERS })
    const d = gw.cli([
      'token',
      'delegate',
      '--agent',
      'helper',
      '--token',
      carol,
      '--scope',
      'connection:stream http.request unmask:emails',
      '--json',
    ])
    assert.equal(d.code, 0, d.stderr)
    const agent = (JSON.parse(d.stdout) as { access_token: string }).access_token
    const ar = await get('/c/stream/users', agent)
    assert.equal(ar.status, 200, ar.body.toString())
    const a = JSON.parse(ar.body.toString()) as { users: Record<string, unknown>[] }
    assert.equal(a.users[0]?.email, USERS[0]?.email)
    assert.equal(a.users[0]?.ssn, '****')
    assert.deepEqual(a.users[0]?.cards, [{ number: '****1111' }])
  })

  test('connections: a rule limited to other connections does not apply', async () => {
    // `plain` has no data label and is not named by the ssn rule: only $..email applies.
    const r = JSON.parse((await get('/c/plain/users', alice)).body.toString()) as { users: Record<string, unknown>[] }
    assert.match(String(r.users[0]?.email), /^[0-9a-f]{32}$/)
    assert.equal(r.users[0]?.ssn, USERS[0]?.ssn)
    assert.deepEqual(r.users[0]?.cards, USERS[0]?.cards)
  })

  test('gzip, deflate, br and gzip+br are decompressed and masked; an unknown encoding is refused', async () => {
    for (const p of ['/gzip', '/deflate', '/br', '/gzip-br']) {
      const r = await get(`/c/stream${p}`, alice, { headers: { 'accept-encoding': 'gzip, br' } })
      assert.equal(r.status, 200, p)
      assert.equal(r.headers['content-encoding'], undefined, p)
      const body = JSON.parse(r.body.toString()) as { users: Record<string, unknown>[] }
      assert.equal(body.users[0]?.ssn, '****', p)
      assertNoSecret(r.body, p)
    }
    const z = await get('/c/stream/zstd', alice)
    assert.equal(z.status, 502)
    assert.match(z.body.toString(), /zstd/)
    assertNoSecret(z.body, 'zstd')
    // The cleared chain gets the compressed body as the upstream sent it.
    const c = await get('/c/stream/gzip', carol)
    assert.equal(c.headers['content-encoding'], 'gzip')
  })

  test('Range, conditional requests and Accept-Encoding are not forwarded; a 206 or a 304 cannot be had', async () => {
    const echo = JSON.parse(
      (
        await get('/c/stream/echo-headers', alice, {
          headers: {
            range: 'bytes=0-10',
            'if-none-match': '"v1"',
            'if-match': '"v1"',
            'if-modified-since': 'Mon, 01 Jan 2024 00:00:00 GMT',
            'accept-encoding': 'gzip',
          },
        })
      ).body.toString(),
    ) as { headers: Record<string, string> }
    for (const h of ['range', 'if-none-match', 'if-match', 'if-modified-since']) assert.equal(echo.headers[h], undefined, h)
    assert.equal(echo.headers['accept-encoding'], 'identity')
    const ranged = await get('/c/stream/users', alice, { headers: { range: 'bytes=0-39' } })
    assert.equal(ranged.status, 200)
    assert.equal(ranged.headers['content-range'], undefined)
    assertNoSecret(ranged.body, 'range')
    const cond = await get('/c/stream/users', alice, { headers: { 'if-none-match': '"v1"' } })
    assert.equal(cond.status, 200, 'the ETag of the clear body is no oracle')
    assertNoSecret(cond.body, 'if-none-match')
    // The cleared chain's requests go as sent.
    assert.equal((await get('/c/stream/users', carol, { headers: { range: 'bytes=0-39' } })).status, 206)
  })

  test('HEAD and 204 pass without the length or ETag of the clear body', async () => {
    const h = await get('/c/stream/users', alice, { method: 'HEAD' })
    assert.equal(h.status, 200)
    assert.equal(h.headers['content-length'], undefined)
    assert.equal(h.headers.etag, undefined)
    assert.equal(h.headers['content-md5'], undefined)
    assert.equal((await get('/c/stream/empty', alice)).status, 204)
  })

  test('content negotiation: a body that is not JSON (or not UTF-8, or untyped) is refused', async () => {
    for (const p of ['/csv', '/latin1', '/no-type']) {
      const r = await get(`/c/stream${p}`, alice, { headers: { accept: 'text/csv' } })
      assert.equal(r.status, 502, p)
      assertNoSecret(r.body, p)
    }
    assert.equal((await get('/c/stream/csv', carol)).status, 200)
  })

  test('broken JSON: the stream is cut where it breaks, what came before is masked, nothing after', async () => {
    const r = await get('/c/stream/broken', alice)
    assert.equal(r.status, 200)
    assert.ok(r.error !== null, 'the client sees an incomplete body')
    assertNoSecret(r.body, 'broken')
    assert.match(r.body.toString(), /^\{"users":\[\{"email":"[0-9a-f]{32}"\},/)
  })

  test('NDJSON and server-sent events: each document and each event masked', async () => {
    const n = await get('/c/stream/ndjson', alice)
    assert.equal(n.status, 200)
    const lines = n.body
      .toString()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { object: Record<string, unknown> })
    assert.equal(lines.length, 2)
    assert.match(String(lines[0]?.object.email), /^[0-9a-f]{32}$/)
    assert.equal(lines[1]?.object.ssn, '****')
    assertNoSecret(n.body, 'ndjson')

    const s = await get('/c/stream/sse', alice)
    assert.equal(s.status, 200)
    assertNoSecret(s.body, 'sse')
    const events = s.body
      .toString()
      .split('\n\n')
      .filter((e) => e.includes('data:'))
    assert.equal(events.length, 4)
    for (const e of events) {
      const data = e
        .split('\n')
        .filter((l) => l.startsWith('data:'))
        .map((l) => l.slice(5).trimStart())
        .join('\n')
      const doc = JSON.parse(data) as { user: { email: string }; email: string }
      assert.match(doc.email, /^[0-9a-f]{32}$/)
      assert.match(doc.user.email, /^[0-9a-f]{32}$/)
      // The resume position is the upstream's free text: dropped where a rule applies.
      assert.doesNotMatch(e, /^id:/m)
      assert.match(e, /^event: user$/m)
    }
    const bad = await get('/c/stream/sse-bad', alice)
    assert.ok(bad.error !== null)
    assertNoSecret(bad.body, 'sse-bad')
    // A leading byte order mark (clients drop it) does not hide the first field from the masker.
    const bom = await get('/c/stream/sse-bom', alice)
    assertNoSecret(bom.body, 'sse-bom')
    assert.match(bom.body.toString(), /^data: \{.*"ssn":"\*\*\*\*"/)
    // Asking for an event stream from an upstream that answers in the type asked for: the JSON
    // document is no event stream, and is cut instead of passed.
    const asSse = await get('/c/stream/negotiated', alice, { headers: { accept: 'text/event-stream' } })
    assertNoSecret(asSse.body, 'negotiated as an event stream')
    assert.ok(asSse.error !== null || asSse.body.length === 0)
    const asJson = await get('/c/stream/negotiated', alice, { headers: { accept: 'application/json' } })
    assert.equal(asJson.status, 200)
    assertNoSecret(asJson.body, 'negotiated as JSON')
  })

  test('audit: result events name the masked paths and counts', () => {
    const results = gw.auditEvents().filter((e) => e.type === 'result' && e.action === 'http.request')
    type Masked = { path: string; rule: string; count: number }[]
    const masked = results.map((e) => e.masked as Masked | undefined).filter((m): m is Masked => m !== undefined && m.length > 0)
    assert.ok(masked.length > 0)
    const flat = masked.flat()
    assert.ok(flat.some((m) => m.path === '$..email' && m.rule === 'emails' && m.count >= 2))
    assert.ok(flat.some((m) => m.path === '$.users[*].ssn' && m.rule === 'ssn'))
    assert.ok(results.some((e) => typeof e.error === 'string' && /response (cut|not masked)/.test(e.error)))
    // No audit event holds a masked value.
    assertNoSecret(JSON.stringify(results), 'audit')
  })
})
