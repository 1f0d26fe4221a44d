// The Kubernetes proxy against a real control plane (etcd and the kube-apiserver that setup
// builds) with the real kubectl, configured by `gatehouse kubeconfig`: reads, writes (kubectl 1.34
// sends built-in objects as protobuf), `auth can-i`, denials that kubectl prints with the gateway's
// reason, held deletes through the approval flow, the cluster's own audit log naming the
// impersonated caller, Secret data masked in get/-o yaml and watch (and never passed as protobuf),
// a read-only agent refused on every write route, pods that mount a Secret refused unless the
// caller may read it, exec/logs/port-forward decided and forwarded with the API server's answer
// reaching kubectl, paths parsed as the API server parses them, and a revoked token ending a live
// watch. test/run.sh starts this file once setup's background build of the binaries is over.

import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { request as httpsRequest } from 'node:https'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { Agent, fetch as undiciFetch } from 'undici'
import { readWriteBody } from '../proxies/kubernetes/body.js'
import { REPO, TestGateway } from './helpers/gateway.js'
import { KUBECTL, type KubeCluster, startKubeCluster, waitForKube } from './helpers/kube.js'

const SECRET_VALUE = 'hunter2-kube-secret-value'
const SECRET_B64 = Buffer.from(SECRET_VALUE).toString('base64')

const POLICY = `package gatehouse

deny contains {"rule": "no-kube-system", "reason": "kube-system is for cluster admins"} if {
	input.action == "kube.request"
	input.command.namespace == "kube-system"
	not member_of(admins)
}
`

const CLUSTER_RBAC = `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: { name: writers-admin }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin }
subjects:
  - { apiGroup: rbac.authorization.k8s.io, kind: Group, name: writers }
---
# Everyone may read everything (Secrets included: the gateway masks them). The built-in \`view\`
# role is aggregated by the controller manager, which this cluster does not run: it is empty here.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: reader }
rules:
  - { apiGroups: ["*"], resources: ["*"], verbs: [get, list, watch] }
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: { name: everyone-reads }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: reader }
subjects:
  - { apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:authenticated" }
---
apiVersion: v1
kind: Namespace
metadata: { name: prod }
---
apiVersion: v1
kind: Secret
metadata: { name: db, namespace: default }
stringData: { password: ${SECRET_VALUE} }
---
apiVersion: v1
kind: Pod
metadata: { name: web, namespace: default }
spec: { containers: [{ name: web, image: nginx }] }
`

