// Delegation chains that can only narrow, at the token layer: what `TokenIssuer.delegate`
// issues, what it refuses (wider scope, longer life, depth over the limit, a cycle, a revoked
// parent), and what `verify` refuses on every use: forged algorithms, wrong issuer, audience or
// key id, time bounds, a tampered act chain, and tokens that our own key signed but whose chain
// breaks a rule (so the rules are rechecked from the token, not trusted from issue time).
// The same refusals through psql, with no server connection opened, are in identity-e2e.test.ts.

import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { SignJWT } from 'jose'
import { IdentityError } from '../engine/identity/errors.js'
import { minimalRequest, narrowScope, scopeWithinProblem } from '../engine/identity/scope.js'
import { lineage, loadOrCreateSigningKey, MAX_TOKEN_CHARS, type SigningKey, TokenIssuer, tokenHash } from '../engine/identity/tokens.js'

const ISSUER = 'https://gatehouse.example-corp.com'

function claimsOf(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()) as Record<string, unknown>
}

async function rejects(p: Promise<unknown>, message: RegExp, name: string): Promise<IdentityError> {
  try {
    await p
  } catch (err) {
    assert.ok(err instanceof IdentityError, `${name}: an IdentityError (got ${String(err)})`)
    assert.match(`${err.message} | ${err.publicMessage}`, message, name)
    assert.doesNotMatch(err.publicMessage, /jwt|jose|signature|Error:/i, `${name}: no internals in the public message`)
    return err
  }
  assert.fail(`${name}: must be refused`)
}

describe('scope narrowing', () => {
  const cases: { name: string; parent: string; asked: string; want: string | RegExp }[] = [
    { name: 'empty request inherits everything', parent: 'connection:app sql.*', asked: '', want: 'connection:app sql.*' },
    { name: 'action inside a family', parent: 'connection:app sql.*', asked: 'sql.read', want: 'connection:app sql.read' },
    { name: 'connection from an unrestricted parent', parent: '', asked: 'connection:app sql.read', want: 'connection:app sql.read' },
    { name: 'sql.session is implied by any sql entry', parent: 'sql.read', asked: 'sql.session', want: 'sql.session' },
    { name: 'star covers families', parent: '*', asked: 'ssh.*', want: 'ssh.*' },
    {
      name: 'wider action',
      parent: 'connection:app sql.read',
      asked: 'sql.write',
      want: /requested scope sql\.write is not within the parent's scope/,
    },
    { name: 'family wider than an action', parent: 'sql.read', asked: 'sql.*', want: /requested scope sql\.\* is not within/ },
    { name: 'star wider than a family', parent: 'sql.*', asked: '*', want: /requested scope \* is not within/ },
    { name: 'other connection', parent: 'connection:app', asked: 'connection:billing', want: /connection:billing is not within/ },
    { name: 'unmask not held', parent: 'connection:app sql.read', asked: 'unmask:emails', want: /unmask:emails is not within/ },
    { name: 'unmask held', parent: 'sql.read unmask:emails', asked: 'sql.read unmask:emails', want: 'sql.read unmask:emails' },
    { name: 'bad syntax', parent: '', asked: 'connection:', want: /not connection:<name>/ },
    { name: 'garbage entry', parent: '', asked: 'DROP TABLE', want: /is not connection:<name>, unmask:<rule>, an action/ },
  ]
  for (const c of cases) {
    test(c.name, () => {
      const r = narrowScope(c.parent.split(' ').filter(Boolean), c.asked.split(' ').filter(Boolean))
      if (typeof c.want === 'string') {
        assert.ok(r.ok, r.ok ? '' : r.problem)
        assert.equal(r.scope.join(' '), c.want)
        // The result lies within the parent, and its shortest request narrows back to it.
        assert.equal(scopeWithinProblem(r.scope, c.parent.split(' ').filter(Boolean)), null)
        const again = narrowScope(c.parent.split(' ').filter(Boolean), minimalRequest(r.scope, c.parent.split(' ').filter(Boolean)))
        assert.ok(again.ok)
        assert.deepEqual([...again.scope].sort(), [...r.scope].sort())
      } else {
        assert.ok(!r.ok)
        assert.match(r.problem, c.want)
      }
    })
  }
  test('a child that drops a restriction of its parent is not within it', () => {
    assert.match(scopeWithinProblem([], ['connection:app']) ?? '', /connection restriction/)
    assert.match(scopeWithinProblem(['connection:app'], ['connection:app', 'sql.read']) ?? '', /action restriction/)
  })
})

