// An allowed request forwarded upstream: the response relayed from undici's dispatch handler into
// the caller's response through the body filters (decoders, the JSON masker, the secret scrubber),
// with backpressure both ways; then its result event and its recording.

import { isUtf8 } from 'node:buffer'
import { Readable } from 'node:stream'
import type { Dispatcher } from 'undici'
import type { Decision, SessionAuditEvent } from '../types.js'
import { JsonMaskError, jsonMaskPlan } from '../kit/index.js'
import type { BodyFilter, ConnectionPlan, Exchange, Liveness } from './context.js'
import {
  decoderChain,
  detectorsOf,
  dropForMasked,
  JsonBodyMasker,
  TextBodyMasker,
  textVerdict,
  MaskTally,
  maskVerdict,
  SseMasker,
  sessionMaskKeys,
} from './masking.js'
import { HOP_BY_HOP, type ReadBody, upstreamHeaders } from './request.js'
import { sendProblem } from './respond.js'
import { maskString, ScrubState } from './scrub.js'

/** Header values recordings redact. */
const REDACTED_IN_RECORDINGS = new Set(['authorization', 'proxy-authorization', 'cookie', 'set-cookie'])

/**
 * Header names are lower case here (node:http's `req.headers`, undici's response headers). The
 * headers themselves when nothing in them is redacted (most responses).
 */
function redactHeaders(headers: Readonly<Record<string, unknown>>, plan: ConnectionPlan): Readonly<Record<string, unknown>> {
  let secret = false
  for (const k in headers) {
    if (REDACTED_IN_RECORDINGS.has(k) || plan.inject.has(k)) {
      secret = true
      break
    }
  }
  if (!secret) return headers
  const out: Record<string, unknown> = {}
  for (const k in headers) out[k] = REDACTED_IN_RECORDINGS.has(k) || plan.inject.has(k) ? '[redacted]' : headers[k]
  return out
}

/** The start of a body for a recording: text when those bytes are UTF-8, base64 otherwise. */
function recordBody(into: Record<string, unknown>, b: Buffer, cap: number): Record<string, unknown> {
  if (b.length === 0) return into
  const part = b.length > cap ? b.subarray(0, cap) : b
  if (isUtf8(part)) into.body = part.toString('utf8')
  else into.body_base64 = part.toString('base64')
  if (b.length > cap) into.body_truncated = b.length
  return into
}

const NONE: Buffer[] = []

/**
 * Response bytes the caller's socket may hold (or a decoder, compressed) before the upstream is
 * paused: well above one socket read (64 KiB), so each resume drains what the upstream socket
 * buffered meanwhile. Memory per response stays about this plus one chunk.
 */
const RELAY_HIGH_WATER = 512 * 1024

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

/**
 * An allowed request forwarded upstream. Returns once the request is dispatched: the relay below
 * answers the caller, then writes the result event and the recording itself.
 */
export function forward(
  x: Exchange,
  body: ReadBody,
  live: Liveness,
  started: bigint,
  decision: Extract<Decision, { effect: 'allow' }>,
): void {
  const { ctx, session, plan, req, res } = x
  // The JSON paths this chain may not see in the response (null: the body passes as it is).
  let jsonPlan: ReturnType<typeof jsonMaskPlan>
  try {
    jsonPlan = jsonMaskPlan(decision.mask)
  } catch (err) {
    // A path the engine let through but the masker cannot compile: refuse, never pass unmasked.
    ctx.log.error({ err: String(err), session: session.id }, 'masking paths do not compile; request refused')
    sendProblem(res, { status: 503, title: 'Refused', detail: 'the gateway could not prepare the masking this response needs' })
    return
  }
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
  const relay = new Relay(x, body, live, started, jsonPlan, decision.mask)
  const headers = upstreamHeaders(req, plan, relay.tally !== null)
  if (upstreamBody === null && body.hasBody) headers['content-length'] = '0'
  try {
    plan.pool.dispatch({ method: x.method, path: x.rawQuery ? `${x.path}?${x.rawQuery}` : x.path, headers, body: upstreamBody }, relay)
  } catch (err) {
    relay.finish(err instanceof Error ? err : new Error(String(err)))
  }
}

