// One agent session ↔ one upstream session. The gateway is an MCP server toward the agent (the
// SDK's Server on a Streamable HTTP transport) and an MCP client toward the upstream (the SDK's
// Client): a message reaches the upstream only through a handler below, which decides it, audits
// it and then builds the upstream request from the parsed, decided values. So there is no route
// around a decision: a method without a handler is "method not found" at the gateway (batches,
// notifications, odd method spellings and unknown methods included), duplicate JSON keys were
// resolved by the one parse whose result was judged and re-serialised, and the upstream's own
// session id and capabilities the gateway does not serve (tasks, subscriptions, completions) are
// never exposed to the agent.
//
// Beside it: handlers.ts (the agent-facing server's handlers), errors.ts (the JSON-RPC errors),
// arguments.ts (canonical and audited arguments).

import { createHash, randomUUID } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { readFileSync } from 'node:fs'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { Server } from '@modelcontextprotocol/sdk/server/index.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'
import {
  type ClientCapabilities,
  CreateMessageRequestSchema,
  ErrorCode,
  McpError,
  CreateMessageResultSchema,
  ElicitRequestSchema,
  ElicitResultSchema,
  type InitializeRequest,
  ListRootsRequestSchema,
  ListRootsResultSchema,
  type Notification,
  type ServerCapabilities,
} from '@modelcontextprotocol/sdk/types.js'
import { fetch as undiciFetch, type Pool } from 'undici'
import { createPool, maskString, needlesFor } from '../http/public.js'
import type { MaskingKeys } from '../kit/index.js'
import type { Command, Decision, MaskObligation, PluginContext, PossibleMasks, ProxySession } from '../types.js'
import { jsonMaskPlan } from '../kit/index.js'
import { ResultMasker, sessionKeys, withheldText } from './masking.js'
import { needsScan, scrubCredentials } from './credentials.js'
import { canonical } from './arguments.js'
import { denied, GATEWAY_ERROR_CODE, RpcError, refusalError, upstreamRpcError } from './errors.js'
import { registerHandlers } from './handlers.js'
import { canonicalUri } from './uris.js'

/** The error an answer becomes when it carries the injected credential where it cannot be masked. */
const CREDENTIAL_REFUSED =
  "gatehouse: withheld the upstream's answer: it carries the credential the gateway injects where it cannot be masked"

export { DENIED_CODE, GATEWAY_ERROR_CODE, HELD_CODE, UPSTREAM_ERROR_CODE, upstreamRpcError } from './errors.js'

export type RemoteContext = PluginContext<'gateway' | 'httpMounts'>

const DEFAULT_CALL_TIMEOUT_S = 120
/** Upstream notifications passed on to the agent (each one's capability is the upstream's too). */
const FORWARDED_NOTIFICATIONS = new Set([
  'notifications/tools/list_changed',
  'notifications/resources/list_changed',
  'notifications/prompts/list_changed',
])

type Allowed = Extract<Decision, { effect: 'allow' }>

/** The actions this plugin decides: masking that may come with any of them makes a session masked. */
const MCP_ACTIONS = ['mcp.call', 'mcp.resource', 'mcp.prompt'] as const
/** Upstream list cursors kept per session on a masked session (the oldest are forgotten). */
const MAX_CURSORS = 1000

export class Bridge {
  closed = false
  lastSeen = Date.now()
  readonly connectionName: string
  private transport: StreamableHTTPServerTransport | null = null
  private client: Client | null = null
  private pool: Pool | null = null
  private needles: Buffer[] = []
  private seq = 0
  private keys: MaskingKeys | null = null
  /** The agent's tools/call requests in flight: an upstream request made during one goes back on its stream. */
  readonly inflight: (string | number)[] = []
  /** The JSON-path obligations the session's decisions carried so far (by rule and path). */
  private readonly seenMasks = new Map<string, MaskObligation>()
  /** On a masked session, the gateway's own list cursors for the upstream's (which are its free text). */
  private readonly cursors = new Map<string, string>()
  private readonly abort = new AbortController()

