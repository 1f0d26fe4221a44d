// The console's CSRF gate, from a client that is not a browser and so sends exactly the headers it
// is given: a state-changing call needs the session's CSRF token AND a same-origin Sec-Fetch-Site
// or Origin. A client holding the token but sending neither header is refused, as documented.

import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { request } from 'node:http'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { TestGateway } from './helpers/gateway.js'

interface Answer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: string
}

describe('console: CSRF needs the token and a same-origin header', () => {
  let gw: TestGateway
  let url: URL

  /** One request with exactly these headers (Node's http adds none of Origin / Sec-Fetch-*). */
  function send(method: string, path: string, headers: Record<string, string>, body = ''): Promise<Answer> {
    return new Promise((resolve, reject) => {
      const req = request(
        { host: url.hostname, port: url.port, method, path, headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) } },
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
  }

  /** A console session for the admin token: its cookie and CSRF token. */
  async function login(): Promise<{ cookie: string; csrf: string }> {
    const admin = readFileSync(join(gw.dataDir, 'admin.token'), 'utf8').trim()
    const r = await send(
      'POST',
      '/console/login/token',
      { 'content-type': 'application/x-www-form-urlencoded', origin: url.origin },
      new URLSearchParams({ token: admin }).toString(),
    )
    assert.equal(r.status, 303, r.body)
    const cookie = /gh_console=([\w-]+)/.exec(String(r.headers['set-cookie']))?.[1] ?? ''
    assert.ok(cookie)
    const home = await send('GET', '/', { cookie: `gh_console=${cookie}` })
    const csrf = /<meta name="gatehouse-csrf" content="([^"]+)">/.exec(home.body)?.[1] ?? ''
    assert.ok(csrf, 'the console page carries the CSRF token')
    return { cookie, csrf }
  }

  before(async () => {
    gw = await TestGateway.start({
      config: { listen: { api: '127.0.0.1:0', postgres: 'off', ssh: 'off' }, console: { token_login: true } },
    })
    url = new URL(gw.apiUrl)
  })

  after(async () => {
    await gw?.cleanup()
  })

  test('the token without Sec-Fetch-Site or Origin is refused (kill and logout); with either it passes', async () => {
    const { cookie, csrf } = await login()
    const base = { cookie: `gh_console=${cookie}`, 'x-gatehouse-csrf': csrf }
    const bare = await send('POST', '/v1/sessions/s-000000000000/kill', base)
    assert.equal(bare.status, 403, bare.body)
    const refusal = JSON.parse(bare.body) as { code: string; error: string }
    assert.equal(refusal.code, 'GH_ERR_CSRF')
    assert.match(refusal.error, /Sec-Fetch-Site or Origin/)
    const bareLogout = await send(
      'POST',
      '/console/logout',
      { ...base, 'content-type': 'application/x-www-form-urlencoded' },
      `csrf=${csrf}`,
    )
    assert.equal(bareLogout.status, 403, 'logout without either header is refused')
    // The session is still alive: the refused logout did nothing.
    assert.equal((await send('GET', '/v1/whoami', { cookie: `gh_console=${cookie}` })).status, 200)

    const bySite = await send('POST', '/v1/sessions/s-000000000000/kill', { ...base, 'sec-fetch-site': 'same-origin' })
    assert.equal(bySite.status, 404, 'with Sec-Fetch-Site: same-origin the gate passes and the route answers')
    const byOrigin = await send('POST', '/v1/sessions/s-000000000000/kill', { ...base, origin: url.origin })
    assert.equal(byOrigin.status, 404, 'with a same-origin Origin the gate passes')
    const foreign: Record<string, string>[] = [
      { 'sec-fetch-site': 'cross-site' },
      { 'sec-fetch-site': 'none' },
      { origin: 'http://evil.example' },
      { origin: 'null' },
    ]
    for (const h of foreign) {
      assert.equal((await send('POST', '/v1/sessions/s-000000000000/kill', { ...base, ...h })).status, 403, JSON.stringify(h))
    }
    const logout = await send(
      'POST',
      '/console/logout',
      { ...base, origin: url.origin, 'content-type': 'application/x-www-form-urlencoded' },
      `csrf=${csrf}`,
    )
    assert.equal(logout.status, 303)
    assert.equal((await send('GET', '/v1/whoami', { cookie: `gh_console=${cookie}` })).status, 401)
  })

  test("a bearer token (not the console cookie) needs neither header: the CSRF gate is the cookie's", async () => {
    const admin = readFileSync(join(gw.dataDir, 'admin.token'), 'utf8').trim()
    const r = await send('POST', '/v1/sessions/s-000000000000/kill', { authorization: `Bearer ${admin}` })
    assert.equal(r.status, 404)
  })
})
