// The built-in HTTP proxy plugin, written only against the published plugin contract: requests to
// `/c/<connection>/<path>` on `listen.http` are authenticated with the caller's Gatehouse token,
// decided per request (`http.request`), audited, and forwarded with credentials the gateway
// injects. See README.md in this folder and docs/http.md.

import { GatehouseError } from '../kit/index.js'
import { PLUGIN_CONTRACT, type ProxyHandle, type ProxyPlugin } from '../types.js'
import { HttpProxyServer } from './server.js'
import { parseUpstreamUrl } from './upstream.js'

const KNOWN_KEYS = [
  'url',
  'ca',
  'inject_headers',
  'client_cert',
  'client_key',
  'path_case',
  'path_params',
  'body_limit',
  'record_body_bytes',
]
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
/** Headers the gateway owns on the upstream hop. */
const NOT_INJECTABLE = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'upgrade', 'te', 'trailer', 'keep-alive'])

export const httpPlugin: ProxyPlugin<Record<string, unknown>, 'gateway' | 'recordings'> = {
  name: 'http',
  contract: PLUGIN_CONTRACT,
  actions: ['http.request'],
  capabilities: ['gateway', 'recordings'],
  // inject_headers is a map of header name → secret reference; each is resolved per session.
  secretKeys: ['inject_headers', 'client_key'],

  validateConnection(settings) {
    const problems: string[] = []
    for (const k of Object.keys(settings)) {
      if (!KNOWN_KEYS.includes(k)) problems.push(`${k}: unknown key for an http connection (allowed: ${KNOWN_KEYS.join(', ')})`)
    }
    const u = parseUpstreamUrl(settings.url)
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
    if (settings.path_case !== undefined && settings.path_case !== 'sensitive' && settings.path_case !== 'insensitive') {
      problems.push('path_case: must be sensitive or insensitive')
    }
    if (settings.path_params !== undefined && typeof settings.path_params !== 'boolean') problems.push('path_params: must be true or false')
    for (const k of ['body_limit', 'record_body_bytes']) {
      const v = settings[k]
      if (v !== undefined && (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 16 * 1024 * 1024)) {
        problems.push(`${k}: must be a number of bytes (0 to 16777216)`)
      }
    }
    return problems
  },

  async start(ctx): Promise<ProxyHandle> {
    const listen = ctx.listen
    if (!listen) return { address: null, stop: async () => undefined }
    const server = new HttpProxyServer(ctx)
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