  constructor(
    private readonly ctx: RemoteContext,
    readonly session: ProxySession,
    readonly id: string,
    readonly tokenHash: Buffer,
    private readonly onClosed: () => void,
  ) {
    this.connectionName = session.connection.name
  }

  get identity(): ProxySession['identity'] {
    return this.session.identity
  }

  get callTimeoutMs(): number {
    const t = this.session.settings.call_timeout
    return (typeof t === 'number' ? t : DEFAULT_CALL_TIMEOUT_S) * 1000
  }

  /** Opens the upstream session, then the agent-facing server with what the upstream offers. */
  async open(init: InitializeRequest): Promise<void> {
    const s = this.session.settings
    const url = new URL(String(s.url))
    const tls = url.protocol === 'https:'
    const host = url.hostname.replace(/^\[|\]$/g, '')
    const inject = new Map<string, string>()
    for (const [k, v] of this.session.secrets) {
      if (k.startsWith('inject_headers.')) inject.set(k.slice('inject_headers.'.length).toLowerCase(), v)
    }
    // Lower- and upper-cased copies too: an upstream that echoes the credential case-changed.
    const values = [...inject.values()]
    this.needles = needlesFor([...values, ...values.map((v) => v.toLowerCase()), ...values.map((v) => v.toUpperCase())])
    const pool = createPool(this.ctx, {
      origin: url.origin,
      tls,
      address: this.session.target,
      servername: host,
      ca: typeof s.ca === 'string' ? readFileSync(s.ca, 'utf8') : undefined,
      cert: typeof s.client_cert === 'string' ? readFileSync(s.client_cert, 'utf8') : undefined,
      key: this.session.secrets.get('client_key'),
    })
    this.pool = pool
    const fetchUpstream = async (input: string | URL, reqInit?: RequestInit): Promise<Response> => {
      const headers = new Headers(reqInit?.headers)
      // The agent's credentials stop at the gateway; the upstream gets the injected ones only.
      headers.delete('authorization')
      for (const [k, v] of inject) headers.set(k, v)
      const target = new URL(String(input))
      if (target.origin !== url.origin) throw new Error('the upstream may not redirect the gateway to another origin')
      const r = await undiciFetch(target, {
        method: reqInit?.method ?? 'GET',
        headers: [...headers.entries()],
        body: (reqInit?.body ?? null) as string | null,
        signal: reqInit?.signal ? AbortSignal.any([reqInit.signal, this.abort.signal]) : this.abort.signal,
        redirect: 'error',
        dispatcher: pool,
      })
      return r as unknown as Response
    }

    const agentCaps = init.params.capabilities
    const mirrored: ClientCapabilities = {}
    if (agentCaps.sampling) mirrored.sampling = agentCaps.sampling
    if (agentCaps.elicitation) mirrored.elicitation = agentCaps.elicitation
    if (agentCaps.roots) mirrored.roots = agentCaps.roots
    const client = new Client({ name: 'gatehouse', version: '0.1.0' }, { capabilities: mirrored })
    this.client = client
    const upstream = new StreamableHTTPClientTransport(url, {
      fetch: fetchUpstream,
      // A dropped upstream stream ends the session rather than being resumed behind the agent's back.
      reconnectionOptions: { maxReconnectionDelay: 1000, initialReconnectionDelay: 1000, reconnectionDelayGrowFactor: 1, maxRetries: 0 },
    })
    client.onclose = () => void this.close('the upstream MCP server closed the session')
    client.onerror = (err) => this.ctx.log.debug({ err: String(err), session: this.session.id }, 'upstream MCP transport error')
    await client.connect(upstream, { signal: AbortSignal.timeout(30_000) })

    const up = client.getServerCapabilities() ?? {}
    const info = client.getServerVersion()
    const caps: ServerCapabilities = {}
    if (up.tools) caps.tools = { listChanged: up.tools.listChanged === true }
    if (up.resources) caps.resources = { listChanged: up.resources.listChanged === true }
    if (up.prompts) caps.prompts = { listChanged: up.prompts.listChanged === true }
    // On a masked session the upstream's name, title, version and instructions are its free text.
    const masked = this.maskedSession() !== null
    const upInstructions = client.getInstructions()
    const instructions = upInstructions && masked ? withheldText("the server's instructions") : upInstructions
    const server = new Server(
      masked
        ? { name: this.connectionName, version: '0' }
        : { name: info?.name ?? this.connectionName, version: info?.version ?? '0', ...(info?.title ? { title: info.title } : {}) },
      { capabilities: caps, ...(instructions ? { instructions } : {}) },
    )
    registerHandlers(this, server, client, caps)
    // Requests the upstream makes of the agent (sampling, elicitation, roots) go to the agent (masked
    // on the way out like everything else): the agent answers them; they decide nothing here.
    if (mirrored.sampling) {
      client.setRequestHandler(CreateMessageRequestSchema, (r, extra) => {
        this.unmaskedOnly(r.method)
        return server.request({ method: r.method, params: r.params }, CreateMessageResultSchema, this.toAgent(extra.signal))
      })
    }
    if (mirrored.elicitation) {
      client.setRequestHandler(ElicitRequestSchema, (r, extra) => {
        this.unmaskedOnly(r.method)
        return server.request({ method: r.method, params: r.params }, ElicitResultSchema, this.toAgent(extra.signal))
      })
    }
    if (mirrored.roots) {
      // On a masked session the request goes without the upstream's params (its _meta).
      client.setRequestHandler(ListRootsRequestSchema, (r, extra) =>
        server.request(
          this.maskedSession() === null ? { method: r.method, params: r.params } : { method: r.method },
          ListRootsResultSchema,
          this.toAgent(extra.signal),
        ),
      )
    }
    client.fallbackNotificationHandler = async (n: Notification): Promise<void> => {
      if (FORWARDED_NOTIFICATIONS.has(n.method) && !this.closed) await server.notification({ method: n.method }).catch(() => undefined)
    }
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: () => this.id })
    // The one way out to the agent: every message (results, errors, the upstream's requests and
    // notifications, whatever their kind) has the injected credentials masked here, so no message
    // type can carry them past the gateway, including ones added later.
    const send = transport.send.bind(transport)
    transport.send = (message, options) => {
      let out: typeof message
      try {
        out = this.masked(message)
      } catch {
        // The credential where it cannot be masked (a number, or a key that masked collides with
        // another): an answer becomes an error, a request fails (its relay answers the upstream
        // with an error) and a notification is dropped. Never a hang.
        if ('id' in message && ('result' in message || 'error' in message)) {
          out = {
            jsonrpc: '2.0',
            id: message.id,
            error: { code: GATEWAY_ERROR_CODE, message: CREDENTIAL_REFUSED },
          }
        } else if ('id' in message) return Promise.reject(new Error(CREDENTIAL_REFUSED))
        else return Promise.resolve()
      }
      return send(out, options)
    }
    this.transport = transport
    transport.onclose = () => void this.close('the client ended the session')
    await server.connect(transport)
  }

  /**
   * Sampling and elicitation requests are the upstream's free text, which a JSON-path rule cannot
   * mask: on a masked session they are refused (the upstream gets an error) and not relayed,
   * whether or not a call is in flight (outside one they would reach the agent on its GET stream).
   */
  private unmaskedOnly(method: string): void {
    if (this.maskedSession() !== null) {
      throw new McpError(ErrorCode.InvalidRequest, `the gateway does not relay ${method} on a connection where masking rules apply`)
    }
  }

  /**
   * Whether masking may apply to this session (a masked session), asked of the engine for every
   * message since a policy reload can change it: null when no masking.yaml JSON-path rule applies to
   * the connection, no Rego `mask` entry can come with its decisions and none has; otherwise the
   * JSON-path obligations known for it (masking.yaml's, and every one a decision of the session
   * carried). An engine that cannot tell makes every session masked.
   */
  maskedSession(): readonly MaskObligation[] | null {
    let p: PossibleMasks | undefined
    try {
      p = this.session.possibleMasks?.(MCP_ACTIONS)
    } catch {
      p = undefined
    }
    const known = p ? p.known.filter((m) => m.json_path !== undefined) : []
    if (p && !p.policy && known.length === 0 && this.seenMasks.size === 0) return null
    return this.seenMasks.size === 0 ? known : [...known, ...this.seenMasks.values()]
  }

  /** The masking key material, made on first use. */
  maskingKeys(): MaskingKeys {
    this.keys ??= sessionKeys(this.ctx.stateDir)
    return this.keys
  }

  /** On a masked session, the gateway's cursor for the upstream's; else the upstream's own. */
  cursorOut(cursor: string | undefined): string | undefined {
    if (cursor === undefined || this.maskedSession() === null) return cursor
    const mine = `gatehouse-cursor-${randomUUID()}`
    if (this.cursors.size >= MAX_CURSORS) {
      const oldest = this.cursors.keys().next()
      if (!oldest.done) this.cursors.delete(oldest.value)
    }
    this.cursors.set(mine, cursor)
    return mine
  }

  /** The upstream's cursor for one the agent sent: a gateway cursor is looked up, one it never gave refused. */
  cursorIn(cursor: string | undefined): string | undefined {
    if (cursor === undefined || cursor === '') return undefined
    const up = this.cursors.get(cursor)
    if (up !== undefined) return up
    if (this.maskedSession() !== null) throw new RpcError(ErrorCode.InvalidParams, 'gatehouse: unknown cursor (list again from the start)')
    return cursor
  }

  /** Options for a request to the agent: on the stream of the call in flight, if any (else the GET stream). */
  private toAgent(signal: AbortSignal): { signal: AbortSignal; relatedRequestId?: string | number } {
    const related = this.inflight.at(-1)
    return related === undefined ? { signal } : { signal, relatedRequestId: related }
  }

  handle(req: IncomingMessage, res: ServerResponse, body: unknown): Promise<void> {
    if (!this.transport) {
      res.writeHead(503).end()
      return Promise.resolve()
    }
    // Two requests of one batch under one id would get one answer between them (the other's
    // result lost after it ran): the whole batch is refused before any of it is decided.
    if (Array.isArray(body)) {
      const ids = new Set<unknown>()
      for (const m of body as unknown[]) {
        const o = m as { id?: unknown; method?: unknown } | null
        if (o === null || typeof o !== 'object' || typeof o.method !== 'string' || o.id === undefined) continue
        if (ids.has(o.id)) {
          res.writeHead(400, { 'content-type': 'application/json' })
          res.end(
            JSON.stringify({
              jsonrpc: '2.0',
              error: { code: -32600, message: 'Invalid Request: two requests of one batch use the same id; nothing in the batch was run' },
              id: null,
            }),
          )
          return Promise.resolve()
        }
        ids.add(o.id)
      }
    }
    return this.transport.handleRequest(req, res, body)
  }

  /**
   * An upstream value as the agent may see it: injected credentials masked wherever they appear
   * (strings and object keys); throws when one is where it cannot be masked (credentials.ts).
   */
  private masked<T>(value: T): T {
    if (this.needles.length === 0) return value
    const text = JSON.stringify(value)
    return needsScan(text, this.needles) ? scrubCredentials(value, this.needles) : value
  }

  private maskText(s: string): string {
    return this.needles.length === 0 ? s : maskString(s, this.needles)
  }

  /** The decision for a listed item: shown unless denied (held items are shown); null: not shown. */
  async listed(action: string, command: Command): Promise<Decision | null> {
    try {
      const d = await this.session.decide(action, command)
      return d.effect === 'deny' ? null : d
    } catch {
      return null
    }
  }

  async visible(action: string, command: Command): Promise<boolean> {
    return (await this.listed(action, command)) !== null
  }

  /** The masker for a result of an allowed request, or null when no JSON-path rule applies. */
  maskerFor(decision: Allowed): ResultMasker | null {
    const plan = jsonMaskPlan(decision.mask)
    if (!plan) return null
    for (const m of decision.mask) if (m.json_path !== undefined) this.seenMasks.set(`${m.rule}\u0000${m.json_path}`, m)
    return new ResultMasker(plan, this.maskingKeys())
  }

  /**
   * Whether the chain may read a resource the upstream returned (embedded in a result, or a
   * resources/read answer naming another URI than the one read): decided as `mcp.resource` with
   * `embedded: true` on its canonical URI; one that does not parse is not readable.
   */
  async readable(uri: unknown): Promise<{ ok: true } | { ok: false; reason: string }> {
    const canonical = canonicalUri(uri)
    if (canonical === null) return { ok: false, reason: 'its URI does not parse' }
    try {
      const d = await this.session.decide('mcp.resource', { server: this.connectionName, uri: canonical, embedded: true })
      if (d.effect === 'allow') return { ok: true }
      return { ok: false, reason: d.effect === 'deny' ? d.reason : 'reading it needs an approval: read it with resources/read' }
    } catch {
      return { ok: false, reason: 'the gateway could not decide it' }
    }
  }

  /**
   * Resources embedded in a result (content items of type `resource`) are reads the upstream did
   * on the agent's behalf: each is decided like a `resources/read`, and one the chain may not read
   * is replaced by a note saying so. A link (`resource_link`) is only a name; reading it is decided
   * when it is read.
   */
  async withholdEmbedded(items: readonly unknown[]): Promise<{ items: unknown[]; withheld: number }> {
    const out: unknown[] = []
    let withheld = 0
    for (const item of items) {
      const resource = (item as { type?: unknown; resource?: { uri?: unknown } } | null)?.resource
      if ((item as { type?: unknown } | null)?.type !== 'resource' || resource === null || typeof resource !== 'object') {
        out.push(item)
        continue
      }
      const v = await this.readable(resource.uri)
      if (v.ok) out.push(item)
      else {
        withheld++
        const name = typeof resource.uri === 'string' ? (canonicalUri(resource.uri) ?? 'with an unreadable URI') : 'with no URI'
        out.push({ type: 'text', text: `gatehouse: embedded resource ${name} withheld: ${v.reason}` })
      }
    }
    return { items: out, withheld }
  }

  /**
   * Decides one request for the whole chain and records it durably before anything is sent
   * upstream; throws the JSON-RPC error the agent gets when it may not run now.
   */
  async gate(
    method: string,
    action: string,
    command: Command,
    audited: Record<string, unknown>,
    display: string,
    signal: AbortSignal,
  ): Promise<{ seq: number; decision: Allowed }> {
    let decision: Decision
    try {
      decision = await this.session.decide(action, command, signal)
    } catch (err) {
      this.ctx.log.error({ err: String(err), session: this.session.id }, 'policy evaluation failed; request refused')
      throw new RpcError(GATEWAY_ERROR_CODE, 'gatehouse: the gateway could not decide this request')
    }
    const record = async (d: Decision, approval?: string): Promise<number> => {
      const seq = ++this.seq
      try {
        await this.session.audit({
          type: 'statement',
          action,
          seq,
          mcp_session: this.id,
          method,
          ...audited,
          decision: d.effect,
          rules: d.rules,
          ...(approval !== undefined ? { approval } : {}),
          policy_version: d.policy,
        })
      } catch (err) {
        this.ctx.log.error({ err: String(err), session: this.session.id }, 'audit append failed; request refused')
        throw new RpcError(GATEWAY_ERROR_CODE, 'gatehouse: the gateway could not record this request')
      }
      return seq
    }
    const seq = await record(decision)
    if (decision.effect === 'allow') return { seq, decision }
    if (decision.effect === 'deny') throw denied(decision)
    // Approved: the request is decided again with the grant, and what runs has its own statement
    // (decision allow, the approval request), durable before it reaches the upstream, as for SQL.
    const approved = await this.held(action, command, decision, display, signal)
    return { seq: await record(approved.decision, approved.request), decision: approved.decision }
  }

  /** The approval flow: returns when a grant covers the request; otherwise throws what to wait for. */
  private async held(
    action: string,
    command: Command,
    decision: Extract<Decision, { effect: 'hold' }>,
    display: string,
    signal: AbortSignal,
  ): Promise<{ decision: Allowed; request: string }> {
    const heldError = (request: string | null, approvers: readonly string[]): RpcError =>
      refusalError({
        status: 'held',
        request_id: request,
        approvers,
        rules: decision.rules,
        message: request
          ? `gatehouse: held for approval by ${approvers.join(', ') || 'a reviewer'} (request ${request}); send the identical request again once it is approved`
          : `gatehouse: approval required from ${approvers.join(', ') || 'a reviewer'} (${decision.rules.join(', ')})`,
      })
    if (!this.session.requestApproval) throw heldError(null, decision.approvers)
    // A once-grant is bound to exactly this request: the action, the connection and the canonical command.
    const fingerprint = createHash('sha256')
      .update(canonical([action, this.connectionName, command]))
      .digest('hex')
    let outcome: Awaited<ReturnType<NonNullable<ProxySession['requestApproval']>>>
    try {
      outcome = await this.session.requestApproval({ action, decision, display, fingerprint, reason: null, wait: false, signal })
    } catch {
      throw new RpcError(GATEWAY_ERROR_CODE, 'gatehouse: the approval request could not be recorded')
    }
    switch (outcome.status) {
      case 'granted': {
        let again: Decision
        try {
          again = await this.session.decide(action, command, signal, { granted: true })
        } catch {
          throw new RpcError(GATEWAY_ERROR_CODE, 'gatehouse: the gateway could not decide this request')
        }
        if (again.effect === 'allow') return { decision: again, request: outcome.request }
        if (again.effect === 'deny') throw denied(again)
        throw heldError(null, again.approvers)
      }
      case 'pending':
        throw heldError(outcome.request, outcome.approvers)
      case 'aborted':
        throw heldError(outcome.request, decision.approvers)
      case 'denied':
        throw refusalError({
          status: 'denied',
          rule: 'approval',
          hop: null,
          reason: `request ${outcome.request} was denied by ${outcome.reviewer}`,
          message: `gatehouse: request ${outcome.request} was denied by ${outcome.reviewer}`,
        })
      case 'timeout':
        throw refusalError({
          status: 'denied',
          rule: 'approval',
          hop: null,
          reason: `request ${outcome.request} timed out without a decision`,
          message: `gatehouse: approval request ${outcome.request} timed out after ${outcome.after_seconds}s without a decision`,
        })
    }
  }

  /** Records how a forwarded request ended (written with the next durable append). */
  result(action: string, seq: number, started: number, fields: Record<string, unknown>): void {
    try {
      this.session.auditLater({ type: 'result', action, seq, duration_ms: Date.now() - started, ...fields })
    } catch (err) {
      this.ctx.log.error({ err: String(err), session: this.session.id }, 'cannot record a result')
    }
  }

  /**
   * An upstream failure as the agent sees it: the upstream's JSON-RPC error (credentials masked),
   * or a gateway error. While a masking rule applies (`masked`), its message is free text the
   * masker cannot read: withheld, and its data dropped.
   */
  upstreamError(err: unknown, masked = false): Error {
    return upstreamRpcError(
      err,
      (t) => this.maskText(t),
      (v) => this.masked(v),
      masked || this.maskedSession() !== null,
    )
  }

  /** Ends both sides: the agent's streams, the upstream session (DELETE), the Gatehouse session. */
  async close(reason: string): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.onClosed()
    this.ctx.log.info({ session: this.session.id, mcp_session: this.id, reason }, 'remote mcp session closed')
    const transport = this.transport
    const client = this.client
    await transport?.close().catch(() => undefined)
    const upstream = client?.transport
    if (upstream instanceof StreamableHTTPClientTransport) {
      await upstream.terminateSession().catch(() => undefined)
    }
    this.abort.abort()
    await client?.close().catch(() => undefined)
    this.session.end(reason)
    await this.pool?.close().catch(() => undefined)
  }
}