/**
 * One response on its way to the caller: undici's dispatch handler, writing straight into the
 * caller's response (no stream objects in between, except zlib's when a compressed body is decoded
 * to be masked) through the filters, with backpressure both ways. Its methods, not per-request
 * closures: this runs for every request.
 */
class Relay implements Dispatcher.DispatchHandler {
  status = 502
  private bytesOut = 0
  private error: string | null = null
  private readonly capture: Buffer[] = []
  private kept = 0
  private respHeaders: Record<string, unknown> = {}
  private controller: Dispatcher.DispatchController | null = null
  private done = false
  /** Decoders of a compressed body that is masked (zlib streams: they decode as fast as they are read). */
  private chain: ReturnType<typeof decoderChain> | null = null
  readonly filters: BodyFilter[]
  /** Value detectors for text bodies (masking.yaml `detectors:`), when no JSON path applies. */
  private readonly detectors: ReturnType<typeof detectorsOf>
  readonly tally: MaskTally | null
  /** The body's maskers, to count what they masked even when the body is cut short. */
  private readonly maskers: (JsonBodyMasker | TextBodyMasker)[] = []
  /** Body bytes still to come by the upstream's Content-Length (-1: not known). */
  private remaining = -1
  /** The last chunk of an unfiltered body, sent with `end` (one pass through the response, not two). */
  private last: Buffer | null = null

  constructor(
    private readonly x: Exchange,
    private readonly body: ReadBody,
    private readonly live: Liveness,
    private readonly started: bigint,
    private readonly jsonPlan: ReturnType<typeof jsonMaskPlan>,
    mask: Extract<Decision, { effect: 'allow' }>['mask'],
  ) {
    // With JSON paths a text body is refused (the paths cannot reach into it): no detectors then.
    this.detectors = jsonPlan === null ? detectorsOf(mask) : []
    this.tally = jsonPlan !== null || this.detectors.length > 0 ? new MaskTally() : null
    this.filters = x.plan.needles.length > 0 ? [new ScrubState(x.plan.needles)] : []
    live.onGone = this
  }

  /** The caller went away (or its session ended): the upstream request stops too. */
  gone(): void {
    this.controller?.abort(new Error('the request was ended'))
    for (const z of this.chain?.all ?? []) z.destroy()
    this.finish(new Error('the request was ended'))
  }

  private fail(c: Dispatcher.DispatchController, err: unknown): void {
    if (!c.aborted) c.abort(err instanceof Error ? err : new Error(String(err)))
    for (const z of this.chain?.all ?? []) z.destroy()
    this.finish(err instanceof Error ? err : new Error(String(err)))
  }

  private send(chunks: readonly Buffer[]): void {
    for (const c of chunks) {
      if (c.length === 0) continue
      this.count(c)
      this.x.res.write(c)
    }
  }

  /** Counts a chunk going to the caller and keeps the start of the body for the recording. */
  private count(c: Buffer): void {
    this.bytesOut += c.length
    const room = this.x.plan.recordBytes - this.kept
    if (room > 0) {
      const keep = Math.min(c.length, room)
      this.capture.push(Buffer.from(c.subarray(0, keep)))
      this.kept += keep
    }
  }

