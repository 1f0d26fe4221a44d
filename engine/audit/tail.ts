// Reading the log's lines from a position onward, optionally following it as it grows: what
// `audit export --follow`, the sinks and the API's export stream are built on. Lines are handed
// over verbatim (the bytes the hash covers), whole lines only: a partial line at the end of the
// live segment is left until its newline arrives. Reading never touches the writer. A segment
// without a header signed by the audit key (trusted.ts) is never read: the reader stops with an
// error instead.

import { type FileHandle, open } from 'node:fs/promises'
import { listSegments } from './segments.js'
import type { SegmentTrust } from './trusted.js'

/** A place in the log: a segment number and a byte offset in it (always at a line boundary). */
export interface LogPosition {
  readonly segment: number
  readonly offset: number
}

export interface TailBatch {
  readonly lines: Buffer[]
  /** The position of the first line of the batch. */
  readonly start: LogPosition
  /** The position just after the last line of the batch. */
  readonly position: LogPosition
  /** Set when segments between the previous position and this batch were pruned. */
  readonly skippedSegments: number
}

export interface TailOptions {
  readonly follow: boolean
  readonly pollMs?: number
  readonly signal?: AbortSignal
  /** Which segment files may be read. */
  readonly trust: SegmentTrust
}

const CHUNK = 256 * 1024

export class AuditTail {
  private segment: number
  private offset: number
  private fh: FileHandle | null = null
  private fhSegment = -1
  private wakeUp: (() => void) | null = null
  private readonly pollMs: number

  constructor(
    readonly dir: string,
    from: LogPosition,
    private readonly opts: TailOptions,
  ) {
    this.segment = from.segment
    this.offset = from.offset
    this.pollMs = opts.pollMs ?? 250
  }

  get position(): LogPosition {
    return { segment: this.segment, offset: this.offset }
  }

  /** Wakes a `next` that waits for new lines (the writer calls this after each write). */
  wake(): void {
    const w = this.wakeUp
    this.wakeUp = null
    w?.()
  }

  /**
   * The next lines (at least one, at most `maxLines` / about `maxBytes`), waiting for them when
   * following. Returns null at the end of the log when not following, or once the signal aborts.
   */
  async next(maxLines: number, maxBytes: number): Promise<TailBatch | null> {
    let skipped = 0
    for (;;) {
      if (this.opts.signal?.aborted) return null
      const r = await this.readSome(maxLines, maxBytes)
      skipped += r.skipped
      if (r.lines.length > 0) return { lines: r.lines, start: r.start, position: this.position, skippedSegments: skipped }
      if (r.advanced) continue
      if (!this.opts.follow) return null
      await this.waitForData()
    }
  }

  async close(): Promise<void> {
    this.wake()
    const fh = this.fh
    this.fh = null
    await fh?.close().catch(() => undefined)
  }

