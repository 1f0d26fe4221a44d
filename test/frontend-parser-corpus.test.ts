// The client→gateway parsers of proxies/postgres/frontend.ts on valid input (STYLE.md habit 4): a
// corpus of valid client streams (startup phase, then typed messages of every kind) fed whole,
// split at every byte offset, in 1-byte pieces and, for a short stream, split at every pair of
// offsets: the frames and their parsed bodies are always the same. And the accumulator: frames it
// handed out stay intact while later bytes arrive, and a big frame is gathered in one buffer.
// The hostile input is in frontend-parser-hostile.test.ts, fast-check in
// frontend-parser-properties.test.ts.
//
// Messages are built with pg-protocol's `serialize`, as the real `pg` client builds them.

import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { serialize } from 'pg-protocol'
import { CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE, MAX_STARTUP_PACKET, MessageReader, parseQuery } from '../proxies/postgres/frontend.js'
import {
  assertSplitInvariant,
  bindBody,
  CAP,
  drainStartup,
  startupOfLength,
  startupPacket,
  startupParams,
  throwsProtocolError,
  UNICODE_SQL,
} from './helpers/frontend-parser.js'
import { int16, int32, msg } from './helpers/wire.js'

const PSQL_LIKE = Buffer.concat([
  serialize.startup({ user: 'alice', database: 'app', application_name: 'psql' }),
  serialize.password('gh_tok.eyJhbGciOi.secret-part'),
  serialize.query('SELECT 1'),
  serialize.query(''),
  serialize.query(UNICODE_SQL),
  serialize.end(),
])

const EXTENDED = Buffer.concat([
  serialize.requestSsl(),
  startupPacket(GSSENC_REQUEST_CODE),
  serialize.startup({ user: 'bob', database: 'app', search_path: 'public', DateStyle: 'ISO, MDY' }),
  serialize.parse({ name: 's1', text: 'SELECT $1::int, $2::bytea, $3::text', types: [23, 17, 25] }),
  serialize.parse({ text: UNICODE_SQL }),
  serialize.bind({ portal: 'p1', statement: 's1', values: ['42', Buffer.from([0, 1, 2, 0xff, 0]), null], binary: true }),
  serialize.bind({ values: ['', null, Buffer.alloc(0)] }),
  msg('B', bindBody({ portal: '', statement: 's1', formats: [], params: [Buffer.from('1'), Buffer.from(''), null], results: [] })),
  msg('B', bindBody({ portal: 'p2', statement: '', formats: [1], params: [Buffer.from([0, 0, 0, 7]), null], results: [0, 1, 1] })),
  serialize.describe({ type: 'P', name: 'p1' }),
  serialize.describe({ type: 'S' }),
  serialize.describe({ type: 'P' }),
  serialize.execute({ portal: 'p1', rows: 100 }),
  serialize.execute(),
  serialize.flush(),
  serialize.sync(),
  serialize.close({ type: 'S', name: 's1' }),
  serialize.close({ type: 'P', name: '' }),
  serialize.sync(),
  serialize.query('COPY t FROM STDIN'),
  serialize.copyData(Buffer.from('1\tä\n2\t\\N\n')),
  serialize.copyData(Buffer.alloc(0)),
  serialize.copyDone(),
  serialize.query('COPY t FROM STDIN'),
  serialize.copyFail('client gave up'),
  msg('F', Buffer.concat([int32(1598), int16(0), int16(0), int16(0)])),
  serialize.end(),
])

/** A CopyData of 16 KB: every split offset inside a body bigger than any socket read's head. */
const BIG_COPY = Buffer.concat([
  serialize.startup({ user: 'carol', database: 'app' }),
  serialize.query('COPY big FROM STDIN'),
  serialize.copyData(Buffer.alloc(16 * 1024, 'row\tvalue\n')),
  serialize.copyDone(),
  serialize.sync(),
])

const CANCEL = serialize.cancel(12345, 0x7a5b3c1d)

/** Protocol 3.2 (PostgreSQL 18 clients) with a 32-byte cancel key elsewhere; `_pq_` options pass the parser. */
const PROTOCOL_3_2 = Buffer.concat([
  startupParams(
    [
      ['user', 'dave'],
      ['database', 'app'],
      ['_pq_.test', 'on'],
    ],
    (3 << 16) | 2,
  ),
  serialize.query('SELECT 2'),
])

const LONG_CANCEL = startupPacket(CANCEL_REQUEST_CODE, Buffer.concat([int32(99), Buffer.alloc(32, 0xab)]))

