// The Kubernetes proxy's gateway side, where no API server is involved: everything here is refused
// or answered before anything is forwarded (the connection's API server is an address nobody
// listens on, so a request that was forwarded shows as 502). Login, Status answers kubectl
// prints, impersonation headers from the caller refused, ambiguous paths refused, denials with the
// policy's reason, held deletes through the approval flow, the audit, and the kubeconfig and
// ExecCredential that kubectl reads. test/kube-proxy.test.ts runs the same proxy against a real
// kube-apiserver and kubectl.

import assert from 'node:assert/strict'
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { request as httpsRequest } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import yaml from 'js-yaml'
import { Agent, fetch as undiciFetch } from 'undici'
import { REPO, TestGateway } from './helpers/gateway.js'
import { freePort } from './helpers/httpd.js'
import { enc, envelope, lor, meta } from './helpers/kubepb.js'

const POLICY = `package gatehouse

deny contains {"rule": "no-kube-system", "reason": "kube-system is for cluster admins"} if {
	input.action == "kube.request"
	input.command.namespace == "kube-system"
}

deny contains {"rule": "echo", "reason": sprintf("saw %s %s", [json.marshal(input.command.object), json.marshal(input.command.secret_refs)])} if {
	input.action == "kube.request"
	input.command.namespace == "echo"
}
`

interface Answer {
  readonly status: number
  readonly body: Record<string, unknown>
  readonly headers: Headers
}

