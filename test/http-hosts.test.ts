// The HTTP proxy's host-name routing and connection settings, against a real gateway, real curl
// (`--resolve`, `-H Host:`) and two real upstreams that say who they are: a connection listed by
// host name gets the whole path unchanged, the Host header is matched exactly (without case; a
// port only where the entry names one), unknown hosts are refused, and no request reaches one
// connection's upstream while being decided (and audited) as another. HTTP/1.0 without Host is
// refused. Decisions reused by request shape on a keep-alive connection follow every header and
// a policy reload. The connection settings are part of the configuration's schema (`config
// check`, `config schema`).

import assert from 'node:assert/strict'
import { execFile, spawnSync } from 'node:child_process'
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { connect as tlsConnect } from 'node:tls'
import { after, before, describe, test } from 'node:test'
import yaml from 'js-yaml'
import { Agent, request } from 'undici'
import { readPolicyDir } from '../engine/policy/sources.js'
import { BIN, REPO, TestGateway } from './helpers/gateway.js'
import { rawExchange, statusOf } from './helpers/httpd.js'

const execFileP = promisify(execFile)

const POLICY = `package gatehouse

deny contains {"rule": "no-secret", "reason": "the secret area of b is closed"} if {
	input.action == "http.request"
	input.connection.name == "b"
	startswith(concat("", [input.command.path, "/"]), "/secret/")
}

deny contains {"rule": "not-tenant-b", "reason": "tenant b is closed"} if {
	input.action == "http.request"
	input.connection.name == "c"
	input.command.headers["x-tenant"] == "b"
}
`

const CLOSE_Q = `package gatehouse

deny contains {"rule": "no-q", "reason": "q is closed"} if {
	input.action == "http.request"
	input.command.path == "/q"
}
`

/** An upstream that answers with its own name, the path it received and the Host it was sent. */
function whoAmI(name: string): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    const body = `upstream=${name} path=${req.url} host=${req.headers.host}\n`
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) })
    res.end(body)
  })
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      const a = server.address()
      resolve({ server, port: a && typeof a === 'object' ? a.port : 0 })
    }),
  )
}

/** curl as a child process, awaited: the upstreams run in this process and must keep serving. */
async function curl(args: string[]): Promise<{ status: number; body: string }> {
  const { stdout } = await execFileP('curl', ['-sS', '--path-as-is', '-o', '-', '-w', '\n%{http_code}', ...args], {
    encoding: 'utf8',
    timeout: 30_000,
  })
  const nl = stdout.lastIndexOf('\n')
  return { status: Number(stdout.slice(nl + 1)), body: stdout.slice(0, nl) }
}

