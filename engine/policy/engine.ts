// The Rego/WASM decision engine (docs/policies.md, "The policy contract"). For each command:
//
//   1. scope, by the engine, before any Rego: outside any hop's scope → deny, naming the hop;
//   2. the policy once per hop (input.principal = that hop, root first); a hop whose `allow` is
//      not true, or whose `deny` is not empty, denies;
//   3. otherwise hold if a hop's `approval` entries or a matching approvals.yaml requirement ask
//      for an approval and input.approval.granted is false;
//   4. otherwise allow, with the union of every hop's mask obligations: its Rego `mask` entries and
//      the masking.yaml rules whose clear_for groups the hop lacks, less the rules its scope
//      unmasks (`unmask:<rule>`).
//
// Errors, a missing bundle, an aborted request or an evaluation over budget deny; nothing here
// ever answers allow by accident. The loaded bundle is swapped atomically (one reference): a
// decision runs entirely against the bundle it started with.
//
// Hot path: the per-hop input is assembled as JSON text from pieces cached per principal,
// identity, connection and second (these objects are immutable: a session's identity never
// changes), and written straight into the module's memory (wasm.ts). The outcome of a hop is
// cached by its exact input text: evaluation is a pure function of (module, data, input) because
// the capabilities leave out every built-in that could read the clock, the network, randomness or
// the host (capabilities.ts), and the cache belongs to the bundle, so a swap starts empty. The
// input includes the time to the second, the approval state and the whole command, so a cached
// answer is the answer the policy would give again. A bundle whose Rego cannot read
// `input.command.sql` (reads.ts) is keyed without it: the command's other fields are the same for
// every literal value of one statement shape, so pgbench's `… WHERE aid = <n>` is evaluated once
// per second instead of once per statement. When hits are rare (a policy that reads the text, with
// literal values in every statement) the cache pauses itself, so it costs a miss almost nothing.

import type { Logger } from 'pino'
import { decisionTime, type DecisionEngine } from '../decide.js'
import type {
  ConnectionRef,
  Decision,
  DecisionRequest,
  DenyReason,
  HoldRequirement,
  Identity,
  MaskObligation,
  Principal,
} from '../types.js'
import { type ApprovalRequirement, MASK_STRATEGIES, type MaskingRule, type MaskStrategy } from './data.js'
import type { LoadedBundle } from './bundle.js'
import { actionInScope, connectionInScope, scopeOf, toolInScope } from './scope.js'
import { strictestPerColumn } from '../masking/plan.js'
import { jsonPathProblem } from '../masking/jsonpath.js'
import { isRecord } from '../record.js'
import { actionMatches, labelsMatch } from './match.js'

export const NO_BUNDLE_VERSION = 'none'

/** An evaluation slower than this is treated as failed (fail closed). Rego always terminates, but a
 * pathological policy could take long; wasm cannot be preempted, so the check is after the fact. */
export const EVAL_BUDGET_MS = 1000

/** Hop outcomes kept per bundle (up to twice this), and the longest input text worth keeping. */
const CACHE_ENTRIES = 256
const CACHE_MAX_KEY = 4096
/** Every CACHE_PROBE lookups the hit rate is checked; under 1 in 16, lookups pause for CACHE_BYPASS evaluations. */
const CACHE_PROBE = 1024
const CACHE_BYPASS = 16 * 1024

export interface RuleReason {
  readonly rule: string
  readonly reason: string
}
export interface ApprovalAsk {
  readonly rule: string
  readonly group: string
  readonly reason: string
}

/** What one hop's evaluation said. */
export interface HopOutcome {
  readonly allow: boolean
  readonly deny: readonly RuleReason[]
  readonly approval: readonly ApprovalAsk[]
  readonly mask: readonly MaskObligation[]
}

/** Per hop, for `policy eval` and the decision tables. */
export interface HopReport {
  readonly hop: string
  readonly in_scope: boolean
  readonly allow: boolean | null
  readonly deny: readonly RuleReason[]
  readonly approval: readonly ApprovalAsk[]
  readonly mask: readonly MaskObligation[]
}

