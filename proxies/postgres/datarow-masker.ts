// The DataRow masker: one whole DataRow message in, the message to send out. Built once per result
// (per RowDescription) from the column plans; the hot path reads the column lengths into reused
// arrays, asks each masked column for its replacement, and returns the very same Buffer when no
// value changed (a NULL in every masked column, or detectors that found nothing), so unmasked rows
// are forwarded without re-encoding. Only a row that changes is rebuilt, in one allocation.
//
// Every length is checked against the message before it is used: a row whose lengths do not add
// up, whose column count differs from the plan, or with trailing bytes is a MaskingError (the proxy
// ends the result rather than forward a row it could not mask).

import { type ColumnPlan, compileOp, MaskingError, type MaskingKeys, Op, ValueMasker, type ValueOp } from '../kit/index.js'

export type { ColumnAction, ColumnPlan } from '../kit/index.js'

export interface RowMasker {
  /** One whole DataRow message ('D', int32 length, int16 count, values) → the message to send.
   *  Returns the same Buffer when nothing changed. Throws MaskingError on a malformed row. */
  rewrite(message: Buffer): Buffer
}

const DATA_ROW = 0x44 // 'D'
/** 'D' + int32 length + int16 column count. */
const HEADER = 7

class CompiledRowMasker implements RowMasker {
  private readonly ops: readonly ValueOp[]
  private readonly masked: readonly number[]
  private readonly starts: Int32Array
  private readonly lengths: Int32Array
  private readonly repl: (Buffer | null | undefined)[]
  private readonly values: ValueMasker

  constructor(columns: readonly ColumnPlan[], hashKey: Buffer | MaskingKeys) {
    this.ops = columns.map(compileOp)
    const masked: number[] = []
    this.ops.forEach((o, i) => {
      if (o.op !== Op.Keep) masked.push(i)
    })
    this.masked = masked
    this.starts = new Int32Array(columns.length)
    this.lengths = new Int32Array(columns.length)
    this.repl = new Array<Buffer | null | undefined>(columns.length).fill(undefined)
    this.values = new ValueMasker(hashKey)
  }

  rewrite(message: Buffer): Buffer {
    const total = message.length
    if (total < HEADER || message[0] !== DATA_ROW) throw new MaskingError('not a DataRow message')
    if (message.readInt32BE(1) !== total - 1) throw new MaskingError('the DataRow length does not match the message')
    const n = message.readInt16BE(5)
    if (n !== this.ops.length) throw new MaskingError(`the DataRow has ${n} columns, the result described ${this.ops.length}`)
    if (this.masked.length === 0) return message
    const starts = this.starts
    const lengths = this.lengths
    let p = HEADER
    for (let i = 0; i < n; i++) {
      if (p + 4 > total) throw new MaskingError('the DataRow ends inside a column length')
      const l = message.readInt32BE(p)
      p += 4
      starts[i] = p
      lengths[i] = l
      if (l > 0) {
        if (l > total - p) throw new MaskingError('a DataRow value runs past the message')
        p += l
      } else if (l < -1) throw new MaskingError(`a DataRow value has length ${l}`)
    }
    if (p !== total) throw new MaskingError('the DataRow has bytes after its last value')

    const repl = this.repl
    let changed = false
    let size = total
    for (const i of this.masked) {
      const l = lengths[i] as number
      const s = starts[i] as number
      const r = this.values.apply(this.ops[i] as ValueOp, l < 0 ? null : message.subarray(s, s + l))
      repl[i] = r
      if (r !== undefined) {
        changed = true
        size += (r === null ? 0 : r.length) - Math.max(l, 0)
      }
    }
    if (!changed) return message

    const out = Buffer.allocUnsafe(size)
    out[0] = DATA_ROW
    out.writeInt32BE(size - 1, 1)
    out.writeInt16BE(n, 5)
    let q = HEADER
    // Unchanged runs of columns (length words included) are copied as one block.
    let runStart = HEADER
    for (let i = 0; i < n; i++) {
      const r = repl[i]
      if (r === undefined) continue
      const s = starts[i] as number
      const l = lengths[i] as number
      q = put(out, q, message, runStart, s - 4)
      if (r === null) q = out.writeInt32BE(-1, q)
      else {
        q = out.writeInt32BE(r.length, q)
        q = put(out, q, r, 0, r.length)
      }
      runStart = s + Math.max(l, 0)
      repl[i] = undefined
    }
    put(out, q, message, runStart, total)
    return out
  }
}

/** Copies src[from, to) to dst at `at`; returns the end. Short runs (most values of a row) by hand:
 * Buffer#copy's own checks cost more than copying a few dozen bytes. */
function put(dst: Buffer, at: number, src: Buffer, from: number, to: number): number {
  const n = to - from
  if (n > 48) return at + src.copy(dst, at, from, to)
  for (let i = 0; i < n; i++) dst[at + i] = src[from + i] as number
  return at + n
}

export function compileRowMasker(columns: readonly ColumnPlan[], hashKey: Buffer | MaskingKeys): RowMasker {
  return new CompiledRowMasker(columns, hashKey)
}
