// What a Kubernetes request is for policy and for the API server: the decision input (verb,
// resource, …, exec argv; a write's body is read in body.ts), the headers sent upstream (the
// gateway's credential, impersonation of the caller), and the shapes the listener and the stream
// handler share.

import type { IncomingMessage } from 'node:http'
import type { Pool } from 'undici'
import { connectionTokens, HOP_BY_HOP_HEADERS, runsOtherCommands } from '../kit/index.js'
import type { Address, Decision, PluginContext, ProxySession } from '../types.js'
import type { KubeRequestInfo } from './request.js'
import type { StatusAnswer } from './status.js'

export interface KubePlan {
  readonly pool: Pool
  /** `Authorization` value for the API server, when the connection uses a bearer token. */
  readonly authorization: string | null
  readonly impersonate: boolean
  readonly bodyLimit: number
  readonly recordBytes: number
}

export type SessionSlot = { ok: true; session: ProxySession; plan: KubePlan } | { ok: false; status: number; detail: string }

/** The Gatehouse token: `Authorization: Bearer` (what kubectl sends from the exec credential). */
export function bearer(req: IncomingMessage): string | null {
  const v = req.headers.authorization
  if (typeof v !== 'string') return null
  const m = /^Bearer[ ]+([A-Za-z0-9\-._~+/]+=*)\s*$/i.exec(v)
  return m ? (m[1] as string) : null
}

/** Impersonation headers from the caller would make the gateway's credential act as someone else. */
export function callerImpersonates(req: IncomingMessage): boolean {
  return Object.keys(req.headers).some((h) => h.startsWith('impersonate-'))
}

/** The headers naming the caller to the cluster: the chain's root, its groups, and the whole chain as an extra. */
export function impersonationHeaders(session: ProxySession): Record<string, string | string[]> {
  const chain = session.identity.chain
  const root = chain[0]
  if (!root) return {}
  const out: Record<string, string | string[]> = { 'impersonate-user': root.id }
  if (root.groups.length > 0) out['impersonate-group'] = [...root.groups]
  out['impersonate-extra-gatehouse.dev%2fchain'] = chain.map((p) => p.id)
  out['impersonate-extra-gatehouse.dev%2fsession'] = session.id
  return out
}

/** The headers sent to the API server: the caller's (credentials removed) and the gateway's. */
export function upstreamHeaders(
  req: IncomingMessage,
  session: ProxySession,
  plan: KubePlan,
  forceJson: boolean,
): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  const raw = req.rawHeaders
  const hop = connectionTokens(req)
  for (let i = 0; i < raw.length; i += 2) {
    const name = (raw[i] as string).toLowerCase()
    if (HOP_BY_HOP_HEADERS.has(name) || hop.has(name) || name.startsWith('impersonate-')) continue
    if (forceJson && (name === 'accept' || name === 'accept-encoding')) continue
    const prev = out[name]
    const value = raw[i + 1] as string
    out[name] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value]
  }
  if (forceJson) {
    // Masked answers are rewritten: they must come as JSON (not protobuf, not compressed). The
    // caller's JSON alternatives are kept (kubectl asks for a Table, as JSON, for `get`).
    const json = String(req.headers.accept ?? '')
      .split(',')
      .map((t) => t.trim())
      .filter((t) => /^application\/json(\s*;|$)/i.test(t))
    out.accept = json.length > 0 ? json.join(', ') : 'application/json'
    out['accept-encoding'] = 'identity'
  }
  if (plan.authorization) out.authorization = plan.authorization
  if (plan.impersonate) Object.assign(out, impersonationHeaders(session))
  return out
}

/** Programs that run other programs (beside the kit's list, shared with SSH): an exec argv starting with one is opaque to policy. */
const LAUNCHERS = new Set([
  'sh',
  'bash',
  'dash',
  'zsh',
  'ash',
  'ksh',
  'csh',
  'tcsh',
  'fish',
  'busybox',
  'env',
  'sudo',
  'su',
  'doas',
  'xargs',
  'nohup',
  'timeout',
  'nice',
  'ionice',
  'chroot',
  'nsenter',
  'setsid',
  'stdbuf',
  'time',
  'watch',
  'flock',
  'script',
  'find',
  'python',
  'python2',
  'python3',
  'perl',
  'ruby',
  'node',
  'php',
  'lua',
  'awk',
  'gawk',
  'mawk',
  'tclsh',
  'expect',
])

