// The client→gateway parsers of proxies/postgres/frontend.ts under fast-check (STYLE.md habit 4):
// random valid sequences × random splits give the unsplit frames (and round-trip what pg-protocol
// serialized), and random or mutated bytes throw nothing but ProtocolError.
//
// Messages are built with pg-protocol's `serialize`, as the real `pg` client builds them.

import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import fc from 'fast-check'
import { serialize } from 'pg-protocol'
import {
  CANCEL_REQUEST_CODE,
  expectEmpty,
  GSSENC_REQUEST_CODE,
  PROTOCOL_3_0,
  parseBind,
  parseExecute,
  parseParse,
  parsePassword,
  parseQuery,
  parseStartupPacket,
  parseTarget,
  SSL_REQUEST_CODE,
} from '../proxies/postgres/frontend.js'
import {
  bindBody,
  body,
  CAP,
  drainMessages,
  drainStartup,
  type Json,
  onlyProtocolErrors,
  runSession,
  splitAt,
  startupPacket,
  UNICODE_SQL,
} from './helpers/frontend-parser.js'
import { msg } from './helpers/wire.js'

/** Text without NUL (a C string cannot hold one), any code point including astral ones. */
const text = (maxLength = 24): fc.Arbitrary<string> =>
  fc
    .oneof(
      fc.string({ unit: 'binary', maxLength }),
      fc.string({ unit: 'grapheme-ascii', maxLength }),
      fc.constantFrom('', 'SELECT 1', UNICODE_SQL, 'a'.repeat(300)),
    )
    .map((s) => s.replaceAll('\0', ''))

const bytes = (maxLength = 40): fc.Arbitrary<Buffer> => fc.uint8Array({ maxLength }).map((u) => Buffer.from(u))

const int32Nonneg = fc.integer({ min: 0, max: 2 ** 31 - 1 })

interface Generated {
  readonly bytes: Buffer
  readonly type: string
  readonly parsed: Json
}

const paramValue: fc.Arbitrary<Buffer | string | null> = fc.oneof(fc.constant(null), text(), bytes())

const generatedMessage: fc.Arbitrary<Generated> = fc.oneof(
  text().map((sql) => ({ bytes: serialize.query(sql), type: 'Q', parsed: { sql } })),
  fc.record({ name: text(10), sql: text(), types: fc.array(int32Nonneg, { maxLength: 5 }) }).map(({ name, sql, types }) => ({
    bytes: serialize.parse({ name, text: sql, types }),
    type: 'P',
    parsed: { name, sql, paramTypes: types },
  })),
  fc
    .record({ portal: text(8), statement: text(8), values: fc.array(paramValue, { maxLength: 6 }), binary: fc.boolean() })
    .map(({ portal, statement, values, binary }) => ({
      bytes: serialize.bind({ portal, statement, values, binary }),
      type: 'B',
      parsed: {
        portal,
        statement,
        paramFormats: values.map((v) => (v instanceof Buffer ? 1 : 0)),
        params: values.map((v) => (v === null ? null : typeof v === 'string' ? Buffer.from(v, 'utf8').toString('hex') : v.toString('hex'))),
        resultFormats: [binary ? 1 : 0],
      },
    })),
  fc
    .record({
      portal: text(8),
      statement: text(8),
      params: fc.array(fc.option(bytes(), { nil: null }), { maxLength: 6 }),
      oneFormat: fc.constantFrom<readonly number[]>([], [0], [1]),
      results: fc.array(fc.constantFrom(0, 1), { maxLength: 4 }),
    })
    .map(({ portal, statement, params, oneFormat, results }) => ({
      bytes: msg('B', bindBody({ portal, statement, formats: oneFormat, params, results })),
      type: 'B',
      parsed: {
        portal,
        statement,
        paramFormats: params.map(() => oneFormat[0] ?? 0),
        params: params.map((p) => (p === null ? null : p.toString('hex'))),
        resultFormats: results,
      },
    })),
  fc.record({ portal: text(8), rows: int32Nonneg }).map(({ portal, rows }) => ({
    bytes: serialize.execute({ portal, rows }),
    type: 'E',
    parsed: { portal, maxRows: rows },
  })),
  fc.record({ kind: fc.constantFrom<'S' | 'P'>('S', 'P'), name: text(8), close: fc.boolean() }).map(({ kind, name, close }) => ({
    bytes: close ? serialize.close({ type: kind, name }) : serialize.describe({ type: kind, name }),
    type: close ? 'C' : 'D',
    parsed: { kind, name },
  })),
  fc.constantFrom<Generated>(
    { bytes: serialize.sync(), type: 'S', parsed: null },
    { bytes: serialize.flush(), type: 'H', parsed: null },
    { bytes: serialize.copyDone(), type: 'c', parsed: null },
    { bytes: serialize.end(), type: 'X', parsed: null },
  ),
  bytes(200).map((b) => ({ bytes: serialize.copyData(b), type: 'd', parsed: { hex: b.toString('hex') } })),
  text().map((m) => {
    const bytes = serialize.copyFail(m)
    return { bytes, type: 'f', parsed: { hex: body(bytes).toString('hex') } }
  }),
  bytes().map((b) => ({ bytes: msg('F', b), type: 'F', parsed: { hex: b.toString('hex') } })),
  text().map((pw) => ({ bytes: serialize.password(pw), type: 'p', parsed: { password: pw } })),
)

