// An allowed WebSocket upgrade: the upstream's handshake first (through the connection's dialler,
// TLS verified, injected headers sent), then the client's, then messages relayed both ways with
// the `ws` package on each leg (frames, fragmentation, UTF-8 of text messages, control frames and
// close codes are its work; nothing is parsed here by hand).
//
// Masking: when the decision carries `json_paths` obligations, every upstream text message is one
// JSON document, masked whole (maskJson) before it is sent on. A text message that is not valid
// JSON, or a binary message, cannot be masked: the connection is closed on both sides with 1008
// (policy violation) and a reason, and the message is never sent. permessage-deflate is not
// negotiated on either leg (the client's offer is not accepted, none is made upstream), so no
// compressed frame has to be trusted; a frame compressed without that agreement is a protocol
// error `ws` refuses. Where only value detectors apply (no JSON path), upstream text messages are
// masked by them and binary messages pass, as non-text bodies do.
//
// Messages are recorded (`http.websocket` entries, masked as the caller got them, each cut at
// record_body_bytes) up to RECORD_CAP bytes per connection; the `result` event when the connection
// ends counts them all and names the masked paths. The session ending (revocation, kill, expiry)
// destroys the client's socket (server.ts), which closes the upstream.

import type { Socket } from 'node:net'
import WebSocket, { WebSocketServer } from 'ws'
import { detect, JsonMaskError, type JsonMaskPlan, jsonMaskPlan, maskJson } from '../kit/index.js'
import type { Decision } from '../types.js'
import type { Exchange } from './context.js'
import { detectorsOf, MaskTally, sessionMaskKeys } from './masking.js'
import { upstreamHeaders } from './request.js'
import { sendProblem } from './respond.js'
import { dialUpstream } from './upstream.js'

/** Client sockets handed to `ws`: the refusal path must not close them. */
export const UPGRADED = new WeakSet<Socket>()

/** Largest message either side may send (a masked message is held whole while it is masked). */
export const MAX_MESSAGE = 16 * 1024 * 1024
/** Bytes of messages recorded per connection; later messages are only counted. */
export const RECORD_CAP = 1024 * 1024
/** Bytes queued to one side before the other side's reading is paused. */
const HIGH_WATER = 1024 * 1024

/** Close codes an endpoint may send (RFC 6455 §7.4); others are replaced by a bare close. */
function sendable(code: number): boolean {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999)
}

function closeWith(ws: WebSocket, code: number, reason: string): void {
  if (ws.readyState === WebSocket.CLOSED || ws.readyState === WebSocket.CLOSING) return
  if (ws.readyState === WebSocket.CONNECTING) {
    ws.terminate()
    return
  }
  // A close reason is at most 123 bytes.
  const r = Buffer.from(reason)
    .subarray(0, 123)
    .toString('utf8')
    .replace(/\uFFFD+$/, '')
  if (sendable(code)) ws.close(code, r)
  else ws.close()
}

