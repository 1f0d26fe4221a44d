// OIDC login and workload federation against a real OpenID Provider (`oidc-provider`, started here
// as its own HTTP server on 127.0.0.1): the gateway-side relying party (engine/identity/oidc.ts)
// through authorization code + PKCE and the device grant, and the workload federation rules
// (engine/identity/federation.ts) with GitHub-like claims. The CLI and psql versions of the same
// flows run against a real gateway in identity-e2e.test.ts.

import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { SignJWT } from 'jose'
import pino from 'pino'
import type { OidcProviderConfig, WorkloadIssuerConfig } from '../engine/identity/config.js'
import { parseIdentityConfig } from '../engine/identity/config.js'
import { IdentityError } from '../engine/identity/errors.js'
import { WorkloadFederation } from '../engine/identity/federation.js'
import { OidcLogin } from '../engine/identity/oidc.js'
import { API_MAIN, API_BRANCH, Browser, CI_AUDIENCE, CLI_CLIENT_ID, TestOP, WEB_MAIN } from './helpers/oidc.js'

async function refusedWith(p: Promise<unknown>, re: RegExp): Promise<IdentityError> {
  try {
    await p
  } catch (err) {
    assert.ok(err instanceof IdentityError, String(err))
    assert.match(err.publicMessage, re)
    return err
  }
  assert.fail(`must be refused (${re})`)
}

describe('OIDC login against a real OpenID Provider', () => {
  let op: TestOP
  let login: OidcLogin
  before(async () => {
    op = await TestOP.start({ accounts: { alice: { groups: ['analysts', 'writers'] }, bob: { groups: ['bad group!', 'ops'] } } })
    const provider: OidcProviderConfig = {
      name: 'test',
      issuer: op.issuer,
      clientId: CLI_CLIENT_ID,
      clientSecret: null,
      scopes: ['openid', 'groups'],
      usernameClaim: 'sub',
      groupsClaim: 'groups',
      tokenTtlSeconds: 600,
      allowInsecureHttp: true,
    }
    login = new OidcLogin([provider], () => Promise.reject(new Error('no secrets here')), pino({ level: 'silent' }))
  })
  after(async () => {
    login.close()
    await op.stop()
  })

  test('authorization code + PKCE: the ID token becomes user:alice with her groups', async () => {
    op.nextLogin = 'alice'
    const redirect = 'http://127.0.0.1:53682/callback'
    const start = await login.startBrowser(undefined, redirect)
    const url = new URL(start.authorizationUrl)
    assert.equal(url.searchParams.get('code_challenge_method'), 'S256')
    assert.ok(url.searchParams.get('nonce') && url.searchParams.get('state'))
    const landed = await new Browser(op.issuer).go(start.authorizationUrl)
    assert.ok(landed.url.startsWith(redirect), landed.url)
    const who = await login.finishBrowser(start.loginId, landed.url)
    assert.deepEqual(who, { principal: 'user:alice', groups: ['analysts', 'writers'], provider: 'test', subject: 'alice', ttlSeconds: 600 })
    // A login is single use.
    await refusedWith(login.finishBrowser(start.loginId, landed.url), /unknown or has expired/)
  })

  test('a callback with another state, or to another address, is refused', async () => {
    const redirect = 'http://127.0.0.1:53683/callback'
    const s1 = await login.startBrowser(undefined, redirect)
    const landed = await new Browser(op.issuer).go(s1.authorizationUrl)
    const forged = new URL(landed.url)
    forged.searchParams.set('state', 'not-the-state')
    await refusedWith(login.finishBrowser(s1.loginId, forged.toString()), /could not be verified/)
    const s2 = await login.startBrowser(undefined, redirect)
    const landed2 = await new Browser(op.issuer).go(s2.authorizationUrl)
    await refusedWith(login.finishBrowser(s2.loginId, landed2.url.replace('53683', '9')), /not the redirect_uri/)
    await refusedWith(login.startBrowser(undefined, 'https://evil.example/callback'), /loopback URL/)
    await refusedWith(login.startBrowser('nope', redirect), /no OIDC provider named "nope"/)
  })

  test('device authorization grant: the person confirms the code in a browser', async () => {
    op.nextLogin = 'bob'
    const d = await login.startDevice(undefined)
    assert.match(d.userCode, /^[A-Z]{4}-[A-Z]{4}$/)
    assert.equal(login.pollDevice(d.loginId).status, 'pending')
    const b = new Browser(op.issuer)
    let page = await b.go(d.verificationUriComplete ?? d.verificationUri)
    for (let i = 0; i < 4 && page.body.includes('<form'); i++) page = await b.submit(page.body, page.url)
    assert.match(page.body, /signed in/)
    let s = login.pollDevice(d.loginId)
    for (let i = 0; i < 100 && s.status === 'pending'; i++) {
      await new Promise((r) => setTimeout(r, 100))
      s = login.pollDevice(d.loginId)
    }
    assert.equal(s.status, 'done')
    if (s.status === 'done') {
      assert.equal(s.login.principal, 'user:bob')
      assert.deepEqual(s.login.groups, ['ops'], 'a group name Gatehouse cannot use is dropped, not trusted')
    }
    assert.equal(login.pollDevice(d.loginId).status, 'failed', 'handed out once')
  })
})

