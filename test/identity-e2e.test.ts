// Identity end to end through a real gateway process, a real OpenID Provider (oidc-provider on
// 127.0.0.1), the real CLI and psql:
//   - `gatehouse login` (browser, loopback callback) and `gatehouse login --device`, then whoami;
//   - alice delegates to agent A (read-only on app), A to B: B's SELECT works, B's UPDATE is denied,
//     the audit shows user:alice → agent:A → agent:B; revoking A ends B's running pg_sleep(60)
//     within one second;
//   - a CI job's token from the OP (GitHub-like claims) is exchanged and used with psql; a token for
//     another repository is refused;
//   - service-account keys: used directly, exchanged, rotated, revoked;
//   - every forged or rule-breaking token is refused with 28P01 and opens no server connection
//     (counted at a TCP relay in front of PostgreSQL).
// The OP and the relay live in this process, so every child (CLI, psql) runs asynchronously.

import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { SignJWT } from 'jose'
import pg from 'pg'
import { loadConfigFile } from '../engine/config/config.js'
import { issuerFor } from '../cli/gateway/gateway.js'
import { loadOrCreateSigningKey, MAX_TOKEN_CHARS, TokenIssuer } from '../engine/identity/tokens.js'
import { BIN, direct, LOCAL_PG, TestGateway } from './helpers/gateway.js'
import { countingRelay } from './helpers/relay.js'
import { API_MAIN, Browser, CI_AUDIENCE, CLI_CLIENT_ID, TestOP, WEB_MAIN } from './helpers/oidc.js'

interface Run {
  code: number | null
  stdout: string
  stderr: string
}

/** A child process run without blocking this process (the OP and the relay answer meanwhile). */
function runAsync(cmd: string, args: readonly string[], env: NodeJS.ProcessEnv, onStderr?: (text: string) => void): Promise<Run> {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    c.stdout.on('data', (d: Buffer) => {
      stdout += d.toString()
    })
    c.stderr.on('data', (d: Buffer) => {
      stderr += d.toString()
      onStderr?.(stderr)
    })
    const t = setTimeout(() => c.kill('SIGKILL'), 60_000)
    c.on('error', reject)
    c.on('exit', (code) => {
      clearTimeout(t)
      resolve({ code, stdout, stderr })
    })
  })
}

function claimsOf(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()) as Record<string, unknown>
}

