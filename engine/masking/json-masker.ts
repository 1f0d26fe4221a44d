// JsonMasker: the resumable scanner that validates a JSON document (or a sequence of them, RFC 8259
// and UTF-8) as it streams, tracks each value's automaton state (json-plan.ts) and copies the input
// through as slices of its chunks, replacing masked values whole. The contract is in json-stream.ts.
// The scanner's states and byte classes stay in this module: they are read on every byte.

import { isUtf8 } from 'node:buffer'
import { wellFormed } from './jsonpath.js'
import { type JsonMaskedPath, JsonMaskError, type JsonMaskOptions } from './json-mask-types.js'
import type { Compiled, DState, FinalAction, JsonMaskPlan } from './json-plan.js'
import { compileOp, type MaskingKeys, type ValueOp, ValueMasker } from './values.js'

// Scanner states.
const S_VALUE = 0 // a value must come (after `:`, `,` in an array, or at the top)
const S_ARR_FIRST = 1 // after `[`: a value or `]`
const S_AFTER = 2 // after a value inside a container: `,` or the closing bracket
const S_KEY_OR_END = 3 // after `{`: a member name or `}`
const S_KEY = 4 // after `,` in an object: a member name
const S_COLON = 5
const S_STRING = 6
const S_KEY_STRING = 7
const S_NUMBER = 8
const S_LITERAL = 9
const S_END = 10 // the (single) top-level value is complete: only white space may follow
const S_TOP = 11 // multiple mode: between top-level values

const OBJ = 1
const ARR = 2

const REDACTED_JSON = Buffer.from('"****"')
const NULL_JSON = Buffer.from('null')
const LITERALS = [Buffer.from('true'), Buffer.from('false'), Buffer.from('null')]

// Bytes: white space, and the number grammar's states (RFC 8259 section 6).
const isWs = (c: number): boolean => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09
const isDigit = (c: number): boolean => c >= 0x30 && c <= 0x39
const isHex = (c: number): boolean => (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66)

// Number sub-states; those marked * may end the number.
const N_MINUS = 1
const N_ZERO = 2 // *
const N_INT = 3 // *
const N_DOT = 4
const N_FRAC = 5 // *
const N_E = 6
const N_ESIGN = 7
const N_EXP = 8 // *

/**
 * One document (or sequence of documents). `write` returns what may be sent so far; `end` the
 * rest. Both throw JsonMaskError on invalid input, after which the masker refuses more input.
 */
export class JsonMasker {
  private st = S_VALUE
  private readonly multiple: boolean
  private readonly maxDepth: number
  private readonly maxCapture: number
  private readonly values: ValueMasker
  private readonly ops = new Map<number, ValueOp>()

  // The container stack.
  private depth = 0
  private readonly kinds: Uint8Array
  private readonly states: DState[] = []
  private readonly counters: number[] = []
  /** The state of the value about to start (set by a member name, an array slot or the top). */
  private next: DState

  // Scalar sub-states.
  private esc = 0 // in a string: 0 plain, 1 after `\`, 2..5 reading \u hex digits
  private num = 0
  private lit: Buffer = LITERALS[0] as Buffer
  private litPos = 0

  // A member name being read for comparison.
  private keyWanted = false
  private keyParts: Buffer[] = []
  private keyLen = 0
  private keyEscaped = false
  private keyTooLong = false
  private keyStart = 0
  private readonly keyCap: number

  // The masked value being dropped: the depth it started at, what replaces it, what is kept of it.
  private maskDepth = -1
  private maskAction: FinalAction | null = null
  private maskKind = 0 // first byte of the masked value
  private capture: Buffer[] | null = null
  private captureLen = 0
  private captureStart = 0

  // Output of the current write.
  private out: Buffer[] = []
  private emitFrom = 0
  private offset = 0 // input offset of the current chunk's first byte
  private seenValue = false
  private failed: JsonMaskError | null = null
  private utf8Carry: Buffer | null = null
  private readonly counts: number[]

  constructor(
    readonly plan: JsonMaskPlan,
    keys: Buffer | MaskingKeys,
    opts: JsonMaskOptions = {},
  ) {
    this.multiple = opts.multiple === true
    this.maxDepth = opts.maxDepth ?? 512
    this.maxCapture = opts.maxCapture ?? 64 * 1024
    this.kinds = new Uint8Array(this.maxDepth + 1)
    this.values = new ValueMasker(keys)
    this.next = plan.root
    this.st = this.multiple ? S_TOP : S_VALUE
    // A name longer than this (raw, escapes included: at most 6 bytes per byte of the decoded name)
    // cannot equal any name in a path.
    this.keyCap = 6 * plan.maxNameBytes + 16
    this.counts = new Array<number>(plan.compiled.length).fill(0)
  }

