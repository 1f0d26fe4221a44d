// The client→gateway parsers of proxies/postgres/frontend.ts (STYLE.md habits 3-4):
//
//   - a corpus of valid client streams (startup phase, then typed messages of every kind) fed
//     whole, split at every byte offset, in 1-byte pieces and, for a short stream, split at every
//     pair of offsets: the frames and their parsed bodies are always the same;
//   - a negative table (truncated, trailing, negative counts, short/oversize lengths — oversize
//     refused from the 5-byte header alone —, unknown types, unterminated strings, bad format
//     codes, oversize or old-protocol startup packets, duplicate startup keys): each throws
//     ProtocolError and nothing else;
//   - fast-check: random valid sequences × random splits give the unsplit frames (and round-trip
//     what pg-protocol serialized), and random or mutated bytes throw nothing but ProtocolError.
//
// Messages are built with pg-protocol's `serialize`, as the real `pg` client builds them.

import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import fc from 'fast-check'
import { serialize } from 'pg-protocol'
import {
  CANCEL_REQUEST_CODE,
  expectEmpty,
  type Frame,
  FrontendCode,
  GSSENC_REQUEST_CODE,
  MAX_STARTUP_PACKET,
  MessageReader,
  PROTOCOL_3_0,
  ProtocolError,
  parseBind,
  parseExecute,
  parseParse,
  parsePassword,
  parseQuery,
  parseStartupPacket,
  parseTarget,
  SSL_REQUEST_CODE,
  type StartupPacket,
  StartupReader,
} from '../proxies/postgres/frontend.js'
import { cstr, int16, int32, msg } from './helpers/wire.js'

/** The gateway's default cap after authentication (engine/config/config.ts DEFAULT_MAX_MESSAGE_BYTES). */
const CAP = 16 * 1024 * 1024

// ---- building messages ------------------------------------------------------------------------

/** A startup-phase packet: Int32 length (itself included), Int32 code, rest. */
function startupPacket(code: number, rest: Buffer = Buffer.alloc(0), lengthWord = rest.length + 8): Buffer {
  return Buffer.concat([int32(lengthWord), int32(code), rest])
}

function startupParams(pairs: readonly (readonly [string, string])[], code = PROTOCOL_3_0): Buffer {
  return startupPacket(code, Buffer.concat([...pairs.map(([k, v]) => Buffer.concat([cstr(k), cstr(v)])), Buffer.from([0])]))
}

/** A valid StartupMessage of exactly n bytes (one application_name padded to fit). */
function startupOfLength(n: number): Buffer {
  const fixed = startupParams([['application_name', '']]).length
  const out = startupParams([['application_name', 'x'.repeat(n - fixed)]])
  assert.equal(out.length, n)
  return out
}

interface BindSpec {
  readonly portal: string
  readonly statement: string
  readonly formats: readonly number[]
  readonly params: readonly (Buffer | null)[]
  readonly results: readonly number[]
}

/** A Bind body built by hand, for the 0/1/N format-code forms pg-protocol never produces. */
function bindBody(b: BindSpec): Buffer {
  return Buffer.concat([
    cstr(b.portal),
    cstr(b.statement),
    int16(b.formats.length),
    ...b.formats.map(int16),
    int16(b.params.length),
    ...b.params.map((p) => (p === null ? int32(-1) : Buffer.concat([int32(p.length), p]))),
    int16(b.results.length),
    ...b.results.map(int16),
  ])
}

function body(m: Buffer): Buffer {
  return m.subarray(5)
}

// ---- a model client session -------------------------------------------------------------------

type Json = null | boolean | number | string | readonly Json[] | { readonly [k: string]: Json }

const NAMES: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(FrontendCode)
    .filter((e): e is [string, number] => typeof e[1] === 'number')
    .map(([k, v]) => [v, k]),
)