export interface Explanation {
  readonly decision: Decision
  readonly hops: readonly HopReport[]
  /** approvals.yaml requirements that matched. */
  readonly requirements: readonly ApprovalAsk[]
  /** Why the evaluation failed (for the operator; the client is told only that it failed). */
  readonly error?: string
}

export class PolicyEvaluationError extends Error {
  override readonly name = 'PolicyEvaluationError'
}

function list(v: unknown, what: string): unknown[] {
  if (Array.isArray(v)) return v
  throw new PolicyEvaluationError(`${what} must be a set of entries (got ${JSON.stringify(v)?.slice(0, 200)})`)
}

/** A deny entry always denies: a malformed one still does, with what it said as the reason. */
function denyEntry(v: unknown): RuleReason {
  if (typeof v === 'string') return { rule: 'deny', reason: v }
  if (isRecord(v)) {
    const rule = typeof v.rule === 'string' && v.rule ? v.rule : 'deny'
    const reason = typeof v.reason === 'string' && v.reason ? v.reason : JSON.stringify(v)
    return { rule, reason }
  }
  return { rule: 'deny', reason: JSON.stringify(v) }
}

function approvalEntry(v: unknown): ApprovalAsk {
  if (isRecord(v) && typeof v.rule === 'string' && typeof v.group === 'string' && v.group) {
    return { rule: v.rule, group: v.group, reason: typeof v.reason === 'string' ? v.reason : `approval by ${v.group}` }
  }
  throw new PolicyEvaluationError(`approval entry ${JSON.stringify(v)} must be {rule, group, reason}`)
}

function maskEntry(v: unknown): MaskObligation {
  if (
    isRecord(v) &&
    typeof v.rule === 'string' &&
    typeof v.column === 'string' &&
    v.column &&
    typeof v.strategy === 'string' &&
    (MASK_STRATEGIES as readonly string[]).includes(v.strategy)
  ) {
    const strategy = v.strategy as MaskStrategy
    if (v.keep !== undefined && (typeof v.keep !== 'number' || !Number.isInteger(v.keep) || v.keep < 0)) {
      throw new PolicyEvaluationError(`mask entry ${JSON.stringify(v)}: keep must be a non-negative integer`)
    }
    const keep = typeof v.keep === 'number' ? v.keep : strategy === 'partial' ? 4 : undefined
    return keep === undefined ? { rule: v.rule, column: v.column, strategy } : { rule: v.rule, column: v.column, strategy, keep }
  }
  // A JSON body path: {rule, json_path, strategy}. A path that does not parse denies (fail closed).
  if (
    isRecord(v) &&
    typeof v.rule === 'string' &&
    typeof v.json_path === 'string' &&
    v.column === undefined &&
    typeof v.strategy === 'string' &&
    (MASK_STRATEGIES as readonly string[]).includes(v.strategy)
  ) {
    const bad = jsonPathProblem(v.json_path)
    if (bad !== null) throw new PolicyEvaluationError(`mask entry ${JSON.stringify(v)}: ${bad}`)
    const strategy = v.strategy as MaskStrategy
    if (v.keep !== undefined && (typeof v.keep !== 'number' || !Number.isInteger(v.keep) || v.keep < 0)) {
      throw new PolicyEvaluationError(`mask entry ${JSON.stringify(v)}: keep must be a non-negative integer`)
    }
    const keep = typeof v.keep === 'number' ? v.keep : strategy === 'partial' ? 4 : undefined
    const base = { rule: v.rule, column: '', json_path: v.json_path, strategy }
    return keep === undefined ? base : { ...base, keep }
  }
  throw new PolicyEvaluationError(
    `mask entry ${JSON.stringify(v)} must be {rule, column, strategy: redact|partial|hash|null} or {rule, json_path, strategy}`,
  )
}