  private filtered(chunk: Buffer | null): Buffer[] {
    const filters = this.filters
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

  /**
   * The upstream waits until `on` drains. Only past RELAY_HIGH_WATER: undici hands the whole of
   * its socket's buffer to the parser again at every resume, so pausing at every full write (one
   * upstream chunk per cycle, while the socket reads on) re-copied a growing backlog.
   */
  private pause(c: Dispatcher.DispatchController, on: NodeJS.EventEmitter): void {
    if (c.paused) return
    c.pause()
    on.once('drain', () => {
      if (!this.done) c.resume()
    })
  }

  /** The filters' last output, then the end of the response. */
  private endBody(c: Dispatcher.DispatchController): void {
    const res = this.x.res
    if (this.filters.length === 0 && this.chain === null) {
      const last = this.last
      this.last = null
      if (last === null) res.end()
      else res.end(last)
      this.finish(null)
      return
    }
    try {
      this.send(this.filtered(null))
    } catch (err) {
      this.fail(c, err)
      return
    }
    res.end()
    this.finish(null)
  }

  /** The decoded body through the filters to the caller; the decoders wait while the caller does. */
  private decode(c: Dispatcher.DispatchController, ch: ReturnType<typeof decoderChain>): ReturnType<typeof decoderChain> {
    const res = this.x.res
    for (const z of ch.all) z.on('error', (err: Error) => this.fail(c, new JsonMaskError(`the body does not decode (${err.message})`, 0)))
    ch.tail.on('data', (out: Buffer) => {
      if (this.done) return
      try {
        this.send(this.filtered(out))
      } catch (err) {
        this.fail(c, err)
        return
      }
      if (res.writableLength > RELAY_HIGH_WATER && !ch.tail.isPaused()) {
        ch.tail.pause()
        res.once('drain', () => ch.tail.resume())
      }
    })
    ch.tail.on('end', () => {
      if (!this.done) this.endBody(c)
    })
    return ch
  }

  /** The gateway's own 502 instead of the upstream's answer, which is not passed on. */
  private refuse(c: Dispatcher.DispatchController, error: string, detail: string): void {
    this.status = 502
    this.error = error
    sendProblem(this.x.res, { status: 502, title: 'Bad gateway', detail })
    c.abort(new Error(error))
    this.finish(null)
  }

  onRequestStart(c: Dispatcher.DispatchController): void {
    this.controller = c
    if (this.live.gone) c.abort(new Error('the request was ended'))
  }

  onResponseStart(c: Dispatcher.DispatchController, statusCode: number, upHeaders: Dispatcher.ResponseData['headers']): void {
    if (statusCode < 200) return
    const { x, jsonPlan, detectors, tally } = this
    this.status = statusCode
    const encoded = upHeaders['content-encoding']
    const verdict =
      jsonPlan !== null
        ? maskVerdict(x.method, statusCode, upHeaders)
        : detectors.length > 0
          ? textVerdict(x.method, statusCode, upHeaders)
          : null
    if (verdict !== null && !verdict.ok) {
      this.refuse(c, `response not masked: ${verdict.why}`, `the gateway must mask this response and cannot: ${verdict.why}`)
      return
    }
    if (verdict?.ok === true && tally !== null) {
      // Decoders, then the masker, before the scrubber: it reads the decoded body.
      const keys = sessionMaskKeys(x.ctx.stateDir, x.session)
      const stages: BodyFilter[] = []
      if (verdict.kind === 'text') {
        const m = new TextBodyMasker(detectors, verdict.charset ?? 'utf8', tally)
        this.maskers.push(m)
        stages.push(m)
      } else if (jsonPlan === null || verdict.kind === null) {
        // nothing to mask in this body
      } else if (verdict.kind === 'sse') stages.push(new SseMasker(jsonPlan, keys, tally))
      else {
        const m = new JsonBodyMasker(jsonPlan, keys, verdict.kind === 'sequence', tally)
        this.maskers.push(m)
        stages.push(m)
      }
      this.filters.unshift(...stages)
      if (verdict.codings.length > 0) this.chain = this.decode(c, decoderChain(verdict.codings))
    }
    if (verdict === null && x.plan.needles.length > 0 && encoded !== undefined && String(encoded).toLowerCase() !== 'identity') {
      // A compressed body cannot be scanned for the injected secret: refuse rather than pass it.
      this.refuse(
        c,
        'compressed response from an upstream with injected credentials',
        'the upstream answered with a compressed body the gateway cannot check',
      )
      return
    }
    const length = upHeaders['content-length']
    if (typeof length === 'string' && /^[0-9]{1,15}$/.test(length)) this.remaining = Number(length)
    const out = callerHeaders(upHeaders, x.plan.needles, verdict !== null)
    this.respHeaders = out
    try {
      x.res.writeHead(statusCode, out)
    } catch (err) {
      // A header node:http will not send (invalid characters): the answer is a 502.
      this.status = 502
      this.fail(c, err)
    }
  }

  onResponseData(c: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.done) return
    const chain = this.chain
    if (chain !== null) {
      chain.head.write(chunk)
      // Compressed bytes wait in the decoder until its output is read.
      if (chain.head.writableLength > RELAY_HIGH_WATER) this.pause(c, chain.head)
      return
    }
    const res = this.x.res
    if (this.filters.length === 0) {
      if (chunk.length === 0) return
      if (this.last !== null) {
        res.write(this.last)
        this.last = null
      }
      this.count(chunk)
      if (this.remaining >= 0) this.remaining -= chunk.length
      // The body's last bytes by its Content-Length: the end follows at once and takes them.
      if (this.remaining === 0) this.last = chunk
      else res.write(chunk)
    } else {
      try {
        this.send(this.filtered(chunk))
      } catch (err) {
        this.fail(c, err)
        return
      }
    }
    if (res.writableLength > RELAY_HIGH_WATER) this.pause(c, res)
  }