/** What a frame says, as plain data (buffers as hex), through the body parser for its type. */
function parseFrame(f: Frame): Json {
  const b = f.body
  switch (f.type) {
    case FrontendCode.Query:
      return { sql: parseQuery(b) }
    case FrontendCode.Parse: {
      const p = parseParse(b)
      return { name: p.name, sql: p.sql, paramTypes: [...p.paramTypes] }
    }
    case FrontendCode.Bind: {
      const p = parseBind(b)
      return {
        portal: p.portal,
        statement: p.statement,
        paramFormats: [...p.paramFormats],
        params: p.params.map((x) => (x === null ? null : x.toString('hex'))),
        resultFormats: [...p.resultFormats],
      }
    }
    case FrontendCode.Execute: {
      const p = parseExecute(b)
      return { portal: p.portal, maxRows: p.maxRows }
    }
    case FrontendCode.Describe:
    case FrontendCode.Close: {
      const p = parseTarget(b, f.type === FrontendCode.Describe ? 'Describe' : 'Close')
      return { kind: p.kind, name: p.name }
    }
    case FrontendCode.Sync:
    case FrontendCode.Flush:
    case FrontendCode.Terminate:
    case FrontendCode.CopyDone:
      expectEmpty(b, NAMES[f.type] ?? '?')
      return null
    case FrontendCode.Password:
      return { password: parsePassword(b) }
    default:
      // CopyData, CopyFail, FunctionCall: forwarded (or refused) without a body parser.
      return { hex: b.toString('hex') }
  }
}

function packetJson(p: StartupPacket): Json {
  switch (p.kind) {
    case 'ssl':
    case 'gssenc':
      return { kind: p.kind }
    case 'cancel':
      return { kind: p.kind, pid: p.pid, secret: p.secret.toString('hex') }
    case 'startup':
      return { kind: p.kind, major: p.major, minor: p.minor, params: [...p.params].map(([k, v]) => [k, v]) }
  }
}

interface FrameEvent {
  readonly type: string
  readonly raw: string
  readonly parsed: Json
}

interface SessionResult {
  /** Startup-phase packets, in order (they all come before the first frame). */
  readonly packets: readonly Json[]
  readonly frames: readonly FrameEvent[]
  /** Bytes received and not yet framed when the stream ended. */
  readonly pending: number
}

/**
 * Feeds chunks the way connection.ts does: the startup reader until a StartupMessage (or a
 * CancelRequest, which ends the conversation), then the rest to a MessageReader. Frames are
 * turned into data only after the last push, so a frame that stopped being valid after later
 * pushes (frames are views) would show up as a difference.
 */
function runSession(chunks: Iterable<Buffer>, cap = CAP): SessionResult {
  const startup = new StartupReader()
  const reader = new MessageReader(cap)
  let phase: 'startup' | 'messages' | 'closed' = 'startup'
  const seen: (StartupPacket | Frame)[] = []
  for (const chunk of chunks) {
    if (phase === 'startup') {
      startup.push(chunk)
      for (let p = startup.next(); p !== null; p = startup.next()) {
        seen.push(p)
        if (p.kind === 'startup') {
          phase = 'messages'
          reader.push(startup.takeRest())
          break
        }
        if (p.kind === 'cancel') {
          phase = 'closed'
          break
        }
      }
    } else if (phase === 'messages') reader.push(chunk)
    if (phase === 'messages') for (let f = reader.next(); f !== null; f = reader.next()) seen.push(f)
  }
  const packets: Json[] = []
  const frames: FrameEvent[] = []
  for (const e of seen) {
    if ('kind' in e) packets.push(packetJson(e))
    else frames.push({ type: String.fromCharCode(e.type), raw: e.raw.toString('hex'), parsed: parseFrame(e) })
  }
  return { packets, frames, pending: phase === 'startup' ? startup.pending : phase === 'messages' ? reader.pending : 0 }
}

// ---- splitting ----------------------------------------------------------------------------------

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

function assertSplitInvariant(name: string, stream: Buffer, opts: { pairs?: boolean } = {}): SessionResult {
  const whole = runSession([stream])
  for (let k = 0; k <= stream.length; k++) {
    const got = runSession(splitAt(stream, [k]))
    assert.deepEqual(got, whole, `${name}: split at ${k}`)
  }
  assert.deepEqual(runSession(bytewise(stream)), whole, `${name}: 1-byte pieces`)
  if (opts.pairs) {
    for (let i = 1; i < stream.length; i++) {
      for (let j = i + 1; j < stream.length; j++)
        assert.deepEqual(runSession(splitAt(stream, [i, j])), whole, `${name}: split at ${i},${j}`)
    }
  }
  return whole
}

