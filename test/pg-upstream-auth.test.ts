// Upstream downgrade: a target that asks for a weaker password exchange than the connection's
// minimum (default SCRAM-SHA-256) gets nothing. Private clusters whose pg_hba.conf asks for md5 and
// for cleartext passwords; a relay between the gateway and the server records every byte the
// gateway sends, so "the secret was not sent" is checked on the wire, not inferred. `trust` (the
// server asks for nothing) is not a downgrade.

import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { after, before, describe, test } from 'node:test'
import { TestGateway } from './helpers/gateway.js'
import { WireSession } from './helpers/pgcorpus.js'
import { PgCluster } from './helpers/pgserver.js'

const SUPER_PW = 'Super-Pw-31d9-never-sent'
const MD5_PW = 'Md5-Pw-8e21-never-sent'
const CLEAR_PW = 'Clear-Pw-5b77-never-sent'

/** A relay to the cluster that records what the gateway sends toward the server. */
async function sniffingRelay(target: number): Promise<{ port: number; sent: () => Buffer; close: () => void }> {
  const chunks: Buffer[] = []
  const sockets = new Set<Socket>()
  const server: Server = createServer((gwSide) => {
    const up = connect({ host: '127.0.0.1', port: target })
    sockets.add(gwSide).add(up)
    gwSide.on('data', (d: Buffer) => {
      chunks.push(Buffer.from(d))
      up.write(d)
    })
    up.pipe(gwSide)
    const end = (): void => {
      gwSide.destroy()
      up.destroy()
    }
    gwSide.on('error', end).on('close', end)
    up.on('error', end).on('close', end)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const a = server.address()
  return {
    port: a && typeof a === 'object' ? a.port : 0,
    sent: () => Buffer.concat(chunks),
    close: () => {
      for (const s of sockets) s.destroy()
      server.close()
    },
  }
}

function md5Hex(s: string): string {
  return createHash('md5').update(s).digest('hex')
}

describe('upstream password exchange minimum', () => {
  let cluster: PgCluster
  let gw: TestGateway
  let relay: Awaited<ReturnType<typeof sniffingRelay>>
  let token = ''

  before(async () => {
    cluster = await PgCluster.start({
      password: SUPER_PW,
      statementLog: true,
      hba: [
        'host all md5user 127.0.0.1/32 md5',
        'host all clearuser 127.0.0.1/32 password',
        'host all trustuser 127.0.0.1/32 trust',
        'host all all 127.0.0.1/32 scram-sha-256',
        'local all all trust',
        '',
      ].join('\n'),
    })
    cluster.sql(`SET password_encryption = 'md5'; CREATE ROLE md5user LOGIN PASSWORD '${MD5_PW}'`)
    cluster.sql(`CREATE ROLE clearuser LOGIN PASSWORD '${CLEAR_PW}'; CREATE ROLE trustuser LOGIN`)
    relay = await sniffingRelay(cluster.port)
    const base = { protocol: 'postgres', address: `127.0.0.1:${relay.port}`, database: 'postgres', labels: {} }
    gw = await TestGateway.start({
      connections: [
        { ...base, name: 'md5_default', user: 'md5user', password: 'env:GH_MD5_PW' },
        { ...base, name: 'md5_allowed', user: 'md5user', password: 'env:GH_MD5_PW', auth: 'md5' },
        { ...base, name: 'clear_default', user: 'clearuser', password: 'env:GH_CLEAR_PW' },
        { ...base, name: 'clear_md5', user: 'clearuser', password: 'env:GH_CLEAR_PW', auth: 'md5' },
        { ...base, name: 'clear_allowed', user: 'clearuser', password: 'env:GH_CLEAR_PW', auth: 'password' },
        { ...base, name: 'scram', user: 'postgres', password: 'env:GH_SUPER_PW' },
        { ...base, name: 'trust', user: 'trustuser', password: 'env:GH_SUPER_PW' },
      ],
      env: { GH_MD5_PW: MD5_PW, GH_CLEAR_PW: CLEAR_PW, GH_SUPER_PW: SUPER_PW },
    })
    token = gw.token('user:alice')
  })
  after(async () => {
    await gw?.cleanup()
    relay?.close()
    cluster?.stop()
  })

  async function connectTo(db: string): Promise<string> {
    const port = gw.pgPort
    const s = await WireSessionFor(port, db)
    const o = await s.query('SELECT current_user')
    await s.close()
    return o.rows[0]?.[0] ?? ''
  }

  async function WireSessionFor(port: number, db: string): Promise<WireSession> {
    return await WireSession.open(port, token, { database: db, application_name: `auth-${db}` })
  }

  test('a server asking for md5 or a cleartext password below the minimum gets nothing', async () => {
    for (const db of ['md5_default', 'clear_default', 'clear_md5']) {
      await assert.rejects(WireSessionFor(gw.pgPort, db), (err: Error) => {
        assert.match(err.message, /08006/)
        assert.match(err.message, /weaker password exchange/)
        return true
      })
    }
    const sent = relay.sent()
    for (const needle of [MD5_PW, CLEAR_PW, md5Hex(MD5_PW + 'md5user'), md5Hex(CLEAR_PW + 'clearuser')]) {
      assert.equal(sent.indexOf(needle), -1, `the gateway sent ${needle.slice(0, 6)}… toward the server`)
    }
    // The server saw the attempts and no password: none of them authenticated.
    const authorized = cluster
      .serverLog()
      .filter((r) => r.message.startsWith('connection authorized') && /md5user|clearuser/.test(r.message))
    assert.deepEqual(authorized, [])
    assert.match(gw.stderr, /weaker than the connection's minimum/)
  })

  test('md5 and cleartext work where the connection allows them; SCRAM and trust by default', async () => {
    assert.equal(await connectTo('md5_allowed'), 'md5user')
    assert.equal(await connectTo('clear_allowed'), 'clearuser')
    assert.equal(await connectTo('scram'), 'postgres')
    assert.equal(await connectTo('trust'), 'trustuser')
  })

  test('an unknown auth setting is a configuration error', async () => {
    await assert.rejects(
      TestGateway.start({ connections: [{ name: 'x', protocol: 'postgres', address: '127.0.0.1:1', auth: 'md4' }] }),
      /auth: the weakest password exchange/,
    )
  })
})
