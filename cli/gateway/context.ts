// What each plugin receives: the core every plugin gets (its listener, limits, TLS, log, sessions,
// decisions, audit, dialling, a state directory) and only the capabilities it asked for.

import { mkdirSync } from 'node:fs'
import type { Socket } from 'node:net'
import { join } from 'node:path'
import type { AuditServices } from '../../engine/audit/service.js'
import { authorityOf } from '../../engine/connector/protocol.js'
import { GatehouseError } from '../../engine/errors.js'
import type { TokenIssuer } from '../../engine/identity/tokens.js'
import { countCommand, type LiveSession, pluginMayWrite } from '../../engine/sessions.js'
import type {
  Address,
  AnyProxyPlugin,
  Capabilities,
  CapabilityName,
  FastPathSession,
  HttpMount,
  PluginContext,
  ProxyContext,
  TlsMaterial,
} from '../../proxies/types.js'
import { directDialer } from './dialer.js'
import { openSession, type SessionDeps } from './open-session.js'

/** What a plugin's context reaches of the gateway (read at each call). */
export interface ContextDeps extends SessionDeps {
  readonly issuer: TokenIssuer
  readonly auditServices: AuditServices | null
}

/** The gateway's own state that contexts share: bound listeners, HTTP mounts, connector-only targets. */
export interface GatewayOwned {
  readonly tls: TlsMaterial
  /** Bound listeners by plugin name (and `api`), for the `gateway` capability's `listener`. */
  readonly bound: ReadonlyMap<string, Address>
  /** HTTP handlers plugins mount on the API listener (the `httpMounts` capability). */
  readonly mounts: HttpMount[]
  /** Targets reachable only through a connector: never dialled directly. */
  readonly tunnelOnly: ReadonlySet<string>
  apiStarted(): boolean
}

/** The context plugin `plugin` is started with. */
export function pluginContext(gw: ContextDeps, plugin: AnyProxyPlugin, own: GatewayOwned): PluginContext<CapabilityName> {
  const stateDir = join(gw.config.dataDir, 'plugins', plugin.name.replace(/[^A-Za-z0-9_.-]/g, '_'))
  mkdirSync(stateDir, { recursive: true, mode: 0o700 })
  const core: ProxyContext = {
    plugin: plugin.name,
    listen: gw.config.listen[plugin.name] ?? null,
    limits: gw.config.limits,
    tls: own.tls,
    log: gw.log.child({ proxy: plugin.name }),
    openSession: (req) => openSession(gw, plugin, req),
    decide: (req, signal) => {
      const started = performance.now()
      const d = gw.engine.decide(req, signal)
      gw.metrics.decisionTime.since(started)
      return d
    },
    audit: (event) => {
      if (!pluginMayWrite(plugin.name, event.type)) {
        return Promise.reject(
          new GatehouseError('GH_ERR_AUDIT', `plugin ${plugin.name} may not write audit events of type ${JSON.stringify(event.type)}`),
        )
      }
      // Commands decided outside a session (MCP tool calls) are counted here.
      if (event.type === 'statement' || event.type === 'mcp.call') countCommand(gw.metrics, event)
      return gw.audit.append(event)
    },
    dial: (target, signal) => dial(gw, own.tunnelOnly, target, signal),
    stateDir,
  }
  // Only what the plugin asked for: the others are absent, not stubs.
  const granted: Partial<Record<CapabilityName, Capabilities[CapabilityName]>> = {}
  for (const name of plugin.capabilities ?? []) granted[name] = capability(gw, plugin, own, name)
  return { ...core, ...granted } as PluginContext<CapabilityName>
}

function capability<K extends CapabilityName>(gw: ContextDeps, plugin: AnyProxyPlugin, own: GatewayOwned, name: K): Capabilities[K] {
  const all: Capabilities = {
    fastPath: {
      // The sessions a plugin opens are LiveSessions; the fast path is their synchronous side.
      session: (session) => session as LiveSession as FastPathSession,
    },
    httpMounts: {
      mount: (path, handler) => {
        if (own.apiStarted()) throw new GatehouseError('GH_ERR_CONFIG', `plugin ${plugin.name}: mount(${path}) after the API started`)
        own.mounts.push({ path, handler })
      },
    },
    gateway: {
      issuer: gw.issuer.issuer,
      identify: (credential) => gw.identity.identify(credential),
      revoked: (identity) => identity.tokenIds.some((jti) => gw.store.isRevoked(jti)),
      listener: (n) => own.bound.get(n) ?? null,
      connections: () => gw.config.connections.map((c) => ({ name: c.name, protocol: c.protocol, labels: c.labels })),
      connectionSettings: (n) => {
        const c = gw.config.connections.find((x) => x.name === n && x.protocol === plugin.name)
        return c ? c.settings : null
      },
    },
    recordings: {
      terminal: (session, meta) => {
        const recorder = gw.auditServices?.recorder
        if (!recorder) return null
        return recorder.openTerminal(session.id, session.connection.name, {
          ...meta,
          gatehouse: { session: session.id, connection: session.connection.name, chain: session.identity.chain.map((p) => p.id) },
        })
      },
      entry: (session, type, fields) => {
        if (!pluginMayWrite(plugin.name, type) || type === 'statement' || type === 'result') {
          throw new GatehouseError('GH_ERR_PLUGIN', `plugin ${plugin.name}: a recording entry's type must be "${plugin.name}.<entry>"`)
        }
        gw.auditServices?.recorder?.entry(session.id, type, fields)
      },
    },
  }
  return all[name]
}

/** Through the session's connector when its connection says `via`, else directly. */
function dial(gw: ContextDeps, tunnelOnly: ReadonlySet<string>, target: Address, signal?: AbortSignal): Promise<Socket> {
  const tunnelled = gw.connectors?.dial(target, signal)
  if (tunnelled) return tunnelled
  if (tunnelOnly.has(authorityOf(target.host, target.port))) {
    // A copy of a session's target lost its route: the gateway never reaches such a target itself.
    return Promise.reject(
      new GatehouseError('GH_ERR_UPSTREAM', `${authorityOf(target.host, target.port)} is reachable only through a connector`, {
        publicMessage: 'the target server is reachable only through a connector',
      }),
    )
  }
  return directDialer(target, signal)
}
