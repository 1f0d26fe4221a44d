// The client→gateway parsers of proxies/postgres/frontend.ts on hostile input (STYLE.md habit 3): a
// negative table (truncated, trailing, negative counts, short/oversize lengths — oversize refused
// from the 5-byte header alone —, unknown types, unterminated strings, bad format codes, oversize
// or old-protocol startup packets, duplicate startup keys): each throws ProtocolError and nothing
// else.
//
// Messages are built with pg-protocol's `serialize`, as the real `pg` client builds them.

import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { serialize } from 'pg-protocol'
import {
  CANCEL_REQUEST_CODE,
  expectEmpty,
  GSSENC_REQUEST_CODE,
  MAX_STARTUP_PACKET,
  MessageReader,
  PROTOCOL_3_0,
  parseBind,
  parseExecute,
  parseParse,
  parsePassword,
  parseQuery,
  parseTarget,
  SSL_REQUEST_CODE,
  StartupReader,
} from '../proxies/postgres/frontend.js'
import {
  type BindSpec,
  bindBody,
  body,
  CAP,
  drainMessages,
  drainStartup,
  startupOfLength,
  startupPacket,
  startupParams,
  throwsProtocolError,
} from './helpers/frontend-parser.js'
import { cstr, int16, int32, msg } from './helpers/wire.js'

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