// ---- errors -------------------------------------------------------------------------------------

function isProtocolError(e: unknown): boolean {
  return e instanceof ProtocolError && e.code === 'GH_ERR_PROTOCOL' && e.publicMessage.startsWith('protocol violation: ')
}

function throwsProtocolError(fn: () => unknown, what: string): void {
  assert.throws(fn, (e: unknown) => {
    if (!isProtocolError(e)) assert.fail(`${what}: expected a ProtocolError, got ${e instanceof Error ? e.stack : String(e)}`)
    return true
  })
}

/** Runs fn; a ProtocolError is an acceptable outcome, anything else thrown fails the test. */
function onlyProtocolErrors(fn: () => unknown): void {
  try {
    fn()
  } catch (e) {
    if (!isProtocolError(e)) throw e
  }
}

/** Drains a reader completely (until it waits for more bytes or throws). */
function drainMessages(chunks: readonly Buffer[], cap = CAP): Json[] {
  const r = new MessageReader(cap)
  const out: Json[] = []
  for (const c of chunks) {
    r.push(c)
    for (let f = r.next(); f !== null; f = r.next()) out.push(parseFrame(f))
  }
  return out
}

function drainStartup(chunks: readonly Buffer[]): Json[] {
  const r = new StartupReader()
  const out: Json[] = []
  for (const c of chunks) {
    r.push(c)
    for (let p = r.next(); p !== null; p = r.next()) out.push(packetJson(p))
  }
  return out
}

// ---- the corpus ---------------------------------------------------------------------------------

const UNICODE_SQL = "SELECT 'ä€𝄞 日本語 🙂', $1::text -- ünïcödé"

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

interface BadCase {
  readonly name: string
  readonly run: () => unknown
}

const QUERY_BODY = body(serialize.query('SELECT 1'))
const PARSE_BODY = body(serialize.parse({ name: 'n', text: 'SELECT $1', types: [23] }))
const BIND_BODY = body(serialize.bind({ portal: 'p', statement: 's', values: ['1', null, Buffer.from([9])], binary: true }))
const EXECUTE_BODY = body(serialize.execute({ portal: 'p', rows: 5 }))
const DESCRIBE_BODY = body(serialize.describe({ type: 'S', name: 'stmt' }))
const PASSWORD_BODY = body(serialize.password('token'))

/** The body parsers over valid bodies, for the every-prefix and trailing-byte cases. */
const VALID_BODIES: readonly { readonly name: string; readonly body: Buffer; readonly parse: (b: Buffer) => unknown }[] = [
  { name: 'Query', body: QUERY_BODY, parse: parseQuery },
  { name: 'Parse', body: PARSE_BODY, parse: parseParse },
  { name: 'Bind', body: BIND_BODY, parse: parseBind },
  {
    name: 'Bind (0 formats)',
    body: bindBody({ portal: '', statement: '', formats: [], params: [null, Buffer.from('x')], results: [] }),
    parse: parseBind,
  },
  { name: 'Execute', body: EXECUTE_BODY, parse: parseExecute },
  { name: 'Describe', body: DESCRIBE_BODY, parse: (b) => parseTarget(b, 'Describe') },
  { name: 'Close', body: body(serialize.close({ type: 'P', name: 'p' })), parse: (b) => parseTarget(b, 'Close') },
  { name: 'PasswordMessage', body: PASSWORD_BODY, parse: parsePassword },
]

function bindCase(name: string, spec: Partial<BindSpec>, raw?: (b: Buffer) => Buffer): BadCase {
  const full: BindSpec = { portal: '', statement: '', formats: [], params: [], results: [], ...spec }
  const b = bindBody(full)
  return { name: `Bind: ${name}`, run: () => parseBind(raw ? raw(b) : b) }
}

