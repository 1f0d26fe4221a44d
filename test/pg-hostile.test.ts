// Hostile PostgreSQL clients against a real gateway process (STYLE.md habits 3, 4 and 10). A
// healthy `pg` session queries the gateway all along while raw TCP sockets send what no client
// should: oversize and garbage startup packets, truncated packets, unknown message types, a 64 MiB
// length word (refused from the header, without waiting for the body), negative counts, a
// FunctionCall (refused in place, the session stays usable), a PasswordMessage after
// authentication, and random bytes after a valid authentication (fast-check, time-capped). Each
// hostile socket gets an ErrorResponse with the expected SQLSTATE and/or is closed; the healthy
// session keeps answering, the gateway process stays up, and it never logs an internal error.

import assert from 'node:assert/strict'
import { connect, type Socket } from 'node:net'
import { after, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import fc from 'fast-check'
import pg from 'pg'
import { serialize } from 'pg-protocol'
import { direct, TestGateway } from './helpers/gateway.js'
import { cstr, int16, int32, msg } from './helpers/wire.js'

// ---- wire helpers -------------------------------------------------------------------------------

const PROTOCOL_3_0 = 196608

/** A startup-phase packet: Int32 length (itself included), Int32 code, rest. */
function startupPacket(code: number, rest: Buffer): Buffer {
  return Buffer.concat([int32(rest.length + 8), int32(code), rest])
}

interface BackendMsg {
  readonly type: string
  readonly body: Buffer
}

/** The fields of an ErrorResponse/NoticeResponse body, keyed by their one-letter codes. */
function errorFields(body: Buffer): Map<string, string> {
  const out = new Map<string, string>()
  let pos = 0
  while (pos < body.length && body[pos] !== 0) {
    const end = body.indexOf(0, pos + 1)
    if (end < 0) break
    out.set(String.fromCharCode(body[pos] as number), body.toString('utf8', pos + 1, end))
    pos = end + 1
  }
  return out
}

/** A raw TCP client that frames what the gateway sends back (type byte + Int32 length). */
class RawClient {
  private buf = Buffer.alloc(0)
  readonly messages: BackendMsg[] = []
  closed = false
  error: Error | null = null

  private constructor(readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d])
      while (this.buf.length >= 5) {
        const len = this.buf.readInt32BE(1)
        if (len < 4 || this.buf.length < len + 1) break
        this.messages.push({ type: String.fromCharCode(this.buf[0] as number), body: this.buf.subarray(5, len + 1) })
        this.buf = this.buf.subarray(len + 1)
      }
    })
    // Writing to a socket the gateway has already closed is expected here: EPIPE/ECONNRESET.
    socket.on('error', (e) => {
      this.error = e
    })
    socket.on('close', () => {
      this.closed = true
    })
  }

  static connect(port: number): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port })
      s.once('error', reject)
      s.once('connect', () => {
        s.removeListener('error', reject)
        resolve(new RawClient(s))
      })
    })
  }

  send(b: Buffer): void {
    if (!this.socket.destroyed && this.socket.writable) this.socket.write(b)
  }

  /** Polls until pred holds; fails with `what` after timeoutMs. */
  async until(pred: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (!pred()) {
      if (Date.now() > deadline) {
        assert.fail(`timed out waiting for ${what}; got ${this.messages.map((m) => m.type).join('') || 'nothing'}, closed=${this.closed}`)
      }
      await sleep(5)
    }
  }

  count(type: string): number {
    return this.messages.filter((m) => m.type === type).length
  }

  errors(): Map<string, string>[] {
    return this.messages.filter((m) => m.type === 'E').map((m) => errorFields(m.body))
  }

  destroy(): void {
    this.socket.destroy()
  }
}

/** StartupMessage → AuthenticationCleartextPassword → PasswordMessage(token) → ReadyForQuery. */
async function authenticate(port: number, token: string): Promise<RawClient> {
  const c = await RawClient.connect(port)
  c.send(serialize.startup({ user: 'alice', database: 'app' }))
  await c.until(() => c.count('R') > 0 || c.closed, 'AuthenticationCleartextPassword')
  const r = c.messages.find((m) => m.type === 'R')
  assert.ok(r, 'the gateway asked for a password')
  assert.equal(r.body.readInt32BE(0), 3, 'AuthenticationCleartextPassword')
  c.send(serialize.password(token))
  await c.until(() => c.count('Z') > 0 || c.closed, 'ReadyForQuery after authentication', 15_000)
  assert.deepEqual(c.errors(), [], 'authentication succeeded')
  assert.equal(c.count('Z'), 1)
  c.messages.length = 0
  return c
}