describe('Kubernetes proxy (gateway side)', () => {
  let dir = ''
  let gw: TestGateway
  let port = 0
  let agent: Agent
  let alice = ''
  let bob = ''
  let rita = ''

  const call = async (
    path: string,
    token: string | null,
    init: { method?: string; headers?: Record<string, string>; body?: string | Uint8Array } = {},
  ): Promise<Answer> => {
    const r = await undiciFetch(`https://localhost:${port}${path}`, {
      dispatcher: agent,
      method: init.method ?? 'GET',
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...init.headers },
      ...(init.body !== undefined ? { body: init.body } : {}),
    })
    const text = await r.text()
    return { status: r.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {}, headers: r.headers }
  }

  /** A request with its target exactly as written, on a connection of its own. */
  const raw = (path: string, token: string): Promise<{ status: number; body: string }> =>
    new Promise((resolve, reject) => {
      const req = httpsRequest({
        host: 'localhost',
        port,
        path,
        agent: false,
        ca: readFileSync(join(gw.dataDir, 'tls', 'cert.pem'), 'utf8'),
        headers: { authorization: `Bearer ${token}` },
      })
      req.on('response', (res) => {
        let body = ''
        res.on('data', (c: Buffer) => {
          body += c.toString()
        })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      })
      req.on('error', reject)
      req.end()
    })

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gh-kubegw-'))
    const policyDir = join(dir, 'policies')
    cpSync(join(REPO, 'policies'), policyDir, { recursive: true })
    rmSync(join(policyDir, 'default.cases.yaml'), { force: true })
    writeFileSync(join(policyDir, 'kube_test_rules.rego'), POLICY)
    const nobody = await freePort()
    gw = await TestGateway.start({
      connections: [{ name: 'dev', protocol: 'kubernetes', url: `https://127.0.0.1:${nobody}`, token: 'env:GH_TEST_KUBE_TOKEN' }],
      config: {
        listen: { api: '127.0.0.1:0', postgres: 'off', ssh: 'off', kubernetes: '127.0.0.1:0' },
        policies: policyDir,
        approvals: { timeout: '60s', request_ttl: '1h' },
      },
      env: { GH_TEST_KUBE_TOKEN: 'cluster-token-never-shown-0123456789' },
    })
    const run = JSON.parse(readFileSync(join(gw.dataDir, 'run.json'), 'utf8')) as { listeners: Record<string, string> }
    port = Number(run.listeners.kubernetes?.split(':').pop())
    // No keep-alive: a CLI call between two requests may outlast the server's idle timeout.
    agent = new Agent({ connect: { ca: readFileSync(join(gw.dataDir, 'tls', 'cert.pem'), 'utf8') }, pipelining: 0 })
    alice = gw.token('user:alice', ['--group', 'writers'])
    bob = gw.token('user:bob', ['--group', 'dba'])
    rita = gw.token('user:rita')
  })

  after(async () => {
    await agent?.close()
    await gw?.stop()
    if (dir) rmSync(dir, { recursive: true, force: true })
  })

  test('no token: 401 with a Status and WWW-Authenticate; a bad token: 401', async () => {
    const none = await call('/c/dev/api/v1/pods', null)
    assert.equal(none.status, 401)
    assert.equal(none.body.kind, 'Status')
    assert.equal(none.body.reason, 'Unauthorized')
    assert.match(String(none.headers.get('www-authenticate')), /Bearer realm="gatehouse"/)
    assert.equal((await call('/c/dev/api/v1/pods', 'not-a-token')).status, 401)
    assert.equal((await call('/c/nope/api/v1/pods', alice)).status, 404)
    assert.equal((await call('/api/v1/pods', alice)).status, 404)
  })

  test("a denial is a Status kubectl prints with the policy's reason; nothing is forwarded", async () => {
    const r = await call('/c/dev/api/v1/namespaces/kube-system/secrets', alice)
    assert.equal(r.status, 403)
    assert.deepEqual(
      [r.body.kind, r.body.apiVersion, r.body.status, r.body.reason, r.body.code],
      ['Status', 'v1', 'Failure', 'Forbidden', 403],
    )
    assert.equal(r.body.message, 'gatehouse: kube-system is for cluster admins')
    const w = await call('/c/dev/api/v1/namespaces/default/configmaps', rita, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'x' } }),
    })
    assert.equal(w.status, 403)
    assert.match(String(w.body.message), /no rule allows kube\.request/)
    // Allowed requests are forwarded: here to an address nobody listens on.
    const ok = await call('/c/dev/api/v1/namespaces/default/pods', rita)
    assert.equal(ok.status, 502)
    assert.equal(ok.body.kind, 'Status')
  })

  test('policy sees the same input for a JSON body and a protobuf body of the same object; malformed protobuf is refused', async () => {
    const json = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'p', namespace: 'echo', labels: { app: 'web' } },
      spec: { containers: [{ name: 'c', image: 'busybox', env: [{ name: 'P', valueFrom: { secretKeyRef: { name: 'db', key: 'k' } } }] }] },
    }
    const pb = envelope(
      'v1',
      'Pod',
      enc(
        [1, meta('p', 'echo', { app: 'web' })],
        [2, enc([2, enc([1, 'c'], [2, 'busybox'], [7, enc([1, 'P'], [3, enc([4, enc([1, lor('db')], [2, 'k'])])])])])],
      ),
    )
    const path = '/c/dev/api/v1/namespaces/echo/pods'
    const a = await call(path, alice, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(json) })
    const b = await call(path, alice, { method: 'POST', headers: { 'content-type': 'application/vnd.kubernetes.protobuf' }, body: pb })
    assert.equal(a.status, 403)
    assert.match(String(a.body.message), /saw .*"name":"p".*\["db"\]/)
    assert.equal(b.body.message, a.body.message, 'the decision input does not depend on the encoding')
    const formats = gw
      .auditEvents()
      .filter((e) => e.type === 'statement' && e.namespace === 'echo')
      .map((e) => e.body_format)
    assert.deepEqual(formats, ['json', 'protobuf'])
    // Cut short, or with a second object after the first: refused before any decision or forwarding.
    for (const bad of [pb.subarray(0, pb.length - 7), Buffer.concat([pb, enc([2, enc([1, meta('q', 'echo')])])])]) {
      const r = await call(path, alice, { method: 'POST', headers: { 'content-type': 'application/vnd.kubernetes.protobuf' }, body: bad })
      assert.equal(r.status, 400)
      assert.match(String(r.body.message), /the protobuf body cannot be read/)
    }
  })

  test('impersonation headers from the caller are refused (they would act with the gateway credential)', async () => {
    for (const h of ['Impersonate-User', 'Impersonate-Group', 'Impersonate-Uid', 'Impersonate-Extra-scopes']) {
      const r = await call('/c/dev/api/v1/pods', alice, { headers: { [h]: 'system:admin' } })
      assert.equal(r.status, 403, h)
      assert.match(String(r.body.message), /impersonation headers are set by the gateway/)
    }
  })

  test('paths another reader could split differently are refused before any decision', async () => {
    for (const p of [
      '/api/v1/namespaces/default/pods/web%2Fexec',
      '/api/v1/namespaces/default/pods/../secrets',
      '/api/v1/namespaces/default/pods/%2e%2e/secrets',
      '/api//v1/pods',
      '/api/v1/namespaces/default/pods/web;x',
      '/api/v1/namespaces/default/pods/web%252F',
    ]) {
      // Sent as written (fetch would resolve the dot segments itself).
      const r = await raw(`/c/dev${p}`, alice)
      assert.equal(r.status, 400, p)
      assert.equal((JSON.parse(r.body) as { kind: string }).kind, 'Status')
    }
    assert.equal((await raw('/c/dev/api/v1/pods?watch=false;x', alice)).status, 400)
  })

  test('a delete in namespace prod is held, then runs once approved', async () => {
    const held = await call('/c/dev/apis/apps/v1/namespaces/prod/deployments/web', alice, { method: 'DELETE' })
    assert.equal(held.status, 403)
    const m = /held for approval by dba \(request ([A-Za-z0-9_-]+)\)/.exec(String(held.body.message))
    assert.ok(m, String(held.body.message))
    assert.equal(held.headers.get('gatehouse-approval-request'), m[1])
    const again = await call('/c/dev/apis/apps/v1/namespaces/prod/deployments/web', alice, { method: 'DELETE' })
    assert.equal(again.status, 403, 'still held until approved')
    const ok = gw.cli(['approvals', 'approve', m[1] as string, '--token', bob])
    assert.equal(ok.code, 0, ok.stderr)
    const run = await call('/c/dev/apis/apps/v1/namespaces/prod/deployments/web', alice, { method: 'DELETE' })
    assert.equal(run.status, 502, 'forwarded once approved (to nobody here)')
  })

  test('exec is decided on its argv; an agent may not run sh -c; SPDY and WebSocket alike', async () => {
    const d = gw.cli(['token', 'delegate', '--agent', 'runner', '--token', alice])
    assert.equal(d.code, 0, d.stderr)
    const agentToken = d.stdout.trim()
    const upgrade = (path: string, token: string, ws: boolean): Promise<{ status: number; body: string }> =>
      new Promise((resolve, reject) => {
        const req = httpsRequest({
          host: 'localhost',
          port,
          path,
          method: ws ? 'GET' : 'POST',
          agent: false,
          ca: readFileSync(join(gw.dataDir, 'tls', 'cert.pem'), 'utf8'),
          headers: {
            authorization: `Bearer ${token}`,
            connection: 'Upgrade',
            ...(ws
              ? {
                  upgrade: 'websocket',
                  'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
                  'sec-websocket-version': '13',
                  'sec-websocket-protocol': 'v5.channel.k8s.io',
                }
              : { upgrade: 'SPDY/3.1', 'x-stream-protocol-version': 'v4.channel.k8s.io' }),
          },
        })
        req.on('response', (res) => {
          let body = ''
          res.on('data', (c: Buffer) => {
            body += c.toString()
          })
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
        })
        req.on('upgrade', (res, socket) => {
          socket.destroy()
          resolve({ status: res.statusCode ?? 101, body: '' })
        })
        req.on('error', reject)
        req.end()
      })
    for (const ws of [true, false]) {
      const opaque = await upgrade(
        '/c/dev/api/v1/namespaces/default/pods/web/exec?command=sh&command=-c&command=cat%20/etc/*&stdout=true',
        agentToken,
        ws,
      )
      assert.equal(opaque.status, 403)
      assert.match(opaque.body, /agents run plain commands only/)
      const reader = await upgrade('/c/dev/api/v1/namespaces/default/pods/web/exec?command=ls&stdout=true', rita, ws)
      assert.equal(reader.status, 403, 'exec is not a read')
    }
    const events = gw.auditEvents().filter((e) => e.type === 'statement' && e.action === 'kube.request' && e.subresource === 'exec')
    assert.ok(events.some((e) => JSON.stringify(e.argv) === JSON.stringify(['sh', '-c', 'cat /etc/*']) && e.decision === 'deny'))
  })

  test('every request is audited with what the API server would read; the cluster token is nowhere', async () => {
    const events = gw.auditEvents().filter((e) => e.type === 'statement' && e.action === 'kube.request')
    const del = events.find((e) => e.verb === 'delete' && e.namespace === 'prod')
    assert.ok(del)
    assert.deepEqual([del.group, del.version, del.resource, del.name], ['apps', 'v1', 'deployments', 'web'])
    const create = events.find((e) => e.verb === 'create' && e.resource === 'configmaps')
    assert.deepEqual(create?.object, { kind: 'ConfigMap', api_version: 'v1', name: 'x' })
    const all = gw.cli(['audit', 'list', '--json']).stdout
    assert.doesNotMatch(all, /cluster-token-never-shown/)
  })

  test('gatehouse kubeconfig and kube-credential give kubectl what it reads', () => {
    const r = gw.cli(['kubeconfig', '--connection', 'dev'])
    assert.equal(r.code, 0, r.stderr)
    const cfg = yaml.load(r.stdout) as {
      clusters: { cluster: { server: string; 'certificate-authority-data': string } }[]
      users: { user: { exec: { command: string; args: string[]; apiVersion: string } } }[]
      'current-context': string
    }
    assert.equal(cfg.clusters[0]?.cluster.server, `https://localhost:${port}/c/dev`)
    assert.equal(
      Buffer.from(cfg.clusters[0]?.cluster['certificate-authority-data'] ?? '', 'base64').toString(),
      readFileSync(join(gw.dataDir, 'tls', 'cert.pem'), 'utf8'),
    )
    const exec = cfg.users[0]?.user.exec
    assert.equal(exec?.apiVersion, 'client.authentication.k8s.io/v1')
    assert.deepEqual(exec?.args.slice(1, 2), ['kube-credential'])
    const cred = gw.cli(['kube-credential'], { GATEHOUSE_TOKEN: alice })
    assert.equal(cred.code, 0, cred.stderr)
    const ec = JSON.parse(cred.stdout) as { kind: string; status: { token: string; expirationTimestamp: string } }
    assert.equal(ec.kind, 'ExecCredential')
    assert.equal(ec.status.token, alice)
    assert.ok(Date.parse(ec.status.expirationTimestamp) > Date.now())
    assert.notEqual(gw.cli(['kubeconfig', '--connection', 'nope']).code, 0)
  })
})