function cli(args: readonly string[]): { code: number | null; stdout: string; stderr: string } {
  const env = { ...process.env }
  delete env.GATEHOUSE_CONFIG
  const r = spawnSync(process.execPath, [BIN, ...args], { env, encoding: 'utf8', timeout: 120_000 })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

describe('HTTP proxy: host-name routing', () => {
  let dir = ''
  let a: { server: Server; port: number }
  let b: { server: Server; port: number }
  let gw: TestGateway
  let port = 0
  let token = ''
  let policyDir = ''

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gh-http-hosts-'))
    a = await whoAmI('A')
    b = await whoAmI('B')
    policyDir = join(dir, 'policies')
    cpSync(join(REPO, 'policies'), policyDir, { recursive: true })
    rmSync(join(policyDir, 'default.cases.yaml'), { force: true })
    writeFileSync(join(policyDir, 'http_hosts_rules.rego'), POLICY)
    gw = await TestGateway.start({
      connections: [
        { name: 'a', protocol: 'http', url: `http://127.0.0.1:${a.port}`, hosts: ['api.internal.example'] },
        // An entry with a port matches that port only.
        { name: 'b', protocol: 'http', url: `http://127.0.0.1:${b.port}`, hosts: ['b.internal.example:8443', 'B2.Internal.Example'] },
        { name: 'c', protocol: 'http', url: `http://127.0.0.1:${a.port}` },
      ],
      config: { listen: { api: '127.0.0.1:0', postgres: 'off', ssh: 'off', http: '127.0.0.1:0' }, policies: policyDir },
    })
    const run = JSON.parse(readFileSync(join(gw.dataDir, 'run.json'), 'utf8')) as { listeners: Record<string, string> }
    port = Number(run.listeners.http?.split(':').pop())
    token = gw.token('user:alice')
  })

  after(async () => {
    await gw?.stop()
    a?.server.close()
    b?.server.close()
    if (dir) rmSync(dir, { recursive: true, force: true })
  })

  const auth = (): string[] => ['-H', `Authorization: Bearer ${token}`]

  test('curl --resolve by host name: the whole path reaches that connection unchanged (normalised), the Host is the upstream own', async () => {
    const r = await curl([
      ...auth(),
      '--resolve',
      `api.internal.example:${port}:127.0.0.1`,
      `http://api.internal.example:${port}/posts/1?x=1`,
    ])
    assert.equal(r.status, 200, r.body)
    assert.equal(r.body, `upstream=A path=/posts/1?x=1 host=127.0.0.1:${a.port}\n`)
    const dots = await curl([
      ...auth(),
      '--resolve',
      `api.internal.example:${port}:127.0.0.1`,
      `http://api.internal.example:${port}/x/../%61bc//d`,
    ])
    assert.equal(dots.body, `upstream=A path=/abc/d host=127.0.0.1:${a.port}\n`)
  })

  test('the Host header is matched without case; a port only where the entry names one', async () => {
    const via = (host: string, path = '/p'): Promise<{ status: number; body: string }> =>
      curl([...auth(), '-H', `Host: ${host}`, `http://127.0.0.1:${port}${path}`])
    assert.match((await via('API.Internal.EXAMPLE')).body, /^upstream=A path=\/p /)
    assert.match((await via(`api.internal.example:${port}`)).body, /^upstream=A path=\/p /)
    assert.match((await via('api.internal.example:1')).body, /^upstream=A path=\/p /, 'an entry without a port matches every port')
    assert.match((await via('b.internal.example:8443')).body, /^upstream=B path=\/p /)
    assert.match((await via('b2.internal.example:9')).body, /^upstream=B path=\/p /)
    for (const h of [
      'b.internal.example',
      'b.internal.example:8444',
      'api.internal.example.',
      'api.internal.example.evil',
      'internal.example',
    ]) {
      const r = await via(h)
      assert.equal(r.status, 404, `${h}: ${r.body}`)
      assert.doesNotMatch(r.body, /upstream=/, h)
      assert.match(r.body, /hosts:/, h)
    }
  })

  test('no request reaches one connection while decided as another', async () => {
    // Under a connection's host name, /c/<other>/… is an ordinary path of that connection.
    const cross = await curl([...auth(), '-H', 'Host: api.internal.example', `http://127.0.0.1:${port}/c/b/secret/x`])
    assert.equal(cross.status, 200)
    assert.equal(cross.body, `upstream=A path=/c/b/secret/x host=127.0.0.1:${a.port}\n`)
    // b's rule holds by host name and by prefix alike; nothing reaches B.
    const byHost = await curl([...auth(), '-H', 'Host: b2.internal.example', `http://127.0.0.1:${port}/secret/x`])
    assert.equal(byHost.status, 403, byHost.body)
    assert.match(byHost.body, /no-secret/)
    const byPrefix = await curl([...auth(), `http://127.0.0.1:${port}/c/b/secret/x`])
    assert.equal(byPrefix.status, 403, byPrefix.body)
    // A host that names no connection keeps path routing (the gateway's own names are not listed).
    const prefix = await curl([...auth(), '-H', 'Host: gateway.example', `http://127.0.0.1:${port}/c/c/q`])
    assert.match(prefix.body, /^upstream=A path=\/q /)
    const events = gw.auditEvents().filter((e) => e.type === 'statement' && e.action === 'http.request')
    const crossEv = events.find((e) => e.path === '/c/b/secret/x')
    assert.ok(crossEv, 'the cross request is audited')
    assert.equal(crossEv.connection, 'a')
    assert.equal(crossEv.host, 'api.internal.example')
    const denied = events.filter((e) => e.path === '/secret/x')
    assert.ok(denied.length >= 2 && denied.every((e) => e.connection === 'b' && e.decision === 'deny'))
  })

  test('absolute-form, HTTP/1.0 and TLS server name: each must agree with the Host header', async () => {
    const hdr = `Authorization: Bearer ${token}\r\n`
    const abs = await rawExchange(
      port,
      `GET http://api.internal.example/z HTTP/1.1\r\nHost: api.internal.example\r\n${hdr}Connection: close\r\n\r\n`,
    )
    assert.match(abs, /upstream=A path=\/z /)
    const other = await rawExchange(
      port,
      `GET http://b2.internal.example/z HTTP/1.1\r\nHost: api.internal.example\r\n${hdr}Connection: close\r\n\r\n`,
    )
    assert.equal(statusOf(other), 400)
    assert.doesNotMatch(other, /upstream=/)
    // HTTP/1.0 without Host: refused, not routed by a guess.
    const noHost = await rawExchange(port, `GET /c/c/q HTTP/1.0\r\n${hdr}\r\n`)
    assert.equal(statusOf(noHost), 400, noHost)
    assert.match(noHost, /Host header is required/)
    assert.doesNotMatch(noHost, /upstream=/)
    const withHost = await rawExchange(port, `GET /q HTTP/1.0\r\nHost: api.internal.example\r\n${hdr}\r\n`)
    assert.match(withHost, /upstream=A path=\/q /)
    // TLS: a client that asked for api.internal.example (SNI) cannot send its requests to b.
    const ca = readFileSync(join(gw.dataDir, 'tls', 'cert.pem'), 'utf8')
    const overTls = (sni: string, host: string): Promise<string> =>
      new Promise((resolve) => {
        const s = tlsConnect({ host: '127.0.0.1', port, ca, servername: sni, checkServerIdentity: () => undefined })
        let out = ''
        s.on('secureConnect', () => s.write(`GET /p HTTP/1.1\r\nHost: ${host}\r\n${hdr}Connection: close\r\n\r\n`))
        s.on('data', (d: Buffer) => {
          out += d.toString()
        })
        s.on('close', () => resolve(out))
        s.on('error', () => resolve(out))
      })
    const misdirected = await overTls('api.internal.example', 'b2.internal.example')
    assert.equal(statusOf(misdirected), 421, misdirected)
    assert.doesNotMatch(misdirected, /upstream=/)
    assert.match(await overTls('b2.internal.example', 'b2.internal.example'), /upstream=B path=\/p /)
    assert.match(await overTls('B2.internal.example', 'b2.internal.example:443'), /upstream=B path=\/p /)
  })

  test('a decision reused on a keep-alive connection follows every header and a policy reload', async () => {
    // One socket: one session, whose decisions are reused by request shape.
    const agent = new Agent({ connections: 1, pipelining: 1 })
    const get = async (tenant: string): Promise<number> => {
      const r = await request(`http://127.0.0.1:${port}/c/c/q`, {
        dispatcher: agent,
        headers: { authorization: `Bearer ${token}`, 'x-tenant': tenant },
      })
      await r.body.text()
      return r.statusCode
    }
    const admin = readFileSync(join(gw.dataDir, 'admin.token'), 'utf8').trim()
    const reloaded = async (version: string): Promise<void> => {
      const deadline = Date.now() + 30_000
      for (;;) {
        const res = await fetch(`${gw.apiUrl}/v1/policy`, { headers: { authorization: `Bearer ${admin}` } })
        const st = (await res.json()) as { version: string }
        if (st.version === version) return
        assert.ok(Date.now() < deadline, `the policy was not reloaded: ${JSON.stringify(st)}`)
        await new Promise((r) => setTimeout(r, 50))
      }
    }
    try {
      for (let i = 0; i < 3; i++) {
        assert.equal(await get('a'), 200)
        assert.equal(await get('b'), 403, 'another header value is another shape')
      }
      writeFileSync(join(policyDir, 'http_hosts_close_q.rego'), CLOSE_Q)
      await reloaded(readPolicyDir(policyDir).version)
      assert.equal(await get('a'), 403, 'the reloaded policy decides the same shape on the same connection')
      rmSync(join(policyDir, 'http_hosts_close_q.rego'))
      await reloaded(readPolicyDir(policyDir).version)
      assert.equal(await get('a'), 200)
    } finally {
      await agent.close()
    }
  })
})

