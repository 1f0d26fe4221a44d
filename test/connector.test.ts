// Connectors end to end, in network namespaces made here: a PostgreSQL cluster in a private
// namespace the gateway cannot route to, a connector (`gatehouse connector`, the real CLI) in a
// namespace that reaches both, and psql through the gateway. Also: the same without the connector,
// forged and revoked connector identities, a connector killed under a live session, and a
// connector asked for an address it was not given.

import assert from 'node:assert/strict'
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs'
import { constants as h2, connect as h2connect } from 'node:http2'
import { createServer as createNetServer, type AddressInfo } from 'node:net'
import { join } from 'node:path'
import { createServer as createTlsServer } from 'node:tls'
import { after, before, describe, test } from 'node:test'
import pino from 'pino'
import { ConnectorAgent, linkLine } from '../cli/connector.js'
import { ALPN, ATTACH_PATH, ERROR_HEADER, TARGETS_PATH } from '../engine/connector/protocol.js'
import { BIN, psql, readOutput, TestGateway } from './helpers/gateway.js'
import { PrivateNetwork } from './helpers/netns.js'

const net = new PrivateNetwork()
let gw: TestGateway
let connectorPort = 0
let fingerprint = ''
let key = ''
let keyId = ''
let token = ''
const connectors: ChildProcess[] = []

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}

async function until<T>(
  what: string,
  f: () => T | null | undefined | false | Promise<T | null | undefined | false>,
  // A bound that only ends a failure: a connector's start-up (a whole CLI) took over fifteen
  // seconds beside other test files on two cores.
  ms = 90_000,
): Promise<T> {
  const deadline = Date.now() + ms
  for (;;) {
    const v = await f()
    if (v) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(50)
  }
}

/** `gatehouse connector` inside the connector namespace; its log is collected in `log`. */
function startConnector(credential: string, extra: string[] = []): { proc: ChildProcess; log: () => string } {
  const file = join(gw.dir, `key-${connectors.length}`)
  writeFileSync(file, credential, { mode: 0o600 })
  // The connector logs to a file, not a pipe: a Node process writes to a pipe synchronously, so a
  // test blocked in spawnSync (psql) would stall the connector and the session through it.
  const logFile = `${file}.log`
  const logFd = openSync(logFile, 'a')
  const proc = spawn(
    'ip',
    [
      'netns',
      'exec',
      net.connectorNs,
      process.execPath,
      BIN,
      'connector',
      '--gateway',
      `https://${net.gatewayAddress}:${connectorPort}`,
      '--fingerprint',
      fingerprint,
      '--token-file',
      file,
      ...extra,
    ],
    { stdio: ['ignore', 'ignore', logFd] },
  )
  closeSync(logFd)
  if (process.env.GH_TEST_DEBUG) proc.once('exit', () => process.stderr.write(`connector:\n${readOutput(logFile)}`))
  connectors.push(proc)
  return { proc, log: () => readOutput(logFile) }
}

function stopConnector(proc: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve()
  return new Promise((r) => {
    proc.once('exit', () => r())
    proc.kill(signal)
  })
}

interface LinkRow {
  name: string
  principal: string
  address: string
  version: string
  hostname: string
  sessions: number
}

