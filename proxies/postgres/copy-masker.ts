// The COPY … TO STDOUT masker: one CopyData payload is one row (the server sends exactly that), in
// COPY's text or CSV format. A row with nothing to change is returned as the same Buffer. A masked
// field is decoded (text: backslash escapes; CSV: quotes), masked by the same value operations as
// DataRows (values.ts; COPY always carries the text representation), and encoded again:
//
//   - text: `\\`, newline, carriage return, tab, backspace, form feed, vertical tab and the
//     delimiter are escaped as PostgreSQL escapes them; NULL is the NULL string (`\N`);
//   - CSV: a masked non-NULL value is always quoted (valid for any value, and a quoted value is
//     never read as NULL, even when it equals the NULL string); NULL is the NULL string, unquoted.
//
// With HEADER, the first payload is the header line and passes untouched. BINARY COPY is not
// handled here: the proxy must refuse it where masks apply. Delimiter, quote and escape are
// single-byte ASCII characters (PostgreSQL requires that), so they never occur inside a
// multi-byte UTF-8 character and the byte scan is safe.

import { compileOp, MaskingError, type MaskingKeys, Op, ValueMasker, type ValueOp } from '../kit/index.js'
import type { ColumnPlan } from './datarow-masker.js'

export interface CopyFormat {
  readonly format: 'text' | 'csv'
  readonly delimiter: string
  readonly null: string
  readonly quote: string
  readonly escape: string
  readonly header: boolean
}

const NL = 0x0a
const BACKSLASH = 0x5c

function singleByte(what: string, s: string): number {
  if (s.length !== 1 || s.charCodeAt(0) > 0x7f) throw new MaskingError(`the COPY ${what} must be one single-byte character`)
  return s.charCodeAt(0)
}

/** Text format: the raw bytes of an escaped field. */
function unescapeText(f: Buffer): Buffer {
  if (!f.includes(BACKSLASH)) return f
  const out = Buffer.allocUnsafe(f.length)
  let q = 0
  for (let i = 0; i < f.length; i++) {
    const b = f[i] as number
    if (b !== BACKSLASH || i + 1 >= f.length) {
      out[q++] = b
      continue
    }
    const c = f[++i] as number
    switch (c) {
      case 0x62: // b
        out[q++] = 0x08
        break
      case 0x66: // f
        out[q++] = 0x0c
        break
      case 0x6e: // n
        out[q++] = 0x0a
        break
      case 0x72: // r
        out[q++] = 0x0d
        break
      case 0x74: // t
        out[q++] = 0x09
        break
      case 0x76: // v
        out[q++] = 0x0b
        break
      case 0x78: {
        // x: one or two hex digits
        let v = 0
        let k = 0
        while (k < 2 && i + 1 < f.length && isHex(f[i + 1] as number)) {
          v = v * 16 + hexVal(f[++i] as number)
          k++
        }
        out[q++] = k === 0 ? 0x78 : v
        break
      }
      default:
        if (c >= 0x30 && c <= 0x37) {
          // one to three octal digits
          let v = c - 0x30
          let k = 1
          while (k < 3 && i + 1 < f.length && (f[i + 1] as number) >= 0x30 && (f[i + 1] as number) <= 0x37) {
            v = v * 8 + ((f[++i] as number) - 0x30)
            k++
          }
          out[q++] = v & 0xff
        } else out[q++] = c
    }
  }
  return out.subarray(0, q)
}

function isHex(b: number): boolean {
  return (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66)
}
function hexVal(b: number): number {
  return b <= 0x39 ? b - 0x30 : (b | 0x20) - 0x61 + 10
}

const TEXT_ESCAPES: Readonly<Record<number, number>> = { 8: 0x62, 12: 0x66, 10: 0x6e, 13: 0x72, 9: 0x74, 11: 0x76, 92: 0x5c }

function escapeText(v: Buffer, delim: number, nullBytes: Buffer): Buffer {
  const parts: number[] = []
  for (const b of v) {
    const e = TEXT_ESCAPES[b]
    if (e !== undefined) parts.push(BACKSLASH, e)
    else if (b === delim) parts.push(BACKSLASH, b)
    else parts.push(b)
  }
  const out = Buffer.from(parts)
  // A value that reads as the NULL marker (a custom NULL '****') must not turn into NULL: escape
  // its first character, which COPY reads back as itself when it is not an escape letter or digit.
  if (out.equals(nullBytes) && out.length > 0 && !/[0-7bfnrtvxN\\]/.test(String.fromCharCode(out[0] as number))) {
    return Buffer.concat([Buffer.from([BACKSLASH]), out])
  }
  return out
}

function quoteCsv(v: Buffer, quote: number, esc: number): Buffer {
  const parts: number[] = [quote]
  for (const b of v) {
    if (b === quote || b === esc) parts.push(esc)
    parts.push(b)
  }
  parts.push(quote)
  return Buffer.from(parts)
}

interface Field {
  start: number
  end: number
}

class CopyMasker {
  private readonly ops: readonly ValueOp[]
  private readonly anyMasked: boolean
  private readonly delim: number
  private readonly quote: number
  private readonly escape: number
  private readonly nullBytes: Buffer
  private readonly csv: boolean
  private pendingHeader: boolean
  private readonly fields: Field[]
  private readonly values: ValueMasker

