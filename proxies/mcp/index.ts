// The MCP plugin: an MCP server for AI agents at `/mcp` on the API listener, on the same
// ProxyPlugin interface as every other protocol. It owns no listener of its own: it mounts its
// HTTP handlers through the httpMounts capability, authenticates every HTTP request with the caller's
// Gatehouse bearer token (the gateway capability's identify: the audience must be the gateway's issuer), and
// runs tools through the gateway's own PostgreSQL and SSH listeners with that same token.
//
//   POST|GET|DELETE /mcp           streamable HTTP (protocol 2025-03-26 and later)
//   GET  /mcp/sse, POST /mcp/messages   the HTTP+SSE transport of protocol 2024-11-05
//   GET  /.well-known/oauth-protected-resource[/mcp]   RFC 9728 protected-resource metadata

import { randomUUID, timingSafeEqual } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { Server } from '@modelcontextprotocol/sdk/server/index.js'
import { SSEServerTransport } from '@modelcontextprotocol/sdk/server/sse.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'
import { CallToolRequestSchema, isInitializeRequest, ListToolsRequestSchema } from '@modelcontextprotocol/sdk/types.js'
import { type Identity, PLUGIN_CONTRACT, type ProxyPlugin } from '../types.js'
import { LoopbackPg } from './loopback.js'
import { callTool, type McpContext, visibleTools } from './tools.js'

export const MCP_PATH = '/mcp'
export const SSE_PATH = '/mcp/sse'
export const SSE_MESSAGES_PATH = '/mcp/messages'
export const METADATA_PATH = '/.well-known/oauth-protected-resource'

/** Open MCP sessions at most (each may hold one PostgreSQL session per connection). */
export const MAX_SESSIONS = 1000
/** Open MCP sessions per credential at most (the oldest is closed to make room). */
export const MAX_SESSIONS_PER_TOKEN = 32
/** A session nobody used for this long is closed (and its PostgreSQL sessions with it). */
export const SESSION_IDLE_MS = 30 * 60_000

const SERVER_INFO = { name: 'gatehouse', version: '0.1.0' }
const INSTRUCTIONS =
  'Gatehouse gives you governed access to databases and hosts. Start with list_connections and describe_connection. ' +
  'Every statement is decided by policy for your whole delegation chain: a refusal names the rule and the hop that refused it, ' +
  'and retrying the same call will not change it. A statement held for approval returns a request id: poll approval_status, ' +
  'then call the tool again once it is approved. Use delegate to give a sub-agent a narrower, shorter-lived token.'

interface McpSession {
  readonly id: string
  readonly identity: Identity
  readonly token: string
  readonly transport: StreamableHTTPServerTransport | SSEServerTransport
  readonly pgs: Map<string, LoopbackPg>
  lastSeen: number
  closed: boolean
}

interface Caller {
  readonly identity: Identity
  readonly token: string
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.end()
    return
  }
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers })
  res.end(JSON.stringify(body))
}

function jsonRpcError(res: ServerResponse, status: number, code: number, message: string): void {
  sendJson(res, status, { jsonrpc: '2.0', error: { code, message }, id: null })
}

/** A Gatehouse token (a JWT); service-account keys always take the full identify path. */
const JWT_SHAPE = /^[\w-]+\.[\w-]+\.[\w-]+$/

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a)
  const y = Buffer.from(b)
  return x.length === y.length && timingSafeEqual(x, y)
}

function publicMessage(err: unknown): string {
  if (err instanceof Error && 'publicMessage' in err && typeof err.publicMessage === 'string') return err.publicMessage
  return 'authentication failed'
}

/** A quoted-string value for WWW-Authenticate (RFC 9110 §5.6.4). */
function quoted(s: string): string {
  return `"${s.replace(/[\\"]/g, '\\$&').replace(/[\r\n]/g, ' ')}"`
}

export class McpService {
  private readonly sessions = new Map<string, McpSession>()
  private readonly sweeper: NodeJS.Timeout
  private stopped = false

  constructor(private readonly ctx: McpContext) {
    this.sweeper = setInterval(() => this.sweep(), 60_000)
    this.sweeper.unref()
  }

  /**
   * The base URL clients know the gateway by: its issuer (tokens.issuer, else the API's URL). A
   * config that asks for port 0 has an issuer naming port 0; the bound API address stands in.
   */
  private get base(): string {
    const issuer = this.ctx.gateway.issuer.replace(/\/+$/, '')
    const api = this.ctx.gateway.listener('api')
    if (api && /:0$/.test(issuer)) return `${issuer.slice(0, -2)}:${api.port}`
    return issuer
  }

