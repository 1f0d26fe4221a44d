// The Kubernetes API listener: kubectl (or any client-go program) talks to
// `https://<gateway>/c/<connection>` with its Gatehouse token (from `gatehouse kube-credential`).
// Each request is parsed as the API server parses it, decided as `kube.request` for the whole
// chain, audited durably, then refused with a `Status`, filed for approval, or forwarded with the
// gateway's own cluster credential and, where configured, impersonation headers naming the caller.
// Answers about masked resources are rewritten; streams (exec, attach, port-forward) are in
// stream.ts. One client connection keeps one session per (token, connection); the engine ending a
// session (revocation, kill, expiry) closes the client connection, and with it any open watch.

import { createHash } from 'node:crypto'
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http'
import { createServer as createNetServer, isIP, type Server as NetServer, type Socket } from 'node:net'
import type { Dispatcher, Pool } from 'undici'
import { createPool, framingProblem, originTarget, route, upstreamSpec } from '../http/public.js'
import { HOP_BY_HOP_HEADERS, JsonMasker, type JsonMaskPlan, jsonMaskPlan, loadMaskingKey, sniffTls } from '../kit/index.js'
import type { Address, ApprovalOutcome, Decision, ProxySession } from '../types.js'
import { readWriteBody } from './body.js'
import { isKubeProtobuf } from './protobuf.js'
import { KubePathError, type KubeRequestInfo, parseKubeRequest } from './request.js'
import {
  type Admission,
  type Admitted,
  callerImpersonates,
  bearer,
  commandFor,
  deniedStatus,
  type KubeContext,
  type KubePlan,
  type SessionSlot,
  type StreamHost,
  upstreamHeaders,
} from './command.js'
import { sendStatus, type StatusAnswer } from './status.js'
import { handleUpgrade } from './stream.js'

const MAX_SESSIONS_PER_SOCKET = 8
/** Request bodies are read whole (the API server's own limit is 3 MiB): every write is judged on its object. */
export const DEFAULT_BODY_LIMIT = 3 * 1024 * 1024
export const DEFAULT_RECORD_BYTES = 4096

interface SocketState {
  readonly sessions: Map<string, Promise<SessionSlot>>
  seq: number
}

/** The object as the audit keeps it: what it is and where, not its labels and annotations. */
function auditedObject(o: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(o as Record<string, unknown>)) if (k !== 'labels' && k !== 'annotations') out[k] = v
  return out
}

/** Reads a whole request body, up to `limit` bytes; null when it is longer. */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer | null> {
  const cl = req.headers['content-length']
  if (req.headers['transfer-encoding'] === undefined && (cl === undefined || cl === '0')) return Promise.resolve(Buffer.alloc(0))
  if (cl !== undefined && Number(cl) > limit) return Promise.resolve(null)
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    req.on('data', (c: Buffer) => {
      size += c.length
      if (size > limit) {
        req.pause()
        resolve(null)
        return
      }
      chunks.push(c)
    })
    req.once('end', () => resolve(Buffer.concat(chunks)))
    req.once('error', reject)
    req.once('aborted', () => reject(new Error('the client went away')))
  })
}

export class KubeProxyServer implements StreamHost {
  private readonly http: HttpServer
  private readonly net: NetServer
  private readonly sockets = new Set<Socket>()
  private readonly pools = new Map<string, Pool>()
  private stopping = false

