// WebSocket through the HTTP proxy, with a real `ws` server upstream and a real `ws` client: the
// upgrade is decided like a request (policy sees `upgrade: "websocket"`), refused with a problem
// document when denied or unauthenticated, then messages relay both ways; under a json_paths rule
// every upstream text message is masked as a JSON document, and a text message that is not JSON
// or a binary message closes the connection with 1008, never reaching the client. permessage-
// deflate is not negotiated (the client's offer is declined, none is made upstream). Revoking the
// token ends the socket. Every byte the client received is searched for the masked values.

import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import WebSocket, { WebSocketServer } from 'ws'
import { TestGateway } from './helpers/gateway.js'
import { listenLoopback, policiesWithMasking } from './helpers/http-masking.js'
import { rawExchange, statusOf } from './helpers/httpd.js'

const MASKING = `rules:
  - name: emails
    json_paths: ["$..email"]
    connections: [sock]
    strategy: hash
    clear_for: [pii]
  - name: ssn
    json_paths: ["$..ssn"]
    connections: [sock]
    strategy: redact
    clear_for: [pii]
detectors:
  - { name: email, connections: [socktext] }
`

const POLICY = `package gatehouse

deny contains {"rule": "no-closed-sockets", "reason": "this socket is closed"} if {
	input.action == "http.request"
	input.command.upgrade == "websocket"
	input.command.path == "/ws/closed"
}
`

const SECRETS = ['ann.secret', 'bob.secret', '123-45-678', 'corp.example']
const ANN = { email: 'ann.secret@corp.example', ssn: '123-45-6781', name: 'Ann' }

interface Received {
  readonly messages: { data: Buffer; binary: boolean }[]
  readonly code: number
  readonly reason: string
  readonly protocol: string
  readonly extensions: string
  readonly status: number | null
}

function assertNoSecret(r: Received, where: string): void {
  const all = Buffer.concat([...r.messages.map((m) => m.data), Buffer.from(r.reason)])
  for (const s of SECRETS) assert.equal(all.indexOf(s), -1, `${where}: ${s} reached the client`)
}

