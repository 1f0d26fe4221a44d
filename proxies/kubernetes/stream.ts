// exec, attach and port-forward: upgraded connections. The request is decided like any other
// (`kube.request`, with `command.argv` for exec and `ports` for port-forward, both from the query
// the API server reads), audited, and only then sent to the API server. A WebSocket answer (101)
// is relayed byte for byte and its output channels (stdout, stderr) recorded as asciicast v2.
// SPDY cannot be recorded: its request is still forwarded so that the API server's refusal (a pod
// without a node) reaches kubectl, but an accepted SPDY stream is never handed to the caller.
// Any other answer of the API server is passed back as it is.

import type { IncomingMessage } from 'node:http'
import { isIP, type Socket } from 'node:net'
import { connect as tlsConnect, rootCertificates } from 'node:tls'
import type { Decision, TerminalRecording } from '../types.js'
import { commandFor, type StreamHost, upstreamHeaders } from './command.js'
import { type StatusAnswer, statusBody } from './status.js'

const STREAM_SUBRESOURCES = new Set(['exec', 'attach', 'portforward'])
const MAX_RESPONSE_HEAD = 64 * 1024
const MAX_ERROR_BODY = 1024 * 1024

function writeStatus(socket: Socket, s: StatusAnswer, headers: Record<string, string> = {}): void {
  const body = statusBody(s)
  const extra = Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('')
  const reason = s.code === 403 ? 'Forbidden' : s.code === 401 ? 'Unauthorized' : s.code === 400 ? 'Bad Request' : 'Error'
  if (!socket.destroyed) {
    socket.end(
      `HTTP/1.1 ${s.code} ${reason}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}connection: close\r\n\r\n${body}`,
    )
  }
}

function upgradeKind(req: IncomingMessage): 'websocket' | 'spdy' | null {
  const u = String(req.headers.upgrade ?? '').toLowerCase()
  if (u === 'websocket') return 'websocket'
  if (u.startsWith('spdy/')) return 'spdy'
  return null
}

export async function handleUpgrade(server: StreamHost, req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
  socket.on('error', () => socket.destroy())
  try {
    await upgrade(server, req, socket, head)
  } catch (err) {
    server.ctx.log.error({ err: String(err) }, 'kubernetes stream failed')
    writeStatus(socket, { code: 500, message: 'gatehouse: the gateway failed on this stream' })
  }
}

async function upgrade(server: StreamHost, req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
  const a = await server.admit(req)
  if (!a.ok) return writeStatus(socket, a.answer, a.headers)
  const kind = upgradeKind(req)
  if (kind === null || !STREAM_SUBRESOURCES.has(a.info.subresource) || !a.info.resource_request) {
    return writeStatus(socket, { code: 400, message: 'gatehouse: only exec, attach and portforward are streamed (WebSocket)' })
  }
  const { session, plan } = a.slot
  const command: Record<string, unknown> = { ...commandFor(a.info, a.query), stream_protocol: kind }
  const abort = new AbortController()
  socket.once('close', () => abort.abort())
  let decision: Decision
  try {
    decision = await session.decide('kube.request', command, abort.signal)
  } catch {
    return writeStatus(socket, { code: 503, message: 'gatehouse: the gateway could not decide this request' })
  }
  const argv = Array.isArray((command.command as { argv?: unknown } | undefined)?.argv) ? (command.command as { argv: string[] }).argv : []
  try {
    await session.audit({
      type: 'statement',
      action: 'kube.request',
      seq: a.seq,
      method: req.method ?? 'GET',
      verb: a.info.verb,
      group: a.info.group,
      version: a.info.version,
      resource: a.info.resource,
      subresource: a.info.subresource,
      namespace: a.info.namespace,
      name: a.info.name,
      path: a.info.path,
      stream_protocol: kind,
      ...(a.info.subresource === 'exec' ? { argv } : {}),
      ...(a.info.subresource === 'portforward' ? { ports: command.ports } : {}),
      decision: decision.effect,
      rules: decision.rules,
      policy_version: decision.policy,
    })
  } catch {
    return writeStatus(socket, { code: 503, message: 'gatehouse: the gateway could not record this request' })
  }
  if (decision.effect === 'deny') {
    return writeStatus(socket, {
      code: 403,
      message: `gatehouse: ${decision.reason}`,
      details: { causes: decision.rules.map((r) => ({ reason: 'GatehousePolicy', field: r })) },
    })
  }
  if (decision.effect === 'hold') {
    const refused = await server.hold(req, a, command, decision, Buffer.alloc(0), abort.signal)
    if (refused !== null) return writeStatus(socket, refused.answer, refused.headers)
  }

  // The upstream connection: the same dialer and TLS verification as the request pool.
  const spec = server.upstreamFor(session)
  const raw = await server.ctx.dial(spec.address)
  const up: Socket = spec.tls
    ? await new Promise<Socket>((resolve, reject) => {
        const t = tlsConnect({
          socket: raw,
          servername: isIP(spec.servername) ? undefined : spec.servername,
          host: spec.address.host,
          ca: spec.ca ?? [...rootCertificates],
          cert: spec.cert,
          key: spec.key,
          ALPNProtocols: ['http/1.1'],
          rejectUnauthorized: true,
        })
        t.once('secureConnect', () => resolve(t))
        t.once('error', reject)
      })
    : raw
  up.on('error', () => up.destroy())
  socket.once('close', () => up.destroy())

  const headers = upstreamHeaders(req, session, plan, false)
  headers.connection = 'Upgrade'
  headers.upgrade = String(req.headers.upgrade)
  headers.host = new URL(spec.origin).host
  let text = `${req.method ?? 'GET'} ${a.info.path}${a.rawQuery ? `?${a.rawQuery}` : ''} HTTP/1.1\r\n`
  for (const [k, v] of Object.entries(headers)) for (const one of Array.isArray(v) ? v : [v]) text += `${k}: ${one}\r\n`
  up.write(`${text}\r\n`)
  if (head.length > 0) up.write(head)

  const answer = await readResponseHead(up)
  if (answer === null) return writeStatus(socket, { code: 502, message: 'gatehouse: the API server did not answer the stream request' })
  const finish = (status: number, error?: string): void => {
    session.auditLater({ type: 'result', action: 'kube.request', seq: a.seq, status, ...(error ? { error } : {}) })
  }
  if (answer.status !== 101) {
    // The API server refused (a pod without a node, a missing container…): its answer goes back as is.
    socket.write(answer.head)
    let left = answer.contentLength ?? MAX_ERROR_BODY
    const rest = answer.rest.subarray(0, left)
    socket.write(rest)
    left -= rest.length
    if (left <= 0) {
      finish(answer.status)
      socket.end()
      up.destroy()
      return
    }
    // The API server closes after its answer: end (not destroy) the client's socket, so what was
    // written still reaches it.
    up.on('data', (c: Buffer) => {
      const part = c.subarray(0, left)
      socket.write(part)
      left -= part.length
      if (left <= 0) up.destroy()
    })
    up.once('close', () => {
      finish(answer.status)
      socket.end()
    })
    up.resume()
    return
  }
  if (kind === 'spdy') {
    up.destroy()
    finish(101, 'spdy stream refused')
    return writeStatus(socket, {
      code: 400,
      message:
        'gatehouse: exec, attach and port-forward over SPDY are not supported (they cannot be recorded); use kubectl v1.30 or later, which speaks WebSocket',
    })
  }
  const recording =
    a.info.subresource === 'portforward'
      ? null
      : server.ctx.recordings.terminal(session, {
          cols: 80,
          rows: 24,
          title: `${session.connection.name}: ${a.info.namespace}/${a.info.name} ${argv.join(' ')}`.trim(),
        })
  if (recording && argv.length > 0) recording.marker(argv.join(' '))
  socket.write(answer.head)
  const frames = new FrameReader(recording)
  if (answer.rest.length > 0) {
    frames.push(answer.rest)
    socket.write(answer.rest)
  }
  up.once('close', () => socket.destroy())
  up.on('data', (c: Buffer) => frames.push(c))
  up.pipe(socket)
  socket.pipe(up)
  socket.resume()
  up.once('close', () => {
    recording?.close()
    finish(101)
  })
}

