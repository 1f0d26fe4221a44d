// Secrets never reach the audit log, recordings (which follow the audit log) or logs. Redaction
// reads the real PostgreSQL grammar (libpg-query: parse tree for where a secret is, scanner for
// where each literal starts and ends), so comments, odd casing, quoted option names, E'' and U&''
// strings and dollar quoting change nothing. What is redacted, each literal replaced by
// '[redacted]':
//
// - the value of any option whose name says it is a secret (`password`, `passfile` excepted only
//   by being harmless, `secret`, `token`, `credential`…): CREATE/ALTER ROLE|USER … PASSWORD,
//   CREATE/ALTER SERVER … OPTIONS (password …), and the like wherever a DefElem appears;
// - every option value of CREATE/ALTER USER MAPPING (they are credentials by nature);
// - every literal of CREATE/ALTER SUBSCRIPTION (the CONNECTION string carries the password);
// - every constant argument of a dblink* call (connection strings);
// - SET / ALTER ROLE … SET / ALTER SYSTEM SET of a setting whose name says it is a secret, and
//   set_config of such a name;
// - any literal that holds a conninfo password (`password=…`) or URI credentials (`//u:p@h`),
//   matched against the literal's value after E'' and U&'' escapes are decoded as the server
//   decodes them, and a DO or function body that mentions a password;
// - any bound parameter whose value holds such a credential (holdsSecret).
//
// Fail closed: a text that may hold a secret but does not parse has every literal, every quoted
// identifier and the word after each PASSWORD redacted; one the scanner cannot read either has
// every quoted run redacted and is cut at an unterminated quote. Bound parameters of a statement
// that may hold a secret are redacted whole (`ALTER ROLE x PASSWORD $1`).
//
// Over-redaction costs a little audit detail; under-redaction leaks a credential.

import { parseSync, scanSync } from 'libpg-query'
import { arr, nodeType, type Obj, obj, str, stringList } from './sql/lineage-ast.js'

/** Cheap filter: a text without any of these cannot hold a secret this module redacts. A backslash
 * may spell any of them inside an E'' string, and `@` ends the credentials of a URI. */
const MAY_HOLD_SECRET_RE = /pass|pwd|secret|token|credential|dblink|connection|mapping|subscription|server|set_config|u&|@|\\/i
/** Option and setting names that hold secrets. */
const SECRET_NAME_RE = /pass(?!file)|pwd|secret|token|credential/i
/** Literal text that carries a credential wherever it appears. */
const SECRET_LITERAL_RE = /pass(?:word)?\s*=|pwd\s*=|:\/\/[^'@\s/]*:[^'@\s]*@/i
const LITERAL_TOKENS: ReadonlySet<string> = new Set(['SCONST', 'USCONST', 'BCONST', 'XCONST', 'ICONST', 'FCONST'])
/** The scanner names some literal kinds UNKNOWN (U&'…', b'…', x'…'): their text says what they are. */
const LITERAL_TEXT_RE = /^(?:[uU]&'|[bBxXeEnN]?'|\$)/

/**
 * A literal's value as the server reads it, for matching: E'' escapes (scan.l: \b \f \n \r \t,
 * octal, \x, \u, \U, any other character as itself) and U&'' escapes (\XXXX, \+XXXXXX; a
 * UESCAPE clause is handled by the caller failing closed). Other literals are returned as written.
 */
export function literalValue(text: string): string {
  if (/^[eE]'/.test(text)) {
    return text
      .slice(2, -1)
      .replace(/''/g, "'")
      .replace(
        /\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|([\s\S]))/g,
        (_m, oct: string | undefined, hex: string | undefined, u4: string | undefined, u8: string | undefined, ch: string | undefined) => {
          const code = oct
            ? Number.parseInt(oct, 8)
            : hex
              ? Number.parseInt(hex, 16)
              : u4
                ? Number.parseInt(u4, 16)
                : u8
                  ? Number.parseInt(u8, 16)
                  : null
          if (code !== null) return code <= 0x10ffff ? String.fromCodePoint(code) : ''
          return ch === 'b' ? '\b' : ch === 'f' ? '\f' : ch === 'n' ? '\n' : ch === 'r' ? '\r' : ch === 't' ? '\t' : (ch ?? '')
        },
      )
  }
  if (/^[uU]&'/.test(text)) {
    return text
      .slice(3, -1)
      .replace(/''/g, "'")
      .replace(/\\(?:([0-9a-fA-F]{4})|\+([0-9a-fA-F]{6})|(\\))/g, (_m, u4: string | undefined, u6: string | undefined) => {
        const code = u4 ? Number.parseInt(u4, 16) : u6 ? Number.parseInt(u6, 16) : null
        return code !== null && code <= 0x10ffff ? String.fromCodePoint(code) : '\\'
      })
  }
  return text
}

