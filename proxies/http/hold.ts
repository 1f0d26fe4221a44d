// A held request: the approval flow (a once-grant bound to the exact request, `Prefer: wait=N`,
// 202 while pending) and the problem answers for a denial.

import { createHash } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import type { ApprovalOutcome, Decision } from '../types.js'
import type { Exchange } from './context.js'
import type { ReadBody } from './request.js'
import type { Problem } from './respond.js'

/** Longest wait `Prefer: wait=N` may ask for. */
const MAX_WAIT_SECONDS = 300

export function deniedProblem(decision: Extract<Decision, { effect: 'deny' }>): Problem {
  return { status: 403, title: 'Forbidden by policy', detail: decision.reason, rules: decision.rules }
}

/** `Prefer: wait=N` (RFC 7240): seconds the caller is willing to wait for an approval, or null. */
function preferWait(req: IncomingMessage): number | null {
  const p = req.headers.prefer
  if (typeof p !== 'string') return null
  const m = /(?:^|[,;\s])wait\s*=\s*"?(\d{1,6})"?/i.exec(p)
  if (!m) return null
  return Math.min(Number(m[1]), MAX_WAIT_SECONDS)
}

/** The approval flow for a held request; null: granted and allowed, go on. */
export async function holdFlow(
  x: Exchange,
  command: Record<string, unknown>,
  decision: Extract<Decision, { effect: 'hold' }>,
  body: ReadBody,
  signal: AbortSignal,
): Promise<{ problem: Problem } | 'answered' | { allowed: Extract<Decision, { effect: 'allow' }> }> {
  const { session, req, res } = x
  if (!session.requestApproval) {
    return {
      problem: { status: 403, title: 'Approval required', detail: `held: this needs an approval (${decision.approvers.join(', ')})` },
    }
  }
  if (!body.whole) {
    return {
      problem: {
        status: 413,
        title: 'Body too large for an approval',
        detail: `a held request's body must be at most ${x.plan.bodyLimit} bytes (the approval is bound to it)`,
      },
    }
  }
  const wait = preferWait(req)
  const display = `${x.method} ${x.path}${x.rawQuery ? `?${x.rawQuery}` : ''}`
  // A once-grant is bound to exactly this request: method, path, query, content type and body.
  const fingerprint = createHash('sha256')
    .update(JSON.stringify(['http.request', x.method, x.path, x.rawQuery, String(req.headers['content-type'] ?? '')]))
    .update(body.whole)
    .digest('hex')
  const waitSignal = wait === null ? signal : AbortSignal.any([signal, AbortSignal.timeout(wait * 1000)])
  let outcome: ApprovalOutcome
  try {
    outcome = await session.requestApproval({
      action: 'http.request',
      decision,
      display,
      fingerprint,
      reason: typeof req.headers['gatehouse-reason'] === 'string' ? req.headers['gatehouse-reason'].slice(0, 500) : null,
      wait: wait !== null && wait > 0,
      signal: waitSignal,
    })
  } catch {
    return { problem: { status: 503, title: 'Refused', detail: 'the approval request could not be recorded' } }
  }
  const pending = (request: string, approvers: readonly string[]): 'answered' => {
    // 202: filed, not run. The identical request sent again after approval runs once.
    const body = JSON.stringify({
      type: 'urn:gatehouse:problem:approval-pending',
      title: 'Approval required',
      status: 202,
      detail: `held for approval (${approvers.join(', ')}); send the identical request again once request ${request} is approved`,
      request,
      approvers,
      rules: decision.rules,
    })
    if (!res.headersSent) {
      res.writeHead(202, {
        'content-type': 'application/problem+json',
        'content-length': Buffer.byteLength(body),
        'gatehouse-approval-request': request,
        'retry-after': '5',
        'cache-control': 'no-store',
        ...(wait !== null ? { 'preference-applied': `wait=${wait}` } : {}),
      })
      res.end(body)
    }
    return 'answered'
  }
  switch (outcome.status) {
    case 'granted': {
      let again: Decision
      try {
        again = await session.decide('http.request', command, signal, { granted: true })
      } catch {
        return { problem: { status: 503, title: 'Refused', detail: 'the gateway could not decide this request' } }
      }
      if (again.effect === 'allow') return { allowed: again }
      if (again.effect === 'deny') return { problem: deniedProblem(again) }
      return { problem: { status: 403, title: 'Approval required', detail: 'the approval does not cover this request' } }
    }
    case 'pending':
      return pending(outcome.request, outcome.approvers)
    case 'aborted':
      return pending(outcome.request, decision.approvers)
    case 'denied':
      return {
        problem: {
          status: 403,
          title: 'Approval denied',
          detail: `request ${outcome.request} was denied by ${outcome.reviewer}${outcome.comment ? `: ${outcome.comment}` : ''}`,
          request: outcome.request,
        },
      }
    case 'timeout':
      return {
        problem: {
          status: 403,
          title: 'Approval timed out',
          detail: `approval request ${outcome.request} timed out after ${outcome.after_seconds}s without a decision`,
          request: outcome.request,
        },
      }
  }
}