  /** The paths that masked at least one value so far. */
  masked(): JsonMaskedPath[] {
    const out: JsonMaskedPath[] = []
    this.counts.forEach((count, i) => {
      if (count === 0) return
      const t = (this.plan.compiled[i] as Compiled).target
      out.push({ path: t.path, rule: t.rule, strategy: t.strategy, count })
    })
    return out
  }

  /** Masked output for `chunk` (slices of it, and replacements). */
  write(chunk: Buffer): Buffer[] {
    if (this.failed) throw this.failed
    try {
      this.checkUtf8(chunk)
      this.scan(chunk)
    } catch (err) {
      this.failed = err instanceof JsonMaskError ? err : new JsonMaskError(err instanceof Error ? err.message : String(err), this.offset)
      throw this.failed
    }
    this.offset += chunk.length
    const out = this.out
    this.out = []
    return out
  }

  /** The end of the input: the rest of the output; throws when the document is incomplete. */
  end(): Buffer[] {
    if (this.failed) throw this.failed
    const at = this.offset
    const fail = (why: string): never => {
      this.failed = new JsonMaskError(why, at)
      throw this.failed
    }
    if (this.utf8Carry !== null) fail('the body ends inside a UTF-8 sequence')
    if (this.st === S_NUMBER && this.depth === 0) {
      if (this.num !== N_ZERO && this.num !== N_INT && this.num !== N_FRAC && this.num !== N_EXP) fail('the body ends inside a number')
      this.chunk = Buffer.alloc(0)
      this.emitFrom = 0
      this.valueEnd(0)
    }
    const complete = this.st === S_END || this.st === S_TOP || (this.st === S_VALUE && this.depth === 0 && !this.seenValue)
    if (!complete) fail('the body ends before the JSON document is complete')
    const out = this.out
    this.out = []
    return out
  }

  private chunk: Buffer = Buffer.alloc(0)

  private err(i: number, why: string): never {
    throw new JsonMaskError(`invalid JSON at byte ${this.offset + i}: ${why}`, this.offset + i)
  }

  private checkUtf8(chunk: Buffer): void {
    let start = 0
    if (this.utf8Carry !== null) {
      const carry = this.utf8Carry
      const need = seqLen(carry[0] as number)
      const take = Math.min(need - carry.length, chunk.length)
      const joined = Buffer.concat([carry, chunk.subarray(0, take)])
      if (joined.length < need) {
        for (let k = carry.length; k < joined.length; k++)
          if (((joined[k] as number) & 0xc0) !== 0x80) this.err(k - carry.length, 'invalid UTF-8')
        this.utf8Carry = joined
        return
      }
      if (!isUtf8(joined)) this.err(0, 'invalid UTF-8')
      this.utf8Carry = null
      start = take
    }
    let end = chunk.length
    for (let k = 1; k <= 3 && end - k >= start; k++) {
      const b = chunk[end - k] as number
      if ((b & 0xc0) === 0x80) continue
      if (b >= 0xc0 && seqLen(b) > k) end -= k
      break
    }
    if (!isUtf8(chunk.subarray(start, end))) this.err(start, 'invalid UTF-8')
    if (end < chunk.length) this.utf8Carry = Buffer.from(chunk.subarray(end))
  }

  private op(target: number, number: boolean): ValueOp {
    const key = target * 2 + (number ? 1 : 0)
    let o = this.ops.get(key)
    if (!o) {
      const t = (this.plan.compiled[target] as Compiled).target
      o = compileOp({
        mask: { action: 'mask', rule: t.rule, strategy: t.strategy, ...(t.keep === undefined ? {} : { keep: t.keep }), derived: false },
        typeOid: 25,
        format: 0,
      })
      this.ops.set(key, o)
    }
    return o
  }

