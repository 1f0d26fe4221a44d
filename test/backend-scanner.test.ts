// The server→client BackendScanner of proxies/postgres/backend.ts (STYLE.md habit 4). Its
// invariant: with a handler that never replaces, the concatenation of scan() outputs over any
// split of the input equals the input, and the handler sees the same callbacks (onStreamed types,
// onMessage type + body) whatever the split. Checked here
//
//   - at every split offset (and in 1-byte pieces) for a corpus of realistic server streams,
//     including one with a 200 KB DataRow, against callbacks predicted from the messages;
//   - with fast-check for random message streams × random splits, and random bytes (only
//     BackendProtocolError may be thrown);
//   - for replacement: each replaced ErrorResponse is emitted exactly once, in order, whatever the
//     split, and none of its original bytes leak;
//   - for the limits: a collected message over the cap, or any length word < 4, throws
//     BackendProtocolError as soon as its header is complete, whatever the split.
//
// Server messages are built by hand: type byte, Int32 length (itself included), body.

import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import fc from 'fast-check'
import { type BackendHandler, BackendProtocolError, BackendScanner } from '../proxies/postgres/backend.js'
import { cstr, int16, int32 } from './helpers/wire.js'

/** The cap connection.ts gives the scanner (engine/config/config.ts DEFAULT_MAX_MESSAGE_BYTES). */
const CAP = 16 * 1024 * 1024

/** Types the scanner collects whole (CommandComplete, ErrorResponse, ReadyForQuery, ParameterStatus). */
const COLLECTED = new Set(['C', 'E', 'Z', 'S'])

// ---- building server messages -------------------------------------------------------------------

interface Msg {
  readonly type: string
  readonly body: Buffer
}

function bytesOf(m: Msg, lengthWord = m.body.length + 4): Buffer {
  return Buffer.concat([Buffer.from(m.type, 'latin1'), int32(lengthWord), m.body])
}

function stream(msgs: readonly Msg[]): Buffer {
  return Buffer.concat(msgs.map((m) => bytesOf(m)))
}

const M = {
  authOk: (): Msg => ({ type: 'R', body: int32(0) }),
  parameterStatus: (k: string, v: string): Msg => ({ type: 'S', body: Buffer.concat([cstr(k), cstr(v)]) }),
  backendKeyData: (pid: number, key: number): Msg => ({ type: 'K', body: Buffer.concat([int32(pid), int32(key)]) }),
  ready: (status: 'I' | 'T' | 'E'): Msg => ({ type: 'Z', body: Buffer.from(status) }),
  rowDescription: (cols: readonly { name: string; typeOid: number; typlen: number; format?: number }[]): Msg => ({
    type: 'T',
    body: Buffer.concat([
      int16(cols.length),
      ...cols.map((c) =>
        Buffer.concat([cstr(c.name), int32(16384), int16(1), int32(c.typeOid), int16(c.typlen), int32(-1), int16(c.format ?? 0)]),
      ),
    ]),
  }),
  dataRow: (cols: readonly (Buffer | string | null)[]): Msg => ({
    type: 'D',
    body: Buffer.concat([
      int16(cols.length),
      ...cols.map((c) => {
        if (c === null) return int32(-1)
        const b = typeof c === 'string' ? Buffer.from(c, 'utf8') : c
        return Buffer.concat([int32(b.length), b])
      }),
    ]),
  }),
  commandComplete: (tag: string): Msg => ({ type: 'C', body: cstr(tag) }),
  fields: (type: 'E' | 'N', f: Readonly<Record<string, string>>): Msg => ({
    type,
    body: Buffer.concat([...Object.entries(f).map(([k, v]) => Buffer.concat([Buffer.from(k), cstr(v)])), Buffer.from([0])]),
  }),
  empty: (type: string): Msg => ({ type, body: Buffer.alloc(0) }),
  copyOutResponse: (n: number): Msg => ({
    type: 'H',
    body: Buffer.concat([Buffer.from([0]), int16(n), ...Array.from({ length: n }, () => int16(0))]),
  }),
  copyData: (b: Buffer | string): Msg => ({ type: 'd', body: typeof b === 'string' ? Buffer.from(b) : b }),
  notification: (pid: number, channel: string, payload: string): Msg => ({
    type: 'A',
    body: Buffer.concat([int32(pid), cstr(channel), cstr(payload)]),
  }),
  parameterDescription: (oids: readonly number[]): Msg => ({ type: 't', body: Buffer.concat([int16(oids.length), ...oids.map(int32)]) }),
}

