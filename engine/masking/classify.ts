// Suggesting masking rules from a database's catalog and a sample of its values (`gatehouse
// classify`). Two kinds of evidence per column: its name (email, ssn, password, phone, card, iban,
// token, secret, birth date, …) and what the value detectors find in the sampled values. A column
// with either gets a rule of its own (exact schema.table.column, a strategy fitting the kind of
// data); a column whose values only sometimes hold something (free text with the odd e-mail
// address) instead switches the detector on. Every suggestion carries why, in counts only: the
// sampled values themselves never leave this module.

import { DETECTOR_NAMES, detect } from './detectors.js'

export interface CatalogColumn {
  readonly schema: string
  readonly table: string
  readonly column: string
  readonly type: string
}

export interface ColumnSample {
  readonly column: CatalogColumn
  /** Sampled values as text (NULLs left out); never printed. */
  readonly values: readonly string[]
}

export type Strategy = 'redact' | 'partial' | 'hash' | 'null'

export interface SuggestedRule {
  readonly name: string
  readonly columns: readonly string[]
  readonly strategy: Strategy
  readonly keep?: number
  readonly why: readonly string[]
}

export interface SuggestedDetector {
  readonly name: string
  readonly why: readonly string[]
}

export interface Suggestions {
  readonly rules: readonly SuggestedRule[]
  readonly detectors: readonly SuggestedDetector[]
  /** Columns that look sensitive but whose names a pattern cannot express (dots, quotes, blanks, `*`). */
  readonly skipped: readonly string[]
}

interface Kind {
  readonly label: string
  readonly strategy: Strategy
  readonly keep?: number
}

// What each kind of data is masked with by default: hash where joins on it are common and the value
// is an identifier (e-mail), partial where the last characters are what people check (card, phone,
// IBAN), redact for identifiers nobody should piece together, null for secrets and dates.
const KINDS: Readonly<Record<string, Kind>> = {
  email: { label: 'e-mail addresses', strategy: 'hash' },
  card: { label: 'payment card numbers', strategy: 'partial', keep: 4 },
  iban: { label: 'IBANs', strategy: 'partial', keep: 4 },
  ssn: { label: 'US social security numbers', strategy: 'redact' },
  phone: { label: 'phone numbers', strategy: 'partial', keep: 4 },
  jwt: { label: 'JWTs', strategy: 'null' },
  cloud_key: { label: 'cloud access keys', strategy: 'null' },
  private_key: { label: 'private keys', strategy: 'null' },
  secret: { label: 'secrets', strategy: 'null' },
  birth: { label: 'birth dates', strategy: 'null' },
  person: { label: 'personal names', strategy: 'redact' },
  address: { label: 'postal addresses', strategy: 'redact' },
  national_id: { label: 'national identifiers', strategy: 'redact' },
  ip: { label: 'IP addresses', strategy: 'hash' },
}

/** Column-name evidence, in order: the first match names the kind. Names are matched lower-cased
 * on word parts (`_`-separated), so `email` matches `user_email` but `emailed_at` stays clear. */
const NAME_RULES: readonly (readonly [RegExp, string])[] = [
  [/(^|_)(password|passwd|pwd|passphrase|pass_hash|password_hash|pin)(_|$)/, 'secret'],
  [
    /(^|_)(secret|api_?key|access_?key|private_?key|client_secret|credentials?|auth_token|access_token|refresh_token|token|otp|totp_secret|mfa_secret|salt)(_|$)/,
    'secret',
  ],
  [/(^|_)(e_?mail|email_address|mail_address)(_|$)/, 'email'],
  [/(^|_)(ssn|social_security(_number)?|sin)(_|$)/, 'ssn'],
  [/(^|_)(national_id|passport(_number|_no)?|tax_id|tin|nino|drivers?_licen[cs]e(_number)?)(_|$)/, 'national_id'],
  [/(^|_)(card_?number|cc_?number|credit_?card|card_?no|pan|ccn)(_|$)/, 'card'],
  [/(^|_)(iban|bank_?account(_number)?|account_?number)(_|$)/, 'iban'],
  [/(^|_)(phone|phone_?number|mobile|cell|telephone|tel|fax|msisdn)(_|$)/, 'phone'],
  [/(^|_)(birth_?date|date_?of_?birth|dob|birthday)(_|$)/, 'birth'],
  [/(^|_)(first_?name|last_?name|full_?name|surname|given_?name|family_?name|maiden_?name)(_|$)/, 'person'],
  [/(^|_)(street|address_line\d?|street_address|home_address|postal_?code|post_?code|zip_?code|zip)(_|$)/, 'address'],
  [/(^|_)(ip|ip_?address|client_ip|remote_addr)(_|$)/, 'ip'],
]

/** A column whose sampled values mostly hold a detector's kind gets a rule; fewer, the detector. */
const MOSTLY = 0.5

