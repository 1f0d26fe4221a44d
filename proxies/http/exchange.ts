// One request through the gateway: read the body up to the cap, decide `http.request` for the
// whole chain, audit it durably, apply the decision (403, the approval flow, or forward), stream
// the response back with injected secrets masked, and record the result.

import { createHash } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { Readable } from 'node:stream'
import type { Dispatcher, Pool } from 'undici'
import type { ApprovalOutcome, Decision, FastPathSession, PluginContext, ProxySession, SessionAuditEvent } from '../types.js'
import { JsonMaskError } from '../kit/index.js'
import {
  dropForMasked,
  JsonBodyMasker,
  MASKED_REQUEST_DROP,
  MaskTally,
  maskVerdict,
  responsePlan,
  SseMasker,
  sessionMaskKeys,
} from './masking.js'
import { type Problem, sendProblem } from './respond.js'
import { maskString, ScrubState } from './scrub.js'
import { parseQuery } from './target.js'

export type HttpContext = PluginContext<'gateway' | 'recordings' | 'fastPath'>

/**
 * A synchronous transform of a response body on its way to the caller (the secret scrubber; a
 * masker): `write` returns what may be sent so far, `end` the rest. Either may throw, which ends
 * the response (it is never sent unfiltered).
 */
export interface BodyFilter {
  write(chunk: Buffer): Buffer[]
  end(): Buffer[]
}

/** A decision kept for requests of the same shape while the engine's epoch holds. */
interface Reused {
  readonly epoch: object
  readonly decision: Decision
}

/** Shapes remembered per session; beyond this the map starts over (a client that never repeats). */
const MAX_REUSED = 256

/** Per-connection settings the pipeline needs, parsed once per session. */
export interface ConnectionPlan {
  readonly pool: Pool
  /** The session's synchronous decide and audit (the same answers as the session's own). */
  readonly fast: FastPathSession
  /** Decisions by request shape (method, path, query, headers; no body), see decideShape. */
  readonly reuse: Map<string, Reused>
  /** Header name (lower case) → value to send upstream, resolved secrets. */
  readonly inject: ReadonlyMap<string, string>
  /** Byte strings masked in responses (the injected values in their echo forms). */
  readonly needles: readonly Buffer[]
  /** JSON bodies up to this size are parsed for policy; larger ones are `body_opaque`. */
  readonly bodyLimit: number
  /** Bytes of each body kept in recordings. */
  readonly recordBytes: number
}

export interface Exchange {
  readonly ctx: HttpContext
  readonly session: ProxySession
  readonly plan: ConnectionPlan
  readonly seq: number
  readonly method: string
  readonly path: string
  readonly rawQuery: string
  /** The Host that named the connection (host-name routing); null for `/c/<connection>/`. */
  readonly host: string | null
  readonly req: IncomingMessage
  readonly res: ServerResponse
}

/** Headers that describe one hop, never forwarded either way (RFC 9110 §7.6.1). */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'host',
  'authorization',
  'proxy-authorization',
  'prefer',
  // The gateway answers `Expect: 100-continue` to the caller itself (node:http); the upstream
  // request is sent with its whole body.
  'expect',
])
/** Request headers policy never sees (credentials of the caller or for the caller). */
const HIDDEN_FROM_POLICY = new Set(['authorization', 'proxy-authorization', 'cookie'])
/** Header values recordings redact. */
const REDACTED_IN_RECORDINGS = new Set(['authorization', 'proxy-authorization', 'cookie', 'set-cookie'])
/** Longest wait `Prefer: wait=N` may ask for. */
const MAX_WAIT_SECONDS = 300

function isJson(contentType: string | undefined): boolean {
  if (!contentType) return false
  const t = (contentType.split(';')[0] ?? '').trim().toLowerCase()
  return t === 'application/json' || (t.startsWith('application/') && t.endsWith('+json'))
}

