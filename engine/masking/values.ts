// What happens to one value: the column's plan compiled once into an operation, then applied to the
// value's bytes. Shared by the PostgreSQL proxy's DataRow and COPY maskers.
//
// Rules (README.md in this folder has the table):
//   - NULL stays NULL under every strategy (masking cannot hide that a value is absent, and
//     inventing one would change COUNT(col) results the caller can compute anyway);
//   - only text-like types (text, varchar, bpchar, name, unknown) get string masks; every other or
//     unknown type becomes NULL, never a string the type cannot hold (a driver decoding an int4
//     from `****` would throw or, worse, misread it);
//   - a derived value (not the column itself) is redacted (null stays null): partial and hash
//     applied through substr() or || would hand the value out piece by piece;
//   - redact → `****`; partial → `****` + the last `keep` code points, a value not longer than
//     `keep` fully redacted; hash → 32 hex digits of HMAC-SHA256(key, value), the same for the same
//     value in any table, session or replica sharing the key; bpchar padding is ignored for hash and
//     partial, as PostgreSQL ignores it in comparisons, so `char(n)` and `text` hashes still join.

import { DETECTOR_NAMES, detect } from './detectors.js'
import { HmacSha256 } from './hmac.js'

export type ColumnAction =
  | { readonly action: 'keep' }
  | {
      readonly action: 'mask'
      readonly rule: string
      readonly strategy: 'redact' | 'partial' | 'hash' | 'hash_session' | 'null'
      readonly keep?: number
      /** derived from the classified column rather than projected as is */
      readonly derived: boolean
    }
  | { readonly action: 'detect'; readonly detectors: readonly string[] }

export interface ColumnPlan {
  readonly mask: ColumnAction
  /** The column's type OID from RowDescription; null when unknown (then a masked value becomes NULL). */
  readonly typeOid: number | null
  /** 0 text, 1 binary (per column, as the result is actually encoded). */
  readonly format: 0 | 1
}

/** Type OIDs whose text and binary forms are both the UTF-8 characters of the value. */
export const TEXT_TYPE_OIDS: ReadonlySet<number> = new Set([25, 1043, 1042, 19, 705])
const BPCHAR = 1042
const INT8 = 20

export const REDACTED = '****'
const REDACTED_BUF = Buffer.from(REDACTED)

export enum Op {
  Keep = 0,
  Null = 1,
  Redact = 2,
  Partial = 3,
  Hash = 4,
  /** Detectors on a text-like value: each hit replaced. */
  Detect = 5,
  /** Detectors on any other type: a hit makes the whole value NULL (no string fits the type). */
  DetectOther = 6,
  /** HMAC under the session's own key: equal values match within one session only. */
  HashSession = 7,
}

export interface ValueOp {
  readonly op: Op
  readonly keep: number
  readonly bpchar: boolean
  readonly detectors: readonly string[]
  /** Binary int8: decoded to decimal before the detectors look (a card number kept in a bigint). */
  readonly binaryInt8: boolean
}

/** The hash keys of one session: the gateway's masking key, and the key `hash_session` uses
 *  (derived from it and a random salt drawn when the session starts). */
export interface MaskingKeys {
  readonly key: Buffer
  readonly sessionKey: Buffer
}

export function compileOp(c: ColumnPlan): ValueOp {
  const m = c.mask
  const textLike = c.typeOid !== null && TEXT_TYPE_OIDS.has(c.typeOid)
  const base = { keep: 0, bpchar: c.typeOid === BPCHAR, detectors: [] as readonly string[], binaryInt8: false }
  if (m.action === 'keep') return { ...base, op: Op.Keep }
  if (m.action === 'detect') {
    if (m.detectors.length === 0) return { ...base, op: Op.Keep }
    for (const d of m.detectors) {
      // A typo must not switch a backstop off, nor fail halfway through a result.
      if (!DETECTOR_NAMES.includes(d)) throw new Error(`unknown detector ${JSON.stringify(d)} (known: ${DETECTOR_NAMES.join(', ')})`)
    }
    return { ...base, op: textLike ? Op.Detect : Op.DetectOther, detectors: m.detectors, binaryInt8: c.format === 1 && c.typeOid === INT8 }
  }
  if (m.strategy === 'null' || !textLike) return { ...base, op: Op.Null }
  if (m.derived || m.strategy === 'redact') return { ...base, op: Op.Redact }
  if (m.strategy === 'partial') {
    const keep = m.keep ?? 4
    return keep > 0 ? { ...base, op: Op.Partial, keep } : { ...base, op: Op.Redact }
  }
  return { ...base, op: m.strategy === 'hash_session' ? Op.HashSession : Op.Hash }
}