  constructor(columns: readonly ColumnPlan[], fmt: CopyFormat, hashKey: Buffer | MaskingKeys) {
    // COPY carries the text representation whatever the result format would have been.
    this.ops = columns.map((c) => compileOp({ ...c, format: 0 }))
    this.anyMasked = this.ops.some((o) => o.op !== Op.Keep)
    this.csv = fmt.format === 'csv'
    this.delim = singleByte('delimiter', fmt.delimiter)
    this.quote = this.csv ? singleByte('quote', fmt.quote) : 0
    this.escape = this.csv ? singleByte('escape', fmt.escape) : 0
    this.nullBytes = Buffer.from(fmt.null, 'utf8')
    this.pendingHeader = fmt.header
    this.fields = columns.map(() => ({ start: 0, end: 0 }))
    this.values = new ValueMasker(hashKey)
  }

  rewrite(payload: Buffer): Buffer {
    if (this.pendingHeader) {
      this.pendingHeader = false
      return payload
    }
    if (!this.anyMasked) return payload
    if (payload.length === 0 || payload[payload.length - 1] !== NL) throw new MaskingError('a COPY row does not end with a newline')
    const end = payload.length - 1
    if (this.csv) this.splitCsv(payload, end)
    else this.splitText(payload, end)

    let out: Buffer[] | null = null
    let copied = 0
    for (let i = 0; i < this.ops.length; i++) {
      const o = this.ops[i] as ValueOp
      if (o.op === Op.Keep) continue
      const f = this.fields[i] as Field
      const raw = payload.subarray(f.start, f.end)
      let value: Buffer | null
      if (this.csv) {
        if (raw.length > 0 && raw[0] === this.quote) value = this.unquoteCsv(raw)
        else value = raw.equals(this.nullBytes) ? null : raw
      } else value = raw.equals(this.nullBytes) ? null : unescapeText(raw)
      const r = this.values.apply(o, value)
      if (r === undefined) continue
      const enc = r === null ? this.nullBytes : this.csv ? quoteCsv(r, this.quote, this.escape) : escapeText(r, this.delim, this.nullBytes)
      out ??= []
      out.push(payload.subarray(copied, f.start), enc)
      copied = f.end
    }
    if (out === null) return payload
    out.push(payload.subarray(copied))
    return Buffer.concat(out)
  }

  private splitText(p: Buffer, end: number): void {
    let i = 0
    let start = 0
    let k = 0
    const fields = this.fields
    const n = fields.length
    for (; i < end; i++) {
      const b = p[i] as number
      if (b === BACKSLASH) i++
      else if (b === this.delim) {
        if (k >= n - 1) throw new MaskingError(`a COPY row has more than ${n} fields`)
        const f = fields[k++] as Field
        f.start = start
        f.end = i
        start = i + 1
      }
    }
    if (i > end) throw new MaskingError('a COPY row ends inside an escape')
    if (k !== n - 1) throw new MaskingError(`a COPY row has ${k + 1} fields, the result has ${n}`)
    const f = fields[k] as Field
    f.start = start
    f.end = end
  }

  private splitCsv(p: Buffer, end: number): void {
    let i = 0
    let start = 0
    let k = 0
    const fields = this.fields
    const n = fields.length
    let inQuotes = false
    for (; i < end; i++) {
      const b = p[i] as number
      if (inQuotes) {
        if (b === this.escape && i + 1 < end && (p[i + 1] === this.quote || p[i + 1] === this.escape) && this.escape !== this.quote) i++
        else if (b === this.quote) {
          if (this.escape === this.quote && i + 1 < end && p[i + 1] === this.quote) i++
          else inQuotes = false
        }
      } else if (b === this.quote) inQuotes = true
      else if (b === this.delim) {
        if (k >= n - 1) throw new MaskingError(`a COPY row has more than ${n} fields`)
        const f = fields[k++] as Field
        f.start = start
        f.end = i
        start = i + 1
      }
    }
    if (inQuotes) throw new MaskingError('a COPY row ends inside a quoted field')
    if (k !== n - 1) throw new MaskingError(`a COPY row has ${k + 1} fields, the result has ${n}`)
    const f = fields[k] as Field
    f.start = start
    f.end = end
  }

  /** A quoted CSV field's value: quotes removed, escaped quotes and escapes unescaped. */
  private unquoteCsv(raw: Buffer): Buffer {
    const out: number[] = []
    let inQuotes = false
    for (let i = 0; i < raw.length; i++) {
      const b = raw[i] as number
      if (inQuotes) {
        if (b === this.escape && i + 1 < raw.length && (raw[i + 1] === this.quote || raw[i + 1] === this.escape)) {
          if (this.escape === this.quote && raw[i + 1] !== this.quote) {
            inQuotes = false
            continue
          }
          out.push(raw[++i] as number)
        } else if (b === this.quote) inQuotes = false
        else out.push(b)
      } else if (b === this.quote) inQuotes = true
      else out.push(b)
    }
    return Buffer.from(out)
  }
}

export function compileCopyMasker(
  columns: readonly ColumnPlan[],
  fmt: CopyFormat,
  hashKey: Buffer | MaskingKeys,
): { rewrite(payload: Buffer): Buffer } {
  return new CopyMasker(columns, fmt, hashKey)
}