interface ReadBody {
  /** The whole body when it ended within the cap. */
  readonly whole: Buffer | null
  /** What was read so far (all of it when `whole`). */
  readonly head: Buffer
  readonly hasBody: boolean
}

/** Reads the body up to `limit` bytes; a longer body stays in the request to be streamed on. */
async function readHead(req: IncomingMessage, limit: number): Promise<ReadBody> {
  const cl = req.headers['content-length']
  const chunked = req.headers['transfer-encoding'] !== undefined
  if (!chunked && (cl === undefined || cl === '0')) return { whole: Buffer.alloc(0), head: Buffer.alloc(0), hasBody: false }
  if (!chunked && Number(cl) > limit) return { whole: null, head: Buffer.alloc(0), hasBody: true }
  const chunks: Buffer[] = []
  let size = 0
  return new Promise((resolve, reject) => {
    const onData = (c: Buffer): void => {
      chunks.push(c)
      size += c.length
      if (size > limit) {
        cleanup()
        req.pause()
        resolve({ whole: null, head: Buffer.concat(chunks), hasBody: true })
      }
    }
    const onEnd = (): void => {
      cleanup()
      const b = Buffer.concat(chunks)
      resolve({ whole: b, head: b, hasBody: true })
    }
    const onError = (err: Error): void => {
      cleanup()
      reject(err)
    }
    const cleanup = (): void => {
      req.off('data', onData)
      req.off('end', onEnd)
      req.off('error', onError)
      req.off('aborted', onAborted)
    }
    const onAborted = (): void => onError(new Error('the client went away'))
    req.on('data', onData)
    req.once('end', onEnd)
    req.once('error', onError)
    req.once('aborted', onAborted)
  })
}

/** The headers policy sees: lower-case names, credentials left out, repeated ones joined. */
function policyHeaders(req: IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(req.headers)) {
    if (v === undefined || HIDDEN_FROM_POLICY.has(k)) continue
    out[k] = Array.isArray(v) ? v.join(', ') : v
  }
  return out
}

/** The headers sent upstream: the caller's (hop-by-hop and credentials removed) and the injected ones. */
/** `masked`: the response will be masked (masking.ts says which headers that drops and why). */
function upstreamHeaders(req: IncomingMessage, plan: ConnectionPlan, masked: boolean): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  const raw = req.rawHeaders
  const connectionTokens = new Set(
    String(req.headers.connection ?? '')
      .toLowerCase()
      .split(',')
      .map((s) => s.trim()),
  )
  for (let i = 0; i < raw.length; i += 2) {
    const name = (raw[i] as string).toLowerCase()
    if (HOP_BY_HOP.has(name) || connectionTokens.has(name) || plan.inject.has(name)) continue
    if (plan.needles.length > 0 && name === 'accept-encoding') continue
    if (masked && MASKED_REQUEST_DROP.has(name)) continue
    const prev = out[name]
    const value = raw[i + 1] as string
    out[name] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value]
  }
  // Responses are scanned for injected secrets: they must come uncompressed.
  if (plan.needles.length > 0 || masked) out['accept-encoding'] = 'identity'
  for (const [k, v] of plan.inject) out[k] = v
  return out
}

function redactHeaders(headers: Record<string, unknown>, plan: ConnectionPlan): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(headers)) {
    const lower = k.toLowerCase()
    out[lower] = REDACTED_IN_RECORDINGS.has(lower) || plan.inject.has(lower) ? '[redacted]' : v
  }
  return out
}

function bodyForRecording(b: Buffer, cap: number): { body?: string; body_base64?: string; body_truncated?: number } {
  if (b.length === 0) return {}
  const part = b.subarray(0, cap)
  const truncated = b.length > cap ? { body_truncated: b.length } : {}
  const text = part.toString('utf8')
  return Buffer.from(text, 'utf8').equals(part) ? { body: text, ...truncated } : { body_base64: part.toString('base64'), ...truncated }
}