function error(code: string, message: string): Msg {
  return M.fields('E', { S: 'ERROR', V: 'ERROR', C: code, M: message, F: 'scan.l', L: '1188', R: 'scanner_yyerror' })
}

// ---- the recording handler ----------------------------------------------------------------------

type Replace = (type: string, body: Buffer) => Buffer | null

class Recorder implements BackendHandler {
  readonly calls: string[] = []
  constructor(private readonly replace: Replace = () => null) {}

  onMessage(type: number, body: Buffer): Buffer | null {
    const t = String.fromCharCode(type)
    // The body may be a view into a chunk: record its bytes now.
    this.calls.push(`message ${t} ${body.toString('hex')}`)
    return this.replace(t, body)
  }

  onStreamed(type: number): void {
    this.calls.push(`streamed ${String.fromCharCode(type)}`)
  }

  onRow(type: number, message: Buffer): Buffer | null {
    this.calls.push(`row ${String.fromCharCode(type)} ${message.toString('hex')}`)
    return this.replace(String.fromCharCode(type), message)
  }
}

/** The callbacks a correct scanner makes for these messages, split or not. */
function expectedCalls(msgs: readonly Msg[]): string[] {
  return msgs.map((m) => (COLLECTED.has(m.type) ? `message ${m.type} ${m.body.toString('hex')}` : `streamed ${m.type}`))
}

interface ScanResult {
  readonly out: readonly Buffer[]
  readonly calls: readonly string[]
}

function scanAll(chunks: Iterable<Buffer>, replace?: Replace, cap = CAP): ScanResult {
  const rec = new Recorder(replace)
  const s = new BackendScanner(rec, cap)
  const out: Buffer[] = []
  for (const c of chunks) for (const b of s.scan(c)) out.push(b)
  return { out, calls: rec.calls }
}

/**
 * Asserts that the output pieces, concatenated, are exactly `want`, without concatenating: a
 * piece that is the very same memory as the corresponding span of `want` (a pass-through view)
 * is equal by construction, so 200 KB × every split offset stays cheap.
 */
function assertBytes(out: readonly Buffer[], want: Buffer, what: string): void {
  let pos = 0
  for (const [i, b] of out.entries()) {
    if (pos + b.length > want.length) {
      assert.fail(`${what}: output is ${out.reduce((n, x) => n + x.length, 0)} bytes, want ${want.length} (piece ${i} overruns at ${pos})`)
    }
    const sameMemory = b.buffer === want.buffer && b.byteOffset === want.byteOffset + pos
    if (!sameMemory && !b.equals(want.subarray(pos, pos + b.length))) {
      const at = [...b].findIndex((x, j) => x !== want[pos + j])
      assert.fail(`${what}: output differs from the input at byte ${pos + at} (piece ${i} of ${out.length}, ${b.length} bytes)`)
    }
    pos += b.length
  }
  assert.equal(pos, want.length, `${what}: output is ${pos} bytes, want ${want.length}`)
}

function splitAt(buf: Buffer, offsets: readonly number[]): Buffer[] {
  const cuts = [...new Set(offsets.map((o) => Math.max(0, Math.min(buf.length, o))))].sort((a, b) => a - b)
  const out: Buffer[] = []
  let prev = 0
  for (const c of cuts) {
    out.push(buf.subarray(prev, c))
    prev = c
  }
  out.push(buf.subarray(prev))
  return out
}

function* bytewise(buf: Buffer): Generator<Buffer> {
  for (let i = 0; i < buf.length; i++) yield buf.subarray(i, i + 1)
}

/** Pass-through invariant for one split: output = input, callbacks = the predicted ones. */
function checkSplit(input: Buffer, want: readonly string[], chunks: Iterable<Buffer>, what: string): void {
  const r = scanAll(chunks)
  assertBytes(r.out, input, what)
  assert.deepEqual(r.calls, want, `${what}: handler callbacks`)
}

