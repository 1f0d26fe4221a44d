// The combination (engine.ts, steps 1 to 4): scope before any Rego, the policy once per hop, then
// deny, hold or allow with the union of the mask obligations; and the fail-closed decision for an
// evaluation that could not finish.

import type { Decision, DecisionRequest, DenyReason, HoldRequirement, MaskObligation, Principal } from '../types.js'
import { actionInScope, connectionInScope, scopeOf, toolInScope } from './scope.js'
import { strictestPerColumn } from '../masking/plan.js'
import { actionMatches, labelsMatch } from './match.js'
import type { Active } from './active.js'
import { restOfInput } from './input.js'
import { type ApprovalAsk, EMPTY, type RuleReason } from './outcome.js'

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

/** Fail closed: the client learns only that the policy could not be evaluated. */
export function failed(version: string, why: string, report: HopReport[] | null): Explanation {
  const reason = 'policy evaluation failed'
  return {
    decision: { effect: 'deny', rules: ['policy-error'], reason, reasons: [{ rule: 'policy-error', reason, hop: '' }], policy: version },
    hops: report ?? [],
    requirements: [],
    error: why,
  }
}

export function decideWith(a: Active, req: DecisionRequest, now: Date | null, report: HopReport[] | null): Explanation {
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

function uniq(xs: Iterable<string>): string[] {
  return [...new Set(xs)]
}
