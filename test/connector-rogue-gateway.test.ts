// A compromised gateway against a real connector and real sshd servers. The gateway is the
// connector's only peer, so a stand-in gateway here (TLS and an HTTP/2 client on the socket the
// connector dials, speaking the real link protocol) plays one that was taken over or whose key was
// stolen: exactly the threat the connector's own checks exist for. It asks the connector to sign
// SSH logins with the key the operator left with it, for the user the operator pinned (signed), for
// another user (refused), and for a login to another SSH server that trusts the same key, outside
// the private network, while the session does have a stream to the real target (refused: that
// server's exchange hash was never signed by a host on the connector's streams).

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { type ClientHttp2Session, constants as h2, connect as h2connect } from 'node:http2'
import { type AddressInfo, connect as netConnect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Duplex } from 'node:stream'
import { after, before, describe, test } from 'node:test'
import { createServer as createTlsServer, type Server as TlsServer } from 'node:tls'
import pino from 'pino'
import ssh2, { type ParsedKey, type SignCallback, type SigningRequestOptions } from 'ssh2'
import { ConnectorAgent } from '../cli/connector.js'
import { ALPN, ATTACH_PATH, ERROR_HEADER, PROVE_PATH, TARGETS_PATH } from '../engine/connector/protocol.js'
import { TestSshd } from './helpers/sshd.js'

let target: TestSshd | undefined
let outside: TestSshd | undefined
let dir = ''
let server: TlsServer | undefined
let agent: ConnectorAgent | undefined
let running: Promise<void> | undefined
let link: ClientHttp2Session | undefined
const clients: ssh2.Client[] = []
const SESSION = 's-evil'
let targetAddr = ''
let ref = ''
/** The last login request the connector signed (session identifier, user, key…). */
let signed: Buffer | undefined

interface Answer {
  status: number
  error: string
  body: string
}

function ask(headers: Record<string, string>, body?: unknown): Promise<Answer> {
  const s = link
  assert.ok(s)
  return new Promise((resolve) => {
    const r = s.request(headers, { endStream: body === undefined })
    let b = ''
    let status = 0
    let error = ''
    r.on('response', (h) => {
      status = Number(h[h2.HTTP2_HEADER_STATUS])
      error = String(h[ERROR_HEADER] ?? '')
    })
    r.on('data', (d: Buffer) => {
      b += d.toString()
    })
    r.on('error', () => undefined)
    r.on('close', () => resolve({ status, error, body: b }))
    if (body !== undefined) r.end(JSON.stringify(body))
  })
}

const post = (path: string, body: unknown): Promise<Answer> =>
  ask({ [h2.HTTP2_HEADER_METHOD]: 'POST', [h2.HTTP2_HEADER_PATH]: path, 'content-type': 'application/json' }, body)

/** A CONNECT stream of session SESSION to the target, through the connector. */
function tunnel(): Promise<Duplex> {
  const s = link
  assert.ok(s)
  return new Promise((resolve, reject) => {
    const r = s.request({ [h2.HTTP2_HEADER_METHOD]: 'CONNECT', [h2.HTTP2_HEADER_AUTHORITY]: targetAddr, 'gatehouse-session': SESSION })
    r.once('response', (h) =>
      Number(h[h2.HTTP2_HEADER_STATUS]) === 200 ? resolve(r) : reject(new Error(`CONNECT ${h[h2.HTTP2_HEADER_STATUS]}`)),
    )
    r.once('error', reject)
  })
}

/** An SSH login over `sock` whose signature the connector is asked for; what the connector refused. */
async function login(sock: Duplex, username: string): Promise<{ ready: boolean; refusals: string[] }> {
  const base = { session: SESSION, connection: 'web-1', target: targetAddr, ref }
  const pub = await post(PROVE_PATH, { ...base, mechanism: 'ssh-public-key' })
  assert.equal(pub.status, 200, pub.error)
  const key = ssh2.utils.parseKey((JSON.parse(pub.body) as { public_key: string }).public_key)
  assert.ok(!(key instanceof Error) && !Array.isArray(key))
  const refusals: string[] = []
  class ProvingAgent extends ssh2.BaseAgent<ParsedKey> {
    getIdentities(cb: (err: Error | undefined, keys?: ParsedKey[]) => void): void {
      cb(undefined, [key as ParsedKey])
    }
    sign(_pk: ParsedKey, data: Buffer, options: SigningRequestOptions | SignCallback, cb?: SignCallback): void {
      const done = (typeof options === 'function' ? options : cb) as SignCallback
      void post(PROVE_PATH, { ...base, mechanism: 'ssh-sign', data: data.toString('base64') }).then((a) => {
        if (a.status !== 200) {
          refusals.push(a.error)
          done(new Error(a.error))
          return
        }
        signed = data
        done(undefined, Buffer.from((JSON.parse(a.body) as { signature: string }).signature, 'base64'))
      })
    }
  }
  const c = new ssh2.Client()
  clients.push(c)
  const ready = await new Promise<boolean>((resolve) => {
    c.once('ready', () => resolve(true))
    c.on('error', () => resolve(false))
    c.once('close', () => resolve(false))
    c.connect({ sock, username, agent: new ProvingAgent(), hostVerifier: () => true, readyTimeout: 90_000 })
  })
  return { ready, refusals }
}

