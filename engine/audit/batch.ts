// A batch of audit lines encoded for one write(2): each line is encoded to UTF-8 once, straight
// into the buffer that is written; its hash and the writer's listeners (the recorder) use those
// same bytes.

import { CHECKPOINT_TYPE, encodeLineInto, type EventText, eventId, lineBytesBound } from './format.js'
import { eventJson, type Pending } from './records.js'

/** Lines are encoded here before their write(2); larger batches get a buffer of their own. */
const WRITE_SCRATCH = Buffer.allocUnsafeSlow(64 * 1024)
/** A larger write buffer is kept this long after its last use. */
const LARGE_SCRATCH_KEEP_MS = 10_000
/** Room reserved for one signed record (checkpoint, segment header) before its text is made. */
const SIGNED_RECORD_BYTES = 4096

/**
 * A write buffer for batches larger than WRITE_SCRATCH, kept for reuse while large events keep
 * coming: a fresh buffer of megabytes costs a page fault per page on first touch, more than
 * encoding the line into it. Dropped once unused for a while.
 */
export class LargeScratch {
  private buffer: Buffer | null = null
  private used = 0
  private timer: NodeJS.Timeout | null = null

  /** A buffer of at least `bytes`. */
  get(bytes: number): Buffer {
    let buf = this.buffer
    if (buf === null || buf.length < bytes) {
      buf = Buffer.allocUnsafeSlow(bytes)
      this.buffer = buf
    }
    this.used = Date.now()
    if (this.timer === null) {
      const sweep = (): void => {
        if (Date.now() - this.used < LARGE_SCRATCH_KEEP_MS) {
          this.timer = setTimeout(sweep, LARGE_SCRATCH_KEEP_MS).unref()
          return
        }
        this.buffer = null
        this.timer = null
      }
      this.timer = setTimeout(sweep, LARGE_SCRATCH_KEEP_MS).unref()
    }
    return buf
  }

  /** Stops the sweep timer (the log closes). */
  dispose(): void {
    if (this.timer) clearTimeout(this.timer)
  }
}

/** `items` encoded after position `n` with hash `prev`: the bytes to write and where each line ends. */
export interface EncodedBatch {
  readonly buf: Buffer
  readonly length: number
  /** Each line's end in `buf` (the index of its newline). */
  readonly ends: readonly number[]
  readonly hashes: readonly string[]
  /** Position and hash of the batch's last line. */
  readonly n: number
  readonly prev: string
  /** Position of the batch's last signed checkpoint, or 0. */
  readonly checkpointN: number
}

/** Serializes and chains `items` after line `n` (hash `prev`) of log `logId`. */
export function encodeBatch(items: readonly Pending[], logId: string, n: number, prev: string, large: LargeScratch): EncodedBatch {
  let checkpointN = 0
  // Room is reserved from the events' texts; a signed record's text depends on the hash before
  // it, so it is made in the loop.
  let bound = 0
  for (const p of items) {
    if (p.make) bound += SIGNED_RECORD_BYTES
    else {
      // Kept, so a batch retried after a failed write is not serialized twice.
      if (p.json === null) p.json = eventJson(p.event)
      bound += lineBytesBound(`${logId}-${n + 1}`, p.time, p.json) + 1
    }
  }
  let buf = bound <= WRITE_SCRATCH.length ? WRITE_SCRATCH : large.get(bound)
  let length = 0
  const ends: number[] = []
  const hashes: string[] = []
  for (const p of items) {
    n++
    const id = eventId(logId, n)
    const json = p.make ? p.make(n, prev) : (p.json as EventText)
    const need = length + lineBytesBound(id, p.time, json) + 1
    if (need > buf.length) {
      const bigger = Buffer.allocUnsafeSlow(need + bound)
      buf.copy(bigger, 0, 0, length)
      buf = bigger
    }
    const { h, end } = encodeLineInto(prev, id, p.time, json, buf, length)
    buf[end] = 0x0a
    length = end + 1
    ends.push(end)
    hashes.push(h)
    if (p.make && p.event.type === CHECKPOINT_TYPE) checkpointN = n
    prev = h
  }
  return { buf, length, ends, hashes, n, prev, checkpointN }
}