const SEGMENT_OK = /^[^.\s"*]+$/
const NAME_OK = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/

function nameKind(column: string): string | null {
  const c = column.toLowerCase()
  for (const [re, kind] of NAME_RULES) if (re.test(c)) return kind
  return null
}

function ruleName(c: CatalogColumn, taken: Set<string>): string {
  let base = `${c.table}-${c.column}`
    .toLowerCase()
    .replace(/[^a-z0-9_.-]+/g, '_')
    .replace(/^[^a-z0-9]+/, '')
  if (!base) base = 'column'
  base = base.slice(0, 56)
  let name = base
  for (let i = 2; taken.has(name) || !NAME_OK.test(name); i++) name = `${base}-${i}`
  taken.add(name)
  return name
}

/** Counts of detector hits over one column's sample: values containing a hit, and values that are one. */
function detectorCounts(values: readonly string[]): Map<string, { contain: number; whole: number }> {
  const counts = new Map<string, { contain: number; whole: number }>()
  for (const v of values) {
    const seen = new Set<string>()
    const trimmed = v.trim()
    const offset = v.indexOf(trimmed)
    for (const h of detect(v, DETECTOR_NAMES)) {
      let c = counts.get(h.detector)
      if (!c) {
        c = { contain: 0, whole: 0 }
        counts.set(h.detector, c)
      }
      if (!seen.has(h.detector)) {
        seen.add(h.detector)
        c.contain++
        if (h.start <= offset && h.end >= offset + trimmed.length) c.whole++
      }
    }
  }
  return counts
}

export function suggest(samples: readonly ColumnSample[]): Suggestions {
  const rules: SuggestedRule[] = []
  const detectorWhy = new Map<string, string[]>()
  const skipped: string[] = []
  const taken = new Set<string>()
  for (const s of samples) {
    const c = s.column
    const qualified = `${c.schema}.${c.table}.${c.column}`
    const why: string[] = []
    const byName = nameKind(c.column)
    let kind: string | null = null
    if (byName) {
      kind = byName
      why.push(`the column name suggests ${(KINDS[byName] as Kind).label}`)
    }
    const n = s.values.length
    let best: [string, { contain: number; whole: number }] | null = null
    for (const entry of detectorCounts(s.values)) {
      if (best === null || entry[1].contain > best[1].contain) best = entry
    }
    if (best !== null) {
      const [det, cnt] = best
      const label = (KINDS[det] as Kind).label
      if (cnt.contain >= Math.max(1, n * MOSTLY)) {
        kind ??= det
        why.push(
          cnt.whole >= cnt.contain / 2
            ? `${cnt.whole}/${n} sampled values are ${label}`
            : `${cnt.contain}/${n} sampled values contain ${label}`,
        )
      } else if (kind === null) {
        const list = detectorWhy.get(det) ?? []
        list.push(`${qualified}: ${cnt.contain}/${n} sampled values contain ${label}`)
        detectorWhy.set(det, list)
      } else why.push(`${cnt.contain}/${n} sampled values contain ${label}`)
    }
    if (kind === null) continue
    if (![c.schema, c.table, c.column].every((x) => SEGMENT_OK.test(x))) {
      skipped.push(`${qualified}: ${why.join('; ')} (its name cannot be written as a column pattern)`)
      continue
    }
    const k = KINDS[kind] as Kind
    const rule: SuggestedRule = {
      name: ruleName(c, taken),
      columns: [qualified],
      strategy: k.strategy,
      ...(k.keep !== undefined ? { keep: k.keep } : {}),
      why,
    }
    rules.push(rule)
  }
  const detectors = DETECTOR_NAMES.filter((d) => detectorWhy.has(d)).map((d) => ({ name: d, why: detectorWhy.get(d) as string[] }))
  return { rules, detectors, skipped }
}

/** The suggestions as masking.yaml text, each entry with a comment saying why. */
export function suggestionsYaml(s: Suggestions, header: readonly string[]): string {
  // A quoted identifier may hold a line break: it must not end a comment early.
  const one = (t: string): string => t.replace(/[\r\n\u0085\u2028\u2029]/g, ' ')
  const lines: string[] = header.map((h) => `# ${one(h)}`)
  lines.push('rules:')
  if (s.rules.length === 0) lines[lines.length - 1] = 'rules: []'
  for (const r of s.rules) {
    for (const w of r.why) lines.push(`  # ${one(w)}`)
    lines.push(`  - name: ${r.name}`)
    lines.push(`    columns: [${r.columns.map((c) => JSON.stringify(c)).join(', ')}]`)
    // A bare `null` is YAML's null, not the strategy.
    lines.push(`    strategy: ${r.strategy === 'null' ? '"null"' : r.strategy}`)
    if (r.keep !== undefined) lines.push(`    keep: ${r.keep}`)
    lines.push('    clear_for: []')
  }
  if (s.detectors.length === 0) lines.push('detectors: []')
  else {
    lines.push('detectors:')
    for (const d of s.detectors) {
      for (const w of d.why) lines.push(`  # ${one(w)}`)
      lines.push(`  - ${d.name}`)
    }
  }
  for (const k of s.skipped) lines.push(`# not suggested: ${one(k)}`)
  return `${lines.join('\n')}\n`
}