  /** A masked value starts at `i` (its first byte `c`). */
  private maskStart(i: number, action: FinalAction, c: number): void {
    if (i > this.emitFrom) this.out.push(this.chunk.subarray(this.emitFrom, i))
    this.maskDepth = this.depth
    this.maskAction = action
    this.maskKind = c
    const strategy = (this.plan.compiled[action.target] as Compiled).target.strategy
    const keepsText = (c === 0x22 || c === 0x2d || isDigit(c)) && strategy !== 'redact' && strategy !== 'null'
    this.capture = keepsText ? [] : null
    this.captureLen = 0
    this.captureStart = i
  }

  /** The masked value ended just before `end`: its replacement goes out. */
  private maskEnd(end: number): void {
    const action = this.maskAction as FinalAction
    for (const t of action.targets) this.counts[t] = (this.counts[t] as number) + 1
    const strategy = (this.plan.compiled[action.target] as Compiled).target.strategy
    const c = this.maskKind
    let rep: Buffer
    if (strategy === 'null' || c === 0x6e /* null stays null */) rep = NULL_JSON
    else if (this.capture === null) rep = REDACTED_JSON
    else {
      this.captureMore(end, true)
      if (this.captureLen > this.maxCapture) rep = REDACTED_JSON
      else {
        const raw = this.capture.length === 1 ? (this.capture[0] as Buffer) : Buffer.concat(this.capture, this.captureLen)
        const isString = c === 0x22
        // The value's UTF-8 bytes: between the quotes as is when nothing is escaped.
        const bytes = !isString
          ? raw
          : raw.indexOf(0x5c) < 0
            ? raw.subarray(1, raw.length - 1)
            : Buffer.from(JSON.parse(raw.toString('utf8')) as string, 'utf8')
        const v = this.values.apply(this.op(action.target, !isString), bytes)
        rep = v === null ? NULL_JSON : v === undefined ? REDACTED_JSON : Buffer.from(JSON.stringify(v.toString('utf8')))
      }
    }
    this.out.push(rep)
    this.emitFrom = end
    this.maskDepth = -1
    this.maskAction = null
    this.capture = null
  }

  /** Keeps the masked value's bytes up to `end`; a copy unless used at once (`now`). */
  private captureMore(end: number, now = false): void {
    const cap = this.capture
    if (cap === null) return
    const n = end - this.captureStart
    if (n <= 0) return
    this.captureLen += n
    if (this.captureLen <= this.maxCapture) {
      const part = this.chunk.subarray(this.captureStart, end)
      cap.push(now ? part : Buffer.from(part))
    } else cap.length = 0
    this.captureStart = end
  }

  /** A value ended just before `end` (exclusive). */
  private valueEnd(end: number): void {
    if (this.maskDepth === this.depth) this.maskEnd(end)
    if (this.depth === 0) {
      this.st = this.multiple ? S_TOP : S_END
      this.next = this.plan.root
    } else this.st = S_AFTER
  }

  /** A value starts at `i` with byte `c`; returns the index after what was consumed. */
  private valueStart(i: number, c: number): number {
    this.seenValue = true
    const d = this.next
    if (this.maskDepth < 0 && d.final !== null) this.maskStart(i, d.final, c)
    const live = this.maskDepth < 0 ? d : this.plan.dead
    switch (c) {
      case 0x7b: // {
      case 0x5b: {
        // [
        if (this.depth >= this.maxDepth) this.err(i, `nested deeper than ${this.maxDepth} levels`)
        this.kinds[this.depth] = c === 0x7b ? OBJ : ARR
        this.states[this.depth] = live
        this.counters[this.depth] = 0
        this.depth++
        this.st = c === 0x7b ? S_KEY_OR_END : S_ARR_FIRST
        return i + 1
      }
      case 0x22:
        this.st = S_STRING
        this.esc = 0
        return i + 1
      case 0x74:
      case 0x66:
      case 0x6e:
        this.lit = LITERALS[c === 0x74 ? 0 : c === 0x66 ? 1 : 2] as Buffer
        this.litPos = 1
        this.st = S_LITERAL
        return i + 1
      default:
        if (c === 0x2d) this.num = N_MINUS
        else if (c === 0x30) this.num = N_ZERO
        else if (c >= 0x31 && c <= 0x39) this.num = N_INT
        else this.err(i, `unexpected ${describe(c)} where a value must start`)
        this.st = S_NUMBER
        return i + 1
    }
  }

  /** The state of the next element of the array on top of the stack. */
  private nextElement(): void {
    const top = this.depth - 1
    const idx = this.counters[top] as number
    this.counters[top] = idx + 1
    const s = this.states[top] as DState
    this.next = s.dead ? s : this.plan.element(s, idx)
  }