/** The admin API (what the CLI calls; the CLI itself is run once per command here: its start-up is slow). */
async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const admin = readFileSync(join(gw.dataDir, 'admin.token'), 'utf8').trim()
  const res = await fetch(`${gw.apiUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${admin}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  })
  assert.equal(res.status, 200, `${method} ${path}: ${await res.clone().text()}`)
  return (await res.json()) as T
}

function links(): Promise<LinkRow[]> {
  return api<LinkRow[]>('GET', '/v1/connectors')
}

async function auditEvents(type: string): Promise<Record<string, unknown>[]> {
  return (await api<{ events: Record<string, unknown>[] }>('GET', `/v1/audit?type=${encodeURIComponent(type)}`)).events
}

function createKey(name: string): Promise<{ key: string; id: string }> {
  return api<{ key: string; id: string }>('POST', '/v1/service-keys', { name })
}

/**
 * A psql session through the gateway to the private cluster running a 60 s query, once the query
 * runs there: `exited` resolves with its exit code, `stderr` is what psql printed so far.
 */
async function longQuery(app: string): Promise<{ exited: Promise<number | null>; stderr: () => string }> {
  const live = spawn('psql', ['-X', '-At', '-d', gw.conninfo(token, 'private', `application_name=${app}`), '-c', 'select pg_sleep(60)'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let err = ''
  live.stderr?.on('data', (d: Buffer) => {
    err += d.toString()
  })
  // 'close', not 'exit': the exit can come before psql's last words are read from its stderr.
  const exited = new Promise<number | null>((r) => live.once('close', (code) => r(code)))
  await until(
    'the query running on the private cluster',
    () => {
      if (live.exitCode !== null) throw new Error(`psql exited early: ${err}`)
      return net.privateSql(`select count(*) from pg_stat_activity where application_name = '${app}'`) === '1'
    },
    30_000,
  )
  return { exited, stderr: () => err }
}

before(async () => {
  try {
    net.setUp()
    net.startPostgres()
    gw = await TestGateway.start({
      connections: [
        {
          name: 'private',
          protocol: 'postgres',
          address: `${net.privateAddress}:5432`,
          database: 'postgres',
          user: 'postgres',
          via: 'edge-1',
        },
        {
          // The same target, configured through a connector that never attaches.
          name: 'private-other',
          protocol: 'postgres',
          address: `${net.privateAddress}:5432`,
          database: 'postgres',
          user: 'postgres',
          via: 'edge-2',
        },
      ],
      config: {
        listen: { api: '127.0.0.1:0', postgres: '127.0.0.1:0', connectors: `${net.gatewayAddress}:0` },
        connectors: [{ name: 'edge-1' }, { name: 'edge-2' }],
      },
    })
    const run = JSON.parse(readFileSync(join(gw.dataDir, 'run.json'), 'utf8')) as { listeners: Record<string, string> }
    const a = run.listeners.connectors ?? ''
    connectorPort = Number(a.slice(a.lastIndexOf(':') + 1))
    fingerprint = new X509Certificate(readFileSync(join(gw.dataDir, 'tls/cert.pem'))).fingerprint256
    ;({ key, id: keyId } = await createKey('edge-1'))
    token = gw.token('user:alice')
  } catch (err) {
    // `after` still runs, but a half-made network must not outlive a failed setup either.
    await cleanup()
    throw err
  }
})

async function cleanup(): Promise<void> {
  if (process.env.GH_TEST_DEBUG && gw) process.stderr.write(`gateway:\n${gw.stderr}`)
  await Promise.all(connectors.map((p) => stopConnector(p, 'SIGKILL')))
  await gw?.cleanup()
  net.teardown()
}

after(cleanup)

describe('connector', () => {
  test('the gateway cannot reach the private network itself', () => {
    const r = spawnSync(
      'psql',
      ['-X', '-At', '-d', `host=${net.privateAddress} port=5432 user=postgres dbname=postgres connect_timeout=2`, '-c', 'select 1'],
      {
        encoding: 'utf8',
        timeout: 20_000,
      },
    )
    assert.notEqual(r.status, 0)
    // …but the cluster is there, for whoever is inside.
    assert.equal(net.privateSql('select 1'), '1')
  })

  test('without a connector attached, a session fails with an error naming the connector', () => {
    const r = psql(gw.conninfo(token, 'private'), 'select 1')
    assert.notEqual(r.code, 0)
    assert.match(r.stderr, /connection private is reached through connector edge-1, which is not connected/)
  })

  test('a forged credential cannot attach', async () => {
    const forged = `ghk_${keyId}_${'A'.repeat(43)}`
    const c = startConnector(forged)
    await until('the refusal in the connector log', () => /the gateway refused this connector/.test(c.log()))
    assert.match(c.log(), /authentication failed/)
    assert.equal((await links()).length, 0)
    assert.doesNotMatch(c.log(), new RegExp(forged.slice(-20)))
    await stopConnector(c.proc)
    // The audit says which kind of refusal it was; the connector was told only in general terms.
    const refused = await auditEvents('connector.refused')
    assert.ok(refused.some((e) => e.kind === 'forged'))
  })

  test('a valid key of a principal that is not a configured connector cannot attach', async () => {
    const other = await createKey('not-a-connector')
    const c = startConnector(other.key)
    await until('the refusal', () => /the credential is not a configured connector's/.test(c.log()))
    assert.equal((await links()).length, 0)
    await stopConnector(c.proc)
    // Whoever holds a token and can reach the listener does not learn whose it is.
    assert.doesNotMatch(c.log(), /service:not-a-connector/)
    const refused = await auditEvents('connector.refused')
    assert.ok(refused.some((e) => e.reason === 'service:not-a-connector is not a configured connector' && e.kind === 'not_a_connector'))
    assert.ok(!JSON.stringify(refused).includes(other.key.slice(-20)), 'the credential never reaches the audit log')
  })

  test('a gateway certificate that does not match the pin is refused by the connector', async () => {
    const saved = fingerprint
    fingerprint = `${'AB:'.repeat(31)}AB`
    const c = startConnector(key)
    fingerprint = saved
    await until('the pin refusal', () => /does not match the pinned fingerprint/.test(c.log()))
    assert.equal((await links()).length, 0)
    await stopConnector(c.proc)
  })

  test('psql reaches the private cluster through the connector; the audit names the connector', async () => {
    startConnector(key)
    const [link] = await until('edge-1 attached', async () => {
      const l = await links()
      return l.length > 0 ? l : null
    })
    assert.equal(link?.name, 'edge-1')
    assert.equal(link?.principal, 'service:edge-1')
    const cli = gw.cli(['connectors', 'list'])
    assert.equal(cli.code, 0, cli.stderr)
    assert.match(cli.stdout, /^edge-1\t.*\tservice:edge-1\t10\./m)
    assert.match(link?.address ?? '', /^10\.\d+\.\d+\.2:\d+$/, 'the connector dialled out from its namespace')
    const r = psql(gw.conninfo(token, 'private'), 'select inet_server_addr()')
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stdout.trim(), net.privateAddress)
    const starts = (await auditEvents('session.start')).filter((e) => e.connection === 'private')
    assert.ok(starts.length > 0)
    assert.ok(starts.every((e) => e.via === 'edge-1'))
    assert.ok((await auditEvents('connector.attached')).some((e) => e.connector === 'edge-1'))
  })

  test('edge-1 does not carry a connection configured via another connector', () => {
    const r = psql(gw.conninfo(token, 'private-other'), 'select 1')
    assert.notEqual(r.code, 0)
    assert.match(r.stderr, /reached through connector edge-2, which is not connected/)
  })

  test('killing the connector ends its live sessions with its name; restarted, it attaches again', async () => {
    const { exited, stderr } = await longQuery('kill-test')
    const running = connectors.filter((p) => p.exitCode === null && p.signalCode === null)
    for (const p of running) await stopConnector(p, 'SIGKILL')
    assert.notEqual(await exited, 0)
    assert.match(stderr(), /connector edge-1 disconnected/)
    await until('the link gone', async () => (await links()).length === 0)
    startConnector(key)
    await until('edge-1 attached again', async () => (await links()).length > 0)
    const r = psql(gw.conninfo(token, 'private'), 'select 1')
    assert.equal(r.code, 0, r.stderr)
  })

  test('two connector replicas share sessions; killing one fails no new session', async () => {
    const second = startConnector(key)
    await until('two links', async () => (await links()).length === 2)
    // Two live sessions at once: the least busy link takes each, so both links carry one.
    const sleepers = ['share-a', 'share-b'].map((app) =>
      spawn('psql', ['-X', '-At', '-d', gw.conninfo(token, 'private', `application_name=${app}`), '-c', 'select pg_sleep(60)'], {
        stdio: 'ignore',
      }),
    )
    try {
      await until('both links carrying a session', async () => {
        const l = await links()
        return l.length === 2 && l.every((x) => x.sessions === 1)
      })
    } finally {
      for (const p of sleepers) p.kill('SIGKILL')
    }
    await stopConnector(second.proc, 'SIGKILL')
    await until('one link left', async () => (await links()).length === 1)
    for (let i = 0; i < 3; i++) {
      const r = psql(gw.conninfo(token, 'private'), 'select 1')
      assert.equal(r.code, 0, r.stderr)
    }
  })

  test('revoking the connector key drops its link within a second and ends its sessions', async () => {
    await until('edge-1 attached', async () => (await links()).length > 0)
    const { exited, stderr } = await longQuery('revoke-test')
    await api('POST', `/v1/tokens/${keyId}/revoke`, { reason: 'test' })
    const revokedAt = Date.now()
    const code = await exited
    const tookMs = Date.now() - revokedAt
    assert.match(stderr(), /connector edge-1 disconnected: its credential was revoked/, `psql exited ${code}: ${stderr()}`)
    assert.ok(tookMs < 1000, `the session ended ${tookMs} ms after the revocation`)
    assert.equal((await links()).length, 0)
    // The connector keeps trying, and is refused.
    await sleep(1500)
    assert.equal((await links()).length, 0)
    const after = psql(gw.conninfo(token, 'private'), 'select 1')
    assert.notEqual(after.code, 0)
    assert.match(after.stderr, /connector edge-1, which is not connected/)
  })
})

describe('connector: what it dials', () => {
  // A stand-in gateway that asks for an address it did not list: the one fault a real gateway
  // cannot be made to commit, so it is played here over the real wire protocol.
  test('a connector refuses a CONNECT to an address the gateway did not list, ', async () => {
    const target = createNetServer((s) => s.end('hello')).listen(0, '127.0.0.1')
    const other = createNetServer((s) => s.end('secret')).listen(0, '127.0.0.1')
    await Promise.all([target, other].map((s) => new Promise((r) => s.once('listening', r))))
    const listed = `127.0.0.1:${(target.address() as AddressInfo).port}`
    const unlisted = `127.0.0.1:${(other.address() as AddressInfo).port}`
    const tls = readFileSync(join(gw.dataDir, 'tls/key.pem'))
    const cert = readFileSync(join(gw.dataDir, 'tls/cert.pem'))
    const results: Record<string, { status: number; error: string; body: string }> = {}
    const fake = createTlsServer({ key: tls, cert, ALPNProtocols: [ALPN] }, (sock) => {
      const s = h2connect('http://connector', { createConnection: () => sock })
      s.on('error', () => undefined)
      const req = (headers: Record<string, string>, body?: string): Promise<{ status: number; error: string; body: string }> =>
        new Promise((resolve) => {
          const r = s.request(headers, { endStream: body === undefined && headers[h2.HTTP2_HEADER_METHOD] !== 'CONNECT' })
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
          const done = (): void => {
            resolve({ status, error, body: b })
            r.close()
          }
          r.on('end', done)
          r.on('close', done)
          r.on('error', () => undefined)
          if (body !== undefined) r.end(body)
        })
      void (async () => {
        await req({ [h2.HTTP2_HEADER_METHOD]: 'GET', [h2.HTTP2_HEADER_PATH]: ATTACH_PATH })
        results.before = await req({ [h2.HTTP2_HEADER_METHOD]: 'CONNECT', [h2.HTTP2_HEADER_AUTHORITY]: listed })
        await req(
          { [h2.HTTP2_HEADER_METHOD]: 'POST', [h2.HTTP2_HEADER_PATH]: TARGETS_PATH },
          JSON.stringify({ name: 'edge-1', targets: [listed] }),
        )
        results.listed = await req({ [h2.HTTP2_HEADER_METHOD]: 'CONNECT', [h2.HTTP2_HEADER_AUTHORITY]: listed })
        results.unlisted = await req({ [h2.HTTP2_HEADER_METHOD]: 'CONNECT', [h2.HTTP2_HEADER_AUTHORITY]: unlisted })
        s.close()
      })()
    }).listen(0, '127.0.0.1')
    await new Promise((r) => fake.once('listening', r))
    const agent = new ConnectorAgent({
      host: '127.0.0.1',
      port: (fake.address() as AddressInfo).port,
      credential: 'ghk_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA',
      fingerprint: new X509Certificate(cert).fingerprint256.replaceAll(':', '').toLowerCase(),
      allow: [],
      version: 'test',
      log: pino({ level: 'silent' }),
    })
    const running = agent.run()
    await until('all three answers', () => results.unlisted)
    agent.stop()
    await running
    assert.equal(results.before?.status, 403, 'nothing is dialled before the gateway lists targets')
    assert.equal(results.listed?.status, 200)
    assert.equal(results.listed?.body, 'hello')
    assert.equal(results.unlisted?.status, 403)
    assert.match(results.unlisted?.error ?? '', /is not a target of this connector/)
    assert.equal(results.unlisted?.body, '')
    fake.close()
    target.close()
    other.close()
  })
})

describe('connector: what it says about itself', () => {
  // A connector's version and host name are its own claims, shown to operators on a terminal by
  // `connectors list`: a hostile connector (here an in-process agent with a valid edge-2 key that
  // reports a version and host name made of newlines, tabs and terminal escapes) must not be able
  // to fake a line of another connector or erase its own.
  test('its version and host name reach the list as printable text only, and the text output escapes every field', async () => {
    const forged = '9\nedge-1\tl-fake\tservice:edge-1\t10.0.0.9:1\tv9\x1b[2K\x1b[1A'
    const agent = new ConnectorAgent({
      host: net.gatewayAddress,
      port: connectorPort,
      credential: (await createKey('edge-2')).key,
      fingerprint: fingerprint.replaceAll(':', '').toLowerCase(),
      allow: [],
      version: forged,
      hostname: `box\r\nedge-1\u202e`,
      log: pino({ level: 'silent' }),
    })
    const running = agent.run()
    try {
      const row = await until('edge-2 attached', async () => (await links()).find((l) => l.name === 'edge-2'))
      assert.equal(row.version, '9?edge-1?l-fake?service:edge-1?10.0.0.9:1?v9?[2K?[1A')
      assert.equal(row.hostname, 'box??edge-1?')
      const attached = (await auditEvents('connector.attached')).filter((e) => e.connector === 'edge-2')
      assert.ok(attached.length > 0 && attached.every((e) => /^[\x20-\x7e]*$/.test(String(e.version))))
    } finally {
      agent.stop()
      await running
    }
    // What an older gateway (or anything else) might still hand the CLI is escaped there too.
    const line = linkLine({ name: 'edge-2', link: 'l-1', principal: 'service:edge-2', address: 'a', version: forged, hostname: 'h\t' })
    assert.equal(line.split('\n').length, 2, 'one line')
    assert.equal(line.split('\t').length, 9, 'nine fields')
    for (const field of line.slice(0, -1).split('\t')) assert.match(field, /^[\x20-\x7e]*$/, 'printable fields')
    assert.match(line, /v9\\x0aedge-1\\x09l-fake/)
  })
})
