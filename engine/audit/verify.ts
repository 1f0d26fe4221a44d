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
//   directory listing                 a file that is not a segment of the log (planted, misplaced)
//
// Events a crash left after the last signed record were sealed by the restart's `recovery`
// checkpoint without being vouched for (anyone who could write the files while the gateway was
// down could have rewritten and rehashed them): verify names them as unattested, with their count
// and range, unless the lines a sink received (`--checkpoints`) hold the same events.

import type { KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import {
  CHECKPOINT_TYPE,
  checkpointExtra,
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
  type UnattestedRange,
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

/** Events sealed by a recovery checkpoint that no signature covered before the crash. */
export interface Unattested {
  readonly segment: string
  /** The recovery checkpoint that sealed them. */
  readonly recovery: string
  readonly from: string
  readonly to: string
  readonly events: number
  /** How many of them a sink's copy (`--checkpoints`) holds byte for byte: those are attested by it. */
  readonly attestedBySink: number
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
  /** Ranges of events a crash left unsigned, sealed by a recovery checkpoint without being vouched for. */
  readonly unattested: readonly Unattested[]
  /** Events in those ranges that no sink copy attests: what `--strict` refuses. */
  readonly unattestedEvents: number
  /** Files in the audit directory that are not segments of the log (each one fails verification). */
  readonly foreign: readonly string[]
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
  const { segments, foreign } = listSegments(dir)
  let log: string | null = null
  let expectN = 0
  let lastHash = GENESIS_HASH
  let lastId: string | null = null
  let firstId: string | null = null
  let events = 0
  let checkpoints = 0
  let lastCheckpoint: { id: string; time: string } | null = null
  let lastCheckpointN = 0
  /** Position of the last segment header or checkpoint: everything up to it is signed. */
  let lastSignedN = 0
  /** Hashes of the events since the last signed record, by position. */
  let pendingHashes: [number, string][] = []
  /** Hashes of unattested events and of the unsigned tail: what a sink's copy can attest. */
  const unsignedAt = new Map<number, string>()
  const unattestedRanges: (UnattestedRange & { segment: string; recovery: string })[] = []
  let attestedBySink = new Set<number>()
  let maxFirstKept = 0
  const recoveries: Recovery[] = []
  /** Hashes of the signed lines, by position: what sink checkpoints are compared with. */
  const signedAt = new Map<number, string>()
  let sinkCheckpoints = 0
  const pruned = segments.length > 0 ? (segments[0]?.index ?? 1) - 1 : 0

  const unattested = (): Unattested[] =>
    unattestedRanges.map((r) => {
      let attested = 0
      for (let n = r.from; n <= r.to; n++) if (attestedBySink.has(n)) attested++
      return {
        segment: r.segment,
        recovery: r.recovery,
        from: eventId(log as string, r.from),
        to: eventId(log as string, r.to),
        events: r.to - r.from + 1,
        attestedBySink: attested,
      }
    })

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
    unattested: unattested(),
    unattestedEvents: unattested().reduce((sum, u) => sum + u.events - u.attestedBySink, 0),
    foreign,
    problem,
  })

  if (segments.length === 0 && foreign.length > 0) {
    return summary({ segment: foreign[0] as string, line: null, id: null, expected: null, message: foreignMessage(foreign) })
  }
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
            lastSignedN = n
            pendingHashes = []
          }
        } else if (ev.type === SEGMENT_TYPE) {
          throw new Broken({ ...where, id, expected: exp, message: 'a segment header in the middle of a segment: inserted' })
        }
        if (ev.type === CHECKPOINT_TYPE) {
          const t = ev.torn as { sha256?: unknown } | undefined
          const tornSha = t && typeof t.sha256 === 'string' ? t.sha256 : null
          // What the crash left unsigned: the events after the last signed record.
          const range: UnattestedRange | null = lastSignedN + 1 <= n - 1 ? { from: lastSignedN + 1, to: n - 1 } : null
          let declared: UnattestedRange | null | undefined
          if ('unattested' in ev) {
            if (ev.reason !== 'recovery') {
              throw new Broken({ ...where, id, expected: exp, message: 'a checkpoint that is not a recovery names unattested events' })
            }
            declared = parseDeclaredRange(ev.unattested, log)
            const same = declared === null ? range === null : range !== null && declared.from === range.from && declared.to === range.to
            if (!same) {
              throw new Broken({
                ...where,
                id,
                expected: exp,
                message: `the recovery checkpoint names ${describeRange(log, declared)} as unattested, but the events after the last signed record are ${describeRange(log, range)}`,
              })
            }
          }
          checkSig(
            where,
            ev,
            signedMessage('checkpoint', log, n - 1, lastHash, String(ev.time), checkpointExtra(tornSha, declared)),
            'the checkpoint',
          )
          if (ev.reason === 'recovery') {
            recoveries.push({
              segment: seg.name,
              id: id as string,
              unsignedFrom: range ? eventId(log, range.from) : null,
              tornBytes: torn?.bytes ?? 0,
            })
            if (range) {
              unattestedRanges.push({ ...range, segment: seg.name, recovery: id as string })
              for (const [pn, ph] of pendingHashes) unsignedAt.set(pn, ph)
            }
          }
          lastSignedN = n
          pendingHashes = []
          checkpoints++
          lastCheckpointN = n
          lastCheckpoint = { id: id as string, time: String(ev.time) }
          signedAt.set(n, p.h)
        } else if (ev.type === PRUNE_TYPE && typeof ev.first_kept === 'number') {
          maxFirstKept = Math.max(maxFirstKept, ev.first_kept)
        }
        if (lastSignedN !== n) pendingHashes.push([n, p.h])
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
    for (const [pn, ph] of pendingHashes) unsignedAt.set(pn, ph)
    if (opts.checkpoints) {
      const lastSegment = segments[segments.length - 1] as (typeof segments)[number]
      const sink = checkSinkCheckpoints(opts.checkpoints, keys, log as string, {
        signedAt,
        unsignedAt,
        lastN: expectN - 1,
        lastId,
        lastSegment: lastSegment.name,
      })
      sinkCheckpoints = sink.checked
      attestedBySink = sink.attested
    }
    if (foreign.length > 0) {
      throw new Broken({
        segment: foreign[0] as string,
        line: null,
        id: null,
        expected: null,
        message: foreignMessage(foreign),
      })
    }
  } catch (err) {
    if (err instanceof Broken) return summary(err.problem)
    throw err
  }
  return summary(null)
}