const BAD_BODIES: readonly BadCase[] = [
  ...VALID_BODIES.flatMap((v): BadCase[] => [
    ...Array.from({ length: v.body.length }, (_, n) => ({
      name: `${v.name}: truncated to ${n} bytes`,
      run: () => v.parse(v.body.subarray(0, n)),
    })),
    { name: `${v.name}: a trailing byte`, run: () => v.parse(Buffer.concat([v.body, Buffer.from([0])])) },
    { name: `${v.name}: trailing garbage`, run: () => v.parse(Buffer.concat([v.body, Buffer.from('xyz\0')])) },
  ]),
  { name: 'Query: unterminated', run: () => parseQuery(Buffer.from('SELECT 1')) },
  { name: 'Query: two strings', run: () => parseQuery(Buffer.from('SELECT 1\0SELECT 2\0')) },
  { name: 'Password: unterminated', run: () => parsePassword(Buffer.from('tok')) },
  { name: 'Parse: negative parameter count', run: () => parseParse(Buffer.concat([cstr(''), cstr('SELECT 1'), int16(-1)])) },
  { name: 'Parse: count -32768', run: () => parseParse(Buffer.concat([cstr(''), cstr('SELECT 1'), int16(-32768)])) },
  { name: 'Parse: count larger than the body', run: () => parseParse(Buffer.concat([cstr(''), cstr('SELECT 1'), int16(3), int32(23)])) },
  { name: 'Parse: unterminated statement name', run: () => parseParse(Buffer.from('name')) },
  { name: 'Parse: unterminated SQL', run: () => parseParse(Buffer.concat([cstr('n'), Buffer.from('SELECT 1')])) },
  bindCase('negative format count', {}, () => Buffer.concat([cstr(''), cstr(''), int16(-1), int16(0), int16(0)])),
  bindCase('negative parameter count', {}, () => Buffer.concat([cstr(''), cstr(''), int16(0), int16(-1), int16(0)])),
  bindCase('parameter count -32768', {}, () => Buffer.concat([cstr(''), cstr(''), int16(0), int16(-32768), int16(0)])),
  bindCase('negative result format count', {}, () => Buffer.concat([cstr(''), cstr(''), int16(0), int16(0), int16(-2)])),
  bindCase('parameter length -2', {}, () => Buffer.concat([cstr(''), cstr(''), int16(0), int16(1), int32(-2), int16(0)])),
  bindCase('parameter length -2^31', {}, () => Buffer.concat([cstr(''), cstr(''), int16(0), int16(1), int32(-(2 ** 31)), int16(0)])),
  bindCase('parameter longer than the body', {}, () =>
    Buffer.concat([cstr(''), cstr(''), int16(0), int16(1), int32(100), Buffer.from('ab'), int16(0)]),
  ),
  bindCase('parameter length 2^31-1', {}, () => Buffer.concat([cstr(''), cstr(''), int16(0), int16(1), int32(2 ** 31 - 1), int16(0)])),
  bindCase('parameter count larger than the values', {}, () =>
    Buffer.concat([cstr(''), cstr(''), int16(0), int16(5), int32(-1), int16(0)]),
  ),
  bindCase('format count larger than the body', {}, () => Buffer.concat([cstr(''), cstr(''), int16(100), int16(0)])),
  bindCase('2 format codes for 3 parameters', { formats: [0, 1], params: [null, null, null] }),
  bindCase('2 format codes for 0 parameters', { formats: [0, 0], params: [] }),
  bindCase('parameter format code 2', { formats: [2], params: [Buffer.from('1')] }),
  bindCase('parameter format code -1', { formats: [0, -1], params: [null, null] }),
  bindCase('result format code 2', { results: [0, 2] }),
  bindCase('result format code 256', { results: [256] }),
  bindCase('unterminated portal', {}, () => Buffer.from('portal')),
  bindCase('unterminated statement', {}, () => Buffer.concat([cstr('p'), Buffer.from('stmt')])),
  { name: 'Execute: empty', run: () => parseExecute(Buffer.alloc(0)) },
  { name: 'Execute: short row count', run: () => parseExecute(Buffer.concat([cstr('p'), int16(1)])) },
  { name: 'Describe: empty', run: () => parseTarget(Buffer.alloc(0), 'Describe') },
  { name: "Describe: target 'X'", run: () => parseTarget(Buffer.from('Xname\0'), 'Describe') },
  { name: 'Describe: target NUL', run: () => parseTarget(Buffer.from('\0\0'), 'Describe') },
  { name: 'Close: lower-case target', run: () => parseTarget(Buffer.from('sname\0'), 'Close') },
  { name: 'Close: unterminated name', run: () => parseTarget(Buffer.from('Sname'), 'Close') },
  { name: 'Sync: with a body', run: () => expectEmpty(Buffer.from([0]), 'Sync') },
  { name: 'Flush: with a body', run: () => expectEmpty(Buffer.from('x'), 'Flush') },
]

