// kubectl's protobuf write bodies, read by the Kubernetes proxy: the envelope and the fields policy
// needs (ObjectMeta, a pod spec's Secret references), the same facts as from the JSON of the same
// object (hand-encoded here, and as the real API server encodes them in test/data/kube-protobuf.json),
// and every malformed form refused: truncated, trailing bytes, unknown wire types, overlong
// varints, singular fields given twice, duplicate map keys, invalid UTF-8, foreign encodings.

import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { readWriteBody } from '../proxies/kubernetes/body.js'
import { decodeEnvelope, KubeProtobufError } from '../proxies/kubernetes/protobuf.js'
import { REPO } from './helpers/gateway.js'
import { cat, enc, entry, envelope, lor, MAGIC, meta } from './helpers/kubepb.js'

/** A pod spec naming Secrets in every way a container can get one, in both encodings. */
const POD_SPEC_JSON = {
  volumes: [
    { name: 'a', secret: { secretName: 'vol-secret' } },
    { name: 'b', projected: { sources: [{ configMap: { name: 'cm' } }, { secret: { name: 'projected-secret' } }] } },
    { name: 'c', csi: { driver: 'x', nodePublishSecretRef: { name: 'csi-secret' } } },
    { name: 'd', emptyDir: {} },
  ],
  initContainers: [{ name: 'init', image: 'busybox', envFrom: [{ secretRef: { name: 'init-envfrom' } }] }],
  containers: [
    {
      name: 'c',
      image: 'busybox',
      env: [
        { name: 'P', valueFrom: { secretKeyRef: { name: 'env-secret', key: 'password' } } },
        { name: 'Q', value: 'plain' },
      ],
    },
  ],
  ephemeralContainers: [{ name: 'debug', image: 'busybox', envFrom: [{ secretRef: { name: 'ephemeral-secret' } }] }],
}
const POD_SPEC_PB = enc(
  [1, enc([1, 'a'], [2, enc([6, enc([1, 'vol-secret'])])])],
  [1, enc([1, 'b'], [2, enc([26, enc([1, enc([3, enc([1, lor('cm')])])], [1, enc([1, enc([1, lor('projected-secret')])])])])])],
  [1, enc([1, 'c'], [2, enc([28, enc([1, 'x'], [5, lor('csi-secret')])])])],
  [1, enc([1, 'd'], [2, enc([2, enc()])])],
  [20, enc([1, 'init'], [2, 'busybox'], [19, enc([3, enc([1, lor('init-envfrom')])])])],
  [
    2,
    enc(
      [1, 'c'],
      [2, 'busybox'],
      [7, enc([1, 'P'], [3, enc([4, enc([1, lor('env-secret')], [2, 'password'])])])],
      [7, enc([1, 'Q'], [2, 'plain'])],
    ),
  ],
  [34, enc([1, enc([1, 'debug'], [2, 'busybox'], [19, enc([3, enc([1, lor('ephemeral-secret')])])])])],
)
const ALL_REFS = ['csi-secret', 'env-secret', 'ephemeral-secret', 'init-envfrom', 'projected-secret', 'vol-secret']

const LABELS = { app: 'web', tier: 'front' }
const ANNOTATIONS = { owner: 'team-a', 'kubectl.kubernetes.io/last-applied-configuration': '{"data":{"password":"c2VjcmV0"}}' }

/** Same object, both encodings: [name, JSON, protobuf]. */
const SAME: [string, unknown, Buffer][] = [
  [
    'Pod',
    {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'web', namespace: 'default', labels: LABELS, annotations: ANNOTATIONS },
      spec: POD_SPEC_JSON,
    },
    envelope('v1', 'Pod', enc([1, meta('web', 'default', LABELS, ANNOTATIONS)], [2, POD_SPEC_PB])),
  ],
  [
    'Deployment',
    {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'web' },
      spec: { replicas: 1, template: { metadata: { labels: LABELS }, spec: POD_SPEC_JSON } },
    },
    envelope('apps/v1', 'Deployment', enc([1, meta('web', '')], [2, enc([3, enc([1, meta('', '', LABELS)], [2, POD_SPEC_PB])])])),
  ],
  [
    'CronJob',
    {
      apiVersion: 'batch/v1',
      kind: 'CronJob',
      metadata: { generateName: 'nightly-' },
      spec: { jobTemplate: { spec: { template: { spec: POD_SPEC_JSON } } } },
    },
    envelope(
      'batch/v1',
      'CronJob',
      enc([1, enc([1, ''], [2, 'nightly-'], [3, ''])], [2, enc([5, enc([2, enc([6, enc([2, POD_SPEC_PB])])])])]),
    ),
  ],
  [
    'ConfigMap',
    {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: 'settings', namespace: 'default', labels: LABELS },
      data: { secretName: 'not-a-ref' },
    },
    envelope('v1', 'ConfigMap', enc([1, meta('settings', 'default', LABELS)], [2, enc([1, 'secretName'], [2, 'not-a-ref'])])),
  ],
]