  constructor(readonly ctx: KubeContext) {
    this.http = createHttpServer(
      {
        insecureHTTPParser: false,
        requireHostHeader: true,
        joinDuplicateHeaders: false,
        maxHeaderSize: 16 * 1024,
        headersTimeout: 30_000,
        requestTimeout: 0,
        keepAliveTimeout: 5_000,
      },
      (req, res) => void this.onRequest(req, res),
    )
    this.http.on('clientError', (_err: NodeJS.ErrnoException, socket: Socket) => {
      if (socket.writable && !socket.destroyed) socket.end('HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n')
      else socket.destroy()
    })
    this.http.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => void handleUpgrade(this, req, socket, head))
    this.http.on('connect', (_req: IncomingMessage, socket: Socket) => {
      socket.end('HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\nconnection: close\r\n\r\n')
    })
    this.net = createNetServer({ noDelay: true }, (socket) => this.onConnection(socket))
  }

  async listen(at: Address): Promise<Address> {
    await new Promise<void>((resolve, reject) => {
      this.net.once('error', reject)
      this.net.listen(at.port, at.host, () => {
        this.net.off('error', reject)
        resolve()
      })
    })
    const a = this.net.address()
    return a && typeof a === 'object' ? { host: a.address, port: a.port } : at
  }

  async stop(reason: string): Promise<void> {
    this.stopping = true
    this.net.close()
    for (const s of this.sockets) s.destroy()
    this.ctx.log.info({ reason }, 'kubernetes proxy stopped')
    await Promise.allSettled([...this.pools.values()].map((p) => p.close()))
  }

  private onConnection(socket: Socket): void {
    if (this.stopping) {
      socket.destroy()
      return
    }
    this.sockets.add(socket)
    socket.once('close', () => this.sockets.delete(socket))
    socket.on('error', () => socket.destroy())
    sniffTls(socket, this.http, {
      secureContext: this.ctx.tls.secureContext,
      allowPlaintext: this.ctx.tls.allowPlaintext,
      plaintextRefusal: 'HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n',
    })
  }

  /** Routing, login and parsing shared by plain requests and upgrades; a StatusAnswer when refused. */
  async admit(req: IncomingMessage): Promise<Admission> {
    const framing = framingProblem(req)
    if (framing) return { ok: false, answer: { code: 400, message: `gatehouse: ${framing}` } }
    const target = originTarget(req)
    if (target === null || target.includes('#'))
      return { ok: false, answer: { code: 400, message: 'gatehouse: the request target must be a path on this gateway' } }
    const routed = route(target)
    if (!routed)
      return {
        ok: false,
        answer: { code: 404, message: 'gatehouse: requests go to /c/<connection>/…; use the kubeconfig from `gatehouse kubeconfig`' },
      }
    if (callerImpersonates(req)) {
      return {
        ok: false,
        answer: { code: 403, message: 'gatehouse: impersonation headers are set by the gateway, not the caller (--as is refused)' },
      }
    }
    const token = bearer(req)
    if (token === null) {
      return {
        ok: false,
        answer: { code: 401, message: 'gatehouse: a Gatehouse token is required (use the kubeconfig from `gatehouse kubeconfig`)' },
        headers: { 'www-authenticate': 'Bearer realm="gatehouse"' },
      }
    }
    const slot = await this.sessionFor(req, token, routed.connection)
    if (!slot.ok) return { ok: false, answer: { code: slot.status, message: `gatehouse: ${slot.detail}` } }
    let info: KubeRequestInfo
    let query: URLSearchParams
    try {
      info = parseKubeRequest(req.method ?? 'GET', routed.rawPath, routed.rawQuery)
      query = new URLSearchParams(routed.rawQuery)
    } catch (err) {
      if (err instanceof KubePathError) return { ok: false, answer: { code: 400, message: `gatehouse: ${err.message}` } }
      throw err
    }
    const st = this.state(req)
    return { ok: true, slot, info, query, rawQuery: routed.rawQuery, seq: ++st.seq }
  }

  private async onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const admitted = await this.admit(req)
    if (!admitted.ok) return sendStatus(res, admitted.answer, admitted.headers)
    await this.exchange(req, res, admitted).catch((err: unknown) => {
      this.ctx.log.error({ err: String(err), session: admitted.slot.session.id }, 'kubernetes request failed')
      if (!res.headersSent) sendStatus(res, { code: 500, message: 'gatehouse: the gateway failed on this request' })
      else res.destroy()
    })
  }

  private async exchange(req: IncomingMessage, res: ServerResponse, a: Admitted): Promise<void> {
    const { session, plan } = a.slot
    const started = process.hrtime.bigint()
    const abort = new AbortController()
    res.once('close', () => abort.abort())
    let body: Buffer | null
    try {
      body = await readBody(req, plan.bodyLimit)
    } catch {
      res.destroy()
      return
    }
    if (body === null) {
      return sendStatus(res, { code: 413, message: `gatehouse: request bodies are limited to ${plan.bodyLimit} bytes` })
    }
    const command = commandFor(a.info, a.query)
    let bodyFormat: string | null = null
    if (body.length > 0) {
      // The same facts from JSON, YAML or kubectl's protobuf: what policy sees does not depend on the encoding.
      const read = readWriteBody(body, String(req.headers['content-type'] ?? ''), (req.method ?? 'GET').toUpperCase() !== 'PATCH')
      if (read.ok) {
        bodyFormat = read.facts.format
        command.secret_refs = read.facts.secret_refs
        if (read.facts.object) command.object = read.facts.object
      } else if (read.opaque) command.body_opaque = true
      else return sendStatus(res, { code: 400, message: `gatehouse: ${read.reason}` })
    }
    let decision: Decision
    try {
      decision = await session.decide('kube.request', command, abort.signal)
    } catch (err) {
      this.ctx.log.error({ err: String(err), session: session.id }, 'policy evaluation failed; request refused')
      return sendStatus(res, { code: 503, message: 'gatehouse: the gateway could not decide this request' })
    }
    let mask: JsonMaskPlan | null = null
    if (decision.effect === 'allow') {
      try {
        mask = jsonMaskPlan(decision.mask)
      } catch (err) {
        this.ctx.log.error({ err: String(err), session: session.id }, 'a masking path cannot be used; request refused')
        return sendStatus(res, { code: 503, message: 'gatehouse: the gateway could not plan the masking of this answer' })
      }
    }
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
        ...(command.object ? { object: auditedObject(command.object) } : {}),
        ...(bodyFormat ? { body_format: bodyFormat } : {}),
        ...(command.body_opaque ? { body_opaque: true } : {}),
        ...(mask ? { masked: [...new Set(mask.compiled.map((c) => c.target.rule))] } : {}),
        decision: decision.effect,
        rules: decision.rules,
        policy_version: decision.policy,
      })
    } catch (err) {
      this.ctx.log.error({ err: String(err), session: session.id }, 'audit append failed; request refused')
      return sendStatus(res, { code: 503, message: 'gatehouse: the gateway could not record this request' })
    }
    if (decision.effect === 'deny') return sendStatus(res, deniedStatus(decision))
    if (decision.effect === 'hold') {
      const refused = await this.hold(req, a, command, decision, body, abort.signal)
      if (refused !== null) return sendStatus(res, refused.answer, refused.headers)
    }
    await this.forward(req, res, a, body, mask, abort, started)
  }

  /** The approval flow: null when granted (go on), else the answer (pending, denied, timed out). */
  async hold(
    req: IncomingMessage,
    a: Admitted,
    command: Record<string, unknown>,
    decision: Extract<Decision, { effect: 'hold' }>,
    body: Buffer,
    signal: AbortSignal,
  ): Promise<{ answer: StatusAnswer; headers?: Record<string, string> } | null> {
    const { session } = a.slot
    if (!session.requestApproval)
      return { answer: { code: 403, message: `gatehouse: held: this needs an approval (${decision.approvers.join(', ')})` } }
    const display = `kubectl ${a.info.verb} ${a.info.resource}${a.info.subresource ? `/${a.info.subresource}` : ''}${a.info.name ? ` ${a.info.name}` : ''}${a.info.namespace ? ` -n ${a.info.namespace}` : ''}`
    // A once-grant is bound to exactly this request: method, path, query, content type and body.
    const fingerprint = createHash('sha256')
      .update(JSON.stringify(['kube.request', req.method, a.info.path, a.rawQuery, String(req.headers['content-type'] ?? '')]))
      .update(body)
      .digest('hex')
    let outcome: ApprovalOutcome
    try {
      outcome = await session.requestApproval({ action: 'kube.request', decision, display, fingerprint, reason: null, wait: false, signal })
    } catch {
      return { answer: { code: 503, message: 'gatehouse: the approval request could not be recorded' } }
    }
    switch (outcome.status) {
      case 'granted': {
        let again: Decision
        try {
          again = await session.decide('kube.request', command, signal, { granted: true })
        } catch {
          return { answer: { code: 503, message: 'gatehouse: the gateway could not decide this request' } }
        }
        if (again.effect === 'allow') return null
        if (again.effect === 'deny') return { answer: deniedStatus(again) }
        return { answer: { code: 403, message: 'gatehouse: the approval does not cover this request' } }
      }
      case 'pending':
      case 'aborted': {
        const request = outcome.request
        const approvers = outcome.status === 'pending' ? outcome.approvers : decision.approvers
        return {
          answer: {
            code: 403,
            message: `gatehouse: held for approval by ${approvers.join(', ')} (request ${request}); run the same command again once it is approved`,
            details: { name: request, kind: 'approval', causes: decision.rules.map((r) => ({ reason: 'GatehouseApproval', field: r })) },
          },
          headers: { 'gatehouse-approval-request': request },
        }
      }
      case 'denied':
        return {
          answer: {
            code: 403,
            message: `gatehouse: request ${outcome.request} was denied by ${outcome.reviewer}${outcome.comment ? `: ${outcome.comment}` : ''}`,
          },
        }
      case 'timeout':
        return {
          answer: { code: 403, message: `gatehouse: approval request ${outcome.request} timed out after ${outcome.after_seconds}s` },
        }
    }
  }

  private async forward(
    req: IncomingMessage,
    res: ServerResponse,
    a: Admitted,
    body: Buffer,
    mask: JsonMaskPlan | null,
    abort: AbortController,
    started: bigint,
  ): Promise<void> {
    const { session, plan } = a.slot
    const headers = upstreamHeaders(req, session, plan, mask !== null)
    let status = 502
    let bytesOut = 0
    let error: string | null = null
    let up: Dispatcher.ResponseData | null = null
    try {
      up = await plan.pool.request({
        method: (req.method ?? 'GET') as 'GET',
        path: `${a.info.path}${a.rawQuery ? `?${a.rawQuery}` : ''}`,
        headers,
        body: body.length > 0 ? body : null,
        signal: abort.signal,
      })
      status = up.statusCode
      const out: Record<string, string | string[]> = {}
      for (const [k, v] of Object.entries(up.headers)) {
        if (v === undefined || HOP_BY_HOP_HEADERS.has(k) || k === 'proxy-authenticate' || k === 'www-authenticate') continue
        out[k] = v
      }
      // HEAD, 204 and 304 answers carry no body to mask.
      if (mask === null || req.method === 'HEAD' || status === 204 || status === 304) {
        res.writeHead(status, out)
        for await (const c of up.body) {
          if (res.destroyed) throw new Error('the client went away')
          bytesOut += (c as Buffer).length
          if (!res.write(c)) await drained(res)
        }
        res.end()
        return
      }
      const type = String(up.headers['content-type'] ?? '').toLowerCase()
      const encoding = String(up.headers['content-encoding'] ?? 'identity').toLowerCase()
      if (!type.startsWith('application/json') || encoding !== 'identity') {
        up.body.destroy()
        status = 502
        error = 'a masked answer was not plain JSON'
        return sendStatus(res, { code: 502, message: 'gatehouse: the API server answered in a form the gateway cannot mask' })
      }
      // Streamed through the engine's JSON masker (a watch is a sequence of events, each from `$`);
      // invalid JSON throws, and the answer is cut there, never passed on unmasked.
      delete out['content-length']
      const masker = new JsonMasker(mask, this.maskingKey(), { multiple: a.info.verb === 'watch' || type.includes('stream=watch') })
      res.writeHead(status, out)
      for await (const c of up.body) {
        if (res.destroyed) throw new Error('the client went away')
        for (const part of masker.write(c as Buffer)) {
          bytesOut += part.length
          if (!res.write(part)) await drained(res)
        }
      }
      for (const part of masker.end()) {
        bytesOut += part.length
        res.write(part)
      }
      res.end()
    } catch (err) {
      up?.body.destroy()
      error =
        abort.signal.aborted || res.destroyed ? 'the request was ended' : String((err as { code?: unknown }).code ?? 'upstream failure')
      if (!res.headersSent && !abort.signal.aborted)
        sendStatus(res, { code: 502, message: 'gatehouse: the API server could not be reached or failed' })
      else res.destroy()
    } finally {
      const duration = Number(process.hrtime.bigint() - started) / 1e6
      try {
        session.auditLater({
          type: 'result',
          action: 'kube.request',
          seq: a.seq,
          status,
          bytes: bytesOut,
          bytes_in: body.length,
          duration_ms: Math.round(duration * 100) / 100,
          ...(error ? { error } : {}),
        })
      } catch (err) {
        this.ctx.log.error({ err: String(err), session: session.id }, 'cannot record a request result')
      }
      try {
        this.ctx.recordings.entry(session, 'kubernetes.request', {
          seq: a.seq,
          method: req.method,
          verb: a.info.verb,
          path: a.info.path,
          query: a.rawQuery,
          status,
          // A Secret's body is its data: never in a recording, whoever wrote it.
          // A protobuf body is binary: kept as base64.
          ...(body.length > 0 && mask === null && a.info.resource !== 'secrets'
            ? isKubeProtobuf(body)
              ? { body_base64: body.subarray(0, plan.recordBytes).toString('base64') }
              : { body: body.subarray(0, plan.recordBytes).toString('utf8') }
            : {}),
        })
      } catch {
        // Recording is best effort; the audit has the request.
      }
    }
  }

  state(req: IncomingMessage): SocketState {
    const s = req.socket as Socket & { gatehouseKube?: SocketState }
    if (!s.gatehouseKube) {
      const st: SocketState = { sessions: new Map(), seq: 0 }
      s.gatehouseKube = st
      s.once('close', () => {
        for (const p of st.sessions.values()) void p.then((slot) => slot.ok && slot.session.end('client closed'))
        st.sessions.clear()
      })
    }
    return s.gatehouseKube
  }

  private sessionFor(req: IncomingMessage, token: string, connection: string): Promise<SessionSlot> {
    const st = this.state(req)
    const key = `${createHash('sha256').update(token).digest('hex')}\0${connection}`
    const known = st.sessions.get(key)
    if (known) return known
    if (st.sessions.size >= MAX_SESSIONS_PER_SOCKET) {
      return Promise.resolve({ ok: false, status: 429, detail: 'too many distinct tokens or connections on one client connection' })
    }
    const opened = this.open(token, connection, req.socket)
    st.sessions.set(key, opened)
    void opened.then((slot) => {
      if (!slot.ok) st.sessions.delete(key)
    })
    return opened
  }

  private async open(token: string, connection: string, socket: Socket): Promise<SessionSlot> {
    const r = await this.ctx.openSession({
      credential: token,
      connection,
      client: {
        address: `${isIP(socket.remoteAddress ?? '') === 6 ? `[${socket.remoteAddress}]` : socket.remoteAddress}:${socket.remotePort}`,
      },
    })
    if (!r.ok) {
      const code = r.error.code
      const status = code === 'GH_ERR_AUTH' ? 401 : code === 'GH_ERR_UNKNOWN_CONNECTION' ? 404 : code === 'GH_ERR_DENIED' ? 403 : 503
      return { ok: false, status, detail: r.error.publicMessage }
    }
    const session = r.session
    // The engine ends the session: the client connection (an open watch, a stream) ends with it.
    session.onTerminate((reason) => {
      this.ctx.log.info({ session: session.id, reason }, 'kubernetes session ended by the gateway')
      socket.destroy()
      session.end(reason)
    })
    if (socket.destroyed) session.end('client closed')
    try {
      return { ok: true, session, plan: this.plan(session) }
    } catch (err) {
      session.end('upstream settings unusable')
      this.ctx.log.error({ err: String(err), connection }, 'cannot set up the API server connection')
      return { ok: false, status: 502, detail: 'the API server of this connection is not usable' }
    }
  }

  private plan(session: ProxySession): KubePlan {
    const s = session.settings
    let pool = this.pools.get(session.connection.name)
    if (!pool) {
      // A watch may be quiet for minutes; the API server ends it (timeoutSeconds), or the session does.
      pool = createPool(this.ctx, upstreamSpec(s, session.secrets), { bodyTimeout: 0 })
      this.pools.set(session.connection.name, pool)
    }
    const token = session.secrets.get('token')
    return {
      pool,
      authorization: token ? `Bearer ${token.trim()}` : null,
      impersonate: s.impersonate !== false,
      bodyLimit: typeof s.body_limit === 'number' ? s.body_limit : DEFAULT_BODY_LIMIT,
      recordBytes: typeof s.record_body_bytes === 'number' ? s.record_body_bytes : DEFAULT_RECORD_BYTES,
    }
  }

  private key: Buffer | null = null
  /** The key of `hash` masking strategies (the plugin's own, in its state directory). */
  private maskingKey(): Buffer {
    this.key ??= loadMaskingKey(this.ctx.stateDir)
    return this.key
  }

  /** The pool's spec for raw (upgrade) connections. */
  upstreamFor(session: ProxySession): ReturnType<typeof upstreamSpec> {
    return upstreamSpec(session.settings, session.secrets)
  }
}

/** Resolves when the client can take more, or is gone (then the next write fails and ends the copy). */
function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done)
      res.off('close', done)
      resolve()
    }
    res.once('drain', done)
    res.once('close', done)
  })
}
