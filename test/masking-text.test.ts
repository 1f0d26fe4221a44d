// The value detectors over a streaming text body (engine/masking/text-stream.ts): every value is
// masked whatever the chunking (splits at every offset, one byte at a time, large bodies), long
// values (a JWT, a PEM block) are held whole, and one held too long refuses the body.

import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { maskDetected } from '../engine/masking/detectors.js'
import { MAX_HOLD, TAIL, TextDetectorMasker, TextMaskError } from '../engine/masking/text-stream.js'

const DETECTORS = ['email', 'card', 'ssn', 'jwt', 'private_key', 'cloud_key']
const JWT = `eyJhbGciOiJIUzI1NiJ9.${Buffer.from(JSON.stringify({ sub: 'x'.repeat(6000) })).toString('base64url')}.c2lnbmF0dXJl`
const PEM = `-----BEGIN PRIVATE KEY-----\n${'MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n'.repeat(200)}-----END PRIVATE KEY-----`
const VALUES = ['ann.secret@corp.example', '4111 1111 1111 1111', '123-45-6781', JWT, PEM, 'AKIAIOSFODNN7EXAMPLE']
const TEXT = `Dear ann.secret@corp.example, your card 4111 1111 1111 1111 and ssn 123-45-6781. Token: ${JWT} ok.\n${PEM}\nkey AKIAIOSFODNN7EXAMPLE — ünïcödé 😀 end`

function run(chunks: Buffer[], encoding: 'utf8' | 'latin1' = 'utf8'): { out: string; m: TextDetectorMasker } {
  const m = new TextDetectorMasker(DETECTORS, encoding)
  const parts: Buffer[] = []
  for (const c of chunks) parts.push(...m.write(c))
  parts.push(...m.end())
  return { out: Buffer.concat(parts).toString(encoding), m }
}

function assertMasked(out: string, where: string): void {
  for (const v of VALUES) assert.equal(out.includes(v.slice(0, 12)), false, `${where}: ${v.slice(0, 12)}… got through`)
  assert.match(out, /^Dear \*\*\*\*, your card \*\*\*\* and ssn \*\*\*\*\. Token: \*\*\*\* ok\./, where)
  assert.match(out, /ünïcödé 😀 end$/, where)
}

describe('text bodies through the value detectors, streamed', () => {
  test('one chunk: the same as masking the whole text', () => {
    const { out, m } = run([Buffer.from(TEXT)])
    assert.equal(out, maskDetected(TEXT, DETECTORS))
    assertMasked(out, 'whole')
    assert.deepEqual(Object.fromEntries(m.found().map((f) => [f.detector, f.count])), {
      email: 1,
      card: 1,
      ssn: 1,
      jwt: 1,
      private_key: 1,
      cloud_key: 1,
    })
  })

  test('split in two at every offset (values across the boundary, UTF-8 sequences cut)', () => {
    const body = Buffer.from(TEXT)
    for (let i = 0; i <= body.length; i += i < 200 || i > body.length - 200 ? 1 : 97) {
      assertMasked(run([body.subarray(0, i), body.subarray(i)]).out, `split at ${i}`)
    }
  })

  test('one byte at a time, and values far into a large body in 1000-byte chunks', () => {
    assertMasked(run([...Buffer.from(TEXT)].map((b) => Buffer.from([b]))).out, 'bytewise')
    const filler = 'lorem ipsum dolor sit amet '.repeat(3000)
    const big = Buffer.from(`${filler}${TEXT}${filler}`)
    const chunks: Buffer[] = []
    for (let i = 0; i < big.length; i += 1000) chunks.push(big.subarray(i, i + 1000))
    const { out } = run(chunks)
    for (const v of VALUES) assert.equal(out.includes(v.slice(0, 12)), false)
    assert.equal(out.length, big.toString().length - TEXT.length + maskDetected(TEXT, DETECTORS).length)
  })

  test('Latin-1 text is masked and sent back in Latin-1', () => {
    const latin = Buffer.from('café ann.secret@corp.example façade', 'latin1')
    assert.deepEqual(run([latin], 'latin1').out, 'café **** façade')
  })

  test(`a value still being read after ${MAX_HOLD} characters refuses the body`, () => {
    const m = new TextDetectorMasker(DETECTORS)
    m.write(Buffer.from('-----BEGIN PRIVATE KEY-----\n'))
    assert.throws(() => {
      for (let i = 0; i < (2 * MAX_HOLD) / 1000 + 40; i++) m.write(Buffer.from('A'.repeat(1000)))
    }, TextMaskError)
    // A text with no value in it is held at most TAIL characters (plus a scan window).
    const plain = new TextDetectorMasker(DETECTORS)
    let sent = 0
    for (let i = 0; i < 100; i++) for (const o of plain.write(Buffer.from('plain words only. '.repeat(100)))) sent += o.length
    assert.ok(100 * 1800 - sent <= TAIL + 16 * 1024)
  })
})