describe('identity end to end', () => {
  let op: TestOP
  let gw: TestGateway
  let relay: Awaited<ReturnType<typeof countingRelay>>
  let home: string
  let env: NodeJS.ProcessEnv

  const cli = (args: readonly string[], extra: NodeJS.ProcessEnv = {}, onStderr?: (t: string) => void): Promise<Run> =>
    runAsync(process.execPath, [BIN, ...args, '--config', gw.configFile], { ...env, ...extra }, onStderr)
  const psql = (token: string, sql: string, app = 'gh-id-e2e'): Promise<Run> =>
    runAsync('psql', ['-X', '-At', '-v', 'ON_ERROR_STOP=1', '-d', `${gw.conninfo(token)} application_name=${app}`, '-c', sql], env)
  const connectError = async (token: string): Promise<{ code?: string; message: string } | null> => {
    const c = new pg.Client({
      host: '127.0.0.1',
      port: gw.pgPort,
      database: 'app',
      user: 'mallory',
      password: token,
      application_name: 'gh-id-neg',
    })
    c.on('error', () => undefined)
    try {
      await c.connect()
      await c.end()
      return null
    } catch (err) {
      return err as { code?: string; message: string }
    }
  }
  const delegate = async (parent: string, agent: string, extra: string[] = []): Promise<{ token: string; id: string }> => {
    const r = await cli(['token', 'delegate', '--agent', agent, '--token', parent, '--json', ...extra])
    assert.equal(r.code, 0, r.stderr)
    const j = JSON.parse(r.stdout) as { access_token: string; token_id: string }
    return { token: j.access_token, id: j.token_id }
  }

  before(async () => {
    op = await TestOP.start({
      accounts: { alice: { groups: ['analysts', 'writers'] }, dora: { groups: ['ops'] } },
      ciClients: [API_MAIN, WEB_MAIN],
      ciAudience: CI_AUDIENCE,
    })
    relay = await countingRelay()
    home = mkdtempSync(join(tmpdir(), 'gh-id-home-'))
    env = { ...process.env, XDG_CONFIG_HOME: home, GATEHOUSE_TOKEN: '', GATEHOUSE_SERVER: '' }
    delete env.GATEHOUSE_TOKEN
    delete env.GATEHOUSE_SERVER
    gw = await TestGateway.start({
      connections: [{ ...LOCAL_PG, address: `127.0.0.1:${relay.port}` }],
      config: {
        identity: {
          oidc: [
            {
              name: 'test',
              issuer: op.issuer,
              client_id: CLI_CLIENT_ID,
              scopes: ['openid', 'groups'],
              allow_insecure_http: true,
              token_ttl: '1h',
            },
          ],
          workload_issuers: [
            {
              name: 'ci',
              issuer: op.issuer,
              audience: CI_AUDIENCE,
              allow_insecure_http: true,
              rules: [
                { match: { repository: 'acme/api', ref: 'refs/heads/main' }, principal: 'workload:acme-api-deploy', groups: ['deployers'] },
              ],
            },
          ],
        },
      },
    })
    direct(
      'DROP TABLE IF EXISTS gh_id_orders; CREATE TABLE gh_id_orders (id int, total int); INSERT INTO gh_id_orders VALUES (1, 10), (2, 20)',
    )
  })
  after(async () => {
    direct('DROP TABLE IF EXISTS gh_id_orders')
    await gw.cleanup()
    relay.close()
    await op.stop()
    rmSync(home, { recursive: true, force: true })
  })

  test('gatehouse login through the browser flow, then whoami', async () => {
    op.nextLogin = 'alice'
    let opened = false
    const browser = new Browser(op.issuer)
    const run = cli(['login', '--no-browser'], {}, (text) => {
      const m = /(http:\/\/127\.0\.0\.1:\d+\/auth\?\S+)/.exec(text)
      if (!m || opened) return
      opened = true
      // The person's browser: the provider's pages, then the redirect to the CLI's loopback callback.
      void browser.go(m[1] ?? '').then((landed) => fetch(landed.url))
    })
    const r = await run
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stderr, /Logged in to http:\/\/127\.0\.0\.1:\d+ as user:alice \(groups: analysts, writers\)/)
    const who = await cli(['whoami'])
    assert.equal(who.code, 0, who.stderr)
    assert.match(
      who.stdout,
      /principal: user:alice\ngroups: {4}analysts, writers\nscope: {5}\(unrestricted\)\nexpires: {3}\S+\nchain: {5}user:alice/,
    )
    const events = gw.auditEvents(['--type', 'token.issued'])
    assert.ok(events.some((e) => (e.token as { source?: string; provider?: string }).source === 'oidc'))
  })

  test('gatehouse login --device', async () => {
    op.nextLogin = 'dora'
    let started = false
    const run = cli(['login', '--device'], { XDG_CONFIG_HOME: join(home, 'device') }, (text) => {
      const m = /\(or open (\S+)\)/.exec(text)
      if (!m || started) return
      started = true
      const b = new Browser(op.issuer)
      void (async () => {
        let page = await b.go(m[1] ?? '')
        for (let i = 0; i < 4 && page.body.includes('<form'); i++) page = await b.submit(page.body, page.url)
      })()
    })
    const r = await run
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stderr, /enter the code {2}[A-Z]{4}-[A-Z]{4}/)
    assert.match(r.stderr, /as user:dora \(groups: ops\)/)
    const who = await cli(['whoami', '--json'], { XDG_CONFIG_HOME: join(home, 'device') })
    assert.equal((JSON.parse(who.stdout) as { principal: string }).principal, 'user:dora')
  })

  test('alice → A (read-only on app) → B: SELECT works, UPDATE is denied, the audit has the chain; revoking A ends B', async () => {
    const alice = gw.token('user:alice', ['--group', 'writers'])
    const a = await delegate(alice, 'A', ['--scope', 'connection:app sql.read', '--ttl', '15m'])
    const b = await delegate(a.token, 'B')
    const who = await cli(['whoami', '--json', '--token', b.token])
    const w = JSON.parse(who.stdout) as { principal: string; scope: string[]; chain: { id: string }[]; token_ids: string[] }
    assert.equal(w.principal, 'agent:B')
    assert.deepEqual(w.scope, ['connection:app', 'sql.read'])
    assert.deepEqual(
      w.chain.map((p) => p.id),
      ['user:alice', 'agent:A', 'agent:B'],
    )
    const sel = await psql(b.token, 'SELECT sum(total) FROM gh_id_orders', 'gh-id-b-select')
    assert.equal(sel.code, 0, sel.stderr)
    assert.equal(sel.stdout.trim(), '30')
    const upd = await psql(b.token, 'UPDATE gh_id_orders SET total = 0 WHERE id = 1', 'gh-id-b-update')
    assert.notEqual(upd.code, 0, 'B holds sql.read only')
    assert.match(upd.stderr, /outside the scope of agent:(A|B)|denied/i)
    assert.equal(direct('SELECT total FROM gh_id_orders WHERE id = 1'), '10')
    const stmts = gw.auditEvents(['--type', 'statement']).filter((e) => /gh_id_orders/.test(String(e.sql)))
    assert.ok(stmts.length >= 2)
    for (const e of stmts) assert.deepEqual(e.chain, ['user:alice', 'agent:A', 'agent:B'])

    // B runs pg_sleep(60); revoking A (B's parent) ends it within one second, both sides.
    const sleepApp = `gh-id-sleep-${process.pid}-${Date.now()}`
    const c = new pg.Client({
      host: '127.0.0.1',
      port: gw.pgPort,
      database: 'app',
      user: 'b',
      password: b.token,
      application_name: sleepApp,
    })
    c.on('error', () => undefined)
    await c.connect()
    const sleeping = c.query('SELECT pg_sleep(60)').then(
      () => null,
      (e: unknown) => e as { code?: string },
    )
    await new Promise((r) => setTimeout(r, 300))
    assert.equal(direct(`SELECT count(*) FROM pg_stat_activity WHERE application_name = '${sleepApp}'`), '1')
    const watcher = new pg.Client({ host: '127.0.0.1', port: 5432, database: 'test', user: 'postgres' })
    await watcher.connect()
    // Timed from the revocation request itself (the API the CLI calls), not from a CLI's start-up.
    const admin = readFileSync(join(gw.dataDir, 'admin.token'), 'utf8').trim()
    const t0 = Date.now()
    const rv = await fetch(`${gw.apiUrl}/v1/tokens/${encodeURIComponent(a.id)}/revoke`, {
      method: 'POST',
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
      body: JSON.stringify({ reason: 'agent A misbehaved' }),
    })
    assert.equal(rv.status, 200)
    assert.equal(((await rv.json()) as { sessions_ended: number }).sessions_ended, 1)
    const err = await Promise.race([sleeping, new Promise<'late'>((r) => setTimeout(() => r('late'), 1000 - (Date.now() - t0)))])
    assert.notEqual(err, 'late', 'B must be ended within one second of revoking A')
    assert.equal((err as { code?: string } | null)?.code, '57P01')
    // Watched through a connection opened beforehand: a psql started per look costs more than the
    // interval being measured on a loaded machine.
    const backends = async (): Promise<string> =>
      String((await watcher.query(`SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1`, [sleepApp])).rows[0]?.n)
    let gone = -1
    while (Date.now() - t0 < 1000) {
      if ((await backends()) === '0') {
        gone = Date.now() - t0
        break
      }
      await new Promise((r) => setTimeout(r, 10))
    }
    await watcher.end()
    // A backend busy in pg_sleep reads nothing, so closing its socket is not enough: the proxy has
    // to cancel the running query as it ends the session (a CancelRequest with the server's key).
    assert.ok(gone >= 0, 'the server backend must be gone within one second too')
    assert.equal((await connectError(b.token))?.code, '28P01', 'B is refused from now on')
  })

  test('delegation refusals from the CLI: wider scope, longer life, depth, cycle, revoked parent', async () => {
    const alice = gw.token('user:alice', ['--ttl', '30m'])
    const a = await delegate(alice, 'A', ['--scope', 'connection:app sql.read'])
    const expectRefused = async (args: string[], re: RegExp): Promise<void> => {
      const r = await cli(['token', 'delegate', ...args])
      assert.notEqual(r.code, 0, `${args.join(' ')} must be refused`)
      assert.match(r.stderr, re)
      assert.equal(r.stdout, '')
    }
    await expectRefused(
      ['--agent', 'B', '--token', a.token, '--scope', 'sql.read sql.write'],
      /requested scope sql\.write is not within the parent's scope/,
    )
    await expectRefused(['--agent', 'B', '--token', a.token, '--ttl', '2h'], /longer than the parent's remaining/)
    await expectRefused(['--agent', 'A', '--token', (await delegate(a.token, 'B')).token], /agent:A already appears in the chain/)
    let t = a.token
    for (const n of ['B', 'C', 'D']) t = (await delegate(t, n)).token
    assert.ok(t.length < MAX_TOKEN_CHARS, `depth 4 token is ${t.length} characters`)
    assert.equal((await psql(t, 'SELECT 1')).stdout.trim(), '1', 'a depth-4 token works through psql')
    await expectRefused(['--agent', 'E', '--token', t], /delegation depth 5 exceeds the limit of 4/)
    const p = await delegate(alice, 'P')
    const rv = await cli(['token', 'revoke', p.id])
    assert.equal(rv.code, 0, rv.stderr)
    await expectRefused(['--agent', 'Q', '--token', p.token], /the token is revoked/)
  })

  test('forged and rule-breaking tokens are refused with 28P01 and open no server connection', async () => {
    const config = loadConfigFile(gw.configFile)
    const key = await loadOrCreateSigningKey(config.dataDir)
    const issuer = issuerFor(config)
    const alice = gw.token('user:alice')
    const a = await delegate(alice, 'A', ['--scope', 'connection:app sql.read'])
    const claims = claimsOf(a.token)
    const sign = (c: Record<string, unknown>, header: Record<string, unknown> = {}) =>
      new SignJWT(c).setProtectedHeader({ alg: 'EdDSA', kid: key.kid, ...header }).sign(key.privateKey)
    const now = Math.floor(Date.now() / 1000)
    const [h, , s] = a.token.split('.') as [string, string, string]
    const pub = key.publicKey.export({ format: 'pem', type: 'spki' })
    const deepIssuer = new TokenIssuer(key, issuer, { maxDepth: 8 })
    let deep = alice
    for (const n of ['d1', 'd2', 'd3', 'd4', 'd5']) deep = (await deepIssuer.delegate(deep, { agent: n, scope: [] }, () => false)).token
    const otherAud = await delegate(alice, 'R', ['--audience', 'https://reports.example.com'])
    const expiring = await delegate(alice, 'X', ['--ttl', '1s'])
    const parent = await delegate(alice, 'P')
    const child = await delegate(parent.token, 'C')
    assert.equal((await cli(['token', 'revoke', parent.id])).code, 0)
    await new Promise((r) => setTimeout(r, 2100))
    const cases: [string, string][] = [
      ['alg none', `${Buffer.from('{"alg":"none"}').toString('base64url')}.${a.token.split('.')[1]}.`],
      ['HS256 keyed with the public key', await new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).sign(Buffer.from(pub))],
      ['wrong issuer', await sign({ ...claims, iss: 'https://evil.example' })],
      ['wrong audience', otherAud.token],
      ['expired', expiring.token],
      ['nbf in the future', await sign({ ...claims, nbf: now + 3600 })],
      ['unknown kid', await sign(claims, { kid: 'AAAAAAAAAAAAAAAA' })],
      ['tampered act chain', `${h}.${Buffer.from(JSON.stringify({ ...claims, act: { sub: 'agent:Z' } })).toString('base64url')}.${s}`],
      ['wider scope than the parent, signed', await sign({ ...claims, scp: 'sql.*', rsc: 'connection:app sql.read' })],
      [
        'a cycle, signed',
        await sign({ ...claims, jti: `${claims.jti}.AAAAAAAA`, dep: 2, act: { sub: 'agent:A', act: { sub: 'agent:A' } } }),
      ],
      ['depth over the limit, signed', deep],
      ['child of a revoked parent', child.token],
    ]
    const before = relay.accepted()
    for (const [name, token] of cases) {
      const err = await connectError(token)
      assert.ok(err, `${name}: must be refused`)
      assert.equal(err.code, '28P01', `${name}: ${err.message}`)
      assert.doesNotMatch(err.message, /jwt|jose|signature|Error:/i, `${name}: no internals`)
    }
    assert.equal(relay.accepted(), before, 'no server connection for any refused token')
    assert.equal(direct("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'gh-id-neg'"), '0')
    const refused = gw.auditEvents(['--type', 'session.refused'])
    assert.ok(refused.length >= cases.length)
  })

  test("a CI job's token is exchanged and used with psql; another repository's is refused", async () => {
    const ci = await op.ciToken(API_MAIN)
    const r = await cli(['token', 'exchange', '--jwt', ci])
    assert.equal(r.code, 0, r.stderr)
    const token = r.stdout.trim()
    const who = await cli(['whoami', '--json', '--token', token])
    const w = JSON.parse(who.stdout) as { principal: string; groups: string[] }
    assert.equal(w.principal, 'workload:acme-api-deploy')
    assert.deepEqual(w.groups, ['deployers'])
    const q = await psql(token, "SELECT 'deployed'", 'gh-id-ci')
    assert.equal(q.code, 0, q.stderr)
    assert.equal(q.stdout.trim(), 'deployed')
    const before = relay.accepted()
    const web = await cli(['token', 'exchange', '--jwt', await op.ciToken(WEB_MAIN)])
    assert.notEqual(web.code, 0)
    assert.match(web.stderr, /claims match no rule of issuer ci \(repository="acme\/web", ref="refs\/heads\/main"\)/)
    assert.equal(web.stdout, '')
    assert.equal(relay.accepted(), before)
    const started = gw.auditEvents(['--type', 'session.start']).filter((e) => JSON.stringify(e.chain) === '["workload:acme-api-deploy"]')
    assert.equal(started.length, 1)
  })

  test('service-account keys: used directly and exchanged; rotation ends the old key; revocation ends sessions', async () => {
    const created = await cli([
      'service-account',
      'key',
      'create',
      '--name',
      'etl',
      '--group',
      'loaders',
      '--scope',
      'connection:app sql.read',
      '--ttl',
      '30d',
      '--json',
    ])
    assert.equal(created.code, 0, created.stderr)
    const k = JSON.parse(created.stdout) as { key: string; id: string; principal: string }
    assert.equal(k.principal, 'service:etl')
    assert.match(k.key, /^ghk_[0-9a-f]{16}_/)
    const q = await psql(k.key, 'SELECT 7', 'gh-id-key')
    assert.equal(q.code, 0, q.stderr)
    assert.equal(q.stdout.trim(), '7')
    const ex = await cli(['token', 'exchange', '--api-key', k.key, '--json'])
    assert.equal(ex.code, 0, ex.stderr)
    const minted = JSON.parse(ex.stdout) as { access_token: string; chain: string[]; scope: string }
    assert.deepEqual(minted.chain, ['service:etl'])
    assert.equal(minted.scope, 'connection:app sql.read')
    const list = await cli(['service-account', 'key', 'list', '--json'])
    assert.doesNotMatch(list.stdout, new RegExp(k.key.slice(21)), 'the secret is never listed')
    const rot = await cli(['service-account', 'key', 'rotate', k.id, '--json'])
    assert.equal(rot.code, 0, rot.stderr)
    const k2 = JSON.parse(rot.stdout) as { key: string; id: string }
    assert.equal((await connectError(k.key))?.code, '28P01', 'the rotated key ends at once (no grace)')
    assert.equal(await connectError(k2.key), null)
    // A session opened with a token minted from the new key ends when the key is revoked.
    const t2 = JSON.parse((await cli(['token', 'exchange', '--api-key', k2.key, '--json'])).stdout) as { access_token: string }
    const c = new pg.Client({ host: '127.0.0.1', port: gw.pgPort, database: 'app', user: 'etl', password: t2.access_token })
    const ended = new Promise<{ code?: string }>((r) => c.on('error', (e) => r(e as { code?: string })))
    await c.connect()
    const rv = await cli(['service-account', 'key', 'revoke', k2.id])
    assert.equal(rv.code, 0, rv.stderr)
    assert.match(rv.stdout, /1 live session/)
    assert.equal((await ended).code, '57P01')
    assert.equal((await connectError(k2.key))?.code, '28P01')
  })

  test('token endpoint speaks RFC 8693 (form body, RFC 6749 errors); discovery and JWKS are published', async () => {
    const alice = gw.token('user:alice')
    const form = (f: Record<string, string>) =>
      fetch(`${gw.apiUrl}/oauth/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams(f),
      })
    const ok = await form({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: alice,
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      agent: 'summarizer',
      scope: 'connection:app sql.read',
      unknown_parameter: 'ignored',
    })
    assert.equal(ok.status, 200)
    const body = (await ok.json()) as Record<string, unknown>
    assert.equal(body.issued_token_type, 'urn:ietf:params:oauth:token-type:access_token')
    assert.equal(body.token_type, 'Bearer')
    assert.equal(body.scope, 'connection:app sql.read')
    assert.equal(ok.headers.get('cache-control'), 'no-store')
    const bad = await form({ grant_type: 'password', subject_token: alice, subject_token_type: 'x' })
    assert.equal(bad.status, 400)
    assert.equal(((await bad.json()) as { error: string }).error, 'unsupported_grant_type')
    const wide = await form({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: String(body.access_token),
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      agent: 'x',
      scope: 'sql.write',
    })
    assert.deepEqual(await wide.json(), {
      error: 'invalid_scope',
      error_description: "requested scope sql.write is not within the parent's scope (connection:app sql.read)",
    })
    const disco = (await (await fetch(`${gw.apiUrl}/.well-known/openid-configuration`)).json()) as { jwks_uri: string; issuer: string }
    const jwks = (await (await fetch(disco.jwks_uri.replace(disco.issuer, gw.apiUrl))).json()) as {
      keys: { kty: string; crv: string; kid: string }[]
    }
    assert.equal(jwks.keys[0]?.crv, 'Ed25519')
    const doc = (await (await fetch(`${gw.apiUrl}/v1/openapi.json`)).json()) as { paths: Record<string, unknown> }
    for (const p of ['/oauth/token', '/v1/whoami', '/v1/login/start', '/v1/login/device', '/v1/service-keys'])
      assert.ok(doc.paths[p], `${p} documented`)
    const admin = await fetch(`${gw.apiUrl}/v1/service-keys`, { headers: { authorization: `Bearer ${alice}` } })
    assert.equal(admin.status, 403, 'service keys are for admins')
  })
})