describe('delegated tokens', () => {
  let dir: string
  let key: SigningKey
  let issuer: TokenIssuer
  const revoked = new Set<string>()
  const isRevoked = (jti: string): boolean => revoked.has(jti)

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gh-deleg-'))
    key = await loadOrCreateSigningKey(dir)
    issuer = new TokenIssuer(key, ISSUER)
  })
  after(() => rmSync(dir, { recursive: true, force: true }))

  const rootToken = (scope: string[] = [], ttlSeconds = 3600) =>
    issuer.issue({ subject: 'user:alice', groups: ['analysts', 'writers'], scope, ttlSeconds })

  test('alice → A → B: chain root first, every ancestor id, each hop its scope, nested act', async () => {
    const root = await rootToken()
    const a = await issuer.delegate(root.token, { agent: 'A', scope: ['connection:app', 'sql.read'], ttlSeconds: 900 }, isRevoked)
    const b = await issuer.delegate(a.token, { agent: 'B', scope: [] }, isRevoked)
    const id = await issuer.verify(b.token, isRevoked)
    assert.deepEqual(
      id.chain.map((p) => [p.id, p.kind, p.groups.join(','), p.scope.join(' ')]),
      [
        ['user:alice', 'user', 'analysts,writers', ''],
        ['agent:A', 'agent', '', 'connection:app sql.read'],
        ['agent:B', 'agent', '', 'connection:app sql.read'],
      ],
    )
    assert.deepEqual(id.tokenIds, [root.id, a.id, b.id])
    assert.deepEqual(lineage(b.id), [root.id, a.id, b.id])
    assert.ok(b.expiresAt <= a.expiresAt && a.expiresAt <= root.expiresAt)
    const c = claimsOf(b.token)
    assert.equal(c.sub, 'user:alice', 'RFC 8693: sub is the subject on whose behalf the actors work')
    assert.deepEqual(c.act, { sub: 'agent:B', act: { sub: 'agent:A', scp: 'connection:app sql.read' } })
    assert.equal(c.scp, 'connection:app sql.read')
    assert.equal(c.dep, 2)
    assert.equal(c.pth, tokenHash(a.token))
    assert.equal(c.aud, ISSUER)
  })

  test('a wider scope is refused, naming the entry', async () => {
    const root = await rootToken()
    const a = await issuer.delegate(root.token, { agent: 'A', scope: ['connection:app', 'sql.read'] }, isRevoked)
    const e = await rejects(
      issuer.delegate(a.token, { agent: 'B', scope: ['sql.read', 'sql.write'] }, isRevoked),
      /requested scope sql\.write is not within the parent's scope/,
      'wider scope',
    )
    assert.equal(e.oauth, 'invalid_scope')
    await rejects(
      issuer.delegate(a.token, { agent: 'B', scope: ['connection:billing'] }, isRevoked),
      /connection:billing is not within/,
      'other connection',
    )
  })

  test('a longer life than the parent is refused; without a lifetime the child ends with its parent', async () => {
    const root = await rootToken([], 600)
    await rejects(
      issuer.delegate(root.token, { agent: 'A', scope: [], ttlSeconds: 3600 }, isRevoked),
      /requested lifetime 1h is longer than the parent's remaining/,
      'longer life',
    )
    const a = await issuer.delegate(root.token, { agent: 'A', scope: [] }, isRevoked)
    assert.equal(a.expiresAt, root.expiresAt)
    const capped = await issuer.delegate(root.token, { agent: 'A', scope: [], defaultTtlSeconds: 60 }, isRevoked)
    assert.ok(capped.expiresAt <= Math.floor(Date.now() / 1000) + 60)
  })

  test('depth over the limit and a cycle are refused', async () => {
    let t = (await rootToken()).token
    for (const agent of ['a1', 'a2', 'a3', 'a4']) t = (await issuer.delegate(t, { agent, scope: [] }, isRevoked)).token
    await rejects(issuer.delegate(t, { agent: 'a5', scope: [] }, isRevoked), /delegation depth 5 exceeds the limit of 4/, 'depth')
    const root = await rootToken()
    const a = await issuer.delegate(root.token, { agent: 'A', scope: [] }, isRevoked)
    const b = await issuer.delegate(a.token, { agent: 'B', scope: [] }, isRevoked)
    await rejects(issuer.delegate(b.token, { agent: 'A', scope: [] }, isRevoked), /agent:A already appears in the chain/, 'cycle')
    const shallow = new TokenIssuer(key, ISSUER, { maxDepth: 1 })
    await rejects(shallow.delegate(a.token, { agent: 'B', scope: [] }, isRevoked), /exceeds the limit of 1/, 'configured limit')
  })

  test('revoking any ancestor invalidates every descendant, and a revoked parent cannot delegate', async () => {
    const root = await rootToken()
    const a = await issuer.delegate(root.token, { agent: 'A', scope: [] }, isRevoked)
    const b = await issuer.delegate(a.token, { agent: 'B', scope: [] }, isRevoked)
    const c = await issuer.delegate(b.token, { agent: 'C', scope: [] }, isRevoked)
    revoked.add(a.id)
    await issuer.verify(root.token, isRevoked)
    await rejects(issuer.verify(b.token, isRevoked), /ancestor .* is revoked.*a token this one was delegated from is revoked/, 'grandchild')
    await rejects(issuer.verify(c.token, isRevoked), /ancestor/, 'great-grandchild')
    await rejects(issuer.delegate(a.token, { agent: 'D', scope: [] }, isRevoked), /the token is revoked/, 'child of a revoked parent')
  })

  test('unmask passes only from a parent that holds it, or a root the masking rules clear', async () => {
    const root = await rootToken()
    await rejects(issuer.delegate(root.token, { agent: 'A', scope: ['unmask:emails'] }, isRevoked), /unmask:emails is not within/, 'unmask')
    const clearing = new TokenIssuer(key, ISSUER, { mayUnmask: (p, rule) => p.groups.includes('analysts') && rule === 'emails' })
    const a = await clearing.delegate(root.token, { agent: 'A', scope: ['sql.read', 'unmask:emails'] }, isRevoked)
    const b = await clearing.delegate(a.token, { agent: 'B', scope: ['sql.read'] }, isRevoked)
    assert.deepEqual((await clearing.verify(b.token, isRevoked)).chain[2]?.scope, ['sql.read'], 'a request without unmask drops it')
    await rejects(clearing.delegate(a.token, { agent: 'B', scope: ['unmask:ssn'] }, isRevoked), /unmask:ssn/, 'another rule')
    // The same token verified where the masking rules no longer clear the root: refused.
    await rejects(issuer.verify(a.token, isRevoked), /scope of agent:A is wider than its parent's/, 'rules changed')
  })

  test('a token for another audience is refused here and verifies for that audience', async () => {
    const root = await rootToken()
    const a = await issuer.delegate(
      root.token,
      { agent: 'A', scope: ['sql.read'], audience: 'https://reports.example-corp.com' },
      isRevoked,
    )
    await rejects(issuer.verify(a.token, isRevoked), /meant for another audience/, 'audience')
    const v = await issuer.verifyToken(a.token, isRevoked, 'https://reports.example-corp.com')
    assert.equal(v.identity.chain.at(-1)?.id, 'agent:A')
    await rejects(issuer.delegate(a.token, { agent: 'B', scope: [] }, isRevoked), /another audience/, 'delegating from it')
    await rejects(issuer.delegate(root.token, { agent: 'B', scope: [], audience: 'not a uri' }, isRevoked), /absolute URI/, 'bad audience')
  })

  test('at the maximum depth, with realistic names and scopes, a token is under 1,000 characters', async () => {
    const corp = new TokenIssuer(key, 'https://gatehouse.example-corp.com')
    let t = (
      await corp.issue({ subject: 'user:alice.johnson@example-corp.com', groups: ['analysts', 'data-engineering'], ttlSeconds: 8 * 3600 })
    ).token
    const hops: [string, string][] = [
      ['research-orchestrator', 'connection:app connection:analytics sql.*'],
      ['sql-summarizer', 'connection:analytics sql.read sql.write'],
      ['report-writer', 'sql.read'],
      ['chart-builder', ''],
    ]
    // Each hop asks for less than its parent: a child cannot outlive its parent, and a second
    // turning between two hops leaves the parent one second short of an equal lifetime.
    for (const [i, [agent, scope]] of hops.entries())
      t = (await corp.delegate(t, { agent, scope: scope.split(' ').filter(Boolean), ttlSeconds: 900 - 60 * i }, isRevoked)).token
    assert.equal(claimsOf(t).dep, corp.maxDepth)
    assert.ok(t.length < MAX_TOKEN_CHARS, `${t.length} characters`)
    const id = await corp.verify(t, isRevoked)
    assert.equal(id.chain.length, 5)
    assert.deepEqual(id.chain[4]?.scope, ['connection:analytics', 'sql.read'])
    // What cannot fit is refused at issue with a clear error, never cut.
    const long = (
      await corp.issue({ subject: `user:${'x'.repeat(120)}`, scope: ['connection:app', 'connection:analytics', 'sql.*'], ttlSeconds: 3600 })
    ).token
    let big = long
    const scopes = [
      ['connection:app', 'connection:analytics', 'sql.read', 'sql.write'],
      ['connection:app', 'sql.read', 'sql.write'],
      ['sql.read'],
      ['sql.session'],
    ]
    for (const [i, agent] of ['a', 'b', 'c', 'd'].map((c) => c.repeat(64)).entries()) {
      const r = await corp.delegate(big, { agent, scope: scopes[i] ?? [] }, isRevoked).catch((e: unknown) => e)
      if (r instanceof IdentityError) {
        assert.match(r.publicMessage, /over the 1000-character limit/)
        return
      }
      big = (r as { token: string }).token
    }
    assert.fail('names this long must hit the limit')
  })

  describe('verify refuses', () => {
    let good: string
    let child: string
    const sign = (claims: Record<string, unknown>, header: Record<string, unknown> = {}) =>
      new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', kid: key.kid, ...header }).sign(key.privateKey)
    const now = () => Math.floor(Date.now() / 1000)
    before(async () => {
      good = (await rootToken()).token
      child = (await issuer.delegate(good, { agent: 'A', scope: ['connection:app', 'sql.read'] }, isRevoked)).token
    })

    test('alg none, HS256 keyed with the public key, unknown kid, a changed payload', async () => {
      const [h, p] = good.split('.') as [string, string]
      const none = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${p}.`
      await rejects(issuer.verify(none, isRevoked), /algorithm "none" is not accepted/, 'alg none')
      const pub = key.publicKey.export({ format: 'pem', type: 'spki' })
      const hs = await new SignJWT(claimsOf(good)).setProtectedHeader({ alg: 'HS256', kid: key.kid }).sign(Buffer.from(pub))
      await rejects(issuer.verify(hs, isRevoked), /algorithm "HS256" is not accepted/, 'HS256 with the public key')
      const otherKid = await sign(claimsOf(good), { kid: 'AAAAAAAAAAAAAAAA' })
      await rejects(issuer.verify(otherKid, isRevoked), /unknown key id/, 'unknown kid')
      const forged = `${h}.${Buffer.from(JSON.stringify({ ...claimsOf(good), grp: ['gatehouse-admins'] })).toString('base64url')}.${good.split('.')[2]}`
      await rejects(issuer.verify(forged, isRevoked), /not a valid Gatehouse token/, 'changed payload')
    })

    test('wrong issuer, wrong audience, expired, not yet valid', async () => {
      const base = claimsOf(good)
      await rejects(issuer.verify(await sign({ ...base, iss: 'https://evil.example' }), isRevoked), /wrong issuer/, 'issuer')
      await rejects(issuer.verify(await sign({ ...base, aud: 'https://other.example' }), isRevoked), /another audience/, 'audience')
      await rejects(issuer.verify(await sign({ ...base, exp: now() - 5 }), isRevoked), /has expired/, 'expired')
      await rejects(issuer.verify(await sign({ ...base, nbf: now() + 600 }), isRevoked), /not valid yet/, 'nbf')
    })

    test('a tampered act chain: re-encoded without the key, or signed by us but breaking a rule', async () => {
      const [h, , s] = child.split('.') as [string, string, string]
      const c = claimsOf(child)
      const swapped = `${h}.${Buffer.from(JSON.stringify({ ...c, act: { sub: 'agent:Z' } })).toString('base64url')}.${s}`
      await rejects(issuer.verify(swapped, isRevoked), /not a valid Gatehouse token/, 'act swapped without the key')
      const rootId = String(c.jti).split('.')[0]
      const rules: [string, Record<string, unknown>, RegExp][] = [
        ['wider scope than the parent', { ...c, rsc: 'connection:app sql.read', scp: 'connection:app sql.*' }, /wider than its parent's/],
        ['an actor twice', { ...c, jti: `${c.jti}.AAAAAAAA`, dep: 2, act: { sub: 'agent:A', act: { sub: 'agent:A' } } }, /appears twice/],
        ['depth disagreeing with the chain', { ...c, dep: 3 }, /disagree/],
        ['a non-agent actor', { ...c, act: { sub: 'user:bob' } }, /not an agent/],
        ['act without dep', { ...c, dep: undefined }, /disagree/],
        ['a root id with an act-less hop', { ...c, act: undefined, pth: undefined, dep: undefined }, /without act/],
        ['an unknown act member', { ...c, act: { sub: 'agent:A', jti: rootId } }, /unknown act member/],
      ]
      for (const [name, claims, want] of rules) await rejects(issuer.verify(await sign(claims), isRevoked), want, name)
      // Deeper than this gateway allows (issued where the limit was higher).
      const generous = new TokenIssuer(key, ISSUER, { maxDepth: 6 })
      let t = good
      for (const agent of ['a1', 'a2', 'a3', 'a4', 'a5']) t = (await generous.delegate(t, { agent, scope: [] }, isRevoked)).token
      await rejects(issuer.verify(t, isRevoked), /deeper than this gateway allows/, 'depth over the limit')
    })
  })
})