before(async () => {
  target = await TestSshd.start()
  outside = await TestSshd.start()
  // The same login key is trusted by a server the private network's connector never reaches for it.
  writeFileSync(join(outside.dir, 'authorized_keys'), readFileSync(`${target.clientKeyPath}.pub`), { mode: 0o600 })
  targetAddr = `127.0.0.1:${target.port}`
  ref = `file:${target.clientKeyPath}`
  dir = mkdtempSync(join(tmpdir(), 'gh-rogue-gateway-'))
  const r = spawnSync('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    join(dir, 'key.pem'),
    '-out',
    join(dir, 'cert.pem'),
    '-subj',
    '/CN=rogue-gateway',
    '-days',
    '1',
  ])
  assert.equal(r.status, 0, String(r.stderr))
  const cert = readFileSync(join(dir, 'cert.pem'))
  const linked = new Promise<ClientHttp2Session>((resolve) => {
    server = createTlsServer({ key: readFileSync(join(dir, 'key.pem')), cert, ALPNProtocols: [ALPN] }, (sock) => {
      const s = h2connect('http://connector', { createConnection: () => sock })
      s.on('error', () => undefined)
      resolve(s)
    }).listen(0, '127.0.0.1')
  })
  await new Promise((r) => server?.once('listening', r))
  agent = new ConnectorAgent({
    host: '127.0.0.1',
    port: (server as TlsServer).address() === null ? 0 : ((server as TlsServer).address() as AddressInfo).port,
    credential: 'ghk_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA',
    fingerprint: new X509Certificate(cert).fingerprint256.replaceAll(':', '').toLowerCase(),
    allow: [],
    secrets: new Map([['web-1', { ref, user: target.user, md5: false }]]),
    version: 'test',
    log: pino({ level: 'silent' }),
  })
  running = agent.run()
  link = await linked
  await ask({ [h2.HTTP2_HEADER_METHOD]: 'GET', [h2.HTTP2_HEADER_PATH]: ATTACH_PATH })
  const t = await post(TARGETS_PATH, { name: 'edge-1', targets: [targetAddr] })
  assert.equal(t.status, 204)
})

after(async () => {
  for (const c of clients) c.end()
  agent?.stop()
  await running
  link?.destroy()
  server?.close()
  await target?.stop()
  await outside?.stop()
  if (dir) rmSync(dir, { recursive: true, force: true })
})

describe('a compromised gateway and the SSH key a connector keeps', () => {
  test('the login the operator pinned is signed, for the session with the target on its own stream', async () => {
    const r = await login(await tunnel(), target?.user ?? '')
    assert.deepEqual(r.refusals, [])
    assert.equal(r.ready, true)
  })

  test('refused: a login as another user, in the very session with the target', async () => {
    // The request the connector signed above, with another user name in it: the session identifier
    // is one the target signed on the connector's stream, so only the user differs.
    assert.ok(signed)
    const idLen = signed.readUInt32BE(0)
    const afterId = 4 + idLen + 1
    const userLen = signed.readUInt32BE(afterId)
    const forged = Buffer.concat([
      signed.subarray(0, afterId),
      lengthPrefixed(Buffer.from('ghother')),
      signed.subarray(afterId + 4 + userLen),
    ])
    const base = { session: SESSION, connection: 'web-1', target: targetAddr, ref, mechanism: 'ssh-sign' }
    const again = await post(PROVE_PATH, { ...base, data: signed.toString('base64') })
    assert.equal(again.status, 200, again.error)
    const other = await post(PROVE_PATH, { ...base, data: forged.toString('base64') })
    assert.equal(other.status, 403)
    assert.match(other.error, new RegExp(`signs connection web-1's logins as ${target?.user} only`))
    assert.equal(other.body, '')
  })

  test('refused: a login to another SSH server trusting the key, while the session has a stream to the target', async () => {
    // The first test's session is still up: the connector has seen the target's key exchange.
    const direct = netConnect({ host: '127.0.0.1', port: outside?.port ?? 0 })
    await new Promise((r) => direct.once('connect', r))
    const r = await login(direct, target?.user ?? '')
    assert.equal(r.ready, false)
    assert.ok(r.refusals.length > 0)
    for (const why of r.refusals)
      assert.match(why, /the login is not for an SSH session with 127\.0\.0\.1:\d+ on a stream of this connector/)
  })
})

function lengthPrefixed(b: Buffer): Buffer {
  const n = Buffer.alloc(4)
  n.writeUInt32BE(b.length)
  return Buffer.concat([n, b])
}