const startupArb = fc
  .uniqueArray(
    fc.tuple(
      text(12).filter((k) => k !== '' && k !== 'client_encoding'),
      text(),
    ),
    { selector: ([k]) => k, maxLength: 5 },
  )
  .map((pairs) => {
    const opts: Record<string, string> = Object.fromEntries(pairs)
    // Object.keys order (integer-like keys first) is the order pg-protocol writes them in.
    return { pairs: Object.entries(opts), bytes: serialize.startup(opts) }
  })

describe('frontend parsers: fast-check properties', () => {
  it('(a) random valid sequences × random splits give the unsplit frames, which round-trip what was serialized', () => {
    fc.assert(
      fc.property(
        fc.boolean(),
        startupArb,
        fc.array(generatedMessage, { maxLength: 12 }),
        fc.array(fc.nat(), { maxLength: 8 }),
        (ssl, startup, msgs, cuts) => {
          const stream = Buffer.concat([...(ssl ? [serialize.requestSsl()] : []), startup.bytes, ...msgs.map((m) => m.bytes)])
          const whole = runSession([stream])
          const offsets = cuts.map((c) => c % (stream.length + 1))
          assert.deepEqual(runSession(splitAt(stream, offsets)), whole)
          assert.equal(whole.pending, 0)
          assert.equal(whole.packets.length, ssl ? 2 : 1)
          assert.deepEqual(
            whole.frames.map((f) => [f.type, f.parsed]),
            msgs.map((m) => [m.type, m.parsed]),
          )
          const p = whole.packets[ssl ? 1 : 0] as { params: Json }
          assert.deepEqual(p.params, [...startup.pairs.map(([k, v]) => [k, v]), ['client_encoding', 'UTF8']])
        },
      ),
      { numRuns: 500 },
    )
  })

  /** Bytes biased toward what makes parsers branch: NUL, 0xff (negative counts), small numbers, type letters. */
  const hostileByte = fc.oneof(
    fc.integer({ min: 0, max: 255 }),
    fc.constantFrom(0, 0, 0, 1, 2, 0xff, 0x80, 0x7f, 0x53, 0x50, 0x51, 0x42, 0x45),
  )
  const hostileBytes = (maxLength: number): fc.Arbitrary<Buffer> => fc.array(hostileByte, { maxLength }).map((a) => Buffer.from(a))

  /** A valid body with one mutation: truncated, extended, or some bytes overwritten. */
  const mutated = fc
    .tuple(generatedMessage, fc.constantFrom('truncate', 'append', 'overwrite', 'insert'), fc.nat(), hostileBytes(8))
    .map(([m, how, at, extra]) => {
      const b = Buffer.from(body(m.bytes))
      const i = b.length === 0 ? 0 : at % (b.length + 1)
      let out: Buffer
      switch (how) {
        case 'truncate':
          out = b.subarray(0, i)
          break
        case 'append':
          out = Buffer.concat([b, extra])
          break
        case 'insert':
          out = Buffer.concat([b.subarray(0, i), extra, b.subarray(i)])
          break
        default:
          extra.copy(b, Math.min(i, Math.max(0, b.length - extra.length)))
          out = b
      }
      return { type: m.bytes[0] as number, body: out }
    })

  const PARSERS: readonly ((b: Buffer) => unknown)[] = [
    parseQuery,
    parsePassword,
    parseParse,
    parseBind,
    parseExecute,
    (b) => parseTarget(b, 'Describe'),
    (b) => parseTarget(b, 'Close'),
    (b) => expectEmpty(b, 'Sync'),
  ]

  it('(b) random and mutated bodies: the body parsers throw nothing but ProtocolError', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          hostileBytes(64),
          mutated.map((m) => m.body),
        ),
        (b) => {
          for (const p of PARSERS) onlyProtocolErrors(() => p(b))
        },
      ),
      { numRuns: 1000 },
    )
  })

  it('(b) random typed frames × random splits: MessageReader and the parsers throw nothing but ProtocolError', () => {
    const frameArb = fc.oneof(
      mutated.map((m) => msg(m.type, m.body)),
      fc.tuple(hostileByte, hostileBytes(24)).map(([t, b]) => msg(t, b)),
      fc
        .tuple(fc.constantFrom(0x42, 0x50, 0x51, 0x70), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), hostileBytes(24))
        .map(([t, len, b]) => msg(t, b, len)),
      hostileBytes(32),
    )
    fc.assert(
      fc.property(
        fc.array(frameArb, { maxLength: 6 }),
        fc.array(fc.nat(), { maxLength: 6 }),
        fc.constantFrom(64, 8192, CAP),
        (frames, cuts, cap) => {
          const stream = Buffer.concat(frames)
          onlyProtocolErrors(() =>
            drainMessages(
              splitAt(
                stream,
                cuts.map((c) => c % (stream.length + 1)),
              ),
              cap,
            ),
          )
        },
      ),
      { numRuns: 800 },
    )
  })

  it('(b) random startup packets × random splits: StartupReader and parseStartupPacket throw nothing but ProtocolError', () => {
    const code = fc.oneof(
      fc.constantFrom(SSL_REQUEST_CODE, GSSENC_REQUEST_CODE, CANCEL_REQUEST_CODE, PROTOCOL_3_0, (3 << 16) | 2, 2 << 16),
      fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
    )
    const packetArb = fc.oneof(
      fc.tuple(code, hostileBytes(300)).map(([c, rest]) => startupPacket(c, rest)),
      fc
        .tuple(code, hostileBytes(40), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }))
        .map(([c, rest, len]) => startupPacket(c, rest, len)),
      fc.tuple(startupArb, fc.nat(), hostileBytes(4)).map(([s, at, b]) => {
        const out = Buffer.from(s.bytes)
        b.copy(out, 4 + (at % Math.max(1, out.length - 4)))
        return out
      }),
      hostileBytes(40),
    )
    fc.assert(
      fc.property(fc.array(packetArb, { maxLength: 4 }), fc.array(fc.nat(), { maxLength: 5 }), (packets, cuts) => {
        const stream = Buffer.concat(packets)
        onlyProtocolErrors(() =>
          drainStartup(
            splitAt(
              stream,
              cuts.map((c) => c % (stream.length + 1)),
            ),
          ),
        )
        // parseStartupPacket is only ever handed a framed packet of at least 8 bytes.
        for (const p of packets) if (p.length >= 8) onlyProtocolErrors(() => parseStartupPacket(p))
      }),
      { numRuns: 800 },
    )
  })
})
