// Shared plumbing for proxies whose held commands wait for an approval without a protocol-level
// notice (the SSH proxy): files the request through ProxySession.requestApproval, waits, and on a
// grant decides the command again with `{granted: true}` (everything but the hold still applies).
// The PostgreSQL proxy has its own richer version (proxies/postgres/hold.ts).

import { createHash } from 'node:crypto'
import { isGatehouseError } from '../../engine/errors.js'
import type { Command, Decision, ProxySession } from '../types.js'

export type HeldVerdict =
  | { readonly ok: true; readonly request: string }
  | {
      readonly ok: false
      readonly message: string
      /** The approval request, when one was filed. */
      readonly request?: string
      /** Filed and not yet decided (`wait: false`). */
      readonly pending?: boolean
      /** The reviewer who denied it. */
      readonly reviewer?: string
    }

export async function awaitApproval(
  session: ProxySession,
  action: string,
  command: Command,
  decision: Extract<Decision, { effect: 'hold' }>,
  text: string,
  onRequested?: (request: string, approvers: readonly string[]) => void,
  /** false: file the request and answer at once (a caller that polls instead of waiting). */
  wait = true,
): Promise<HeldVerdict> {
  if (!session.requestApproval) return { ok: false, message: `held: this needs an approval (${decision.approvers.join(', ')})` }
  let outcome: Awaited<ReturnType<NonNullable<ProxySession['requestApproval']>>>
  try {
    outcome = await session.requestApproval({
      action,
      decision,
      display: text,
      // The exact command line and what the plugin parsed from it.
      fingerprint: createHash('sha256')
        .update(JSON.stringify([action, text, command]))
        .digest('hex'),
      wait,
      ...(onRequested ? { onRequested } : {}),
    })
  } catch (err) {
    if (isGatehouseError(err) && err.code === 'GH_ERR_DENIED') return { ok: false, message: err.publicMessage.replace(/^gatehouse: /, '') }
    return { ok: false, message: 'refused: the approval request could not be recorded' }
  }
  switch (outcome.status) {
    case 'granted': {
      let again: Decision
      try {
        again = await session.decide(action, command, undefined, { granted: true })
      } catch {
        return { ok: false, message: 'refused: the gateway could not decide this command' }
      }
      if (again.effect === 'allow') return { ok: true, request: outcome.request }
      return { ok: false, message: again.effect === 'deny' ? `denied: ${again.reason}` : 'held: the approval does not cover this command' }
    }
    case 'denied':
      return {
        ok: false,
        message: `request ${outcome.request} was denied by ${outcome.reviewer}${outcome.comment ? `: ${outcome.comment}` : ''}`,
        request: outcome.request,
        reviewer: outcome.reviewer,
      }
    case 'timeout':
      return { ok: false, message: `approval request ${outcome.request} timed out after ${outcome.after_seconds}s without a decision` }
    case 'pending':
      return { ok: false, message: `approval required (request ${outcome.request})`, request: outcome.request, pending: true }
    case 'aborted':
      return { ok: false, message: `stopped waiting for approval request ${outcome.request}` }
  }
}