  private close(i: number, c: number): void {
    const kind = this.kinds[this.depth - 1]
    if ((c === 0x7d && kind !== OBJ) || (c === 0x5d && kind !== ARR))
      this.err(i, `${describe(c)} does not close the open ${kind === OBJ ? 'object' : 'array'}`)
    this.depth--
    this.valueEnd(i + 1)
  }

  private keyDone(chunk: Buffer, endQuote: number): void {
    const top = this.depth - 1
    const s = this.states[top] as DState
    if (!this.keyWanted) {
      this.next = s.dead ? s : this.plan.member(s, null)
      return
    }
    let key: string | null = null
    if (!this.keyTooLong) {
      const part = chunk.subarray(this.keyStart, endQuote)
      const raw = this.keyParts.length === 0 ? part : Buffer.concat([...this.keyParts, part])
      if (raw.length <= this.keyCap) {
        if (!this.keyEscaped) key = sameBytes(s, raw)
        else {
          const decoded = JSON.parse(`"${raw.toString('utf8')}"`) as string
          // A client that replaces or drops a lone surrogate could read a name here that a
          // comparison of code units would not: refuse the document rather than guess.
          if (!wellFormed(decoded)) this.err(endQuote, 'a member name holds a lone surrogate escape')
          key = Buffer.from(decoded, 'utf8').toString('latin1')
        }
      }
    }
    this.keyParts = []
    this.next = this.plan.member(s, key)
  }