describe('workload federation against a real OpenID Provider', () => {
  let op: TestOP
  let other: TestOP
  let fed: WorkloadFederation
  let conf: WorkloadIssuerConfig
  before(async () => {
    op = await TestOP.start({ accounts: {}, ciClients: [API_MAIN, WEB_MAIN, API_BRANCH], ciAudience: CI_AUDIENCE })
    other = await TestOP.start({ accounts: {}, ciClients: [API_MAIN], ciAudience: 'https://elsewhere.test' })
    const problems: string[] = []
    const parsed = parseIdentityConfig(
      {
        workload_issuers: [
          {
            name: 'ci',
            issuer: op.issuer,
            audience: CI_AUDIENCE,
            allow_insecure_http: true,
            token_ttl: '10m',
            rules: [
              { match: { repository: 'acme/api', ref: 'refs/heads/main' }, principal: 'workload:acme-api-deploy', groups: ['deployers'] },
              { match: { repository: 'acme/docs', ref: 'refs/heads/*' }, principal: 'workload:acme-docs', scope: ['connection:docs'] },
            ],
          },
          {
            name: 'elsewhere',
            issuer: other.issuer,
            audience: CI_AUDIENCE,
            allow_insecure_http: true,
            rules: [{ match: { repository: 'acme/api' }, principal: 'workload:x' }],
          },
        ],
      },
      (p, w) => problems.push(`${p}: ${w}`),
    )
    assert.deepEqual(problems, [])
    conf = parsed.workloadIssuers[0] as WorkloadIssuerConfig
    fed = new WorkloadFederation(parsed.workloadIssuers)
  })
  after(async () => {
    await op.stop()
    await other.stop()
  })

  test('acme/api on main is workload:acme-api-deploy in group deployers', async () => {
    const f = await fed.exchange(await op.ciToken(API_MAIN))
    assert.equal(f.principal, 'workload:acme-api-deploy')
    assert.deepEqual(f.groups, ['deployers'])
    assert.equal(f.ttlSeconds, 600)
    assert.equal(f.subject, 'ci-acme-api')
  })

  test('another repository, another branch: no rule matches, refused naming the claims', async () => {
    await refusedWith(
      fed.exchange(await op.ciToken(WEB_MAIN)),
      /match no rule of issuer ci \(repository="acme\/web", ref="refs\/heads\/main"\)/,
    )
    await refusedWith(fed.exchange(await op.ciToken(API_BRANCH)), /match no rule.*ref="refs\/heads\/feature"/)
  })

  test('wrong audience, untrusted issuer, a forged signature, not a JWT', async () => {
    await refusedWith(fed.exchange(await other.ciToken(API_MAIN)), /not for this gateway/)
    const mine = await op.ciToken(API_MAIN)
    const [h, p, s] = mine.split('.') as [string, string, string]
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>
    const changed = Buffer.from(JSON.stringify({ ...claims, repository: 'acme/api', ref: 'refs/heads/main', sub: 'x' })).toString(
      'base64url',
    )
    await refusedWith(fed.exchange(`${h}.${changed}.${s}`), /not validly signed by ci/)
    const untrusted = await new SignJWT({ repository: 'acme/api', ref: 'refs/heads/main' })
      .setProtectedHeader({ alg: 'HS256' })
      .setIssuer('https://token.actions.githubusercontent.com')
      .setAudience(CI_AUDIENCE)
      .setSubject('repo:acme/api')
      .setIssuedAt()
      .setExpirationTime('5m')
      .sign(new TextEncoder().encode('x'.repeat(32)))
    await refusedWith(fed.exchange(untrusted), /is not a trusted workload issuer/)
    const hs = await new SignJWT({ repository: 'acme/api', ref: 'refs/heads/main' })
      .setProtectedHeader({ alg: 'HS256' })
      .setIssuer(conf.issuer)
      .setAudience(CI_AUDIENCE)
      .setSubject('repo:acme/api')
      .setIssuedAt()
      .setExpirationTime('5m')
      .sign(new TextEncoder().encode('x'.repeat(32)))
    await refusedWith(fed.exchange(hs), /not validly signed/)
    await refusedWith(fed.exchange('not-a-jwt'), /not a JWT/)
  })

  test('config: rules must constrain, principals must be workloads, http only on loopback', () => {
    const problems: string[] = []
    parseIdentityConfig(
      {
        workload_issuers: [
          {
            name: 'a',
            issuer: 'http://ci.example.com',
            audience: 'x',
            allow_insecure_http: true,
            rules: [{ match: { repository: '*' }, principal: 'user:x' }],
          },
          { name: 'b', issuer: 'https://ci.example.com', audience: 'x', rules: [] },
        ],
        oidc: [{ name: 'c', issuer: 'https://login.example.com', client_id: 'g', client_secret: 'hunter2', scopes: ['email'] }],
        delegation: { max_depth: 99 },
      },
      (p, w) => problems.push(`${p}: ${w}`),
    )
    const text = problems.join('\n')
    assert.match(text, /workload_issuers\[0\]\.issuer: allow_insecure_http is only allowed for a loopback address/)
    assert.match(text, /rules\[0\]\.match\.repository: must constrain the claim/)
    assert.match(text, /rules\[0\]\.principal: must be workload:<name>/)
    assert.match(text, /workload_issuers\[1\]\.rules: needs at least one rule/)
    assert.match(text, /oidc\[0\]\.client_secret: must be a secret reference/)
    assert.match(text, /oidc\[0\]\.scopes: must include openid/)
    assert.match(text, /delegation\.max_depth: must be an integer from 0 to 16/)
  })
})
