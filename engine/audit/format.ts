// The audit log's line format and hash chain: the one canonical serialization every writer,
// verifier, sink and receiver agrees on.
//
// An event is one line of UTF-8 JSON ending in "\n":
//
//   {"h":"<H>","prev":"<P>","id":"<log>-<n>","time":"<RFC 3339>","type":"…",…the event…}
//   └──prefix──┘└──────────────────────────── body ────────────────────────────────────┘
//
// - The *body* is everything after the 72-byte prefix `{"h":"<64 hex>",` up to (not including)
//   the newline. It starts with `"prev":` and ends with `}`.
// - H = lower-case hex SHA-256 of the body's bytes, exactly as they are in the file. Nothing is
//   re-serialized to check it: a verifier hashes bytes, so key order, spacing or number formatting
//   can never make two readers disagree. (A receiver that wants to verify must keep lines verbatim;
//   every sink and `audit export` hand them over verbatim.)
// - P = the H of the line before it in the log (across segment files); the first event of a log
//   has P = 64 zeros. Because `prev` is inside the body, each H covers the whole history before it.
// - `id` is `<log>-<n>`: the log's random id (fixed when the log is created) and the event's
//   position n = 1, 2, 3 … across every segment. Receivers de-duplicate on it; gaps and repeats
//   are visible without any hashing.
//
// Records the log writes about itself (`audit.segment`, `audit.checkpoint`, `audit.prune`) have
// the same shape and sit in the same chain. Segment headers and checkpoints carry an Ed25519
// signature (`sig`, base64url) by the gateway's audit key over the ASCII message
//
//   gatehouse-audit/1 <kind> <log> <n> <hash> <time> <extra>
//
// kind `checkpoint`: n and hash are those of the event the checkpoint covers (the line before it,
//   so hash = the checkpoint's own `prev`); extra is the SHA-256 of a torn tail it seals, or `-`;
//   a `recovery` checkpoint adds ` unattested:<from>-<to>` (the positions of the events a crash
//   left unsigned, which it seals without vouching for them) or ` unattested:-`.
// kind `segment`: n is the header's own position, hash its `prev`, extra the segment number.

import * as crypto from 'node:crypto'

export const HASH_HEX_LENGTH = 64
export const GENESIS_HASH = '0'.repeat(HASH_HEX_LENGTH)
/** `{"h":"` + 64 hex + `",` */
export const PREFIX_LENGTH = 6 + HASH_HEX_LENGTH + 2
const PREFIX_OPEN = '{"h":"'

/** Types of the records the log writes about itself. */
export const SEGMENT_TYPE = 'audit.segment' as const
export const CHECKPOINT_TYPE = 'audit.checkpoint' as const
export const PRUNE_TYPE = 'audit.prune' as const

export type CheckpointReason = 'interval' | 'seal' | 'shutdown' | 'recovery'

const oneShot = (crypto as { hash?: (algorithm: string, data: string | Buffer, encoding: 'hex') => string }).hash

/** Hex SHA-256. `crypto.hash` (Node ≥ 20.12) is about twice as fast as createHash for short inputs. */
export const sha256Hex: (data: string | Buffer) => string = oneShot
  ? (data) => oneShot('sha256', data, 'hex')
  : (data) => crypto.createHash('sha256').update(data).digest('hex')

export function eventId(log: string, n: number): string {
  return `${log}-${n}`
}

/** The position n of an id `<log>-<n>`, or null if it has another log or no valid number. */
export function positionOf(id: unknown, log: string): number | null {
  if (typeof id !== 'string' || !id.startsWith(log) || id.charCodeAt(log.length) !== 0x2d) return null
  const tail = id.slice(log.length + 1)
  if (!/^[1-9][0-9]{0,15}$/.test(tail)) return null
  return Number(tail)
}

/**
 * Builds one line (without the newline) from the chain fields and the event's own JSON (the text
 * of `JSON.stringify(event)`, which must be an object). Returns the line and its hash.
 */
export function encodeLine(prev: string, id: string, time: string, eventJson: string): { line: string; h: string } {
  // eventJson is `{…}`: drop its `{` and splice the chain fields in front of its members.
  const members = eventJson.length > 2 ? `,${eventJson.slice(1)}` : '}'
  const body = `"prev":"${prev}","id":"${id}","time":"${time}"${members}`
  const h = sha256Hex(body)
  return { line: `${PREFIX_OPEN}${h}",${body}`, h }
}

/**
 * An event's JSON text: the text of `JSON.stringify(event)`, whole, or in pieces that join to it
 * (`eventJsonText`: a long string value is a piece of its own instead of being copied into the text).
 */
export type EventText = string | readonly string[]

/** String values from this length on are kept out of the event's text (they are written straight). */
const LONG_VALUE = 64 * 1024
/** What JSON.stringify escapes in a string (any surrogate, paired or not, counts: then it escapes). */
// biome-ignore lint/suspicious/noControlCharactersInRegex: these are the characters JSON escapes
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/

/**
 * `JSON.stringify(event)` for a plain object, except that a long string value with nothing to
 * escape is not copied into the text: the result is then the pieces around it and the value
 * itself, whose concatenation is the same text. A statement of megabytes would otherwise be copied
 * into a second string of megabytes only to be encoded once more (the line is written from the
 * pieces: encodeLineInto).
 */
