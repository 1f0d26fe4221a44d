// The HTTP proxy against real servers and clients: curl and undici's fetch through the gateway (TLS
// with the gateway's certificate) to json-server and to nginx over TLS. Allowed requests come back
// byte for byte as they do directly; denied paths stay denied under every normalisation trick;
// smuggling forms are refused on the wire; injected credentials never reach the caller, the audit
// or the recordings; held requests go through the approval flow and run once; a delegated agent's
// scope holds; revoking a token ends its open requests within a second.

import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { Agent, fetch as undiciFetch } from 'undici'
import { REPO, TestGateway } from './helpers/gateway.js'
import { type JsonServer, makeCa, type Nginx, rawExchange, startJsonServer, startNginx, statusOf } from './helpers/httpd.js'

const API_AUTH = 'Bearer sk-upstream-api-0123456789abcdef'
const WEB_KEY = 'web-key-9f8e7d6c5b4a3210'

const POLICY = `package gatehouse

deny contains {"rule": "no-admin", "reason": "the admin area is closed"} if {
	input.action == "http.request"
	startswith(concat("", [input.command.path, "/"]), "/admin/")
}

deny contains {"rule": "no-users", "reason": "user records are not for this API client"} if {
	input.action == "http.request"
	input.connection.name == "api"
	startswith(concat("", [input.command.path, "/"]), "/users/")
}

deny contains {"rule": "no-forbidden-titles", "reason": "that title is not allowed"} if {
	input.action == "http.request"
	input.command.body.title == "forbidden"
}

approval contains {"rule": "deletes-need-a-dba", "group": "dba", "reason": "deleting records needs a DBA"} if {
	input.action == "http.request"
	input.command.method == "DELETE"
}
`

function curl(args: string[]): { code: number | null; status: number; body: string; headers: string } {
  const r = spawnSync('curl', ['-sS', '--path-as-is', '-D', '-', ...args], { encoding: 'latin1', timeout: 30_000 })
  const out = r.stdout ?? ''
  const split = out.indexOf('\r\n\r\n')
  const headers = split < 0 ? out : out.slice(0, split)
  const body = split < 0 ? '' : out.slice(split + 4)
  const m = /^HTTP\/[0-9.]+ (\d{3})/.exec(headers)
  return { code: r.status, status: m ? Number(m[1]) : 0, body, headers }
}

