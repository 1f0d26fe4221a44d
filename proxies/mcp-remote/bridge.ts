// One agent session ↔ one upstream session. The gateway is an MCP server toward the agent (the
// SDK's Server on a Streamable HTTP transport) and an MCP client toward the upstream (the SDK's
// Client): a message reaches the upstream only through a handler below, which decides it, audits
// it and then builds the upstream request from the parsed, decided values. So there is no route
// around a decision: a method without a handler is "method not found" at the gateway (batches,
// notifications, odd method spellings and unknown methods included), duplicate JSON keys were
// resolved by the one parse whose result was judged and re-serialised, and the upstream's own
// session id and capabilities the gateway does not serve (tasks, subscriptions, completions) are
// never exposed to the agent.

import { createHash } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { readFileSync } from 'node:fs'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { Server } from '@modelcontextprotocol/sdk/server/index.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'
import {
  CallToolRequestSchema,
  CallToolResultSchema,
  type ClientCapabilities,
  CreateMessageRequestSchema,
  CreateMessageResultSchema,
  ElicitRequestSchema,
  ElicitResultSchema,
  GetPromptRequestSchema,
  GetPromptResultSchema,
  type InitializeRequest,
  ListPromptsRequestSchema,
  ListPromptsResultSchema,
  ListResourcesRequestSchema,
  ListResourcesResultSchema,
  ListResourceTemplatesRequestSchema,
  ListResourceTemplatesResultSchema,
  ListRootsRequestSchema,
  ListRootsResultSchema,
  ListToolsRequestSchema,
  ListToolsResultSchema,
  McpError,
  type Notification,
  type ProgressToken,
  ReadResourceRequestSchema,
  ReadResourceResultSchema,
  type ServerCapabilities,
} from '@modelcontextprotocol/sdk/types.js'
import { fetch as undiciFetch, type Pool } from 'undici'
import { createPool, maskString, needlesFor } from '../http/public.js'
import type { MaskingKeys } from '../kit/index.js'
import type { Command, Decision, GatewayRefusal, PluginContext, ProxySession } from '../types.js'
import { ResultMasker, resultPlan, sessionKeys } from './masking.js'

export type RemoteContext = PluginContext<'gateway' | 'httpMounts'>

/** JSON-RPC error codes of the gateway's own refusals (implementation-defined server range). */
export const DENIED_CODE = -32010
export const HELD_CODE = -32011
export const GATEWAY_ERROR_CODE = -32012

const DEFAULT_CALL_TIMEOUT_S = 120
/** Audit events keep arguments up to this size (serialised); larger ones are summarised. */
const AUDIT_ARGUMENTS_BYTES = 4096
/** Upstream notifications passed on to the agent (each one's capability is the upstream's too). */
const FORWARDED_NOTIFICATIONS = new Set([
  'notifications/tools/list_changed',
  'notifications/resources/list_changed',
  'notifications/prompts/list_changed',
])

/** A JSON-RPC error the SDK sends as is (code, message, data): no "MCP error" prefix. */
class RpcError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly data?: unknown,
  ) {
    super(message)
  }
}

function refusalError(refusal: GatewayRefusal): RpcError {
  return new RpcError(refusal.status === 'held' ? HELD_CODE : DENIED_CODE, refusal.message, refusal)
}

function denied(d: Extract<Decision, { effect: 'deny' }>): RpcError {
  const first = d.reasons[0]
  return refusalError({
    status: 'denied',
    rule: first ? first.rule || 'policy' : null,
    hop: first ? first.hop || null : null,
    reason: d.reason,
    message: `gatehouse: denied${first ? ` by ${first.rule || 'policy'}${first.hop ? ` (${first.hop})` : ''}` : ''}: ${d.reason}`,
  })
}

/** The codes only the gateway's own decisions use: an upstream cannot answer with them. */
const GATEWAY_CODES = new Set([DENIED_CODE, HELD_CODE, GATEWAY_ERROR_CODE])
/** What an upstream error that used a gateway code becomes. */
export const UPSTREAM_ERROR_CODE = -32000

/**
 * An upstream failure as the agent sees it: the upstream's JSON-RPC error (its message and data
 * masked), or a gateway error when the upstream could not be reached. An upstream error that uses
 * one of the gateway's codes loses the code and its data: a refusal or a hold (and the approval
 * request an agent would wait for) comes from the gateway's own decision only.
 */
