// Where the chain ends when the log is opened: the last intact event, a torn partial line after
// it, damaged lines, and the events after the last signed record (which a crash leaves unattested).
// The writer seals what this finds with a signed recovery checkpoint (writer.ts, recover).

import { readFileSync, statSync, unlinkSync } from 'node:fs'
import { GatehouseError } from '../errors.js'
import { CHECKPOINT_TYPE, LineFormatError, parseLine, SEGMENT_TYPE, splitLines, type UnattestedRange } from './format.js'
import { listSegments, type SegmentFile } from './segments.js'

/** Every segment header and checkpoint line holds this; other lines mostly do not. */
const SIGNED_TYPE_MARK = '"type":"audit.'

/** What recovery found when the log was opened. */
export interface RecoveryReport {
  readonly segment: string
  readonly tornBytes: number
  readonly damagedLines: number
  /** Positions of the events after the last signed record: sealed, not vouched for. */
  readonly unattested: UnattestedRange | null
}

/** The last intact event of the chain: its position, hash, log id and type. */
export interface ChainTail {
  readonly n: number
  readonly h: string
  readonly prev: unknown
  readonly log: string
  readonly type: unknown
}

export interface ChainEnd {
  /** The last segment file: the one a crash may have left unsealed. */
  readonly last: SegmentFile
  readonly tail: ChainTail
  /** A partial line after the tail (a write cut short), or null. */
  readonly torn: Buffer | null
  /** The last segment does not end with a newline: one must be written before anything else. */
  readonly newline: boolean
  /** Lines after the tail whose own hash does not hold. */
  readonly damaged: number
  /** The events after the last signed record, or null when the tail is signed for. */
  readonly unattested: UnattestedRange | null
}

/**
 * Reads back from the newest segment to the last intact event and the last signed record. An
 * empty segment at the end (created just before a crash) is removed. Null when there is no
 * segment; throws GH_ERR_AUDIT when segments exist but hold no intact event.
 */
export function findChainEnd(dir: string): ChainEnd | null {
  const { segments } = listSegments(dir)
  // A segment created just before a crash and left empty holds nothing: remove it.
  for (let last = segments.at(-1); last && statSync(last.path).size === 0; last = segments.at(-1)) {
    unlinkSync(last.path)
    segments.pop()
  }
  const last = segments.at(-1)
  if (!last) return null
  let tail: ChainTail | null = null
  let torn: Buffer | null = null
  let damaged = 0
  /** Position of the last segment header or checkpoint: what the key vouched for before the crash. */
  let lastSigned = 0
  let foundSigned = false
  for (let i = segments.length - 1; i >= 0 && !foundSigned; i--) {
    const seg = segments[i] as (typeof segments)[number]
    const { lines, rest } = splitLines(readFileSync(seg.path))
    if (i === segments.length - 1 && rest.length > 0) torn = Buffer.from(rest)
    for (let j = lines.length - 1; j >= 0; j--) {
      const line = lines[j] as Buffer
      // Past the tail, only signed records matter: skip the parse for every other line.
      if (tail && !line.includes(SIGNED_TYPE_MARK)) continue
      const found = lastChained(line)
      if (!found) {
        if (!tail) damaged++
        continue
      }
      tail ??= found
      if (found.type === CHECKPOINT_TYPE || found.type === SEGMENT_TYPE) {
        lastSigned = found.n
        foundSigned = true
        break
      }
    }
  }
  if (!tail) {
    throw new GatehouseError(
      'GH_ERR_AUDIT',
      `${dir}: no intact audit event found in ${segments.length} segment(s); move the damaged files aside (keep them as evidence) to start a new log`,
    )
  }
  // A write cut just before its newline leaves a whole event: it only needs the newline.
  const newline = torn !== null
  if (torn && damaged === 0) {
    const whole = lastChained(torn)
    if (whole && whole.log === tail.log && whole.n === tail.n + 1 && whole.prev === tail.h) {
      tail = whole
      torn = null
    }
  }
  const unattested: UnattestedRange | null = lastSigned < tail.n ? { from: lastSigned + 1, to: tail.n } : null
  return { last, tail, torn, newline, damaged, unattested }
}

/** Position, hash and log id of a line whose own hash holds; null for a torn or damaged line. */
function lastChained(line: Buffer): ChainTail | null {
  try {
    const p = parseLine(line)
    if (!p.hashOk) return null
    const id = p.event.id
    if (typeof id !== 'string') return null
    const dash = id.lastIndexOf('-')
    const n = Number(id.slice(dash + 1))
    if (dash <= 0 || !Number.isSafeInteger(n) || n < 1) return null
    return { n, h: p.h, prev: p.event.prev, log: id.slice(0, dash), type: p.event.type }
  } catch (err) {
    if (err instanceof LineFormatError) return null
    throw err
  }
}