const EMPTY: readonly never[] = Object.freeze([])

function outcome(allow: unknown, deny: unknown, approval: unknown, mask: unknown): HopOutcome {
  const d = list(deny, 'deny')
  const a = list(approval, 'approval')
  const m = list(mask, 'mask')
  return {
    allow: allow === true,
    deny: d.length === 0 ? EMPTY : d.map(denyEntry),
    approval: a.length === 0 ? EMPTY : a.map(approvalEntry),
    mask: m.length === 0 ? EMPTY : m.map(maskEntry),
  }
}

/** The value of a result set `[{"result": v}]`; undefined when the rule is undefined. */
function resultValue(rs: unknown): unknown {
  if (!Array.isArray(rs)) throw new PolicyEvaluationError('the policy returned no result set')
  const first: unknown = rs[0]
  return isRecord(first) ? first.result : undefined
}

/** A loaded bundle plus what the engine derives from it once. */
class Active {
  /** Two generations instead of LRU bookkeeping: when `young` fills up it becomes `old` and the
   * previous `old` is dropped whole (deleting Map entries one by one makes V8 iterate holes). */
  private young = new Map<string, HopOutcome>()
  private old = new Map<string, HopOutcome>()
  private lookups = 0
  private hits = 0
  private bypass = 0
  /** masking.yaml obligations per principal (its groups and unmask scope decide them) and connection. */
  private readonly fileMasks = new WeakMap<Principal, WeakMap<ConnectionRef, readonly MaskObligation[]>>()
  readonly loadedAt = new Date()

  constructor(readonly bundle: LoadedBundle) {}

  /** One hop. `key` is its input text, or that text without the statement text when the bundle
   * cannot read it; the input itself is built only when the policy must run. */
  evaluate(p: Principal, rest: RestOfInput): HopOutcome {
    const key = hopInput(p, rest.key)
    let cacheable = key.length <= CACHE_MAX_KEY
    if (this.bypass > 0) {
      this.bypass--
      cacheable = false
    }
    if (cacheable) {
      const hit = this.young.get(key) ?? this.old.get(key)
      if (++this.lookups === CACHE_PROBE) {
        // Mostly distinct inputs (literal values in every statement): stop paying for lookups.
        if (this.hits < CACHE_PROBE / 16) this.bypass = CACHE_BYPASS
        this.lookups = 0
        this.hits = 0
      }
      if (hit) {
        this.hits++
        this.remember(key, hit)
        return hit
      }
    }
    const b = this.bundle
    // A bundle that cannot read `command.sql` is given the input without it: its answer cannot
    // depend on the text (the same reasoning as the cache key), and a megabyte statement would
    // otherwise be copied into the module's memory and parsed by its JSON reader on every miss.
    const inputJson = rest.sql === null ? key : hopInput(p, rest.input)
    let o: HopOutcome
    if (b.hop !== null) {
      const v = resultValue(b.module.evaluate(b.hop, inputJson))
      if (!isRecord(v)) throw new PolicyEvaluationError('the policy returned no decision')
      o = outcome(v.allow, v.deny, v.approval, v.mask)
    } else {
      // A plain `opa build -t wasm` bundle: the contract's entrypoints, one evaluation each.
      const c = b.contract
      const get = (ep: number | null, dflt: unknown): unknown =>
        ep === null ? dflt : (resultValue(b.module.evaluate(ep, inputJson)) ?? dflt)
      o = outcome(get(c.allow, false), get(c.deny, []), get(c.approval, []), get(c.mask, []))
    }
    if (cacheable) this.remember(key, o)
    return o
  }

  private remember(key: string, o: HopOutcome): void {
    if (this.young.get(key) === o) return
    if (this.young.size >= CACHE_ENTRIES) {
      this.old = this.young
      this.young = new Map()
    }
    this.young.set(key, o)
  }