export function upstreamRpcError(err: unknown, maskText: (s: string) => string, mask: (v: unknown) => unknown): Error {
  if (err instanceof McpError) {
    // McpError prefixes "MCP error <code>: "; the agent gets the upstream's own message.
    const msg = maskText(err.message.replace(/^MCP error -?\d+: /, ''))
    if (GATEWAY_CODES.has(err.code)) return new RpcError(UPSTREAM_ERROR_CODE, `upstream error: ${msg}`)
    return new RpcError(err.code, msg, err.data === undefined ? undefined : mask(err.data))
  }
  return new RpcError(GATEWAY_ERROR_CODE, 'gatehouse: the upstream MCP server failed or could not be reached')
}

/** Canonical JSON (sorted keys): a once-grant is bound to the arguments, not to their spelling. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>
    return `{${Object.keys(o)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
      .join(',')}}`
  }
  return JSON.stringify(v) ?? 'null'
}

function auditArguments(args: unknown): Record<string, unknown> {
  const text = JSON.stringify(args ?? {})
  return Buffer.byteLength(text) <= AUDIT_ARGUMENTS_BYTES ? { arguments: args ?? {} } : { arguments_bytes: Buffer.byteLength(text) }
}

type Allowed = Extract<Decision, { effect: 'allow' }>

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
  private readonly inflight: (string | number)[] = []
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

  private get callTimeoutMs(): number {
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
    this.needles = needlesFor(inject.values())
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
    const instructions = client.getInstructions()
    const server = new Server(
      { name: info?.name ?? this.connectionName, version: info?.version ?? '0', ...(info?.title ? { title: info.title } : {}) },
      { capabilities: caps, ...(instructions ? { instructions } : {}) },
    )
    this.register(server, client, caps)
    // Requests the upstream makes of the agent (sampling, elicitation, roots) go to the agent (masked
    // on the way out like everything else): the agent answers them; they decide nothing here.
    if (mirrored.sampling) {
      client.setRequestHandler(CreateMessageRequestSchema, (r, extra) =>
        server.request({ method: r.method, params: r.params }, CreateMessageResultSchema, this.toAgent(extra.signal)),
      )
    }
    if (mirrored.elicitation) {
      client.setRequestHandler(ElicitRequestSchema, (r, extra) =>
        server.request({ method: r.method, params: r.params }, ElicitResultSchema, this.toAgent(extra.signal)),
      )
    }
    if (mirrored.roots) {
      client.setRequestHandler(ListRootsRequestSchema, (r, extra) =>
        server.request({ method: r.method, params: r.params }, ListRootsResultSchema, this.toAgent(extra.signal)),
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
    transport.send = (message, options) => send(this.masked(message), options)
    this.transport = transport
    transport.onclose = () => void this.close('the client ended the session')
    await server.connect(transport)
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

  /** An upstream value as the agent may see it: injected credentials masked wherever they appear. */
  private masked<T>(value: T): T {
    if (this.needles.length === 0) return value
    const text = JSON.stringify(value)
    const out = maskString(text, this.needles)
    return out === text ? value : (JSON.parse(out) as T)
  }

  private maskText(s: string): string {
    return this.needles.length === 0 ? s : maskString(s, this.needles)
  }

  /** The decision for a listed item: shown unless denied (held items are shown); null: not shown. */
  private async listed(action: string, command: Command): Promise<Decision | null> {
    try {
      const d = await this.session.decide(action, command)
      return d.effect === 'deny' ? null : d
    } catch {
      return null
    }
  }

  private async visible(action: string, command: Command): Promise<boolean> {
    return (await this.listed(action, command)) !== null
  }

  /** The masker for a result of an allowed request, or null when no JSON-path rule applies. */
  private maskerFor(decision: Allowed): ResultMasker | null {
    const plan = resultPlan(decision.mask)
    if (!plan) return null
    this.keys ??= sessionKeys(this.ctx.stateDir)
    return new ResultMasker(plan, this.keys)
  }

  /**
   * Resources embedded in a result (content items of type `resource`) are reads the upstream did
   * on the agent's behalf: each is decided as `mcp.resource` like a `resources/read`, and one the
   * chain may not read is replaced by a note saying so. A link (`resource_link`) is only a name;
   * reading it is decided when it is read.
   */
  private async withholdEmbedded(items: readonly unknown[]): Promise<{ items: unknown[]; withheld: number }> {
    const out: unknown[] = []
    let withheld = 0
    for (const item of items) {
      const resource = (item as { type?: unknown; resource?: { uri?: unknown } } | null)?.resource
      if ((item as { type?: unknown } | null)?.type !== 'resource' || typeof resource?.uri !== 'string') {
        out.push(item)
        continue
      }
      let effect: Decision['effect'] = 'deny'
      let reason = 'the gateway could not decide it'
      try {
        const d = await this.session.decide('mcp.resource', { server: this.connectionName, uri: resource.uri, embedded: true })
        effect = d.effect
        if (d.effect === 'deny') reason = d.reason
        else if (d.effect === 'hold') reason = 'reading it needs an approval: read it with resources/read'
      } catch {
        // fail closed: withheld
      }
      if (effect === 'allow') out.push(item)
      else {
        withheld++
        out.push({ type: 'text', text: `gatehouse: embedded resource ${resource.uri} withheld: ${reason}` })
      }
    }
    return { items: out, withheld }
  }

  /**
   * Decides one request for the whole chain and records it durably before anything is sent
   * upstream; throws the JSON-RPC error the agent gets when it may not run now.
   */
  private async gate(
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
  private result(action: string, seq: number, started: number, fields: Record<string, unknown>): void {
    try {
      this.session.auditLater({ type: 'result', action, seq, duration_ms: Date.now() - started, ...fields })
    } catch (err) {
      this.ctx.log.error({ err: String(err), session: this.session.id }, 'cannot record a result')
    }
  }

  /** An upstream failure as the agent sees it: the upstream's JSON-RPC error (masked), or a gateway error. */
  private upstreamError(err: unknown): Error {
    return upstreamRpcError(
      err,
      (t) => this.maskText(t),
      (v) => this.masked(v),
    )
  }

  private register(server: Server, client: Client, caps: ServerCapabilities): void {
    const conn = this.connectionName
    const opts = (signal: AbortSignal) => ({ signal, timeout: this.callTimeoutMs })
    if (caps.tools) {
      server.setRequestHandler(ListToolsRequestSchema, async (r, extra) => {
        const up = await client
          .request(
            { method: 'tools/list', params: r.params?.cursor ? { cursor: r.params.cursor } : {} },
            ListToolsResultSchema,
            opts(extra.signal),
          )
          .catch((err: unknown) => {
            throw this.upstreamError(err)
          })
        const tools = []
        for (const t of up.tools) {
          const d = await this.listed('mcp.call', { server: conn, tool: t.name, arguments: {} })
          if (!d) continue
          // Masked values need not fit the tool's output schema: a client would refuse them.
          if (d.effect === 'allow' && resultPlan(d.mask) !== null && t.outputSchema !== undefined) {
            const { outputSchema: _dropped, ...rest } = t
            tools.push(rest)
          } else tools.push(t)
        }
        return { tools, ...(up.nextCursor ? { nextCursor: up.nextCursor } : {}) }
      })
      server.setRequestHandler(CallToolRequestSchema, async (r, extra) => {
        const name = r.params.name
        const args = r.params.arguments ?? {}
        const { seq, decision } = await this.gate(
          'tools/call',
          'mcp.call',
          { server: conn, tool: name, arguments: args },
          { tool: name, ...auditArguments(args) },
          `tools/call ${name} ${canonical(args).slice(0, 2000)}`,
          extra.signal,
        )
        const started = Date.now()
        const progressToken: ProgressToken | undefined = r.params._meta?.progressToken
        this.inflight.push(extra.requestId)
        try {
          const out = await client.request({ method: 'tools/call', params: { name, arguments: args } }, CallToolResultSchema, {
            ...opts(extra.signal),
            resetTimeoutOnProgress: true,
            ...(progressToken !== undefined
              ? {
                  onprogress: (p) =>
                    void extra
                      .sendNotification({ method: 'notifications/progress', params: { ...p, progressToken } })
                      .catch(() => undefined),
                }
              : {}),
          })
          const embedded = await this.withholdEmbedded(out.content)
          const m = this.maskerFor(decision)
          let result = { ...out, content: embedded.items as typeof out.content }
          if (m) {
            result = {
              ...result,
              content: result.content.map((c) => m.item(c)) as typeof out.content,
              ...(out.structuredContent !== undefined
                ? { structuredContent: m.value(out.structuredContent) as typeof out.structuredContent }
                : {}),
            }
          }
          this.result('mcp.call', seq, started, {
            is_error: out.isError === true,
            ...(embedded.withheld > 0 ? { withheld_resources: embedded.withheld } : {}),
            ...(m ? m.summary() : {}),
          })
          return result
        } catch (err) {
          this.result('mcp.call', seq, started, { error: err instanceof McpError ? `upstream error ${err.code}` : 'upstream failure' })
          throw this.upstreamError(err)
        } finally {
          const i = this.inflight.lastIndexOf(extra.requestId)
          if (i >= 0) this.inflight.splice(i, 1)
        }
      })
    }
    if (caps.resources) {
      server.setRequestHandler(ListResourcesRequestSchema, async (r, extra) => {
        const up = await client
          .request(
            { method: 'resources/list', params: r.params?.cursor ? { cursor: r.params.cursor } : {} },
            ListResourcesResultSchema,
            opts(extra.signal),
          )
          .catch((err: unknown) => {
            throw this.upstreamError(err)
          })
        const resources = []
        for (const x of up.resources) if (await this.visible('mcp.resource', { server: conn, uri: x.uri })) resources.push(x)
        return { resources, ...(up.nextCursor ? { nextCursor: up.nextCursor } : {}) }
      })
      server.setRequestHandler(ListResourceTemplatesRequestSchema, async (r, extra) => {
        const up = await client
          .request(
            { method: 'resources/templates/list', params: r.params?.cursor ? { cursor: r.params.cursor } : {} },
            ListResourceTemplatesResultSchema,
            opts(extra.signal),
          )
          .catch((err: unknown) => {
            throw this.upstreamError(err)
          })
        const resourceTemplates = []
        for (const x of up.resourceTemplates) {
          if (await this.visible('mcp.resource', { server: conn, uri: x.uriTemplate, template: true })) resourceTemplates.push(x)
        }
        return { resourceTemplates, ...(up.nextCursor ? { nextCursor: up.nextCursor } : {}) }
      })
      server.setRequestHandler(ReadResourceRequestSchema, async (r, extra) => {
        const uri = r.params.uri
        const { seq, decision } = await this.gate(
          'resources/read',
          'mcp.resource',
          { server: conn, uri },
          { uri },
          `resources/read ${uri}`,
          extra.signal,
        )
        const started = Date.now()
        try {
          const out = await client.request({ method: 'resources/read', params: { uri } }, ReadResourceResultSchema, opts(extra.signal))
          const m = this.maskerFor(decision)
          let contents = out.contents
          if (m) {
            contents = []
            for (const c of out.contents) {
              const masked = m.contents(c) as typeof c | null
              if (masked) contents.push(masked)
              else {
                m.withheld++
                contents.push({
                  uri: c.uri,
                  mimeType: 'text/plain',
                  text: 'gatehouse: withheld content that cannot be masked: masking rules apply to this result',
                })
              }
            }
          }
          this.result('mcp.resource', seq, started, { contents: out.contents.length, ...(m ? m.summary() : {}) })
          return { ...out, contents }
        } catch (err) {
          this.result('mcp.resource', seq, started, { error: err instanceof McpError ? `upstream error ${err.code}` : 'upstream failure' })
          throw this.upstreamError(err)
        }
      })
    }
    if (caps.prompts) {
      server.setRequestHandler(ListPromptsRequestSchema, async (r, extra) => {
        const up = await client
          .request(
            { method: 'prompts/list', params: r.params?.cursor ? { cursor: r.params.cursor } : {} },
            ListPromptsResultSchema,
            opts(extra.signal),
          )
          .catch((err: unknown) => {
            throw this.upstreamError(err)
          })
        const prompts = []
        for (const p of up.prompts) if (await this.visible('mcp.prompt', { server: conn, prompt: p.name, arguments: {} })) prompts.push(p)
        return { prompts, ...(up.nextCursor ? { nextCursor: up.nextCursor } : {}) }
      })
      server.setRequestHandler(GetPromptRequestSchema, async (r, extra) => {
        const name = r.params.name
        const args = r.params.arguments ?? {}
        const { seq, decision } = await this.gate(
          'prompts/get',
          'mcp.prompt',
          { server: conn, prompt: name, arguments: args },
          { prompt: name, ...auditArguments(args) },
          `prompts/get ${name} ${canonical(args).slice(0, 2000)}`,
          extra.signal,
        )
        const started = Date.now()
        try {
          const out = await client.request(
            { method: 'prompts/get', params: { name, arguments: args } },
            GetPromptResultSchema,
            opts(extra.signal),
          )
          let withheld = 0
          const masker = this.maskerFor(decision)
          const messages: typeof out.messages = []
          for (const m of out.messages) {
            const e = await this.withholdEmbedded([m.content])
            withheld += e.withheld
            const content = masker ? masker.item(e.items[0]) : e.items[0]
            messages.push({ ...m, content: content as typeof m.content })
          }
          this.result('mcp.prompt', seq, started, {
            messages: out.messages.length,
            ...(withheld > 0 ? { withheld_resources: withheld } : {}),
            ...(masker ? masker.summary() : {}),
          })
          return { ...out, messages }
        } catch (err) {
          this.result('mcp.prompt', seq, started, { error: err instanceof McpError ? `upstream error ${err.code}` : 'upstream failure' })
          throw this.upstreamError(err)
        }
      })
    }
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
