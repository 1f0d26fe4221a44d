// What a PostgreSQL client sends, parsed by our own code: the startup-phase packets (SSLRequest,
// GSSENCRequest, CancelRequest, StartupMessage) and the typed messages after it. Small, capped
// before buffering, bounds-checked everywhere; every failure is a ProtocolError that closes only
// the offending session. Message formats: PostgreSQL docs, "Message Formats" (protocol 3.0).

import { GatehouseError } from '../kit/index.js'

/** PostgreSQL's MAX_STARTUP_PACKET_LENGTH (src/include/libpq/pqcomm.h): the server's own cap. */
export const MAX_STARTUP_PACKET = 10000
/** A password message carries a Gatehouse token (< 1,000 characters); anything much larger is hostile. */
export const MAX_PASSWORD_MESSAGE = 8192

export const SSL_REQUEST_CODE = 80877103
export const GSSENC_REQUEST_CODE = 80877104
export const CANCEL_REQUEST_CODE = 80877102
export const PROTOCOL_3_0 = 196608

export enum FrontendCode {
  Bind = 0x42, // B
  Close = 0x43, // C
  Describe = 0x44, // D
  Execute = 0x45, // E
  FunctionCall = 0x46, // F
  Flush = 0x48, // H
  Parse = 0x50, // P
  Query = 0x51, // Q
  Sync = 0x53, // S
  Terminate = 0x58, // X
  CopyDone = 0x63, // c
  CopyData = 0x64, // d
  CopyFail = 0x66, // f
  Password = 0x70, // p (also SASLInitialResponse/SASLResponse/GSSResponse)
}

const KNOWN_TYPES = new Set<number>([
  FrontendCode.Bind,
  FrontendCode.Close,
  FrontendCode.Describe,
  FrontendCode.Execute,
  FrontendCode.FunctionCall,
  FrontendCode.Flush,
  FrontendCode.Parse,
  FrontendCode.Query,
  FrontendCode.Sync,
  FrontendCode.Terminate,
  FrontendCode.CopyDone,
  FrontendCode.CopyData,
  FrontendCode.CopyFail,
  FrontendCode.Password,
])

export class ProtocolError extends GatehouseError {
  constructor(message: string) {
    super('GH_ERR_PROTOCOL', message, { publicMessage: `protocol violation: ${message}` })
  }
}

/**
 * A startup packet whose length word is out of range — also what a client's Terminate sent before
 * any StartupMessage reads as. PostgreSQL answers this with nothing (ProcessStartupPacket logs it
 * as COMMERROR and closes), and so does the gateway.
 */
export class StartupLengthError extends ProtocolError {
  constructor(readonly length: number) {
    super(`invalid startup packet length ${length}`)
  }
}

export type StartupPacket =
  | { readonly kind: 'ssl' }
  | { readonly kind: 'gssenc' }
  | { readonly kind: 'cancel'; readonly pid: number; readonly secret: Buffer }
  | { readonly kind: 'startup'; readonly major: number; readonly minor: number; readonly params: ReadonlyMap<string, string> }

export interface Frame {
  readonly type: number
  /** The whole message, type byte and length included: what is forwarded untouched. */
  readonly raw: Buffer
  /** The payload after the length word. */
  readonly body: Buffer
}

const EMPTY = Buffer.alloc(0)

/** The smallest buffer the accumulator allocates for a partial message (most messages fit). */
const MIN_CAPACITY = 16 * 1024
/** Buffers from this size on are kept for reuse once the owner says their frames are done with. */
const REUSE_FROM = 64 * 1024
/** A kept buffer is dropped after this long without a large frame to fill it. */
const SPARE_KEEP_MS = 10_000

/**
 * Accumulates bytes and hands out complete frames, in the manner of pg-protocol's parser: one
 * growing buffer with a read and a write cursor; only complete messages are framed, the partial
 * tail is kept. Frames are views, not copies, so bytes a frame covers are never written again: a
 * partial tail moves to a fresh buffer instead of to the front of this one (a frame handed out
 * earlier may still be queued on a socket). The fresh buffer is sized for the whole frame once its
 * length word is known, or doubles, so a message split across many reads is copied once, not once
 * per read.
 */
