// The shape of a SQL text: the text with every literal constant replaced by a marker, comments and
// whitespace collapsed, unquoted words folded to lower case (ASCII only, as PostgreSQL folds them).
// Two texts with the same shape differ only in literal values, so they parse to the same tree up to
// those values: the classifier caches its facts by shape, and facts that depend on a literal value
// (SET, set_config, …) are never cached (see classify.ts, `literalSensitive`).
//
// The lexer follows PostgreSQL's scan.l for everything that decides where a literal, a comment or a
// quoted identifier begins and ends. Anything it does not handle exactly — Unicode-escape strings
// (U&'…'), numbers running into identifiers (`1from`, `0x1f`), unterminated literals — returns null,
// which means "do not use the cache": the text is then always parsed in full. A property test checks
// the literal spans against libpg-query's own scanner.

import { createHash } from 'node:crypto'

/** Stands for a literal in a shape. NUL cannot occur in a query text (a C string), so no operator,
 * word or quoted identifier can produce it: `a ?| b` (a jsonb operator) keeps its `?`. */
export const LITERAL_MARK = '\u0000'

enum C {
  TAB = 9,
  LF = 10,
  CR = 13,
  SPACE = 32,
  DQUOTE = 34,
  DOLLAR = 36,
  QUOTE = 39,
  STAR = 42,
  MINUS = 45,
  DOT = 46,
  SLASH = 47,
  BACKSLASH = 92,
}