function deniedProblem(decision: Extract<Decision, { effect: 'deny' }>): Problem {
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

/**
 * The shape of a bodiless request: everything its decision input holds besides the session's own
 * (identity, connection) and the time (the epoch's second): method, normalised path, raw query and
 * every header policy sees, as sent. Equal shapes have equal `command`s.
 */
function shapeKey(x: Exchange): string {
  let k = `${x.method}\n${x.path}\n${x.rawQuery}`
  const raw = x.req.rawHeaders
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string
    if (HIDDEN_FROM_POLICY.has(name.toLowerCase())) continue
    k += `\n${name}\0${raw[i + 1] as string}`
  }
  return k
}

/**
 * decideNow, reusing the decision of an earlier request of the same shape in this session while
 * the engine's epoch (policy bundle and second) is unchanged: the two inputs are then equal. Only
 * answers are kept (no failures), and no holds: a held request goes through the approval flow with
 * a fresh decision every time.
 */
function decideShape(x: Exchange, command: () => Record<string, unknown>): Decision {
  const { fast, reuse } = x.plan
  const epoch = fast.decisionEpoch()
  const key = epoch === null ? '' : shapeKey(x)
  if (epoch !== null) {
    const hit = reuse.get(key)
    if (hit !== undefined && hit.epoch === epoch) return hit.decision
  }
  const d = fast.decideNow('http.request', command())
  if (
    epoch !== null &&
    d.effect !== 'hold' &&
    d.policy !== 'error' &&
    !d.rules.includes('policy-error') &&
    fast.decisionEpoch() === epoch
  ) {
    if (reuse.size >= MAX_REUSED) reuse.clear()
    reuse.set(key, { epoch, decision: d })
  }
  return d
}

/**
 * Whether the caller is still there: an AbortSignal made only when something needs one (most
 * requests finish without), and a hook the forwarding step sets to stop the upstream request.
 */
class Liveness {
  gone = false
  private controller: AbortController | null = null
  onGone: (() => void) | null = null

  constructor(res: ServerResponse) {
    // The caller went away (or the session ended) before the answer was complete: stop the work.
    res.once('close', () => {
      if (res.writableFinished) return
      this.gone = true
      this.controller?.abort()
      this.onGone?.()
    })
  }

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController()
      if (this.gone) this.controller.abort()
    }
    return this.controller.signal
  }
}