function checkEveryOffset(name: string, msgs: readonly Msg[]): void {
  const input = stream(msgs)
  const want = expectedCalls(msgs)
  checkSplit(input, want, [input], `${name}: whole`)
  for (let k = 0; k <= input.length; k++) checkSplit(input, want, splitAt(input, [k]), `${name}: split at ${k}`)
  checkSplit(input, want, bytewise(input), `${name}: 1-byte pieces`)
}

// ---- the corpus ---------------------------------------------------------------------------------

const STARTUP: readonly Msg[] = [
  M.authOk(),
  M.parameterStatus('server_version', '16.4'),
  M.parameterStatus('client_encoding', 'UTF8'),
  M.parameterStatus('DateStyle', 'ISO, MDY'),
  M.parameterStatus('TimeZone', 'Europe/Berlin'),
  M.backendKeyData(4242, 0x1badcafe),
  M.ready('I'),
]

const ROWS: readonly Msg[] = [
  M.rowDescription([
    { name: 'id', typeOid: 23, typlen: 4 },
    { name: 'name', typeOid: 25, typlen: -1 },
    { name: 'data', typeOid: 17, typlen: -1, format: 1 },
  ]),
  ...Array.from({ length: 60 }, (_, i) =>
    M.dataRow([String(i), i % 7 === 0 ? null : `name ${i} ä€𝄞`, i % 5 === 0 ? Buffer.alloc(0) : Buffer.from([i, 0, 255])]),
  ),
  M.commandComplete('SELECT 60'),
  M.ready('I'),
]

const ERRORS: readonly Msg[] = [
  M.fields('N', { S: 'NOTICE', V: 'NOTICE', C: '00000', M: 'table "t" does not exist, skipping' }),
  M.commandComplete('DROP TABLE'),
  error('42601', 'syntax error at or near "gatehouse"'),
  M.ready('E'),
  M.fields('N', { S: 'WARNING', V: 'WARNING', C: '01000', M: 'there is no transaction in progress' }),
  M.commandComplete('ROLLBACK'),
  M.ready('I'),
]

const EXTENDED: readonly Msg[] = [
  M.empty('1'),
  M.parameterDescription([23, 25]),
  M.rowDescription([{ name: '?column?', typeOid: 23, typlen: 4, format: 1 }]),
  M.empty('2'),
  M.dataRow([int32(1)]),
  M.empty('s'),
  M.dataRow([int32(2)]),
  M.commandComplete('SELECT 2'),
  M.empty('3'),
  M.empty('n'),
  M.empty('I'),
  M.ready('T'),
  error('22012', 'division by zero'),
  M.ready('E'),
  M.notification(77, 'jobs', 'payload ✓'),
]

const COPY: readonly Msg[] = [
  M.copyOutResponse(2),
  ...Array.from({ length: 40 }, (_, i) => M.copyData(`${i}\tvalue ${i}\n`)),
  M.empty('c'),
  M.commandComplete('COPY 40'),
  M.ready('I'),
]

/** A 200 KB DataRow between ordinary messages. */
const BIG: readonly Msg[] = [
  M.rowDescription([{ name: 'blob', typeOid: 17, typlen: -1 }]),
  M.dataRow([Buffer.alloc(200 * 1024, 0x5a)]),
  M.dataRow(['small']),
  M.commandComplete('SELECT 2'),
  M.ready('I'),
]

describe('BackendScanner: pass-through invariant at every split offset', () => {
  for (const [name, msgs] of [
    ['startup reply (R, S×4, K, Z)', STARTUP],
    ['simple query result (T, 60 × D incl. NULL and empty values, C, Z)', ROWS],
    ['notices, errors, ReadyForQuery in error state', ERRORS],
    ['extended protocol (1, t, T, 2, D, s, C, 3, n, I, Z, E, A)', EXTENDED],
    ['COPY TO STDOUT (H, 40 × d, c, C, Z)', COPY],
    ['a 200 KB DataRow', BIG],
    ['everything in one stream', [...STARTUP, ...ROWS, ...ERRORS, ...EXTENDED, ...COPY]],
  ] as const) {
    it(name, () => checkEveryOffset(name, msgs))
  }

  it('a collected message spread over three chunks is emitted once, whole', () => {
    const cc = M.commandComplete('INSERT 0 1')
    const input = stream([M.dataRow(['x']), cc, M.ready('I')])
    const at = bytesOf(M.dataRow(['x'])).length
    checkSplit(input, expectedCalls([M.dataRow(['x']), cc, M.ready('I')]), splitAt(input, [at + 2, at + 8]), 'C in three pieces')
  })
})