export async function relayWebSocket(
  x: Exchange,
  upgrade: NonNullable<Exchange['upgrade']>,
  started: bigint,
  decision: Extract<Decision, { effect: 'allow' }>,
): Promise<void> {
  const { ctx, session, plan, req, res } = x
  const { socket, head } = upgrade
  let jsonPlan: JsonMaskPlan | null
  try {
    jsonPlan = jsonMaskPlan(decision.mask)
  } catch (err) {
    ctx.log.error({ err: String(err), session: session.id }, 'masking paths do not compile; upgrade refused')
    return sendProblem(res, { status: 503, title: 'Refused', detail: 'the gateway could not prepare the masking this connection needs' })
  }
  // Only detectors apply: upstream text messages are masked by them (binary ones pass, as
  // non-text bodies do).
  const detectors = jsonPlan === null ? detectorsOf(decision.mask) : []
  const tally = jsonPlan === null && detectors.length === 0 ? null : new MaskTally()
  const keys = jsonPlan === null ? null : sessionMaskKeys(ctx.stateDir, session)

  // The upstream leg. The client's own handshake fields are the client's; `ws` makes its own.
  const headers = upstreamHeaders(req, plan, jsonPlan !== null)
  for (const k of Object.keys(headers)) if (k.startsWith('sec-websocket-')) delete headers[k]
  const offered = String(req.headers['sec-websocket-protocol'] ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
  const target = `${plan.spec.tls ? 'wss' : 'ws'}://${new URL(plan.spec.origin).host}${x.path}${x.rawQuery ? `?${x.rawQuery}` : ''}`
  let upSocket: Socket
  try {
    upSocket = await dialUpstream(ctx, plan.spec)
  } catch {
    return sendProblem(res, { status: 502, title: 'Bad gateway', detail: 'the upstream could not be reached' })
  }
  if (socket.destroyed) {
    upSocket.destroy()
    return
  }
  const up = new WebSocket(target, offered, {
    createConnection: () => upSocket,
    headers: headers as Record<string, string>,
    perMessageDeflate: false,
    maxPayload: MAX_MESSAGE,
    handshakeTimeout: 30_000,
    followRedirects: false,
  })
  const upOpen = await new Promise<{ ok: true } | { ok: false; detail: string }>((resolve) => {
    // Nothing from the upstream is read until the client's leg is open.
    up.once('open', () => {
      up.pause()
      resolve({ ok: true })
    })
    up.once('unexpected-response', (_r, answer) => {
      resolve({ ok: false, detail: `the upstream answered the upgrade with ${answer.statusCode ?? 'no status'}` })
      answer.resume()
      up.terminate()
    })
    up.once('error', () => resolve({ ok: false, detail: 'the upstream refused the WebSocket handshake' }))
    socket.once('close', () => resolve({ ok: false, detail: 'the client went away' }))
  })
  if (!upOpen.ok) {
    up.terminate()
    upSocket.destroy()
    session.auditLater({ type: 'result', action: 'http.request', seq: x.seq, status: 502, upgrade: 'websocket', error: upOpen.detail })
    return sendProblem(res, { status: 502, title: 'Bad gateway', detail: upOpen.detail })
  }
  // Messages `ws` had already parsed when the upstream was paused wait for the client's leg.
  const early: [WebSocket.RawData, boolean][] = []
  const queue = (raw: WebSocket.RawData, binary: boolean): void => {
    early.push([raw, binary])
  }
  up.on('message', queue)

  const wss = new WebSocketServer({
    noServer: true,
    clientTracking: false,
    perMessageDeflate: false,
    maxPayload: MAX_MESSAGE,
    handleProtocols: () => up.protocol || false,
  })
  res.detachSocket(socket)
  UPGRADED.add(socket)
  const client = await new Promise<WebSocket | null>((resolve) => {
    const gone = (): void => resolve(null)
    socket.once('close', gone)
    wss.handleUpgrade(req, socket, head, (ws) => {
      socket.off('close', gone)
      resolve(ws)
    })
  })
  if (client === null) {
    up.terminate()
    return
  }

  const counts = { messages_in: 0, messages_out: 0, bytes_in: 0, bytes_out: 0 }
  let recorded = 0
  let error: string | null = null
  const record = (direction: 'in' | 'out', data: Buffer, binary: boolean): void => {
    if (recorded >= RECORD_CAP) return
    const part = data.subarray(0, Math.min(plan.recordBytes, RECORD_CAP - recorded))
    recorded += part.length
    try {
      ctx.recordings.entry(session, 'http.websocket', {
        seq: x.seq,
        direction,
        type: binary ? 'binary' : 'text',
        bytes: data.length,
        ...(binary ? { body_base64: part.toString('base64') } : { body: part.toString('utf8') }),
        ...(part.length < data.length ? { body_truncated: data.length } : {}),
      })
    } catch {
      // Recording is best effort; the audit has the connection.
    }
  }
  const refuse = (why: string): void => {
    error = `message not masked: ${why}`
    closeWith(client, 1008, `gatehouse: ${why}`)
    closeWith(up, 1008, 'gatehouse: a message could not be masked')
  }
  // One side's reading waits while the other side's queue is long.
  const relay = (from: WebSocket, to: WebSocket, data: Buffer, binary: boolean): void => {
    if (to.readyState !== WebSocket.OPEN) return
    to.send(data, { binary }, () => {
      if (to.bufferedAmount < HIGH_WATER && from.isPaused) from.resume()
    })
    if (to.bufferedAmount >= HIGH_WATER) from.pause()
  }

  const fromUpstream = (raw: WebSocket.RawData, binary: boolean): void => {
    let data = toBuffer(raw)
    if (detectors.length > 0 && tally !== null && !binary) {
      const text = data.toString('utf8')
      const hits = detect(text, detectors)
      if (hits.length > 0) {
        let out = ''
        let p = 0
        for (const h of hits) {
          out += `${text.slice(p, h.start)}****`
          p = h.end
          tally.add([{ path: '', rule: `detector:${h.detector}`, strategy: 'redact', count: 1 }])
        }
        data = Buffer.from(out + text.slice(p))
      }
    }
    if (jsonPlan !== null && keys !== null && tally !== null) {
      if (binary) {
        refuse('a binary message cannot be masked')
        return
      }
      try {
        const r = maskJson(jsonPlan, keys, data)
        tally.add(r.masked)
        data = r.body
      } catch (err) {
        // Whatever failed, the message is not sent (a throw here would end the gateway's process).
        refuse(err instanceof JsonMaskError ? 'a text message is not JSON and cannot be masked' : 'a message could not be masked')
        return
      }
    }
    counts.messages_out++
    counts.bytes_out += data.length
    record('out', data, binary)
    relay(up, client, data, binary)
  }
  up.off('message', queue)
  up.on('message', fromUpstream)
  for (const [raw, binary] of early) fromUpstream(raw, binary)
  client.on('message', (raw: WebSocket.RawData, binary: boolean) => {
    const data = toBuffer(raw)
    counts.messages_in++
    counts.bytes_in += data.length
    record('in', data, binary)
    relay(client, up, data, binary)
  })

  await new Promise<void>((resolve) => {
    let closeCode: number | null = null
    let left = 2
    const closed = (): void => {
      if (--left > 0) return
      session.auditLater({
        type: 'result',
        action: 'http.request',
        seq: x.seq,
        status: 101,
        upgrade: 'websocket',
        ...counts,
        close_code: closeCode,
        duration_ms: Math.round(Number(process.hrtime.bigint() - started) / 1e4) / 100,
        ...(tally !== null ? { masked: tally.list() } : {}),
        ...(error ? { error } : {}),
      })
      resolve()
    }
    client.once('close', (code: number, reason: Buffer) => {
      closeCode ??= code
      closeWith(up, code, reason.toString('utf8'))
      closed()
    })
    up.once('close', (code: number, reason: Buffer) => {
      closeCode ??= code
      closeWith(client, code, reason.toString('utf8'))
      closed()
    })
    client.on('error', () => {
      client.terminate()
      up.terminate()
    })
    up.on('error', () => {
      error ??= 'the upstream connection failed'
      up.terminate()
      client.terminate()
    })
    up.resume()
  })
}

function toBuffer(raw: WebSocket.RawData): Buffer {
  if (Buffer.isBuffer(raw)) return raw
  if (Array.isArray(raw)) return Buffer.concat(raw)
  return Buffer.from(raw)
}
