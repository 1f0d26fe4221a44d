// Frames the server→client byte stream without buffering results: messages the gateway must
// read (CommandComplete, ErrorResponse, ReadyForQuery, ParameterStatus) are collected whole — and may be replaced,
// which is how a refused statement's stand-in error becomes the gateway's own error — while every
// other message, DataRows above all, streams through as the bytes arrive, untouched.

import { BackendCode } from './messages.js'

export interface BackendHandler {
  /** A collected message is complete; return a replacement, or null to forward it as is.
   * `message` is the whole message (type byte and length included), `body` a view of its body. */
  onMessage(type: number, body: Buffer, message: Buffer): Buffer | null
  /** A collected DataRow or CopyData (only while masking rows): the whole message; return its
   * replacement, or null to forward it as is. Kept apart from onMessage: it runs once per row. */
  onRow(type: number, message: Buffer): Buffer | null
  /** A streamed message's header was seen (its bytes are forwarded as they arrive). */
  onStreamed(type: number): void
}

export class BackendProtocolError extends Error {}

const COLLECTED = new Uint8Array(256)
COLLECTED[BackendCode.CommandComplete] = 1
COLLECTED[BackendCode.ErrorResponse] = 1
COLLECTED[BackendCode.ReadyForQuery] = 1
// How the server reads SQL (standard_conforming_strings, client_encoding) is watched in every session.
COLLECTED[BackendCode.ParameterStatus] = 1

const EMPTY = Buffer.alloc(0)

/** Messages collected only while results are being masked (see setMasking). */
const MASKING_TYPES = [BackendCode.RowDescription, BackendCode.NoticeResponse, BackendCode.CopyOutResponse] as const
const ROW_TYPES = [BackendCode.DataRow, BackendCode.CopyData] as const

export class BackendScanner {
  private header = Buffer.alloc(5)
  private headerFill = 0
  /** Body bytes still to come for the current message. */
  private remaining = 0
  private type = 0
  private collecting = false
  private collectBuf: Buffer = EMPTY
  private collectFill = 0
  /** Which message types are collected whole (1) rather than streamed; changes with the masking state. */
  private readonly collected = Uint8Array.from(COLLECTED)
  private diverting = false
  private maskDescribe = false
  private maskRows = false

  constructor(
    private readonly handler: BackendHandler,
    private readonly maxCollected: number,
  ) {}

  /**
   * Masking needs to read RowDescription, NoticeResponse and CopyOutResponse (`describe`) and to
   * rewrite DataRow and CopyData (`rows`). Both are off until a session has mask obligations, so
   * results nobody masks stream through untouched.
   */
  setMasking(describe: boolean, rows: boolean): void {
    this.maskDescribe = describe
    this.maskRows = rows
    if (this.diverting) return
    for (const t of MASKING_TYPES) this.collected[t] = describe ? 1 : 0
    for (const t of ROW_TYPES) this.collected[t] = rows ? 1 : 0
  }

  /**
   * While the gateway runs a query of its own on the session's server connection, every message
   * whose header arrives is collected whole and handed to the handler (which keeps the answer from
   * the client); a message already streaming when this is switched on finishes streaming.
   */
  setDivert(on: boolean): void {
    this.diverting = on
    if (on) this.collected.fill(1)
    else {
      this.collected.set(COLLECTED)
      this.setMasking(this.maskDescribe, this.maskRows)
    }
  }