/** The socket gets an ErrorResponse with this SQLSTATE and is closed by the gateway. */
async function expectFatal(c: RawClient, sqlstate: string, what: string, timeoutMs = 5000): Promise<void> {
  await c.until(() => c.closed, `${what}: the gateway closing the socket`, timeoutMs)
  const codes = c.errors().map((f) => f.get('C'))
  assert.ok(codes.includes(sqlstate), `${what}: want an ErrorResponse ${sqlstate}, got ${JSON.stringify(codes)}`)
  const e = c.errors().find((f) => f.get('C') === sqlstate)
  assert.equal(e?.get('S'), 'FATAL', `${what}: severity`)
}

/** The socket is closed without a reply, as PostgreSQL closes on a startup length word out of range. */
async function expectSilentClose(c: RawClient, what: string, timeoutMs = 5000): Promise<void> {
  await c.until(() => c.closed, `${what}: the gateway closing the socket`, timeoutMs)
  assert.deepEqual(
    c.messages.map((m) => m.type),
    [],
    `${what}: nothing is sent back`,
  )
}

// ---- the gateway and the healthy session --------------------------------------------------------

describe('PostgreSQL proxy: hostile clients', { timeout: 180_000 }, () => {
  let gw: TestGateway
  let token: string
  let healthy: pg.Client
  let heartbeat: Promise<void> = Promise.resolve()
  let stopHeartbeat = false
  let beats = 0
  const heartbeatFailures: unknown[] = []

  before(async () => {
    gw = await TestGateway.start()
    token = gw.token()
    healthy = new pg.Client({ host: '127.0.0.1', port: gw.pgPort, database: 'app', user: 'alice', password: token })
    healthy.on('error', (e) => heartbeatFailures.push(e))
    await healthy.connect()
    // Keeps the healthy session busy while hostile sockets come and go.
    heartbeat = (async () => {
      while (!stopHeartbeat) {
        try {
          const r = await healthy.query<{ one: number }>('SELECT 1 AS one')
          assert.equal(r.rows[0]?.one, 1)
          beats++
        } catch (e) {
          heartbeatFailures.push(e)
        }
        await sleep(10)
      }
    })()
  })

  after(async () => {
    stopHeartbeat = true
    await heartbeat
    await healthy?.end().catch(() => undefined)
    await gw?.cleanup()
  })

  /** The healthy session answers, the gateway is alive, and nothing reached its internal-error path. */
  async function assertHealthy(what: string): Promise<void> {
    const r = await healthy.query<{ two: number }>('SELECT 1 + 1 AS two')
    assert.equal(r.rows[0]?.two, 2, `${what}: the healthy session answers`)
    assert.equal(gw.proc?.exitCode, null, `${what}: the gateway process is alive`)
    assert.equal(gw.proc?.signalCode, null, `${what}: the gateway process is alive`)
    assert.deepEqual(heartbeatFailures, [], `${what}: the heartbeat never failed`)
    assert.doesNotMatch(gw.stderr + gw.stdout, /internal error in the PostgreSQL proxy/, `${what}: no internal error logged`)
  }

  // ---- before authentication ------------------------------------------------------------------

  test('a startup packet with length 2^31-1 is refused from its length word (closed without a reply, as PostgreSQL does)', async () => {
    const c = await RawClient.connect(gw.pgPort)
    c.send(Buffer.concat([int32(2 ** 31 - 1), int32(PROTOCOL_3_0)]))
    await expectSilentClose(c, 'length 2^31-1')
    await assertHealthy('length 2^31-1')
  })

  test('a 20000-byte startup packet is refused (closed without a reply)', async () => {
    const c = await RawClient.connect(gw.pgPort)
    const params = Buffer.concat([
      cstr('user'),
      cstr('alice'),
      cstr('application_name'),
      cstr('x'.repeat(20000 - 8 - 11 - 17 - 2)),
      Buffer.from([0]),
    ])
    const pkt = startupPacket(PROTOCOL_3_0, params)
    assert.equal(pkt.length, 20000)
    c.send(pkt)
    await expectSilentClose(c, '20000-byte startup')
    await assertHealthy('20000-byte startup')
  })

  test('garbage bytes instead of a startup packet are refused (08P01, or closed without a reply for a length out of range)', async () => {
    for (const [name, bytes] of [
      ['an HTTP request', Buffer.from('GET / HTTP/1.1\r\nHost: gatehouse\r\n\r\n')],
      ['a length word of 3', Buffer.from([0, 0, 0, 3, 1, 2, 3, 4])],
      ['a negative length word', Buffer.from([0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 0])],
    ] as const) {
      const c = await RawClient.connect(gw.pgPort)
      c.send(bytes)
      await expectSilentClose(c, name)
    }
    for (const [name, bytes] of [
      ['protocol 2.0', startupPacket(2 << 16, Buffer.concat([cstr('user'), cstr('x'), Buffer.from([0])]))],
      [
        'a duplicate startup key',
        startupPacket(PROTOCOL_3_0, Buffer.concat([cstr('user'), cstr('a'), cstr('user'), cstr('b'), Buffer.from([0])])),
      ],
      ['an unterminated startup packet', startupPacket(PROTOCOL_3_0, Buffer.from('user\0alice'))],
      ['bytes after an SSLRequest, before the handshake (CVE-2021-23214)', Buffer.concat([serialize.requestSsl(), Buffer.from('early')])],
    ] as const) {
      const c = await RawClient.connect(gw.pgPort)
      c.send(bytes)
      await expectFatal(c, '08P01', name)
    }
    await assertHealthy('garbage startup')
  })

  test('a bogus TLS handshake, a truncated startup then close, a CancelRequest with an unknown key: closed quietly', async () => {
    const tls = await RawClient.connect(gw.pgPort)
    tls.send(Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x00, 0x40]), Buffer.alloc(64, 0xee)]))
    await tls.until(() => tls.closed, 'the bogus TLS handshake closing')

    const truncated = await RawClient.connect(gw.pgPort)
    truncated.send(serialize.startup({ user: 'alice', database: 'app' }).subarray(0, 13))
    await sleep(50)
    truncated.socket.end()
    await truncated.until(() => truncated.closed, 'the truncated startup closing')
    assert.deepEqual(truncated.messages, [])

    const cancel = await RawClient.connect(gw.pgPort)
    cancel.send(serialize.cancel(12345, 67890))
    await cancel.until(() => cancel.closed, 'the CancelRequest closing')
    assert.deepEqual(cancel.messages, [])
    await assertHealthy('quiet closes')
  })

  test('during authentication: a Query instead of a password, and an oversize password header (08P01)', async () => {
    for (const [name, bytes] of [
      ['a Query', serialize.query('SELECT 1')],
      ['a 1 MiB PasswordMessage header', Buffer.concat([Buffer.from('p'), int32(1024 * 1024)])],
    ] as const) {
      const c = await RawClient.connect(gw.pgPort)
      c.send(serialize.startup({ user: 'alice', database: 'app' }))
      await c.until(() => c.count('R') > 0, 'AuthenticationCleartextPassword')
      c.send(bytes)
      await expectFatal(c, '08P01', name)
    }
    await assertHealthy('during authentication')
  })

  test('a StartupMessage and its PasswordMessage in one write: the password is not dropped', async () => {
    // The gateway asks for the password before the client could have seen the request, but bytes
    // already received after the StartupMessage must be read as the next message, as PostgreSQL does.
    const c = await RawClient.connect(gw.pgPort)
    try {
      c.send(Buffer.concat([serialize.startup({ user: 'alice', database: 'app' }), serialize.password(token)]))
      await c.until(() => c.count('Z') > 0 || c.closed, 'ReadyForQuery after a pipelined password', 3000)
      assert.deepEqual(c.errors(), [])
      c.send(serialize.end())
      await c.until(() => c.closed, 'Terminate closing the socket')
    } finally {
      c.destroy()
    }
    await assertHealthy('pipelined password')
  })

  // ---- after authentication -------------------------------------------------------------------

  test('an unknown message type is refused (08P01)', async () => {
    const c = await authenticate(gw.pgPort, token)
    c.send(msg('A', Buffer.from('hello')))
    await expectFatal(c, '08P01', 'unknown type')
    await assertHealthy('unknown type')
  })

  test('a Query whose length word says 64 MiB is refused from its header, without waiting for the body (08P01)', async () => {
    const c = await authenticate(gw.pgPort, token)
    const started = Date.now()
    c.send(Buffer.concat([Buffer.from('Q'), int32(64 * 1024 * 1024), Buffer.from('SELECT ')]))
    await expectFatal(c, '08P01', '64 MiB Query', 3000)
    assert.ok(Date.now() - started < 3000, 'refused promptly')
    await assertHealthy('64 MiB Query')
  })

  test('a Bind with a negative parameter count is refused (08P01)', async () => {
    const c = await authenticate(gw.pgPort, token)
    c.send(
      Buffer.concat([
        serialize.parse({ text: 'SELECT $1::int' }),
        msg('B', Buffer.concat([cstr(''), cstr(''), int16(0), int16(-1), int16(0)])),
        serialize.sync(),
      ]),
    )
    await expectFatal(c, '08P01', 'negative Bind count')
    await assertHealthy('negative Bind count')
  })

  test('other malformed messages after authentication are refused (08P01)', async () => {
    for (const [name, bytes] of [
      ['a length word of 3', msg('Q', Buffer.alloc(0), 3)],
      ['an unterminated Query', msg('Q', Buffer.from('SELECT 1'))],
      ['a Parse with a negative parameter-type count', msg('P', Buffer.concat([cstr(''), cstr('SELECT 1'), int16(-5)]))],
      ['a Bind with format code 7', msg('B', Buffer.concat([cstr(''), cstr(''), int16(1), int16(7), int16(0), int16(0)]))],
      ['an Execute without its row count', msg('E', cstr(''))],
      ['a Describe of target X', msg('D', Buffer.from('Xname\0'))],
      ['a Sync with a body', msg('S', Buffer.from([1]))],
      ['a second StartupMessage', serialize.startup({ user: 'alice', database: 'app' })],
    ] as const) {
      const c = await authenticate(gw.pgPort, token)
      c.send(bytes)
      await expectFatal(c, '08P01', name)
    }
    await assertHealthy('malformed messages')
  })

  test('a FunctionCall is refused with 42501 and the session stays usable', async () => {
    const c = await authenticate(gw.pgPort, token)
    // FunctionCall: function OID, 0 argument format codes, 0 arguments, result format 0.
    c.send(msg('F', Buffer.concat([int32(1598), int16(0), int16(0), int16(0)])))
    await c.until(() => c.count('Z') > 0 || c.closed, 'ReadyForQuery after the refused FunctionCall')
    assert.equal(c.closed, false, 'the session stays open')
    assert.deepEqual(
      c.errors().map((f) => [f.get('S'), f.get('C')]),
      [['ERROR', '42501']],
    )
    assert.match(c.errors()[0]?.get('M') ?? '', /^gatehouse: .*FunctionCall/)
    assert.equal(c.messages.at(-1)?.body.toString(), 'I', 'ReadyForQuery: idle')
    c.messages.length = 0
    c.send(serialize.query("SELECT 'still here' AS s"))
    await c.until(() => c.count('Z') > 0 || c.closed, 'ReadyForQuery after the follow-up Query')
    assert.deepEqual(
      c.messages.map((m) => m.type),
      ['T', 'D', 'C', 'Z'],
    )
    const row = c.messages[1]?.body
    assert.ok(row)
    assert.equal(row.toString('utf8', 6), 'still here')
    c.send(serialize.end())
    await c.until(() => c.closed, 'Terminate closing the socket')
    await assertHealthy('FunctionCall')
  })

  test('a PasswordMessage after authentication is refused (08P01)', async () => {
    const c = await authenticate(gw.pgPort, token)
    c.send(serialize.password(token))
    await expectFatal(c, '08P01', 'PasswordMessage after auth')
    await assertHealthy('PasswordMessage after auth')
  })

  // ---- server messages larger than one socket read --------------------------------------------

  test('a server ErrorResponse larger than one socket read reaches the client whole, and the session goes on', async () => {
    // Collected messages (ErrorResponse, CommandComplete, ReadyForQuery) that span TCP reads go
    // through BackendScanner's collect path; see backend-scanner.test.ts for the split-level cases.
    // A function, not a DO block: the default policy refuses DO (the classifier cannot see into it).
    direct(
      "CREATE OR REPLACE FUNCTION gh_hostile_raise(n int) RETURNS void LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '%', repeat('x', n); END $$",
    )
    // A user-defined function may do anything (its body is opaque): calling one is a write.
    const writer = gw.token('user:wally', ['--group', 'writers'])
    const c = new pg.Client({ host: '127.0.0.1', port: gw.pgPort, database: 'app', user: 'wally', password: writer })
    const clientErrors: unknown[] = []
    c.on('error', (e) => clientErrors.push(e))
    await c.connect()
    const within = <T>(p: Promise<T>, what: string): Promise<T> =>
      Promise.race([p, sleep(5000).then(() => assert.fail(`${what}: no answer within 5 s (the stream through the gateway is corrupt)`))])
    try {
      for (const n of [100, 70_000, 300_000]) {
        const err = await within(
          c.query(`SELECT gh_hostile_raise(${n})`).then(
            () => assert.fail('the DO block raised'),
            (e: unknown) => e,
          ),
          `RAISE of ${n} bytes`,
        )
        assert.ok(err instanceof pg.DatabaseError, `RAISE of ${n} bytes: a DatabaseError, got ${String(err)}`)
        assert.equal(err.code, 'P0001')
        assert.equal(err.message, 'x'.repeat(n))
        const r = await within(c.query<{ one: number }>('SELECT 1 AS one'), `SELECT 1 after a ${n}-byte error`)
        assert.equal(r.rows[0]?.one, 1)
      }
      assert.deepEqual(clientErrors, [])
    } finally {
      await Promise.race([c.end().catch(() => undefined), sleep(2000)])
    }
    await assertHealthy('large ErrorResponse')
  })

  // ---- fast-check: random bytes after a valid authentication ----------------------------------

  test('random bytes after a valid authentication never crash the gateway (fast-check, ~20 s cap)', async () => {
    const TYPES = [0x42, 0x43, 0x44, 0x45, 0x46, 0x48, 0x50, 0x51, 0x53, 0x58, 0x63, 0x64, 0x66, 0x70, 0x00, 0x41, 0xff]
    const hostileByte = fc.oneof(fc.integer({ min: 0, max: 255 }), fc.constantFrom(0, 0, 0xff, 1, 0x53, 0x50))
    const frame = fc
      .tuple(
        fc.constantFrom(...TYPES),
        fc.array(hostileByte, { maxLength: 40 }),
        fc.option(fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 })),
      )
      .map(([t, body, len]) => msg(t, Buffer.from(body), len ?? body.length + 4))
    const garbage = fc.oneof(
      fc.uint8Array({ minLength: 1, maxLength: 300 }).map((u) => Buffer.from(u)),
      fc.array(frame, { minLength: 1, maxLength: 6 }).map((fs) => Buffer.concat(fs)),
    )
    let runs = 0
    await fc.assert(
      fc.asyncProperty(garbage, async (bytes) => {
        runs++
        const c = await authenticate(gw.pgPort, token)
        c.send(bytes)
        // The gateway may close the socket, answer, or wait for the rest of a frame: give it a moment.
        const deadline = Date.now() + 300
        while (!c.closed && Date.now() < deadline) await sleep(10)
        for (const e of c.errors()) assert.notEqual(e.get('C'), 'XX000', 'no internal error reaches the client')
        c.destroy()
        await assertHealthy(`garbage ${bytes.toString('hex').slice(0, 80)}`)
      }),
      { numRuns: 120, interruptAfterTimeLimit: 20_000 },
    )
    assert.ok(runs >= 5, `only ${runs} runs in the time cap`)
    assert.ok(beats > 0, 'the heartbeat ran')
  })
})