describe('HTTP proxy', () => {
  let dir = ''
  let nginx: Nginx
  let jsonServer: JsonServer
  let slow: Server
  let slowPort = 0
  let gw: TestGateway
  let port = 0
  let gwCa = ''
  let ca = ''
  let alice = ''
  let bob = ''
  const base = (): string => `https://localhost:${port}`

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gh-http-'))
    const certs = makeCa(join(dir, 'pki'))
    ca = certs.ca
    nginx = await startNginx(
      join(dir, 'nginx'),
      certs,
      [
        '    location = /echo-headers { return 200 "auth=[$http_authorization] proxy=[$http_proxy_authorization] key=[$http_x_api_key]\\n"; }',
        '    location = /echo-uri { return 200 "$request_uri\\n"; }',
        '    location /admin/ { return 200 "ADMIN-SECRET-PAGE\\n"; }',
        '    location /static/ { }',
      ].join('\n'),
    )
    writeFileSync(join(nginx.root, 'index.html'), '<h1>hello</h1>\n')
    cpSync(join(REPO, 'package-lock.json'), join(nginx.root, 'lock.json'))
    rmSync(join(nginx.root, 'static'), { recursive: true, force: true })
    cpSync(join(REPO, 'docs'), join(nginx.root, 'static'), { recursive: true })
    jsonServer = await startJsonServer(join(dir, 'json'), {
      posts: [
        { id: 1, title: 'first', body: 'hello' },
        { id: 2, title: 'second', body: 'world' },
        { id: 3, title: 'third', body: 'again' },
      ],
      users: [{ id: 1, name: 'root', password_hash: 'not for you' }],
    })
    // An upstream that answers slowly and never finishes: for ending open requests.
    slow = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' })
      const t = setInterval(() => res.write('tick\n'), 100)
      res.on('close', () => clearInterval(t))
    })
    await new Promise<void>((r) => slow.listen(0, '127.0.0.1', r))
    const sa = slow.address()
    slowPort = sa && typeof sa === 'object' ? sa.port : 0

    const policyDir = join(dir, 'policies')
    cpSync(join(REPO, 'policies'), policyDir, { recursive: true })
    rmSync(join(policyDir, 'default.cases.yaml'), { force: true })
    writeFileSync(join(policyDir, 'http_test_rules.rego'), POLICY)
    gw = await TestGateway.start({
      connections: [
        {
          name: 'api',
          protocol: 'http',
          url: `http://127.0.0.1:${jsonServer.port}`,
          // json-server (express) matches paths case-insensitively: so does the gateway here.
          path_case: 'insensitive',
          inject_headers: { Authorization: 'env:GH_TEST_API_AUTH' },
        },
        {
          name: 'web',
          protocol: 'http',
          url: `https://localhost:${nginx.port}`,
          ca,
          inject_headers: { 'X-Api-Key': 'env:GH_TEST_WEB_KEY' },
        },
        { name: 'slow', protocol: 'http', url: `http://127.0.0.1:${slowPort}` },
      ],
      config: {
        listen: { api: '127.0.0.1:0', postgres: 'off', ssh: 'off', http: '127.0.0.1:0' },
        policies: policyDir,
        approvals: { timeout: '60s', request_ttl: '1h' },
      },
      env: { GH_TEST_API_AUTH: API_AUTH, GH_TEST_WEB_KEY: WEB_KEY },
    })
    const run = JSON.parse(readFileSync(join(gw.dataDir, 'run.json'), 'utf8')) as { listeners: Record<string, string> }
    port = Number(run.listeners.http?.split(':').pop())
    gwCa = join(gw.dataDir, 'tls', 'cert.pem')
    alice = gw.token('user:alice', ['--group', 'writers'])
    bob = gw.token('user:bob', ['--group', 'dba'])
  })

  after(async () => {
    await gw?.cleanup()
    await nginx?.stop()
    await jsonServer?.stop()
    slow?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  const viaGw = (path: string, token: string, extra: string[] = []): ReturnType<typeof curl> =>
    curl(['--cacert', gwCa, '-H', `Authorization: Bearer ${token}`, ...extra, `${base()}${path}`])

  test('curl through the gateway gets byte for byte what it gets directly, from json-server and from nginx over TLS', () => {
    for (const p of ['/posts', '/posts/2', '/posts?title=second', '/posts?_sort=id&_order=desc']) {
      const direct = curl([`http://127.0.0.1:${jsonServer.port}${p}`])
      const through = viaGw(`/c/api${p}`, alice)
      assert.equal(through.status, direct.status, p)
      assert.equal(through.body, direct.body, p)
      assert.match(through.headers, /content-type: application\/json/i)
    }
    for (const p of ['/index.html', '/lock.json', '/static/README.md', '/static/plugins.md', '/missing']) {
      const direct = curl(['--cacert', ca, `https://localhost:${nginx.port}${p}`])
      const through = viaGw(`/c/web${p}`, alice)
      assert.equal(through.status, direct.status, p)
      assert.equal(Buffer.from(through.body, 'latin1').equals(Buffer.from(direct.body, 'latin1')), true, `${p} differs`)
    }
    // The path sent upstream is the normalised one, exactly.
    assert.equal(viaGw('/c/web/static/../echo-uri?a=1&b=%20x', alice).body, '/echo-uri?a=1&b=%20x\n')
    assert.equal(viaGw('/c/web//%65cho-uri', alice).body, '/echo-uri\n')
  })

  test('undici fetch through the gateway: GET and a JSON POST that json-server stores', async () => {
    const dispatcher = new Agent({ connect: { ca: readFileSync(gwCa, 'utf8') } })
    try {
      const r = await undiciFetch(`${base()}/c/api/posts/1`, { headers: { authorization: `Bearer ${alice}` }, dispatcher })
      assert.equal(r.status, 200)
      assert.deepEqual(await r.json(), { id: 1, title: 'first', body: 'hello' })
      const created = await undiciFetch(`${base()}/c/api/posts`, {
        method: 'POST',
        headers: { authorization: `Bearer ${alice}`, 'content-type': 'application/json' },
        body: JSON.stringify({ title: 'from fetch', body: 'via gatehouse' }),
        dispatcher,
      })
      assert.equal(created.status, 201)
      const post = (await created.json()) as { id: number; title: string }
      assert.equal(post.title, 'from fetch')
      // The JSON body was decided on: a forbidden title is refused before it reaches the upstream.
      const refused = await undiciFetch(`${base()}/c/api/posts`, {
        method: 'POST',
        headers: { authorization: `Bearer ${alice}`, 'content-type': 'application/json' },
        body: JSON.stringify({ title: 'forbidden' }),
        dispatcher,
      })
      assert.equal(refused.status, 403)
      assert.equal(refused.headers.get('content-type'), 'application/problem+json')
      const problem = (await refused.json()) as { detail: string; rules: string[] }
      assert.equal(problem.detail, 'that title is not allowed')
      assert.deepEqual(problem.rules, ['no-forbidden-titles'])
      const all = (await (
        await undiciFetch(`${base()}/c/api/posts`, { headers: { authorization: `Bearer ${alice}` }, dispatcher })
      ).json()) as {
        title: string
      }[]
      assert.ok(!all.some((p) => p.title === 'forbidden'))
    } finally {
      await dispatcher.close()
    }
  })

  test('login: no token or a bad one is 401 with WWW-Authenticate; the token never reaches the upstream', () => {
    const none = curl(['--cacert', gwCa, `${base()}/c/web/echo-headers`])
    assert.equal(none.status, 401)
    assert.match(none.headers, /www-authenticate: Bearer realm="gatehouse"/i)
    const bad = viaGw('/c/web/echo-headers', 'not-a-token')
    assert.equal(bad.status, 401)
    assert.match(bad.headers, /www-authenticate: Bearer realm="gatehouse", error="invalid_token"/i)
    const proxyAuth = curl(['--cacert', gwCa, '-H', `Proxy-Authorization: Bearer ${alice}`, `${base()}/c/web/echo-headers`])
    assert.equal(proxyAuth.status, 200)
    assert.match(proxyAuth.body, /^auth=\[\] proxy=\[\] key=\[\*+\]\n$/)
    const unknown = viaGw('/c/nope/x', alice)
    assert.equal(unknown.status, 404)
  })

  test('an injected secret never reaches the caller, even from an upstream that echoes it, nor the audit or recordings', () => {
    const r = viaGw('/c/web/echo-headers', alice)
    assert.equal(r.status, 200)
    assert.ok(!r.body.includes(WEB_KEY), r.body)
    assert.match(r.body, new RegExp(`key=\\[\\*{${WEB_KEY.length}}\\]`))
    assert.ok(!r.body.includes(alice))
    // Secrets nowhere in the data directory: audit segments, recordings, state.
    const walk = (d: string): string[] =>
      readdirSync(d).flatMap((n) => {
        const p = join(d, n)
        return statSync(p).isDirectory() ? walk(p) : [p]
      })
    for (const f of walk(gw.dataDir)) {
      const text = readFileSync(f).toString('latin1')
      for (const secret of [WEB_KEY, API_AUTH, API_AUTH.slice(7)]) assert.ok(!text.includes(secret), `${f} holds a secret`)
    }
  })

  test('deny by path: every normalisation trick on a denied path is refused or normalised onto the rule', async () => {
    // The page is there (directly), and the rule closes it through the gateway.
    assert.equal(curl(['--cacert', ca, `https://localhost:${nginx.port}/admin/`]).body, 'ADMIN-SECRET-PAGE\n')
    assert.equal(viaGw('/c/web/admin/', alice).status, 403)
    const tricks = [
      '/c/web/admin',
      '/c/web/%61dmin/',
      '/c/web/adm%69n/',
      '/c/web/%41DMIN/',
      '/c/web//admin/',
      '/c/web/./admin/',
      '/c/web/static/../admin/',
      '/c/web/static/%2e%2e/admin/',
      '/c/web/static/%2E%2E/admin/',
      '/c/web/static/.%2e/admin/',
      '/c/web/static%2f..%2fadmin/',
      '/c/web/static/..%2Fadmin/',
      '/c/web/static/..%5cadmin/',
      '/c/web/static/..\\admin/',
      '/c/web/admin;x=1/',
      '/c/web/admin%3bx/',
      '/c/web/%c0%ae%c0%ae/admin/',
      '/c/web/static/%c0%ae%c0%ae/admin/',
      '/c/web/%e0%80%ae%e0%80%ae/admin/',
      '/c/web/admin%00/',
      '/c/web/admin/%2e',
      '/c/web/../admin/',
      '/c/web/%2e%2e/admin/',
      '/c/api/USERS',
      '/c/api/Users/1',
      '/c/api/%55sers',
      '/c/api/posts/../users',
      '/c/api//users',
      '/c/api/users;',
      '/c/api/users%2f1',
    ]
    for (const t of tricks) {
      for (const tls of [false, true]) {
        const raw = await rawExchange(
          port,
          `GET ${t} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${alice}\r\nConnection: close\r\n\r\n`,
          tls ? { ca: readFileSync(gwCa, 'utf8') } : {},
        )
        const status = statusOf(raw)
        assert.ok(status === 400 || status === 403 || status === 404, `${t}: ${status}`)
        assert.ok(!raw.includes('ADMIN-SECRET-PAGE'), `${t} reached the admin area: ${raw}`)
        assert.ok(!raw.includes('password_hash'), `${t} reached the users`)
      }
    }
  })

  test('request smuggling and ambiguous framing are refused on the wire', async () => {
    const auth = `Authorization: Bearer ${alice}\r\n`
    const smuggled = `GET /c/web/admin/ HTTP/1.1\r\nHost: localhost\r\n${auth}\r\n`
    const forms: [string, string][] = [
      [
        'CL and TE',
        `POST /c/api/posts HTTP/1.1\r\nHost: localhost\r\n${auth}Content-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${smuggled}`,
      ],
      [
        'TE and CL',
        `POST /c/api/posts HTTP/1.1\r\nHost: localhost\r\n${auth}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n${smuggled}`,
      ],
      [
        'duplicate CL',
        `POST /c/api/posts HTTP/1.1\r\nHost: localhost\r\n${auth}Content-Length: 2\r\nContent-Length: 40\r\n\r\n{}${smuggled}`,
      ],
      ['CL list', `POST /c/api/posts HTTP/1.1\r\nHost: localhost\r\n${auth}Content-Length: 2, 2\r\n\r\n{}`],
      ['obs-fold', `GET /c/web/index.html HTTP/1.1\r\nHost: localhost\r\n${auth}X-Folded: a\r\n b\r\n\r\n`],
      ['obs-fold on TE', `POST /c/api/posts HTTP/1.1\r\nHost: localhost\r\n${auth}Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n`],
      [
        'TE other than chunked',
        `POST /c/api/posts HTTP/1.1\r\nHost: localhost\r\n${auth}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n`,
      ],
      [
        'TE with a space before the colon',
        `POST /c/api/posts HTTP/1.1\r\nHost: localhost\r\n${auth}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n`,
      ],
      ['NUL in a header value', `GET /c/web/index.html HTTP/1.1\r\nHost: localhost\r\n${auth}X-A: a\u0000b\r\n\r\n`],
      ['control byte in a header value', `GET /c/web/index.html HTTP/1.1\r\nHost: localhost\r\n${auth}X-A: a\u0001b\r\n\r\n`],
      ['bare LF line ending', `GET /c/web/index.html HTTP/1.1\nHost: localhost\n${auth.replace('\r', '')}\n`],
      ['bare CR in a header', `GET /c/web/index.html HTTP/1.1\r\nHost: localhost\r\n${auth}X-A: a\rb\r\n\r\n`],
      ['invalid header name', `GET /c/web/index.html HTTP/1.1\r\nHost: localhost\r\n${auth}X A: b\r\n\r\n`],
      ['absolute-form to another host', `GET http://169.254.169.254/c/web/index.html HTTP/1.1\r\nHost: localhost\r\n${auth}\r\n`],
      [
        'absolute-form with another host in the target',
        `GET https://evil.example/c/web/index.html HTTP/1.1\r\nHost: localhost\r\n${auth}\r\n`,
      ],
      [
        'X-HTTP-Method-Override',
        `POST /c/api/posts HTTP/1.1\r\nHost: localhost\r\n${auth}X-HTTP-Method-Override: DELETE\r\nContent-Length: 2\r\n\r\n{}`,
      ],
      ['X-HTTP-Method', `GET /c/web/index.html HTTP/1.1\r\nHost: localhost\r\n${auth}X-HTTP-Method: DELETE\r\n\r\n`],
      ['X-Method-Override', `GET /c/web/index.html HTTP/1.1\r\nHost: localhost\r\n${auth}x-method-override: PUT\r\n\r\n`],
      ['two Host headers', `GET /c/web/index.html HTTP/1.1\r\nHost: localhost\r\nHost: other\r\n${auth}\r\n`],
      ['no Host header', `GET /c/web/index.html HTTP/1.1\r\n${auth}\r\n`],
      ['CONNECT', `CONNECT 127.0.0.1:${nginx.port} HTTP/1.1\r\nHost: 127.0.0.1:${nginx.port}\r\n${auth}\r\n`],
      ['HTTP/2 preface', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'],
      [
        'invalid chunk size',
        `POST /c/api/posts HTTP/1.1\r\nHost: localhost\r\n${auth}Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n`,
      ],
    ]
    for (const [name, bytes] of forms) {
      const raw = await rawExchange(port, bytes)
      const status = statusOf(raw)
      assert.ok(status === 400 || status === 405, `${name}: got ${status}\n${raw.slice(0, 300)}`)
      assert.ok(!raw.includes('ADMIN-SECRET-PAGE'), `${name}: a smuggled request reached the upstream`)
      assert.ok(!raw.includes('<h1>hello</h1>'), `${name}: the request was forwarded`)
      assert.equal((raw.match(/^HTTP\/1\.1 /gm) ?? []).length <= 1, true, `${name}: more than one response`)
    }
    // An absolute-form target naming the gateway itself is an ordinary request.
    const own = await rawExchange(
      port,
      `GET http://localhost/c/web/index.html HTTP/1.1\r\nHost: localhost\r\n${auth}Connection: close\r\n\r\n`,
    )
    assert.equal(statusOf(own), 200)
    // Expect: 100-continue is answered by the gateway; the upstream gets the request with its body.
    const body = '{"title":"expect-continue"}'
    const cont = await rawExchange(
      port,
      `POST /c/api/posts HTTP/1.1\r\nHost: localhost\r\n${auth}Content-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
    )
    assert.match(cont, /HTTP\/1\.1 201 /, cont.slice(0, 400))
    assert.match(cont, /expect-continue/)
  })

  test('held: 202 with the request id, approved by a DBA, the identical request runs once; Prefer: wait waits', async () => {
    const first = viaGw('/c/api/posts/3', alice, ['-X', 'DELETE'])
    assert.equal(first.status, 202, first.body)
    const id = (JSON.parse(first.body) as { request: string }).request
    assert.match(first.headers, new RegExp(`gatehouse-approval-request: ${id}`, 'i'))
    assert.equal(viaGw('/c/api/posts/3', alice).status, 200, 'not deleted while held')
    const ok = gw.cli(['approvals', 'approve', id, '--token', bob])
    assert.equal(ok.code, 0, ok.stderr)
    const again = viaGw('/c/api/posts/3', alice, ['-X', 'DELETE'])
    assert.equal(again.status, 200, again.body)
    assert.equal(viaGw('/c/api/posts/3', alice).status, 404, 'deleted')
    const third = viaGw('/c/api/posts/3', alice, ['-X', 'DELETE'])
    assert.equal(third.status, 202, 'the once-grant was used up')
    // Prefer: wait=N holds the request open until a reviewer decides.
    const waiting = new Promise<ReturnType<typeof curl>>((resolve) => {
      const c = spawn('curl', [
        '-sS',
        '-D',
        '-',
        '--cacert',
        gwCa,
        '-X',
        'DELETE',
        '-H',
        `Authorization: Bearer ${alice}`,
        '-H',
        'Prefer: wait=30',
        `${base()}/c/api/posts/2`,
      ])
      let out = ''
      c.stdout.on('data', (d: Buffer) => {
        out += d.toString('latin1')
      })
      c.on('exit', (code: number | null) => {
        const split = out.indexOf('\r\n\r\n')
        const m = /^HTTP\/[0-9.]+ (\d{3})/.exec(out)
        resolve({ code, status: m ? Number(m[1]) : 0, headers: out.slice(0, split), body: out.slice(split + 4) })
      })
    })
    let pendingId = ''
    for (let i = 0; i < 100 && !pendingId; i++) {
      await new Promise((r) => setTimeout(r, 200))
      const list = gw.cli(['approvals', 'list', '--json', '--status', 'pending', '--token', bob])
      for (const l of list.stdout.split('\n').filter(Boolean)) {
        const a = JSON.parse(l) as { id: string; statement: string }
        if (a.statement === 'DELETE /posts/2') pendingId = a.id
      }
    }
    assert.ok(pendingId, 'the waiting request is listed')
    assert.equal(gw.cli(['approvals', 'approve', pendingId, '--token', bob]).code, 0)
    const done = await waiting
    assert.equal(done.status, 200, done.body)
  })

  test("a delegated agent's narrowed scope holds: connection:api http.request", async () => {
    const r = gw.cli(['token', 'delegate', '--agent', 'crawler', '--token', alice, '--scope', 'connection:api http.request', '--json'])
    assert.equal(r.code, 0, r.stderr)
    const agent = (JSON.parse(r.stdout) as { access_token: string }).access_token
    assert.equal(viaGw('/c/api/posts/1', agent).status, 200)
    const other = viaGw('/c/web/index.html', agent)
    assert.equal(other.status, 403, other.body)
    // The root's rules still apply to the agent's requests.
    assert.equal(viaGw('/c/api/users/1', agent).status, 403)
    const narrower = gw.cli(['token', 'delegate', '--agent', 'reader', '--token', alice, '--scope', 'connection:api sql.read', '--json'])
    assert.equal(narrower.code, 0, narrower.stderr)
    const sqlOnly = (JSON.parse(narrower.stdout) as { access_token: string }).access_token
    assert.equal(viaGw('/c/api/posts/1', sqlOnly).status, 403)
  })

  test('revoking a token ends its open requests within a second', async () => {
    const r = gw.cli(['token', 'delegate', '--agent', 'streamer', '--token', alice, '--json'])
    assert.equal(r.code, 0, r.stderr)
    const d = JSON.parse(r.stdout) as { access_token: string; token_id: string }
    const c = spawn('curl', ['-sS', '-N', '--cacert', gwCa, '-H', `Authorization: Bearer ${d.access_token}`, `${base()}/c/slow/stream`])
    let got = ''
    c.stdout.on('data', (b: Buffer) => {
      got += b.toString()
    })
    const ended = new Promise<number>((resolve) => c.on('exit', () => resolve(Date.now())))
    for (let i = 0; i < 100 && !got.includes('tick'); i++) await new Promise((res) => setTimeout(res, 100))
    assert.ok(got.includes('tick'), 'the stream is open')
    const rv = gw.cli(['token', 'revoke', d.token_id])
    assert.equal(rv.code, 0, rv.stderr)
    const revokedAt = Date.now()
    const at = await Promise.race([ended, new Promise<number>((res) => setTimeout(() => res(-1), 5000))])
    assert.ok(at > 0, 'the request did not end')
    assert.ok(at - revokedAt < 1000, `ended ${at - revokedAt} ms after the revocation answered`)
    assert.equal(viaGw('/c/api/posts/1', d.access_token).status, 401)
  })

  test('audit: one statement and one result per request; the recording shows headers redacted', () => {
    const events = gw.auditEvents()
    const st = events.filter((e) => e.type === 'statement' && e.action === 'http.request')
    const denied = st.find((e) => e.path === '/admin/' && e.decision === 'deny')
    assert.ok(denied, 'the denied request is audited')
    assert.deepEqual(denied.rules, ['no-admin'])
    const get = st.find((e) => e.path === '/posts' && e.method === 'GET' && e.decision === 'allow')
    assert.ok(get)
    assert.deepEqual(get.chain, ['user:alice'])
    const result = events.find((e) => e.type === 'result' && e.session === get.session && e.seq === get.seq)
    assert.ok(result, 'its result')
    assert.equal(result.status, 200)
    assert.equal(typeof result.bytes, 'number')
    const replay = gw.cli(['sessions', 'replay', String(get.session)])
    assert.equal(replay.code, 0, replay.stderr)
    assert.match(replay.stdout, /GET \/posts/)
    assert.match(replay.stdout, /http\.exchange/)
    assert.match(replay.stdout, /\[redacted\]/)
    assert.ok(!replay.stdout.includes(alice), 'the token is not in the recording')
  })
})
