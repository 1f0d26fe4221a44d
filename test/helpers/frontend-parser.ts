// What the frontend-parser test files share: hand-built messages, a model client session, splitting, ProtocolError checks.

import assert from 'node:assert/strict'
import {
  expectEmpty,
  type Frame,
  FrontendCode,
  MessageReader,
  PROTOCOL_3_0,
  ProtocolError,
  parseBind,
  parseExecute,
  parseParse,
  parsePassword,
  parseQuery,
  parseTarget,
  type StartupPacket,
  StartupReader,
} from '../../proxies/postgres/frontend.js'
import { cstr, int16, int32 } from './wire.js'

/** The gateway's default cap after authentication (engine/config/config.ts DEFAULT_MAX_MESSAGE_BYTES). */
export const CAP = 16 * 1024 * 1024

// ---- building messages ------------------------------------------------------------------------

/** A startup-phase packet: Int32 length (itself included), Int32 code, rest. */
export function startupPacket(code: number, rest: Buffer = Buffer.alloc(0), lengthWord = rest.length + 8): Buffer {
  return Buffer.concat([int32(lengthWord), int32(code), rest])
}

export function startupParams(pairs: readonly (readonly [string, string])[], code = PROTOCOL_3_0): Buffer {
  return startupPacket(code, Buffer.concat([...pairs.map(([k, v]) => Buffer.concat([cstr(k), cstr(v)])), Buffer.from([0])]))
}

/** A valid StartupMessage of exactly n bytes (one application_name padded to fit). */
export function startupOfLength(n: number): Buffer {
  const fixed = startupParams([['application_name', '']]).length
  const out = startupParams([['application_name', 'x'.repeat(n - fixed)]])
  assert.equal(out.length, n)
  return out
}

export interface BindSpec {
  readonly portal: string
  readonly statement: string
  readonly formats: readonly number[]
  readonly params: readonly (Buffer | null)[]
  readonly results: readonly number[]
}

/** A Bind body built by hand, for the 0/1/N format-code forms pg-protocol never produces. */
export function bindBody(b: BindSpec): Buffer {
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

export function body(m: Buffer): Buffer {
  return m.subarray(5)
}

// ---- a model client session -------------------------------------------------------------------

export type Json = null | boolean | number | string | readonly Json[] | { readonly [k: string]: Json }

export const NAMES: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(FrontendCode)
    .filter((e): e is [string, number] => typeof e[1] === 'number')
    .map(([k, v]) => [v, k]),
)

/** What a frame says, as plain data (buffers as hex), through the body parser for its type. */
export function parseFrame(f: Frame): Json {
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

export function packetJson(p: StartupPacket): Json {
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

export interface FrameEvent {
  readonly type: string
  readonly raw: string
  readonly parsed: Json
}

export interface SessionResult {
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
export function runSession(chunks: Iterable<Buffer>, cap = CAP): SessionResult {
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

export function splitAt(buf: Buffer, offsets: readonly number[]): Buffer[] {
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

export function* bytewise(buf: Buffer): Generator<Buffer> {
  for (let i = 0; i < buf.length; i++) yield buf.subarray(i, i + 1)
}

export function assertSplitInvariant(name: string, stream: Buffer, opts: { pairs?: boolean } = {}): SessionResult {
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

export function isProtocolError(e: unknown): boolean {
  return e instanceof ProtocolError && e.code === 'GH_ERR_PROTOCOL' && e.publicMessage.startsWith('protocol violation: ')
}

export function throwsProtocolError(fn: () => unknown, what: string): void {
  assert.throws(fn, (e: unknown) => {
    if (!isProtocolError(e)) assert.fail(`${what}: expected a ProtocolError, got ${e instanceof Error ? e.stack : String(e)}`)
    return true
  })
}

/** Runs fn; a ProtocolError is an acceptable outcome, anything else thrown fails the test. */
export function onlyProtocolErrors(fn: () => unknown): void {
  try {
    fn()
  } catch (e) {
    if (!isProtocolError(e)) throw e
  }
}

/** Drains a reader completely (until it waits for more bytes or throws). */
export function drainMessages(chunks: readonly Buffer[], cap = CAP): Json[] {
  const r = new MessageReader(cap)
  const out: Json[] = []
  for (const c of chunks) {
    r.push(c)
    for (let f = r.next(); f !== null; f = r.next()) out.push(parseFrame(f))
  }
  return out
}

export function drainStartup(chunks: readonly Buffer[]): Json[] {
  const r = new StartupReader()
  const out: Json[] = []
  for (const c of chunks) {
    r.push(c)
    for (let p = r.next(); p !== null; p = r.next()) out.push(packetJson(p))
  }
  return out
}

export const UNICODE_SQL = "SELECT 'ä€𝄞 日本語 🙂', $1::text -- ünïcödé"
