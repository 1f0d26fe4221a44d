// The built-in HTTP proxy plugin, written only against the published plugin contract: requests to
// `/c/<connection>/<path>` on `listen.http` are authenticated with the caller's Gatehouse token,
// decided per request (`http.request`), audited, and forwarded with credentials the gateway
// injects. See README.md in this folder and docs/http.md.

import { z } from 'zod'
import { GatehouseError } from '../kit/index.js'
import { PLUGIN_CONTRACT, type ProxyHandle, type ProxyPlugin } from '../types.js'
import { HttpProxyServer } from './server.js'
import { HostRoutes, hostEntryProblem } from './target.js'
import { parseUpstreamUrl } from './upstream.js'

const KNOWN_KEYS = [
  'url',
  'ca',
  'inject_headers',
  'client_cert',
  'client_key',
  'hosts',
  'path_case',
  'path_params',
  'body_limit',
  'record_body_bytes',
]
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
/** Headers the gateway owns on the upstream hop. */
const NOT_INJECTABLE = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'upgrade', 'te', 'trailer', 'keep-alive'])
const MAX_BODY_SETTING = 16 * 1024 * 1024

const bytes = z
  .number({ error: `must be a number of bytes (0 to ${MAX_BODY_SETTING})` })
  .int({ error: `must be a number of bytes (0 to ${MAX_BODY_SETTING})` })
  .min(0, { error: `must be a number of bytes (0 to ${MAX_BODY_SETTING})` })
  .max(MAX_BODY_SETTING, { error: `must be a number of bytes (0 to ${MAX_BODY_SETTING})` })

/** The keys of a `protocol: http` connection, in the configuration's schema. */
export const httpConnectionSchema = z
  .strictObject(
    {
      url: z
        .string({ error: 'is required, as http://host[:port] or https://host[:port]' })
        .superRefine((u, ctx) => {
          const r = parseUpstreamUrl(u)
          if (!r.ok) ctx.addIssue({ code: 'custom', message: r.problem.replace(/^url: /, '') })
        })
        .describe('the upstream origin, http(s)://host[:port], no path'),
      ca: z.string({ error: 'must be a file path' }).optional().describe("PEM file of the CA that signs the upstream's certificate"),
      // Header name → secret reference (env:NAME or file:PATH): the gateway checks the references.
      inject_headers: z
        .record(z.string(), z.string({ error: 'must be a secret reference (env:NAME or file:PATH), never the secret itself' }), {
          error: 'must be a mapping of header name to secret reference',
        })
        .superRefine((m, ctx) => {
          for (const name of Object.keys(m)) {
            if (!HEADER_NAME.test(name)) ctx.addIssue({ code: 'custom', path: [name], message: 'not a valid header name' })
            else if (NOT_INJECTABLE.has(name.toLowerCase()))
              ctx.addIssue({ code: 'custom', path: [name], message: 'the gateway sets this header itself' })
          }
        })
        .optional()
        .describe('header name → secret reference, sent upstream and never shown to the caller'),
      client_cert: z.string({ error: 'must be a file path' }).optional().describe('client certificate (PEM file) for mutual TLS'),
      client_key: z
        .string({ error: 'must be a secret reference (env:NAME or file:PATH), never the secret itself' })
        .optional()
        .describe("the client certificate's key, a secret reference"),
      hosts: z
        .array(
          z.string({ error: 'must be a host name, or host:port' }).superRefine((h, ctx) => {
            const p = hostEntryProblem(h)
            if (p) ctx.addIssue({ code: 'custom', message: p })
          }),
          { error: 'must be a list of host names (host or host:port)' },
        )
        .optional()
        .describe('host names that reach this connection by the Host header, the path sent unchanged'),
      path_case: z
        .enum(['sensitive', 'insensitive'], { error: (iss) => `must be sensitive or insensitive (got ${JSON.stringify(iss.input)})` })
        .optional(),
      path_params: z.boolean({ error: 'must be true or false' }).optional(),
      body_limit: bytes.optional().describe('JSON request bodies up to this many bytes are parsed for policy (default 65536)'),
      record_body_bytes: bytes.optional().describe('bytes of each body kept in recordings (default 4096)'),
    },
    {
      error: (iss) =>
        iss.code === 'unrecognized_keys' ? `unknown key for an http connection (allowed: ${KNOWN_KEYS.join(', ')})` : undefined,
    },
  )
  .superRefine((c, ctx) => {
    if ((c.client_cert === undefined) !== (c.client_key === undefined)) {
      ctx.addIssue({ code: 'custom', path: ['client_cert'], message: 'client_cert and client_key go together' })
    }
  })

export const httpPlugin: ProxyPlugin<Record<string, unknown>, 'gateway' | 'recordings' | 'fastPath'> = {
  name: 'http',
  contract: PLUGIN_CONTRACT,
  actions: ['http.request'],
  capabilities: ['gateway', 'recordings', 'fastPath'],
  // inject_headers is a map of header name → secret reference; each is resolved per session.
  secretKeys: ['inject_headers', 'client_key'],

  connectionSchema: httpConnectionSchema,

  async start(ctx): Promise<ProxyHandle> {
    const listen = ctx.listen
    if (!listen) return { address: null, stop: async () => undefined }
    const hosts = new HostRoutes()
    for (const c of ctx.gateway.connections()) {
      if (c.protocol !== 'http') continue
      const entries = ctx.gateway.connectionSettings(c.name)?.hosts
      if (!Array.isArray(entries)) continue
      try {
        hosts.add(c.name, entries.map(String))
      } catch (err) {
        throw new GatehouseError('GH_ERR_CONFIG', (err as Error).message)
      }
    }
    const server = new HttpProxyServer(ctx, hosts)
    let address: Awaited<ReturnType<HttpProxyServer['listen']>>
    try {
      address = await server.listen(listen)
    } catch (err) {
      throw new GatehouseError(
        'GH_ERR_CONFIG',
        `listen.http ${listen.host}:${listen.port}: cannot listen (${(err as NodeJS.ErrnoException).code ?? String(err)})`,
        { cause: err },
      )
    }
    return { address, stop: (reason) => server.stop(reason) }
  },
}
