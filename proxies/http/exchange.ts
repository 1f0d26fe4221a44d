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
import { sendProblem } from './respond.js'
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
  let decision: Decision
  try {
    decision = body.hasBody ? plan.fast.decideNow('http.request', command()) : decideShape(x, command)
  } catch (err) {
    ctx.log.error({ err: String(err), session: session.id }, 'policy evaluation failed; request refused')
    return sendProblem(res, { status: 503, title: 'Refused', detail: 'the gateway could not decide this request' })
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
    // Durable before anything reaches the upstream: written with the other statements of this
    // event-loop turn in one write(2), in the OS (fsync batched) or on disk (fsync always) before
    // the request goes on.
    await plan.fast.auditGrouped(statement)
  } catch (err) {
    return recorded(x, err, decision, command, body, live, started)
  }
  return recorded(x, null, decision, command, body, live, started)
}

/**
 * The statement is recorded (err null) or could not be: refuse, or apply the decision. Errors end
 * here, as onRequest's would.
 */
function recorded(
  x: Exchange,
  err: unknown,
  decision: Decision,
  command: () => Record<string, unknown>,
  body: ReadBody,
  live: Liveness,
  started: bigint,
): Promise<void> | undefined {
  const { ctx, session, res } = x
  if (err !== null) {
    ctx.log.error({ err: String(err), session: session.id }, 'audit append failed; request refused')
    sendProblem(res, { status: 503, title: 'Refused', detail: 'the gateway could not record this request' })
    return
  }
  try {
    if (decision.effect === 'deny') sendProblem(res, deniedProblem(decision))
    else if (decision.effect === 'hold' || x.upgrade)
      return afterHold(x, decision, command, body, live, started).catch((e: unknown) => failed(x, e))
    else forward(x, body, live, started, decision)
  } catch (e) {
    failed(x, e)
  }
  return
}

async function afterHold(
  x: Exchange,
  decision: Exclude<Decision, { effect: 'deny' }>,
  command: () => Record<string, unknown>,
  body: ReadBody,
  live: Liveness,
  started: bigint,
): Promise<void> {
  let allowed: Extract<Decision, { effect: 'allow' }>
  if (decision.effect === 'hold') {
    const verdict = await holdFlow(x, command(), decision, body, live.signal)
    if (verdict === 'answered') return
    if ('problem' in verdict) return sendProblem(x.res, verdict.problem)
    allowed = verdict.allowed
  } else allowed = decision
  if (x.upgrade) await relayWebSocket(x, x.upgrade, started, allowed)
  else forward(x, body, live, started, allowed)
}

/** What onRequest does with a request that failed in the gateway. */
function failed(x: Exchange, err: unknown): void {
  x.ctx.log.error({ err: String(err), session: x.session.id }, 'request failed')
  if (!x.res.headersSent) sendProblem(x.res, { status: 500, title: 'Bad request', detail: 'the gateway failed on this request' })
  else x.res.destroy()
}
