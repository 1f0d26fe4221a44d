// The injected credentials masked in a message to the agent, value by value: masking the message's
// JSON text instead would turn a number that spells the credential (a numeric API key) into `****`,
// which is no longer JSON, and the message would never be sent (the agent would wait for it).
//
// A reader decodes more than the bytes show: a string that is a JSON text is parsed (and its
// `\u0073`-style escapes with it), zero-width and other format characters are invisible, and HTML
// character references are rendered. So each string and key is also read as such a reader would:
// its JSON values and keys when it is JSON, and a copy with format characters (Unicode category Cf)
// removed and character references and `\uXXXX`/`\xXX` escapes decoded. A credential found only
// there cannot be masked in place: the message is refused.

import { maskString } from '../http/public.js'

/** Thrown when a credential is where it cannot be masked: the message must be refused. */
export class CredentialInMessage extends Error {}

const FORMAT_CHARS = /\p{Cf}/gu
/** What may make a reader see more than the bytes: an escape, a reference, a format character. */
const DECODABLE = /[\\&\p{Cf}]/u
const REFERENCE = /&(?:#(\d{1,7})|#[xX]([0-9a-fA-F]{1,6})|([A-Za-z]{2,8}));?|\\u([0-9a-fA-F]{4})|\\x([0-9a-fA-F]{2})/g
/** The named references of the characters credentials are written with (and the usual four). */
const NAMED: Record<string, string> = {
  amp: '&',
  lt: '<',
  gt: '>',
  quot: '"',
  apos: "'",
  hyphen: '-',
  dash: '-',
  minus: '-',
  lowbar: '_',
  UnderBar: '_',
  period: '.',
  colon: ':',
  equals: '=',
  plus: '+',
  sol: '/',
  bsol: '\\',
  num: '#',
  percnt: '%',
  tilde: '~',
  excl: '!',
  quest: '?',
  commat: '@',
  dollar: '$',
  ast: '*',
  nbsp: ' ',
}

function char(code: number): string {
  return code <= 0x10ffff ? String.fromCodePoint(code) : ''
}

/** `s` as a reader renders it: format characters removed, references and escapes decoded (to a fixed point). */
export function rendered(s: string): string {
  let cur = s
  for (let i = 0; i < 4; i++) {
    const next = cur
      .replace(REFERENCE, (m, dec?: string, hex?: string, name?: string, u?: string, x?: string) => {
        if (dec !== undefined) return char(Number.parseInt(dec, 10))
        if (hex !== undefined) return char(Number.parseInt(hex, 16))
        if (u !== undefined) return char(Number.parseInt(u, 16))
        if (x !== undefined) return char(Number.parseInt(x, 16))
        return name !== undefined && Object.hasOwn(NAMED, name) ? (NAMED[name] as string) : m
      })
      .replace(FORMAT_CHARS, '')
    if (next === cur) break
    cur = next
  }
  return cur
}

/** Whether a (masked) string still shows a needle to a reader who renders it or parses it as JSON. */
function hidden(s: string, needles: readonly Buffer[], depth: number): boolean {
  if (DECODABLE.test(s)) {
    const r = rendered(s)
    if (r !== s && maskString(r, needles) !== r) return true
  }
  const t = s.trim()
  const c = t[0]
  if (c !== '{' && c !== '[' && c !== '"') return false
  let parsed: unknown
  try {
    parsed = JSON.parse(t)
  } catch {
    return false
  }
  if (parsed === s) return false
  return carries(parsed, needles, depth + 1)
}

/** Whether a parsed value shows a needle anywhere (strings, keys, numbers, and what they render to). */
function carries(v: unknown, needles: readonly Buffer[], depth: number): boolean {
  if (depth > 200) return true
  if (typeof v === 'string') return maskString(v, needles) !== v || hidden(v, needles, depth)
  if (typeof v === 'number') return maskString(String(v), needles) !== String(v)
  if (v === null || typeof v !== 'object') return false
  if (Array.isArray(v)) return v.some((x) => carries(x, needles, depth + 1))
  return Object.entries(v).some(([k, x]) => carries(k, needles, depth + 1) || carries(x, needles, depth + 1))
}

function scrubString(s: string, needles: readonly Buffer[], depth: number): string {
  const out = maskString(s, needles)
  if (hidden(out, needles, depth)) throw new CredentialInMessage('the credential is encoded where it cannot be masked')
  return out
}

function scrub(v: unknown, needles: readonly Buffer[], depth: number): unknown {
  if (typeof v === 'string') return scrubString(v, needles, depth)
  if (typeof v === 'number' || typeof v === 'bigint') {
    const s = String(v)
    if (maskString(s, needles) !== s) throw new CredentialInMessage('a number spells the credential')
    return v
  }
  if (v === null || typeof v !== 'object') return v
  if (depth > 200) throw new CredentialInMessage('too deep to scan')
  if (Array.isArray(v)) return v.map((x) => scrub(x, needles, depth + 1))
  const out: Record<string, unknown> = {}
  for (const [k, x] of Object.entries(v)) {
    const key = scrubString(k, needles, depth)
    // Two keys that mask alike would lose one of them silently.
    if (Object.hasOwn(out, key)) throw new CredentialInMessage('a masked key collides with another')
    out[key] = scrub(x, needles, depth + 1)
  }
  return out
}

/**
 * Whether `text` (a message's JSON text) needs the value-by-value scan: it shows a needle, or holds
 * something a reader decodes (a backslash inside a string, a reference, a format character).
 * Without these, every string's parsed JSON and rendered form are the bytes already scanned.
 */
export function needsScan(text: string, needles: readonly Buffer[]): boolean {
  return text.includes('\\\\') || DECODABLE.test(text.replaceAll('\\', '')) || maskString(text, needles) !== text
}

/**
 * `value` with every needle masked in its strings and object keys. Throws CredentialInMessage when
 * a number spells a needle, when masked keys collide, when a needle still shows in the JSON text
 * (one spanning the text's punctuation), or when a reader would still see one (see the top of this
 * file): the caller refuses the message.
 */
export function scrubCredentials<T>(value: T, needles: readonly Buffer[]): T {
  const out = scrub(value, needles, 0)
  const text = JSON.stringify(out)
  if (maskString(text, needles) !== text) throw new CredentialInMessage('the credential spans the JSON text')
  return out as T
}