describe('frontend parsers: a corpus of valid client streams split at every byte offset', () => {
  it('psql-like simple protocol session (startup, password, queries incl. empty and unicode, terminate)', () => {
    const r = assertSplitInvariant('psql', PSQL_LIKE, { pairs: true })
    assert.equal(r.pending, 0)
    assert.deepEqual(r.packets, [
      {
        kind: 'startup',
        major: 3,
        minor: 0,
        params: [
          ['user', 'alice'],
          ['database', 'app'],
          ['application_name', 'psql'],
          ['client_encoding', 'UTF8'],
        ],
      },
    ])
    const parsed = r.frames.map((e) => e.parsed)
    assert.deepEqual(parsed, [{ password: 'gh_tok.eyJhbGciOi.secret-part' }, { sql: 'SELECT 1' }, { sql: '' }, { sql: UNICODE_SQL }, null])
  })

  it('SSLRequest, GSSENCRequest, then an extended-protocol session with binary, NULL and empty params, COPY, FunctionCall', () => {
    const r = assertSplitInvariant('extended', EXTENDED)
    assert.equal(r.pending, 0)
    assert.deepEqual(r.packets.slice(0, 2), [{ kind: 'ssl' }, { kind: 'gssenc' }])
    const types = r.frames.map((e) => e.type)
    assert.deepEqual(types.join(''), 'PPBBBBDDDEEHSCCSQddcQfFX')
    const parsed = r.frames.map((e) => e.parsed)
    assert.deepEqual(parsed[0], { name: 's1', sql: 'SELECT $1::int, $2::bytea, $3::text', paramTypes: [23, 17, 25] })
    assert.deepEqual(parsed[1], { name: '', sql: UNICODE_SQL, paramTypes: [] })
    assert.deepEqual(parsed[2], {
      portal: 'p1',
      statement: 's1',
      paramFormats: [0, 1, 0],
      params: [Buffer.from('42').toString('hex'), '000102ff00', null],
      resultFormats: [1],
    })
    assert.deepEqual(parsed[3], { portal: '', statement: '', paramFormats: [0, 0, 1], params: ['', null, ''], resultFormats: [0] })
    // Zero format codes: every parameter is text.
    assert.deepEqual(parsed[4], { portal: '', statement: 's1', paramFormats: [0, 0, 0], params: ['31', '', null], resultFormats: [] })
    // One format code applies to every parameter.
    assert.deepEqual(parsed[5], { portal: 'p2', statement: '', paramFormats: [1, 1], params: ['00000007', null], resultFormats: [0, 1, 1] })
    assert.deepEqual(parsed.slice(6, 11), [
      { kind: 'P', name: 'p1' },
      { kind: 'S', name: '' },
      { kind: 'P', name: '' },
      { portal: 'p1', maxRows: 100 },
      { portal: '', maxRows: 0 },
    ])
    assert.deepEqual(parsed.slice(13, 15), [
      { kind: 'S', name: 's1' },
      { kind: 'P', name: '' },
    ])
  })

  it('a 16 KB CopyData', () => {
    const r = assertSplitInvariant('big copy', BIG_COPY)
    assert.equal(r.pending, 0)
    assert.equal(r.packets.length, 1)
    assert.equal(r.frames.length, 4)
  })

  it('CancelRequest (4-byte and 32-byte keys) and protocol 3.2 with _pq_ options', () => {
    assert.deepEqual(assertSplitInvariant('cancel', CANCEL, { pairs: true }).packets, [{ kind: 'cancel', pid: 12345, secret: '7a5b3c1d' }])
    assert.deepEqual(assertSplitInvariant('long cancel', LONG_CANCEL).packets, [{ kind: 'cancel', pid: 99, secret: 'ab'.repeat(32) }])
    const r = assertSplitInvariant('3.2', PROTOCOL_3_2, { pairs: true })
    assert.deepEqual(r.packets, [
      {
        kind: 'startup',
        major: 3,
        minor: 2,
        params: [
          ['user', 'dave'],
          ['database', 'app'],
          ['_pq_.test', 'on'],
        ],
      },
    ])
  })

  it('a startup packet of exactly MAX_STARTUP_PACKET bytes is accepted; one more byte is not', () => {
    const max = startupOfLength(MAX_STARTUP_PACKET)
    assert.equal(max.length, MAX_STARTUP_PACKET)
    assert.equal(drainStartup([max]).length, 1)
    assertSplitInvariant('max startup', max)
    throwsProtocolError(() => drainStartup([startupOfLength(MAX_STARTUP_PACKET + 1)]), 'startup of MAX+1')
  })

  it('frames stay valid after later pushes (they are views, never overwritten)', () => {
    const r = new MessageReader(CAP)
    const a = serialize.query('SELECT 1')
    const b = serialize.query('SELECT 2')
    r.push(Buffer.concat([a, b.subarray(0, 3)]))
    const f1 = r.next()
    assert.ok(f1)
    assert.equal(r.next(), null)
    r.push(b.subarray(3))
    const f2 = r.next()
    assert.ok(f2)
    assert.deepEqual([f1.raw, f2.raw], [a, b])
    assert.equal(parseQuery(f1.body), 'SELECT 1')
  })
})

