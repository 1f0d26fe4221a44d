// The web console in a real browser (Debian's Chromium through playwright-core) against a real
// gateway process, a real OpenID Provider, real PostgreSQL with psql, and a real sshd: a person
// logs in through the provider, approves a held psql statement (psql then completes) and denies
// another, kills a live session, replays an SSH recording at its command marker, and finds a
// sub-agent's statement by searching the audit log for its root token. Screenshots of each page are
// written to dist/test/console-screenshots/, and axe-core finds no serious accessibility problem.

import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'node:http'
import { after, before, describe, test } from 'node:test'
import type { Browser, BrowserContext, Page } from 'playwright-core'
import { direct, LOCAL_PG, REPO, TestGateway } from './helpers/gateway.js'
import { CLI_CLIENT_ID, TestOP } from './helpers/oidc.js'
import { sshClientSetup, TestSshd } from './helpers/sshd.js'
import { axeViolations, launchChromium, screenshot, serious } from './helpers/browser.js'

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

interface Run {
  readonly proc: ChildProcess
  stdout: string
  stderr: string
  readonly done: Promise<number | null>
}

function background(cmd: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): Run {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env })
  const run: Run = { proc, stdout: '', stderr: '', done: new Promise((r) => proc.on('close', (code) => r(code))) }
  proc.stdout?.on('data', (d: Buffer) => {
    run.stdout += d.toString()
  })
  proc.stderr?.on('data', (d: Buffer) => {
    run.stderr += d.toString()
  })
  return run
}

async function until<T>(what: string, f: () => T | null | undefined | Promise<T | null | undefined>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms
  for (;;) {
    const v = await f()
    if (v !== null && v !== undefined && v !== false) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(100)
  }
}

/** The default policy plus SSH shells and commands for everyone (the console test's policy directory). */
function policyDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'gh-console-policy-'))
  for (const f of readdirSync(join(REPO, 'policies'))) {
    if (f.endsWith('.rego') && !f.endsWith('_test.rego')) copyFileSync(join(REPO, 'policies', f), join(dir, f))
    if (f === 'approvals.yaml' || f === 'masking.yaml') copyFileSync(join(REPO, 'policies', f), join(dir, f))
  }
  writeFileSync(join(dir, 'ssh.rego'), 'package gatehouse\n\nallow if input.action in {"ssh.exec", "ssh.shell"}\n')
  return dir
}

