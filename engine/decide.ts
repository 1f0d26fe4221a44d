// The decision seam. Every command of every protocol is decided here, once per hop of the chain,
// with the input document of DESIGN.md ("The policy contract"). Until a policy bundle is loaded
// (the Rego/WASM issue), the built-in policy allows any authenticated principal, and names itself
// as the policy version so audit events show that no bundle decided.

import type { Decision, DecisionInput, DecisionRequest, DecisionTime } from './types.js'

export const BUILTIN_POLICY_VERSION = 'builtin:allow-authenticated'

const WEEKDAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'] as const

export function decisionTime(now: Date): DecisionTime {
  return {
    rfc3339: `${now.toISOString().slice(0, 19)}Z`,
    unix: Math.floor(now.getTime() / 1000),
    weekday: WEEKDAYS[now.getUTCDay()] ?? 'Sun',
    hour: now.getUTCHours(),
    minute: now.getUTCMinutes(),
  }
}

/** One input document per hop, root first. */
export function buildInputs(req: DecisionRequest, now: Date = new Date()): DecisionInput[] {
  const chain = req.identity.chain.map((p) => ({ id: p.id, kind: p.kind, groups: p.groups }))
  const time = decisionTime(now)
  const approval = req.approval ?? { granted: false }
  return req.identity.chain.map((principal) => ({
    principal,
    chain,
    connection: req.connection,
    action: req.action,
    command: req.command,
    approval,
    time,
  }))
}

export interface DecisionEngine {
  decide(req: DecisionRequest, signal?: AbortSignal): Promise<Decision>
  readonly version: string
}

const ALLOW: Decision = { effect: 'allow', rules: [], mask: [], policy: BUILTIN_POLICY_VERSION }

/** Allows every authenticated principal; an empty chain (never produced by identify) is denied. */
export class BuiltinEngine implements DecisionEngine {
  readonly version = BUILTIN_POLICY_VERSION
  decide(req: DecisionRequest): Promise<Decision> {
    if (req.identity.chain.length === 0) {
      return Promise.resolve({
        effect: 'deny',
        rules: ['authenticated'],
        reason: 'no authenticated principal',
        reasons: [{ rule: 'authenticated', reason: 'no authenticated principal', hop: '' }],
        policy: BUILTIN_POLICY_VERSION,
      })
    }
    return Promise.resolve(ALLOW)
  }
}
