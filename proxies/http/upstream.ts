// The upstream side: one keep-alive pool per connection, whose sockets come from the gateway's
// dialer (ctx.dial: direct TCP today, a connector tunnel later) and are wrapped in TLS here for
// `https://` URLs, verified against the system CAs or the connection's `ca:`, with the client
// certificate and key when the connection names them.

import { readFileSync } from 'node:fs'
import { isIP, type Socket } from 'node:net'
import { connect as tlsConnect, rootCertificates } from 'node:tls'
import { Pool } from 'undici'
import type { Address, ProxyContext } from '../types.js'

export interface UpstreamSpec {
  readonly origin: string
  readonly tls: boolean
  readonly address: Address
  readonly servername: string
  readonly ca?: string | undefined
  readonly cert?: string | undefined
  readonly key?: string | undefined
}

/** Parses and checks a connection's `url:`: http(s), a host, no credentials, no path. */
export function parseUpstreamUrl(url: unknown): { ok: true; url: URL } | { ok: false; problem: string } {
  if (typeof url !== 'string') return { ok: false, problem: 'url: is required, as http://host[:port] or https://host[:port]' }
  let u: URL
  try {
    u = new URL(url)
  } catch {
    return { ok: false, problem: `url: not a URL (${JSON.stringify(url)})` }
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return { ok: false, problem: 'url: must be http:// or https://' }
  if (u.username || u.password) return { ok: false, problem: 'url: must not carry credentials (use inject_headers)' }
  if (u.pathname !== '/' || u.search || u.hash) {
    return { ok: false, problem: 'url: must be an origin (no path, query or fragment): the request path is sent as it was decided' }
  }
  return { ok: true, url: u }
}

export function upstreamSpec(settings: Readonly<Record<string, unknown>>, secrets: ReadonlyMap<string, string>): UpstreamSpec {
  const parsed = parseUpstreamUrl(settings.url)
  if (!parsed.ok) throw new Error(parsed.problem)
  const u = parsed.url
  const tls = u.protocol === 'https:'
  const host = u.hostname.replace(/^\[|\]$/g, '')
  const port = u.port ? Number(u.port) : tls ? 443 : 80
  return {
    origin: u.origin,
    tls,
    address: { host, port },
    servername: host,
    ca: typeof settings.ca === 'string' ? readFileSync(settings.ca, 'utf8') : undefined,
    cert: typeof settings.client_cert === 'string' ? readFileSync(settings.client_cert, 'utf8') : undefined,
    key: secrets.get('client_key'),
  }
}

/** A socket to the upstream through ctx.dial, in TLS verified (system CAs or `ca:`) for https. */
export async function dialUpstream(ctx: ProxyContext, spec: UpstreamSpec): Promise<Socket> {
  const socket = await ctx.dial(spec.address)
  if (!spec.tls) return socket
  return new Promise<Socket>((resolve, reject) => {
    const t = tlsConnect({
      socket,
      servername: isIP(spec.servername) ? undefined : spec.servername,
      host: spec.address.host,
      ca: spec.ca ?? [...rootCertificates],
      cert: spec.cert,
      key: spec.key,
      ALPNProtocols: ['http/1.1'],
      rejectUnauthorized: true,
    })
    const onError = (err: Error): void => {
      t.destroy()
      reject(err)
    }
    t.once('error', onError)
    t.once('secureConnect', () => {
      t.off('error', onError)
      resolve(t)
    })
  })
}

/** A pool for one connection; sockets through ctx.dial, TLS verified (never `rejectUnauthorized: false`). */
export function createPool(ctx: ProxyContext, spec: UpstreamSpec, timeouts: { readonly bodyTimeout?: number } = {}): Pool {
  return new Pool(spec.origin, {
    connections: 64,
    pipelining: 1,
    keepAliveTimeout: 10_000,
    headersTimeout: 60_000,
    // A Kubernetes watch may be quiet for minutes: its plugin passes 0 (no limit between chunks).
    bodyTimeout: timeouts.bodyTimeout ?? 60_000,
    connect: (_opts, callback) => {
      dialUpstream(ctx, spec).then(
        (socket) => callback(null, socket),
        (err: unknown) => callback(err instanceof Error ? err : new Error(String(err)), null),
      )
    },
  })
}