export function opaqueArgv(argv: readonly string[]): string | null {
  if (argv.length === 0) return 'no command'
  const first = argv[0] as string
  const base = first.slice(first.lastIndexOf('/') + 1).replace(/[0-9.]+$/, (m) => (m === first ? m : ''))
  const whole = first.slice(first.lastIndexOf('/') + 1)
  if (LAUNCHERS.has(base) || LAUNCHERS.has(whole) || runsOtherCommands(base) || runsOtherCommands(whole))
    return `${base} runs other commands`
  return null
}

export function commandFor(info: KubeRequestInfo, query: URLSearchParams): Record<string, unknown> {
  const command: Record<string, unknown> = {
    verb: info.verb,
    resource_request: info.resource_request,
    api_prefix: info.api_prefix,
    group: info.group,
    version: info.version,
    resource: info.resource,
    subresource: info.subresource,
    namespace: info.namespace,
    name: info.name,
    path: info.path,
    query: Object.fromEntries([...new Set(query.keys())].map((k) => [k, query.getAll(k).length === 1 ? query.get(k) : query.getAll(k)])),
  }
  if (info.rest.length > 0) command.proxy_path = `/${info.rest.join('/')}`
  if (info.subresource === 'exec' || info.subresource === 'attach') {
    // Argv judged as SSH exec is: the plain words kubectl sends, one `command` parameter each.
    if (info.subresource === 'exec') {
      const argv = query.getAll('command')
      command.command = { argv }
      const why = opaqueArgv(argv)
      if (why) {
        command.opaque = true
        command.opaque_reason = why
      }
    }
    // An attach joins whatever the container already runs: nothing in the request says what.
    if (info.subresource === 'attach') {
      command.opaque = true
      command.opaque_reason = 'attach joins whatever the container runs'
    }
    command.container = query.get('container') ?? ''
    command.stdin = query.get('stdin') === 'true' || query.get('stdin') === '1'
    command.tty = query.get('tty') === 'true' || query.get('tty') === '1'
  }
  if (info.subresource === 'portforward') {
    command.ports = query
      .getAll('ports')
      .flatMap((p) => p.split(','))
      .map((p) => Number(p))
  }
  return command
}

export function deniedStatus(d: Extract<Decision, { effect: 'deny' }>): StatusAnswer {
  return {
    code: 403,
    message: `gatehouse: ${d.reason}`,
    details: { causes: d.rules.map((r) => ({ reason: 'GatehousePolicy', field: r })) },
  }
}

export type KubeContext = PluginContext<'gateway' | 'recordings'>

/** A request that passed routing, login and parsing. */
export interface Admitted {
  readonly slot: Extract<SessionSlot, { ok: true }>
  readonly info: KubeRequestInfo
  readonly query: URLSearchParams
  readonly rawQuery: string
  readonly seq: number
}

export type Admission = ({ ok: true } & Admitted) | { ok: false; answer: StatusAnswer; headers?: Record<string, string> }

/** Where the API server is, for a raw (upgraded) connection. */
export interface UpstreamTarget {
  readonly origin: string
  readonly tls: boolean
  readonly address: Address
  readonly servername: string
  readonly ca?: string | undefined
  readonly cert?: string | undefined
  readonly key?: string | undefined
}

/** What the stream handler needs of the listener. */
export interface StreamHost {
  readonly ctx: KubeContext
  admit(req: IncomingMessage): Promise<Admission>
  hold(
    req: IncomingMessage,
    a: Admitted,
    command: Record<string, unknown>,
    decision: Extract<Decision, { effect: 'hold' }>,
    body: Buffer,
    signal: AbortSignal,
  ): Promise<{ answer: StatusAnswer; headers?: Record<string, string> } | null>
  upstreamFor(session: ProxySession): UpstreamTarget
}