  /** Scans one chunk; returns the buffers to send to the client, in order. */
  scan(chunk: Buffer): Buffer[] {
    const out: Buffer[] = []
    let runStart = 0 // start of the pending pass-through run within `chunk`
    let pos = 0
    const n = chunk.length
    while (pos < n) {
      if (this.remaining > 0) {
        const take = Math.min(this.remaining, n - pos)
        if (this.collecting) {
          // Collected bytes never belong to a pass-through run: they go out when complete.
          if (runStart < pos) out.push(chunk.subarray(runStart, pos))
          chunk.copy(this.collectBuf, this.collectFill, pos, pos + take)
          this.collectFill += take
          pos += take
          this.remaining -= take
          runStart = pos
          if (this.remaining === 0) this.finishCollected(out)
          continue
        }
        pos += take
        this.remaining -= take
        continue
      }
      // At a message boundary (or inside a split header).
      if (this.headerFill === 0 && n - pos >= 5) {
        const type = chunk[pos] as number
        const len = chunk.readInt32BE(pos + 1)
        if (len < 4) throw new BackendProtocolError(`invalid server message length ${len}`)
        const bodyLen = len - 4
        if (this.collected[type] === 1) {
          if (bodyLen + 5 > this.maxCollected) throw new BackendProtocolError(`server message of ${len} bytes exceeds the limit`)
          if (n - pos >= 5 + bodyLen) {
            // Whole message in this chunk: no copy.
            const end = pos + 5 + bodyLen
            const repl =
              type === BackendCode.DataRow || type === BackendCode.CopyData
                ? this.handler.onRow(type, chunk.subarray(pos, end))
                : this.handler.onMessage(type, chunk.subarray(pos + 5, end), chunk.subarray(pos, end))
            if (repl) {
              if (runStart < pos) out.push(chunk.subarray(runStart, pos))
              out.push(repl)
              runStart = pos + 5 + bodyLen
            }
            pos += 5 + bodyLen
            continue
          }
          if (runStart < pos) out.push(chunk.subarray(runStart, pos))
          this.beginCollect(type, bodyLen)
          chunk.copy(this.collectBuf, 0, pos, pos + 5)
          this.collectFill = 5
          pos += 5
          runStart = pos // the collected bytes are emitted when complete
          continue
        }
        this.handler.onStreamed(type)
        this.type = type
        pos += 5
        this.remaining = bodyLen
        continue
      }
      // Split header: gather up to five bytes.
      const take = Math.min(5 - this.headerFill, n - pos)
      chunk.copy(this.header, this.headerFill, pos, pos + take)
      this.headerFill += take
      pos += take
      if (this.headerFill < 5) {
        // Header bytes are held back; they are emitted with the rest of the message.
        if (runStart < pos - take) out.push(chunk.subarray(runStart, pos - take))
        runStart = pos
        continue
      }
      this.headerFill = 0
      const type = this.header[0] as number
      const len = this.header.readInt32BE(1)
      if (len < 4) throw new BackendProtocolError(`invalid server message length ${len}`)
      const bodyLen = len - 4
      const headerStart = pos - take
      if (runStart < headerStart) out.push(chunk.subarray(runStart, headerStart))
      runStart = pos
      if (this.collected[type] === 1) {
        if (bodyLen + 5 > this.maxCollected) throw new BackendProtocolError(`server message of ${len} bytes exceeds the limit`)
        this.beginCollect(type, bodyLen)
        this.header.copy(this.collectBuf, 0, 0, 5)
        this.collectFill = 5
        if (bodyLen === 0) this.finishCollected(out)
      } else {
        this.handler.onStreamed(type)
        this.type = type
        out.push(Buffer.from(this.header)) // the held-back header goes out now
        this.remaining = bodyLen
      }
    }
    if (runStart < n) out.push(runStart === 0 ? chunk : chunk.subarray(runStart))
    return out
  }

  private beginCollect(type: number, bodyLen: number): void {
    this.type = type
    this.collecting = true
    this.collectBuf = Buffer.allocUnsafe(bodyLen + 5)
    this.remaining = bodyLen
  }

  private finishCollected(out: Buffer[]): void {
    this.collecting = false
    const msg = this.collectBuf
    this.collectBuf = EMPTY
    const t = this.type
    const repl =
      t === BackendCode.DataRow || t === BackendCode.CopyData ? this.handler.onRow(t, msg) : this.handler.onMessage(t, msg.subarray(5), msg)
    out.push(repl ?? msg)
  }
}