function isIdentStart(c: number): boolean {
  return (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 95 || c >= 128
}
function isIdentCont(c: number): boolean {
  return isIdentStart(c) || (c >= 48 && c <= 57) || c === C.DOLLAR
}
function isDigit(c: number): boolean {
  return c >= 48 && c <= 57
}
function isSpace(c: number): boolean {
  return c === C.SPACE || c === C.TAB || c === C.LF || c === C.CR || c === 12 || c === 11
}

/**
 * PostgreSQL joins string literals separated by whitespace that contains a newline (scan.l,
 * `quotecontinue`): 'a'⏎'b' is one literal 'ab', lexed in the first part's mode. Returns the index
 * of the continuing quote after the literal ending at `e`, or -1.
 */
function continuation(s: string, e: number): number {
  let j = e
  const n = s.length
  const skipComment = (): void => {
    while (j < n && s.charCodeAt(j) !== C.LF && s.charCodeAt(j) !== C.CR) j++
  }
  // {horiz_whitespace}* {newline}
  for (;;) {
    const c = s.charCodeAt(j)
    if (c === C.SPACE || c === C.TAB || c === 12) j++
    else if (c === C.MINUS && s.charCodeAt(j + 1) === C.MINUS) skipComment()
    else break
  }
  const nl = s.charCodeAt(j)
  if (nl !== C.LF && nl !== C.CR) return -1
  j++
  // {special_whitespace}*: spaces (newlines included) or a comment followed by a newline
  for (;;) {
    const c = s.charCodeAt(j)
    if (isSpace(c)) j++
    else if (c === C.MINUS && s.charCodeAt(j + 1) === C.MINUS) {
      skipComment()
      if (j >= n) return -1
      j++
    } else break
  }
  return s.charCodeAt(j) === C.QUOTE ? j : -1
}

/** Ends a literal at `i` with `end`, following continuations in the same mode; -1 if unterminated. */
function endWithContinuation(s: string, i: number, end: (s: string, q: number) => number): number {
  let e = end(s, i)
  while (e >= 0) {
    const q = continuation(s, e)
    if (q < 0) return e
    e = end(s, q)
  }
  return -1
}

/** Bit strings end at the first quote: '' is no escape inside them (scan.l, xb/xh). */
function endBitString(s: string, i: number): number {
  const q = s.indexOf("'", i + 1)
  return q < 0 ? -1 : q + 1
}

/** Ends a standard string starting at the opening quote `i`; returns the index after it, or -1. */
function endStandardString(s: string, i: number): number {
  let j = i + 1
  for (;;) {
    const q = s.indexOf("'", j)
    if (q < 0) return -1
    if (s.charCodeAt(q + 1) === C.QUOTE) {
      j = q + 2
      continue
    }
    return q + 1
  }
}

/** Ends an E'…' string (backslash escapes, and '' too). */
function endEscapeString(s: string, i: number): number {
  let j = i + 1
  while (j < s.length) {
    const c = s.charCodeAt(j)
    if (c === C.BACKSLASH) {
      j += 2
      continue
    }
    if (c === C.QUOTE) {
      if (s.charCodeAt(j + 1) === C.QUOTE) {
        j += 2
        continue
      }
      return j + 1
    }
    j++
  }
  return -1
}

/** A dollar-quote tag at `i` (`$$` or `$tag$`), or null. */
function dollarTag(s: string, i: number): string | null {
  let j = i + 1
  if (s.charCodeAt(j) === C.DOLLAR) return '$$'
  const c0 = s.charCodeAt(j)
  if (!isIdentStart(c0)) return null
  j++
  while (j < s.length) {
    const c = s.charCodeAt(j)
    if (c === C.DOLLAR) return s.slice(i, j + 1)
    if (!(isIdentStart(c) || isDigit(c))) return null
    j++
  }
  return null
}

/** PostgreSQL folds A–Z of unquoted words and leaves other characters as they are. */
function lowerAscii(word: string): string {
  // The common all-ASCII word: toLowerCase folds exactly A–Z there, in one allocation at most
  // (a word built a character at a time cost more allocation than anything else per statement).
  let ascii = true
  for (let k = 0; k < word.length; k++) {
    if (word.charCodeAt(k) >= 128) {
      ascii = false
      break
    }
  }
  if (ascii) return word.toLowerCase()
  let out = ''
  for (let k = 0; k < word.length; k++) {
    const c = word.charCodeAt(k)
    out += c >= 65 && c <= 90 ? String.fromCharCode(c + 32) : word[k]
  }
  return out
}

/** A string literal of the text, as the lexer found it: where it starts and ends, and how an empty
 * literal of the same kind is spelled (`''`, `E''`, `$tag$$tag$`…). */
export interface LiteralSpan {
  readonly start: number
  readonly end: number
  readonly empty: string
}

/** The shape being built, as UTF-16 code units: one reused buffer, so a text of a million tokens
 * costs no string per token (the scan is synchronous, so it is never shared). A shape is never
 * longer than its text (every unit stands for at least one character), so the buffer is sized
 * once per scan. */
let units = new Uint16Array(16 * 1024)
let used = 0
/** The largest buffer kept between texts (8 MB); a larger text gets its own. */
const KEPT_UNITS = 4 << 20

/** Done with the buffer. */
function release(): void {
  used = 0
  if (units.length > KEPT_UNITS) units = new Uint16Array(16 * 1024)
}

/** The buffer as a string (in slices: fromCharCode takes its arguments on the stack). */
function takeShape(): string {
  const parts: string[] = []
  for (let k = 0; k < used; k += 8192)
    parts.push(String.fromCharCode.apply(null, units.subarray(k, Math.min(used, k + 8192)) as unknown as number[]))
  release()
  return parts.length === 1 ? (parts[0] as string) : parts.join('')
}

/** Shapes longer than this are keyed by their SHA-256 (shapeKey). */
export const LONG_SHAPE = 4096

/**
 * The key the classifier caches `sql`'s facts under: its shape, or for a shape longer than
 * LONG_SHAPE (a VALUES list of a hundred thousand rows), a space and the SHA-256 of the shape —
 * no shape starts with a space, and SHA-256 is collision-resistant, so two keys are equal exactly
 * when the shapes are, without building or hashing a megabyte-long string per statement.
 */
export function shapeKey(sql: string, spans?: LiteralSpan[]): string | null {
  used = 0
  if (!scanShape(sql, spans)) {
    release()
    return null
  }
  if (used <= LONG_SHAPE) return takeShape()
  const digest = createHash('sha256')
    .update(new Uint8Array(units.buffer, 0, used * 2))
    .digest('hex')
  release()
  return ` ${digest}`
}

/**
 * The shape key of `sql`, or null when the text must not be cached (see the header).
 * Literal counts are kept in the key implicitly (one `?` each). `spans`, when given, receives the
 * string literals (numbers are not listed).
 */
export function sqlShape(sql: string, spans?: LiteralSpan[]): string | null {
  used = 0
  if (!scanShape(sql, spans)) {
    release()
    return null
  }
  return takeShape()
}

function scanShape(sql: string, spans?: LiteralSpan[]): boolean {
  let i = 0
  const n = sql.length
  if (units.length < n) units = new Uint16Array(Math.max(n, units.length * 2))
  const u = units
  let p = 0
  let pendingSpace = false
  const literal = (start: number, end: number, empty: string): void => {
    spans?.push({ start, end, empty })
  }
  while (i < n) {
    const c = sql.charCodeAt(i)
    if (isSpace(c)) {
      pendingSpace = true
      i++
      continue
    }
    if (c === C.MINUS && sql.charCodeAt(i + 1) === C.MINUS) {
      const e = sql.indexOf('\n', i)
      i = e < 0 ? n : e + 1
      pendingSpace = true
      continue
    }
    if (c === C.SLASH && sql.charCodeAt(i + 1) === C.STAR) {
      // Nested block comments, as PostgreSQL allows.
      let depth = 1
      let j = i + 2
      while (j < n && depth > 0) {
        if (sql.charCodeAt(j) === C.SLASH && sql.charCodeAt(j + 1) === C.STAR) {
          depth++
          j += 2
        } else if (sql.charCodeAt(j) === C.STAR && sql.charCodeAt(j + 1) === C.SLASH) {
          depth--
          j += 2
        } else j++
      }
      if (depth > 0) return false
      i = j
      pendingSpace = true
      continue
    }
    if (c === C.QUOTE) {
      const e = endWithContinuation(sql, i, endStandardString)
      if (e < 0) return false
      if (pendingSpace) {
        if (p > 0) u[p++] = C.SPACE
        pendingSpace = false
      }
      u[p++] = 0
      literal(i, e, "''")
      i = e
      continue
    }
    if (c === C.DQUOTE) {
      let j = i + 1
      for (;;) {
        const q = sql.indexOf('"', j)
        if (q < 0) return false
        if (sql.charCodeAt(q + 1) === C.DQUOTE) {
          j = q + 2
          continue
        }
        j = q + 1
        break
      }
      if (pendingSpace) {
        if (p > 0) u[p++] = C.SPACE
        pendingSpace = false
      }
      for (let k = i; k < j; k++) u[p++] = sql.charCodeAt(k)
      i = j
      continue
    }
    if (c === C.DOLLAR) {
      const d1 = sql.charCodeAt(i + 1)
      if (isDigit(d1)) {
        // A parameter: $1, $23. A parameter running into identifier characters is not PostgreSQL's.
        let j = i + 1
        while (j < n && isDigit(sql.charCodeAt(j))) j++
        if (j < n && isIdentCont(sql.charCodeAt(j))) return false
        if (pendingSpace) {
          if (p > 0) u[p++] = C.SPACE
          pendingSpace = false
        }
        for (let k = i; k < j; k++) u[p++] = sql.charCodeAt(k)
        i = j
        continue
      }
      const tag = dollarTag(sql, i)
      if (tag === null) return false
      const e = sql.indexOf(tag, i + tag.length)
      if (e < 0) return false
      if (pendingSpace) {
        if (p > 0) u[p++] = C.SPACE
        pendingSpace = false
      }
      u[p++] = 0
      literal(i, e + tag.length, `${tag}${tag}`)
      i = e + tag.length
      continue
    }
    if (isDigit(c) || (c === C.DOT && isDigit(sql.charCodeAt(i + 1)))) {
      let j = i
      while (j < n && isDigit(sql.charCodeAt(j))) j++
      if (sql.charCodeAt(j) === C.DOT && sql.charCodeAt(j + 1) !== C.DOT) {
        j++
        while (j < n && isDigit(sql.charCodeAt(j))) j++
      }
      const ec = sql.charCodeAt(j)
      if (ec === 101 || ec === 69) {
        let k = j + 1
        const sc = sql.charCodeAt(k)
        if (sc === 43 || sc === C.MINUS) k++
        if (!isDigit(sql.charCodeAt(k))) return false
        while (k < n && isDigit(sql.charCodeAt(k))) k++
        j = k
      }
      // `1from`, `0x1f`, `1_000`: lexed differently across PostgreSQL versions. Not cached.
      if (j < n && (isIdentCont(sql.charCodeAt(j)) || sql.charCodeAt(j) === C.DOT)) return false
      if (pendingSpace) {
        if (p > 0) u[p++] = C.SPACE
        pendingSpace = false
      }
      u[p++] = 0
      i = j
      continue
    }
    if (isIdentStart(c)) {
      let j = i + 1
      while (j < n && isIdentCont(sql.charCodeAt(j))) j++
      const next = sql.charCodeAt(j)
      if (next === C.QUOTE && j - i <= 7) {
        // A prefix of a string literal (E'', N'', B'', X'', U&''), told apart by the word.
        const w = lowerAscii(sql.slice(i, j))
        const word = sql.slice(i, j)
        if (w === 'e') {
          const e = endWithContinuation(sql, j, endEscapeString)
          if (e < 0) return false
          if (pendingSpace) {
            if (p > 0) u[p++] = C.SPACE
            pendingSpace = false
          }
          u[p++] = 0
          literal(i, e, `${word}''`)
          i = e
          continue
        }
        if (w === 'n') {
          const e = endWithContinuation(sql, j, endStandardString)
          if (e < 0) return false
          if (pendingSpace) {
            if (p > 0) u[p++] = C.SPACE
            pendingSpace = false
          }
          u[p++] = 0
          literal(i, e, `${word}''`)
          i = e
          continue
        }
        if (w === 'b' || w === 'x') {
          const e = endWithContinuation(sql, j, endBitString)
          if (e < 0) return false
          if (pendingSpace) {
            if (p > 0) u[p++] = C.SPACE
            pendingSpace = false
          }
          u[p++] = 0
          literal(i, e, `${word}''`)
          i = e
          continue
        }
        if (w === 'u' || w === 'uescape') return false
      }
      if (next === 38 /* & */ && j === i + 1 && (c === 117 || c === 85)) return false
      if (pendingSpace) {
        if (p > 0) u[p++] = C.SPACE
        pendingSpace = false
      }
      for (let k = i; k < j; k++) {
        const w = sql.charCodeAt(k)
        u[p++] = w >= 65 && w <= 90 ? w + 32 : w
      }
      i = j
      continue
    }
    if (c === C.BACKSLASH) return false // psql meta-commands never reach the server; anything else is odd
    // Operators and punctuation, kept as they are; an operator never contains -- or /*.
    if (pendingSpace) {
      if (p > 0) u[p++] = C.SPACE
      pendingSpace = false
    }
    u[p++] = c
    i++
  }
  // Never more units than characters (see `units`); were it otherwise, writes past the end would
  // have been dropped and the key would stand for other texts too: not cached then.
  if (p > u.length) return false
  used = p
  return true
}

/** Literals from this length on are left out of the text a statement is first parsed from. */
export const LONG_LITERAL = 4096

/**
 * `sql` with every string literal of at least LONG_LITERAL characters replaced by an empty literal
 * of the same kind, and its shape key (shapeKey); null when there is none, or when the shorter text does not
 * have the same shape (then only the text itself may be parsed). Two texts of one shape parse to
 * the same facts unless a statement's facts depend on a literal's value (literalSensitive), which
 * the caller checks on the shorter text's facts (SqlAnalyzer.analyze).
 */
export function withoutLongLiterals(sql: string): { readonly text: string; readonly shape: string } | null {
  const spans: LiteralSpan[] = []
  const shape = shapeKey(sql, spans)
  if (shape === null) return null
  let text = ''
  let at = 0
  for (const sp of spans) {
    if (sp.end - sp.start < LONG_LITERAL) continue
    text += sql.slice(at, sp.start) + sp.empty
    at = sp.end
  }
  if (at === 0) return null
  text += sql.slice(at)
  return shapeKey(text) === shape ? { text, shape } : null
}
