// How approvals.yaml requirements select what they hold: an action pattern (`sql.write`, `sql.*`,
// `*`) and connection labels that must all be equal. One matcher for the decision and for the
// approvals service, so a held command and the reviewers' view of it never disagree.

import type { ConnectionRef, HoldRequirement } from '../types.js'
import type { ApprovalRequirement } from './data.js'

/** True when one of `patterns` is `action` itself, `*`, or `prefix.*` with `action` under the prefix. */
export function actionMatches(patterns: readonly string[], action: string): boolean {
  for (const a of patterns) {
    if (a === action || a === '*' || (a.endsWith('.*') && action.startsWith(a.slice(0, -1)))) return true
  }
  return false
}

/** True when every label in `want` has the same value in `have`. */
export function labelsMatch(want: Readonly<Record<string, string>>, have: Readonly<Record<string, string>>): boolean {
  for (const k in want) if (have[k] !== want[k]) return false
  return true
}

/** The requirements that would hold `action` on `connection`, as the engine matches them. */
export function matchingRequirements(all: readonly ApprovalRequirement[], action: string, connection: ConnectionRef): HoldRequirement[] {
  return all
    .filter((r) => actionMatches(r.action, action) && labelsMatch(r.labels, connection.labels))
    .map((r) => ({
      rule: r.name,
      group: r.approvers.group,
      count: r.approvers.count,
      grant: r.grant === 'window' && r.window_seconds !== null ? 'window' : 'once',
      window_seconds: r.window_seconds,
      reason: r.reason,
    }))
}