  onResponseEnd(c: Dispatcher.DispatchController): void {
    if (this.done) return
    if (this.chain !== null) {
      // The decoders' end ends the response (decode() above).
      this.chain.head.end()
      return
    }
    this.endBody(c)
  }

  onResponseError(_c: Dispatcher.DispatchController, err: Error): void {
    this.finish(err)
  }

  /** The answer is complete (err null) or failed: the result event and the recording. */
  finish(err: Error | null): void {
    if (this.done) return
    this.done = true
    const { x, live } = this
    const { ctx, session, plan, req, res } = x
    live.onGone = null
    if (err !== null) {
      this.error = live.gone ? 'the request was ended' : errorText(err)
      if (!res.headersSent && !live.gone) {
        sendProblem(res, { status: 502, title: 'Bad gateway', detail: 'the upstream could not be reached or failed' })
      } else res.destroy()
    }
    const duration = Number(process.hrtime.bigint() - this.started) / 1e6
    const error = this.error
    const body = this.body
    try {
      const result: SessionAuditEvent & Record<string, unknown> = {
        type: 'result',
        action: 'http.request',
        seq: x.seq,
        status: this.status,
        bytes: this.bytesOut,
        bytes_in: body.whole ? body.whole.length : null,
        duration_ms: Math.round(duration * 100) / 100,
      }
      if (this.tally !== null) result.masked = settled(this.maskers, this.tally)
      if (error) result.error = error
      session.auditLater(result)
    } catch (e) {
      ctx.log.error({ err: String(e), session: session.id }, 'cannot record a request result')
    }
    try {
      const capture = this.capture
      const captured = capture.length === 1 ? (capture[0] as Buffer) : Buffer.concat(capture)
      ctx.recordings.entry(session, 'http.exchange', {
        seq: x.seq,
        request: recordBody(
          { method: x.method, path: x.path, query: x.rawQuery, headers: redactHeaders(req.headers, plan) },
          body.head,
          plan.recordBytes,
        ),
        response: recordBody({ status: this.status, headers: redactHeaders(this.respHeaders, plan) }, captured, plan.recordBytes),
      })
    } catch {
      // Recording is best effort; the audit has the request.
    }
  }
}

function settled(maskers: readonly (JsonBodyMasker | TextBodyMasker)[], tally: MaskTally): ReturnType<MaskTally['list']> {
  for (const m of maskers) m.settle()
  return tally.list()
}

function errorText(err: unknown): string {
  if (err instanceof JsonMaskError) return `response cut: ${err.message}`
  const code = (err as { code?: unknown }).code
  return typeof code === 'string' ? code : 'upstream failure'
}
