// A loaded bundle plus what the engine derives from it once: the hop cache and each hop's
// masking.yaml obligations.
//
// The outcome of a hop is cached by its exact input text (input.ts): evaluation is a pure function
// of (module, data, input) because the capabilities leave out every built-in that could read the
// clock, the network, randomness or the host (capabilities.ts), and the cache belongs to the bundle,
// so a swap starts empty. The input includes the time to the second, the approval state and the
// whole command, so a cached answer is the answer the policy would give again. A bundle whose Rego
// cannot read `input.command.sql` (reads.ts) is keyed without it: the command's other fields are the
// same for every literal value of one statement shape, so pgbench's `… WHERE aid = <n>` is evaluated
// once per second instead of once per statement. When hits are rare (a policy that reads the text,
// with literal values in every statement) the cache pauses itself, so it costs a miss almost nothing.

import type { ConnectionRef, MaskObligation, Principal } from '../types.js'
import type { MaskingRule } from './data.js'
import type { LoadedBundle } from './bundle.js'
import { scopeOf } from './scope.js'
import { isRecord } from '../record.js'
import { labelsMatch } from './match.js'
import { hopInput, type RestOfInput } from './input.js'
import { EMPTY, type HopOutcome, outcome, PolicyEvaluationError, resultValue } from './outcome.js'

/** Hop outcomes kept per bundle (up to twice this), and the longest input text worth keeping. */
const CACHE_ENTRIES = 256
const CACHE_MAX_KEY = 4096
/** Every CACHE_PROBE lookups the hit rate is checked; under 1 in 16, lookups pause for CACHE_BYPASS evaluations. */
const CACHE_PROBE = 1024
const CACHE_BYPASS = 16 * 1024
/** A loaded bundle plus what the engine derives from it once. */
export class Active {
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
        if (unmask.has(`detector:${d.name}`) || d.clear_for.some((g) => p.groups.includes(g)) || !ruleAppliesTo(d, conn)) continue
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
function ruleAppliesTo(r: Pick<MaskingRule, 'connections'>, conn: ConnectionRef): boolean {
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
