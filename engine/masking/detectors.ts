// Value detectors: the backstop on text output that no masking rule classified. Each detector finds
// spans of a string that hold a sensitive value; the row masker replaces each span with `****`.
//
// This runs once per text value of every row that passes through a connection with detectors on,
// so every detector starts with a cheap pre-check (a character scan or indexOf) and only then runs
// its pattern. Patterns have bounded repetition, so no input makes them backtrack for long; the
// e-mail scan is hand-written around each '@'. Checksums keep false positives down: a card number
// must pass Luhn, an IBAN mod-97 and its country's length, an SSN the SSA's allocation rules, a JWT
// a header that decodes to JSON with "alg". A detector that is wrong about a value errs towards
// masking only where a checksum or a fixed prefix vouches for it.

export const DETECTOR_NAMES: readonly string[] = ['email', 'card', 'iban', 'ssn', 'phone', 'jwt', 'cloud_key', 'private_key']

export interface DetectorHit {
  start: number
  end: number
  detector: string
}

type Finder = (text: string, out: DetectorHit[]) => void

// ---- email -------------------------------------------------------------------------------------

function isLocalChar(c: number): boolean {
  // A-Z a-z 0-9 . _ % + - (the unquoted local parts mail systems actually hand out)
  return (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) || c === 46 || c === 95 || c === 37 || c === 43 || c === 45
}
function isDomainChar(c: number): boolean {
  return (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) || c === 46 || c === 45
}
function isAlpha(c: number): boolean {
  return (c >= 97 && c <= 122) || (c >= 65 && c <= 90)
}

const findEmail: Finder = (text, out) => {
  let at = text.indexOf('@')
  while (at !== -1) {
    // Local part: up to 64 characters to the left (RFC 5321's limit), not starting with a dot.
    let s = at
    while (s > 0 && at - s < 64 && isLocalChar(text.charCodeAt(s - 1))) s--
    while (s < at && text.charCodeAt(s) === 46) s++
    // Domain: up to 253 characters, trimmed of trailing dots and dashes, ending in an alphabetic TLD.
    let e = at + 1
    while (e < text.length && e - at <= 253 && isDomainChar(text.charCodeAt(e))) e++
    while (e > at + 1 && (text.charCodeAt(e - 1) === 46 || text.charCodeAt(e - 1) === 45)) e--
    if (s < at && e > at + 1) {
      const domain = text.slice(at + 1, e)
      const dot = domain.lastIndexOf('.')
      if (dot > 0 && domain.length - dot - 1 >= 2 && !domain.includes('..') && domain.charCodeAt(0) !== 46) {
        let tldOk = true
        for (let i = dot + 1; i < domain.length; i++) if (!isAlpha(domain.charCodeAt(i))) tldOk = false
        if (tldOk) out.push({ start: s, end: e, detector: 'email' })
      }
    }
    at = text.indexOf('@', Math.max(at + 1, e))
  }
}

// ---- digits helpers ----------------------------------------------------------------------------

function digitCount(text: string, enough: number): number {
  let n = 0
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c >= 48 && c <= 57 && ++n >= enough) return n
  }
  return n
}

function onlyDigits(s: string): string {
  let d = ''
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c >= 48 && c <= 57) d += s[i]
  }
  return d
}

// ---- payment cards -----------------------------------------------------------------------------

/** Luhn (ISO/IEC 7812-1) over a string of digits. */
export function luhnValid(digits: string): boolean {
  let sum = 0
  let dbl = false
  for (let i = digits.length - 1; i >= 0; i--) {
    let d = digits.charCodeAt(i) - 48
    if (dbl) {
      d *= 2
      if (d > 9) d -= 9
    }
    sum += d
    dbl = !dbl
  }
  return sum % 10 === 0
}

// 13–19 digits, single spaces or dashes between digits, not inside a longer word or number. Issuer
// identification numbers start with 2–6 (Mastercard 2/5, Amex 3, Visa 4, Discover/UnionPay 6);
// other leading digits are account numbers, phone numbers or ids far more often than cards.
const CARD_RE = /(?<![0-9A-Za-z_])[2-6](?:[ -]?[0-9]){12,18}(?![0-9A-Za-z_])/g

const findCard: Finder = (text, out) => {
  if (digitCount(text, 13) < 13) return
  CARD_RE.lastIndex = 0
  for (let m = CARD_RE.exec(text); m !== null; m = CARD_RE.exec(text)) {
    const digits = onlyDigits(m[0])
    // A repeated digit (0000 0000 0000 0) passes Luhn but is a placeholder, not a card.
    if (luhnValid(digits) && !/^(\d)\1*$/.test(digits)) out.push({ start: m.index, end: m.index + m[0].length, detector: 'card' })
  }
}

