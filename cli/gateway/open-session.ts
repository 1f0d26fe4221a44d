// Opening a session for a plugin: identify the client, find the connection, decide `connect`,
// resolve the connection's secrets, and admit the session (its session.start in the audit log).
// Every refusal is counted, logged and audited as `session.refused` with what the client may see.

import { join } from 'node:path'
import type { Logger } from 'pino'
import type { AuditLog } from '../../engine/audit/writer.js'
import type { Config } from '../../engine/config/config.js'
import type { ConnectorHub } from '../../engine/connector/hub.js'
import { GatehouseError, isGatehouseError } from '../../engine/errors.js'
import { PublicKeys } from '../../engine/identity/public-keys.js'
import type { IdentityService } from '../../engine/identity/service.js'
import type { Metrics } from '../../engine/server/metrics.js'
import type { PolicyEngine } from '../../engine/policy/engine.js'
import { isRecord } from '../../engine/record.js'
import { parseConnectorSecretRef, parseSecretRef, resolveSecret } from '../../engine/secrets.js'
import type { SessionManager } from '../../engine/sessions.js'
import type { Store } from '../../engine/store.js'
import type { ConnectionRef, Decision, Identity, SecretProver } from '../../engine/types.js'
import type { Address, AnyProxyPlugin, OpenSessionRequest, OpenSessionResult } from '../../proxies/types.js'

/** What opening a session needs of the gateway (read at each call: `connectors` starts later). */
export interface SessionDeps {
  readonly config: Config
  readonly log: Logger
  readonly store: Store
  readonly audit: AuditLog
  readonly engine: PolicyEngine
  readonly sessions: SessionManager
  readonly identity: IdentityService
  readonly metrics: Metrics
  readonly connectors: ConnectorHub | null
}

/** Identify first; then the connection, the connect decision, the secrets, the audit record. */
export async function openSession(gw: SessionDeps, plugin: AnyProxyPlugin, req: OpenSessionRequest): Promise<OpenSessionResult> {
  const refuse = (error: GatehouseError, chain: readonly string[]): OpenSessionResult => {
    gw.metrics.sessionRefused(plugin.name).n++
    gw.log.warn(
      { proxy: plugin.name, client: req.client.address, connection: req.connection, code: error.code, why: error.message },
      'session refused',
    )
    gw.audit.appendDeferred({
      type: 'session.refused',
      session: null,
      chain,
      connection: req.connection.slice(0, 128),
      protocol: plugin.name,
      client: req.client,
      code: error.code,
      reason: error.publicMessage,
    })
    return { ok: false, error }
  }
  let identity: Identity
  try {
    // A Gatehouse token (root or delegated: every rule of the chain rechecked) or an API key.
    identity = req.publicKey
      ? new PublicKeys(gw.store, gw.config.tokens.maxTtlSeconds).identify(req.publicKey.fingerprint)
      : await gw.identity.identify(req.credential)
  } catch (err) {
    return refuse(
      isGatehouseError(err) ? err : new GatehouseError('GH_ERR_AUTH', String(err), { publicMessage: 'authentication failed' }),
      [],
    )
  }
  const chainIds = identity.chain.map((p) => p.id)
  const conf = gw.config.connections.find((c) => c.name === req.connection && c.protocol === plugin.name)
  if (!conf) {
    return refuse(
      new GatehouseError('GH_ERR_UNKNOWN_CONNECTION', `no ${plugin.name} connection named ${JSON.stringify(req.connection)}`),
      chainIds,
    )
  }
  // A connection behind connectors is carried by one live link, chosen now: policy decides with
  // it in the input (`connection.via`) and the audit names it.
  const picked = conf.via.length > 0 ? (gw.connectors?.pick(conf.via) ?? null) : null
  const via = conf.via.length > 0 ? (picked?.name ?? conf.via[0]) : undefined
  const connection: ConnectionRef =
    via === undefined
      ? { name: conf.name, protocol: conf.protocol, labels: conf.labels }
      : { name: conf.name, protocol: conf.protocol, labels: conf.labels, via }
  let decision: Decision
  try {
    const started = performance.now()
    decision = await gw.engine.decide({ identity, connection, action: 'connect', command: {} })
    gw.metrics.decisionTime.since(started)
  } catch (err) {
    return refuse(
      new GatehouseError('GH_ERR_DENIED', 'policy evaluation failed', {
        cause: err,
        publicMessage: 'access denied: the policy could not be evaluated',
      }),
      chainIds,
    )
  }
  if (decision.effect !== 'allow') {
    const reason = decision.effect === 'deny' ? decision.reason : 'connecting requires an approval'
    return refuse(new GatehouseError('GH_ERR_DENIED', `connect denied: ${reason}`, { publicMessage: `access denied: ${reason}` }), chainIds)
  }
  if (conf.via.length > 0 && picked === null) {
    const names = conf.via.join(' or ')
    return refuse(
      new GatehouseError('GH_ERR_UPSTREAM', `connection ${conf.name}: connector ${names} is not connected`, {
        publicMessage: `connection ${conf.name} is reached through connector ${names}, which is not connected`,
      }),
      chainIds,
    )
  }
  const secrets = new Map<string, string>()
  const provers = new Map<string, SecretProver>()
  const target: Address = { host: conf.host, port: conf.port }
  const base = gw.config.file ? join(gw.config.file, '..') : process.cwd()
  try {
    for (const key of plugin.secretKeys ?? []) {
      const value = conf.settings[key]
      // Held by the connector (checked at start: a provable key of a connection with via:): the
      // plugin asks it for proofs; the gateway never resolves, holds or sees the value.
      const held = parseConnectorSecretRef(value)
      if (held !== null && gw.connectors && (plugin.provableSecretKeys ?? []).includes(key)) {
        provers.set(key, gw.connectors.prover(target, conf.name, held))
        continue
      }
      // A map of secret references (HTTP headers to inject) resolves entry by entry as `key.name`.
      if (isRecord(value)) {
        for (const [name, v] of Object.entries(value)) {
          const ref = parseSecretRef(v, base)
          if (ref) secrets.set(`${key}.${name}`, await resolveSecret(ref))
        }
        continue
      }
      const ref = parseSecretRef(value, base)
      if (ref) secrets.set(key, await resolveSecret(ref))
    }
  } catch (err) {
    return refuse(isGatehouseError(err) ? err : new GatehouseError('GH_ERR_SECRET', 'secret resolution failed'), chainIds)
  }
  try {
    const session = await gw.sessions.admit({
      identity,
      connection,
      target,
      settings: conf.settings,
      secrets,
      ...(provers.size > 0 ? { provers } : {}),
      client: req.client,
      decision,
      ...(picked ? { carrier: { link: picked.id, principal: picked.principal } } : {}),
    })
    if (picked) gw.connectors?.bind(target, picked, session.id)
    return { ok: true, session }
  } catch (err) {
    return refuse(isGatehouseError(err) ? err : new GatehouseError('GH_ERR_AUDIT', 'cannot record the session'), chainIds)
  }
}