const facts = (body: Buffer, type: string, full = true): unknown => {
  const r = readWriteBody(body, type, full)
  assert.ok(r.ok, JSON.stringify(r))
  return { object: r.facts.object, secret_refs: r.facts.secret_refs }
}

const refused = (body: Buffer, why: RegExp): void => {
  const r = readWriteBody(body, 'application/vnd.kubernetes.protobuf', true)
  assert.ok(!r.ok && !r.opaque, `accepted: ${body.toString('hex')}`)
  assert.match(r.reason, why)
}

describe('protobuf write bodies', () => {
  test('policy sees the same object and Secret references from JSON and from protobuf', () => {
    for (const [name, json, pb] of SAME) {
      const fromJson = facts(Buffer.from(JSON.stringify(json)), 'application/json')
      const fromPb = facts(pb, 'application/vnd.kubernetes.protobuf')
      assert.deepEqual(fromPb, fromJson, name)
    }
    const pod = facts(SAME[0]?.[2] as Buffer, 'application/vnd.kubernetes.protobuf') as {
      object: Record<string, unknown>
      secret_refs: string[]
    }
    assert.deepEqual(pod.secret_refs, ALL_REFS)
    assert.deepEqual(pod.object, {
      kind: 'Pod',
      api_version: 'v1',
      name: 'web',
      namespace: 'default',
      labels: LABELS,
      annotations: { owner: 'team-a' },
    })
    assert.ok(!JSON.stringify(pod).includes('c2VjcmV0'), 'the last-applied copy (a Secret, data included) never reaches policy')
    assert.deepEqual(
      (facts(SAME[1]?.[2] as Buffer, 'application/vnd.kubernetes.protobuf') as { secret_refs: string[] }).secret_refs,
      ALL_REFS,
    )
    assert.deepEqual((facts(SAME[3]?.[2] as Buffer, 'application/vnd.kubernetes.protobuf') as { secret_refs: string[] }).secret_refs, [])
  })

  test('objects as the real API server encodes them (captured from kube-apiserver v1.34.3)', () => {
    const file = join(REPO, 'test', 'data', 'kube-protobuf.json')
    const fixtures = JSON.parse(readFileSync(file, 'utf8')) as { name: string; json: unknown; protobuf: string; secret_refs: string[] }[]
    assert.ok(fixtures.length >= 3)
    for (const f of fixtures) {
      const fromPb = facts(Buffer.from(f.protobuf, 'base64'), 'application/vnd.kubernetes.protobuf') as { secret_refs: string[] }
      assert.deepEqual(fromPb, facts(Buffer.from(JSON.stringify(f.json)), 'application/json'), f.name)
      assert.deepEqual(fromPb.secret_refs, f.secret_refs, f.name)
    }
  })

  test('patches and custom resources get the broader scan; protobuf is for whole objects only', () => {
    const patch = { spec: { template: { spec: { volumes: [{ name: 'x', secret: { secretName: 'sneaky' } }] } } } }
    assert.deepEqual(
      (facts(Buffer.from(JSON.stringify(patch)), 'application/strategic-merge-patch+json', false) as { secret_refs: string[] }).secret_refs,
      ['sneaky'],
    )
    const jsonPatch = [{ op: 'add', path: '/spec/volumes/-', value: { name: 'x', secret: { secretName: 'sneaky' } } }]
    assert.deepEqual(facts(Buffer.from(JSON.stringify(jsonPatch)), 'application/json-patch+json', false), {
      object: null,
      secret_refs: ['sneaky'],
    })
    const cr = {
      apiVersion: 'example.com/v1',
      kind: 'Workflow',
      metadata: { name: 'w' },
      spec: { deep: { secretRef: { name: 'cr-secret' } } },
    }
    assert.deepEqual((facts(Buffer.from(JSON.stringify(cr)), 'application/json') as { secret_refs: string[] }).secret_refs, ['cr-secret'])
    // No kind: the API server takes the endpoint's; the gateway cannot know the schema, so it scans.
    const kindless = { metadata: { name: 'p' }, spec: POD_SPEC_JSON }
    assert.deepEqual((facts(Buffer.from(JSON.stringify(kindless)), 'application/json') as { secret_refs: string[] }).secret_refs, ALL_REFS)
    const r = readWriteBody(SAME[0]?.[2] as Buffer, 'application/vnd.kubernetes.protobuf', false)
    assert.ok(!r.ok && !r.opaque)
    // A protobuf envelope under another content type is not read as something else.
    const disguised = readWriteBody(SAME[0]?.[2] as Buffer, 'application/octet-stream', true)
    assert.deepEqual(disguised, { ok: false, opaque: true })
  })

  test('every truncation of a valid body is refused', () => {
    // The envelope's last field is the object (Go writes empty encoding and type fields after it,
    // and a body without those is whole).
    const body = cat(MAGIC, enc([1, enc([1, 'v1'], [2, 'Pod'])], [2, enc([1, meta('web', 'default', LABELS)], [2, POD_SPEC_PB])]))
    for (let n = 0; n < body.length; n++) {
      const r = readWriteBody(body.subarray(0, n), 'application/vnd.kubernetes.protobuf', true)
      assert.ok(!r.ok, `a body cut at ${n} of ${body.length} bytes was read`)
    }
  })

  test('malformed envelopes are refused', () => {
    const raw = enc([1, meta('x', 'default')])
    refused(cat(Buffer.from('k8s\x01', 'latin1'), enc([1, enc([1, 'v1'], [2, 'Pod'])], [2, raw])), /magic/)
    refused(cat(envelope('v1', 'Pod', raw), Buffer.from([0x00])), /number 0/)
    refused(envelope('v1', 'Pod', raw, [[5, 'x']]), /unknown field 5/)
    refused(envelope('v1', 'Pod', raw, [[2, raw]]), /given twice/)
    refused(envelope('v1', 'Pod', raw, [[1, enc([1, 'v1'], [2, 'Secret'])]]), /given twice/)
    refused(cat(MAGIC, enc([1, enc([1, 'v1'], [2, 'Pod'])], [2, raw], [3, 'gzip'])), /content encoding/)
    refused(cat(MAGIC, enc([1, enc([1, 'v1'], [2, 'Pod'])], [2, raw], [4, 'application/json'])), /content encoding or type/)
    refused(cat(MAGIC, enc([2, raw])), /no type/)
    refused(envelope('', 'Pod', raw), /apiVersion and kind/)
    refused(envelope('v1', 'Pod', raw, [[1, enc([1, 'v1'], [3, 'x'])]]), /given twice|unknown field/)
  })

  test('malformed objects are refused: wire types, varints, duplicates, UTF-8', () => {
    const pod = (m: Uint8Array): Buffer => envelope('v1', 'Pod', enc([1, m]))
    // Start and end group (3, 4) and the unused wire types 6 and 7, in ObjectMeta.
    for (const wire of [3, 4, 6, 7]) refused(pod(cat(enc([1, 'x']), Buffer.from([(9 << 3) | wire]))), new RegExp(`wire type ${wire}`))
    // A tag in six bytes; a length above 2^32; a varint field of eleven bytes.
    refused(pod(cat(enc([1, 'x']), Buffer.from([0x8a, 0x80, 0x80, 0x80, 0x80, 0x00, 0x01, 0x41]))), /too long/)
    refused(pod(cat(Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x1f]), Buffer.from('x'))), /too long/)
    refused(pod(cat(enc([1, 'x']), Buffer.from([0x38, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]))), /too long/)
    // A name given twice (Go would take the last), a wrong wire type for it, metadata given twice.
    refused(pod(enc([1, 'a'], [1, 'b'])), /field 1 is given twice/)
    refused(pod(Buffer.from([0x08, 0x01])), /wrong wire type/)
    refused(envelope('v1', 'Pod', enc([1, meta('a', '')], [1, meta('b', '')])), /given twice/)
    refused(pod(enc([11, entry('app', 'a')], [11, entry('app', 'b')])), /key "app" twice/)
    refused(pod(enc([12, enc([1, 'k'], [2, 'v'], [3, 'x'])])), /map entry has an unknown field/)
    refused(pod(enc([1, Buffer.from([0x77, 0xff, 0x65])])), /UTF-8/)
    // A pod spec's own structure is read as strictly: two specs, two secret volume sources.
    refused(envelope('v1', 'Pod', enc([1, meta('p', '')], [2, POD_SPEC_PB], [2, POD_SPEC_PB])), /given twice/)
    refused(
      envelope('v1', 'Pod', enc([1, meta('p', '')], [2, enc([1, enc([1, 'a'], [2, enc([6, lor('x')], [6, lor('y')])])])])),
      /given twice/,
    )
  })

  test('the envelope reader itself', () => {
    const e = decodeEnvelope(envelope('apps/v1', 'Deployment', enc([1, meta('web', 'prod')])))
    assert.equal(e.apiVersion, 'apps/v1')
    assert.equal(e.kind, 'Deployment')
    assert.throws(() => decodeEnvelope(Buffer.from('{"kind":"Pod"}')), KubeProtobufError)
  })
})