export async function runExchange(x: Exchange): Promise<void> {
  const { ctx, session, plan, req, res } = x
  const started = process.hrtime.bigint()
  const live = new Liveness(res)
  const query = parseQuery(x.rawQuery)
  let body: ReadBody
  try {
    body = await readHead(req, plan.bodyLimit)
  } catch {
    res.destroy()
    return
  }
  // Built only when a decision is evaluated (a reused one needs none).
  let built: Record<string, unknown> | null = null
  const command = (): Record<string, unknown> => {
    if (built !== null) return built
    const c: Record<string, unknown> = { method: x.method, path: x.path, query, headers: policyHeaders(req) }
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
  await forward(x, body, live, started, allowed)
}

/** The approval flow for a held request; null: granted and allowed, go on. */
async function holdFlow(
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

const NONE: Buffer[] = []

/** Response headers the caller never gets from the upstream. */
function callerHeaders(
  up: Dispatcher.ResponseData['headers'],
  needles: readonly Buffer[],
  masked: boolean,
): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  for (const k in up) {
    const v = up[k]
    if (v === undefined || HOP_BY_HOP.has(k) || k === 'proxy-authenticate') continue
    if (masked && dropForMasked(k)) continue
    out[k] = needles.length === 0 ? v : Array.isArray(v) ? v.map((s) => maskString(s, needles)) : maskString(v, needles)
  }
  return out
}

async function forward(
  x: Exchange,
  body: ReadBody,
  live: Liveness,
  started: bigint,
  decision: Extract<Decision, { effect: 'allow' }>,
): Promise<void> {
  const { ctx, session, plan, req, res } = x
  // The JSON paths this chain may not see in the response (null: the body passes as it is).
  let jsonPlan: ReturnType<typeof responsePlan>
  try {
    jsonPlan = responsePlan(decision.mask)
  } catch (err) {
    // A path the engine let through but the masker cannot compile: refuse, never pass unmasked.
    ctx.log.error({ err: String(err), session: session.id }, 'masking paths do not compile; request refused')
    return sendProblem(res, { status: 503, title: 'Refused', detail: 'the gateway could not prepare the masking this response needs' })
  }
  const tally = jsonPlan === null ? null : new MaskTally()
  // The body's masker, to count what it masked even when the body is cut short.
  const maskers: JsonBodyMasker[] = []
  // The whole body when it was read; otherwise what was read and the rest of the stream.
  let upstreamBody: Buffer | Readable | null = null
  if (body.whole) upstreamBody = body.whole.length > 0 ? body.whole : null
  else {
    const head = body.head
    upstreamBody = Readable.from(
      (async function* () {
        if (head.length > 0) yield head
        for await (const c of req) yield c as Buffer
      })(),
    )
  }
  const headers = upstreamHeaders(req, plan, jsonPlan !== null)
  if (upstreamBody === null && body.hasBody) headers['content-length'] = '0'
  let status = 502
  let bytesOut = 0
  let error: string | null = null
  const respCapture: Buffer[] = []
  let kept = 0
  let respHeaders: Record<string, unknown> = {}
  // The response streams straight from undici's handler into the caller's response (no stream
  // objects in between), through the filters, with backpressure both ways.
  const filters: BodyFilter[] = plan.needles.length > 0 ? [new ScrubState(plan.needles)] : []
  const send = (chunks: Buffer[], controller: Dispatcher.DispatchController | null): void => {
    for (const c of chunks) {
      if (c.length === 0) continue
      bytesOut += c.length
      if (kept < plan.recordBytes) {
        const keep = Math.min(c.length, plan.recordBytes - kept)
        respCapture.push(Buffer.from(c.subarray(0, keep)))
        kept += keep
      }
      if (!res.write(c) && controller && !controller.paused) {
        controller.pause()
        res.once('drain', () => controller.resume())
      }
    }
  }
  const filtered = (chunk: Buffer | null): Buffer[] => {
    if (filters.length === 0) return chunk === null ? NONE : [chunk]
    let parts: Buffer[] = chunk === null ? [] : [chunk]
    for (const f of filters) {
      const next: Buffer[] = []
      for (const p of parts) next.push(...f.write(p))
      if (chunk === null) next.push(...f.end())
      parts = next
    }
    return parts
  }
  try {
    await new Promise<void>((resolve, reject) => {
      let controller: Dispatcher.DispatchController | null = null
      let done = false
      const finish = (err: Error | null): void => {
        if (done) return
        done = true
        live.onGone = null
        if (err) reject(err)
        else resolve()
      }
      live.onGone = () => {
        controller?.abort(new Error('the request was ended'))
        finish(new Error('the request was ended'))
      }
      const fail = (c: Dispatcher.DispatchController, err: Error): void => {
        if (!c.aborted) c.abort(err)
        finish(err)
      }
      const handler: Dispatcher.DispatchHandler = {
        onRequestStart(c) {
          controller = c
          if (live.gone) c.abort(new Error('the request was ended'))
        },
        onResponseStart(c, statusCode, upHeaders) {
          if (statusCode < 200) return
          status = statusCode
          const encoded = upHeaders['content-encoding']
          const verdict = jsonPlan === null ? null : maskVerdict(x.method, statusCode, upHeaders)
          if (verdict !== null && !verdict.ok) {
            status = 502
            error = `response not masked: ${verdict.why}`
            sendProblem(res, {
              status: 502,
              title: 'Bad gateway',
              detail: `the gateway must mask this response and cannot: ${verdict.why}`,
            })
            c.abort(new Error(error))
            finish(null)
            return
          }
          if (verdict?.ok === true && jsonPlan !== null && tally !== null) {
            // Decoders, then the masker, before the scrubber: it reads the decoded body.
            const keys = sessionMaskKeys(ctx.stateDir, session)
            const stages: BodyFilter[] = [...verdict.decoders]
            if (verdict.kind === 'sse') stages.push(new SseMasker(jsonPlan, keys, tally))
            else if (verdict.kind !== null) {
              const m = new JsonBodyMasker(jsonPlan, keys, verdict.kind === 'sequence', tally)
              maskers.push(m)
              stages.push(m)
            }
            filters.unshift(...stages)
          }
          if (verdict === null && plan.needles.length > 0 && encoded !== undefined && String(encoded).toLowerCase() !== 'identity') {
            // A compressed body cannot be scanned for the injected secret: refuse rather than pass it.
            status = 502
            error = 'compressed response from an upstream with injected credentials'
            sendProblem(res, {
              status: 502,
              title: 'Bad gateway',
              detail: 'the upstream answered with a compressed body the gateway cannot check',
            })
            c.abort(new Error(error))
            finish(null)
            return
          }
          const out = callerHeaders(upHeaders, plan.needles, verdict !== null)
          respHeaders = out
          try {
            res.writeHead(statusCode, out)
          } catch (err) {
            // A header node:http will not send (invalid characters): the answer is a 502.
            status = 502
            fail(c, err instanceof Error ? err : new Error(String(err)))
          }
        },
        onResponseData(c, chunk) {
          if (done) return
          try {
            send(filtered(chunk), c)
          } catch (err) {
            fail(c, err instanceof Error ? err : new Error(String(err)))
          }
        },
        onResponseEnd(c) {
          if (done) return
          try {
            send(filtered(null), null)
          } catch (err) {
            fail(c, err instanceof Error ? err : new Error(String(err)))
            return
          }
          res.end()
          finish(null)
        },
        onResponseError(_c, err) {
          finish(err)
        },
      }
      plan.pool.dispatch({ method: x.method, path: `${x.path}${x.rawQuery ? `?${x.rawQuery}` : ''}`, headers, body: upstreamBody }, handler)
    })
  } catch (err) {
    error = live.gone ? 'the request was ended' : errorText(err)
    if (!res.headersSent && !live.gone) {
      sendProblem(res, { status: 502, title: 'Bad gateway', detail: 'the upstream could not be reached or failed' })
    } else res.destroy()
  } finally {
    const duration = Number(process.hrtime.bigint() - started) / 1e6
    try {
      session.auditLater({
        type: 'result',
        action: 'http.request',
        seq: x.seq,
        status,
        bytes: bytesOut,
        bytes_in: body.whole ? body.whole.length : null,
        duration_ms: Math.round(duration * 100) / 100,
        ...(tally !== null ? { masked: settled(maskers, tally) } : {}),
        ...(error ? { error } : {}),
      })
    } catch (err) {
      ctx.log.error({ err: String(err), session: session.id }, 'cannot record a request result')
    }
    try {
      ctx.recordings.entry(session, 'http.exchange', {
        seq: x.seq,
        request: {
          method: x.method,
          path: x.path,
          query: x.rawQuery,
          headers: redactHeaders(req.headers, plan),
          ...bodyForRecording(body.head, plan.recordBytes),
        },
        response: { status, headers: redactHeaders(respHeaders, plan), ...bodyForRecording(Buffer.concat(respCapture), plan.recordBytes) },
      })
    } catch {
      // Recording is best effort; the audit has the request.
    }
  }
}

function settled(maskers: readonly JsonBodyMasker[], tally: MaskTally): ReturnType<MaskTally['list']> {
  for (const m of maskers) m.settle()
  return tally.list()
}

function errorText(err: unknown): string {
  if (err instanceof JsonMaskError) return `response cut: ${err.message}`
  const code = (err as { code?: unknown }).code
  return typeof code === 'string' ? code : 'upstream failure'
}
