// The HTTP proxy's pure parts on their own: the secret scrubber across every chunk split, and the
// path normaliser's decisions (what is decoded, kept, merged, or refused), host-name routes.

import assert from 'node:assert/strict'
import { Readable } from 'node:stream'
import { describe, test } from 'node:test'
import { needlesFor, Scrubber } from '../proxies/http/scrub.js'
import { HostRoutes, hostEntryProblem, normalisePath, TargetError } from '../proxies/http/target.js'

async function scrub(chunks: Buffer[], needles: Buffer[]): Promise<string> {
  const out: Buffer[] = []
  for await (const c of Readable.from(chunks).pipe(new Scrubber(needles))) out.push(c as Buffer)
  return Buffer.concat(out).toString()
}

describe('secret scrubber', () => {
  const secret = 'Bearer sk-live-0123456789abcdef'
  const needles = needlesFor([secret])
  const forms = [
    secret,
    'sk-live-0123456789abcdef',
    JSON.stringify({ h: secret }),
    encodeURIComponent(secret),
    Buffer.from('sk-live-0123456789abcdef').toString('base64'),
  ]
  test('every echo form is masked, at every split point, with the length kept', async () => {
    for (const form of forms) {
      const body = `before ${form} after`
      for (let cut = 0; cut <= body.length; cut++) {
        const got = await scrub([Buffer.from(body.slice(0, cut)), Buffer.from(body.slice(cut))], needles)
        assert.equal(got.length, body.length)
        assert.ok(!got.includes('sk-live-0123456789abcdef'), `${form} split at ${cut}: ${got}`)
        assert.ok(!got.includes(Buffer.from('sk-live-0123456789abcdef').toString('base64')), `${form} at ${cut}`)
      }
    }
  })
  test('base64 of the secret wherever it starts in the encoded bytes, and of a whole echoed header set', async () => {
    const raw = 'sk-live-0123456789abcdef'
    for (const before of ['', 'x', 'xy', 'xyz', '{"authorization":"']) {
      for (const after of ['', '"', '"}', 'abc']) {
        for (const enc of ['base64', 'base64url'] as const) {
          const body = Buffer.from(before + secret + after).toString(enc)
          const got = await scrub([Buffer.from(body)], needles)
          assert.equal(got.length, body.length)
          const back = Buffer.from(got.replaceAll('*', 'A'), enc).toString('latin1')
          assert.ok(!back.includes(raw), `${enc} of ${before}…${after}: ${back}`)
        }
      }
    }
  })
  test('URL-encoded with lower-case escapes and form encoding', async () => {
    const slashy = 'Bearer ab/cd+ef==ghIJ/kl~mn'
    const n = needlesFor([slashy])
    const upper = encodeURIComponent(slashy)
    for (const form of [upper, upper.replace(/%[0-9A-F]{2}/g, (m) => m.toLowerCase()), upper.replaceAll('%20', '+')]) {
      const got = await scrub([Buffer.from(`e=${form}`)], n)
      assert.ok(!decodeURIComponent(got.replaceAll('+', ' ')).includes('ab/cd+ef==ghIJ/kl~mn'), `${form}: ${got}`)
    }
  })
  test('a Basic password alone in base64 is masked', async () => {
    const basic = `Basic ${Buffer.from('user:hunter2-password').toString('base64')}`
    const body = `pwb64=${Buffer.from('hunter2-password').toString('base64')}`
    const got = await scrub([Buffer.from(body)], needlesFor([basic]))
    assert.ok(!Buffer.from(got.slice(6).replaceAll('*', 'A'), 'base64').toString('latin1').includes('hunter2-password'), got)
  })
  test('a Basic credential is masked decoded too (user:password and the password)', async () => {
    const basic = `Basic ${Buffer.from('svc:pa55word-xyz').toString('base64')}`
    const got = await scrub([Buffer.from('u=svc:pa55word-xyz p=pa55word-xyz')], needlesFor([basic]))
    assert.ok(!got.includes('pa55word-xyz'), got)
  })
})

describe('path normalisation', () => {
  const rules = { caseInsensitive: false, pathParams: false }
  const ok: [string, string][] = [
    ['/a/b', '/a/b'],
    ['/%61dmin', '/admin'],
    ['/a//b///c', '/a/b/c'],
    ['/a/./b/../c', '/a/c'],
    ['/../../a', '/a'],
    ['/a/%2e%2e/b', '/b'],
    ['/a/b/', '/a/b/'],
    ['/a/b/..', '/a/'],
    ['/caf%c3%a9', '/caf%C3%A9'],
    ['/a%20b', '/a%20b'],
    ['/~user/-._', '/~user/-._'],
  ]
  test('decoded, merged and resolved forms', () => {
    for (const [raw, want] of ok) assert.equal(normalisePath(raw, rules), want, raw)
    assert.equal(normalisePath('/Admin/X', { caseInsensitive: true, pathParams: false }), '/admin/x')
    assert.equal(normalisePath('/a;b', { caseInsensitive: false, pathParams: true }), '/a;b')
  })
  test('refused forms', () => {
    for (const raw of [
      '/a%2fb',
      '/a%2Fb',
      '/a%5cb',
      '/a\\b',
      '/a%00',
      '/a%0a',
      '/%c0%ae%c0%ae/x',
      '/%e0%80%ae',
      '/%ff',
      '/a%zz',
      '/a%2',
      '/a;b',
      '/a%3bb',
      '/a b',
      '/é',
    ]) {
      assert.throws(() => normalisePath(raw, rules), TargetError, raw)
    }
  })
})

describe('host-name routes', () => {
  test('exact names without case; a port only where the entry names one; clashes refused', () => {
    const r = new HostRoutes()
    r.add('a', ['api.internal.example'])
    r.add('b', ['b.internal.example:8443', 'b.internal.example:9443'])
    assert.equal(r.lookup('API.internal.Example'), 'a')
    assert.equal(r.lookup('api.internal.example:1'), 'a')
    assert.equal(r.lookup('b.internal.example:8443'), 'b')
    for (const h of [
      'b.internal.example',
      'b.internal.example:8444',
      'api.internal.example.',
      'x.api.internal.example',
      '',
      'api.internal.example:',
      'user@api.internal.example',
      '[::1]:80',
    ]) {
      assert.equal(r.lookup(h), null, h)
    }
    assert.throws(() => r.add('c', ['api.internal.example:443']), /connections a and c both claim host/)
    assert.throws(() => r.add('c', ['B.internal.example']), /connections b and c both claim host/)
    assert.throws(() => r.add('c', ['b.internal.example:9443']), /connections b and c/)
    r.add('a', ['api.internal.example:8443'])
    assert.ok(r.claims('B.internal.example'))
    assert.ok(!r.claims('c.internal.example'))
  })

  test('what a hosts: entry may be', () => {
    for (const ok of ['api.example', 'a', 'x-1.example:8443', 'API.Example']) assert.equal(hostEntryProblem(ok), null, ok)
    for (const bad of [
      '*.example',
      '10.0.0.1',
      '10.0.0.1:80',
      '[::1]',
      'api.example.',
      'a_b.example',
      '-a.example',
      'a.example:0',
      'a.example:70000',
      'a.example:',
      'a..example',
    ]) {
      assert.notEqual(hostEntryProblem(bad), null, bad)
    }
  })
})