class Accumulator {
  protected buf: Buffer = EMPTY
  protected off = 0
  /** End of the received bytes in `buf`. */
  protected end = 0
  /** Whether `buf` was allocated here (the space after `end` is ours to fill). */
  private owned = false
  /**
   * A large buffer of ours that no longer receives bytes, while frames cut from it may still be
   * in use (queued on a socket, being judged): reusable only once the owner says so (`recycle`).
   */
  private retired: Buffer | null = null
  /** A large buffer no frame refers to any more, for the next large frame: a fresh one of
   * megabytes costs a page fault per page on first touch, more than copying the frame into it. */
  private spare: Buffer | null = null
  private spareTimer: NodeJS.Timeout | null = null

  push(chunk: Buffer): void {
    if (chunk.length === 0) return
    if (this.owned && this.end + chunk.length <= this.buf.length) {
      chunk.copy(this.buf, this.end)
      this.end += chunk.length
      return
    }
    const pending = this.end - this.off
    if (pending === 0) {
      // Nothing kept: the chunk itself becomes the buffer, without a copy.
      this.leave()
      this.buf = chunk
      this.off = 0
      this.end = chunk.length
      this.owned = false
      return
    }
    const needed = pending + chunk.length
    // Sized for the whole frame once its length word is in; before that, doubled, so a frame
    // whose length is not yet known still has its bytes copied a bounded number of times.
    const frame = this.frameSize()
    const next = this.allocate(Math.max(MIN_CAPACITY, needed, frame > 0 ? frame : needed * 2))
    this.buf.copy(next, 0, this.off, this.end)
    chunk.copy(next, pending)
    this.leave()
    this.buf = next
    this.off = 0
    this.end = needed
    this.owned = true
  }

  /** `buf` is about to be replaced: a large one of ours is retired (its frames may be in use). */
  private leave(): void {
    if (this.owned && this.buf.length >= REUSE_FROM) this.retired = this.buf
  }

  private allocate(size: number): Buffer {
    const spare = this.spare
    if (spare !== null && spare.length >= size) {
      this.spare = null
      return spare
    }
    return Buffer.allocUnsafeSlow(size)
  }

  /**
   * The buffer retired last (null: none), to pass to `recycle` once nothing refers to its frames.
   * When everything received has been framed, a large current buffer is retired now rather than
   * at the next read, so the next large frame can have it.
   */
  retire(): Buffer | null {
    if (this.owned && this.off === this.end) {
      this.leave()
      this.buf = EMPTY
      this.off = 0
      this.end = 0
      this.owned = false
    }
    return this.retired
  }

  /**
   * The owner's word that no frame cut from `buf` (from `retire`) is referenced any more —
   * every one handled, and every write of one to a socket completed — so its memory may hold the
   * next large frame. Only the owner can know this; a buffer it does not vouch for is never reused.
   */
  recycle(buf: Buffer): void {
    if (buf !== this.retired) return
    this.retired = null
    if (this.spare === null || buf.length > this.spare.length) this.spare = buf
    if (this.spareTimer) this.spareTimer.refresh()
    else {
      this.spareTimer = setTimeout(() => {
        this.spare = null
        this.spareTimer = null
      }, SPARE_KEEP_MS)
      this.spareTimer.unref()
    }
  }

  /** The size of the frame at the read cursor once its length word is in and within the cap; else 0. */
  protected frameSize(): number {
    return 0
  }

  get pending(): number {
    return this.end - this.off
  }

  /** Bytes received but not yet framed (used when TLS takes over the socket). */
  takeRest(): Buffer {
    const rest = this.buf.subarray(this.off, this.end)
    this.buf = EMPTY
    this.off = 0
    this.end = 0
    this.owned = false
    return rest
  }
}

/** Frames the startup phase: packets with no type byte, just an Int32 length and a code. */
export class StartupReader extends Accumulator {
  protected override frameSize(): number {
    if (this.end - this.off < 4) return 0
    const len = this.buf.readInt32BE(this.off)
    return len >= 8 && len <= MAX_STARTUP_PACKET ? len : 0
  }

  next(): StartupPacket | null {
    const avail = this.end - this.off
    if (avail < 4) return null
    const len = this.buf.readInt32BE(this.off)
    if (len < 8 || len > MAX_STARTUP_PACKET) throw new StartupLengthError(len)
    if (avail < len) return null
    const pkt = this.buf.subarray(this.off, this.off + len)
    this.off += len
    return parseStartupPacket(pkt)
  }
}