/** Typed-message framing errors, through MessageReader. */
const BAD_FRAMES: readonly BadCase[] = [
  ...[0x00, 0x01, 0x41, 0x47, 0x5a, 0x61, 0x71, 0x7f, 0x80, 0xff].map(
    (t): BadCase => ({ name: `unknown type 0x${t.toString(16)}`, run: () => drainMessages([msg(t, Buffer.alloc(0))]) }),
  ),
  { name: 'unknown type seen from the header alone', run: () => drainMessages([Buffer.from([0x41, 0, 0, 0, 4])]) },
  { name: 'unknown type after a valid message', run: () => drainMessages([Buffer.concat([serialize.sync(), msg('A', Buffer.alloc(0))])]) },
  { name: 'a StartupMessage after startup', run: () => drainMessages([serialize.startup({ user: 'x' })]) },
  ...[3, 0, -1, -(2 ** 31)].map(
    (len): BadCase => ({ name: `length word ${len}`, run: () => drainMessages([msg('Q', Buffer.alloc(0), len)]) }),
  ),
  { name: 'length 3 with the body absent', run: () => drainMessages([Buffer.from([0x53, 0, 0, 0, 3])]) },
  {
    name: 'oversize: header only (cap 1024, length 2000)',
    run: () => drainMessages([Buffer.concat([Buffer.from('Q'), int32(2000)])], 1024),
  },
  {
    name: 'oversize: header only, length 2^31-1 under the default cap',
    run: () => drainMessages([Buffer.concat([Buffer.from('Q'), int32(2 ** 31 - 1)])]),
  },
  {
    name: 'oversize: header only, 64 MiB Query under the default 16 MiB cap',
    run: () => drainMessages([Buffer.concat([Buffer.from('Q'), int32(64 * 1024 * 1024)])]),
  },
  { name: 'oversize: by one byte (cap 100, 101-byte frame)', run: () => drainMessages([msg('d', Buffer.alloc(96))], 100) },
  {
    name: 'oversize: after setLimit lowered the cap',
    run: () => {
      const r = new MessageReader(CAP)
      r.setLimit(8192)
      r.push(Buffer.concat([Buffer.from('Q'), int32(9000)]))
      return r.next()
    },
  },
  {
    name: 'oversize: password message over the 8 KiB pre-auth cap',
    run: () => drainMessages([Buffer.concat([Buffer.from('p'), int32(8192)])], 8192),
  },
  { name: 'Query: unterminated', run: () => drainMessages([msg('Q', Buffer.from('SELECT 1'))]) },
  { name: 'Sync with a body', run: () => drainMessages([msg('S', Buffer.from([0]))]) },
  { name: 'Terminate with a body', run: () => drainMessages([msg('X', Buffer.from('bye'))]) },
]