/** Whether a literal (as written) or a bound value carries a credential wherever it appears. */
export function holdsSecret(text: string): boolean {
  return SECRET_LITERAL_RE.test(text) || SECRET_LITERAL_RE.test(literalValue(text))
}

function isLiteral(t: Token): boolean {
  return LITERAL_TOKENS.has(t.tokenName) || LITERAL_TEXT_RE.test(t.text)
}
const REDACTED = Buffer.from("'[redacted]'")

interface Token {
  readonly start: number
  readonly end: number
  readonly text: string
  readonly tokenName: string
}

/** The last text mentionsPassword read, and its answer: a statement's text is asked about for its
 * audit event and again for its result's, and a text of megabytes costs a pass each time. */
let lastText = ''
let lastAnswer = false

/** True when the statement may hold a secret: its bound parameters are then redacted whole. */
export function mentionsPassword(sql: string): boolean {
  if (sql === lastText) return lastAnswer
  lastAnswer = MAY_HOLD_SECRET_RE.test(sql)
  lastText = sql
  return lastAnswer
}

export function redactSql(sql: string): string {
  if (!mentionsPassword(sql)) return sql
  let tokens: Token[]
  try {
    tokens = scan(sql)
  } catch {
    return redactQuotedRuns(sql)
  }
  let tree: unknown
  try {
    tree = parseSync(sql)
  } catch {
    return rebuild(sql, tokens, fallbackSpans(tokens))
  }
  try {
    return rebuild(sql, tokens, secretSpans(tree, tokens))
  } catch {
    return rebuild(sql, tokens, fallbackSpans(tokens))
  }
}

function scan(sql: string): Token[] {
  const out = obj(scanSync(sql))
  const list = arr(out?.tokens)
  return list.map((t) => {
    const o = obj(t)
    if (!o || typeof o.start !== 'number' || typeof o.end !== 'number') throw new Error('unexpected scanner output')
    return { start: o.start, end: o.end, text: str(o.text) ?? '', tokenName: str(o.tokenName) ?? '' }
  })
}

/** Replaces the tokens at the given indexes (byte ranges of the UTF-8 text) with '[redacted]'. */
function rebuild(sql: string, tokens: readonly Token[], redact: ReadonlySet<number>): string {
  if (redact.size === 0) return sql
  const bytes = Buffer.from(sql, 'utf8')
  const parts: Buffer[] = []
  let at = 0
  for (const i of [...redact].sort((a, b) => a - b)) {
    const t = tokens[i]
    if (!t || t.start < at) continue
    parts.push(bytes.subarray(at, t.start), REDACTED)
    at = t.end
  }
  parts.push(bytes.subarray(at))
  return Buffer.concat(parts).toString('utf8')
}

/** Unparseable but scannable: every literal, every quoted identifier, and the token after PASSWORD. */
function fallbackSpans(tokens: readonly Token[]): Set<number> {
  const out = new Set<number>()
  tokens.forEach((t, i) => {
    if (isLiteral(t) || t.text.startsWith('"') || /^u&"/i.test(t.text)) out.add(i)
    if (!isLiteral(t) && /password/i.test(t.text) && i + 1 < tokens.length) out.add(i + 1)
  })
  return out
}

/** Not even scannable (an unterminated quote): every quoted run redacted, the rest cut off. */
function redactQuotedRuns(sql: string): string {
  const re = /(?:[eEuUbBxXnN]&?)?'(?:[^'\\]|''|\\[\s\S])*'|"(?:[^"]|"")*"|\$([A-Za-z_][A-Za-z0-9_]*)?\$[\s\S]*?\$\1\$/g
  let out = sql.replace(re, "'[redacted]'")
  const cut = out.search(/['"$](?!\[redacted\]')/)
  if (cut >= 0) {
    const rest = out.slice(cut)
    if (!rest.startsWith("'[redacted]'")) out = `${out.slice(0, cut)}'[redacted]'`
  }
  return out.replace(/(password\s*)\S+/gi, (m, kw: string) => (m.includes('[redacted]') ? m : `${kw}'[redacted]'`))
}

class SecretFinder {
  readonly out = new Set<number>()
  private readonly byStart = new Map<number, number>()

  constructor(private readonly tokens: readonly Token[]) {
    // Every token by where it starts: a constant may be a literal, TRUE/FALSE or NULL.
    tokens.forEach((t, i) => {
      this.byStart.set(t.start, i)
    })
  }

