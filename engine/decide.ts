// The decision seam. Every command of every protocol is decided here, once per hop of the chain,
// with the input document of docs/policies.md ("The policy contract"). The engine behind the seam is the
// Rego/WASM policy engine (policy/engine.ts); it assembles this same document as JSON text on its
// hot path, and `buildInputs` is the readable definition of it (`policy eval`, the tests).

import type { ConnectionRef, Decision, DecisionInput, DecisionRequest, DecisionTime, Identity, PossibleMasks } from './types.js'

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
  /** The same decision, returned directly: the engine evaluates synchronously, and the proxies'
   * per-statement path saves the promise round trips. */
  decideNow(req: DecisionRequest, signal?: AbortSignal): Decision
  /**
   * An object that stays the same exactly while a decision depends on nothing but the request
   * *without* its statement text (`command.sql`): the same bundle, within the same second (the
   * input's `time`). Null when that is not known (the bundle reads the text). A caller may reuse a
   * decision for a request equal in everything but the text while this returns the same object.
   */
  decisionEpoch?(): object | null
  /** The masking that may come with decisions of `actions` for this identity on this connection;
   * an engine without it is taken to mask anything anywhere. */
  possibleMasks?(identity: Identity, connection: ConnectionRef, actions: readonly string[]): PossibleMasks
  readonly version: string
}