// ---- IBAN --------------------------------------------------------------------------------------

/** IBAN lengths per country (SWIFT IBAN registry). */
const IBAN_LENGTH: Readonly<Record<string, number>> = {
  AD: 24,
  AE: 23,
  AL: 28,
  AT: 20,
  AZ: 28,
  BA: 20,
  BE: 16,
  BG: 22,
  BH: 22,
  BI: 27,
  BR: 29,
  BY: 28,
  CH: 21,
  CR: 22,
  CY: 28,
  CZ: 24,
  DE: 22,
  DJ: 27,
  DK: 18,
  DO: 28,
  EE: 20,
  EG: 29,
  ES: 24,
  FI: 18,
  FK: 18,
  FO: 18,
  FR: 27,
  GB: 22,
  GE: 22,
  GI: 23,
  GL: 18,
  GR: 27,
  GT: 28,
  HR: 21,
  HU: 28,
  IE: 22,
  IL: 23,
  IQ: 23,
  IS: 26,
  IT: 27,
  JO: 30,
  KW: 30,
  KZ: 20,
  LB: 28,
  LC: 32,
  LI: 21,
  LT: 20,
  LU: 20,
  LV: 21,
  LY: 25,
  MC: 27,
  MD: 24,
  ME: 22,
  MK: 19,
  MN: 20,
  MR: 27,
  MT: 31,
  MU: 30,
  NI: 28,
  NL: 18,
  NO: 15,
  OM: 23,
  PK: 24,
  PL: 28,
  PS: 29,
  PT: 25,
  QA: 29,
  RO: 24,
  RS: 22,
  RU: 33,
  SA: 24,
  SC: 31,
  SD: 18,
  SE: 24,
  SI: 19,
  SK: 24,
  SM: 27,
  SO: 23,
  ST: 25,
  SV: 28,
  TL: 23,
  TN: 24,
  TR: 26,
  UA: 29,
  VA: 22,
  VG: 24,
  XK: 20,
  YE: 30,
}

/** ISO 13616 check: the rearranged number, letters as 10–35, mod 97 is 1. */
export function ibanValid(compact: string): boolean {
  const s = compact.toUpperCase()
  if (IBAN_LENGTH[s.slice(0, 2)] !== s.length) return false
  const r = s.slice(4) + s.slice(0, 4)
  let rem = 0
  for (let i = 0; i < r.length; i++) {
    const c = r.charCodeAt(i)
    if (c >= 48 && c <= 57) rem = (rem * 10 + (c - 48)) % 97
    else if (c >= 65 && c <= 90) rem = (rem * 100 + (c - 55)) % 97
    else return false
  }
  return rem === 1
}

// Country, check digits, then alphanumerics in groups (spaces allowed, as IBANs are printed).
const IBAN_RE = /(?<![0-9A-Za-z_])([A-Za-z]{2})([0-9]{2})((?: ?[0-9A-Za-z]){10,30})/g

const findIban: Finder = (text, out) => {
  if (digitCount(text, 4) < 4) return
  IBAN_RE.lastIndex = 0
  for (let m = IBAN_RE.exec(text); m !== null; m = IBAN_RE.exec(text)) {
    const cc = (m[1] as string).toUpperCase()
    const want = IBAN_LENGTH[cc]
    if (want === undefined) {
      IBAN_RE.lastIndex = m.index + 1
      continue
    }
    // The greedy match may run on into the next word: take exactly the country's length.
    const body = m[3] as string
    let need = want - 4
    let end = m.index + 4
    let compact = cc + (m[2] as string)
    for (let i = 0; i < body.length && need > 0; i++) {
      const ch = body[i] as string
      end++
      if (ch !== ' ') {
        compact += ch
        need--
      }
    }
    const next = text.charCodeAt(end)
    const boundary = Number.isNaN(next) || !(isAlpha(next) || (next >= 48 && next <= 57) || next === 95)
    if (need === 0 && boundary && ibanValid(compact)) {
      out.push({ start: m.index, end, detector: 'iban' })
      IBAN_RE.lastIndex = end
    } else IBAN_RE.lastIndex = m.index + 1
  }
}

// ---- US SSN ------------------------------------------------------------------------------------

// AAA-GG-SSSS or AAA GG SSSS (the same separator twice). Bare nine-digit runs are left alone: too
// many ids, amounts and phone numbers have nine digits.
const SSN_RE = /(?<![0-9A-Za-z_-])([0-9]{3})([- ])([0-9]{2})\2([0-9]{4})(?![0-9A-Za-z_-])/g