interface Run {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

describe('Kubernetes proxy', () => {
  let dir = ''
  let cluster: KubeCluster
  let gw: TestGateway
  let port = 0
  let gwCa = ''
  let alice = ''
  let bob = ''
  let rita = ''
  let carol = ''
  const kubeconfigs = new Map<string, string>()

  /** kubectl as the holder of `token`, with the kubeconfig `gatehouse kubeconfig` writes. */
  const kubectl = (token: string, args: readonly string[], input?: string): Run => {
    let file = kubeconfigs.get(token)
    if (!file) {
      file = join(dir, `kubeconfig-${kubeconfigs.size}`)
      const r = gw.cli(['kubeconfig', '--connection', 'dev', '--token', token, '-o', file])
      assert.equal(r.code, 0, r.stderr)
      kubeconfigs.set(token, file)
    }
    const r = spawnSync(KUBECTL, ['--kubeconfig', file, ...args], {
      encoding: 'utf8',
      input,
      timeout: 120_000,
      env: { ...process.env, KUBECACHEDIR: join(dir, 'kubecache') },
    })
    return { code: r.status, stdout: r.stdout, stderr: r.stderr }
  }

  // Setup builds kube-apiserver and kubectl in the background: this waits for them.
  before(
    async () => {
      await waitForKube()
      dir = mkdtempSync(join(tmpdir(), 'gh-kube-'))
      cluster = await startKubeCluster(join(dir, 'cluster'))
      const rbac = cluster.admin(['apply', '-f', '-'], CLUSTER_RBAC)
      assert.equal(rbac.code, 0, rbac.stderr)
      const policyDir = join(dir, 'policies')
      cpSync(join(REPO, 'policies'), policyDir, { recursive: true })
      rmSync(join(policyDir, 'default.cases.yaml'), { force: true })
      writeFileSync(join(policyDir, 'kube_test_rules.rego'), POLICY)
      gw = await TestGateway.start({
        connections: [
          {
            name: 'dev',
            protocol: 'kubernetes',
            url: cluster.url,
            ca: cluster.ca,
            token: 'env:GH_TEST_KUBE_TOKEN',
            labels: { env: 'test' },
          },
        ],
        config: {
          listen: { api: '127.0.0.1:0', postgres: 'off', ssh: 'off', kubernetes: '127.0.0.1:0' },
          policies: policyDir,
          approvals: { timeout: '60s', request_ttl: '1h' },
        },
        env: { GH_TEST_KUBE_TOKEN: cluster.gatewayToken },
      })
      const run = JSON.parse(readFileSync(join(gw.dataDir, 'run.json'), 'utf8')) as { listeners: Record<string, string> }
      port = Number(run.listeners.kubernetes?.split(':').pop())
      gwCa = join(gw.dataDir, 'tls', 'cert.pem')
      alice = gw.token('user:alice', ['--group', 'writers'])
      bob = gw.token('user:bob', ['--group', 'dba'])
      rita = gw.token('user:rita')
      carol = gw.token('user:carol', ['--group', 'writers', '--group', 'secret-readers'])
    },
    { timeout: 45 * 60_000 },
  )

  after(async () => {
    await gw?.stop()
    await cluster?.stop()
    if (dir) rmSync(dir, { recursive: true, force: true })
  })

  test('kubectl reads through the gateway with the kubeconfig it writes', () => {
    const r = kubectl(rita, ['get', 'namespaces', '-o', 'name'])
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /namespace\/default/)
    assert.match(r.stdout, /namespace\/prod/)
    const cfg = readFileSync(kubeconfigs.get(rita) as string, 'utf8')
    assert.match(cfg, /kube-credential/)
    assert.doesNotMatch(cfg, new RegExp(cluster.gatewayToken), "the cluster's credential stays in the gateway")
  })

  test('writers apply and delete; a reader is refused with the reason', () => {
    const cm = 'apiVersion: v1\nkind: ConfigMap\nmetadata: { name: settings, namespace: default }\ndata: { color: blue }\n'
    const applied = kubectl(alice, ['apply', '-f', '-'], cm)
    assert.equal(applied.code, 0, applied.stderr)
    assert.match(applied.stdout, /configmap\/settings (created|configured)/)
    const denied = kubectl(rita, ['apply', '-f', '-'], cm.replace('blue', 'red'))
    assert.notEqual(denied.code, 0)
    assert.match(denied.stderr, /no rule allows kube\.request/)
    const kubeSystem = kubectl(alice, ['get', 'configmaps', '-n', 'kube-system'])
    assert.notEqual(kubeSystem.code, 0)
    assert.match(kubeSystem.stderr, /Forbidden.*kube-system is for cluster admins/)
    const described = kubectl(rita, ['describe', 'configmap', 'settings'])
    assert.equal(described.code, 0, described.stderr)
    assert.match(described.stdout, /blue/)
    const deleted = kubectl(alice, ['delete', 'configmap', 'settings'])
    assert.equal(deleted.code, 0, deleted.stderr)
    assert.equal(cluster.admin(['get', 'configmap', 'settings']).code, 1, 'deleted in the cluster')
  })

  test("kubectl auth can-i answers with the caller's own cluster rights (impersonation)", () => {
    const yes = kubectl(alice, ['auth', 'can-i', 'delete', 'pods'])
    assert.equal(yes.stdout.trim(), 'yes', yes.stderr)
    const no = kubectl(rita, ['auth', 'can-i', 'delete', 'pods'])
    assert.equal(no.stdout.trim(), 'no', no.stderr)
    const as = kubectl(alice, ['get', 'pods', '--as', 'system:admin'])
    assert.notEqual(as.code, 0, 'a caller cannot impersonate with the gateway credential')
    assert.match(as.stderr, /impersonation headers are set by the gateway/)
  })

  test("the cluster's audit log shows the gateway acting as the caller", () => {
    const events = cluster.audit()
    const mine = events.filter(
      (e) =>
        (e.user as { username?: string } | undefined)?.username === 'gatehouse' &&
        (e.impersonatedUser as { username?: string } | undefined)?.username === 'user:alice',
    )
    assert.ok(mine.length > 0, 'impersonated requests are audited by the API server')
    const imp = mine[0]?.impersonatedUser as { groups?: string[]; extra?: Record<string, string[]> }
    assert.ok(imp.groups?.includes('writers'))
    assert.deepEqual(imp.extra?.['gatehouse.dev/chain'], ['user:alice'])
  })

  test('deleting in namespace prod is held until a DBA approves, then runs once', () => {
    const created = kubectl(alice, ['create', 'configmap', 'release', '-n', 'prod', '--from-literal=v=1'])
    assert.equal(created.code, 0, created.stderr)
    const held = kubectl(alice, ['delete', 'configmap', 'release', '-n', 'prod'])
    assert.notEqual(held.code, 0)
    const m = /held for approval by dba \(request ([A-Za-z0-9_-]+)\)/.exec(held.stderr)
    assert.ok(m, held.stderr)
    assert.equal(cluster.admin(['get', 'configmap', 'release', '-n', 'prod']).code, 0, 'nothing ran')
    const ok = gw.cli(['approvals', 'approve', m[1] as string, '--token', bob])
    assert.equal(ok.code, 0, ok.stderr)
    const again = kubectl(alice, ['delete', 'configmap', 'release', '-n', 'prod'])
    assert.equal(again.code, 0, again.stderr)
    assert.equal(cluster.admin(['get', 'configmap', 'release', '-n', 'prod']).code, 1, 'deleted once approved')
  })

  test('Secret data is masked in get -o yaml, -o json and lists for a chain that is not cleared', () => {
    for (const args of [
      ['get', 'secret', 'db', '-o', 'yaml'],
      ['get', 'secret', 'db', '-o', 'json'],
      ['get', 'secrets', '-o', 'yaml'],
      ['get', '--raw', '/api/v1/namespaces/default/secrets/db'],
    ]) {
      const r = kubectl(alice, args)
      assert.equal(r.code, 0, r.stderr)
      assert.ok(!r.stdout.includes(SECRET_B64) && !r.stdout.includes(SECRET_VALUE), `${args.join(' ')} shows the secret`)
      assert.match(r.stdout, /password"?:\s?null/, `${args.join(' ')} shows the masked value as null`)
    }
    const cleared = kubectl(carol, ['get', 'secret', 'db', '-o', 'jsonpath={.data.password}'])
    assert.equal(cleared.code, 0, cleared.stderr)
    assert.equal(cleared.stdout, SECRET_B64, 'secret-readers see the data')
  })

  test('a watch on secrets shows masked data', async () => {
    const file = kubeconfigs.get(alice) as string
    const w = spawn(KUBECTL, ['--kubeconfig', file, 'get', 'secrets', '--watch', '-o', 'json'], {
      env: { ...process.env, KUBECACHEDIR: join(dir, 'kubecache') },
    })
    let out = ''
    w.stdout.on('data', (b: Buffer) => {
      out += b.toString()
    })
    try {
      for (let i = 0; i < 300 && !out.includes('"db"'); i++) await new Promise((r) => setTimeout(r, 100))
      assert.match(out, /"db"/, 'the watch listed the secret')
      const upd = cluster.admin(['patch', 'secret', 'db', '-p', `{"stringData":{"other":"${SECRET_VALUE}-2"}}`])
      assert.equal(upd.code, 0, upd.stderr)
      for (let i = 0; i < 300 && !out.includes('"other"'); i++) await new Promise((r) => setTimeout(r, 100))
      assert.match(out, /"other"/, 'the watch saw the update')
      assert.ok(!out.includes(SECRET_B64) && !out.includes(Buffer.from(`${SECRET_VALUE}-2`).toString('base64')))
    } finally {
      w.kill()
    }
  })

  test('a read-only agent cannot create, patch, delete, exec or proxy by any route', () => {
    const r = gw.cli(['token', 'delegate', '--agent', 'looker', '--token', rita, '--scope', 'connection:dev kube.request', '--json'])
    assert.equal(r.code, 0, r.stderr)
    const agent = (JSON.parse(r.stdout) as { access_token: string }).access_token
    assert.equal(kubectl(agent, ['get', 'pods']).code, 0)
    const attempts: (readonly string[])[] = [
      ['create', 'configmap', 'x', '--from-literal=a=b'],
      ['patch', 'secret', 'db', '-p', '{"metadata":{"labels":{"x":"y"}}}'],
      ['delete', 'secret', 'db'],
      ['delete', 'secrets', '--all'],
      ['label', 'namespace', 'default', 'x=y'],
      ['exec', 'web', '--', 'ls'],
      ['get', '--raw', '/api/v1/namespaces/default/services/kubernetes/proxy/'],
      ['get', '--raw', '/api/v1/namespaces/default/pods/nopod/proxy/x'],
      ['create', '--raw', '/api/v1/namespaces/default/configmaps', '-f', '-'],
      // protobuf (create, replace), server-side apply (YAML), a merge patch, the old proxy prefix
      ['create', '-f', '-'],
      ['replace', '-f', '-'],
      ['apply', '--server-side', '-f', '-'],
      ['annotate', 'pod', 'web', 'x=y'],
      ['get', '--raw', '/api/v1/proxy/namespaces/default/services/kubernetes/'],
    ]
    for (const args of attempts) {
      const res = kubectl(agent, args, '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"raw"}}')
      assert.notEqual(res.code, 0, `${args.join(' ')} ran: ${res.stdout}`)
      assert.match(res.stderr, /gatehouse|Forbidden/, args.join(' '))
    }
    assert.equal(cluster.admin(['get', 'secret', 'db', '-o', 'jsonpath={.metadata.labels.x}']).stdout, '')
    assert.equal(cluster.admin(['get', 'configmap', 'x']).code, 1)
    assert.equal(cluster.admin(['get', 'configmap', 'raw']).code, 1)
  })

  test('a pod that mounts a Secret is refused unless the caller may read it', () => {
    const pod = (name: string): string =>
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name, namespace: 'default' },
        spec: {
          containers: [{ name: 'c', image: 'busybox', env: [{ name: 'P', valueFrom: { secretKeyRef: { name: 'db', key: 'password' } } }] }],
        },
      })
    const denied = kubectl(alice, ['apply', '-f', '-'], pod('leaky'))
    assert.notEqual(denied.code, 0)
    assert.match(denied.stderr, /this Pod uses Secret db; mounting a Secret needs group secret-readers/)
    const created = kubectl(alice, ['create', '-f', '-'], pod('leaky'))
    assert.notEqual(created.code, 0)
    assert.match(created.stderr, /this Pod uses Secret db; mounting a Secret needs group secret-readers/)
    const allowed = kubectl(carol, ['apply', '-f', '-'], pod('trusted'))
    assert.equal(allowed.code, 0, allowed.stderr)
    assert.equal(cluster.admin(['get', 'pod', 'leaky']).code, 1, 'nothing was created')
  })

  test('protobuf writes (kubectl create job, create configmap): a Job whose pods mount a Secret is refused unless the caller may read it', async () => {
    // kubectl's typed commands send protobuf (create -f and apply send JSON): a Job copied from a
    // CronJob whose pods take a Secret into their environment.
    const cron = `apiVersion: batch/v1
kind: CronJob
metadata: { name: nightly, namespace: default }
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          volumes: [{ name: s, secret: { secretName: db } }]
          containers: [{ name: c, image: busybox, envFrom: [{ secretRef: { name: db } }] }]
`
    assert.equal(cluster.admin(['apply', '-f', '-'], cron).code, 0)
    const denied = kubectl(alice, ['create', 'job', 'copied', '--from=cronjob/nightly'])
    assert.notEqual(denied.code, 0)
    assert.match(denied.stderr, /this Job uses Secret db; mounting a Secret needs group secret-readers/)
    assert.equal(cluster.admin(['get', 'job', 'copied']).code, 1, 'nothing was created')
    const allowed = kubectl(carol, ['create', 'job', 'copied', '--from=cronjob/nightly'])
    assert.equal(allowed.code, 0, allowed.stderr)
    const cm = kubectl(alice, ['create', 'configmap', 'plain', '--from-literal=a=b'])
    assert.equal(cm.code, 0, cm.stderr)
    const writes = gw
      .auditEvents()
      .filter(
        (e) => e.type === 'statement' && e.verb === 'create' && ['copied', 'plain'].includes(String((e.object as { name?: string })?.name)),
      )
    assert.deepEqual(
      writes.map((e) => [e.resource, e.body_format, e.decision]),
      [
        ['jobs', 'protobuf', 'deny'],
        ['jobs', 'protobuf', 'allow'],
        ['configmaps', 'protobuf', 'allow'],
      ],
      'kubectl sent these as protobuf',
    )
    // The same objects as the API server encodes them: the gateway reads the same facts from either.
    for (const [path, refs] of [
      ['/apis/batch/v1/namespaces/default/jobs/copied', ['db']],
      ['/apis/batch/v1/namespaces/default/cronjobs/nightly', ['db']],
      ['/api/v1/namespaces/default/pods/trusted', ['db']],
      ['/api/v1/namespaces/default/configmaps/plain', []],
    ] as const) {
      const pb = await cluster.get(path, 'application/vnd.kubernetes.protobuf')
      const json = await cluster.get(path, 'application/json')
      assert.match(pb.type, /protobuf/)
      const a = readWriteBody(pb.body, pb.type, true)
      const b = readWriteBody(json.body, json.type, true)
      assert.ok(a.ok && b.ok, path)
      assert.deepEqual([a.facts.object, a.facts.secret_refs], [b.facts.object, b.facts.secret_refs], path)
      assert.deepEqual(a.facts.secret_refs, refs, path)
    }
  })

  test('a Secret asked for as protobuf comes back as masked JSON for a chain that is not cleared', async () => {
    const agent = new Agent({ connect: { ca: readFileSync(gwCa, 'utf8') } })
    const get = async (path: string, token: string, accept: string): Promise<{ status: number; type: string; body: Buffer }> => {
      const ac = new AbortController()
      const r = await undiciFetch(`https://localhost:${port}/c/dev${path}`, {
        dispatcher: agent,
        headers: { authorization: `Bearer ${token}`, accept },
        signal: ac.signal,
      })
      const reader = r.body?.getReader()
      const chunks: Buffer[] = []
      // A watch never ends: its first events are enough.
      for (let i = 0; i < 50 && reader; i++) {
        const c = await Promise.race([reader.read(), new Promise<null>((res) => setTimeout(() => res(null), 1500))])
        if (c === null || c.done) break
        chunks.push(Buffer.from(c.value))
      }
      ac.abort()
      return { status: r.status, type: r.headers.get('content-type') ?? '', body: Buffer.concat(chunks) }
    }
    const pb = 'application/vnd.kubernetes.protobuf'
    for (const [path, accept] of [
      ['/api/v1/namespaces/default/secrets/db', pb],
      ['/api/v1/namespaces/default/secrets', `${pb}, application/json`],
      // From the watch cache's current state (a watch from "now" may wait on a lagging cache).
      ['/api/v1/namespaces/default/secrets?watch=true&resourceVersion=0', `${pb};stream=watch`],
    ] as const) {
      const r = await get(path, alice, accept)
      assert.equal(r.status, 200, path)
      assert.match(r.type, /^application\/json/, path)
      assert.ok(!r.body.includes(SECRET_VALUE) && !r.body.includes(SECRET_B64), `${path} passed the secret`)
      assert.match(r.body.toString(), /"password":null/, path)
    }
    // A cleared chain gets what it asked for.
    const cleared = await get('/api/v1/namespaces/default/secrets/db', carol, pb)
    assert.match(cleared.type, /protobuf/)
    assert.ok(cleared.body.includes(SECRET_VALUE))
    await agent.close()
  })

  /** A stream request (WebSocket, or SPDY when `protocol` is null) sent by hand through the gateway. */
  const upgradeRequest = (path: string, token: string, protocol: string | null): Promise<{ status: number; body: string }> =>
    new Promise((resolve, reject) => {
      const req = httpsRequest({
        host: 'localhost',
        port,
        path,
        method: protocol ? 'GET' : 'POST',
        ca: readFileSync(gwCa, 'utf8'),
        headers: {
          authorization: `Bearer ${token}`,
          connection: 'Upgrade',
          ...(protocol
            ? {
                upgrade: 'websocket',
                'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
                'sec-websocket-version': '13',
                'sec-websocket-protocol': protocol,
              }
            : { upgrade: 'SPDY/3.1', 'x-stream-protocol-version': 'v4.channel.k8s.io', 'content-length': '0' }),
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

  test("exec, logs and port-forward are decided, audited and forwarded; the API server's answer reaches kubectl", async () => {
    // Pod web has no node (there is no kubelet): the API server refuses to stream, and says why.
    const ex = kubectl(alice, ['exec', 'web', '--', 'cat', '/etc/hostname'])
    assert.notEqual(ex.code, 0)
    // No kubelet: the API server itself answers that the pod has no node.
    assert.match(ex.stderr, /does not have a host assigned|not found|no host/i, ex.stderr)
    // Logs of a pod that never ran: the API server answers 204, and kubectl prints nothing.
    const logs = kubectl(alice, ['logs', 'web'])
    assert.equal(logs.code, 0, logs.stderr)
    assert.equal(logs.stdout, '')
    // kubectl port-forward waits for a running pod first, so the stream request is sent by hand.
    const pf = await upgradeRequest(`/c/dev/api/v1/namespaces/default/pods/web/portforward?ports=8080`, alice, 'portforward.k8s.io')
    assert.equal(pf.status, 400, pf.body)
    assert.match(pf.body, /does not have a host assigned/)
    const events = gw.auditEvents().filter((e) => e.type === 'statement' && e.action === 'kube.request')
    const exec = events.find((e) => e.subresource === 'exec' && e.decision === 'allow')
    assert.ok(exec, 'exec was decided')
    assert.deepEqual(exec.argv, ['cat', '/etc/hostname'])
    const log = events.find((e) => e.subresource === 'log')
    assert.equal(log?.decision, 'allow')
    const forward = events.find((e) => e.subresource === 'portforward')
    assert.deepEqual(forward?.ports, [8080])
    const opaque = kubectl(gw.cli(['token', 'delegate', '--agent', 'runner', '--token', alice]).stdout.trim(), [
      'exec',
      'web',
      '--',
      'sh',
      '-c',
      'cat /etc/*',
    ])
    assert.notEqual(opaque.code, 0)
    assert.match(opaque.stderr, /agents run plain commands only/)
  })

  test('paths are decided as the API server routes them (its own audit agrees)', async () => {
    const agent = new Agent({ connect: { ca: readFileSync(gwCa, 'utf8') } })
    const get = async (path: string): Promise<number> => {
      const r = await undiciFetch(`https://localhost:${port}/c/dev${path}`, {
        dispatcher: agent,
        headers: { authorization: `Bearer ${alice}` },
      })
      await r.text()
      return r.status
    }
    const cases: [
      string,
      { verb: string; resource: string; namespace?: string; name?: string; subresource?: string; apiGroup?: string },
    ][] = [
      ['/api/v1/namespaces/prod', { verb: 'get', resource: 'namespaces', namespace: 'prod', name: 'prod' }],
      ['/api/v1/namespaces/default/pods?watch=false&limit=1', { verb: 'list', resource: 'pods', namespace: 'default' }],
      [
        '/api/v1/namespaces/default/pods/web/status',
        { verb: 'get', resource: 'pods', namespace: 'default', name: 'web', subresource: 'status' },
      ],
      [
        '/apis/rbac.authorization.k8s.io/v1/clusterroles/system%3Aaggregate-to-view',
        { verb: 'get', resource: 'clusterroles', name: 'system:aggregate-to-view', apiGroup: 'rbac.authorization.k8s.io' },
      ],
      [
        '/api/v1/namespaces/default/configmaps?fieldSelector=metadata.name%3Dkube-root-ca.crt',
        { verb: 'list', resource: 'configmaps', namespace: 'default', name: 'kube-root-ca.crt' },
      ],
      ['/api/v1/namespaces/default/pods/%77eb', { verb: 'get', resource: 'pods', namespace: 'default', name: 'web' }],
      ['/api/v1/nodes/', { verb: 'list', resource: 'nodes' }],
    ]
    for (const [path] of cases) {
      assert.equal(await get(path), 200, path)
    }
    // (Dot segments are refused too, kube-gateway.test.ts: fetch would resolve them before sending.)
    for (const bad of ['/api/v1/namespaces/default/pods/web%2Fexec', '/api//v1/pods']) {
      assert.equal(await get(bad), 400, bad)
    }
    await agent.close()
    // The API server's audit of what the gateway forwarded agrees with what the gateway decided.
    const ours = gw.auditEvents().filter((e) => e.type === 'statement' && e.action === 'kube.request')
    const theirs = cluster.audit().filter((e) => e.stage === 'ResponseComplete')
    for (const [, want] of cases) {
      const o = ours.find(
        (e) =>
          e.verb === want.verb &&
          e.resource === want.resource &&
          e.name === (want.name ?? '') &&
          e.subresource === (want.subresource ?? ''),
      )
      assert.ok(o, `gateway decided ${JSON.stringify(want)}`)
      const t = theirs.find((e) => {
        const ref = (e.objectRef ?? {}) as Record<string, string | undefined>
        return (
          e.verb === want.verb &&
          ref.resource === want.resource &&
          (ref.namespace ?? '') === (want.namespace ?? '') &&
          (ref.name ?? '') === (want.name ?? '') &&
          (ref.subresource ?? '') === (want.subresource ?? '') &&
          (ref.apiGroup ?? '') === (want.apiGroup ?? '') &&
          (e.impersonatedUser as { username?: string } | undefined)?.username === 'user:alice'
        )
      })
      assert.ok(t, `the API server read ${JSON.stringify(want)} the same way`)
    }
  })

  test('revoking a token ends a live watch within a second', async () => {
    const r = gw.cli(['token', 'delegate', '--agent', 'watcher', '--token', alice, '--json'])
    assert.equal(r.code, 0, r.stderr)
    const d = JSON.parse(r.stdout) as { access_token: string; token_id: string }
    // The watch's first event is this object's ADDED (an empty namespace would send nothing yet).
    assert.equal(cluster.admin(['create', 'configmap', 'watched', '--from-literal=a=b']).code, 0)
    const agent = new Agent({ connect: { ca: readFileSync(gwCa, 'utf8') } })
    const res = await undiciFetch(`https://localhost:${port}/c/dev/api/v1/namespaces/default/configmaps?watch=true`, {
      dispatcher: agent,
      headers: { authorization: `Bearer ${d.access_token}` },
    })
    assert.equal(res.status, 200)
    const reader = res.body?.getReader()
    assert.ok(reader)
    const first = await reader.read()
    assert.ok(!first.done, 'the watch sent its first events')
    const ended = (async (): Promise<number> => {
      try {
        for (;;) if ((await reader.read()).done) break
      } catch {
        // the connection was closed under the stream
      }
      return Date.now()
    })()
    const rv = gw.cli(['token', 'revoke', d.token_id])
    assert.equal(rv.code, 0, rv.stderr)
    const revokedAt = Date.now()
    const at = await Promise.race([ended, new Promise<number>((r2) => setTimeout(() => r2(-1), 5000))])
    await agent.close()
    assert.ok(at > 0, 'the watch did not end')
    assert.ok(at - revokedAt < 1000, `ended ${at - revokedAt} ms after the revocation answered`)
  })
})