  private waitForData(): Promise<void> {
    return new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout | null = null
      const done = (): void => {
        if (timer) clearTimeout(timer)
        this.opts.signal?.removeEventListener('abort', done)
        this.wakeUp = null
        resolve()
      }
      timer = setTimeout(done, this.pollMs)
      this.wakeUp = done
      this.opts.signal?.addEventListener('abort', done, { once: true })
    })
  }

  private async handle(): Promise<FileHandle | null> {
    if (this.fh && this.fhSegment === this.segment) return this.fh
    await this.fh?.close().catch(() => undefined)
    this.fh = null
    const seg = listSegments(this.dir).segments.find((s) => s.index === this.segment)
    if (!seg) return null
    this.opts.trust.require(seg)
    try {
      this.fh = await open(seg.path, 'r')
      this.fhSegment = this.segment
      return this.fh
    } catch {
      return null
    }
  }

  /** Reads whole lines at the position; moves to the next segment once this one is finished. */
  private async readSome(
    maxLines: number,
    maxBytes: number,
  ): Promise<{ lines: Buffer[]; start: LogPosition; advanced: boolean; skipped: number }> {
    const start = this.position
    const fh = await this.handle()
    if (!fh) {
      // This segment is gone (pruned) or not there yet: go to the first one after it, if any.
      const later = listSegments(this.dir).segments.find((s) => s.index > this.segment)
      if (!later) return { lines: [], start, advanced: false, skipped: 0 }
      const skipped = later.index - this.segment
      this.segment = later.index
      this.offset = 0
      return { lines: [], start, advanced: true, skipped }
    }
    const lines = await this.readLines(fh, maxLines, maxBytes)
    if (lines.length > 0) return { lines, start, advanced: false, skipped: 0 }
    // Nothing new here. A later segment means this one is finished (the writer moved on, or a
    // restart sealed it): read once more for bytes written just before that, then go on.
    const next = listSegments(this.dir).segments.find((s) => s.index > this.segment)
    if (!next) return { lines: [], start, advanced: false, skipped: 0 }
    const last = await this.readLines(fh, maxLines, maxBytes)
    if (last.length > 0) return { lines: last, start, advanced: false, skipped: 0 }
    const skipped = next.index - this.segment - 1
    this.segment = next.index
    this.offset = 0
    return { lines: [], start, advanced: true, skipped }
  }

  /** Whole lines from the current offset, up to the limits; a partial last line is left for later. */
  private async readLines(fh: FileHandle, maxLines: number, maxBytes: number): Promise<Buffer[]> {
    const lines: Buffer[] = []
    let bytes = 0
    let carry: Buffer = Buffer.alloc(0)
    while (lines.length < maxLines && bytes < maxBytes) {
      const buf = Buffer.allocUnsafe(CHUNK)
      const { bytesRead } = await fh.read(buf, 0, CHUNK, this.offset + carry.length)
      if (bytesRead === 0) break
      const data = carry.length > 0 ? Buffer.concat([carry, buf.subarray(0, bytesRead)]) : buf.subarray(0, bytesRead)
      let from = 0
      for (;;) {
        const nl = data.indexOf(0x0a, from)
        if (nl < 0 || lines.length >= maxLines || bytes >= maxBytes) break
        lines.push(Buffer.from(data.subarray(from, nl)))
        bytes += nl - from + 1
        from = nl + 1
      }
      this.offset += from
      carry = Buffer.from(data.subarray(from))
      if (bytesRead < CHUNK && from === 0) break
    }
    return lines
  }
}

/** The position of the first line of the log, or of its end (for a sink that starts from now). */
export async function logEdge(dir: string, edge: 'start' | 'end'): Promise<LogPosition> {
  const { segments } = listSegments(dir)
  if (segments.length === 0) return { segment: 1, offset: 0 }
  if (edge === 'start') return { segment: (segments[0] as (typeof segments)[number]).index, offset: 0 }
  const last = segments[segments.length - 1] as (typeof segments)[number]
  const fh = await open(last.path, 'r')
  try {
    const size = (await fh.stat()).size
    // Back to the last newline so the position is at a line boundary.
    const n = Math.min(size, 64 * 1024)
    const buf = Buffer.alloc(n)
    await fh.read(buf, 0, n, size - n)
    const nl = buf.lastIndexOf(0x0a)
    return { segment: last.index, offset: nl < 0 ? size - n : size - n + nl + 1 }
  } finally {
    await fh.close()
  }
}

/** The position of the first event at or after `since` (RFC 3339), scanning from the segment that may hold it. */
export async function positionAt(dir: string, since: string, trust: SegmentTrust): Promise<LogPosition> {
  const { segments } = listSegments(dir)
  const t = Date.parse(since)
  let start = segments[0]
  for (const s of segments) {
    const m = /-(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z\.jsonl$/.exec(s.name)
    const created = m ? Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])) : 0
    if (created + 5000 <= t) start = s
    else break
  }
  if (!start) return { segment: 1, offset: 0 }
  const tail = new AuditTail(dir, { segment: start.index, offset: 0 }, { follow: false, trust })
  try {
    for (;;) {
      const b = await tail.next(1000, 4 * 1024 * 1024)
      if (!b) return tail.position
      let pos = b.start
      for (const line of b.lines) {
        const m = /"time":"([^"]+)"/.exec(line.toString('latin1', 0, Math.min(line.length, 300)))
        if (m && Date.parse(m[1] as string) >= t) return pos
        pos = { segment: pos.segment, offset: pos.offset + line.length + 1 }
      }
    }
  } finally {
    await tail.close()
  }
}