/** Without bpchar's trailing blanks (PostgreSQL ignores them when comparing char(n) values). */
function unpadded(v: Buffer, bpchar: boolean): Buffer {
  if (!bpchar) return v
  let e = v.length
  while (e > 0 && v[e - 1] === 0x20) e--
  return e === v.length ? v : v.subarray(0, e)
}

function partial(v: Buffer, keep: number): Buffer {
  // Walk back over `keep` code points (a UTF-8 lead byte is any byte not of the form 10xxxxxx).
  let count = 0
  let i = v.length - 1
  for (; i >= 0; i--) {
    if (((v[i] as number) & 0xc0) !== 0x80 && ++count === keep) break
  }
  // i is where the kept tail starts; a value of keep or fewer code points is fully redacted.
  if (i <= 0) return REDACTED_BUF
  // By hand: a handful of bytes, where Buffer#copy's checks would cost more than the copy.
  const r = REDACTED_BUF.length
  const out = Buffer.allocUnsafe(r + v.length - i)
  for (let k = 0; k < r; k++) out[k] = REDACTED_BUF[k] as number
  for (let k = i; k < v.length; k++) out[r + k - i] = v[k] as number
  return out
}

/** Applies value operations; holds the hash key (as HMAC midstates). */
export class ValueMasker {
  private readonly hmac: HmacSha256
  private sessionHmac: HmacSha256 | null = null

  constructor(private readonly keys: Buffer | MaskingKeys) {
    this.hmac = new HmacSha256(Buffer.isBuffer(keys) ? keys : keys.key)
  }

  /** 32 hex digits (128 bits) of HMAC-SHA256: collisions are negligible for joins on any table size. */
  hash(v: Buffer): Buffer {
    return this.hmac.hex(v, 32)
  }

  /**
   * The value's replacement: undefined when unchanged, null for SQL NULL, else the new bytes.
   * `v` is null for a NULL value.
   */
  apply(o: ValueOp, v: Buffer | null): Buffer | null | undefined {
    if (v === null) return undefined
    switch (o.op) {
      case Op.Keep:
        return undefined
      case Op.Null:
        return null
      case Op.Redact:
        return REDACTED_BUF
      case Op.Partial:
        return partial(unpadded(v, o.bpchar), o.keep)
      case Op.Hash:
        return this.hash(unpadded(v, o.bpchar))
      case Op.HashSession: {
        // Without a session key (a caller that passed only the masking key) the value is redacted:
        // never a hash that would match across sessions.
        if (Buffer.isBuffer(this.keys)) return REDACTED_BUF
        this.sessionHmac ??= new HmacSha256(this.keys.sessionKey)
        return this.sessionHmac.hex(unpadded(v, o.bpchar), 32)
      }
      case Op.Detect: {
        const text = v.toString('utf8')
        const hits = detect(text, o.detectors)
        if (hits.length === 0) return undefined
        let out = ''
        let p = 0
        for (const h of hits) {
          out += text.slice(p, h.start) + REDACTED
          p = h.end
        }
        return Buffer.from(out + text.slice(p), 'utf8')
      }
      case Op.DetectOther: {
        const text = o.binaryInt8 && v.length === 8 ? v.readBigInt64BE(0).toString() : v.toString('utf8')
        return detect(text, o.detectors).length === 0 ? undefined : null
      }
    }
  }
}