/** Startup-phase errors, through StartupReader. */
const BAD_STARTUP: readonly BadCase[] = [
  ...[0, 4, 7, -1, -(2 ** 31)].map((len): BadCase => ({ name: `length word ${len}`, run: () => drainStartup([int32(len)]) })),
  {
    name: `length ${MAX_STARTUP_PACKET + 1}, length word only`,
    run: () => drainStartup([int32(MAX_STARTUP_PACKET + 1)]),
  },
  { name: 'length 2^31-1, length word only', run: () => drainStartup([int32(2 ** 31 - 1)]) },
  {
    name: 'a 20000-byte startup packet, whole',
    run: () => drainStartup([startupOfLength(20000)]),
  },
  { name: 'protocol version 2.0', run: () => drainStartup([startupParams([['user', 'u']], 2 << 16)]) },
  { name: 'protocol version 1.0', run: () => drainStartup([startupParams([['user', 'u']], 1 << 16)]) },
  { name: 'protocol version 4.0', run: () => drainStartup([startupParams([['user', 'u']], 4 << 16)]) },
  { name: 'protocol code 0', run: () => drainStartup([startupParams([['user', 'u']], 0)]) },
  {
    name: 'protocol code 1234.5681 (next to the request codes)',
    run: () => drainStartup([startupParams([['user', 'u']], (1234 << 16) | 5681)]),
  },
  {
    name: 'duplicate startup key',
    run: () =>
      drainStartup([
        startupParams([
          ['user', 'a'],
          ['database', 'x'],
          ['user', 'b'],
        ]),
      ]),
  },
  {
    name: 'duplicate client_encoding (pg-protocol adds its own)',
    run: () => drainStartup([serialize.startup({ client_encoding: 'LATIN1' })]),
  },
  { name: 'no parameters and no terminator', run: () => drainStartup([startupPacket(PROTOCOL_3_0)]) },
  { name: 'missing final terminator', run: () => drainStartup([startupPacket(PROTOCOL_3_0, Buffer.concat([cstr('user'), cstr('u')]))]) },
  { name: 'unterminated key', run: () => drainStartup([startupPacket(PROTOCOL_3_0, Buffer.from('user'))]) },
  {
    name: 'key without a value',
    run: () => drainStartup([startupPacket(PROTOCOL_3_0, Buffer.concat([cstr('user'), Buffer.from('bob')]))]),
  },
  {
    name: 'trailing bytes after the terminator',
    run: () => drainStartup([startupPacket(PROTOCOL_3_0, Buffer.concat([cstr('user'), cstr('u'), Buffer.from([0]), Buffer.from('xx')]))]),
  },
  { name: 'SSLRequest of 12 bytes', run: () => drainStartup([startupPacket(SSL_REQUEST_CODE, int32(0))]) },
  { name: 'GSSENCRequest of 12 bytes', run: () => drainStartup([startupPacket(GSSENC_REQUEST_CODE, int32(0))]) },
  { name: 'CancelRequest of 12 bytes', run: () => drainStartup([startupPacket(CANCEL_REQUEST_CODE, int32(1))]) },
  { name: 'CancelRequest of 8 bytes', run: () => drainStartup([startupPacket(CANCEL_REQUEST_CODE)]) },
  {
    name: 'CancelRequest with a 257-byte key',
    run: () => drainStartup([startupPacket(CANCEL_REQUEST_CODE, Buffer.concat([int32(1), Buffer.alloc(257)]))]),
  },
  {
    name: 'length word says more than the packet holds, then the next packet is misread',
    run: () => drainStartup([Buffer.concat([startupPacket(SSL_REQUEST_CODE, Buffer.alloc(0), 16), startupPacket(SSL_REQUEST_CODE)])]),
  },
]

describe('frontend parsers: hostile input throws ProtocolError and nothing else', () => {
  for (const [group, cases] of [
    ['body parsers', BAD_BODIES],
    ['MessageReader', BAD_FRAMES],
    ['StartupReader', BAD_STARTUP],
  ] as const) {
    it(`${group}: ${cases.length} cases`, () => {
      for (const c of cases) throwsProtocolError(c.run, c.name)
    })
  }

  it('every valid body parses (the negative table is about the mutation, not the base)', () => {
    for (const v of VALID_BODIES) assert.doesNotThrow(() => v.parse(v.body), v.name)
  })

  it('the cap is checked from the 5-byte header, before any body byte arrives', () => {
    // One byte short of the header: nothing to decide yet.
    const r = new MessageReader(1024)
    r.push(Buffer.from([0x51, 0x7f, 0xff, 0xff]))
    assert.equal(r.next(), null)
    r.push(Buffer.from([0xff]))
    throwsProtocolError(() => r.next(), 'oversize header completed by its fifth byte')
    // At the cap exactly, the reader waits for the body instead.
    const ok = new MessageReader(1024)
    ok.push(Buffer.concat([Buffer.from('Q'), int32(1023)]))
    assert.equal(ok.next(), null)
    ok.push(Buffer.concat([Buffer.alloc(1018, 0x20), Buffer.from([0])]))
    const f = ok.next()
    assert.ok(f)
    assert.equal(f.raw.length, 1024)
  })

  it('the startup cap is checked from the length word, before the packet arrives', () => {
    const r = new StartupReader()
    r.push(Buffer.from([0, 0, 0x27]))
    assert.equal(r.next(), null)
    r.push(Buffer.from([0x11])) // 10001
    throwsProtocolError(() => r.next(), 'startup length 10001')
  })
})

// ---- fast-check ---------------------------------------------------------------------------------

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
