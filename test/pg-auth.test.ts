// Identity first: forged, garbage, expired, wrong-key and revoked tokens are refused with 28P01
// and no server connection is ever opened (counted at a TCP relay in front of PostgreSQL, and
// checked in pg_stat_activity). Unknown connections, unresolvable secrets, unreachable servers and
// startup parameters that would carry work past the classifier get their own clear errors.

import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { after, before, describe, test } from 'node:test'
import pg from 'pg'
import { direct, LOCAL_PG, TestGateway } from './helpers/gateway.js'
import { countingRelay } from './helpers/relay.js'
import { isLoopback } from '../proxies/postgres/upstream.js'

async function connectError(cfg: pg.ClientConfig): Promise<{ code?: string; message: string } | null> {
  const c = new pg.Client(cfg)
  c.on('error', () => undefined)
  try {
    await c.connect()
    await c.end()
    return null
  } catch (err) {
    return err as { code?: string; message: string }
  }
}

describe('authentication and session admission', () => {
  let gw: TestGateway
  let other: TestGateway
  let relay: Awaited<ReturnType<typeof countingRelay>>
  const cfg = (password: string, database = 'app', application_name = 'gh-auth-neg'): pg.ClientConfig => ({
    host: '127.0.0.1',
    port: gw.pgPort,
    database,
    user: 'mallory',
    password,
    application_name,
  })

  before(async () => {
    relay = await countingRelay()
    gw = await TestGateway.start({
      connections: [
        { ...LOCAL_PG, address: `127.0.0.1:${relay.port}` },
        { ...LOCAL_PG, name: 'nosecret', user: 'postgres', password: 'env:GH_TEST_SECRET_THAT_IS_NOT_SET' },
        { ...LOCAL_PG, name: 'down', address: '127.0.0.1:1' },
      ],
    })
    other = await TestGateway.start()
  })
  after(async () => {
    relay.close()
    await gw.cleanup()
    await other.cleanup()
  })

  test('forged, garbage, expired, wrong-key and revoked tokens get 28P01 and open no server connection', async () => {
    const good = gw.token('user:alice')
    const [h, p, s] = good.split('.') as [string, string, string]
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>
    const forgedPayload = Buffer.from(JSON.stringify({ ...claims, sub: 'user:root', grp: ['gatehouse-admins'] })).toString('base64url')
    const forged = `${h}.${forgedPayload}.${s}`
    const noneAlg = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${p}.`
    const expiring = gw.token('user:alice', ['--ttl', '1s'])
    const wrongKey = other.token('user:alice')
    const revoked = gw.tokenJson('user:alice')
    const rv = gw.cli(['token', 'revoke', revoked.id])
    assert.equal(rv.code, 0, rv.stderr)
    await new Promise((r) => setTimeout(r, 2100)) // let `expiring` expire
    const before = relay.accepted()
    const cases: [string, string][] = [
      ['forged payload', forged],
      ['alg none', noneAlg],
      ['garbage', 'not-a-token'],
      ['empty', ''],
      ['expired', expiring],
      ['signed by another gateway', wrongKey],
      ['revoked', revoked.token],
      ['oversized', 'x'.repeat(5000)],
    ]
    for (const [name, token] of cases) {
      const err = await connectError(cfg(token))
      assert.ok(err, `${name}: must be refused`)
      assert.equal(err.code, '28P01', `${name}: ${err.message}`)
      assert.doesNotMatch(err.message, /jwt|signature|jose|Error:/i, `${name}: no internals in the message`)
    }
    assert.equal(relay.accepted(), before, 'no server connection may be opened for a refused token')
    assert.equal(direct("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'gh-auth-neg'"), '0')
    // And the same good token does reach the server through the relay.
    // (An async client: the relay lives in this process, so nothing here may block the loop.)
    const okClient = new pg.Client(cfg(good, 'app', 'gh-auth-ok'))
    await okClient.connect()
    assert.equal((await okClient.query('SELECT 42 AS v')).rows[0].v, 42)
    await okClient.end()
    assert.equal(relay.accepted(), before + 1)
    // Refusals are audited, without the token.
    const refused = gw.auditEvents(['--type', 'session.refused'])
    assert.ok(refused.length >= cases.length)
    assert.doesNotMatch(JSON.stringify(refused), new RegExp(s.slice(0, 20)))
  })

  test('revoking a token ends the live sessions opened with it', async () => {
    const t = gw.tokenJson('user:bob')
    const c = new pg.Client({
      host: '127.0.0.1',
      port: gw.pgPort,
      database: 'app',
      user: 'bob',
      password: t.token,
      application_name: 'gh-revoke-live',
    })
    const ended = new Promise<{ code?: string }>((resolve) => c.on('error', (e) => resolve(e as { code?: string })))
    await c.connect()
    assert.equal((await c.query('SELECT 1 AS x')).rows[0].x, 1)
    const rv = gw.cli(['token', 'revoke', t.id, '--reason', 'test'])
    assert.equal(rv.code, 0, rv.stderr)
    assert.match(rv.stdout, /1 live session/)
    const err = await Promise.race([ended, new Promise<null>((r) => setTimeout(() => r(null), 3000))])
    assert.ok(err, 'the client must be told')
    assert.equal(err.code, '57P01')
    await new Promise((r) => setTimeout(r, 200))
    assert.equal(direct("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'gh-revoke-live'"), '0')
  })

  test('an unknown connection gets 3D000; an unresolvable secret and an unreachable server get 08006', async () => {
    const token = gw.token('user:alice')
    const unknown = await connectError(cfg(token, 'no_such_connection'))
    assert.equal(unknown?.code, '3D000')
    assert.match(unknown?.message ?? '', /no_such_connection/)
    const secret = await connectError(cfg(token, 'nosecret'))
    assert.equal(secret?.code, '08006')
    assert.doesNotMatch(secret?.message ?? '', /GH_TEST_SECRET/, 'the reference is for the log, not the client')
    const down = await connectError(cfg(token, 'down'))
    assert.equal(down?.code, '08006')
    assert.match(gw.stderr, /GH_TEST_SECRET_THAT_IS_NOT_SET is not set/)
  })

  test('startup parameters outside the allow-list (replication, options setting role) are refused', async () => {
    const token = gw.token('user:alice')
    const before = relay.accepted()
    const opt = await connectError({ ...cfg(token), options: '-c role=pg_read_server_files' } as pg.ClientConfig)
    assert.equal(opt?.code, '08004')
    assert.match(opt?.message ?? '', /setting "role" is not allowed in startup options/)
    const rep = await connectError({ ...cfg(token), replication: 'database' } as pg.ClientConfig)
    assert.equal(rep?.code, '08004')
    assert.match(rep?.message ?? '', /"replication" is not allowed/)
    assert.equal(relay.accepted(), before)
  })

  test('GSSENCRequest is declined and the client continues in the clear', async () => {
    const token = gw.token('user:alice')
    const sock = connect({ host: '127.0.0.1', port: gw.pgPort })
    await new Promise<void>((r) => sock.once('connect', () => r()))
    const reads: Buffer[] = []
    let waiter: (() => void) | null = null
    sock.on('data', (d: Buffer) => {
      reads.push(d)
      waiter?.()
    })
    const readUntil = async (pred: (b: Buffer) => boolean): Promise<Buffer> => {
      for (let i = 0; i < 100; i++) {
        const all = Buffer.concat(reads)
        if (pred(all)) return all
        await new Promise<void>((r) => {
          waiter = r
          setTimeout(r, 50)
        })
      }
      throw new Error('timeout')
    }
    const gss = Buffer.alloc(8)
    gss.writeInt32BE(8, 0)
    gss.writeInt32BE(80877104, 4)
    sock.write(gss)
    const n = await readUntil((b) => b.length >= 1)
    assert.equal(n.toString('latin1', 0, 1), 'N')
    reads.length = 0
    const params = Buffer.from('user\0alice\0database\0app\0\0')
    const startup = Buffer.alloc(8 + params.length)
    startup.writeInt32BE(8 + params.length, 0)
    startup.writeInt32BE(196608, 4)
    params.copy(startup, 8)
    sock.write(startup)
    const auth = await readUntil((b) => b.length >= 9)
    assert.equal(auth[0], 0x52) // 'R'
    assert.equal(auth.readInt32BE(5), 3) // AuthenticationCleartextPassword
    reads.length = 0
    const pw = Buffer.from(`${token}\0`)
    const pm = Buffer.alloc(5 + pw.length)
    pm[0] = 0x70
    pm.writeInt32BE(4 + pw.length, 1)
    pw.copy(pm, 5)
    sock.write(pm)
    const ready = await readUntil((b) => b.includes(Buffer.from([0x5a, 0, 0, 0, 5, 0x49])))
    assert.equal(ready[0], 0x52)
    sock.destroy()
  })
})

describe('plaintext tokens only from loopback', () => {
  // A test cannot reach the gateway from a non-loopback address here (only loopback traffic is
  // allowed on this machine), so the rule the proxy applies to the peer address is tested directly.
  test('the loopback check accepts only loopback peers', () => {
    for (const a of ['127.0.0.1', '127.1.2.3', '::1', '::ffff:127.0.0.1', 'localhost']) assert.equal(isLoopback(a), true, a)
    for (const a of ['10.0.0.5', '192.168.1.2', '::ffff:10.0.0.5', 'fe80::1', '0.0.0.0', '', '1270.0.0.1'])
      assert.equal(isLoopback(a), false, a)
  })
})