  /** Every literal in a byte range (a whole statement). */
  allIn(from: number, to: number): void {
    this.tokens.forEach((t, i) => {
      if (isLiteral(t) && t.start >= from && t.end <= to) this.out.add(i)
    })
  }

  /** The first literal at or after a byte offset (an option's value after its name). */
  firstFrom(offset: number, to: number): void {
    const i = this.tokens.findIndex((t) => isLiteral(t) && t.start >= offset && t.start < to)
    if (i >= 0) this.out.add(i)
    else this.allIn(offset, to)
  }

  /** Every A_Const inside a node, by its location. */
  constants(node: unknown): void {
    if (Array.isArray(node)) {
      for (const x of node) this.constants(x)
      return
    }
    const o = obj(node)
    if (!o) return
    for (const [k, v] of Object.entries(o)) {
      const inner = obj(v)
      if (k === 'A_Const' && inner && typeof inner.location === 'number') {
        const i = this.byStart.get(inner.location)
        if (i !== undefined) this.out.add(i)
        else this.out.add(-1) // a constant the scanner did not place: handled by the caller
      } else if (typeof v === 'object' && v !== null) this.constants(v)
    }
  }

  /** Walks one statement (its byte range is from..to). */
  walk(node: unknown, from: number, to: number): void {
    if (Array.isArray(node)) {
      for (const x of node) this.walk(x, from, to)
      return
    }
    const o = obj(node)
    if (!o) return
    for (const [k, v] of Object.entries(o)) {
      const inner = obj(v)
      if (inner) this.visit(k, inner, from, to)
      if (typeof v === 'object' && v !== null) this.walk(v, from, to)
    }
  }

  private visit(k: string, n: Obj, from: number, to: number): void {
    switch (k) {
      case 'CreateSubscriptionStmt':
      case 'AlterSubscriptionStmt':
      case 'CreateUserMappingStmt':
      case 'AlterUserMappingStmt':
        this.allIn(from, to)
        return
      case 'DefElem': {
        const name = str(n.defname) ?? ''
        if (!SECRET_NAME_RE.test(name) || n.arg === undefined || n.arg === null) return
        const t = nodeType(n.arg)?.[0]
        if (t === 'ParamRef') return
        if (typeof n.location === 'number' && n.location >= 0) this.firstFrom(n.location, to)
        else this.allIn(from, to)
        return
      }
      case 'VariableSetStmt':
      case 'setstmt': // ALTER ROLE|DATABASE|SYSTEM … SET holds it unwrapped
        if (SECRET_NAME_RE.test(str(n.name) ?? '')) this.constants(n.args)
        return
      case 'FuncCall': {
        const parts = stringList(n.funcname)
        const fn = (parts[parts.length - 1] ?? '').toLowerCase()
        if (fn.startsWith('dblink')) this.constants(n.args)
        else if (fn === 'set_config') {
          const args = arr(n.args)
          const first = obj(obj(args[0])?.A_Const)
          const setting = str(obj(first?.sval)?.sval)
          if (setting === null || SECRET_NAME_RE.test(setting)) this.constants(args.slice(1))
        }
        return
      }
      case 'DoStmt':
      case 'CreateFunctionStmt':
        // A body that mentions a password (EXECUTE 'ALTER ROLE … PASSWORD ''…''') is redacted whole.
        this.tokens.forEach((t, i) => {
          if (isLiteral(t) && t.start >= from && t.end <= to && /passw|pwd/i.test(t.text)) this.out.add(i)
        })
        return
      default:
        return
    }
  }
}

function secretSpans(tree: unknown, tokens: readonly Token[]): Set<number> {
  const f = new SecretFinder(tokens)
  const total = tokens.length > 0 ? (tokens[tokens.length - 1] as Token).end : 0
  for (const raw of arr(obj(tree)?.stmts)) {
    const r = obj(raw)
    const from = typeof r?.stmt_location === 'number' ? r.stmt_location : 0
    const to = typeof r?.stmt_len === 'number' && r.stmt_len > 0 ? from + r.stmt_len : total
    f.walk(r?.stmt, from, to)
  }
  // Literals that carry a credential wherever they are.
  tokens.forEach((t, i) => {
    if (isLiteral(t) && holdsSecret(t.text)) f.out.add(i)
  })
  // UESCAPE changes the escape character of a U&'' literal: its value is not decoded here.
  if (tokens.some((t) => t.tokenName === 'UESCAPE' || /^uescape$/i.test(t.text))) {
    tokens.forEach((t, i) => {
      if (/^[uU]&'/.test(t.text)) f.out.add(i)
    })
  }
  // A constant the scanner could not be matched with: fail closed for the whole text.
  if (f.out.has(-1)) return fallbackSpans(tokens)
  return f.out
}
