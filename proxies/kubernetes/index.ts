// The built-in Kubernetes API proxy plugin, written against the plugin contract: kubectl talks to
// `https://<listen.kubernetes>/c/<connection>` with its Gatehouse token; each request is decided as
// `kube.request` (verb, group, version, resource, subresource, namespace, name, as the API server
// parses them), audited, and forwarded with the gateway's own cluster credential and impersonation
// headers naming the caller. See README.md in this folder and docs/kubernetes.md.

import { GatehouseError } from '../kit/index.js'
import { parseUpstreamUrl } from '../http/public.js'
import { PLUGIN_CONTRACT, type ProxyHandle, type ProxyPlugin } from '../types.js'
import { KubeProxyServer } from './server.js'

const KNOWN_KEYS = ['url', 'ca', 'token', 'client_cert', 'client_key', 'impersonate', 'body_limit', 'record_body_bytes']

export const kubernetesPlugin: ProxyPlugin<Record<string, unknown>, 'gateway' | 'recordings'> = {
  name: 'kubernetes',
  contract: PLUGIN_CONTRACT,
  actions: ['kube.request'],
  capabilities: ['gateway', 'recordings'],
  secretKeys: ['token', 'client_key'],

  validateConnection(settings) {
    const problems: string[] = []
    for (const k of Object.keys(settings)) {
      if (!KNOWN_KEYS.includes(k)) problems.push(`${k}: unknown key for a kubernetes connection (allowed: ${KNOWN_KEYS.join(', ')})`)
    }
    const u = parseUpstreamUrl(settings.url)
    if (!u.ok) problems.push(u.problem.replace('use inject_headers', 'use token'))
    else if (u.url.protocol !== 'https:') problems.push('url: the API server is reached over https://')
    for (const k of ['ca', 'client_cert']) {
      if (settings[k] !== undefined && typeof settings[k] !== 'string') problems.push(`${k}: must be a file path`)
    }
    if ((settings.client_cert === undefined) !== (settings.client_key === undefined)) {
      problems.push('client_cert: client_cert and client_key go together')
    }
    if (settings.token === undefined && settings.client_cert === undefined) {
      problems.push('token: the gateway needs its own credential for the API server (token, or client_cert and client_key)')
    }
    if (settings.impersonate !== undefined && typeof settings.impersonate !== 'boolean') problems.push('impersonate: must be true or false')
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
    const server = new KubeProxyServer(ctx)
    let address: Awaited<ReturnType<KubeProxyServer['listen']>>
    try {
      address = await server.listen(listen)
    } catch (err) {
      throw new GatehouseError(
        'GH_ERR_CONFIG',
        `listen.kubernetes ${listen.host}:${listen.port}: cannot listen (${(err as NodeJS.ErrnoException).code ?? String(err)})`,
        { cause: err },
      )
    }
    return { address, stop: (reason) => server.stop(reason) }
  },
}
