// Decision tables (*.cases.yaml): `{name, input, want}` cases run through the same WebAssembly
// engine the gateway uses, so CI tests what production decides — scope, every hop, the masking
// and approval files, the combination — not only the Rego rules in isolation.
//
//   - name: a three-hop chain where only the root may write
//     input:
//       chain:                                  # root first; "user:bob" alone is a hop with no groups
//         - { id: user:alice, groups: [writers] }
//         - { id: agent:planner, scope: [sql.*] }
//         - agent:writer
//       connection: { name: app, labels: { env: prod } }   # protocol defaults to postgres
//       action: sql.write
//       command: { kind: insert, tables: [public.orders], write_tables: [public.orders] }
//       approval: { granted: false }             # optional
//       time: "2026-01-07T12:00:00Z"             # optional; this Wednesday noon UTC by default
//     want: { effect: deny, rules: [...], hop: agent:writer, reason: "substring", mask: [...], approvers: [...] }

import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Decision, DecisionRequest, MaskObligation, Principal, PrincipalKind } from '../types.js'
import { FileProblems, parseYaml } from './data.js'
import type { Explanation, PolicyEngine } from './engine.js'
import { isRecord } from '../record.js'

/** Decision tables run at a fixed instant unless a case says otherwise, so they never flake. */
export const DEFAULT_CASE_TIME = '2026-01-07T12:00:00Z'

const KINDS: readonly PrincipalKind[] = ['user', 'workload', 'service', 'agent']
const EFFECTS = ['allow', 'deny', 'hold'] as const

interface MaskWant {
  readonly column?: string
  readonly rule?: string
  readonly strategy?: string
  readonly keep?: number
}

export interface Want {
  readonly effect: Decision['effect']
  readonly rules?: readonly string[]
  readonly approvers?: readonly string[]
  readonly mask?: readonly MaskWant[]
  readonly hop?: string
  readonly reason?: string
}

export interface DecisionCase {
  readonly name: string
  /** `file: cases[i]` for messages. */
  readonly where: string
  readonly request: DecisionRequest
  readonly now: Date
  readonly want: Want
}

function strings(p: FileProblems, v: unknown, key: string): string[] | undefined {
  if (v === undefined) return undefined
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) {
    p.add(key, 'must be a list of strings')
    return undefined
  }
  return v as string[]
}

function principal(p: FileProblems, v: unknown, key: string): Principal | null {
  const raw = typeof v === 'string' ? { id: v } : v
  if (!isRecord(raw)) {
    p.add(key, 'must be a principal id (user:alice) or {id, groups, scope}')
    return null
  }
  p.unknownKeys(raw, key, ['id', 'kind', 'groups', 'scope'])
  const id = raw.id
  if (typeof id !== 'string' || !/^[a-z]+:.+/.test(id)) {
    p.add(`${key}.id`, `must be <kind>:<name>, e.g. user:alice (got ${JSON.stringify(id)})`)
    return null
  }
  const kind = raw.kind ?? id.slice(0, id.indexOf(':'))
  if (typeof kind !== 'string' || !(KINDS as readonly string[]).includes(kind)) {
    p.add(`${key}.kind`, `must be one of ${KINDS.join(', ')} (got ${JSON.stringify(kind)})`)
    return null
  }
  const groups = strings(p, raw.groups, `${key}.groups`) ?? []
  const scope = strings(p, raw.scope, `${key}.scope`) ?? []
  return { id, kind: kind as PrincipalKind, groups, scope }
}

