// The data files of a policy directory: masking rules (masking.yaml) and approval requirements
// (approvals.yaml). They are validated here with every problem reported as `file: key: problem`,
// normalized, and compiled into the bundle as data.gatehouse.masking and data.gatehouse.approvals,
// so one `git diff` of the directory shows every change to who may do what. The normalized form is
// itself valid input, so a prebuilt bundle's data.json is checked by the same code when loaded.

import yaml from 'js-yaml'
import { parseDuration } from '../duration.js'
import type { MaskObligation } from '../types.js'
import { DETECTOR_NAMES } from '../masking/detectors.js'
import { jsonPathProblem } from '../masking/jsonpath.js'
import { isRecord } from '../record.js'

export type MaskStrategy = MaskObligation['strategy']
export const MASK_STRATEGIES: readonly MaskStrategy[] = ['redact', 'partial', 'hash', 'hash_session', 'null']
/** Value detectors the masking engine knows (applied to unclassified text columns). */
export const DETECTORS: readonly string[] = DETECTOR_NAMES
/** What the proxy does with an output column whose lineage it cannot establish. */
export const UNKNOWN_LINEAGE = ['refuse', 'mask'] as const
/** Characters kept by `partial` when `keep` is not given. */
export const DEFAULT_PARTIAL_KEEP = 4

/** A connection a rule is limited to: its name, or labels that must all be equal. */
export type ConnectionSelector = string | { readonly labels: Readonly<Record<string, string>> }

export interface MaskingRule {
  readonly name: string
  /** Patterns matched against schema.table.column from the right; `*` is one name segment. */
  readonly columns: readonly string[]
  /** JSONPath locations masked in JSON bodies (HTTP responses and other JSON protocols). */
  readonly json_paths?: readonly string[]
  /** Only these connections (absent: every connection). */
  readonly connections?: readonly ConnectionSelector[]
  readonly strategy: MaskStrategy
  /** For `partial`: characters kept at the end. */
  readonly keep?: number
  /** Groups that see clear values. */
  readonly clear_for: readonly string[]
}

/** A value detector switched on, with the groups that see its matches clear. */
export interface DetectorRule {
  readonly name: string
  readonly clear_for: readonly string[]
  /** The connections it applies to (like a rule's); every connection when absent. */
  readonly connections?: readonly ConnectionSelector[]
}

export interface MaskingData {
  readonly rules: readonly MaskingRule[]
  /** Normalized to `{name, clear_for}`; masking.yaml may list a bare name. */
  readonly detectors: readonly DetectorRule[]
  /** Also refuse predicates (WHERE, JOIN … ON, HAVING) on classified columns. */
  readonly strict_predicates: boolean
  /** refuse: a statement whose lineage is unknown is refused; mask: such output columns are masked whole. */
  readonly unknown_lineage: (typeof UNKNOWN_LINEAGE)[number]
}

export interface ApprovalRequirement {
  readonly name: string
  /** Action names or families (`sql.ddl`, `sql.*`); the requirement applies to any of them. */
  readonly action: readonly string[]
  /** Connection labels that must all be present with these values. */
  readonly labels: Readonly<Record<string, string>>
  readonly approvers: { readonly group: string; readonly count: number }
  /** once: this exact command; window: the action for a duration. */
  readonly grant: 'once' | 'window'
  readonly window: string | null
  readonly window_seconds: number | null
  /** What approvers and the caller are told. */
  readonly reason: string
}

export interface ApprovalsData {
  readonly requirements: readonly ApprovalRequirement[]
}

