// Connector join tokens, in network namespaces made here: `gatehouse connectors token` makes a
// one-time join token; `gatehouse connector` presents it once and is given a short-lived
// credential (30 s here: a restarted connector's start-up under load takes seconds of it) that the gateway replaces before it expires while the link stays up. A
// used, expired, forged or revoked join token cannot attach, a replaced credential cannot either,
// the credential is no password for a session, and the audit names the connector.

import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { after, before, describe, test } from 'node:test'
import { ConnectorLab, type RunningConnector, sleep, until } from './helpers/connector.js'
import { psql } from './helpers/gateway.js'

const lab = new ConnectorLab()
let token = ''
let joined: RunningConnector

interface JoinToken {
  token: string
  id: string
  connector: string
  expires_at: string
}

function joinToken(ttl?: string): Promise<JoinToken> {
  return lab.api<JoinToken>('POST', '/v1/connectors/join-tokens', { name: 'edge-1', ...(ttl ? { ttl } : {}) })
}

before(async () => {
  try {
    lab.setUpNetwork()
    await lab.startGateway(
      [
        {
          name: 'pg',
          protocol: 'postgres',
          address: `${lab.net.privateAddress}:5432`,
          database: 'postgres',
          user: 'postgres',
          via: 'edge-1',
        },
      ],
      { connectors: [{ name: 'edge-1', credential_ttl: '30s' }] },
    )
    token = lab.gateway.token('user:alice')
  } catch (err) {
    await lab.cleanup()
    throw err
  }
})

after(() => lab.cleanup())

/** A connector that presents `credential`, and the refusal it logs. */
async function refusedWith(credential: string): Promise<string> {
  const c = lab.startConnector(credential)
  await until('the refusal', () => /the gateway refused this connector/.test(c.log()))
  await lab.stopConnector(c.proc)
  return c.log()
}

describe('connector join tokens', () => {
  test('gatehouse connectors token makes a one-time join token; the connector exchanges it at attach', async () => {
    const cli = lab.gateway.cli(['connectors', 'token', '--name', 'edge-1', '--ttl', '10m'])
    assert.equal(cli.code, 0, cli.stderr)
    const jt = cli.stdout.trim()
    assert.match(jt, /^ghj_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/)
    assert.match(cli.stderr, /one use, until/)
    joined = lab.startConnector(jt)
    const [link] = await lab.attached(1)
    assert.equal(link?.principal, 'service:edge-1')
    // The file now holds the credential the join token earned, not the join token.
    const held = readFileSync(joined.file, 'utf8').trim()
    assert.doesNotMatch(held, /^ghj_/)
    assert.equal(held.split('.').length, 3)
    const r = psql(lab.gateway.conninfo(token, 'pg'), 'select 1')
    assert.equal(r.code, 0, r.stderr)
    const [attached] = await lab.auditEvents('connector.attached')
    assert.equal(attached?.joined, jt.slice(4, 20))
    assert.ok(!JSON.stringify(await lab.auditEvents('connector.join_token')).includes(jt.slice(-20)), 'the secret is not in the audit')
  })

  test('the credential is replaced before it expires; the link outlives several credentials', async () => {
    const [first] = await lab.links()
    const before = readFileSync(joined.file, 'utf8').trim()
    await until('two rotations', async () => (await lab.auditEvents('connector.rotated')).length >= 2, 90_000)
    const [now] = await lab.links()
    assert.equal(now?.link, first?.link, 'the same link, past its first credential’s 30 s')
    const after = readFileSync(joined.file, 'utf8').trim()
    assert.notEqual(after, before)
    const r = psql(lab.gateway.conninfo(token, 'pg'), 'select 1')
    assert.equal(r.code, 0, r.stderr)
    // A replaced credential is retired at once: it cannot attach a second connector.
    assert.match(await refusedWith(before), /authentication failed/)
    assert.equal((await lab.links()).length, 1)
  })

  test('the connector credential is no password for a session', () => {
    const credential = readFileSync(joined.file, 'utf8').trim()
    const r = psql(lab.gateway.conninfo(credential, 'pg'), 'select 1')
    assert.notEqual(r.code, 0)
    assert.match(r.stderr, /authentication failed/)
  })

  test('a used join token cannot attach again', async () => {
    const jt = await joinToken()
    const c = lab.startConnector(jt.token)
    await lab.attached(2)
    await lab.stopConnector(c.proc, 'SIGKILL')
    await lab.attached(1)
    const log = await refusedWith(jt.token)
    assert.match(log, /the join token is invalid, expired, already used or revoked/)
    const refused = await lab.auditEvents('connector.refused')
    assert.ok(refused.some((e) => e.reason === `join token ${jt.id} was already used` && e.kind === 'used'))
    assert.ok(!JSON.stringify(refused).includes(jt.token.slice(-20)), 'the secret is not in the audit')
  })

  test('an expired or forged join token cannot attach', async () => {
    const short = await joinToken('1s')
    await sleep(1500)
    assert.match(await refusedWith(short.token), /already used or revoked/)
    const real = await joinToken()
    const forged = `ghj_${real.id}_${'A'.repeat(43)}`
    assert.match(await refusedWith(forged), /already used or revoked/)
    const refused = await lab.auditEvents('connector.refused')
    assert.ok(refused.some((e) => e.reason === `join token ${short.id} expired` && e.kind === 'expired'))
    assert.ok(refused.some((e) => e.reason === `unknown id or wrong secret for join token ${real.id}` && e.kind === 'forged'))
    // The forgery did not use the real token up.
    const c = lab.startConnector(real.token)
    await lab.attached(2)
    await lab.stopConnector(c.proc, 'SIGKILL')
    await lab.attached(1)
  })

  test('restarted, the connector attaches with the credential it holds, without a new join token', async () => {
    // Right after a rotation, so the credential it holds has its whole 30 s for the restart (the
    // CLI's start-up on a loaded machine takes seconds).
    const rotations = (await lab.auditEvents('connector.rotated')).length
    await until('a rotation', async () => (await lab.auditEvents('connector.rotated')).length > rotations, 60_000)
    await lab.stopConnector(joined.proc, 'SIGKILL')
    await lab.attached(0)
    joined = lab.startConnector(readFileSync(joined.file, 'utf8').trim())
    await lab.attached(1)
    const r = psql(lab.gateway.conninfo(token, 'pg'), 'select 1')
    assert.equal(r.code, 0, r.stderr)
    const starts = (await lab.auditEvents('session.start')).filter((e) => e.connection === 'pg')
    assert.ok(starts.length >= 3)
    for (const e of starts) assert.equal(e.via, 'edge-1')
  })

  test('revoking the join token drops the link it started within a second, and it cannot come back', async () => {
    const [attached] = (await lab.auditEvents('connector.attached')).filter((e) => typeof e.joined === 'string')
    const id = String(attached?.joined)
    await lab.api('POST', `/v1/tokens/${id}/revoke`, { reason: 'test' })
    const at = Date.now()
    await until('the link dropped', async () => (await lab.links()).length === 0, 5_000)
    assert.ok(Date.now() - at < 1500, `dropped ${Date.now() - at} ms after the revocation`)
    await until('the connector refused', () => /the gateway refused this connector/.test(joined.log()), 60_000)
    assert.equal((await lab.links()).length, 0)
  })
})