/** A request from a case's `input` (also the file of `gatehouse policy eval --input`). */
export function parseRequest(
  p: FileProblems,
  raw: unknown,
  key: string,
  defaultTime: Date = new Date(DEFAULT_CASE_TIME),
): { request: DecisionRequest; now: Date } | null {
  if (!isRecord(raw)) {
    p.add(key, 'must be a mapping with chain, connection, action and command')
    return null
  }
  p.unknownKeys(raw, key, ['principal', 'chain', 'connection', 'action', 'command', 'approval', 'time'])
  const before = p.list.length
  const chainRaw = raw.chain ?? (raw.principal === undefined ? undefined : [raw.principal])
  const chain: Principal[] = []
  if (!Array.isArray(chainRaw) || chainRaw.length === 0) p.add(`${key}.chain`, 'is required: the principals, root first')
  else {
    chainRaw.forEach((c: unknown, i: number) => {
      const pr = principal(p, c, `${key}.chain[${i}]`)
      if (pr) chain.push(pr)
    })
  }
  const c = raw.connection ?? {}
  let connection = { name: 'app', protocol: 'postgres', labels: {} as Record<string, string> }
  if (!isRecord(c)) p.add(`${key}.connection`, 'must be {name, protocol, labels}')
  else {
    p.unknownKeys(c, `${key}.connection`, ['name', 'protocol', 'labels'])
    const labels: Record<string, string> = {}
    if (c.labels !== undefined && !isRecord(c.labels)) p.add(`${key}.connection.labels`, 'must be a mapping')
    else for (const [k, v] of Object.entries(c.labels ?? {})) labels[k] = String(v)
    connection = {
      name: typeof c.name === 'string' ? c.name : 'app',
      protocol: typeof c.protocol === 'string' ? c.protocol : 'postgres',
      labels,
    }
  }
  const action = raw.action
  if (typeof action !== 'string' || !action) p.add(`${key}.action`, 'is required: connect, sql.read, sql.write, …')
  const command = raw.command ?? {}
  if (!isRecord(command)) p.add(`${key}.command`, 'must be a mapping')
  const approval = raw.approval
  let granted = false
  if (approval !== undefined) {
    if (!isRecord(approval) || typeof approval.granted !== 'boolean') p.add(`${key}.approval`, 'must be {granted: true|false}')
    else granted = approval.granted
  }
  const t = raw.time
  // YAML reads an unquoted timestamp as a Date already.
  const now =
    t === undefined ? defaultTime : t instanceof Date ? t : new Date(typeof t === 'string' || typeof t === 'number' ? t : Number.NaN)
  if (Number.isNaN(now.getTime())) p.add(`${key}.time`, `must be an RFC 3339 time like ${DEFAULT_CASE_TIME}`)
  if (p.list.length > before || typeof action !== 'string' || !isRecord(command)) return null
  return {
    request: {
      identity: { chain, tokenIds: chain.map((x) => `case:${x.id}`), expiresAt: 0 },
      connection,
      action,
      command,
      ...(approval !== undefined ? { approval: { granted } } : {}),
    },
    now,
  }
}

function parseWant(p: FileProblems, raw: unknown, key: string): Want | null {
  if (!isRecord(raw)) {
    p.add(key, 'must be a mapping with effect (allow, deny or hold)')
    return null
  }
  p.unknownKeys(raw, key, ['effect', 'rules', 'approvers', 'mask', 'hop', 'reason'])
  const effect = raw.effect
  if (typeof effect !== 'string' || !(EFFECTS as readonly string[]).includes(effect)) {
    p.add(`${key}.effect`, `must be allow, deny or hold (got ${JSON.stringify(effect)})`)
    return null
  }
  const rules = strings(p, raw.rules, `${key}.rules`)
  const approvers = strings(p, raw.approvers, `${key}.approvers`)
  let mask: MaskWant[] | undefined
  if (raw.mask !== undefined) {
    if (!Array.isArray(raw.mask)) p.add(`${key}.mask`, 'must be a list of columns or {column, rule, strategy}')
    else {
      mask = []
      raw.mask.forEach((m: unknown, i: number) => {
        if (typeof m === 'string') mask?.push({ column: m })
        else if (isRecord(m)) {
          p.unknownKeys(m, `${key}.mask[${i}]`, ['column', 'rule', 'strategy', 'keep'])
          mask?.push({
            ...(typeof m.column === 'string' ? { column: m.column } : {}),
            ...(typeof m.rule === 'string' ? { rule: m.rule } : {}),
            ...(typeof m.strategy === 'string' ? { strategy: m.strategy } : {}),
            ...(typeof m.keep === 'number' ? { keep: m.keep } : {}),
          })
        } else p.add(`${key}.mask[${i}]`, 'must be a column or {column, rule, strategy}')
      })
    }
  }
  for (const k of ['hop', 'reason'] as const) {
    if (raw[k] !== undefined && typeof raw[k] !== 'string') p.add(`${key}.${k}`, 'must be a string')
  }
  return {
    effect: effect as Want['effect'],
    ...(rules ? { rules } : {}),
    ...(approvers ? { approvers } : {}),
    ...(mask ? { mask } : {}),
    ...(typeof raw.hop === 'string' ? { hop: raw.hop } : {}),
    ...(typeof raw.reason === 'string' ? { reason: raw.reason } : {}),
  }
}