describe('HTTP proxy: WebSocket', () => {
  let dir = ''
  let up: Server
  let upWss: WebSocketServer
  let gw: TestGateway
  let port = 0
  let ca = ''
  let alice = ''
  let carol = ''
  let lastUpgrade: IncomingHttpHeaders = {}
  const upstreamGot: string[] = []

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gh-httpws-'))
    up = createServer((_req, res) => res.end('not a socket'))
    upWss = new WebSocketServer({
      server: up,
      perMessageDeflate: true,
      handleProtocols: (p) => (p.has('chat.v1') ? 'chat.v1' : false),
    })
    upWss.on('connection', (ws, req) => {
      lastUpgrade = req.headers
      const path = req.url ?? ''
      ws.on('message', (d, binary) => {
        upstreamGot.push(d.toString())
        if (!binary) ws.send(JSON.stringify({ you_said: d.toString(), email: 'bob.secret@corp.example' }))
      })
      if (path.startsWith('/ws/feed')) {
        ws.send(JSON.stringify({ user: ANN, list: [{ ssn: '123-45-6782' }], n: 1 }))
        ws.send(JSON.stringify([{ email: 'bob.secret@corp.example' }]))
      } else if (path === '/ws/not-json') {
        ws.send(JSON.stringify({ user: ANN }))
        ws.send('not json: bob.secret@corp.example')
        ws.send(JSON.stringify({ email: 'bob.secret@corp.example' }))
      } else if (path === '/ws/binary') {
        ws.send(Buffer.from(JSON.stringify({ email: 'ann.secret@corp.example' })), { binary: true })
      } else if (path === '/ws/slow') {
        const t = setInterval(() => ws.send(JSON.stringify({ tick: Date.now() })), 50)
        ws.on('close', () => clearInterval(t))
      }
    })
    const upPort = await listenLoopback(up)
    const policyDir = policiesWithMasking(dir, MASKING, { 'ws_test_rules.rego': POLICY })
    gw = await TestGateway.start({
      connections: [
        { name: 'sock', protocol: 'http', url: `http://127.0.0.1:${upPort}` },
        { name: 'socktext', protocol: 'http', url: `http://127.0.0.1:${upPort}` },
      ],
      config: { listen: { api: '127.0.0.1:0', postgres: 'off', ssh: 'off', http: '127.0.0.1:0' }, policies: policyDir },
    })
    port = Number(gw.listeners.http?.split(':').pop())
    ca = readFileSync(join(gw.dataDir, 'tls', 'cert.pem'), 'utf8')
    alice = gw.token('user:alice')
    carol = gw.token('user:carol', ['--group', 'pii'])
  })

  after(async () => {
    await gw?.cleanup()
    upWss?.close()
    up?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  /** Opens a socket through the gateway, sends `send` once open, and collects everything until it closes. */
  function open(
    path: string,
    token: string | null,
    opts: { send?: (string | Buffer)[]; closeAfterMs?: number; connection?: string } = {},
  ): Promise<Received> {
    return new Promise((resolve) => {
      const ws = new WebSocket(`wss://localhost:${port}/c/${opts.connection ?? 'sock'}${path}`, ['chat.v1'], {
        ca,
        headers: token === null ? {} : { authorization: `Bearer ${token}` },
        perMessageDeflate: true,
      })
      const messages: { data: Buffer; binary: boolean }[] = []
      let status: number | null = null
      ws.on('unexpected-response', (_req, res) => {
        status = res.statusCode ?? null
        const body: Buffer[] = []
        res.on('data', (c: Buffer) => body.push(c))
        res.on('end', () => {
          messages.push({ data: Buffer.concat(body), binary: false })
          resolve({ messages, code: 0, reason: '', protocol: '', extensions: '', status })
        })
      })
      ws.on('open', () => {
        for (const m of opts.send ?? []) ws.send(m)
        setTimeout(() => ws.close(1000, 'done'), opts.closeAfterMs ?? 300)
      })
      ws.on('message', (d, binary) => messages.push({ data: Buffer.isBuffer(d) ? d : Buffer.from(d as ArrayBuffer), binary }))
      ws.on('error', () => undefined)
      ws.on('close', (code, reason) =>
        resolve({ messages, code, reason: reason.toString(), protocol: ws.protocol, extensions: ws.extensions, status }),
      )
    })
  }

  test('upstream messages are masked as JSON; the client speaks to the upstream; deflate is not negotiated', async () => {
    const r = await open('/ws/feed', alice, { send: ['hello upstream'] })
    assert.equal(r.status, null)
    assert.equal(r.protocol, 'chat.v1', 'the subprotocol the upstream chose')
    assert.equal(r.extensions, '', 'permessage-deflate declined')
    assert.equal(lastUpgrade['sec-websocket-extensions'], undefined, 'no deflate offered upstream')
    assert.equal(lastUpgrade.authorization, undefined, 'the gateway token stays at the gateway')
    assert.ok(upstreamGot.includes('hello upstream'))
    assertNoSecret(r, 'feed')
    const docs = r.messages.map((m) => JSON.parse(m.data.toString()) as Record<string, unknown>)
    assert.equal(docs.length, 3)
    const first = docs[0] as { user: { email: string; ssn: string; name: string }; list: { ssn: string }[]; n: number }
    assert.match(first.user.email, /^[0-9a-f]{32}$/)
    assert.equal(first.user.ssn, '****')
    assert.equal(first.user.name, 'Ann')
    assert.deepEqual(first.list, [{ ssn: '****' }])
    assert.equal(first.n, 1)
    assert.match(String((docs[1] as unknown as { email: string }[])[0]?.email), /^[0-9a-f]{32}$/)
    assert.equal((docs[2] as { you_said: string }).you_said, 'hello upstream')
    assert.equal(r.code, 1000)
  })

  test('a cleared chain gets the messages as the upstream sent them, binary too', async () => {
    const r = await open('/ws/feed', carol)
    assert.deepEqual(JSON.parse(r.messages[0]?.data.toString() ?? ''), { user: ANN, list: [{ ssn: '123-45-6782' }], n: 1 })
    const b = await open('/ws/binary', carol)
    assert.equal(b.messages[0]?.binary, true)
    assert.match(b.messages[0]?.data.toString() ?? '', /ann\.secret/)
  })

  test('a text message that is not JSON under a rule closes the socket with 1008; nothing after it is sent', async () => {
    const r = await open('/ws/not-json', alice, { closeAfterMs: 2000 })
    assert.equal(r.code, 1008)
    assert.match(r.reason, /not JSON/)
    assert.equal(r.messages.length, 1, 'only the message before it')
    assert.equal(JSON.parse(r.messages[0]?.data.toString() ?? '').user.ssn, '****')
    assertNoSecret(r, 'not-json')
  })

  test('a binary message under a rule closes the socket with 1008', async () => {
    const r = await open('/ws/binary', alice, { closeAfterMs: 2000 })
    assert.equal(r.code, 1008)
    assert.match(r.reason, /binary/)
    assert.equal(r.messages.length, 0)
    assertNoSecret(r, 'binary')
  })

  test('where only detectors apply, they mask the text messages', async () => {
    const r = await open('/ws/not-json', alice, { connection: 'socktext', closeAfterMs: 500 })
    assert.equal(r.code, 1000)
    assert.deepEqual(
      r.messages.map((m) => m.data.toString()),
      [JSON.stringify({ user: { ...ANN, email: '****' } }), 'not json: ****', JSON.stringify({ email: '****' })],
    )
  })

  test('the upgrade is decided like a request: denied by policy (403), no token (401), other upgrades (501)', async () => {
    const denied = await open('/ws/closed', alice)
    assert.equal(denied.status, 403)
    assert.match(denied.messages[0]?.data.toString() ?? '', /this socket is closed/)
    const anon = await open('/ws/feed', null)
    assert.equal(anon.status, 401)
    const h2c = await rawExchange(
      port,
      `GET /c/sock/ws/feed HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${alice}\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n`,
      { ca },
    )
    assert.equal(statusOf(h2c), 501)
    const withBody = await rawExchange(
      port,
      `GET /c/sock/ws/feed HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${alice}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nContent-Length: 2\r\n\r\n{}`,
      { ca },
    )
    assert.equal(statusOf(withBody), 400)
  })

  test('revoking the token ends an open socket within a second', async () => {
    const r = gw.cli(['token', 'delegate', '--agent', 'listener', '--token', carol, '--json'])
    assert.equal(r.code, 0, r.stderr)
    const d = JSON.parse(r.stdout) as { access_token: string; token_id: string }
    const ws = new WebSocket(`wss://localhost:${port}/c/sock/ws/slow`, { ca, headers: { authorization: `Bearer ${d.access_token}` } })
    let ticks = 0
    ws.on('message', () => ticks++)
    ws.on('error', () => undefined)
    const closed = new Promise<number>((resolve) => ws.on('close', () => resolve(Date.now())))
    for (let i = 0; i < 100 && ticks < 2; i++) await new Promise((res) => setTimeout(res, 50))
    assert.ok(ticks >= 2, 'the socket is open')
    const rv = gw.cli(['token', 'revoke', d.token_id])
    assert.equal(rv.code, 0, rv.stderr)
    const revokedAt = Date.now()
    const at = await Promise.race([closed, new Promise<number>((res) => setTimeout(() => res(-1), 5000))])
    assert.ok(at > 0, 'the socket did not end')
    assert.ok(at - revokedAt < 1000, `ended ${at - revokedAt} ms after the revocation answered`)
  })

  test('audit: the upgrade is a statement with upgrade websocket; the result counts messages and names the masked paths', async () => {
    // The result is written when the socket has closed on both legs.
    await new Promise((res) => setTimeout(res, 300))
    const events = gw.auditEvents()
    const st = events.filter((e) => e.type === 'statement' && e.action === 'http.request' && e.upgrade === 'websocket')
    assert.ok(st.some((e) => e.path === '/ws/closed' && e.decision === 'deny'))
    const feed = st.find((e) => e.path === '/ws/feed' && e.decision === 'allow')
    assert.ok(feed)
    const results = events.filter((e) => e.type === 'result' && e.upgrade === 'websocket')
    const fr = results.find((e) => e.session === feed.session && e.seq === feed.seq)
    assert.ok(fr, 'the result of the first socket')
    assert.equal(fr.status, 101)
    assert.equal(fr.messages_out, 3)
    assert.equal(fr.messages_in, 1)
    const masked = fr.masked as { path: string; count: number }[]
    assert.equal(masked.find((m) => m.path === '$..email')?.count, 3)
    assert.equal(masked.find((m) => m.path === '$..ssn')?.count, 2)
    assert.ok(results.some((e) => e.close_code === 1008 && /message not masked/.test(String(e.error))))
    assert.equal(JSON.stringify(events).includes('ann.secret'), false, 'no masked value in the audit')
  })
})