/** The SSA never issues area 000, 666 or 900–999, group 00 or serial 0000. */
export function ssnValid(area: string, group: string, serial: string): boolean {
  if (area === '000' || area === '666' || area[0] === '9') return false
  return group !== '00' && serial !== '0000'
}

const findSsn: Finder = (text, out) => {
  if (digitCount(text, 9) < 9) return
  SSN_RE.lastIndex = 0
  for (let m = SSN_RE.exec(text); m !== null; m = SSN_RE.exec(text)) {
    if (ssnValid(m[1] as string, m[3] as string, m[4] as string)) out.push({ start: m.index, end: m.index + m[0].length, detector: 'ssn' })
  }
}

// ---- phone numbers -----------------------------------------------------------------------------

// Only numbers written as phone numbers: international with a leading + (8–15 digits, E.164), or
// the North American (NXX) NXX-XXXX layout with separators. Bare digit runs, dates, versions and
// amounts do not match.
// One flat character class with a bounded length, validated afterwards: nested quantifiers over
// digit groups would backtrack through every way of splitting a long digit run.
const PHONE_INTL_RE = /(?<![0-9A-Za-z_+])\+[1-9][0-9 ().-]{6,22}[0-9](?![0-9A-Za-z_])/g
const PHONE_BAD_RE = /[ ().-]{3}|[.-][.-]/
const PHONE_NANP_RE =
  /(?<![0-9A-Za-z_+.-])(?:\+?1[ .-]?)?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}([ .-]))[2-9][0-9]{2}[ .-][0-9]{4}(?![0-9A-Za-z_]|[.-][0-9])/g

const findPhone: Finder = (text, out) => {
  if (digitCount(text, 8) < 8) return
  if (text.includes('+')) {
    PHONE_INTL_RE.lastIndex = 0
    for (let m = PHONE_INTL_RE.exec(text); m !== null; m = PHONE_INTL_RE.exec(text)) {
      const n = onlyDigits(m[0]).length
      if (n >= 8 && n <= 15 && !PHONE_BAD_RE.test(m[0])) out.push({ start: m.index, end: m.index + m[0].length, detector: 'phone' })
    }
  }
  PHONE_NANP_RE.lastIndex = 0
  for (let m = PHONE_NANP_RE.exec(text); m !== null; m = PHONE_NANP_RE.exec(text)) {
    out.push({ start: m.index, end: m.index + m[0].length, detector: 'phone' })
  }
}

// ---- JWT ---------------------------------------------------------------------------------------

// A JSON header always starts `{"` and so its base64url starts `eyJ`.
const JWT_RE = /eyJ[A-Za-z0-9_-]{5,4096}\.[A-Za-z0-9_-]{2,65536}\.[A-Za-z0-9_-]{0,8192}/g

function jwtHeaderValid(b64: string): boolean {
  try {
    const h: unknown = JSON.parse(Buffer.from(b64, 'base64url').toString('utf8'))
    return typeof h === 'object' && h !== null && typeof (h as Record<string, unknown>).alg === 'string'
  } catch {
    return false
  }
}

const findJwt: Finder = (text, out) => {
  if (!text.includes('eyJ')) return
  JWT_RE.lastIndex = 0
  for (let m = JWT_RE.exec(text); m !== null; m = JWT_RE.exec(text)) {
    const dot = m[0].indexOf('.')
    if (jwtHeaderValid(m[0].slice(0, dot))) out.push({ start: m.index, end: m.index + m[0].length, detector: 'jwt' })
  }
}

// ---- cloud access keys -------------------------------------------------------------------------