describe('HTTP connection settings in the configuration schema', () => {
  let dir = ''
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'gh-http-config-'))
  })
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true })
  })

  test('config check names each bad key and value of an http connection', () => {
    const file = join(dir, 'bad.yaml')
    writeFileSync(
      file,
      yaml.dump({
        data_dir: join(dir, 'data'),
        listen: { http: '127.0.0.1:0' },
        connections: [
          {
            name: 'api',
            protocol: 'http',
            url: 'http://127.0.0.1:3000/v1',
            colour: 'blue',
            inject_headers: { Host: 'env:X', 'Bad Name': 'env:Y', Authorization: 'Bearer hunter2-literal' },
            client_cert: 'cert.pem',
            path_case: 'maybe',
            path_params: 'yes',
            body_limit: -1,
            record_body_bytes: 1.5,
            hosts: ['*.internal.example', '10.0.0.1', 'api.example.', 'ok.example', 'bad_name.example'],
          },
          { name: 'nourl', protocol: 'http', address: '127.0.0.1:80' },
        ],
      }),
    )
    const r = cli(['config', 'check', '--config', file])
    assert.equal(r.code, 2, r.stderr)
    const want = [
      /connections\[0\]\.url: must be an origin \(no path, query or fragment\)/,
      /connections\[0\]\.colour: unknown key for an http connection \(allowed: url, ca, inject_headers, /,
      /connections\[0\]\.inject_headers\.Host: the gateway sets this header itself/,
      /connections\[0\]\.inject_headers\.Bad Name: not a valid header name/,
      /connections\[0\]\.inject_headers\.Authorization: must be a secret reference/,
      /connections\[0\]\.path_case: must be sensitive or insensitive \(got "maybe"\)/,
      /connections\[0\]\.path_params: must be true or false/,
      /connections\[0\]\.body_limit: must be a number of bytes \(0 to 16777216\)/,
      /connections\[0\]\.record_body_bytes: must be a number of bytes/,
      /connections\[0\]\.hosts\[0\]: "\*\.internal\.example": wildcards are not accepted/,
      /connections\[0\]\.hosts\[1\]: "10\.0\.0\.1": an IP address cannot name a connection/,
      /connections\[0\]\.hosts\[2\]: "api\.example\.": no trailing dot/,
      /connections\[0\]\.hosts\[4\]: "bad_name\.example": must be a host name, or host:port/,
      /connections\[1\]\.url: is required, as http:\/\/host\[:port\] or https:\/\/host\[:port\]/,
    ]
    for (const w of want) assert.match(r.stderr, w)
    assert.doesNotMatch(r.stderr, /hosts\[3\]/)
    assert.doesNotMatch(r.stderr, /hunter2/, 'a value that may be a secret is never echoed')
    const good = join(dir, 'good.yaml')
    writeFileSync(
      good,
      yaml.dump({
        data_dir: join(dir, 'data'),
        listen: { http: '127.0.0.1:0' },
        connections: [
          {
            name: 'api',
            protocol: 'http',
            url: 'https://api.example:8443',
            inject_headers: { Authorization: 'env:API_AUTH' },
            hosts: ['api.internal.example', 'api2.internal.example:8443'],
            path_case: 'insensitive',
            body_limit: 1024,
          },
        ],
      }),
    )
    const ok = cli(['config', 'check', '--config', good])
    assert.equal(ok.code, 0, ok.stderr)
  })

  test('config schema includes the http connection keys', () => {
    const r = cli(['config', 'schema'])
    assert.equal(r.code, 0, r.stderr)
    const s = JSON.parse(r.stdout) as {
      properties: {
        connections: { items: { allOf: { if: { properties: { protocol: { const: string } } }; then: Record<string, unknown> }[] } }
      }
    }
    const http = s.properties.connections.items.allOf.find((x) => x.if.properties.protocol.const === 'http')
    assert.ok(http, 'an http branch')
    const props = http.then.properties as Record<string, unknown>
    for (const k of ['url', 'ca', 'inject_headers', 'client_cert', 'client_key', 'hosts', 'path_case', 'path_params', 'body_limit']) {
      assert.ok(k in props, k)
    }
    assert.ok((http.then.required as string[]).includes('url'))
    assert.equal(http.then.additionalProperties, false)
  })

  test('two connections claiming one host: serve refuses to start, naming both', async () => {
    const gw = TestGateway.start({
      connections: [
        { name: 'one', protocol: 'http', url: 'http://127.0.0.1:1', hosts: ['api.internal.example'] },
        { name: 'two', protocol: 'http', url: 'http://127.0.0.1:2', hosts: ['API.internal.example:443'] },
      ],
      config: { listen: { api: '127.0.0.1:0', postgres: 'off', ssh: 'off', http: '127.0.0.1:0' } },
    })
    await assert.rejects(gw, /connections one and two both claim host "API\.internal\.example:443"/)
  })
})