  /**
   * RFC 9728 metadata. The protected resource is the gateway as a whole, identified by its issuer
   * URL, which is also the default audience of its tokens: the token an agent presents at /mcp is
   * the password of its loopback PostgreSQL and SSH sessions, so it must be good for all of them.
   * The /mcp path variant serves the same document.
   */
  metadata(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '').split('?')[0] ?? ''
    if (path !== METADATA_PATH && path !== `${METADATA_PATH}${MCP_PATH}`) {
      sendJson(res, 404, { error: 'not found' })
      return
    }
    if (req.method !== 'GET') {
      sendJson(res, 405, { error: 'method not allowed' }, { allow: 'GET' })
      return
    }
    sendJson(res, 200, {
      resource: this.base,
      authorization_servers: [this.base],
      bearer_methods_supported: ['header'],
      resource_name: 'Gatehouse',
      resource_documentation: `${this.base}/v1/openapi.json`,
      scopes_supported: ['sql.read', 'sql.write', 'sql.ddl', 'sql.admin', 'sql.*', 'ssh.exec', 'ssh.*'],
    })
  }

  private unauthorized(res: ServerResponse, error?: { code: string; description: string }): void {
    const params = [`resource_metadata=${quoted(`${this.base}${METADATA_PATH}`)}`]
    if (error) params.push(`error=${quoted(error.code)}`, `error_description=${quoted(error.description)}`)
    sendJson(
      res,
      401,
      { error: error?.code ?? 'unauthorized', error_description: error?.description ?? 'a Gatehouse bearer token is required' },
      { 'www-authenticate': `Bearer ${params.join(', ')}` },
    )
  }

  /**
   * Every HTTP request proves its caller again: a revoked or expired token fails at once. Within a
   * session opened by this very token (same bytes), the signature and chain rules verified at
   * opening are not verified again (that is most of a call's cost); expiry and the revocation of
   * every hop are checked on every request.
   */
  private async authenticate(req: IncomingMessage, res: ServerResponse, sessionId: string | null): Promise<Caller | null> {
    const h = req.headers.authorization
    const m = typeof h === 'string' ? /^Bearer +(\S+)\s*$/i.exec(h) : null
    const token = m?.[1]
    if (!token) {
      this.unauthorized(res)
      return null
    }
    const s = sessionId === null ? undefined : this.sessions.get(sessionId)
    if (s && !s.closed && JWT_SHAPE.test(token) && sameSecret(token, s.token)) {
      if (s.identity.expiresAt * 1000 > Date.now() && !this.ctx.gateway.revoked(s.identity)) return { identity: s.identity, token: s.token }
    }
    try {
      return { identity: await this.ctx.gateway.identify(token), token }
    } catch (err) {
      // The token that opened this session is no longer good (revoked, expired): end the session
      // and its PostgreSQL sessions now rather than at the idle sweep.
      if (s && sameSecret(token, s.token)) this.close(s)
      this.unauthorized(res, { code: 'invalid_token', description: publicMessage(err) })
      return null
    }
  }

  /** The session named by the request, if it belongs to this very token; answers the refusal itself. */
  private sessionFor(id: string, caller: Caller, res: ServerResponse): McpSession | null {
    const s = this.sessions.get(id)
    if (!s || s.closed) {
      jsonRpcError(res, 404, -32001, 'Session not found')
      return null
    }
    // A session is bound to the credential that opened it (its exact bytes): another token, even
    // of the same chain, cannot ride on it. The caller starts a new session with its own token.
    if (!sameSecret(caller.token, s.token)) {
      jsonRpcError(res, 403, -32001, 'this MCP session belongs to another token')
      return null
    }
    s.lastSeen = Date.now()
    return s
  }

  async handle(req: IncomingMessage, res: ServerResponse, body: unknown): Promise<void> {
    if (this.stopped) return jsonRpcError(res, 503, -32000, 'the gateway is shutting down')
    const url = new URL(req.url ?? '/', 'http://gatehouse.invalid')
    const path = url.pathname.replace(/\/+$/, '') || '/'
    if (req.method === 'OPTIONS') {
      res.writeHead(204, { allow: 'GET, POST, DELETE, OPTIONS' })
      res.end()
      return
    }
    if (path !== MCP_PATH && path !== SSE_PATH && path !== SSE_MESSAGES_PATH) return sendJson(res, 404, { error: 'not found' })
    const header = req.headers['mcp-session-id']
    const sessionId = path === SSE_MESSAGES_PATH ? url.searchParams.get('sessionId') : typeof header === 'string' ? header : null
    const caller = await this.authenticate(req, res, sessionId)
    if (!caller) return

    if (path === SSE_PATH) {
      if (req.method !== 'GET') return sendJson(res, 405, { error: 'method not allowed' }, { allow: 'GET' })
      return this.openSse(caller, res)
    }
    if (path === SSE_MESSAGES_PATH) {
      if (req.method !== 'POST') return sendJson(res, 405, { error: 'method not allowed' }, { allow: 'POST' })
      const s = this.sessionFor(url.searchParams.get('sessionId') ?? '', caller, res)
      if (!s || !(s.transport instanceof SSEServerTransport)) {
        if (s) jsonRpcError(res, 400, -32000, 'not an HTTP+SSE session')
        return
      }
      return s.transport.handlePostMessage(req, res, body)
    }

    const sid = req.headers['mcp-session-id']
    if (typeof sid === 'string') {
      const s = this.sessionFor(sid, caller, res)
      if (!s) return
      if (!(s.transport instanceof StreamableHTTPServerTransport)) return jsonRpcError(res, 400, -32000, 'not a streamable HTTP session')
      return s.transport.handleRequest(req, res, body)
    }
    if (req.method !== 'POST' || !isInitializeRequest(body)) {
      return jsonRpcError(res, 400, -32000, 'Bad Request: no valid session id (start with an initialize request)')
    }
    if (this.sessions.size >= MAX_SESSIONS) return jsonRpcError(res, 503, -32000, 'too many open MCP sessions; try again later')
    const id = randomUUID()
    const transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => id,
      // Plain JSON answers: tool calls return one result, nothing to stream.
      enableJsonResponse: true,
    })
    const s = this.register(id, caller, transport)
    await this.serverFor(s).connect(transport)
    await transport.handleRequest(req, res, body)
  }

  private async openSse(caller: Caller, res: ServerResponse): Promise<void> {
    if (this.sessions.size >= MAX_SESSIONS) return jsonRpcError(res, 503, -32000, 'too many open MCP sessions; try again later')
    const transport = new SSEServerTransport(SSE_MESSAGES_PATH, res)
    const s = this.register(transport.sessionId, caller, transport)
    res.on('close', () => this.close(s))
    // connect() starts the transport: the stream opens with the `endpoint` event.
    await this.serverFor(s).connect(transport)
  }

  private register(id: string, caller: Caller, transport: McpSession['transport']): McpSession {
    // One credential keeps at most MAX_SESSIONS_PER_TOKEN sessions: a client that opens more loses
    // its least recently used one, so a single token cannot fill the gateway's session table.
    const mine = [...this.sessions.values()].filter((o) => sameSecret(o.token, caller.token))
    if (mine.length >= MAX_SESSIONS_PER_TOKEN) {
      mine.sort((a, b) => a.lastSeen - b.lastSeen)
      for (const o of mine.slice(0, mine.length - MAX_SESSIONS_PER_TOKEN + 1)) this.close(o)
    }
    const s: McpSession = {
      id,
      identity: caller.identity,
      token: caller.token,
      transport,
      pgs: new Map(),
      lastSeen: Date.now(),
      closed: false,
    }
    this.sessions.set(id, s)
    transport.onclose = () => this.close(s)
    this.ctx.log.info({ session: id, chain: caller.identity.chain.map((p) => p.id) }, 'mcp session opened')
    return s
  }

  private serverFor(s: McpSession): Server {
    const server = new Server(SERVER_INFO, { capabilities: { tools: { listChanged: false } }, instructions: INSTRUCTIONS })
    server.setRequestHandler(ListToolsRequestSchema, async () => ({ tools: await visibleTools(this.ctx, s.identity) }))
    server.setRequestHandler(CallToolRequestSchema, async (request) =>
      callTool(
        {
          ctx: this.ctx,
          identity: s.identity,
          token: s.token,
          session: s.id,
          pg: (connection) => {
            let p = s.pgs.get(connection)
            if (!p) {
              p = new LoopbackPg(() => this.ctx.gateway.listener('postgres'), connection, s.token, s.id)
              s.pgs.set(connection, p)
            }
            return p
          },
        },
        request.params.name,
        request.params.arguments,
      ),
    )
    return server
  }

  private close(s: McpSession): void {
    if (s.closed) return
    s.closed = true
    this.sessions.delete(s.id)
    for (const p of s.pgs.values()) void p.close()
    s.pgs.clear()
    void s.transport.close().catch(() => undefined)
    this.ctx.log.info({ session: s.id, chain: s.identity.chain.map((p) => p.id) }, 'mcp session closed')
  }

  private sweep(): void {
    const now = Date.now()
    for (const s of [...this.sessions.values()]) {
      // A session whose token has expired cannot make another call: close it now.
      if (now - s.lastSeen > SESSION_IDLE_MS || s.identity.expiresAt * 1000 <= now) this.close(s)
    }
  }

  async stop(): Promise<void> {
    this.stopped = true
    clearInterval(this.sweeper)
    for (const s of [...this.sessions.values()]) this.close(s)
  }
}

export const mcpPlugin: ProxyPlugin<Record<string, unknown>, 'gateway' | 'httpMounts'> = {
  name: 'mcp',
  contract: PLUGIN_CONTRACT,
  actions: ['mcp.call'],
  // Its tools run through the gateway's own PostgreSQL and SSH listeners.
  requires: ['postgres', 'ssh'],
  capabilities: ['gateway', 'httpMounts'],
  async start(ctx) {
    const service = new McpService(ctx)
    ctx.httpMounts.mount(MCP_PATH, (req, res, body) => service.handle(req, res, body))
    ctx.httpMounts.mount(METADATA_PATH, (req, res) => service.metadata(req, res))
    return { address: null, stop: () => service.stop() }
  },
}