export const EMPTY_MASKING: MaskingData = { rules: [], detectors: [], strict_predicates: false, unknown_lineage: 'refuse' }
export const EMPTY_APPROVALS: ApprovalsData = { requirements: [] }

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/
const GROUP_RE = /^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$/
const ACTION_RE = /^(\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?)$/
// A segment is a name, `*` (any one segment), or a name with `*` globs inside (`password*`).
const SEGMENT_RE = /^[^.\s"]+$/

/** Collects `file: key: problem` lines so every problem of a file is reported at once. */
export class FileProblems {
  readonly list: string[] = []
  constructor(readonly file: string) {}
  add(key: string, problem: string): void {
    this.list.push(key ? `${this.file}: ${key}: ${problem}` : `${this.file}: ${problem}`)
  }
  unknownKeys(obj: Record<string, unknown>, path: string, allowed: readonly string[]): void {
    for (const k of Object.keys(obj)) {
      if (!allowed.includes(k)) this.add(path ? `${path}.${k}` : k, `unknown key (allowed: ${allowed.join(', ')})`)
    }
  }
}

/** Parses YAML text; a syntax error becomes a problem (with js-yaml's line and column). */
export function parseYaml(text: string, p: FileProblems): unknown {
  try {
    return yaml.load(text, { filename: p.file }) ?? {}
  } catch (err) {
    const msg = err instanceof Error ? err.message.split('\n')[0] : String(err)
    p.add('', `not valid YAML: ${msg}`)
    return undefined
  }
}

function stringList(p: FileProblems, v: unknown, key: string, check: (s: string) => string | null): string[] {
  if (v === undefined || v === null) return []
  const items = typeof v === 'string' ? [v] : v
  if (!Array.isArray(items)) {
    p.add(key, 'must be a list of strings')
    return []
  }
  const out: string[] = []
  items.forEach((s: unknown, i: number) => {
    if (typeof s !== 'string' || s.length === 0) {
      p.add(`${key}[${i}]`, `must be a non-empty string (got ${JSON.stringify(s)})`)
      return
    }
    const bad = check(s)
    if (bad) p.add(`${key}[${i}]`, bad)
    else out.push(s)
  })
  return out
}

function checkColumn(s: string): string | null {
  const segs = s.split('.')
  if (segs.length > 3 || !segs.every((x) => SEGMENT_RE.test(x))) {
    return `must be column, table.column or schema.table.column, each a name or * (got ${JSON.stringify(s)})`
  }
  return null
}

const checkGroup = (s: string): string | null => (GROUP_RE.test(s) ? null : `is not a valid group name (got ${JSON.stringify(s)})`)

export function parseMasking(raw: unknown, p: FileProblems): MaskingData {
  if (raw === undefined) return EMPTY_MASKING
  if (!isRecord(raw)) {
    p.add('', 'the top level must be a mapping with rules: and detectors:')
    return EMPTY_MASKING
  }
  p.unknownKeys(raw, '', ['rules', 'detectors', 'strict_predicates', 'unknown_lineage'])
  const rules: MaskingRule[] = []
  const rulesRaw = raw.rules ?? []
  const seen = new Set<string>()
  if (!Array.isArray(rulesRaw)) p.add('rules', 'must be a list of rules')
  else {
    rulesRaw.forEach((r: unknown, i: number) => {
      const path = `rules[${i}]`
      if (!isRecord(r)) {
        p.add(path, 'must be a mapping with name, columns and strategy')
        return
      }
      p.unknownKeys(r, path, ['name', 'columns', 'json_paths', 'connections', 'strategy', 'keep', 'clear_for'])
      const before = p.list.length
      const name = r.name
      if (typeof name !== 'string' || !NAME_RE.test(name)) {
        p.add(`${path}.name`, `is required: letters, digits, _ . - (got ${JSON.stringify(name)})`)
      } else if (seen.has(name)) p.add(`${path}.name`, `duplicate rule name ${JSON.stringify(name)}`)
      else seen.add(name)
      const columns = stringList(p, r.columns, `${path}.columns`, checkColumn)
      const jsonPaths = stringList(p, r.json_paths, `${path}.json_paths`, jsonPathProblem)
      const empty = (v: unknown): boolean => v === undefined || v === null || (Array.isArray(v) && v.length === 0)
      if (empty(r.columns) && empty(r.json_paths)) {
        p.add(`${path}.columns`, 'is required: at least one column pattern (or json_paths: for JSON bodies)')
      }
      const connections = r.connections === undefined ? undefined : parseConnections(p, r.connections, `${path}.connections`)
      const strategy = r.strategy
      if (typeof strategy !== 'string' || !(MASK_STRATEGIES as readonly string[]).includes(strategy)) {
        p.add(`${path}.strategy`, `must be one of ${MASK_STRATEGIES.join(', ')} (got ${JSON.stringify(strategy)})`)
      }
      let keep: number | undefined
      if (r.keep !== undefined) {
        if (strategy !== 'partial') p.add(`${path}.keep`, 'only applies to strategy: partial')
        else if (typeof r.keep !== 'number' || !Number.isInteger(r.keep) || r.keep < 0 || r.keep > 64) {
          p.add(`${path}.keep`, `must be an integer from 0 to 64 (got ${JSON.stringify(r.keep)})`)
        } else keep = r.keep
      } else if (strategy === 'partial') keep = DEFAULT_PARTIAL_KEEP
      const clearFor = stringList(p, r.clear_for, `${path}.clear_for`, checkGroup)
      if (p.list.length === before && typeof name === 'string') {
        rules.push({
          name,
          columns,
          ...(jsonPaths.length > 0 ? { json_paths: jsonPaths } : {}),
          ...(connections !== undefined ? { connections } : {}),
          strategy: strategy as MaskStrategy,
          ...(keep !== undefined ? { keep } : {}),
          clear_for: clearFor,
        })
      }
    })
  }
  const detectors = parseDetectors(raw.detectors, p)
  const strict = raw.strict_predicates ?? false
  if (typeof strict !== 'boolean') p.add('strict_predicates', `must be true or false (got ${JSON.stringify(strict)})`)
  const lineage = raw.unknown_lineage ?? 'refuse'
  if (typeof lineage !== 'string' || !(UNKNOWN_LINEAGE as readonly string[]).includes(lineage)) {
    p.add('unknown_lineage', `must be one of ${UNKNOWN_LINEAGE.join(', ')} (got ${JSON.stringify(lineage)})`)
  }
  return {
    rules,
    detectors,
    strict_predicates: strict === true,
    unknown_lineage: lineage === 'mask' ? 'mask' : 'refuse',
  }
}

/** `connections:` entries: a connection name, or `{labels: {key: value}}` (all must be equal). */
function parseConnections(p: FileProblems, v: unknown, key: string): ConnectionSelector[] {
  const items = typeof v === 'string' ? [v] : v
  if (!Array.isArray(items) || items.length === 0) {
    p.add(key, 'must be a non-empty list of connection names or {labels: {key: value}} (leave it out for every connection)')
    return []
  }
  const out: ConnectionSelector[] = []
  items.forEach((c: unknown, i: number) => {
    if (typeof c === 'string') {
      if (NAME_RE.test(c)) out.push(c)
      else p.add(`${key}[${i}]`, `is not a connection name (got ${JSON.stringify(c)})`)
      return
    }
    if (!isRecord(c) || !isRecord(c.labels) || Object.keys(c.labels).length === 0) {
      p.add(`${key}[${i}]`, 'must be a connection name or {labels: {key: value}} with at least one label')
      return
    }
    p.unknownKeys(c, `${key}[${i}]`, ['labels'])
    const labels: Record<string, string> = {}
    for (const [k, l] of Object.entries(c.labels)) {
      if (typeof l === 'string' || typeof l === 'number' || typeof l === 'boolean') labels[k] = String(l)
      else p.add(`${key}[${i}].labels.${k}`, 'must be a string')
    }
    out.push({ labels })
  })
  return out
}

/** `detectors:` entries: a detector name, or `{name, clear_for: [groups], connections: […]}`. */
function parseDetectors(v: unknown, p: FileProblems): DetectorRule[] {
  if (v === undefined || v === null) return []
  if (!Array.isArray(v)) {
    p.add('detectors', 'must be a list of detector names or {name, clear_for} mappings')
    return []
  }
  const out: DetectorRule[] = []
  const seen = new Set<string>()
  v.forEach((d: unknown, i: number) => {
    const key = `detectors[${i}]`
    const name = isRecord(d) ? d.name : d
    if (isRecord(d)) p.unknownKeys(d, key, ['name', 'clear_for', 'connections'])
    const before = p.list.length
    if (typeof name !== 'string' || !DETECTORS.includes(name)) {
      p.add(isRecord(d) ? `${key}.name` : key, `unknown detector ${JSON.stringify(name)} (known: ${DETECTORS.join(', ')})`)
      return
    }
    if (seen.has(name)) p.add(key, `duplicate detector ${JSON.stringify(name)}`)
    seen.add(name)
    const clearFor = isRecord(d) ? stringList(p, d.clear_for, `${key}.clear_for`, checkGroup) : []
    const connections = isRecord(d) && d.connections !== undefined ? parseConnections(p, d.connections, `${key}.connections`) : undefined
    if (p.list.length === before) out.push({ name, clear_for: clearFor, ...(connections !== undefined ? { connections } : {}) })
  })
  return out
}

export function parseApprovals(raw: unknown, p: FileProblems): ApprovalsData {
  if (raw === undefined) return EMPTY_APPROVALS
  if (!isRecord(raw)) {
    p.add('', 'the top level must be a mapping with requirements:')
    return EMPTY_APPROVALS
  }
  p.unknownKeys(raw, '', ['requirements'])
  const requirements: ApprovalRequirement[] = []
  const list = raw.requirements ?? []
  const seen = new Set<string>()
  if (!Array.isArray(list)) {
    p.add('requirements', 'must be a list of requirements')
    return EMPTY_APPROVALS
  }
  list.forEach((r: unknown, i: number) => {
    const path = `requirements[${i}]`
    if (!isRecord(r)) {
      p.add(path, 'must be a mapping with name, action and approvers')
      return
    }
    p.unknownKeys(r, path, ['name', 'action', 'labels', 'approvers', 'grant', 'window', 'window_seconds', 'reason'])
    const before = p.list.length
    const name = r.name
    if (typeof name !== 'string' || !NAME_RE.test(name)) {
      p.add(`${path}.name`, `is required: letters, digits, _ . - (got ${JSON.stringify(name)})`)
    } else if (seen.has(name)) p.add(`${path}.name`, `duplicate requirement name ${JSON.stringify(name)}`)
    else seen.add(name)
    if (r.action === undefined) p.add(`${path}.action`, 'is required: an action (sql.ddl) or family (sql.*), or a list of them')
    const action = stringList(p, r.action, `${path}.action`, (s) =>
      ACTION_RE.test(s) ? null : `must be an action like sql.ddl or a family like sql.* (got ${JSON.stringify(s)})`,
    )
    const labels: Record<string, string> = {}
    const l = r.labels ?? {}
    if (!isRecord(l)) p.add(`${path}.labels`, 'must be a mapping of label to value')
    else {
      for (const [k, v] of Object.entries(l)) {
        if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') labels[k] = String(v)
        else p.add(`${path}.labels.${k}`, 'must be a string')
      }
    }
    let approvers = { group: '', count: 1 }
    const a = r.approvers
    if (!isRecord(a)) p.add(`${path}.approvers`, 'is required: { group: NAME, count: N }')
    else {
      p.unknownKeys(a, `${path}.approvers`, ['group', 'count'])
      const group = a.group
      if (typeof group !== 'string' || !GROUP_RE.test(group)) {
        p.add(`${path}.approvers.group`, `is required: the group whose members approve (got ${JSON.stringify(group)})`)
      }
      const count = a.count ?? 1
      if (typeof count !== 'number' || !Number.isInteger(count) || count < 1 || count > 10) {
        p.add(`${path}.approvers.count`, `must be an integer from 1 to 10 (got ${JSON.stringify(count)})`)
      }
      approvers = { group: typeof group === 'string' ? group : '', count: typeof count === 'number' ? count : 1 }
    }
    const grant = r.grant ?? 'once'
    if (grant !== 'once' && grant !== 'window') p.add(`${path}.grant`, `must be once or window (got ${JSON.stringify(grant)})`)
    let window: string | null = null
    let windowSeconds: number | null = null
    if (r.window !== undefined && r.window !== null) {
      const s = typeof r.window === 'string' ? parseDuration(r.window) : null
      if (s === null || s <= 0) p.add(`${path}.window`, `must be a duration like 30m, 2h or 1d (got ${JSON.stringify(r.window)})`)
      else if (grant !== 'window') p.add(`${path}.window`, 'only applies to grant: window')
      else {
        window = String(r.window)
        windowSeconds = s
      }
    } else if (grant === 'window') p.add(`${path}.window`, 'is required with grant: window (a duration like 30m)')
    const reason = r.reason ?? null
    if (reason !== null && (typeof reason !== 'string' || reason.length === 0 || reason.length > 500)) {
      p.add(`${path}.reason`, 'must be a non-empty string of at most 500 characters')
    }
    if (p.list.length === before && typeof name === 'string') {
      requirements.push({
        name,
        action,
        labels,
        approvers,
        grant: grant === 'window' ? 'window' : 'once',
        window,
        window_seconds: windowSeconds,
        reason: typeof reason === 'string' ? reason : `${name} requires approval from group ${approvers.group}`,
      })
    }
  })
  return { requirements }
}
