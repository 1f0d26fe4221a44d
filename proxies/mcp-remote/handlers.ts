// The handlers of the agent-facing MCP server: tools, resources and prompts, listed as the chain
// may see them and called, read or fetched only through the bridge's gate (decided and audited
// first), with results masked and embedded resources the chain may not read withheld.

import type { Client } from '@modelcontextprotocol/sdk/client/index.js'
import type { Server } from '@modelcontextprotocol/sdk/server/index.js'
import {
  CallToolRequestSchema,
  CallToolResultSchema,
  ErrorCode,
  GetPromptRequestSchema,
  GetPromptResultSchema,
  ListPromptsRequestSchema,
  ListPromptsResultSchema,
  ListResourcesRequestSchema,
  ListResourcesResultSchema,
  ListResourceTemplatesRequestSchema,
  ListResourceTemplatesResultSchema,
  ListToolsRequestSchema,
  ListToolsResultSchema,
  McpError,
  type ProgressToken,
  ReadResourceRequestSchema,
  ReadResourceResultSchema,
  type ServerCapabilities,
} from '@modelcontextprotocol/sdk/types.js'
import type { Command, Decision, MaskObligation } from '../types.js'
import { auditArguments, canonical } from './arguments.js'
import { type JsonMaskPlan, jsonMaskPlan, type MaskingKeys } from '../kit/index.js'
import { RpcError } from './errors.js'
import type { ResultMasker } from './masking.js'
import * as listed from './messages.js'
import { canonicalUri } from './uris.js'

type Allowed = Extract<Decision, { effect: 'allow' }>

/** What the handlers use of a bridge (bridge.ts). */
export interface HandlerHost {
  readonly connectionName: string
  readonly callTimeoutMs: number
  readonly inflight: (string | number)[]
  listed(action: string, command: Command): Promise<Decision | null>
  visible(action: string, command: Command): Promise<boolean>
  maskerFor(decision: Allowed): ResultMasker | null
  withholdEmbedded(items: readonly unknown[]): Promise<{ items: unknown[]; withheld: number }>
  readable(uri: unknown): Promise<{ ok: true } | { ok: false; reason: string }>
  maskedSession(): readonly MaskObligation[] | null
  maskingKeys(): MaskingKeys
  cursorOut(cursor: string | undefined): string | undefined
  cursorIn(cursor: string | undefined): string | undefined
  gate(
    method: string,
    action: string,
    command: Command,
    audited: Record<string, unknown>,
    display: string,
    signal: AbortSignal,
  ): Promise<{ seq: number; decision: Allowed }>
  result(action: string, seq: number, started: number, fields: Record<string, unknown>): void
  upstreamError(err: unknown, masked?: boolean): Error
}

/** What an item of a list is masked by on a masked session: the session's rules and its own decision's. */
function itemPlan(session: readonly MaskObligation[], d: Decision): JsonMaskPlan | null {
  return jsonMaskPlan(d.effect === 'allow' && d.mask.length > 0 ? [...session, ...d.mask] : session)
}

type Obj = Record<string, unknown>