  masksFor(p: Principal, conn: ConnectionRef): readonly MaskObligation[] {
    let byConn = this.fileMasks.get(p)
    if (!byConn) {
      byConn = new WeakMap()
      this.fileMasks.set(p, byConn)
    }
    let m = byConn.get(conn)
    if (!m) {
      const unmask = scopeOf(p).unmask
      const out: MaskObligation[] = []
      // JSON paths mask JSON bodies; a PostgreSQL result has none (its JSON columns are values).
      const json = conn.protocol !== 'postgres'
      for (const r of this.bundle.masking.rules) {
        if (unmask.has(r.name) || clearFor(r, p) || !ruleAppliesTo(r, conn)) continue
        for (const column of r.columns) out.push(obligation(r, column))
        if (json) for (const path of r.json_paths ?? EMPTY) out.push(jsonObligation(r, path))
      }
      // Value detectors: masked for this hop unless its groups are cleared or its scope unmasks them.
      for (const d of this.bundle.masking.detectors) {
        if (unmask.has(`detector:${d.name}`) || d.clear_for.some((g) => p.groups.includes(g))) continue
        out.push({ rule: `detector:${d.name}`, column: '', strategy: 'redact', detector: d.name })
      }
      m = out.length === 0 ? EMPTY : out
      byConn.set(conn, m)
    }
    return m
  }
}

function clearFor(r: MaskingRule, p: Principal): boolean {
  for (const g of r.clear_for) if (p.groups.includes(g)) return true
  return false
}

/** A rule without `connections:` applies everywhere; with it, to the connections it names or whose labels it lists. */
function ruleAppliesTo(r: MaskingRule, conn: ConnectionRef): boolean {
  if (r.connections === undefined) return true
  for (const c of r.connections) {
    if (typeof c === 'string' ? c === conn.name : labelsMatch(c.labels, conn.labels)) return true
  }
  return false
}

function jsonObligation(r: MaskingRule, path: string): MaskObligation {
  const base = { rule: r.name, column: '', json_path: path, strategy: r.strategy }
  return r.keep === undefined ? base : { ...base, keep: r.keep }
}

function obligation(r: MaskingRule, column: string): MaskObligation {
  return r.keep === undefined
    ? { rule: r.name, column, strategy: r.strategy }
    : { rule: r.name, column, strategy: r.strategy, keep: r.keep }
}

function uniq(xs: Iterable<string>): string[] {
  return [...new Set(xs)]
}

// Input assembly: the document of buildInputs (decide.ts), key for key, as text.
const principalJson = new WeakMap<Principal, string>()
const chainJson = new WeakMap<Identity, string>()
const connectionJson = new WeakMap<object, string>()
let timeUnix = -1
let timeJson = ''

function cachedJson<K extends object>(map: WeakMap<K, string>, key: K, make: () => unknown): string {
  let s = map.get(key)
  if (s === undefined) {
    s = JSON.stringify(make())
    map.set(key, s)
  }
  return s
}

const APPROVAL_FALSE = '{"granted":false}'

/**
 * Everything after the principal, `,"chain":…,"time":…}`. For a bundle that cannot read
 * `command.sql` (`withoutSql`), `key` and `input` leave the statement text out and `sql` holds it;
 * otherwise `key` and `input` are the text itself and `sql` is null.
 */
interface RestOfInput {
  readonly key: string
  readonly sql: string | null
  /** The input after the principal for the policy itself: `key` when `sql` is null, otherwise the
   * same document without `command.sql` (valid JSON, unlike `key`, which marks the omission). */
  readonly input: string
}