  private scan(chunk: Buffer): void {
    this.chunk = chunk
    this.emitFrom = 0
    const n = chunk.length
    let i = 0
    if (this.capture !== null) this.captureStart = 0
    if (this.st === S_KEY_STRING) this.keyStart = 0
    while (i < n) {
      switch (this.st) {
        case S_VALUE:
        case S_TOP:
        case S_ARR_FIRST: {
          let c = chunk[i] as number
          // Between documents of a sequence, RFC 7464's record separator is whitespace too.
          while (isWs(c) || (c === 0x1e && this.st === S_TOP)) {
            if (++i === n) break
            c = chunk[i] as number
          }
          if (i === n) break
          if (this.st === S_ARR_FIRST) {
            if (c === 0x5d) {
              this.close(i, c)
              i++
              break
            }
            this.nextElement()
          }
          i = this.valueStart(i, c)
          break
        }
        case S_AFTER: {
          let c = chunk[i] as number
          while (isWs(c)) {
            if (++i === n) break
            c = chunk[i] as number
          }
          if (i === n) break
          if (c === 0x2c) {
            if (this.kinds[this.depth - 1] === OBJ) this.st = S_KEY
            else {
              this.nextElement()
              this.st = S_VALUE
            }
            i++
          } else if (c === 0x7d || c === 0x5d) {
            this.close(i, c)
            i++
          } else this.err(i, `unexpected ${describe(c)} after a value (expected , or a closing bracket)`)
          break
        }
        case S_KEY_OR_END:
        case S_KEY: {
          let c = chunk[i] as number
          while (isWs(c)) {
            if (++i === n) break
            c = chunk[i] as number
          }
          if (i === n) break
          if (c === 0x7d && this.st === S_KEY_OR_END) {
            this.close(i, c)
            i++
            break
          }
          if (c !== 0x22) this.err(i, `unexpected ${describe(c)} where a member name must start`)
          const s = this.states[this.depth - 1] as DState
          this.keyWanted = !s.dead && s.needsKey
          this.keyParts = []
          this.keyLen = 0
          this.keyEscaped = false
          this.keyTooLong = false
          this.keyStart = i + 1
          this.esc = 0
          this.st = S_KEY_STRING
          i++
          break
        }
        case S_COLON: {
          let c = chunk[i] as number
          while (isWs(c)) {
            if (++i === n) break
            c = chunk[i] as number
          }
          if (i === n) break
          if (c !== 0x3a) this.err(i, `unexpected ${describe(c)} after a member name (expected :)`)
          this.st = S_VALUE
          i++
          break
        }
        case S_STRING:
        case S_KEY_STRING: {
          const isKey = this.st === S_KEY_STRING
          let esc = this.esc
          let closed = false
          while (i < n) {
            let c = chunk[i] as number
            if (esc === 0) {
              while (c !== 0x22 && c !== 0x5c && c >= 0x20) {
                if (++i === n) break
                c = chunk[i] as number
              }
              if (i === n) break
              if (c === 0x22) {
                closed = true
                break
              }
              if (c === 0x5c) {
                esc = 1
                if (isKey) this.keyEscaped = true
              } else this.err(i, 'a control character inside a string (it must be escaped)')
            } else if (esc === 1) {
              if (c === 0x75) esc = 2
              else if (c === 0x22 || c === 0x5c || c === 0x2f || c === 0x62 || c === 0x66 || c === 0x6e || c === 0x72 || c === 0x74) esc = 0
              else this.err(i, `invalid escape \\${String.fromCharCode(c)}`)
            } else {
              if (!isHex(c)) this.err(i, 'a \\u escape needs four hex digits')
              esc = esc === 5 ? 0 : esc + 1
            }
            i++
          }
          this.esc = esc
          if (isKey && this.keyWanted && !this.keyTooLong) {
            const len = this.keyLen + ((closed ? i : n) - this.keyStart)
            if (len > this.keyCap) {
              this.keyTooLong = true
              this.keyParts = []
            } else if (!closed) {
              this.keyParts.push(Buffer.from(chunk.subarray(this.keyStart, n)))
              this.keyLen = len
            }
          }
          if (!closed) break
          i++ // the closing quote
          if (isKey) {
            this.keyDone(chunk, i - 1)
            this.st = S_COLON
          } else this.valueEnd(i)
          break
        }
        case S_NUMBER: {
          let num = this.num
          let ended = false
          while (i < n) {
            const c = chunk[i] as number
            if (isDigit(c)) {
              if (num === N_MINUS) num = c === 0x30 ? N_ZERO : N_INT
              else if (num === N_ZERO) this.err(i, 'a number with a leading zero')
              else if (num === N_DOT) num = N_FRAC
              else if (num === N_E || num === N_ESIGN) num = N_EXP
              // N_INT, N_FRAC, N_EXP stay
            } else if (c === 0x2e) {
              if (num !== N_ZERO && num !== N_INT) this.err(i, 'unexpected . in a number')
              num = N_DOT
            } else if (c === 0x65 || c === 0x45) {
              if (num !== N_ZERO && num !== N_INT && num !== N_FRAC) this.err(i, 'unexpected e in a number')
              num = N_E
            } else if (c === 0x2b || c === 0x2d) {
              if (num !== N_E) this.err(i, `unexpected ${describe(c)} in a number`)
              num = N_ESIGN
            } else {
              if (num !== N_ZERO && num !== N_INT && num !== N_FRAC && num !== N_EXP) this.err(i, 'an incomplete number')
              ended = true
              break
            }
            i++
          }
          this.num = num
          if (ended) this.valueEnd(i) // the byte at i is not part of the number: scanned next
          break
        }
        case S_LITERAL: {
          const lit = this.lit
          while (i < n && this.litPos < lit.length) {
            if (chunk[i] !== lit[this.litPos]) this.err(i, `unexpected ${describe(chunk[i] as number)} in ${lit.toString()}`)
            this.litPos++
            i++
          }
          if (this.litPos === lit.length) this.valueEnd(i)
          break
        }
        case S_END: {
          let c = chunk[i] as number
          while (isWs(c)) {
            if (++i === n) break
            c = chunk[i] as number
          }
          if (i === n) break
          this.err(i, `unexpected ${describe(c)} after the JSON document`)
        }
      }
    }
    if (this.maskDepth >= 0) this.captureMore(n)
    else if (n > this.emitFrom) this.out.push(this.emitFrom === 0 ? chunk : chunk.subarray(this.emitFrom, n))
  }
}

/** The relevant name of `s` whose bytes `raw` are (key form), or null for any other name. */
function sameBytes(s: DState, raw: Buffer): string | null {
  const names = s.nameBytes
  const len = raw.length
  for (let k = 0; k < names.length; k++) {
    const nb = names[k] as Buffer
    if (nb.length !== len) continue
    let j = 0
    while (j < len && nb[j] === raw[j]) j++
    if (j === len) return s.nameKeys[k] as string
  }
  return null
}

function seqLen(b: number): number {
  if (b >= 0xf0) return 4
  if (b >= 0xe0) return 3
  if (b >= 0xc0) return 2
  return 1
}

function describe(c: number): string {
  return c >= 0x21 && c < 0x7f ? JSON.stringify(String.fromCharCode(c)) : `byte 0x${c.toString(16).padStart(2, '0')}`
}
