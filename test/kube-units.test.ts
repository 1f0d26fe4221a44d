// The Kubernetes proxy's pure parts: request paths read as the API server reads them
// (requestinfo.go), refusals for every form a second reader could split differently, and masking
// of Secret data in objects, lists, watch events and Tables.

import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { JsonMaskError, jsonMaskPlan, maskJson } from '../proxies/kit/index.js'
import { KubePathError, parseKubeRequest } from '../proxies/kubernetes/request.js'

type Row = [method: string, path: string, query: string, want: Partial<ReturnType<typeof parseKubeRequest>>]

const TABLE: Row[] = [
  ['GET', '/api', '', { resource_request: false, verb: 'get', path: '/api' }],
  ['GET', '/apis/apps', '', { resource_request: false, verb: 'get' }],
  ['GET', '/version', '', { resource_request: false, verb: 'get', path: '/version' }],
  ['GET', '/openapi/v3/apis/apps/v1', '', { resource_request: false, path: '/openapi/v3/apis/apps/v1' }],
  ['GET', '/api/v1', '', { resource_request: false }],
  ['GET', '/api/v1/namespaces', '', { verb: 'list', resource: 'namespaces', namespace: '', name: '' }],
  // A namespace object is "in" itself, as the API server reads it.
  ['GET', '/api/v1/namespaces/prod', '', { verb: 'get', resource: 'namespaces', namespace: 'prod', name: 'prod' }],
  ['DELETE', '/api/v1/namespaces/prod', '', { verb: 'delete', resource: 'namespaces', namespace: 'prod', name: 'prod' }],
  ['PUT', '/api/v1/namespaces/prod/finalize', '', { verb: 'update', resource: 'namespaces', name: 'prod', subresource: 'finalize' }],
  ['GET', '/api/v1/namespaces/prod/pods', '', { verb: 'list', resource: 'pods', namespace: 'prod' }],
  ['GET', '/api/v1/namespaces/prod/pods', 'watch=true', { verb: 'watch', resource: 'pods' }],
  ['GET', '/api/v1/namespaces/prod/pods', 'watch=1', { verb: 'watch' }],
  ['GET', '/api/v1/namespaces/prod/pods', 'watch=yes', { verb: 'watch' }],
  ['GET', '/api/v1/namespaces/prod/pods', 'watch=', { verb: 'watch' }],
  ['GET', '/api/v1/namespaces/prod/pods', 'watch=FALSE', { verb: 'list' }],
  ['GET', '/api/v1/namespaces/prod/pods', 'watch=0&watch=true', { verb: 'list' }],
  ['GET', '/api/v1/namespaces/prod/pods', 'watch=%74rue', { verb: 'watch' }],
  ['GET', '/api/v1/namespaces/prod/secrets', 'fieldSelector=metadata.name%3Ddb', { verb: 'list', name: 'db' }],
  ['GET', '/api/v1/namespaces/prod/secrets', 'fieldSelector=metadata.name%3D%3Ddb&watch=true', { verb: 'watch', name: 'db' }],
  ['GET', '/api/v1/namespaces/prod/secrets', 'fieldSelector=metadata.name!%3Ddb', { verb: 'list', name: '' }],
  ['GET', '/api/v1/watch/namespaces/prod/pods', '', { verb: 'watch', resource: 'pods', namespace: 'prod' }],
  ['GET', '/api/v1/watch/namespaces/prod/pods/web', '', { verb: 'watch', name: 'web' }],
  ['GET', '/api/v1/pods', '', { verb: 'list', resource: 'pods', namespace: '' }],
  ['GET', '/api/v1/nodes/n1', '', { verb: 'get', resource: 'nodes', name: 'n1', namespace: '' }],
  ['GET', '/api/v1/namespaces/prod/pods/web/log', '', { verb: 'get', resource: 'pods', name: 'web', subresource: 'log' }],
  ['POST', '/api/v1/namespaces/prod/pods/web/exec', 'command=ls', { verb: 'create', subresource: 'exec', name: 'web' }],
  ['GET', '/api/v1/namespaces/prod/pods/web/exec', 'command=ls', { verb: 'get', subresource: 'exec' }],
  ['GET', '/api/v1/namespaces/prod/pods/web/portforward', 'ports=80', { verb: 'get', subresource: 'portforward' }],
  ['PATCH', '/api/v1/namespaces/prod/pods/web/status', '', { verb: 'patch', subresource: 'status' }],
  [
    'GET',
    '/api/v1/namespaces/prod/services/web/proxy/admin/x',
    '',
    { verb: 'get', resource: 'services', subresource: 'proxy', rest: ['admin', 'x'] },
  ],
  ['GET', '/api/v1/namespaces/prod/services/web:80/proxy/', '', { verb: 'get', name: 'web:80', subresource: 'proxy' }],
  ['GET', '/api/v1/proxy/namespaces/prod/services/web/x', '', { verb: 'proxy', resource: 'services', name: 'web', subresource: '' }],
  [
    'DELETE',
    '/apis/apps/v1/namespaces/prod/deployments/web',
    '',
    { verb: 'delete', group: 'apps', version: 'v1', resource: 'deployments', name: 'web' },
  ],
  ['DELETE', '/apis/apps/v1/namespaces/prod/deployments', '', { verb: 'deletecollection', group: 'apps' }],
  [
    'POST',
    '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings',
    '',
    { verb: 'create', group: 'rbac.authorization.k8s.io', resource: 'clusterrolebindings' },
  ],
  ['GET', '/apis/rbac.authorization.k8s.io/v1/clusterroles/system:aggregate-to-edit', '', { name: 'system:aggregate-to-edit' }],
  [
    'GET',
    '/apis/rbac.authorization.k8s.io/v1/clusterroles/system%3Aaggregate-to-edit',
    '',
    { name: 'system:aggregate-to-edit', path: '/apis/rbac.authorization.k8s.io/v1/clusterroles/system:aggregate-to-edit' },
  ],
  ['GET', '/api/v1/namespaces/prod/pods/', '', { verb: 'list', resource: 'pods', path: '/api/v1/namespaces/prod/pods' }],
  ['GET', '/api/v1/namespaces/prod/pods/%77eb', '', { name: 'web' }],
  ['POST', '/apis/authorization.k8s.io/v1/selfsubjectaccessreviews', '', { verb: 'create', resource: 'selfsubjectaccessreviews' }],
  ['OPTIONS', '/api/v1/pods', '', { verb: '', resource: 'pods' }],
]