function restOfInput(req: DecisionRequest, now: Date | null, withoutSql: boolean): RestOfInput {
  let t: string
  if (now === null) {
    const ms = Date.now()
    const unix = Math.floor(ms / 1000)
    if (unix !== timeUnix) {
      timeJson = JSON.stringify(decisionTime(new Date(ms)))
      timeUnix = unix
    }
    t = timeJson
  } else t = JSON.stringify(decisionTime(now))
  const chain = cachedJson(chainJson, req.identity, () => req.identity.chain.map((p) => ({ id: p.id, kind: p.kind, groups: p.groups })))
  const conn = cachedJson(connectionJson, req.connection, () => req.connection)
  const approval = req.approval === undefined ? APPROVAL_FALSE : JSON.stringify(req.approval)
  const head = `,"chain":${chain},"connection":${conn},"action":${JSON.stringify(req.action)},"command":`
  const tail = `,"approval":${approval},"time":${t}}`
  const cmd = req.command
  if (!withoutSql || typeof cmd.sql !== 'string') {
    const command = JSON.stringify(cmd)
    const key = `${head}${command}${tail}`
    return { key, sql: null, input: key }
  }
  const { sql, ...rest } = cmd
  const input = `${head}${JSON.stringify(rest)}${tail}`
  // The key marks the missing member, so it can never equal the text of an input that has it.
  return { key: `${input}\u0000nosql`, sql, input }
}

function hopInput(p: Principal, rest: string): string {
  return `{"principal":${cachedJson(principalJson, p, () => p)}${rest}`
}

export interface PolicyStatus {
  readonly version: string
  readonly loaded_at: string | null
  readonly last_error: string | null
  readonly source: string | null
}

export class PolicyEngine implements DecisionEngine {
  private active: Active | null = null
  private lastError: string | null = null
  private epoch: { readonly active: Active; readonly second: number } | null = null
  /** Reloads after a change to the source that loaded (a new bundle or the same one again). */
  reloads = 0
  /** Reloads that failed (the loaded bundle kept deciding). */
  reloadFailures = 0

  constructor(
    bundle: LoadedBundle | null,
    private readonly log: Logger | null = null,
  ) {
    if (bundle) this.active = new Active(bundle)
  }

  get version(): string {
    return this.active?.bundle.version ?? NO_BUNDLE_VERSION
  }

  /** Replaces the bundle in one assignment; decisions already running finish on the old one. */
  swap(bundle: LoadedBundle): void {
    this.active = new Active(bundle)
    this.lastError = null
    this.reloads++
  }

  /** The source compiled again to the bundle already loaded: keep it (and its cache). */
  reloadSucceeded(): void {
    this.lastError = null
    this.reloads++
  }

  /** Records why a reload failed; the loaded bundle keeps deciding. */
  reloadFailed(message: string): void {
    this.lastError = message
    this.reloadFailures++
  }

  /** A bundle is loaded and the last reload (if any) did not fail: what decides is the source as it is. */
  get upToDate(): boolean {
    return this.active !== null && this.lastError === null
  }

  /** The masking rules of the loaded bundle (delegation asks whether a root may pass on unmask:<rule>). */
  maskingRules(): readonly MaskingRule[] {
    return this.active?.bundle.masking.rules ?? EMPTY
  }

  /** Whether a root may pass `unmask:<rule>` on: a masking rule or `detector:<name>` that clears its groups. */
  rootMayUnmask(root: Principal, rule: string): boolean {
    const m = this.active?.bundle.masking
    if (!m) return false
    const cleared = (groups: readonly string[]): boolean => groups.some((g) => root.groups.includes(g))
    if (rule.startsWith('detector:')) return m.detectors.some((d) => `detector:${d.name}` === rule && cleared(d.clear_for))
    return m.rules.some((r) => r.name === rule && cleared(r.clear_for))
  }

  /** The approvals.yaml requirements of the loaded bundle (access requests ask which apply). */
  approvalRequirements(): readonly ApprovalRequirement[] {
    return this.active?.bundle.approvals.requirements ?? EMPTY
  }

  status(): PolicyStatus {
    const a = this.active
    return {
      version: this.version,
      loaded_at: a ? a.loadedAt.toISOString() : null,
      last_error: this.lastError,
      source: a ? a.bundle.source : null,
    }
  }

  decide(req: DecisionRequest, signal?: AbortSignal): Promise<Decision> {
    return Promise.resolve(this.run(req, signal, null, null).decision)
  }