describe('web console', () => {
  let op: TestOP
  let sshd: TestSshd
  let gw: TestGateway
  let browser: Browser
  let sshPort = 0
  let alice = ''
  let aliceId = ''
  let bob = ''
  const tables: string[] = []

  before(async () => {
    op = await TestOP.start({
      accounts: {
        bob: { groups: ['dba', 'gatehouse-admins'] },
        alice: { groups: ['dba', 'writers'] },
        dora: { groups: [] },
      },
    })
    sshd = await TestSshd.start()
    gw = await TestGateway.start({
      connections: [{ ...LOCAL_PG, labels: { env: 'prod' } }, sshd.connection('web-1', { labels: { env: 'test' } })],
      config: {
        listen: { api: '127.0.0.1:0', postgres: '127.0.0.1:0', ssh: '127.0.0.1:0' },
        policies: policyDir(),
        approvals: { timeout: '120s', request_ttl: '1h' },
        identity: {
          oidc: [{ name: 'test-op', issuer: op.issuer, client_id: CLI_CLIENT_ID, scopes: ['openid', 'groups'], allow_insecure_http: true }],
        },
        console: { token_login: true },
      },
    })
    sshPort = gw.port('ssh')
    const t = gw.tokenJson('user:alice', ['--group', 'dba', '--group', 'writers'])
    alice = t.token
    aliceId = t.id
    bob = gw.token('user:bob', ['--group', 'dba'])
    browser = await launchChromium()
  })

  after(async () => {
    for (const t of tables) direct(`DROP TABLE IF EXISTS ${t}`)
    await browser?.close()
    await gw?.cleanup()
    await sshd?.stop()
    await op?.stop()
  })

  /** A fresh browser profile signed in through the OpenID Provider as `account`. */
  async function oidcLogin(account: string): Promise<{ ctx: BrowserContext; page: Page }> {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } })
    const page = await ctx.newPage()
    op.nextLogin = account
    await page.goto(`${gw.apiUrl}/`)
    await page.getByRole('link', { name: 'Sign in with test-op' }).click()
    await page.waitForURL(`${gw.apiUrl}/`)
    await page.locator('.who', { hasText: `user:${account}` }).waitFor({ timeout: 30_000 })
    return { ctx, page }
  }

  /** A fresh browser profile signed in with a Gatehouse token (console.token_login). */
  async function tokenLogin(token: string): Promise<{ ctx: BrowserContext; page: Page }> {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } })
    const page = await ctx.newPage()
    await page.goto(`${gw.apiUrl}/`)
    await page.getByLabel('Gatehouse token').fill(token)
    await page.getByRole('button', { name: 'Sign in with a token' }).click()
    await page.locator('.who').waitFor({ timeout: 30_000 })
    return { ctx, page }
  }

  async function accessible(page: Page, name: string): Promise<void> {
    await screenshot(page, name)
    const bad = serious(await axeViolations(page))
    assert.deepEqual(bad, [], `${name}: no serious accessibility violations`)
  }

  function heldCreate(token: string): { run: Run; table: string } {
    const table = `console_${Math.random().toString(36).slice(2, 10)}`
    tables.push(table)
    const run = background('psql', ['-X', '-At', '-v', 'ON_ERROR_STOP=1', '-d', gw.conninfo(token), '-c', `CREATE TABLE ${table} (id int)`])
    return { run, table }
  }

  async function requestId(run: Run): Promise<string> {
    return until('the hold notice', () => /request (R-[0-9a-f]{6})/.exec(run.stderr)?.[1])
  }

  test('GET / without a session is the login page, with a strict Content-Security-Policy', async () => {
    const res = await fetch(`${gw.apiUrl}/`)
    assert.equal(res.status, 200)
    assert.match(res.headers.get('content-type') ?? '', /^text\/html/)
    const csp = res.headers.get('content-security-policy') ?? ''
    assert.match(csp, /default-src 'self'/)
    assert.match(csp, /script-src 'self' 'wasm-unsafe-eval'(;|$)/, 'no inline script, no eval')
    assert.match(csp, /frame-ancestors 'none'/)
    const html = await res.text()
    assert.match(html, /Sign in with test-op/)
    assert.doesNotMatch(html, /<script(?![^>]*src=)/, 'no inline script')
    const ctx = await browser.newContext()
    const page = await ctx.newPage()
    await page.goto(`${gw.apiUrl}/`)
    await accessible(page, '01-login')
    await ctx.close()
  })

  test('log in through the OpenID Provider; approve a held psql statement and deny another', async () => {
    const { ctx, page } = await oidcLogin('bob')
    const cookies = await ctx.cookies()
    const c = cookies.find((x) => x.name === 'gh_console')
    assert.ok(c, 'a session cookie')
    assert.equal(c.httpOnly, true)
    assert.equal(c.sameSite, 'Strict')
    assert.equal(c.secure, false, 'not Secure on loopback')
    // Nothing but the cookie: no token in storage or the URL.
    const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }))
    assert.equal(stored, '{}{}')
    assert.doesNotMatch(page.url(), /token|code=/)

    const first = heldCreate(alice)
    const id1 = await requestId(first.run)
    await page.goto(`${gw.apiUrl}/#approvals`)
    const card = page.locator(`article[data-id="${id1}"]`)
    await card.waitFor({ timeout: 30_000 })
    assert.match(String(await card.locator('pre.statement').textContent()), new RegExp(`CREATE TABLE ${first.table}`))
    assert.match(String(await card.textContent()), /prod-ddl/)
    assert.match(String(await card.textContent()), /user:alice/)
    assert.match(String(await card.textContent()), /app \(env=prod\)/, 'the connection with its labels')
    await accessible(page, '02-approvals')
    await card.getByLabel('Comment').fill('looks fine')
    await card.getByRole('button', { name: 'Approve' }).click()
    assert.equal(await first.run.done, 0, first.run.stderr)
    assert.equal(direct(`SELECT to_regclass('${first.table}') IS NOT NULL`), 't', 'the statement ran after the approval')

    const second = heldCreate(alice)
    const id2 = await requestId(second.run)
    const card2 = page.locator(`article[data-id="${id2}"]`)
    await card2.waitFor({ timeout: 30_000 })
    await card2.getByLabel('Comment').fill('not during the freeze')
    await card2.getByRole('button', { name: 'Deny' }).click()
    assert.notEqual(await second.run.done, 0)
    assert.match(second.run.stderr, /not during the freeze/)
    assert.equal(direct(`SELECT to_regclass('${second.table}') IS NULL`), 't')

    // Each vote is audited with the viewer's identity.
    await sleep(300)
    const decided = gw.auditEvents(['--type', 'approval.decided'])
    assert.ok(
      decided.some((e) => e.request === id1 && JSON.stringify(e).includes('user:bob')),
      JSON.stringify(decided),
    )
    await ctx.close()
  })

  test('a reviewer cannot approve their own request from the console', async () => {
    const { ctx, page } = await oidcLogin('alice')
    const held = heldCreate(alice)
    const id = await requestId(held.run)
    const card = page.locator(`article[data-id="${id}"]`)
    await card.waitFor({ timeout: 30_000 })
    await card.getByRole('button', { name: 'Approve' }).click()
    await card.locator('.status.error').waitFor({ timeout: 15_000 })
    assert.match(String(await card.locator('.status.error').textContent()), /chain|may not/i)
    assert.equal(held.run.proc.exitCode, null, 'still waiting')
    const r = gw.cli(['approvals', 'deny', id, '--token', bob, '--comment', 'cleanup'])
    assert.equal(r.code, 0, r.stderr)
    await held.run.done
    // An access request for a window, filed from the page.
    const form = page.locator('#access-request')
    await form.getByLabel('Connection').fill('app')
    await form.getByLabel('Action').fill('sql.ddl')
    await form.getByLabel('For').fill('30m')
    await form.getByLabel('Reason').fill('migration OPS-7')
    await form.getByRole('button', { name: 'Request access' }).click()
    await form.locator('.status.ok', { hasText: /Filed R-[0-9a-f]{6} \(pending\)/ }).waitFor({ timeout: 15_000 })
    await ctx.close()
  })

  test('kill a live session from the sessions page', async () => {
    const { ctx, page } = await oidcLogin('bob')
    const live = background('psql', ['-X', '-At', '-d', gw.conninfo(alice), '-c', 'SELECT pg_sleep(120)'])
    const sid = await until('the live session', async () => {
      const r = await page.evaluate(async () => (await fetch('/v1/sessions?active=true')).json())
      const s = (r as { sessions: { id: string; protocol: string; chain: string[] }[] }).sessions
      return s.find((x) => x.protocol === 'postgres' && x.chain[0] === 'user:alice')?.id
    })
    await page.goto(`${gw.apiUrl}/#sessions`)
    const row = page.locator(`tr[data-session="${sid}"]`)
    await row.waitFor({ timeout: 30_000 })
    await accessible(page, '03-sessions')
    await row.getByRole('button', { name: `Kill session ${sid}` }).click()
    assert.notEqual(await live.done, 0, 'psql was cut off')
    await page.locator('.status.ok', { hasText: `Session ${sid} killed` }).waitFor()
    const ends = gw.auditEvents(['--type', 'session.end'])
    assert.ok(ends.some((e) => e.session === sid && e.action === 'kill' && JSON.stringify(e.chain) === '["user:bob"]'))
    await ctx.close()
  })

  test('replay an SSH recording: the player shows the typed command at its marker', async () => {
    const c = sshClientSetup(gw.dir, alice)
    const shell = spawn('ssh', [...c.opts, '-tt', '-p', String(sshPort), 'web-1@127.0.0.1'], {
      env: { ...process.env, ...c.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    let out = ''
    shell.stdout.on('data', (d: Buffer) => {
      out += d.toString()
    })
    const closed = new Promise((res) => shell.on('close', res))
    await until('a prompt', () => out.length > 0, 30_000)
    shell.stdin.write('echo console-marker-$((6*7))\n')
    await until('the command output', () => /console-marker-42/.test(out), 30_000)
    shell.stdin.write('exit\n')
    await closed
    const sid = await until('the shell session', () => {
      const ev = gw
        .auditEvents(['--type', 'result'])
        .find((e) => e.action === 'ssh.shell.command' && String(e.command).includes('console-marker'))
      return ev ? String(ev.session) : null
    })
    const { ctx, page } = await oidcLogin('bob')
    await page.goto(`${gw.apiUrl}/#replay/${sid}`)
    await page.locator('.ap-player').waitFor({ timeout: 30_000 })
    const marker = page.locator('ol.markers li', { hasText: 'echo console-marker-$((6*7))' })
    await marker.waitFor()
    await marker.getByRole('button').click()
    await until('the command on the terminal at its marker', async () =>
      /echo console-marker/.test((await page.locator('.ap-term, .ap-terminal').first().textContent()) ?? ''),
    )
    await accessible(page, '04-replay-ssh')
    await ctx.close()
  })

  test("search the audit by a root token and find a sub-agent's statement", async () => {
    const exchange = async (subject: string, agent: string) => {
      const res = await fetch(`${gw.apiUrl}/oauth/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({
          grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
          subject_token: subject,
          subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
          agent,
          scope: 'connection:app sql.read',
        }),
      })
      const b = (await res.json()) as { access_token?: string }
      assert.ok(b.access_token, JSON.stringify(b))
      return b.access_token
    }
    const agent = await exchange(alice, 'planner')
    const sub = await exchange(agent, 'fetcher')
    const q = background('psql', ['-X', '-At', '-d', gw.conninfo(sub), '-c', "SELECT 'sub-agent-was-here'"])
    assert.equal(await q.done, 0, q.stderr)
    // The CLI answers the same search.
    const cli = gw.auditEvents(['--token', aliceId, '--type', 'statement'])
    assert.ok(cli.some((e) => String(e.sql).includes('sub-agent-was-here') && (e.chain as string[]).length === 3))
    assert.ok(!gw.auditEvents(['--token', 'no-such-token']).some((e) => e.type === 'statement'))
    const { ctx, page } = await oidcLogin('bob')
    await page.goto(`${gw.apiUrl}/#audit`)
    await page.getByLabel('Token (and its delegates)').fill(aliceId)
    await page.getByRole('button', { name: 'Search' }).click()
    const row = page.locator('#audit-results tr', { hasText: 'sub-agent-was-here' }).first()
    await row.waitFor({ timeout: 30_000 })
    assert.match(String(await row.textContent()), /user:alice[\s\S]*agent:planner[\s\S]*agent:fetcher/)
    assert.match(String(await page.locator('#integrity-h + dl').textContent()), /ok, \d+ events/)
    await accessible(page, '05-audit')
    const download = page.waitForEvent('download')
    await page.getByRole('button', { name: 'Export as JSON Lines' }).click()
    const file = await (await download).path()
    const lines = readFileSync(file, 'utf8').trim().split('\n')
    assert.ok(lines.some((l) => l.includes('sub-agent-was-here')))
    for (const l of lines) JSON.parse(l)
    // The SQL session's replay: a timeline of its statements with their decisions.
    await row.getByRole('link').click()
    const stmt = page.locator('table.timeline tr', { hasText: "SELECT 'sub-agent-was-here'" })
    await stmt.waitFor({ timeout: 30_000 })
    assert.match(String(await stmt.textContent()), /allow/)
    assert.match(String(await page.locator('main').textContent()), /user:alice[\s\S]*agent:fetcher/)
    await accessible(page, '07-replay-sql')
    await page.goto(`${gw.apiUrl}/#policy`)
    await page.getByRole('heading', { name: /Files \(\d+, read-only\)/ }).waitFor()
    assert.match(String(await page.locator('main').textContent()), /gatehouse\.rego/)
    await accessible(page, '06-policy')
    await ctx.close()
  })

  test('a state-changing call without the CSRF token is refused', async () => {
    const { ctx, page } = await tokenLogin(readFileSync(join(gw.dataDir, 'admin.token'), 'utf8').trim())
    const statuses = await page.evaluate(async () => {
      const none = await fetch('/v1/sessions/S-none/kill', { method: 'POST' })
      const wrong = await fetch('/v1/sessions/S-none/kill', { method: 'POST', headers: { 'x-gatehouse-csrf': 'forged' } })
      const csrf = document.querySelector<HTMLMetaElement>('meta[name="gatehouse-csrf"]')?.content ?? ''
      const right = await fetch('/v1/sessions/S-none/kill', { method: 'POST', headers: { 'x-gatehouse-csrf': csrf } })
      return [none.status, wrong.status, right.status]
    })
    assert.deepEqual(statuses, [403, 403, 404], 'refused without or with a wrong token; a real one reaches the route')
    // A form posted from another site carries a foreign Origin.
    const cookie = (await ctx.cookies()).find((x) => x.name === 'gh_console')?.value ?? ''
    const csrf = await page.locator('meta[name="gatehouse-csrf"]').getAttribute('content')
    const foreign = await fetch(`${gw.apiUrl}/v1/sessions/S-none/kill`, {
      method: 'POST',
      headers: { cookie: `gh_console=${cookie}`, 'x-gatehouse-csrf': csrf ?? '', origin: 'http://evil.example' },
    })
    assert.equal(foreign.status, 403)
    const logout = await fetch(`${gw.apiUrl}/console/logout`, { method: 'POST', headers: { cookie: `gh_console=${cookie}` } })
    assert.equal(logout.status, 403, 'logout needs the CSRF token too')
    await ctx.close()
  })

  test('a session cookie replayed after logout is refused', async () => {
    const { ctx, page } = await oidcLogin('bob')
    const cookie = (await ctx.cookies()).find((x) => x.name === 'gh_console')?.value ?? ''
    const before = await fetch(`${gw.apiUrl}/v1/whoami`, { headers: { cookie: `gh_console=${cookie}` } })
    assert.equal(before.status, 200)
    await page.getByRole('button', { name: 'Sign out' }).click()
    await page.getByRole('link', { name: 'Sign in with test-op' }).waitFor()
    const replay = await fetch(`${gw.apiUrl}/v1/whoami`, { headers: { cookie: `gh_console=${cookie}` } })
    assert.equal(replay.status, 401)
    const home = await (await fetch(`${gw.apiUrl}/`, { headers: { cookie: `gh_console=${cookie}` } })).text()
    assert.match(home, /Sign in with test-op/)
    const events = gw.auditEvents(['--type', 'console.logout'])
    assert.ok(events.some((e) => JSON.stringify(e.chain) === '["user:bob"]' && e.revoked === true))
    await ctx.close()
  })

  test("a viewer without rights cannot open another person's session", async () => {
    const q = background('psql', ['-X', '-At', '-d', gw.conninfo(alice), '-c', 'SELECT 1'])
    assert.equal(await q.done, 0, q.stderr)
    const sid = String(gw.auditEvents(['--type', 'session.start', '--principal', 'user:alice']).pop()?.session)
    const { ctx, page } = await oidcLogin('dora')
    await page.goto(`${gw.apiUrl}/#replay/${sid}`)
    await page.locator('main [role="alert"]').waitFor({ timeout: 30_000 })
    assert.match(String(await page.locator('main').textContent()), /gatehouse-admins/)
    const status = await page.evaluate(async (id) => (await fetch(`/v1/sessions/${id}/recording`)).status, sid)
    assert.equal(status, 403)
    await page.goto(`${gw.apiUrl}/#sessions`)
    await page.getByText('Only members of gatehouse-admins can see sessions.').waitFor()
    await ctx.close()
  })
  test('off loopback the cookie is Secure, and a provider login needs console.url', async () => {
    const url = new URL(gw.apiUrl)
    const send = (method: string, path: string, body = ''): Promise<{ status: number; headers: Record<string, unknown>; body: string }> =>
      new Promise((resolve, reject) => {
        const req = request(
          {
            host: url.hostname,
            port: url.port,
            method,
            path,
            headers: {
              host: 'gatehouse.example.com',
              origin: 'https://gatehouse.example.com',
              'content-type': 'application/x-www-form-urlencoded',
              'content-length': Buffer.byteLength(body),
            },
          },
          (res) => {
            let text = ''
            res.on('data', (d: Buffer) => {
              text += d.toString()
            })
            res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }))
          },
        )
        req.on('error', reject)
        req.end(body)
      })
    const admin = readFileSync(join(gw.dataDir, 'admin.token'), 'utf8').trim()
    const login = await send('POST', '/console/login/token', new URLSearchParams({ token: admin }).toString())
    assert.equal(login.status, 303)
    const cookie = String(login.headers['set-cookie'])
    assert.match(cookie, /gh_console=[\w-]+; Path=\/; HttpOnly; SameSite=Strict; Max-Age=\d+; Secure/)
    const oidc = await send('GET', '/console/login/oidc?provider=test-op')
    assert.equal(oidc.status, 400)
    assert.match(oidc.body, /Set console\.url/)
    // A delegated token is not a person's login.
    const agent = await fetch(`${gw.apiUrl}/oauth/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        subject_token: alice,
        subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
        agent: 'helper',
      }),
    })
    const child = ((await agent.json()) as { access_token: string }).access_token
    const refused = await fetch(`${gw.apiUrl}/console/login/token`, {
      method: 'POST',
      redirect: 'manual',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: child }),
    })
    assert.equal(refused.status, 403)
    assert.equal(refused.headers.get('set-cookie'), null)
    // Neither is a service account's key, even one in the admin group.
    const created = await fetch(`${gw.apiUrl}/v1/service-keys`, {
      method: 'POST',
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'console-probe', groups: ['gatehouse-admins'] }),
    })
    assert.equal(created.status, 200)
    assert.equal(created.headers.get('x-content-type-options'), 'nosniff')
    const key = ((await created.json()) as { key: string }).key
    const byKey = await fetch(`${gw.apiUrl}/console/login/token`, {
      method: 'POST',
      redirect: 'manual',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: key }),
    })
    assert.equal(byKey.status, 403)
    assert.equal(byKey.headers.get('set-cookie'), null)
    assert.match(await byKey.text(), /service account/)
  })
})