// ---- replacement --------------------------------------------------------------------------------

const GATEWAY_ERROR = bytesOf(M.fields('E', { S: 'ERROR', V: 'ERROR', C: '42501', M: 'gatehouse: the policy refused this statement' }))

function replaceErrors(type: string): Buffer | null {
  return type === 'E' ? GATEWAY_ERROR : null
}

/** What the client must receive: the stream with every ErrorResponse swapped for ours. */
function withReplacedErrors(msgs: readonly Msg[]): Buffer {
  return Buffer.concat(msgs.map((m) => (m.type === 'E' ? GATEWAY_ERROR : bytesOf(m))))
}

function checkReplaced(msgs: readonly Msg[], chunks: Iterable<Buffer>, what: string): void {
  const want = withReplacedErrors(msgs)
  const r = scanAll(chunks, replaceErrors)
  const got = Buffer.concat(r.out)
  if (!got.equals(want)) {
    assert.fail(
      `${what}: got ${got.length} bytes, want ${want.length}; first difference at byte ${[...got].findIndex((b, i) => b !== want[i])}`,
    )
  }
  assert.deepEqual(r.calls, expectedCalls(msgs), `${what}: handler callbacks`)
}

describe('BackendScanner: a replaced ErrorResponse is emitted exactly once, in order, whatever the split', () => {
  const REFUSED: readonly Msg[] = [
    M.rowDescription([{ name: 'a', typeOid: 23, typlen: 4 }]),
    M.dataRow(['1']),
    M.commandComplete('SELECT 1'),
    error('42601', 'syntax error at or near "gatehouse"'),
    M.ready('E'),
    M.fields('N', { S: 'NOTICE', V: 'NOTICE', C: '00000', M: 'notice' }),
    error('42601', 'syntax error at or near "gatehouse" (second refusal, longer than the first one)'),
    error('42601', 'x'),
    M.ready('I'),
  ]

  it('at every split offset and in 1-byte pieces', () => {
    const input = stream(REFUSED)
    checkReplaced(REFUSED, [input], 'whole')
    for (let k = 0; k <= input.length; k++) checkReplaced(REFUSED, splitAt(input, [k]), `split at ${k}`)
    checkReplaced(REFUSED, bytewise(input), '1-byte pieces')
  })

  it('at every pair of offsets around the first ErrorResponse', () => {
    const input = stream(REFUSED)
    const start = stream(REFUSED.slice(0, 3)).length
    const end = stream(REFUSED.slice(0, 4)).length
    for (let i = start - 2; i <= end + 2; i++) {
      for (let j = i + 1; j <= end + 2; j++) checkReplaced(REFUSED, splitAt(input, [i, j]), `split at ${i},${j}`)
    }
  })

  it('a replacement may be returned for a message collected across chunks, and nothing of the original leaks', () => {
    const e = error('42601', 'syntax error at or near "gatehouse"')
    const input = stream([e, M.ready('E')])
    for (let k = 1; k < bytesOf(e).length; k++) {
      const r = scanAll(splitAt(input, [k]), replaceErrors)
      const got = Buffer.concat(r.out)
      assert.equal(got.indexOf('syntax error'), -1, `split at ${k}: the server's error text reached the client`)
      assert.deepEqual(got, Buffer.concat([GATEWAY_ERROR, bytesOf(M.ready('E'))]), `split at ${k}`)
    }
  })
})

// ---- limits -------------------------------------------------------------------------------------

function throwsBackendError(fn: () => unknown, what: string): void {
  assert.throws(fn, (e: unknown) => {
    if (!(e instanceof BackendProtocolError))
      assert.fail(`${what}: expected a BackendProtocolError, got ${e instanceof Error ? e.stack : String(e)}`)
    return true
  })
}

/** Scans the chunks and expects a BackendProtocolError from the last one at the latest. */
function throwsOnScan(chunks: readonly Buffer[], cap: number, what: string): void {
  throwsBackendError(() => scanAll(chunks, undefined, cap), what)
}