export function parseStartupPacket(pkt: Buffer): StartupPacket {
  const code = pkt.readInt32BE(4)
  if (code === SSL_REQUEST_CODE) {
    if (pkt.length !== 8) throw new ProtocolError('invalid SSLRequest length')
    return { kind: 'ssl' }
  }
  if (code === GSSENC_REQUEST_CODE) {
    if (pkt.length !== 8) throw new ProtocolError('invalid GSSENCRequest length')
    return { kind: 'gssenc' }
  }
  if (code === CANCEL_REQUEST_CODE) {
    // Protocol 3.0 keys are 4 bytes; 3.2 allows up to 256. Keep the key opaque.
    if (pkt.length < 16 || pkt.length > 12 + 256) throw new ProtocolError('invalid CancelRequest length')
    return { kind: 'cancel', pid: pkt.readInt32BE(8), secret: Buffer.from(pkt.subarray(12)) }
  }
  const major = code >>> 16
  const minor = code & 0xffff
  if (major !== 3) throw new ProtocolError(`unsupported protocol version ${major}.${minor}`)
  const params = new Map<string, string>()
  let pos = 8
  for (;;) {
    if (pos >= pkt.length) throw new ProtocolError('startup packet is not terminated')
    if (pkt[pos] === 0) {
      if (pos !== pkt.length - 1) throw new ProtocolError('trailing bytes after startup parameters')
      break
    }
    const [key, afterKey] = readCString(pkt, pos)
    const [value, afterValue] = readCString(pkt, afterKey)
    if (params.has(key)) throw new ProtocolError(`duplicate startup parameter ${JSON.stringify(key)}`)
    params.set(key, value)
    pos = afterValue
  }
  return { kind: 'startup', major, minor, params }
}

/** Frames typed messages after the startup phase, refusing unknown types and oversized frames. */
export class MessageReader extends Accumulator {
  constructor(private maxBytes: number) {
    super()
  }

  setLimit(maxBytes: number): void {
    this.maxBytes = maxBytes
  }

  protected override frameSize(): number {
    if (this.end - this.off < 5) return 0
    const len = this.buf.readInt32BE(this.off + 1)
    return len >= 4 && len + 1 <= this.maxBytes ? len + 1 : 0
  }

  next(): Frame | null {
    const avail = this.end - this.off
    if (avail < 5) return null
    const type = this.buf[this.off] as number
    if (!KNOWN_TYPES.has(type)) throw new ProtocolError(`unknown message type 0x${type.toString(16).padStart(2, '0')}`)
    const len = this.buf.readInt32BE(this.off + 1)
    if (len < 4) throw new ProtocolError(`invalid message length ${len}`)
    // Cap before buffering: the length word is checked before the body is waited for.
    if (len + 1 > this.maxBytes) throw new ProtocolError(`message of ${len + 1} bytes exceeds the limit of ${this.maxBytes}`)
    if (avail < len + 1) return null
    const raw = this.buf.subarray(this.off, this.off + len + 1)
    this.off += len + 1
    return { type, raw, body: raw.subarray(5) }
  }
}

export function readCString(buf: Buffer, pos: number): [string, number] {
  const end = buf.indexOf(0, pos)
  if (end < 0) throw new ProtocolError('unterminated string')
  return [buf.toString('utf8', pos, end), end + 1]
}

function need(buf: Buffer, pos: number, n: number, what: string): void {
  if (pos + n > buf.length) throw new ProtocolError(`truncated ${what}`)
}

function done(buf: Buffer, pos: number, what: string): void {
  if (pos !== buf.length) throw new ProtocolError(`trailing bytes in ${what}`)
}

export function parseQuery(body: Buffer): string {
  const [sql, pos] = readCString(body, 0)
  done(body, pos, 'Query')
  return sql
}

export function parsePassword(body: Buffer): string {
  const [pw, pos] = readCString(body, 0)
  done(body, pos, 'PasswordMessage')
  return pw
}

export interface ParseMessage {
  readonly name: string
  readonly sql: string
  readonly paramTypes: readonly number[]
}