const REFUSED: [string, string][] = [
  ['/api/v1/namespaces/prod/pods/web%2Fexec', 'encoded slash'],
  ['/api/v1/namespaces/prod/pods/web%2fexec', 'encoded slash, lower case'],
  ['/api/v1/namespaces/prod/secrets/..', 'dot-dot'],
  ['/api/v1/namespaces/prod/pods/../secrets', 'dot-dot in the middle'],
  ['/api/v1/namespaces/prod/pods/%2E%2E/secrets', 'encoded dot-dot'],
  ['/api/v1/namespaces/prod/pods/./x', 'dot'],
  ['/api//v1/pods', 'empty segment'],
  ['//api/v1/pods', 'leading empty segment'],
  ['/api/v1/namespaces/prod/pods/web%5Cexec', 'encoded backslash'],
  ['/api/v1/namespaces/prod/pods/web%00', 'encoded NUL'],
  ['/api/v1/namespaces/prod/pods/web%252Fexec', 'double encoding'],
  ['/api/v1/namespaces/prod/pods/web;x', 'semicolon'],
  ['/api/v1/namespaces/prod/pods/w%C3%A9b', 'non-ASCII'],
  ['/api/v1/namespaces/prod/pods/web%zz', 'malformed escape'],
  ['/api/v1/watch', 'special verb without a resource'],
]

describe('kube.request parsing', () => {
  for (const [method, path, query, want] of TABLE) {
    test(`${method} ${path}${query ? `?${query}` : ''}`, () => {
      const got = parseKubeRequest(method, path, query)
      for (const [k, v] of Object.entries(want)) assert.deepEqual(got[k as keyof typeof got], v, `${k} of ${method} ${path}?${query}`)
    })
  }
  for (const [path, why] of REFUSED) {
    test(`refused: ${why} (${path})`, () => {
      assert.throws(() => parseKubeRequest('GET', path, ''), KubePathError)
    })
  }
  test('a query Go would read differently is refused', () => {
    assert.throws(() => parseKubeRequest('GET', '/api/v1/pods', 'watch=false;x&watch=true'), KubePathError)
    assert.throws(() => parseKubeRequest('GET', '/api/v1/pods', 'watch=%zz'), KubePathError)
  })
})

describe("kube masking (the default policy's paths through the engine's JSON masker)", () => {
  const paths = ['$..data.*', '$..stringData.*', "$..annotations['kubectl.kubernetes.io/last-applied-configuration']"]
  const plan = jsonMaskPlan(paths.map((json_path) => ({ rule: 'kube-secret-data', column: '', json_path, strategy: 'null' as const })))
  assert.ok(plan)
  const key = Buffer.alloc(32, 7)
  const secret = (): Record<string, unknown> => ({
    metadata: {
      name: 'db',
      annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{"data":{"password":"aHVudGVyMg=="}}', keep: 'me' },
      managedFields: [{ fieldsV1: { 'f:data': { 'f:password': {} } } }],
    },
    data: { password: Buffer.from('hunter2').toString('base64') },
    stringData: { token: 'plain-token' },
    type: 'Opaque',
  })
  const mask = (doc: unknown, multiple = false): string =>
    maskJson(plan, key, Buffer.from(typeof doc === 'string' ? doc : JSON.stringify(doc)), { multiple }).body.toString()
  const clean = (out: string): void => {
    assert.doesNotMatch(out, /aHVudGVyMg|plain-token/)
    assert.match(out, /"keep":"me"/)
    assert.match(out, /"f:password"/)
  }
  test('an object, a list and a Table', () => {
    const one = mask({ kind: 'Secret', ...secret() })
    clean(one)
    assert.equal((JSON.parse(one) as { data: { password: unknown } }).data.password, null)
    clean(mask({ kind: 'SecretList', items: [secret(), secret()] }))
    clean(mask({ kind: 'Table', rows: [{ cells: ['db'], object: { kind: 'Secret', ...secret() } }] }))
  })
  test('a watch stream: one event after another, each from $', () => {
    const events = [
      { type: 'ADDED', object: { kind: 'Secret', ...secret() } },
      { type: 'MODIFIED', object: { kind: 'Secret', ...secret() } },
    ]
    const out = mask(`${events.map((e) => JSON.stringify(e)).join('\n')}\n`, true)
    clean(out)
    assert.equal(out.trim().split('\n').length, 2)
  })
  test('a body that is not JSON is refused, not passed', () => {
    assert.throws(() => mask('{"data": {"password": "aHVudGVy'), JsonMaskError)
  })
})