  decideNow(req: DecisionRequest, signal?: AbortSignal): Decision {
    return this.run(req, signal, null, null).decision
  }

  /** The loaded bundle and the current second, as one object (see DecisionEngine.decisionEpoch):
   * the input's `time` has a resolution of one second, and a swap makes a new Active. */
  decisionEpoch(): object | null {
    const a = this.active
    if (!a || a.bundle.readsSqlText) return null
    const second = Math.floor(Date.now() / 1000)
    let e = this.epoch
    if (e === null || e.active !== a || e.second !== second) {
      e = { active: a, second }
      this.epoch = e
    }
    return e
  }

  /** The decision with every hop's answer, for `policy eval` and decision tables. */
  explain(req: DecisionRequest, now: Date | null = null): Explanation {
    return this.run(req, undefined, now, [])
  }

  private run(req: DecisionRequest, signal: AbortSignal | undefined, now: Date | null, report: HopReport[] | null): Explanation {
    const a = this.active
    const version = a?.bundle.version ?? NO_BUNDLE_VERSION
    if (!a) return failed(version, 'no policy bundle is loaded', report)
    if (signal?.aborted) return failed(version, 'the decision was abandoned', report)
    try {
      const started = performance.now()
      const e = decideWith(a, req, now, report)
      if (performance.now() - started > EVAL_BUDGET_MS) {
        throw new PolicyEvaluationError(`the decision took longer than ${EVAL_BUDGET_MS} ms`)
      }
      return e
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err)
      this.log?.error({ policy: version, action: req.action, connection: req.connection.name, why }, 'policy evaluation failed')
      return failed(version, why, report)
    }
  }
}

/** Fail closed: the client learns only that the policy could not be evaluated. */
function failed(version: string, why: string, report: HopReport[] | null): Explanation {
  const reason = 'policy evaluation failed'
  return {
    decision: { effect: 'deny', rules: ['policy-error'], reason, reasons: [{ rule: 'policy-error', reason, hop: '' }], policy: version },
    hops: report ?? [],
    requirements: [],
    error: why,
  }
}

