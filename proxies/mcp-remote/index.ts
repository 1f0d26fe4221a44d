// Remote MCP servers behind the gateway: connections of protocol `mcp-remote` name an MCP server
// that speaks Streamable HTTP. An agent talks MCP to the gateway at `/mcp-remote/<connection>` on
// the API listener with its Gatehouse token; the gateway is an MCP server toward the agent and an
// MCP client toward the upstream (one upstream session per agent session), so every message the
// upstream receives is one the gateway built from what it decided. See README.md and
// docs/mcp-remote.md.

import { GatehouseError } from '../kit/index.js'
import { PLUGIN_CONTRACT, type ProxyPlugin } from '../types.js'
import { MAX_SESSIONS, MOUNT_PATH, RemoteMcpService } from './service.js'

const KNOWN_KEYS = ['url', 'ca', 'inject_headers', 'client_cert', 'client_key', 'call_timeout', 'max_sessions_per_root']
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
/** Headers the gateway or the MCP transport owns on the upstream hop. */
const NOT_INJECTABLE = new Set([
  'host',
  'content-length',
  'content-type',
  'transfer-encoding',
  'connection',
  'upgrade',
  'te',
  'trailer',
  'keep-alive',
  'accept',
  'accept-encoding',
  'mcp-session-id',
  'mcp-protocol-version',
  'last-event-id',
])

/** The upstream's MCP endpoint: an http(s) URL with a path, no credentials, query or fragment. */
export function parseMcpUrl(url: unknown): { ok: true; url: URL } | { ok: false; problem: string } {
  if (typeof url !== 'string') return { ok: false, problem: 'url: is required, as the MCP endpoint (https://host[:port]/mcp)' }
  let u: URL
  try {
    u = new URL(url)
  } catch {
    return { ok: false, problem: `url: not a URL (${JSON.stringify(url)})` }
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return { ok: false, problem: 'url: must be http:// or https://' }
  if (u.username || u.password) return { ok: false, problem: 'url: must not carry credentials (use inject_headers)' }
  if (u.search || u.hash) return { ok: false, problem: 'url: must not have a query or fragment' }
  return { ok: true, url: u }
}

export const mcpRemotePlugin: ProxyPlugin<Record<string, unknown>, 'gateway' | 'httpMounts'> = {
  name: 'mcp-remote',
  contract: PLUGIN_CONTRACT,
  actions: ['mcp.call', 'mcp.resource', 'mcp.prompt'],
  capabilities: ['gateway', 'httpMounts'],
  secretKeys: ['inject_headers', 'client_key'],

  validateConnection(settings) {
    const problems: string[] = []
    for (const k of Object.keys(settings)) {
      if (!KNOWN_KEYS.includes(k)) problems.push(`${k}: unknown key for an mcp-remote connection (allowed: ${KNOWN_KEYS.join(', ')})`)
    }
    const u = parseMcpUrl(settings.url)
    if (!u.ok) problems.push(u.problem)
    for (const k of ['ca', 'client_cert']) {
      if (settings[k] !== undefined && typeof settings[k] !== 'string') problems.push(`${k}: must be a file path`)
    }
    if ((settings.client_cert === undefined) !== (settings.client_key === undefined)) {
      problems.push('client_cert: client_cert and client_key go together')
    }
    const inject = settings.inject_headers
    if (inject !== undefined) {
      if (typeof inject !== 'object' || inject === null || Array.isArray(inject)) {
        problems.push('inject_headers: must be a mapping of header name to secret reference')
      } else {
        for (const name of Object.keys(inject)) {
          if (!HEADER_NAME.test(name)) problems.push(`inject_headers.${name}: not a valid header name`)
          else if (NOT_INJECTABLE.has(name.toLowerCase())) problems.push(`inject_headers.${name}: the gateway sets this header itself`)
        }
      }
    }
    const t = settings.call_timeout
    if (t !== undefined && (typeof t !== 'number' || !Number.isInteger(t) || t < 1 || t > 3600)) {
      problems.push('call_timeout: must be a number of seconds (1 to 3600)')
    }
    const r = settings.max_sessions_per_root
    if (r !== undefined && (typeof r !== 'number' || !Number.isInteger(r) || r < 1 || r > MAX_SESSIONS)) {
      problems.push(`max_sessions_per_root: must be a whole number of sessions (1 to ${MAX_SESSIONS})`)
    }
    return problems
  },

  async start(ctx) {
    const service = new RemoteMcpService(ctx)
    try {
      ctx.httpMounts.mount(MOUNT_PATH, (req, res, body) => service.handle(req, res, body))
    } catch (err) {
      throw new GatehouseError('GH_ERR_CONFIG', `mcp-remote: cannot mount ${MOUNT_PATH} on the API listener`, { cause: err })
    }
    return { address: null, stop: (reason) => service.stop(reason) }
  },
}
