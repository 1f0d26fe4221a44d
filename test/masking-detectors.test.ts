// Value detectors (engine/masking/detectors.ts): each with values it must find and look-alikes it
// must leave alone (checksums, ranges, prefixes), spans and merging, and inputs built to make a
// careless pattern backtrack for a long time.

import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { DETECTOR_NAMES, detect, ibanValid, luhnValid, maskDetected } from '../engine/masking/detectors.js'

/** The substrings one detector finds. */
function found(text: string, detector: string): string[] {
  return detect(text, [detector]).map((h) => text.slice(h.start, h.end))
}

function table(detector: string, hits: readonly (readonly [string, string])[], misses: readonly string[]): void {
  for (const [text, want] of hits) {
    test(`${detector} finds ${JSON.stringify(want)} in ${JSON.stringify(text.slice(0, 60))}`, () => {
      assert.deepEqual(found(text, detector), [want])
    })
  }
  test(`${detector} leaves look-alikes alone`, () => {
    for (const text of misses) assert.deepEqual(found(text, detector), [], JSON.stringify(text))
  })
}

describe('detectors', () => {
  test('the names', () => {
    assert.deepEqual([...DETECTOR_NAMES], ['email', 'card', 'iban', 'ssn', 'phone', 'jwt', 'cloud_key', 'private_key'])
    assert.throws(() => detect('some text here', ['emails']), /unknown detector "emails"/)
  })

  table(
    'email',
    [
      ['alice@example.com', 'alice@example.com'],
      ['Contact: <bob.smith+tag@mail.example.co.uk>.', 'bob.smith+tag@mail.example.co.uk'],
      ['x,carol_99@sub-domain.example.org;', 'carol_99@sub-domain.example.org'],
    ],
    ['user@localhost', 'a@b', '@example.com', 'name@ example.com', 'foo@bar.c', 'version 1.2@3.4', 'mail me at alice at example dot com'],
  )

  table(
    'card',
    [
      ['4111111111111111', '4111111111111111'],
      ['Visa 4111 1111 1111 1111 exp 12/29', '4111 1111 1111 1111'],
      ['mc: 5555-5555-5555-4444.', '5555-5555-5555-4444'],
      ['amex 378282246310005', '378282246310005'],
      ['discover 6011111111111117', '6011111111111117'],
      ['mastercard 2-series 2223003122003222', '2223003122003222'],
    ],
    [
      '4111111111111112', // Luhn fails
      '4111 1111 1111 1112',
      '5555555555554445',
      '0000000000000000', // passes Luhn, not a card
      '4444444444444444444', // repeated digit
      '1234567812345670', // Luhn-valid, but no issuer starts with 1
      'order 41111111111111110000', // part of a longer number
      'id x4111111111111111', // part of a word
      'sha 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08',
      '411111111111', // too short
    ],
  )

  test('card: Luhn itself', () => {
    assert.equal(luhnValid('79927398713'), true)
    assert.equal(luhnValid('79927398710'), false)
  })

  table(
    'iban',
    [
      ['DE89370400440532013000', 'DE89370400440532013000'],
      ['pay to DE89 3704 0044 0532 0130 00 today', 'DE89 3704 0044 0532 0130 00'],
      ['GB82 WEST 1234 5698 7654 32', 'GB82 WEST 1234 5698 7654 32'],
      ['fr1420041010050500013m02606', 'fr1420041010050500013m02606'],
      ['NO9386011117947', 'NO9386011117947'],
    ],
    [
      'DE89370400440532013001', // mod-97 fails
      'GB82 WEST 1234 5698 7654 33',
      'DE8937040044053201300', // one character short for DE
      'XX89370400440532013000', // no such country
      'ORDER12345678901234567',
    ],
  )

  test('iban: mod-97 and country length', () => {
    assert.equal(ibanValid('GB82WEST12345698765432'), true)
    assert.equal(ibanValid('GB82WEST1234569876543'), false)
  })

  table(
    'ssn',
    [
      ['123-45-6789', '123-45-6789'],
      ['SSN: 078 05 1120.', '078 05 1120'],
      ['899-99-9999', '899-99-9999'],
    ],
    [
      '000-12-3456', // area 000
      '666-12-3456', // area 666
      '900-12-3456', // areas 900–999
      '999-12-3456',
      '123-00-4567', // group 00
      '123-45-0000', // serial 0000
      '123-45 6789', // mixed separators
      '123456789', // bare digits
      '2024-01-15',
      'ref 123-45-6789-01',
    ],
  )

  table(
    'phone',
    [
      ['call +44 20 7946 0958 now', '+44 20 7946 0958'],
      ['+1-202-555-0143', '+1-202-555-0143'],
      ['(212) 555-0143', '(212) 555-0143'],
      ['office 212-555-0143.', '212-555-0143'],
      ['+4915112345678', '+4915112345678'],
    ],
    [
      '2024-01-15',
      'version 10.2.3',
      'order 1234567890',
      'total 1,234,567.89',
      'ip 192.168.100.200',
      '123-45-6789', // an SSN layout
      '+1 2', // too few digits
      '012-555-0143', // NANP area codes start 2–9
      'isbn 978-3-16-148410-0',
      '1+2+3+4+5+6+7+8+9',
    ],
  )

  const jwt =
    'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c'
  table(
    'jwt',
    [
      [jwt, jwt],
      [`Authorization: Bearer ${jwt}`, jwt],
      // An unsecured JWT has an empty signature.
      ['eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.', 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.'],
    ],
    [
      // A header that is JSON but has no "alg".
      `${Buffer.from('{"typ":"JWT"}').toString('base64url')}.eyJzdWIiOiJ4In0.abc`,
      // "eyJ" that does not decode to JSON.
      'eyJ!!!!.abc.def',
      'eyJzzzzzzzz.eyJ0.sig',
      'just a.dotted.string',
    ],
  )

  table(
    'cloud_key',
    [
      ['aws_access_key_id = AKIAIOSFODNN7EXAMPLE', 'AKIAIOSFODNN7EXAMPLE'],
      ['ASIAY34FZKBOKMUTVV7A', 'ASIAY34FZKBOKMUTVV7A'],
      ['key=AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe', 'AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe'],
      ['token ghp_1234567890abcdefghijABCDEFGHIJ123456', 'ghp_1234567890abcdefghijABCDEFGHIJ123456'],
      ['glpat-abcdefghij0123456789', 'glpat-abcdefghij0123456789'],
      ['xoxb-123456789012-abcdefghijkl', 'xoxb-123456789012-abcdefghijkl'],
      ['sk_live_4eC39HqLyjWDarjtT1zdp7dc', 'sk_live_4eC39HqLyjWDarjtT1zdp7dc'],
      ['aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY', 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'],
    ],
    [
      'AKIAIOSFODNN7EXAMPL', // 19 characters
      'XAKIAIOSFODNN7EXAMPLEX',
      'AIzaShort',
      'ghp_short',
      'sk_test_4eC39HqLyjWDarjtT1zdp7dc', // a test key is not a secret
      'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY', // 40 characters of base64 alone are too common
      'the highway ghost',
    ],
  )

  const pem =
    '-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB\n-----END RSA PRIVATE KEY-----'
  table(
    'private_key',
    [
      [`key:\n${pem}\nthat was it`, pem],
      [
        '-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----',
        '-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----',
      ],
      ['-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC', '-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC'],
      [
        '-----BEGIN ENCRYPTED PRIVATE KEY-----\nabc\n-----END ENCRYPTED PRIVATE KEY-----',
        '-----BEGIN ENCRYPTED PRIVATE KEY-----\nabc\n-----END ENCRYPTED PRIVATE KEY-----',
      ],
    ],
    ['-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----', '-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----'],
  )

  test('spans are sorted, overlapping ones merged, and masking keeps the rest of the text', () => {
    const text = 'a alice@example.com b 4111-1111-1111-1111 c 123-45-6789 d'
    assert.equal(maskDetected(text, DETECTOR_NAMES), 'a **** b **** c **** d')
    const hits = detect(text, ['ssn', 'email', 'card'])
    assert.deepEqual(
      hits.map((h) => h.detector),
      ['email', 'card', 'ssn'],
    )
    assert.equal(maskDetected('nothing at all', DETECTOR_NAMES), 'nothing at all')
    assert.deepEqual(detect('abc', DETECTOR_NAMES), [], 'too short to hold anything')
  })

  test('inputs built to make a pattern backtrack finish quickly', () => {
    const big = 200_000
    const inputs = [
      `${'a'.repeat(big)}@`,
      `x@${'a.'.repeat(big / 2)}`,
      '@'.repeat(big),
      `+${'1'.repeat(big)}`,
      `+1${' 1'.repeat(big / 2)}x`,
      '4'.repeat(big),
      `${'4 '.repeat(big / 2)}x`,
      `DE89${' 1'.repeat(big / 2)}`,
      `eyJ${'a'.repeat(big)}.`,
      `${'-----BEGIN PRIVATE KEY-----'.repeat(2000)}`,
      `${'AKIA'.repeat(big / 4)}`,
      `${'123-45-'.repeat(big / 7)}`,
    ]
    for (const s of inputs) {
      const t0 = performance.now()
      detect(s, DETECTOR_NAMES)
      const ms = performance.now() - t0
      assert.ok(ms < 1500, `${JSON.stringify(s.slice(0, 20))}…: ${ms.toFixed(0)} ms`)
    }
  })
})