/** Reads one *.cases.yaml: a list of cases, or `{cases: [...]}`. Problems are `file: key: problem`. */
export function readCases(dir: string, display: string, rel: string): { cases: DecisionCase[]; problems: string[] } {
  const file = `${display}/${rel}`
  const p = new FileProblems(file)
  const doc = parseYaml(readFileSync(join(dir, rel), 'utf8'), p)
  const list = isRecord(doc) ? doc.cases : doc
  const cases: DecisionCase[] = []
  if (doc !== undefined && !Array.isArray(list)) p.add('', 'must be a list of cases (or cases: [...])')
  else if (Array.isArray(list)) {
    p.unknownKeys(isRecord(doc) ? doc : {}, '', ['cases'])
    const names = new Set<string>()
    list.forEach((c: unknown, i: number) => {
      const key = `cases[${i}]`
      if (!isRecord(c)) {
        p.add(key, 'must be {name, input, want}')
        return
      }
      p.unknownKeys(c, key, ['name', 'input', 'want'])
      const name = typeof c.name === 'string' && c.name ? c.name : null
      if (!name) p.add(`${key}.name`, 'is required')
      else if (names.has(name)) p.add(`${key}.name`, `duplicate case name ${JSON.stringify(name)}`)
      else names.add(name)
      const req = parseRequest(p, c.input, `${key}.input`)
      const want = parseWant(p, c.want, `${key}.want`)
      if (name && req && want) cases.push({ name, where: `${file}: ${key}`, request: req.request, now: req.now, want })
    })
  }
  return { cases, problems: p.list }
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  const x = new Set(a)
  const y = new Set(b)
  return x.size === y.size && [...x].every((v) => y.has(v))
}

function maskMatches(w: MaskWant, m: MaskObligation): boolean {
  return (
    (w.column === undefined || w.column === m.column) &&
    (w.rule === undefined || w.rule === m.rule) &&
    (w.strategy === undefined || w.strategy === m.strategy) &&
    (w.keep === undefined || w.keep === m.keep)
  )
}

/** What differs between the wanted and the got decision (empty: the case passes). */
export function compare(want: Want, d: Decision): string[] {
  const diffs: string[] = []
  if (d.effect !== want.effect) diffs.push(`effect: want ${want.effect}, got ${d.effect}`)
  if (want.rules && !sameSet(want.rules, d.rules)) diffs.push(`rules: want [${want.rules.join(', ')}], got [${d.rules.join(', ')}]`)
  const approvers = d.effect === 'hold' ? d.approvers : []
  if (want.approvers && !sameSet(want.approvers, approvers)) {
    diffs.push(`approvers: want [${want.approvers.join(', ')}], got [${approvers.join(', ')}]`)
  }
  if (want.mask) {
    const got = d.effect === 'allow' ? [...d.mask] : []
    const unmatched: MaskWant[] = []
    for (const w of want.mask) {
      const i = got.findIndex((m) => maskMatches(w, m))
      if (i < 0) unmatched.push(w)
      else got.splice(i, 1)
    }
    if (unmatched.length > 0 || got.length > 0) {
      diffs.push(
        `mask: want ${JSON.stringify(want.mask)}, got ${JSON.stringify(d.effect === 'allow' ? d.mask : [])}` +
          (unmatched.length ? ` (missing ${JSON.stringify(unmatched)})` : '') +
          (got.length ? ` (unexpected ${JSON.stringify(got)})` : ''),
      )
    }
  }
  const reasons = d.effect === 'deny' ? d.reasons : []
  if (want.hop !== undefined && !reasons.some((r) => r.hop === want.hop)) {
    diffs.push(`hop: want a reason naming ${want.hop}, got [${reasons.map((r) => r.hop || '-').join(', ')}]`)
  }
  if (want.reason !== undefined && !reasons.some((r) => r.reason.includes(want.reason as string))) {
    diffs.push(`reason: want one containing ${JSON.stringify(want.reason)}, got ${JSON.stringify(reasons.map((r) => r.reason))}`)
  }
  return diffs
}

export interface CaseResult {
  readonly case: DecisionCase
  readonly explanation: Explanation
  readonly diffs: readonly string[]
}

export function runCase(engine: PolicyEngine, c: DecisionCase): CaseResult {
  const explanation = engine.explain(c.request, c.now)
  return { case: c, explanation, diffs: compare(c.want, explanation.decision) }
}
