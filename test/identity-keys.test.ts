// Service-account API keys against a real state database: only a hash is stored, a wrong secret,
// an unknown id, an expired or revoked key are refused alike, rotation keeps the rights and ends
// the old key after its grace period, and a token exchanged for a key dies with the key.

import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { IdentityError } from '../engine/identity/errors.js'
import { ServiceKeys } from '../engine/identity/service-keys.js'
import { Store } from '../engine/store.js'
import { loadOrCreateSigningKey, TokenIssuer } from '../engine/identity/tokens.js'

function refused(f: () => unknown, re: RegExp): void {
  assert.throws(f, (err: unknown) => err instanceof IdentityError && re.test(err.publicMessage) && !/[0-9a-f]{64}/.test(err.publicMessage))
}

describe('service-account keys', () => {
  let dir: string
  let store: Store
  let keys: ServiceKeys
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'gh-keys-'))
    store = new Store(dir)
    keys = new ServiceKeys(store)
  })
  after(() => {
    store.close()
    rmSync(dir, { recursive: true, force: true })
  })

  test('a key stands for its service, groups and scope; only its hash is stored', () => {
    const k = keys.create({
      name: 'etl',
      groups: ['loaders'],
      scope: ['connection:app', 'sql.read'],
      ttlSeconds: 3600,
      description: 'nightly load',
    })
    const id = keys.verify(k.key)
    assert.deepEqual(id.chain, [{ id: 'service:etl', kind: 'service', groups: ['loaders'], scope: ['connection:app', 'sql.read'] }])
    assert.deepEqual(id.tokenIds, [k.record.id])
    const secret = k.key.slice(`ghk_${k.record.id}_`.length)
    store.close()
    const db = readFileSync(join(dir, 'state.db'))
    assert.equal(db.includes(Buffer.from(secret)), false, 'the secret is not in the database')
    store = new Store(dir)
    keys = new ServiceKeys(store)
    assert.equal(keys.verify(k.key).chain[0]?.id, 'service:etl')
  })

  test('a wrong secret, an unknown id, garbage, an expired or revoked key are refused alike', () => {
    const k = keys.create({ name: 'etl', ttlSeconds: 3600 })
    const flipped = k.key.slice(0, -1) + (k.key.endsWith('A') ? 'B' : 'A')
    refused(() => keys.verify(flipped), /invalid, expired or revoked/)
    refused(() => keys.verify(`ghk_${'0'.repeat(16)}_${k.key.slice(-43)}`), /invalid, expired or revoked/)
    refused(() => keys.verify('ghk_nope'), /invalid, expired or revoked/)
    store.revoke(k.record.id, 'test')
    refused(() => keys.verify(k.key), /invalid, expired or revoked/)
    const short = keys.create({ name: 'etl', ttlSeconds: 1 })
    store.markServiceKeyRotated(short.record.id, 'x', Math.floor(Date.now() / 1000) - 1)
    refused(() => keys.verify(short.key), /invalid, expired or revoked/)
    assert.throws(() => keys.create({ name: 'bad name', ttlSeconds: 60 }), /service name/)
    assert.throws(() => keys.create({ name: 'etl', scope: ['DROP'], ttlSeconds: 60 }), /scope entry/)
  })

  test('rotation: same rights, the old key ends after the grace period, rotating twice is refused', () => {
    const old = keys.create({ name: 'deployer', groups: ['deployers'], scope: ['connection:app'], ttlSeconds: 86400 })
    const next = keys.rotate(old.record.id, { graceSeconds: 600 })
    assert.deepEqual(keys.verify(next.key).chain, keys.verify(old.key).chain, 'same rights')
    assert.equal(next.record.expiresAt - next.record.createdAt, 86400)
    const rec = store.getServiceKey(old.record.id)
    assert.equal(rec?.rotatedTo, next.record.id)
    assert.ok((rec?.expiresAt ?? 0) <= Math.floor(Date.now() / 1000) + 600)
    assert.throws(() => keys.rotate(old.record.id, { graceSeconds: 0 }), /already rotated/)
    const now = keys.rotate(next.record.id, { graceSeconds: 0 })
    refused(() => keys.verify(next.key), /invalid, expired or revoked/)
    assert.equal(keys.verify(now.key).chain[0]?.id, 'service:deployer')
    const listed = keys.list().find((k) => k.id === next.record.id)
    assert.equal(listed?.rotatedTo, now.record.id)
    assert.equal(JSON.stringify(keys.list()).includes(now.key.slice(-43)), false, 'listings never carry secrets')
  })

  test('a token exchanged for a key carries its id: revoking the key refuses the token and its children', async () => {
    const signing = await loadOrCreateSigningKey(dir)
    const issuer = new TokenIssuer(signing, 'https://gatehouse.test')
    const k = keys.create({ name: 'reporter', scope: ['connection:app', 'sql.read'], ttlSeconds: 3600 })
    const id = keys.verify(k.key)
    const who = id.chain[0]
    assert.ok(who)
    const t = await issuer.issue({ subject: who.id, groups: who.groups, scope: who.scope, ttlSeconds: 600, source: k.record.id })
    const isRevoked = (j: string): boolean => store.isRevoked(j)
    const child = await issuer.delegate(t.token, { agent: 'summarizer', scope: [] }, isRevoked)
    assert.deepEqual((await issuer.verify(child.token, isRevoked)).tokenIds, [k.record.id, t.id, child.id])
    store.revoke(k.record.id, null)
    await assert.rejects(issuer.verify(t.token, isRevoked), /ancestor [0-9a-f]{16} of token .* is revoked/)
    await assert.rejects(issuer.verify(child.token, isRevoked), /ancestor [0-9a-f]{16} of token .* is revoked/)
  })
})