// ---- negative table -----------------------------------------------------------------------------

describe('frontend parsers: the accumulator', () => {
  it('keeps every frame it handed out intact while later bytes arrive, one byte at a time', () => {
    const r = new MessageReader(16 * 1024 * 1024)
    const msgs = Array.from({ length: 300 }, (_, i) => msg('d', Buffer.alloc(i * 7, i % 251)))
    const stream = Buffer.concat(msgs)
    const frames: Buffer[] = []
    for (let i = 0; i < stream.length; i++) {
      r.push(stream.subarray(i, i + 1))
      for (let f = r.next(); f !== null; f = r.next()) frames.push(f.raw)
    }
    assert.equal(frames.length, msgs.length)
    // Compared only now: a buffer reused for a later tail would have overwritten earlier frames.
    for (let i = 0; i < msgs.length; i++) assert.ok((frames[i] as Buffer).equals(msgs[i] as Buffer), `frame ${i}`)
    assert.equal(r.pending, 0)
  })

  it('reuses a large buffer for the next large frame only once its owner recycles it', () => {
    class Probe extends MessageReader {
      get buffer(): Buffer {
        return this.buf
      }
    }
    const large = (fill: number): Buffer => msg('Q', Buffer.concat([Buffer.alloc(300 * 1024, fill), Buffer.from([0])]))
    const feed = (r: Probe, m: Buffer): Buffer => {
      for (let i = 0; i < m.length; i += 65536) r.push(m.subarray(i, Math.min(m.length, i + 65536)))
      const f = r.next()
      assert.ok(f !== null)
      return f.raw
    }
    const r = new Probe(16 * 1024 * 1024)
    const first = feed(r, large(0x61))
    const firstBuffer = r.buffer
    // Not recycled: the next large frame gets memory of its own, and the first frame stays intact.
    assert.ok(r.retire() === firstBuffer, 'a drained buffer is retired at once')
    const second = feed(r, large(0x62))
    const secondBuffer = r.buffer
    assert.ok(secondBuffer !== firstBuffer)
    assert.ok(first.equals(large(0x61)), 'a frame still in use is never overwritten')
    // Only the buffer retired last is taken back: an older one is left alone.
    assert.ok(r.retire() === secondBuffer)
    r.recycle(firstBuffer)
    const third = feed(r, large(0x63))
    assert.ok(r.buffer !== firstBuffer && r.buffer !== secondBuffer, 'fresh memory for the third frame')
    assert.ok(first.equals(large(0x61)) && second.equals(large(0x62)))
    // Recycled: the next large frame lands in that buffer.
    r.recycle(secondBuffer)
    const fourth = feed(r, large(0x64))
    assert.ok(r.buffer === secondBuffer, 'the recycled buffer holds the next large frame')
    assert.ok(third.equals(large(0x63)) && fourth.equals(large(0x64)))
  })

  it('frames a 2 MB message pushed in 1-byte then 64 KiB pieces with one buffer, sized once for the frame', () => {
    // A subclass sees the buffer the pieces are gathered in: once the length word is in, every
    // later piece lands in that same buffer, so each byte is copied once (no copy per read).
    class Probe extends MessageReader {
      get buffer(): Buffer {
        return this.buf
      }
    }
    const big = msg('Q', Buffer.concat([Buffer.alloc(2 * 1024 * 1024, 0x61), Buffer.from([0])]))
    const r = new Probe(16 * 1024 * 1024)
    const buffers = new Set<Buffer>()
    for (let i = 0; i < 5; i++) {
      r.push(big.subarray(i, i + 1))
      assert.equal(r.next(), null)
    }
    for (let i = 5; i < big.length; i += 65536) {
      r.push(big.subarray(i, Math.min(big.length, i + 65536)))
      buffers.add(r.buffer)
      if (i + 65536 < big.length) assert.equal(r.next(), null)
    }
    assert.equal(buffers.size, 1, 'one buffer for the whole frame')
    assert.equal(r.buffer.length, big.length, 'sized for the frame from its length word')
    const f = r.next()
    assert.ok(f?.raw.equals(big))
  })
})
