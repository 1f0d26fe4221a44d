// `gatehouse audit verify`: checks the whole log from the files alone and names the first place
// where it breaks — an edited byte, a deleted, inserted or reordered event, a missing segment, a
// line cut in the middle. A clean cut after the last checkpoint leaves no trace in the files; with
// the checkpoints a sink received (`--checkpoints FILE`), verify also finds that.
//
// What each check catches (format.ts defines the chain):
//   own hash (h ≠ sha256(body))       an edited event
//   id position (n ≠ expected)        a deleted, inserted or reordered event
//   link (prev ≠ h of the line before) an event rewritten with a fresh hash, or spliced in
//   segment numbers and headers       a deleted or foreign segment
//   signatures                        forged headers and checkpoints
//   partial last line                 a truncation in the middle of an event, or an unsealed crash
//   sink checkpoints                  a clean cut, or a rewrite of what a sink already holds

import type { KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import {
  CHECKPOINT_TYPE,
  eventId,
  GENESIS_HASH,
  LineFormatError,
  type ParsedLine,
  parseLine,
  positionOf,
  PRUNE_TYPE,
  SEGMENT_TYPE,
  sha256Hex,
  signedMessage,
  splitLines,
} from './format.js'
import { keyId, verifySignature } from './keys.js'
import { listSegments } from './segments.js'

export interface VerifyOptions {
  /** Public keys whose signatures are accepted (the gateway's audit key; more after a rotation). */
  readonly publicKeys: readonly KeyObject[]
  /** The contents of a file of lines a sink received: its signed checkpoints are checked against the log. */
  readonly checkpoints?: Buffer
}

export interface VerifyProblem {
  /** The segment file and the 1-based line in it (null when the problem is the log as a whole). */
  readonly segment: string | null
  readonly line: number | null
  /** The id found there, if the line could be read, and the id expected there. */
  readonly id: string | null
  readonly expected: string | null
  readonly message: string
}

export interface Recovery {
  readonly segment: string
  /** The recovery checkpoint's id, and the events it was the first signature over. */
  readonly id: string
  readonly unsignedFrom: string | null
  readonly tornBytes: number
}

export interface VerifyResult {
  readonly ok: boolean
  readonly log: string | null
  readonly segments: number
  readonly events: number
  readonly first: string | null
  readonly last: string | null
  readonly checkpoints: number
  readonly lastCheckpoint: { readonly id: string; readonly time: string } | null
  /** Events after the last checkpoint: not signed yet (a running gateway signs them within a second). */
  readonly unsigned: number
  readonly recoveries: readonly Recovery[]
  /** Segments removed by retention before the first one present (accounted for by a signed prune record). */
  readonly pruned: number
  /** Signed checkpoints from `--checkpoints` that were checked against the log. */
  readonly sinkCheckpoints: number
  /** `.jsonl` files of the older, unchained format: not verifiable. */
  readonly legacy: readonly string[]
  readonly problem: VerifyProblem | null
}

class Broken extends Error {
  constructor(readonly problem: VerifyProblem) {
    super(problem.message)
  }
}

/** How far ahead to look for a missing event before calling it deleted rather than moved. */
const REORDER_LOOKAHEAD = 256

export function verifyAuditLog(dir: string, opts: VerifyOptions): VerifyResult {
  const keys = new Map(opts.publicKeys.map((k) => [keyId(k), k]))
  const { segments, legacy } = listSegments(dir)
  let log: string | null = null
  let expectN = 0
  let lastHash = GENESIS_HASH
  let lastId: string | null = null
  let firstId: string | null = null
  let events = 0
  let checkpoints = 0
  let lastCheckpoint: { id: string; time: string } | null = null
  let lastCheckpointN = 0
  let maxFirstKept = 0
  const recoveries: Recovery[] = []
  /** Hashes of the signed lines, by position: what sink checkpoints are compared with. */
  const signedAt = new Map<number, string>()
  let sinkCheckpoints = 0
  const pruned = segments.length > 0 ? (segments[0]?.index ?? 1) - 1 : 0

  const summary = (problem: VerifyProblem | null): VerifyResult => ({
    ok: problem === null,
    log,
    segments: segments.length,
    events,
    first: firstId,
    last: lastId,
    checkpoints,
    lastCheckpoint,
    unsigned: expectN > 0 ? expectN - 1 - lastCheckpointN : 0,
    recoveries,
    pruned,
    sinkCheckpoints,
    legacy,
    problem,
  })

  if (segments.length === 0) {
    return summary({ segment: null, line: null, id: null, expected: null, message: `no audit segments in ${dir}` })
  }

  const checkSig = (
    where: { segment: string; line: number; id: string },
    ev: Record<string, unknown>,
    message: Buffer,
    what: string,
  ): void => {
    const key = typeof ev.key === 'string' ? keys.get(ev.key) : undefined
    if (!key) {
      throw new Broken({ ...where, expected: where.id, message: `${what} is signed by an unknown key (${String(ev.key)})` })
    }
    if (!verifySignature(key, message, ev.sig)) {
      throw new Broken({ ...where, expected: where.id, message: `${what} has an invalid signature (forged or altered)` })
    }
  }

  try {
    let prevIndex: number | null = null
    for (let k = 0; k < segments.length; k++) {
      const seg = segments[k] as (typeof segments)[number]
      if (prevIndex !== null && seg.index !== prevIndex + 1) {
        const gap = seg.index - prevIndex - 1
        throw new Broken({
          segment: seg.name,
          line: 1,
          id: null,
          expected: log ? eventId(log, expectN) : null,
          message: `${gap === 1 ? `segment ${prevIndex + 1} is` : `segments ${prevIndex + 1} to ${seg.index - 1} are`} missing (deleted) before this one`,
        })
      }
      prevIndex = seg.index
      const { lines, rest } = splitLines(readFileSync(seg.path))
      let torn: { line: number; bytes: number; sha256: string } | null = null
      let sawHeader = false
      for (let j = 0; j < lines.length; j++) {
        const raw = lines[j] as Buffer
        const lineNo = j + 1
        let p: ParsedLine
        try {
          p = parseLine(raw)
        } catch (err) {
          if (!(err instanceof LineFormatError)) throw err
          if (torn) break // two unreadable lines in a row: reported below as the first one
          // Possibly a crash's torn tail, sealed by the recovery checkpoint on the next line.
          torn = { line: lineNo, bytes: raw.length, sha256: sha256Hex(raw) }
          continue
        }
        const ev = p.event
        const id = typeof ev.id === 'string' ? ev.id : null
        const where = { segment: seg.name, line: lineNo, id: id ?? '' }
        const expected = log ? eventId(log, expectN) : null
        if (torn) {
          const t = ev.torn as { bytes?: unknown; sha256?: unknown } | undefined
          const seals = ev.type === CHECKPOINT_TYPE && ev.reason === 'recovery' && t?.bytes === torn.bytes && t.sha256 === torn.sha256
          if (!seals) {
            throw new Broken({
              segment: seg.name,
              line: torn.line,
              id: null,
              expected,
              message: 'an unreadable line (torn, cut or damaged) that no recovery checkpoint seals',
            })
          }
        }
        if (!p.hashOk) {
          throw new Broken({ ...where, id, expected, message: 'the event was altered: its content does not match its hash' })
        }
        if (log === null) {
          // The first segment present: its signed header anchors the chain (even after pruning).
          if (ev.type !== SEGMENT_TYPE || typeof ev.log !== 'string') {
            throw new Broken({ ...where, id, expected: null, message: 'the log does not begin with a signed segment header' })
          }
          log = ev.log
          const n0 = positionOf(id, log)
          if (n0 === null) throw new Broken({ ...where, id, expected: null, message: 'the segment header has a malformed id' })
          expectN = n0
          lastHash = typeof ev.prev === 'string' ? ev.prev : ''
          if (seg.index === 1 && (n0 !== 1 || lastHash !== GENESIS_HASH)) {
            throw new Broken({ ...where, id, expected: eventId(log, 1), message: 'the first segment does not start the chain at event 1' })
          }
          firstId = id
        }
        const n = positionOf(id, log)
        const exp = eventId(log, expectN)
        if (n === null) {
          throw new Broken({
            ...where,
            id,
            expected: exp,
            message: `an event that does not belong to this log (id ${String(ev.id)}): inserted`,
          })
        }
        if (n !== expectN) {
          let message: string
          if (n < expectN) message = `event ${id} appears after ${lastId}: it was inserted here, or events were reordered`
          else {
            const later = lines.slice(j + 1, j + 1 + REORDER_LOOKAHEAD).some((l) => l.includes(`"id":"${exp}"`))
            message = later
              ? `events out of order: ${id} stands where ${exp} belongs (it comes later)`
              : n === expectN + 1
                ? `event ${exp} is missing (deleted) before ${id}`
                : `events ${exp} to ${eventId(log, n - 1)} are missing (deleted) before ${id}`
          }
          throw new Broken({ ...where, id, expected: exp, message })
        }
        if (ev.prev !== lastHash) {
          throw new Broken({
            ...where,
            id,
            expected: exp,
            message:
              j === 0 && k > 0
                ? `the chain breaks at the start of this segment: the end of the segment before was cut or altered`
                : `the chain breaks here: ${id} does not link to ${lastId ?? 'the event before it'} (that event was rewritten, or an event was removed or spliced in)`,
          })
        }
        if (!sawHeader) {
          const headerless = torn !== null && torn.line === 1 && ev.type === CHECKPOINT_TYPE && ev.reason === 'recovery'
          if (ev.type !== SEGMENT_TYPE && !headerless) {
            throw new Broken({ ...where, id, expected: exp, message: 'the segment does not start with its signed header' })
          }
          sawHeader = true
          if (ev.type === SEGMENT_TYPE) {
            if (ev.segment !== seg.index || ev.log !== log) {
              throw new Broken({
                ...where,
                id,
                expected: exp,
                message: `the header belongs to segment ${String(ev.segment)}, not this file`,
              })
            }
            checkSig(where, ev, signedMessage('segment', log, n, lastHash, String(ev.time), String(ev.segment)), 'the segment header')
            signedAt.set(n, p.h)
          }
        } else if (ev.type === SEGMENT_TYPE) {
          throw new Broken({ ...where, id, expected: exp, message: 'a segment header in the middle of a segment: inserted' })
        }
        if (ev.type === CHECKPOINT_TYPE) {
          const t = ev.torn as { sha256?: unknown } | undefined
          const extra = t && typeof t.sha256 === 'string' ? t.sha256 : '-'
          checkSig(where, ev, signedMessage('checkpoint', log, n - 1, lastHash, String(ev.time), extra), 'the checkpoint')
          if (ev.reason === 'recovery') {
            recoveries.push({
              segment: seg.name,
              id: id as string,
              unsignedFrom: lastCheckpointN + 1 < n ? eventId(log, lastCheckpointN + 1) : null,
              tornBytes: torn?.bytes ?? 0,
            })
          }
          checkpoints++
          lastCheckpointN = n
          lastCheckpoint = { id: id as string, time: String(ev.time) }
          signedAt.set(n, p.h)
        } else if (ev.type === PRUNE_TYPE && typeof ev.first_kept === 'number') {
          maxFirstKept = Math.max(maxFirstKept, ev.first_kept)
        }
        torn = null
        lastHash = p.h
        lastId = id
        expectN = n + 1
        events++
      }
      if (torn) {
        throw new Broken({
          segment: seg.name,
          line: torn.line,
          id: null,
          expected: log ? eventId(log, expectN) : null,
          message: 'an unreadable line (torn, cut or damaged) that no recovery checkpoint seals',
        })
      }
      if (rest.length > 0) {
        throw new Broken({
          segment: seg.name,
          line: lines.length + 1,
          id: null,
          expected: log ? eventId(log, expectN) : null,
          message:
            k === segments.length - 1
              ? `the last line is cut short (${rest.length} bytes, no newline) and not sealed: the log was truncated in the middle of an event, or a crash's torn tail was never sealed by a restart`
              : `the segment ends in a partial line (${rest.length} bytes)`,
        })
      }
      if (lines.length === 0) {
        throw new Broken({ segment: seg.name, line: 1, id: null, expected: null, message: 'an empty segment' })
      }
    }
    const first = segments[0] as (typeof segments)[number]
    if (first.index > 1 && first.index > maxFirstKept) {
      throw new Broken({
        segment: first.name,
        line: 1,
        id: firstId,
        expected: null,
        message: `the log starts at segment ${first.index}: segments before it are gone and no signed prune record accounts for them`,
      })
    }
    if (opts.checkpoints) {
      const lastSegment = segments[segments.length - 1] as (typeof segments)[number]
      sinkCheckpoints = checkSinkCheckpoints(opts.checkpoints, keys, log as string, signedAt, expectN - 1, lastId, lastSegment.name)
    }
  } catch (err) {
    if (err instanceof Broken) return summary(err.problem)
    throw err
  }
  return summary(null)
}

/** Checks every signed checkpoint a sink received against the log; returns how many were checked. */
function checkSinkCheckpoints(
  data: Buffer,
  keys: ReadonlyMap<string, KeyObject>,
  log: string,
  signedAt: ReadonlyMap<number, string>,
  lastN: number,
  lastId: string | null,
  lastSegment: string,
): number {
  const { lines, rest } = splitLines(data)
  if (rest.length > 0) lines.push(rest)
  let checked = 0
  let firstN = Number.POSITIVE_INFINITY
  for (const n of signedAt.keys()) firstN = Math.min(firstN, n)
  let latest: { n: number; id: string; time: string } | null = null
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i] as Buffer
    if (raw.length === 0 || !raw.includes('"type":"audit.')) continue
    let p: ParsedLine
    try {
      p = parseLine(raw)
    } catch {
      continue
    }
    const ev = p.event
    if (ev.type !== CHECKPOINT_TYPE && ev.type !== SEGMENT_TYPE) continue
    const n = positionOf(ev.id, log)
    const where = { segment: null, line: null, id: typeof ev.id === 'string' ? ev.id : null, expected: null }
    if (ev.log !== log || n === null) {
      throw new Broken({ ...where, message: `checkpoints file line ${i + 1}: a checkpoint of another log (${String(ev.log)})` })
    }
    const key = typeof ev.key === 'string' ? keys.get(ev.key) : undefined
    const t = ev.torn as { sha256?: unknown } | undefined
    const msg =
      ev.type === CHECKPOINT_TYPE
        ? signedMessage('checkpoint', log, n - 1, String(ev.prev), String(ev.time), t && typeof t.sha256 === 'string' ? t.sha256 : '-')
        : signedMessage('segment', log, n, String(ev.prev), String(ev.time), String(ev.segment))
    if (!p.hashOk || !key || !verifySignature(key, msg, ev.sig)) {
      throw new Broken({ ...where, message: `checkpoints file line ${i + 1}: not a valid signed checkpoint of this log's key` })
    }
    checked++
    if (!latest || n > latest.n) latest = { n, id: ev.id as string, time: String(ev.time) }
    if (n > lastN) continue
    if (n < firstN) continue // pruned from the log by retention
    const h = signedAt.get(n)
    if (h !== p.h) {
      throw new Broken({
        ...where,
        message: `the log's event ${String(ev.id)} differs from the signed checkpoint the sink received: the log was rewritten there`,
      })
    }
  }
  if (checked === 0)
    throw new Broken({ segment: null, line: null, id: null, expected: null, message: 'the checkpoints file holds no signed checkpoint' })
  if (latest && latest.n > lastN) {
    throw new Broken({
      segment: lastSegment,
      line: null,
      id: lastId,
      expected: latest.id,
      message: `the log ends at ${lastId ?? 'nothing'}, but a sink received a signed checkpoint for ${latest.id} (${latest.time}): events after ${lastId ?? 'the start'} were cut from the log`,
    })
  }
  return checked
}
