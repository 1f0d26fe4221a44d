// The request side of an exchange: reading the body up to the cap, the headers policy sees and the
// headers sent upstream, and the decision reused for requests of the same shape.

import type { IncomingMessage } from 'node:http'
import { connectionTokens, HOP_BY_HOP_HEADERS } from '../kit/index.js'
import type { Decision } from '../types.js'
import type { ConnectionPlan, Exchange } from './context.js'
import { MASKED_REQUEST_DROP } from './masking.js'

/** Shapes remembered per session; beyond this the map starts over (a client that never repeats). */
const MAX_REUSED = 256

/**
 * Request headers not forwarded: the hop's own and the caller's credentials, and `Prefer`, which
 * is the gateway's (`Prefer: wait=N` waits for an approval).
 */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([...HOP_BY_HOP_HEADERS, 'prefer'])
/** Request headers policy never sees (credentials of the caller or for the caller). */
const HIDDEN_FROM_POLICY = new Set(['authorization', 'proxy-authorization', 'cookie'])

export function isJson(contentType: string | undefined): boolean {
  if (!contentType) return false
  const t = (contentType.split(';')[0] ?? '').trim().toLowerCase()
  return t === 'application/json' || (t.startsWith('application/') && t.endsWith('+json'))
}

export interface ReadBody {
  /** The whole body when it ended within the cap. */
  readonly whole: Buffer | null
  /** What was read so far (all of it when `whole`). */
  readonly head: Buffer
  readonly hasBody: boolean
}

const EMPTY = Buffer.alloc(0)
/** A request without a body (most GETs): shared, nothing to read. */
const NO_BODY: ReadBody = Object.freeze({ whole: EMPTY, head: EMPTY, hasBody: false })

/**
 * Reads the body up to `limit` bytes; a longer body stays in the request to be streamed on. A
 * request without a body is answered at once (no promise to wait for).
 */
export function readHead(req: IncomingMessage, limit: number): ReadBody | Promise<ReadBody> {
  const cl = req.headers['content-length']
  const chunked = req.headers['transfer-encoding'] !== undefined
  if (!chunked && (cl === undefined || cl === '0')) return NO_BODY
  if (!chunked && Number(cl) > limit) return { whole: null, head: EMPTY, hasBody: true }
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
export function policyHeaders(req: IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(req.headers)) {
    if (v === undefined || HIDDEN_FROM_POLICY.has(k)) continue
    out[k] = Array.isArray(v) ? v.join(', ') : v
  }
  return out
}

/** The headers sent upstream: the caller's (hop-by-hop and credentials removed) and the injected ones. */
/** `masked`: the response will be masked (masking.ts says which headers that drops and why). */
export function upstreamHeaders(req: IncomingMessage, plan: ConnectionPlan, masked: boolean): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  const raw = req.rawHeaders
  const hop = connectionTokens(req)
  for (let i = 0; i < raw.length; i += 2) {
    const name = (raw[i] as string).toLowerCase()
    if (HOP_BY_HOP.has(name) || hop.has(name) || plan.inject.has(name)) continue
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
export function decideShape(x: Exchange, command: () => Record<string, unknown>): Decision {
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