describe('BackendScanner: limits', () => {
  const LIMIT = 64

  it('a collected message over the cap throws from its header alone, at every split of the header', () => {
    for (const type of COLLECTED) {
      const header = Buffer.concat([Buffer.from(type), int32(LIMIT)]) // 65-byte message
      const lead = bytesOf(M.dataRow(['before']))
      const input = Buffer.concat([lead, header])
      for (let k = 0; k <= input.length; k++) throwsOnScan(splitAt(input, [k]), LIMIT, `${type} over the cap, split at ${k}`)
      throwsOnScan([...bytewise(input)], LIMIT, `${type} over the cap, 1-byte pieces`)
      throwsOnScan([Buffer.concat([Buffer.from(type), int32(2 ** 31 - 1)])], CAP, `${type} with length 2^31-1`)
    }
  })

  it('a collected message exactly at the cap passes; streamed messages have no cap', () => {
    const atCap: Msg = { type: 'C', body: Buffer.concat([Buffer.alloc(LIMIT - 6, 0x41), Buffer.from([0])]) }
    assert.equal(bytesOf(atCap).length, LIMIT)
    const msgs = [M.dataRow([Buffer.alloc(10 * LIMIT)]), atCap, M.copyData(Buffer.alloc(5 * LIMIT)), M.ready('I')]
    const input = stream(msgs)
    for (let k = 0; k <= input.length; k += 7) {
      const r = scanAll(splitAt(input, [k]), undefined, LIMIT)
      assertBytes(r.out, input, `at the cap, split at ${k}`)
    }
  })

  it('a length word < 4 throws, for collected and streamed types, at every split', () => {
    for (const type of ['C', 'E', 'Z', 'D', 'T', 'N', 'd', '1']) {
      for (const len of [3, 0, -1, -(2 ** 31)]) {
        const input = Buffer.concat([bytesOf(M.ready('I')), Buffer.from(type), int32(len), Buffer.alloc(8)])
        for (let k = 0; k <= input.length; k++) throwsOnScan(splitAt(input, [k]), CAP, `${type} length ${len}, split at ${k}`)
      }
    }
  })

  it('random bytes throw nothing but BackendProtocolError (fast-check)', () => {
    const byte = fc.oneof(fc.integer({ min: 0, max: 255 }), fc.constantFrom(0, 0, 0xff, 0x43, 0x45, 0x5a, 0x44))
    fc.assert(
      fc.property(
        fc.array(byte, { maxLength: 200 }),
        fc.array(fc.nat(), { maxLength: 6 }),
        fc.constantFrom(16, 1024, CAP),
        (arr, cuts, cap) => {
          const input = Buffer.from(arr)
          try {
            scanAll(
              splitAt(
                input,
                cuts.map((c) => c % (input.length + 1)),
              ),
              undefined,
              cap,
            )
          } catch (e) {
            if (!(e instanceof BackendProtocolError)) throw e
          }
        },
      ),
      { numRuns: 1000 },
    )
  })
})

// ---- fast-check: random streams × random splits -------------------------------------------------

const TYPES = ['1', '2', '3', 'A', 'C', 'D', 'E', 'G', 'H', 'I', 'K', 'N', 'R', 'S', 'T', 'W', 'Z', 'c', 'd', 'n', 's', 't', 'v']

const msgArb: fc.Arbitrary<Msg> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({ type: fc.constantFrom(...TYPES), body: fc.uint8Array({ maxLength: 40 }).map((u) => Buffer.from(u)) }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ type: fc.constantFrom('C', 'E', 'Z'), body: fc.uint8Array({ maxLength: 12 }).map((u) => Buffer.from(u)) }),
  },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 3000 }).map((n) => M.dataRow([Buffer.alloc(n, 0x61)])) },
  { weight: 1, arbitrary: fc.constantFrom(...ERRORS, ...EXTENDED, ...STARTUP) },
)

describe('BackendScanner: fast-check, random streams × random splits', () => {
  it('pass-through: output = input, callbacks = predicted', () => {
    fc.assert(
      fc.property(fc.array(msgArb, { maxLength: 12 }), fc.array(fc.nat(), { maxLength: 10 }), (msgs, cuts) => {
        const input = stream(msgs)
        checkSplit(
          input,
          expectedCalls(msgs),
          splitAt(
            input,
            cuts.map((c) => c % (input.length + 1)),
          ),
          'random split',
        )
      }),
      { numRuns: 1000 },
    )
  })

  it('replacement: every ErrorResponse replaced exactly once, in order', () => {
    fc.assert(
      fc.property(fc.array(msgArb, { maxLength: 12 }), fc.array(fc.nat(), { maxLength: 10 }), (msgs, cuts) => {
        const input = stream(msgs)
        checkReplaced(
          msgs,
          splitAt(
            input,
            cuts.map((c) => c % (input.length + 1)),
          ),
          'random split',
        )
      }),
      { numRuns: 1000 },
    )
  })
})

