// How a refusal by policy reads, the same in every protocol: clients and agents see
// `gatehouse: denied by <rule> (<hop>): <reason>`, and tools parse that text back
// (proxies/mcp/results.ts), so it is written in one place.

import type { Decision } from '../../engine/types.js'

type DenyDecision = Extract<Decision, { effect: 'deny' }>
type HoldDecision = Extract<Decision, { effect: 'hold' }>

/** What refused: the rule and the hop of the chain of a denial's first reason ('policy' for a
 * reason that names no rule), and why; rule and hop are null when the denial gives no reason. */
export interface Denial {
  readonly rule: string | null
  readonly hop: string | null
  readonly reason: string
}

export function denialOf(d: DenyDecision): Denial {
  const first = d.reasons[0]
  return { rule: first ? first.rule || 'policy' : null, hop: first?.hop || null, reason: first?.reason ?? d.reason }
}

/** `gatehouse: denied by <rule> (<hop>): <reason>` (`gatehouse: denied: <reason>` when no rule is
 * named), or for a hold `gatehouse: approval required from <groups> (<rules>)`. */
export function refusalMessage(d: DenyDecision | HoldDecision): string {
  if (d.effect === 'hold') return `gatehouse: approval required from ${d.approvers.join(', ') || 'a reviewer'} (${d.rules.join(', ')})`
  const { rule, hop, reason } = denialOf(d)
  return rule ? `gatehouse: denied by ${rule}${hop ? ` (${hop})` : ''}: ${reason}` : `gatehouse: denied: ${reason}`
}
