// One request through the gateway: read the body up to the cap, decide `http.request` for the
// whole chain, audit it durably, apply the decision (403, the approval flow, or forward), stream
// the response back with injected secrets masked, and record the result. The steps live beside
// it: request.ts (body, headers, decision reuse), hold.ts (approvals), forward.ts (upstream and
// response), context.ts (what an exchange carries).

import type { Decision, SessionAuditEvent } from '../types.js'
import { type Exchange, Liveness } from './context.js'
import { forward } from './forward.js'
import { deniedProblem, holdFlow } from './hold.js'
import { decideShape, isJson, policyHeaders, type ReadBody, readHead } from './request.js'
import { type Problem, sendProblem } from './respond.js'
import { parseQuery } from './target.js'
import { relayWebSocket } from './websocket.js'

export type { BodyFilter, ConnectionPlan, Exchange, HttpContext } from './context.js'

export async function runExchange(x: Exchange): Promise<void> {
  const { ctx, session, plan, req, res } = x
  const started = process.hrtime.bigint()
  const live = new Liveness(res)
  const query = parseQuery(x.rawQuery)
  let body: ReadBody
  try {
    const read = readHead(req, plan.bodyLimit)
    body = read instanceof Promise ? await read : read
  } catch {
    res.destroy()
    return
  }
  // Built only when a decision is evaluated (a reused one needs none).
  let built: Record<string, unknown> | null = null
  const command = (): Record<string, unknown> => {
    if (built !== null) return built
    const c: Record<string, unknown> = { method: x.method, path: x.path, query, headers: policyHeaders(req) }
    if (x.upgrade) c.upgrade = 'websocket'
    if (body.hasBody) {
      let parsed: unknown
      let ok = false
      if (body.whole && isJson(req.headers['content-type'])) {
        try {
          parsed = JSON.parse(body.whole.toString('utf8'))
          ok = true
        } catch {
          ok = false
        }
      }
      if (ok) c.body = parsed
      else c.body_opaque = true
    }
    built = c
    return c
  }
  const fail = (p: Problem): void => sendProblem(res, p)
  let decision: Decision
  try {
    decision = body.hasBody ? plan.fast.decideNow('http.request', command()) : decideShape(x, command)
  } catch (err) {
    ctx.log.error({ err: String(err), session: session.id }, 'policy evaluation failed; request refused')
    return fail({ status: 503, title: 'Refused', detail: 'the gateway could not decide this request' })
  }
  const statement: SessionAuditEvent & Record<string, unknown> = {
    type: 'statement',
    action: 'http.request',
    seq: x.seq,
    method: x.method,
    path: x.path,
    query,
  }
  if (x.host !== null) statement.host = x.host
  if (x.upgrade) statement.upgrade = 'websocket'
  if (body.hasBody && command().body_opaque) statement.body_opaque = true
  statement.decision = decision.effect
  statement.rules = decision.rules
  statement.policy_version = decision.policy
  try {
    // Durable before anything reaches the upstream: in the OS at once (fsync batched), or on disk
    // with the next group commit (fsync always).
    if (!plan.fast.auditNow(statement)) await session.audit(statement)
  } catch (err) {
    ctx.log.error({ err: String(err), session: session.id }, 'audit append failed; request refused')
    return fail({ status: 503, title: 'Refused', detail: 'the gateway could not record this request' })
  }
  if (decision.effect === 'deny') return fail(deniedProblem(decision))
  let allowed: Extract<Decision, { effect: 'allow' }>
  if (decision.effect === 'hold') {
    const verdict = await holdFlow(x, command(), decision, body, live.signal)
    if (verdict === 'answered') return
    if ('problem' in verdict) return fail(verdict.problem)
    allowed = verdict.allowed
  } else allowed = decision
  if (x.upgrade) await relayWebSocket(x, x.upgrade, started, allowed)
  else await forward(x, body, live, started, allowed)
}