function decideWith(a: Active, req: DecisionRequest, now: Date | null, report: HopReport[] | null): Explanation {
  const version = a.bundle.version
  const chain = req.identity.chain
  if (chain.length === 0) {
    const reason = 'no authenticated principal'
    return {
      decision: {
        effect: 'deny',
        rules: ['authenticated'],
        reason,
        reasons: [{ rule: 'authenticated', reason, hop: '' }],
        policy: version,
      },
      hops: report ?? [],
      requirements: [],
    }
  }

  // 1. Scope, before any Rego.
  let reasons: DenyReason[] | null = null
  for (const p of chain) {
    const s = scopeOf(p)
    if (
      !connectionInScope(s, req.connection.name) ||
      !actionInScope(s, req.action) ||
      !toolInScope(s, req.connection.name, req.action, req.command)
    ) {
      reasons = add(reasons, { rule: 'scope', reason: `outside the scope of ${p.id}`, hop: p.id })
      report?.push({ hop: p.id, in_scope: false, allow: null, deny: [], approval: [], mask: [] })
    } else report?.push({ hop: p.id, in_scope: true, allow: null, deny: [], approval: [], mask: [] })
  }
  if (reasons) return { decision: deny(reasons, version), hops: report ?? [], requirements: [] }

  // 2. The policy, once per hop.
  // A hop's own deny entries say more than "no rule allows", so they are listed first.
  const rest = restOfInput(req, now, !a.bundle.readsSqlText)
  let notAllowed: DenyReason[] | null = null
  let asks: ApprovalAsk[] | null = null
  let masks: MaskObligation[] | null = null
  for (let i = 0; i < chain.length; i++) {
    const p = chain[i] as Principal
    const o = a.evaluate(p, rest)
    if (!o.allow) notAllowed = add(notAllowed, { rule: 'default-deny', reason: `no rule allows ${req.action} for ${p.id}`, hop: p.id })
    for (const d of o.deny) reasons = add(reasons, { rule: d.rule, reason: d.reason, hop: p.id })
    for (const ask of o.approval) asks = add(asks, ask)
    const unmask = scopeOf(p).unmask
    const fileMasks = a.masksFor(p, req.connection)
    const hopMasks = unmask.size === 0 ? o.mask : o.mask.filter((m) => !unmask.has(m.rule))
    for (const m of hopMasks) masks = add(masks, m)
    for (const m of fileMasks) masks = add(masks, m)
    if (report)
      report[i] = { hop: p.id, in_scope: true, allow: o.allow, deny: o.deny, approval: o.approval, mask: [...hopMasks, ...fileMasks] }
  }
  if (notAllowed) reasons = reasons ? [...reasons, ...notAllowed] : notAllowed
  if (reasons) return { decision: deny(reasons, version), hops: report ?? [], requirements: [] }

  // 3. Approvals: the hops' Rego entries and the requirements of approvals.yaml.
  const requirements: ApprovalAsk[] = []
  for (const r of a.bundle.approvals.requirements) {
    if (actionMatches(r.action, req.action) && labelsMatch(r.labels, req.connection.labels)) {
      requirements.push({ rule: r.name, group: r.approvers.group, reason: r.reason })
    }
  }
  if ((asks !== null || requirements.length > 0) && req.approval?.granted !== true) {
    const all = [...(asks ?? []), ...requirements]
    // Who must approve and what an approval grants: Rego entries ask for one approval, once.
    const held: HoldRequirement[] = (asks ?? []).map((x) => ({ ...x, count: 1, grant: 'once', window_seconds: null }))
    for (const r of a.bundle.approvals.requirements) {
      if (!requirements.some((q) => q.rule === r.name)) continue
      const grant = r.grant === 'window' && r.window_seconds !== null ? r.grant : 'once'
      held.push({
        rule: r.name,
        group: r.approvers.group,
        count: r.approvers.count,
        grant,
        window_seconds: r.window_seconds,
        reason: r.reason,
      })
    }
    return {
      decision: {
        effect: 'hold',
        rules: uniq(all.map((x) => x.rule)),
        approvers: uniq(all.map((x) => x.group)),
        policy: version,
        requirements: held,
      },
      hops: report ?? [],
      requirements,
    }
  }

  // 4. Allow, with the union of the mask obligations.
  // Where hops mask the same column differently the strictest wins (engine/masking/plan.ts).
  const mask = masks === null ? EMPTY : strictestPerColumn(dedupeMasks(masks))
  const mo = a.bundle.masking
  return {
    decision: {
      effect: 'allow',
      rules: masks === null ? EMPTY : uniq(masks.map((m) => m.rule)),
      mask,
      policy: version,
      ...(mask.length > 0 ? { maskOptions: { strictPredicates: mo.strict_predicates, unknownLineage: mo.unknown_lineage } } : {}),
    },
    hops: report ?? [],
    requirements,
  }
}

/** Appends, allocating the list only when there is something to keep (most decisions have nothing). */
function add<T>(list: T[] | null, item: T): T[] {
  if (list === null) return [item]
  list.push(item)
  return list
}

function deny(reasons: readonly DenyReason[], version: string): Decision {
  const first = reasons[0] as DenyReason
  return { effect: 'deny', rules: uniq(reasons.map((r) => r.rule)), reason: first.reason, reasons, policy: version }
}

function dedupeMasks(ms: readonly MaskObligation[]): MaskObligation[] {
  const seen = new Set<string>()
  const out: MaskObligation[] = []
  for (const m of ms) {
    const k = `${m.rule}\0${m.column}\0${m.json_path ?? ''}\0${m.strategy}\0${m.keep ?? ''}`
    if (!seen.has(k)) {
      seen.add(k)
      out.push(m)
    }
  }
  return out
}
