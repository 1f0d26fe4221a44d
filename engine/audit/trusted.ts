// Which files the readers (`audit list`, `audit export`, `sessions replay`, the sinks, the API) may
// open: segments whose first line is a segment header of this log, for this segment number,
// signed by the audit key. A file dropped into the audit directory — under any name — has no such
// header (forging one needs the key), so no reader ever shows its events. This is no substitute
// for `audit verify`, which checks every line; it keeps forged files out of what people read.

import type { KeyObject } from 'node:crypto'
import { GatehouseError } from '../errors.js'
import { LineFormatError, parseLine, positionOf, SEGMENT_TYPE, signedMessage, splitLines } from './format.js'
import { keyId, verifySignature } from './keys.js'
import { listSegments, readHead, type SegmentFile } from './segments.js'

/** A header line is a few hundred bytes; this bounds what is read to find it. */
const HEADER_READ_BYTES = 8192

export class SegmentTrust {
  private readonly keys: ReadonlyMap<string, KeyObject>
  /** Verdicts by file path: a segment's header never changes once written. */
  private readonly verdicts = new Map<string, { log: string } | { why: string }>()

  constructor(publicKeys: readonly KeyObject[]) {
    this.keys = new Map(publicKeys.map((k) => [keyId(k), k]))
  }

  /** The log id a segment's signed header names, or why the file is not a segment of a log. */
  check(seg: SegmentFile): { log: string } | { why: string } {
    const known = this.verdicts.get(seg.path)
    if (known) return known
    const verdict = this.checkHeader(seg)
    // A file still being created (its header not yet written) is not judged for good.
    if (!('why' in verdict && verdict.why === 'empty')) this.verdicts.set(seg.path, verdict)
    return verdict
  }

  private checkHeader(seg: SegmentFile): { log: string } | { why: string } {
    let head: Buffer
    try {
      head = readHead(seg.path, HEADER_READ_BYTES)
    } catch (err) {
      return { why: `unreadable (${(err as NodeJS.ErrnoException).code ?? 'error'})` }
    }
    if (head.length === 0) return { why: 'empty' }
    const first = splitLines(head).lines[0]
    if (!first) return { why: 'no whole first line' }
    try {
      const p = parseLine(first)
      const ev = p.event
      if (!p.hashOk) return { why: 'its first line does not match its hash' }
      if (ev.type !== SEGMENT_TYPE || typeof ev.log !== 'string') return { why: 'it does not begin with a segment header' }
      if (ev.segment !== seg.index) return { why: `its header is for segment ${String(ev.segment)}` }
      const n = positionOf(ev.id, ev.log)
      const key = typeof ev.key === 'string' ? this.keys.get(ev.key) : undefined
      if (n === null || !key) return { why: 'its header is not signed by the audit key' }
      const msg = signedMessage('segment', ev.log, n, String(ev.prev), String(ev.time), String(ev.segment))
      if (!verifySignature(key, msg, ev.sig)) return { why: 'its header signature is invalid (forged)' }
      return { log: ev.log }
    } catch (err) {
      if (err instanceof LineFormatError) return { why: `its first line is not an audit event (${err.message})` }
      throw err
    }
  }

  /**
   * The segments readers may open, oldest first: the run of trusted segments of one log. The
   * first untrusted one ends the run (what follows would hang off it), except a segment still
   * being created. `rejected` names the files left out and why.
   */
  segments(dir: string): { segments: SegmentFile[]; rejected: { name: string; why: string }[] } {
    const { segments, foreign } = listSegments(dir)
    const rejected = foreign.map((name) => ({ name, why: 'not a segment file of the log' }))
    const out: SegmentFile[] = []
    let log: string | null = null
    for (let i = 0; i < segments.length; i++) {
      const seg = segments[i] as SegmentFile
      const v = this.check(seg)
      if ('why' in v && v.why === 'empty' && i === segments.length - 1) break
      if ('why' in v || (log !== null && v.log !== log)) {
        const why = 'why' in v ? v.why : `its header belongs to another log (${v.log})`
        rejected.push({ name: seg.name, why })
        for (const later of segments.slice(i + 1)) rejected.push({ name: later.name, why: `it follows ${seg.name}` })
        break
      }
      log = v.log
      out.push(seg)
    }
    return { segments: out, rejected }
  }

  /** Throws GH_ERR_AUDIT unless `seg` is a trusted segment (for readers that follow the log). */
  require(seg: SegmentFile): void {
    const v = this.check(seg)
    if ('why' in v && v.why !== 'empty') {
      throw new GatehouseError('GH_ERR_AUDIT', `${seg.path} is not a segment of the audit log (${v.why}); it was not read`)
    }
  }
}

/** A one-line warning naming the files readers left out, or null when there were none. */
export function describeRejected(rejected: readonly { name: string; why: string }[]): string | null {
  if (rejected.length === 0) return null
  const shown = rejected
    .slice(0, 5)
    .map((r) => `${r.name} (${r.why})`)
    .join(', ')
  return `${rejected.length} file(s) in the audit directory are not segments of the log and were not read: ${shown}${rejected.length > 5 ? ', …' : ''}; \`audit verify\` fails until they are moved out (keep them as evidence)`
}