// Well-known fixed prefixes: AWS access key ids (AKIA long-term, ASIA temporary, and the other
// unique-id prefixes), Google API keys (AIza), Google OAuth access tokens (ya29.), GitHub tokens
// (ghp_/gho_/ghu_/ghs_/ghr_, github_pat_), GitLab (glpat-), Slack (xox?-), Stripe live secret and
// restricted keys, OpenAI/Anthropic style `sk-…` keys with their markers, and an AWS secret access
// key or Azure storage key when it appears with its name.
const CLOUD_RE = new RegExp(
  [
    '(?<![A-Z0-9])(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Z0-9])',
    '(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}(?![A-Za-z0-9_-])',
    '(?<![A-Za-z0-9_-])ya29\\.[0-9A-Za-z_-]{20,2048}',
    '(?<![A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{36,255}',
    '(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9_]{60,255}',
    '(?<![A-Za-z0-9_])glpat-[A-Za-z0-9_-]{20,64}',
    '(?<![A-Za-z0-9_])xox[abposr]-[A-Za-z0-9-]{10,255}',
    '(?<![A-Za-z0-9_])[rs]k_live_[A-Za-z0-9]{16,255}',
    '(?<![A-Za-z0-9_])sk-(?:proj-|ant-[a-z0-9]{2,8}-)[A-Za-z0-9_-]{20,255}',
    '(?<=aws_secret_access_key["\']?\\s{0,4}[:=]\\s{0,4}["\']?)[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])',
    '(?<=AccountKey=)[A-Za-z0-9+/]{80,90}={0,2}',
  ].join('|'),
  'g',
)
const CLOUD_PREFIXES = [
  'AKIA',
  'ASIA',
  'AGPA',
  'AIDA',
  'AROA',
  'AIPA',
  'ANPA',
  'ANVA',
  'ABIA',
  'ACCA',
  'AIza',
  'ya29.',
  'ghp_',
  'gho_',
  'ghu_',
  'ghs_',
  'ghr_',
  'github_pat_',
  'glpat-',
  'xox',
  'k_live_',
  'sk-',
  'aws_secret_access_key',
  'AccountKey=',
]

const findCloudKey: Finder = (text, out) => {
  let any = false
  for (const p of CLOUD_PREFIXES) {
    if (text.includes(p)) {
      any = true
      break
    }
  }
  if (!any) return
  CLOUD_RE.lastIndex = 0
  for (let m = CLOUD_RE.exec(text); m !== null; m = CLOUD_RE.exec(text)) {
    out.push({ start: m.index, end: m.index + m[0].length, detector: 'cloud_key' })
  }
}

// ---- PEM private keys --------------------------------------------------------------------------

const PEM_BEGIN_RE = /-----BEGIN ((?:[A-Z0-9]{1,20} ){0,3}PRIVATE KEY(?: BLOCK)?)-----/g

const findPrivateKey: Finder = (text, out) => {
  if (!text.includes('-----BEGIN ')) return
  PEM_BEGIN_RE.lastIndex = 0
  for (let m = PEM_BEGIN_RE.exec(text); m !== null; m = PEM_BEGIN_RE.exec(text)) {
    const endMarker = `-----END ${m[1] as string}-----`
    const e = text.indexOf(endMarker, m.index + m[0].length)
    // No END line (a truncated or cut value): everything after BEGIN is key material.
    const end = e === -1 ? text.length : e + endMarker.length
    out.push({ start: m.index, end, detector: 'private_key' })
    PEM_BEGIN_RE.lastIndex = end
  }
}

const FINDERS: Readonly<Record<string, Finder>> = {
  email: findEmail,
  card: findCard,
  iban: findIban,
  ssn: findSsn,
  phone: findPhone,
  jwt: findJwt,
  cloud_key: findCloudKey,
  private_key: findPrivateKey,
}

/** Values shorter than this hold nothing any detector finds (the shortest: a 6-character e-mail). */
const MIN_LENGTH = 6

/**
 * The spans of `text` holding a value one of `detectors` finds: sorted, overlapping spans merged
 * (the first detector's name is kept). Unknown detector names throw: a typo must not silently
 * switch a backstop off.
 */
export function detect(text: string, detectors: readonly string[]): DetectorHit[] {
  if (text.length < MIN_LENGTH) return []
  const hits: DetectorHit[] = []
  for (const d of detectors) {
    const f = FINDERS[d]
    if (f === undefined) throw new Error(`unknown detector ${JSON.stringify(d)} (known: ${DETECTOR_NAMES.join(', ')})`)
    f(text, hits)
  }
  if (hits.length < 2) return hits
  hits.sort((a, b) => a.start - b.start || b.end - a.end)
  const merged: DetectorHit[] = [hits[0] as DetectorHit]
  for (let i = 1; i < hits.length; i++) {
    const h = hits[i] as DetectorHit
    const last = merged[merged.length - 1] as DetectorHit
    if (h.start < last.end) last.end = Math.max(last.end, h.end)
    else merged.push(h)
  }
  return merged
}

/** `text` with every detected span replaced by `mask`; the same string when nothing was found. */
export function maskDetected(text: string, detectors: readonly string[], mask = '****'): string {
  const hits = detect(text, detectors)
  if (hits.length === 0) return text
  let out = ''
  let p = 0
  for (const h of hits) {
    out += text.slice(p, h.start) + mask
    p = h.end
  }
  return out + text.slice(p)
}