interface ResponseHead {
  readonly status: number
  readonly head: Buffer
  readonly rest: Buffer
  readonly contentLength: number | null
}

function readResponseHead(up: Socket): Promise<ResponseHead | null> {
  return new Promise((resolve) => {
    let buf = Buffer.alloc(0)
    const onData = (c: Buffer): void => {
      buf = Buffer.concat([buf, c])
      const end = buf.indexOf('\r\n\r\n')
      if (end < 0) {
        if (buf.length > MAX_RESPONSE_HEAD) done(null)
        return
      }
      const head = buf.subarray(0, end + 4)
      const lines = head.toString('latin1').split('\r\n')
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')
      let contentLength: number | null = null
      for (const l of lines) {
        const h = /^content-length:\s*(\d+)\s*$/i.exec(l)
        if (h) contentLength = Number(h[1])
      }
      done(m ? { status: Number(m[1]), head, rest: buf.subarray(end + 4), contentLength } : null)
    }
    const done = (r: ResponseHead | null): void => {
      up.off('data', onData)
      up.off('close', onClose)
      up.pause()
      resolve(r)
    }
    const onClose = (): void => done(null)
    up.on('data', onData)
    up.once('close', onClose)
  })
}

/**
 * Reads the API server's WebSocket frames (unmasked, server to client) for the recording: binary
 * messages whose first byte is the channel (1 stdout, 2 stderr, 3 error). The relay itself never
 * depends on this parse.
 */
class FrameReader {
  private buf: Buffer = Buffer.alloc(0)
  private message: Buffer[] = []
  private failed = false
  constructor(private readonly recording: TerminalRecording | null) {}

  push(c: Buffer): void {
    if (!this.recording || this.failed) return
    this.buf = this.buf.length === 0 ? c : Buffer.concat([this.buf, c])
    for (;;) {
      if (this.buf.length < 2) return
      const b0 = this.buf[0] as number
      const b1 = this.buf[1] as number
      let len = b1 & 0x7f
      let off = 2
      if (len === 126) {
        if (this.buf.length < 4) return
        len = this.buf.readUInt16BE(2)
        off = 4
      } else if (len === 127) {
        if (this.buf.length < 10) return
        const big = this.buf.readBigUInt64BE(2)
        if (big > 16n * 1024n * 1024n) {
          this.failed = true
          return
        }
        len = Number(big)
        off = 10
      }
      if (b1 & 0x80) off += 4
      if (this.buf.length < off + len) return
      const payload = this.buf.subarray(off, off + len)
      this.buf = this.buf.subarray(off + len)
      const opcode = b0 & 0x0f
      if (opcode === 0x2 || opcode === 0x0) this.message.push(payload)
      if ((b0 & 0x80) !== 0 && (opcode === 0x2 || opcode === 0x0)) {
        const m = Buffer.concat(this.message)
        this.message = []
        const channel = m[0]
        if ((channel === 1 || channel === 2 || channel === 3) && m.length > 1) this.recording.output(m.subarray(1))
      }
    }
  }
}