/** What the walk over the log leaves for the comparison with a sink's lines. */
interface LogHashes {
  /** Hashes of the signed records (segment headers, checkpoints), by position. */
  readonly signedAt: ReadonlyMap<number, string>
  /** Hashes of events no signature covered before a crash (unattested), or not yet (the tail). */
  readonly unsignedAt: ReadonlyMap<number, string>
  readonly lastN: number
  readonly lastId: string | null
  readonly lastSegment: string
}

/**
 * Checks every signed checkpoint a sink received against the log, and every event line it holds
 * for a position the log has only unsigned (`unsignedAt`): the same bytes attest it, other bytes
 * mean the log was rewritten there. An event line for a position where the log holds a signed
 * record shows events deleted before a restart: the restart's first record (a recovery checkpoint
 * or a segment header) took the first deleted event's position. Lines may carry a prefix (a
 * syslog receiver's header).
 */
function checkSinkCheckpoints(
  data: Buffer,
  keys: ReadonlyMap<string, KeyObject>,
  log: string,
  { signedAt, unsignedAt, lastN, lastId, lastSegment }: LogHashes,
): { checked: number; attested: Set<number> } {
  const split = splitLines(data)
  const lines = split.lines.map(fromLineStart)
  if (split.rest.length > 0) lines.push(fromLineStart(split.rest))
  const attested = new Set<number>()
  let checked = 0
  let firstN = Number.POSITIVE_INFINITY
  for (const n of signedAt.keys()) firstN = Math.min(firstN, n)
  let latest: { n: number; id: string; time: string } | null = null
  const attestEvent = (raw: Buffer, i: number): void => {
    let p: ParsedLine
    try {
      p = parseLine(raw)
    } catch {
      return
    }
    const n = positionOf(p.event.id, log)
    if (n === null || !p.hashOk) return
    const unsigned = unsignedAt.get(n)
    if (unsigned !== undefined) {
      if (unsigned !== p.h) {
        throw new Broken({
          segment: null,
          line: null,
          id: String(p.event.id),
          expected: null,
          message: `checkpoints file line ${i + 1}: the log's unsigned event ${String(p.event.id)} differs from the copy a sink received: the log was rewritten there`,
        })
      }
      attested.add(n)
      return
    }
    if (signedAt.has(n)) {
      throw new Broken({
        segment: null,
        line: null,
        id: String(p.event.id),
        expected: null,
        message: `checkpoints file line ${i + 1}: a sink received event ${String(p.event.id)}, but the log holds a signed record there: events were removed before a restart sealed what was left (or lost to a power failure before their disk sync, with fsync: batched)`,
      })
    }
  }
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i] as Buffer
    if (raw.length === 0) continue
    if (!raw.includes('"type":"audit.')) {
      attestEvent(raw, i)
      continue
    }
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
    const extra = checkpointExtra(
      t && typeof t.sha256 === 'string' ? t.sha256 : null,
      'unattested' in ev ? parseDeclaredRange(ev.unattested, log) : undefined,
    )
    const msg =
      ev.type === CHECKPOINT_TYPE
        ? signedMessage('checkpoint', log, n - 1, String(ev.prev), String(ev.time), extra)
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
  return { checked, attested }
}

/** A received line from where the audit line starts (after a syslog header, say). */
function fromLineStart(line: Buffer): Buffer {
  const at = line.indexOf('{"h":"')
  return at > 0 ? line.subarray(at) : line
}

/** Why entries of the audit directory that are not segments fail verification, naming each. */
function foreignMessage(foreign: readonly string[]): string {
  return (
    `${foreign.length === 1 ? 'an entry that is' : `${foreign.length} entries that are`} not a segment file of this log: ${foreign.join(', ')} ` +
    '(planted, a directory or link, or a segment number claimed twice); no reader opens them — move them out of the audit directory and keep them as evidence'
  )
}

/** The range a recovery checkpoint names (`{from, to}` as ids, or null); throws Broken-worthy text otherwise. */
function parseDeclaredRange(v: unknown, log: string): UnattestedRange | null {
  if (v === null) return null
  if (typeof v === 'object' && !Array.isArray(v)) {
    const r = v as { from?: unknown; to?: unknown }
    const from = positionOf(r.from, log)
    const to = positionOf(r.to, log)
    if (from !== null && to !== null && from <= to) return { from, to }
  }
  // An unreadable range cannot match the one the log shows: reported as a mismatch.
  return { from: 0, to: -1 }
}

function describeRange(log: string, r: UnattestedRange | null): string {
  if (r === null) return 'none'
  if (r.to < r.from) return 'an unreadable range'
  return `${r.to - r.from + 1} event(s) ${eventId(log, r.from)} … ${eventId(log, r.to)}`
}
