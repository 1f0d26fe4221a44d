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
// The modules: input.ts assembles each hop's input as JSON text, written straight into the module's
// memory (wasm.ts); outcome.ts reads a hop's answer; active.ts holds a loaded bundle with its hop
// cache and masking.yaml obligations; combine.ts is steps 1 to 4.

import type { Logger } from 'pino'
import type { DecisionEngine } from '../decide.js'
import type { ConnectionRef, Decision, DecisionRequest, Identity, MaskObligation, PossibleMasks, Principal } from '../types.js'
import { maskMayApply } from './mask-scope.js'
import type { ApprovalRequirement, MaskingRule } from './data.js'
import type { LoadedBundle } from './bundle.js'
import { Active } from './active.js'
import { decideWith, type Explanation, failed, type HopReport } from './combine.js'
import { EMPTY, PolicyEvaluationError } from './outcome.js'

export type { Explanation, HopReport } from './combine.js'
export { type ApprovalAsk, type HopOutcome, PolicyEvaluationError, type RuleReason } from './outcome.js'

export const NO_BUNDLE_VERSION = 'none'

/** An evaluation slower than this is treated as failed (fail closed). Rego always terminates, but a
 * pathological policy could take long; wasm cannot be preempted, so the check is after the fact. */
export const EVAL_BUDGET_MS = 1000

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

  possibleMasks(identity: Identity, connection: ConnectionRef, actions: readonly string[]): PossibleMasks {
    const a = this.active
    if (!a) return { known: EMPTY, policy: true }
    let known: MaskObligation[] | null = null
    for (const p of identity.chain) {
      const m = a.masksFor(p, connection)
      if (m.length > 0) known = known ? [...known, ...m] : [...m]
    }
    return { known: known ?? EMPTY, policy: maskMayApply(a.bundle.maskScope, actions, connection.name) }
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
