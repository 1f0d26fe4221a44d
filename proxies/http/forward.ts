// An allowed request forwarded upstream: the response relayed from undici's dispatch handler into
// the caller's response through the body filters (decoders, the JSON masker, the secret scrubber),
// with backpressure both ways; then its result event and its recording.

import { isUtf8 } from 'node:buffer'
import { Readable } from 'node:stream'
import type { Dispatcher } from 'undici'
import type { Decision } from '../types.js'
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

/** Header names are lower case here (node:http's `req.headers`, undici's response headers). */
function redactHeaders(headers: Readonly<Record<string, unknown>>, plan: ConnectionPlan): Record<string, unknown> {
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

export async function forward(
  x: Exchange,
  body: ReadBody,
  live: Liveness,
  started: bigint,
  decision: Extract<Decision, { effect: 'allow' }>,
): Promise<void> {
  const { ctx, session, plan, req, res } = x
  // The JSON paths this chain may not see in the response (null: the body passes as it is).
  let jsonPlan: ReturnType<typeof jsonMaskPlan>
  try {
    jsonPlan = jsonMaskPlan(decision.mask)
  } catch (err) {
    // A path the engine let through but the masker cannot compile: refuse, never pass unmasked.
    ctx.log.error({ err: String(err), session: session.id }, 'masking paths do not compile; request refused')
    return sendProblem(res, { status: 503, title: 'Refused', detail: 'the gateway could not prepare the masking this response needs' })
  }
  // Value detectors for text bodies (masking.yaml `detectors:`), when no JSON path applies: with
  // paths, a text body is refused (the paths cannot reach into it).
  const detectors = jsonPlan === null ? detectorsOf(decision.mask) : []
  const masking = jsonPlan !== null || detectors.length > 0
  const tally = masking ? new MaskTally() : null
  // The body's masker, to count what it masked even when the body is cut short.
  const maskers: (JsonBodyMasker | TextBodyMasker)[] = []
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
  const headers = upstreamHeaders(req, plan, masking)
  if (upstreamBody === null && body.hasBody) headers['content-length'] = '0'
  let status = 502
  let bytesOut = 0
  let error: string | null = null
  const respCapture: Buffer[] = []
  let kept = 0
  let respHeaders: Record<string, unknown> = {}
  // The response streams straight from undici's handler into the caller's response (no stream
  // objects in between, except zlib's when a compressed body is decoded to be masked), through the
  // filters, with backpressure both ways.
  const filters: BodyFilter[] = plan.needles.length > 0 ? [new ScrubState(plan.needles)] : []
  const send = (chunks: Buffer[]): void => {
    for (const c of chunks) {
      if (c.length === 0) continue
      bytesOut += c.length
      if (kept < plan.recordBytes) {
        const keep = Math.min(c.length, plan.recordBytes - kept)
        respCapture.push(Buffer.from(c.subarray(0, keep)))
        kept += keep
      }
      res.write(c)
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
  // Decoders of a compressed body that is masked (zlib streams: they decode as fast as they are read).
  let chain: ReturnType<typeof decoderChain> | null = null
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
        for (const z of chain?.all ?? []) z.destroy()
        finish(new Error('the request was ended'))
      }
      const fail = (c: Dispatcher.DispatchController, err: Error): void => {
        if (!c.aborted) c.abort(err)
        for (const z of chain?.all ?? []) z.destroy()
        finish(err)
      }
      // The upstream waits until `on` drains. Only past RELAY_HIGH_WATER: undici hands the whole
      // of its socket's buffer to the parser again at every resume, so pausing at every full write
      // (one upstream chunk per cycle, while the socket reads on) re-copied a growing backlog.
      const pause = (c: Dispatcher.DispatchController, on: NodeJS.EventEmitter): void => {
        if (c.paused) return
        c.pause()
        on.once('drain', () => {
          if (!done) c.resume()
        })
      }
      // The filters' last output, then the end of the response.
      const endBody = (c: Dispatcher.DispatchController): void => {
        try {
          send(filtered(null))
        } catch (err) {
          fail(c, err instanceof Error ? err : new Error(String(err)))
          return
        }
        res.end()
        finish(null)
      }
      // The decoded body through the filters to the caller; the decoders wait while the caller does.
      const decode = (c: Dispatcher.DispatchController, ch: ReturnType<typeof decoderChain>): ReturnType<typeof decoderChain> => {
        for (const z of ch.all) z.on('error', (err: Error) => fail(c, new JsonMaskError(`the body does not decode (${err.message})`, 0)))
        ch.tail.on('data', (out: Buffer) => {
          if (done) return
          try {
            send(filtered(out))
          } catch (err) {
            fail(c, err instanceof Error ? err : new Error(String(err)))
            return
          }
          if (res.writableLength > RELAY_HIGH_WATER && !ch.tail.isPaused()) {
            ch.tail.pause()
            res.once('drain', () => ch.tail.resume())
          }
        })
        ch.tail.on('end', () => {
          if (!done) endBody(c)
        })
        return ch
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
          const verdict =
            jsonPlan !== null
              ? maskVerdict(x.method, statusCode, upHeaders)
              : detectors.length > 0
                ? textVerdict(x.method, statusCode, upHeaders)
                : null
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
          if (verdict?.ok === true && tally !== null) {
            // Decoders, then the masker, before the scrubber: it reads the decoded body.
            const keys = sessionMaskKeys(ctx.stateDir, session)
            const stages: BodyFilter[] = []
            if (verdict.kind === 'text') {
              const m = new TextBodyMasker(detectors, verdict.charset ?? 'utf8', tally)
              maskers.push(m)
              stages.push(m)
            } else if (jsonPlan === null || verdict.kind === null) {
              // nothing to mask in this body
            } else if (verdict.kind === 'sse') stages.push(new SseMasker(jsonPlan, keys, tally))
            else {
              const m = new JsonBodyMasker(jsonPlan, keys, verdict.kind === 'sequence', tally)
              maskers.push(m)
              stages.push(m)
            }
            filters.unshift(...stages)
            if (verdict.codings.length > 0) chain = decode(c, decoderChain(verdict.codings))
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
          if (chain !== null) {
            chain.head.write(chunk)
            // Compressed bytes wait in the decoder until its output is read.
            if (chain.head.writableLength > RELAY_HIGH_WATER) pause(c, chain.head)
            return
          }
          try {
            send(filtered(chunk))
          } catch (err) {
            fail(c, err instanceof Error ? err : new Error(String(err)))
            return
          }
          if (res.writableLength > RELAY_HIGH_WATER) pause(c, res)
        },
        onResponseEnd(c) {
          if (done) return
          if (chain !== null) {
            // The decoders' end ends the response (decode() below).
            chain.head.end()
            return
          }
          endBody(c)
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
      const captured = respCapture.length === 1 ? (respCapture[0] as Buffer) : Buffer.concat(respCapture)
      ctx.recordings.entry(session, 'http.exchange', {
        seq: x.seq,
        request: recordBody(
          { method: x.method, path: x.path, query: x.rawQuery, headers: redactHeaders(req.headers, plan) },
          body.head,
          plan.recordBytes,
        ),
        response: recordBody({ status, headers: redactHeaders(respHeaders, plan) }, captured, plan.recordBytes),
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