export function parseParse(body: Buffer): ParseMessage {
  const [name, p1] = readCString(body, 0)
  const [sql, p2] = readCString(body, p1)
  need(body, p2, 2, 'Parse')
  const n = body.readInt16BE(p2)
  if (n < 0) throw new ProtocolError('negative parameter count in Parse')
  need(body, p2 + 2, n * 4, 'Parse')
  const paramTypes: number[] = []
  for (let i = 0; i < n; i++) paramTypes.push(body.readUInt32BE(p2 + 2 + i * 4))
  done(body, p2 + 2 + n * 4, 'Parse')
  return { name, sql, paramTypes }
}

export interface BindMessage {
  readonly portal: string
  readonly statement: string
  /** 0 = text, 1 = binary, per parameter (expanded from the 0/1/N format-code forms). */
  readonly paramFormats: readonly number[]
  readonly params: readonly (Buffer | null)[]
  readonly resultFormats: readonly number[]
}

export function parseBind(body: Buffer): BindMessage {
  const [portal, p1] = readCString(body, 0)
  const [statement, p2] = readCString(body, p1)
  let pos = p2
  need(body, pos, 2, 'Bind')
  const nf = body.readInt16BE(pos)
  pos += 2
  if (nf < 0) throw new ProtocolError('negative format count in Bind')
  need(body, pos, nf * 2, 'Bind')
  const fmts: number[] = []
  for (let i = 0; i < nf; i++) fmts.push(body.readInt16BE(pos + i * 2))
  pos += nf * 2
  need(body, pos, 2, 'Bind')
  const np = body.readInt16BE(pos)
  pos += 2
  if (np < 0) throw new ProtocolError('negative parameter count in Bind')
  if (nf > 1 && nf !== np) throw new ProtocolError('Bind format count does not match parameter count')
  const params: (Buffer | null)[] = []
  for (let i = 0; i < np; i++) {
    need(body, pos, 4, 'Bind')
    const len = body.readInt32BE(pos)
    pos += 4
    if (len === -1) params.push(null)
    else {
      if (len < 0) throw new ProtocolError('invalid parameter length in Bind')
      need(body, pos, len, 'Bind')
      params.push(body.subarray(pos, pos + len))
      pos += len
    }
  }
  need(body, pos, 2, 'Bind')
  const nr = body.readInt16BE(pos)
  pos += 2
  if (nr < 0) throw new ProtocolError('negative result format count in Bind')
  need(body, pos, nr * 2, 'Bind')
  const resultFormats: number[] = []
  for (let i = 0; i < nr; i++) resultFormats.push(body.readInt16BE(pos + i * 2))
  pos += nr * 2
  done(body, pos, 'Bind')
  for (const f of [...fmts, ...resultFormats]) if (f !== 0 && f !== 1) throw new ProtocolError(`invalid format code ${f}`)
  const paramFormats = params.map((_, i) => (nf === 0 ? 0 : nf === 1 ? (fmts[0] as number) : (fmts[i] as number)))
  return { portal, statement, paramFormats, params, resultFormats }
}

export interface ExecuteMessage {
  readonly portal: string
  readonly maxRows: number
}

export function parseExecute(body: Buffer): ExecuteMessage {
  const [portal, p1] = readCString(body, 0)
  need(body, p1, 4, 'Execute')
  const maxRows = body.readInt32BE(p1)
  done(body, p1 + 4, 'Execute')
  return { portal, maxRows }
}

export interface TargetMessage {
  /** 'S' for a prepared statement, 'P' for a portal. */
  readonly kind: 'S' | 'P'
  readonly name: string
}

/** Describe and Close share one layout. */
export function parseTarget(body: Buffer, what: 'Describe' | 'Close'): TargetMessage {
  need(body, 0, 1, what)
  const k = body[0]
  if (k !== 0x53 && k !== 0x50) throw new ProtocolError(`invalid ${what} target`)
  const [name, pos] = readCString(body, 1)
  done(body, pos, what)
  return { kind: k === 0x53 ? 'S' : 'P', name }
}

/** Messages with no payload must have none. */
export function expectEmpty(body: Buffer, what: string): void {
  if (body.length !== 0) throw new ProtocolError(`${what} must be empty`)
}
