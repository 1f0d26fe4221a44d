// The handlers of the agent-facing MCP server: tools, resources and prompts, listed as the chain
// may see them and called, read or fetched only through the bridge's gate (decided and audited
// first), with results masked and embedded resources the chain may not read withheld.

import type { Client } from '@modelcontextprotocol/sdk/client/index.js'
import type { Server } from '@modelcontextprotocol/sdk/server/index.js'
import {
  CallToolRequestSchema,
  CallToolResultSchema,
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
import type { Command, Decision } from '../types.js'
import { auditArguments, canonical } from './arguments.js'
import { jsonMaskPlan } from '../kit/index.js'
import type { ResultMasker } from './masking.js'

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
  gate(
    method: string,
    action: string,
    command: Command,
    audited: Record<string, unknown>,
    display: string,
    signal: AbortSignal,
  ): Promise<{ seq: number; decision: Allowed }>
  result(action: string, seq: number, started: number, fields: Record<string, unknown>): void
  upstreamError(err: unknown): Error
}

export function registerHandlers(b: HandlerHost, server: Server, client: Client, caps: ServerCapabilities): void {
  const conn = b.connectionName
  const opts = (signal: AbortSignal) => ({ signal, timeout: b.callTimeoutMs })
  if (caps.tools) {
    server.setRequestHandler(ListToolsRequestSchema, async (r, extra) => {
      const up = await client
        .request(
          { method: 'tools/list', params: r.params?.cursor ? { cursor: r.params.cursor } : {} },
          ListToolsResultSchema,
          opts(extra.signal),
        )
        .catch((err: unknown) => {
          throw b.upstreamError(err)
        })
      const tools = []
      for (const t of up.tools) {
        const d = await b.listed('mcp.call', { server: conn, tool: t.name, arguments: {} })
        if (!d) continue
        // Masked values need not fit the tool's output schema: a client would refuse them.
        if (d.effect === 'allow' && jsonMaskPlan(d.mask) !== null && t.outputSchema !== undefined) {
          const { outputSchema: _dropped, ...rest } = t
          tools.push(rest)
        } else tools.push(t)
      }
      return { tools, ...(up.nextCursor ? { nextCursor: up.nextCursor } : {}) }
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
      b.inflight.push(extra.requestId)
      try {
        const out = await client.request({ method: 'tools/call', params: { name, arguments: args } }, CallToolResultSchema, {
          ...opts(extra.signal),
          resetTimeoutOnProgress: true,
          ...(progressToken !== undefined
            ? {
                onprogress: (p) =>
                  void extra.sendNotification({ method: 'notifications/progress', params: { ...p, progressToken } }).catch(() => undefined),
              }
            : {}),
        })
        const embedded = await b.withholdEmbedded(out.content)
        const m = b.maskerFor(decision)
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
        b.result('mcp.call', seq, started, {
          is_error: out.isError === true,
          ...(embedded.withheld > 0 ? { withheld_resources: embedded.withheld } : {}),
          ...(m ? m.summary() : {}),
        })
        return result
      } catch (err) {
        b.result('mcp.call', seq, started, { error: err instanceof McpError ? `upstream error ${err.code}` : 'upstream failure' })
        throw b.upstreamError(err)
      } finally {
        const i = b.inflight.lastIndexOf(extra.requestId)
        if (i >= 0) b.inflight.splice(i, 1)
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
          throw b.upstreamError(err)
        })
      const resources = []
      for (const x of up.resources) if (await b.visible('mcp.resource', { server: conn, uri: x.uri })) resources.push(x)
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
          throw b.upstreamError(err)
        })
      const resourceTemplates = []
      for (const x of up.resourceTemplates) {
        if (await b.visible('mcp.resource', { server: conn, uri: x.uriTemplate, template: true })) resourceTemplates.push(x)
      }
      return { resourceTemplates, ...(up.nextCursor ? { nextCursor: up.nextCursor } : {}) }
    })
    server.setRequestHandler(ReadResourceRequestSchema, async (r, extra) => {
      const uri = r.params.uri
      const { seq, decision } = await b.gate(
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
        const m = b.maskerFor(decision)
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
        b.result('mcp.resource', seq, started, { contents: out.contents.length, ...(m ? m.summary() : {}) })
        return { ...out, contents }
      } catch (err) {
        b.result('mcp.resource', seq, started, { error: err instanceof McpError ? `upstream error ${err.code}` : 'upstream failure' })
        throw b.upstreamError(err)
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
          throw b.upstreamError(err)
        })
      const prompts = []
      for (const p of up.prompts) if (await b.visible('mcp.prompt', { server: conn, prompt: p.name, arguments: {} })) prompts.push(p)
      return { prompts, ...(up.nextCursor ? { nextCursor: up.nextCursor } : {}) }
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
      try {
        const out = await client.request(
          { method: 'prompts/get', params: { name, arguments: args } },
          GetPromptResultSchema,
          opts(extra.signal),
        )
        let withheld = 0
        const masker = b.maskerFor(decision)
        const messages: typeof out.messages = []
        for (const m of out.messages) {
          const e = await b.withholdEmbedded([m.content])
          withheld += e.withheld
          const content = masker ? masker.item(e.items[0]) : e.items[0]
          messages.push({ ...m, content: content as typeof m.content })
        }
        b.result('mcp.prompt', seq, started, {
          messages: out.messages.length,
          ...(withheld > 0 ? { withheld_resources: withheld } : {}),
          ...(masker ? masker.summary() : {}),
        })
        return { ...out, messages }
      } catch (err) {
        b.result('mcp.prompt', seq, started, { error: err instanceof McpError ? `upstream error ${err.code}` : 'upstream failure' })
        throw b.upstreamError(err)
      }
    })
  }
}