export function eventJsonText(event: Record<string, unknown>): EventText {
  let long = false
  for (const k in event) {
    const v = event[k]
    if (typeof v === 'string' && v.length >= LONG_VALUE) {
      long = true
      break
    }
  }
  if (!long) return JSON.stringify(event)
  const pieces: string[] = []
  let text = '{'
  let first = true
  for (const k of Object.keys(event)) {
    const v = event[k]
    // Members JSON.stringify leaves out.
    if (v === undefined || typeof v === 'function' || typeof v === 'symbol') continue
    const member = `${first ? '' : ','}${JSON.stringify(k)}:`
    first = false
    if (typeof v === 'string' && v.length >= LONG_VALUE && !NEEDS_ESCAPE.test(v)) {
      pieces.push(`${text}${member}"`, v)
      text = '"'
    } else text += `${member}${JSON.stringify(v)}`
  }
  pieces.push(`${text}}`)
  return pieces
}

function textLength(t: EventText): number {
  if (typeof t === 'string') return t.length
  let n = 0
  for (const p of t) n += p.length
  return n
}

/** Bytes `encodeLineInto` may need for one line (the worst case: 3 bytes per UTF-16 unit). */
export function lineBytesBound(id: string, time: string, eventJson: EventText): number {
  return PREFIX_LENGTH + 3 * (HASH_HEX_LENGTH + id.length + time.length + textLength(eventJson) + 32)
}

/**
 * `encodeLine` straight into bytes: writes the line (without the newline) into `buf` at `at` and
 * returns its hash and where it ends. The same bytes as `Buffer.from(encodeLine(…).line)` (of the
 * joined text), but the event's text is encoded to UTF-8 once — the hash, the write and the
 * recording all use these bytes — instead of being flattened, encoded for the hash and encoded
 * again for the write. `buf` must hold `lineBytesBound` bytes from `at`.
 */
export function encodeLineInto(
  prev: string,
  id: string,
  time: string,
  eventJson: EventText,
  buf: Buffer,
  at: number,
): { h: string; end: number } {
  const bodyAt = at + PREFIX_LENGTH
  let end = bodyAt + buf.write(`"prev":"${prev}","id":"${id}","time":"${time}"`, bodyAt, 'utf8')
  if (textLength(eventJson) > 2) {
    // eventJson is `{…}`: written whole, its `{` then becomes the `,` before its members (one pass
    // over the text, no sliced or joined copy of it).
    const open = end
    if (typeof eventJson === 'string') end += buf.write(eventJson, end, 'utf8')
    else for (const piece of eventJson) end += buf.write(piece, end, 'utf8')
    buf[open] = 0x2c
  } else buf[end++] = 0x7d
  const h = sha256Hex(buf.subarray(bodyAt, end))
  buf.write(`${PREFIX_OPEN}${h}",`, at, 'latin1')
  return { h, end }
}

export interface ParsedLine {
  /** The hash the line claims. */
  readonly h: string
  /** Whether sha256(body) equals `h`. */
  readonly hashOk: boolean
  readonly event: Record<string, unknown>
}

/** Why a line could not be read at all (torn, not JSON, not our format). */
export class LineFormatError extends Error {}

const HEX64 = /^[0-9a-f]{64}$/

/** Parses one line (bytes, without the newline) and checks its own hash. */
export function parseLine(line: Buffer): ParsedLine {
  if (line.length < PREFIX_LENGTH + 2 || line.toString('latin1', 0, 6) !== PREFIX_OPEN) {
    throw new LineFormatError('not an audit line (it does not start with {"h":")')
  }
  const h = line.toString('latin1', 6, 6 + HASH_HEX_LENGTH)
  if (!HEX64.test(h) || line[6 + HASH_HEX_LENGTH] !== 0x22 || line[7 + HASH_HEX_LENGTH] !== 0x2c) {
    throw new LineFormatError('not an audit line (malformed "h")')
  }
  let event: unknown
  try {
    event = JSON.parse(line.toString('utf8'))
  } catch {
    throw new LineFormatError('not valid JSON (a torn or damaged line)')
  }
  if (typeof event !== 'object' || event === null || Array.isArray(event)) throw new LineFormatError('not a JSON object')
  const hashOk = sha256Hex(line.subarray(PREFIX_LENGTH)) === h
  return { h, hashOk, event: event as Record<string, unknown> }
}

/** The message a segment header or checkpoint signs (see the top of this file). */
export function signedMessage(kind: 'checkpoint' | 'segment', log: string, n: number, hash: string, time: string, extra: string): Buffer {
  return Buffer.from(`gatehouse-audit/1 ${kind} ${log} ${n} ${hash} ${time} ${extra}`, 'utf8')
}

/** Events a crash left after the last signed record, sealed (not vouched for) by a recovery checkpoint. */
export interface UnattestedRange {
  readonly from: number
  readonly to: number
}

/** The `extra` a checkpoint signs: the torn tail's SHA-256 and, for a recovery, the unattested range. */
export function checkpointExtra(tornSha256: string | null, unattested: UnattestedRange | null | undefined): string {
  const torn = tornSha256 ?? '-'
  if (unattested === undefined) return torn
  return `${torn} unattested:${unattested ? `${unattested.from}-${unattested.to}` : '-'}`
}

/** Splits a buffer into lines: every complete line, and the bytes after the last newline. */
export function splitLines(buf: Buffer): { lines: Buffer[]; rest: Buffer } {
  const lines: Buffer[] = []
  let start = 0
  for (;;) {
    const nl = buf.indexOf(0x0a, start)
    if (nl < 0) break
    lines.push(buf.subarray(start, nl))
    start = nl + 1
  }
  return { lines, rest: buf.subarray(start) }
}