// ---- regression cases -----------------------------------------------------------------------------

describe('BackendScanner: regression cases (shrunk fast-check counterexamples)', () => {
  // Both fail while a collected message's body bytes that arrive in a chunk without completing it
  // are also emitted as pass-through bytes (and then again, whole, when it completes).
  it('a CommandComplete with its header and first body byte at the end of a chunk (seed 836384546)', () => {
    const msgs: readonly Msg[] = [{ type: 'C', body: Buffer.from([0, 0]) }]
    const input = stream(msgs)
    checkSplit(input, expectedCalls(msgs), splitAt(input, [6]), 'C split at 6')
    checkReplaced(msgs, splitAt(input, [6]), 'C split at 6, replacing')
  })

  it('an ErrorResponse split after its header and one body byte (seed -1421290291)', () => {
    const msgs: readonly Msg[] = [error('42601', 'syntax error at or near "gatehouse"')]
    const input = stream(msgs)
    checkSplit(input, expectedCalls(msgs), splitAt(input, [6]), 'E split at 6')
    checkReplaced(msgs, splitAt(input, [6]), 'E split at 6, replacing')
  })

  it('a ReadyForQuery whose header is split, then completed together with its body', () => {
    const msgs: readonly Msg[] = [M.ready('I')]
    const input = stream(msgs)
    for (let k = 1; k <= 5; k++) checkSplit(input, expectedCalls(msgs), splitAt(input, [k]), `Z split at ${k}`)
  })
})

describe('BackendScanner: masking mode hands every DataRow over whole and emits its replacement, whatever the split', () => {
  const MSGS: readonly Msg[] = [
    M.rowDescription([{ name: 'secret', typeOid: 25, typlen: -1 }]),
    M.dataRow(['ann@example.com']),
    M.dataRow([null]),
    M.dataRow(['a much longer value that spans several chunks when the stream is cut finely: bob@example.org']),
    M.commandComplete('SELECT 3'),
    M.ready('I'),
  ]
  const masked = (type: string, message: Buffer): Buffer | null =>
    type === 'D' && message.includes('@') ? bytesOf(M.dataRow(['****'])) : null

  function scanMasking(chunks: Iterable<Buffer>): ScanResult {
    const rec = new Recorder(masked)
    const s = new BackendScanner(rec, CAP)
    s.setMasking(true, true)
    const out: Buffer[] = []
    for (const c of chunks) for (const b of s.scan(c)) out.push(b)
    return { out, calls: rec.calls }
  }

  const want = Buffer.concat(MSGS.map((m) => (m.type === 'D' && bytesOf(m).includes('@') ? bytesOf(M.dataRow(['****'])) : bytesOf(m))))
  const input = stream(MSGS)

  it('at every split offset and in 1-byte pieces', () => {
    const whole = scanMasking([input])
    for (let k = 0; k <= input.length; k++) {
      const r = scanMasking(splitAt(input, [k]))
      assert.deepEqual(Buffer.concat(r.out), want, `split at ${k}`)
      assert.deepEqual(r.calls, whole.calls, `split at ${k}: callbacks`)
      assert.equal(Buffer.concat(r.out).indexOf('@example'), -1, `split at ${k}: a clear value leaked`)
    }
    assert.deepEqual(Buffer.concat(scanMasking(bytewise(input)).out), want)
    // RowDescription is read (onMessage), rows go through onRow, whole.
    assert.equal(whole.calls.filter((c) => c.startsWith('row D')).length, 3)
    assert.ok(whole.calls.some((c) => c.startsWith('message T')))
  })

  it('switched off, rows stream untouched again', () => {
    const rec = new Recorder(masked)
    const s = new BackendScanner(rec, CAP)
    s.setMasking(true, true)
    s.setMasking(false, false)
    const out = s.scan(input)
    assert.deepEqual(Buffer.concat(out), input)
    assert.equal(rec.calls.filter((c) => c.startsWith('row')).length, 0)
  })
})
