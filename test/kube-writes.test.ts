// What a write's body and an exec's argv tell the Kubernetes policy, for the routes an outside
// tester used to get past it: a JSON patch that names a Secret in its paths or copies a name into
// a Secret reference, a patch that copies, moves or tests a Secret's data, YAML merge keys that
// the API server applies, programs that run other programs, and attach.

import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { COPIED_SECRET_REF, readWriteBody } from '../proxies/kubernetes/body.js'
import { commandFor } from '../proxies/kubernetes/command.js'
import { parseKubeRequest } from '../proxies/kubernetes/request.js'

const PATCH = 'application/json-patch+json'

function refsOf(body: unknown, type = PATCH): string[] {
  const r = readWriteBody(Buffer.from(typeof body === 'string' ? body : JSON.stringify(body)), type, false)
  assert.ok(r.ok, JSON.stringify(r))
  return r.facts.secret_refs
}

function refusal(body: unknown, type = PATCH, full = false): string {
  const r = readWriteBody(Buffer.from(typeof body === 'string' ? body : JSON.stringify(body)), type, full)
  assert.ok(!r.ok && !r.opaque, JSON.stringify(r))
  return r.reason
}

describe('JSON patches and Secrets', () => {
  test('a Secret named in the path of an operation, or in a value read with its path, is a reference', () => {
    assert.deepEqual(
      refsOf([
        { op: 'add', path: '/spec/template/spec/volumes', value: [{ name: 's', secret: {} }] },
        { op: 'add', path: '/spec/template/spec/volumes/0/secret/secretName', value: 'topsecret' },
        {
          op: 'add',
          path: '/spec/template/spec/containers/0/env',
          value: [{ name: 'PW', valueFrom: { secretKeyRef: { key: 'password' } } }],
        },
        { op: 'replace', path: '/spec/template/spec/containers/0/env/0/valueFrom/secretKeyRef/name', value: 'other' },
        { op: 'add', path: '/spec/template/spec/containers/0/envFrom/0/secretRef', value: { name: 'third' } },
      ]),
      ['other', 'third', 'topsecret'],
    )
    assert.deepEqual(refsOf([{ op: 'add', path: '/spec/replicas', value: 3 }]), [])
  })

  test('a name copied or moved into a Secret reference is an unknown Secret', () => {
    assert.deepEqual(refsOf([{ op: 'copy', from: '/metadata/annotations/x', path: '/spec/template/spec/volumes/0/secret/secretName' }]), [
      COPIED_SECRET_REF,
    ])
    assert.deepEqual(refsOf([{ op: 'move', from: '/metadata/labels/n', path: '/spec/containers/0/env/0/valueFrom/secretKeyRef/name' }]), [
      COPIED_SECRET_REF,
    ])
  })

  test("copying, moving or testing a Secret's data is refused, whatever the target", () => {
    for (const op of [
      { op: 'copy', from: '/data/password', path: '/metadata/annotations/x' },
      { op: 'move', from: '/stringData/password', path: '/metadata/labels/x' },
      { op: 'copy', from: '/data', path: '/metadata/annotations' },
      { op: 'copy', from: '/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration', path: '/metadata/annotations/y' },
      { op: 'test', path: '/data/password', value: 'Z3Vlc3M=' },
    ]) {
      assert.match(refusal([{ op: 'add', path: '/metadata/annotations', value: {} }, op]), /may not (copy|move|test) a Secret's data/)
    }
    // Adding data (a writer may set a value it knows) and copying elsewhere stay patches like any other.
    assert.deepEqual(refsOf([{ op: 'add', path: '/data/new', value: 'eA==' }]), [])
    assert.deepEqual(refsOf([{ op: 'copy', from: '/metadata/labels/a', path: '/metadata/labels/b' }]), [])
  })
})

describe('YAML bodies', () => {
  test('merge keys, which the API server applies, are refused in objects and patches', () => {
    const pod = [
      'apiVersion: v1',
      'kind: Pod',
      'metadata: {name: p}',
      'spec:',
      '  containers: [{name: c, image: busybox}]',
      '  volumes:',
      '  - name: s',
      '    <<: {secret: {secretName: topsecret}}',
    ].join('\n')
    assert.match(refusal(pod, 'application/yaml', true), /merge keys/)
    assert.match(refusal('spec: {<<: {volumes: [{name: s, secret: {secretName: x}}]}}', 'application/apply-patch+yaml'), /merge keys/)
    const plain = readWriteBody(
      Buffer.from(pod.replace('    <<: {secret: {secretName: topsecret}}', '    secret: {secretName: topsecret}')),
      'application/yaml',
      true,
    )
    assert.ok(plain.ok)
    assert.deepEqual(plain.facts.secret_refs, ['topsecret'])
  })
})

describe('exec and attach', () => {
  function command(path: string): Record<string, unknown> {
    const u = new URL(`https://gw${path}`)
    const info = parseKubeRequest('POST', u.pathname, u.search.slice(1))
    return commandFor(info, u.searchParams)
  }

  test('programs that run other programs make an exec opaque (the list SSH uses)', () => {
    for (const argv of [
      ['unshare', 'sh'],
      ['taskset', '1', 'sh'],
      ['toybox', 'sh'],
      ['strace', 'sh'],
      ['runuser', '-c', 'id'],
      ['gdb'],
      ['start-stop-daemon'],
      ['tar'],
      ['git'],
      ['rsync'],
      ['sed'],
      ['vi'],
      ['less'],
      ['ssh'],
      ['kubectl'],
      ['python3.11'],
    ]) {
      const q = argv.map((a) => `command=${encodeURIComponent(a)}`).join('&')
      const c = command(`/api/v1/namespaces/web/pods/p/exec?${q}&stdout=true`)
      assert.equal(c.opaque, true, argv.join(' '))
    }
    assert.equal(command('/api/v1/namespaces/web/pods/p/exec?command=ls&command=-l').opaque, undefined)
  })

  test('an attach is opaque: nothing in it says what runs', () => {
    const c = command('/api/v1/namespaces/web/pods/p/attach?stdin=true&tty=true&container=c')
    assert.equal(c.opaque, true)
    assert.match(String(c.opaque_reason), /attach/)
  })
})