export function registerHandlers(b: HandlerHost, server: Server, client: Client, caps: ServerCapabilities): void {
  const conn = b.connectionName
  const opts = (signal: AbortSignal) => ({ signal, timeout: b.callTimeoutMs })
  /** The params of an upstream list request: the upstream's cursor for the agent's. */
  const page = (cursor: string | undefined): { cursor?: string } => {
    const c = b.cursorIn(cursor)
    return c === undefined ? {} : { cursor: c }
  }
  const next = (cursor: string | undefined): { nextCursor?: string } => {
    const c = b.cursorOut(cursor || undefined)
    return c === undefined ? {} : { nextCursor: c }
  }
  if (caps.tools) {
    server.setRequestHandler(ListToolsRequestSchema, async (r, extra) => {
      const up = await client
        .request({ method: 'tools/list', params: page(r.params?.cursor) }, ListToolsResultSchema, opts(extra.signal))
        .catch((err: unknown) => {
          throw b.upstreamError(err)
        })
      const session = b.maskedSession()
      const tools = []
      for (const t of up.tools) {
        const d = await b.listed('mcp.call', { server: conn, tool: t.name, arguments: {} })
        if (!d) continue
        if (session !== null) tools.push(listed.tool(t as Obj, itemPlan(session, d), b.maskingKeys()))
        // Masked values need not fit the tool's output schema: a client would refuse them.
        else if (d.effect === 'allow' && jsonMaskPlan(d.mask) !== null && t.outputSchema !== undefined) {
          const { outputSchema: _dropped, ...rest } = t
          tools.push(rest)
        } else tools.push(t)
      }
      return { tools, ...next(up.nextCursor) } as typeof up
    })
    server.setRequestHandler(CallToolRequestSchema, async (r, extra) => {
      const name = r.params.name
      const args = r.params.arguments ?? {}
      const { seq, decision } = await b.gate(
        'tools/call',
        'mcp.call',
        { server: conn, tool: name, arguments: args },
        { tool: name, ...auditArguments(args) },
        `tools/call ${name} ${canonical(args).slice(0, 2000)}`,
        extra.signal,
      )
      const started = Date.now()
      const progressToken: ProgressToken | undefined = r.params._meta?.progressToken
      const m = b.maskerFor(decision)
      b.inflight.push(extra.requestId)
      try {
        const out = await client.request({ method: 'tools/call', params: { name, arguments: args } }, CallToolResultSchema, {
          ...opts(extra.signal),
          resetTimeoutOnProgress: true,
          ...(progressToken !== undefined
            ? {
                onprogress: (p) => {
                  // On a masked session only the numbers are relayed: the message is the upstream's
                  // free text, and its _meta (or any field it adds) is not the gateway's to pass on.
                  const params =
                    b.maskedSession() === null ? p : { progress: p.progress, ...(typeof p.total === 'number' ? { total: p.total } : {}) }
                  void extra
                    .sendNotification({ method: 'notifications/progress', params: { ...params, progressToken } })
                    .catch(() => undefined)
                },
              }
            : {}),
        })
        const embedded = await b.withholdEmbedded(out.content)
        const withEmbedded = { ...out, content: embedded.items as typeof out.content }
        const result = m ? (m.toolResult(withEmbedded) as typeof out) : withEmbedded
        b.result('mcp.call', seq, started, {
          is_error: out.isError === true,
          ...(embedded.withheld > 0 ? { withheld_resources: embedded.withheld } : {}),
          ...(m ? m.summary() : {}),
        })
        return result
      } catch (err) {
        b.result('mcp.call', seq, started, { error: err instanceof McpError ? `upstream error ${err.code}` : 'upstream failure' })
        throw b.upstreamError(err, m !== null)
      } finally {
        const i = b.inflight.lastIndexOf(extra.requestId)
        if (i >= 0) b.inflight.splice(i, 1)
      }
    })
  }
  if (caps.resources) {
    server.setRequestHandler(ListResourcesRequestSchema, async (r, extra) => {
      const up = await client
        .request({ method: 'resources/list', params: page(r.params?.cursor) }, ListResourcesResultSchema, opts(extra.signal))
        .catch((err: unknown) => {
          throw b.upstreamError(err)
        })
      const session = b.maskedSession()
      const resources = []
      for (const x of up.resources) {
        const uri = canonicalUri(x.uri)
        const d = uri === null ? null : await b.listed('mcp.resource', { server: conn, uri })
        if (d === null || uri === null) continue
        resources.push(session === null ? x : listed.resource(x as Obj, uri, itemPlan(session, d), b.maskingKeys()))
      }
      return { resources, ...next(up.nextCursor) } as typeof up
    })
    server.setRequestHandler(ListResourceTemplatesRequestSchema, async (r, extra) => {
      const up = await client
        .request(
          { method: 'resources/templates/list', params: page(r.params?.cursor) },
          ListResourceTemplatesResultSchema,
          opts(extra.signal),
        )
        .catch((err: unknown) => {
          throw b.upstreamError(err)
        })
      const session = b.maskedSession()
      const resourceTemplates = []
      for (const x of up.resourceTemplates) {
        const d = await b.listed('mcp.resource', { server: conn, uri: x.uriTemplate, template: true })
        if (d === null) continue
        resourceTemplates.push(session === null ? x : listed.template(x as Obj, itemPlan(session, d), b.maskingKeys()))
      }
      return { resourceTemplates, ...next(up.nextCursor) } as typeof up
    })
    server.setRequestHandler(ReadResourceRequestSchema, async (r, extra) => {
      // The URI judged is the one the upstream will read: its canonical form, sent as judged.
      const uri = canonicalUri(r.params.uri)
      if (uri === null) throw new RpcError(ErrorCode.InvalidParams, 'gatehouse: the resource URI does not parse as a URL; nothing was read')
      const { seq, decision } = await b.gate(
        'resources/read',
        'mcp.resource',
        { server: conn, uri },
        { uri },
        `resources/read ${uri}`,
        extra.signal,
      )
      const started = Date.now()
      const m = b.maskerFor(decision)
      try {
        const out = await client.request({ method: 'resources/read', params: { uri } }, ReadResourceResultSchema, opts(extra.signal))
        // Contents naming another resource than the one read are reads the upstream did on its own:
        // each is decided, and one the chain may not read is withheld.
        let other = 0
        const contents: typeof out.contents = []
        for (const c of out.contents) {
          if (canonicalUri(c.uri) === uri) {
            contents.push(c)
            continue
          }
          const v = await b.readable(c.uri)
          if (v.ok) contents.push(c)
          else {
            other++
            contents.push({ uri, mimeType: 'text/plain', text: `gatehouse: withheld contents of another resource: ${v.reason}` })
          }
        }
        const checked = { ...out, contents }
        const result = m ? (m.readResult(checked) as typeof out) : checked
        b.result('mcp.resource', seq, started, {
          contents: out.contents.length,
          ...(other > 0 ? { withheld_resources: other } : {}),
          ...(m ? m.summary() : {}),
        })
        return result
      } catch (err) {
        b.result('mcp.resource', seq, started, { error: err instanceof McpError ? `upstream error ${err.code}` : 'upstream failure' })
        throw b.upstreamError(err, m !== null)
      }
    })
  }
  if (caps.prompts) {
    server.setRequestHandler(ListPromptsRequestSchema, async (r, extra) => {
      const up = await client
        .request({ method: 'prompts/list', params: page(r.params?.cursor) }, ListPromptsResultSchema, opts(extra.signal))
        .catch((err: unknown) => {
          throw b.upstreamError(err)
        })
      const session = b.maskedSession()
      const prompts = []
      for (const p of up.prompts) {
        const d = await b.listed('mcp.prompt', { server: conn, prompt: p.name, arguments: {} })
        if (d === null) continue
        prompts.push(session === null ? p : listed.prompt(p as Obj, itemPlan(session, d), b.maskingKeys()))
      }
      return { prompts, ...next(up.nextCursor) } as typeof up
    })
    server.setRequestHandler(GetPromptRequestSchema, async (r, extra) => {
      const name = r.params.name
      const args = r.params.arguments ?? {}
      const { seq, decision } = await b.gate(
        'prompts/get',
        'mcp.prompt',
        { server: conn, prompt: name, arguments: args },
        { prompt: name, ...auditArguments(args) },
        `prompts/get ${name} ${canonical(args).slice(0, 2000)}`,
        extra.signal,
      )
      const started = Date.now()
      const masker = b.maskerFor(decision)
      try {
        const out = await client.request(
          { method: 'prompts/get', params: { name, arguments: args } },
          GetPromptResultSchema,
          opts(extra.signal),
        )
        let withheld = 0
        const messages: typeof out.messages = []
        for (const m of out.messages) {
          const e = await b.withholdEmbedded([m.content])
          withheld += e.withheld
          messages.push({ ...m, content: e.items[0] as typeof m.content })
        }
        const checked = { ...out, messages }
        const result = masker ? (masker.promptResult(checked) as typeof out) : checked
        b.result('mcp.prompt', seq, started, {
          messages: out.messages.length,
          ...(withheld > 0 ? { withheld_resources: withheld } : {}),
          ...(masker ? masker.summary() : {}),
        })
        return result
      } catch (err) {
        b.result('mcp.prompt', seq, started, { error: err instanceof McpError ? `upstream error ${err.code}` : 'upstream failure' })
        throw b.upstreamError(err, masker !== null)
      }
    })
  }
}
