// Live sessions: the engine's side of a ProxySession. Holds the session's identity, its resolved
// secrets (memory only), its audit stamping, and the means to end it from outside — an operator's
// `sessions kill`, a token revocation, the token's expiry, or the gateway shutting down.

import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import type { AuditLog } from './audit/writer.js'
import type { DecisionEngine } from './decide.js'
import { GatehouseError } from './errors.js'
import type { Store } from './store.js'
import type {
  Address,
  AuditEvent,
  Command,
  ConnectionRef,
  Decision,
  Identity,
  PossibleMasks,
  SecretProver,
  SessionAuditEvent,
} from './types.js'
import type { ApprovalAsk, ApprovalOutcome } from './approvals/types.js'
import type { ApprovalService } from './approvals/service.js'
import type { Metrics } from './server/metrics.js'
import type { Peers } from './peers.js'

export function newSessionId(): string {
  return `s-${randomBytes(6).toString('hex')}`
}

/**
 * Whether a plugin serving `protocol` may write an event of `type`: the shared statement/result,
 * or its own namespace `<protocol>.<event>`. Session and approval records are the engine's.
 */
export function pluginMayWrite(protocol: string, type: string): boolean {
  return (
    type === 'statement' ||
    type === 'result' ||
    (type.length > protocol.length + 1 && type.charCodeAt(protocol.length) === 46 && type.startsWith(protocol))
  )
}

function refuseType(protocol: string, type: string): GatehouseError {
  return new GatehouseError(
    'GH_ERR_AUDIT',
    `plugin ${protocol} may write audit events "statement", "result" or "${protocol}.<event>", not ${JSON.stringify(type)}`,
    { publicMessage: 'the gateway could not record this command' },
  )
}

/** Satisfies the plugin contract's FastPathSession (checked where the gateway hands it to a plugin). */
export class LiveSession {
  readonly chainIds: readonly string[]
  private terminateHandler: ((reason: string) => void) | null = null
  private pendingTerminate: string | null = null
  private ended = false
  private expiryTimer: NodeJS.Timeout | null = null

  constructor(
    readonly id: string,
    readonly identity: Identity,
    readonly connection: ConnectionRef,
    readonly target: Address,
    readonly settings: Readonly<Record<string, unknown>>,
    readonly secrets: ReadonlyMap<string, string>,
    readonly provers: ReadonlyMap<string, SecretProver>,
    private readonly manager: SessionManager,
  ) {
    this.chainIds = identity.chain.map((p) => p.id)
    // A session never outlives the token that opened it.
    const ms = identity.expiresAt * 1000 - Date.now()
    this.expiryTimer = setTimeout(
      () => this.terminate('the token that opened this session expired'),
      Math.max(0, Math.min(ms, 2 ** 31 - 1)),
    )
    this.expiryTimer.unref()
  }

  decide(action: string, command: Command, signal?: AbortSignal, approval?: { readonly granted: boolean }): Promise<Decision> {
    const req = { identity: this.identity, connection: this.connection, action, command }
    const m = this.manager.metrics
    if (m === null) return this.manager.engine.decide(approval ? { ...req, approval } : req, signal)
    // The engine evaluates synchronously inside decide: the time to its answer is the evaluation.
    const started = performance.now()
    const d = this.manager.engine.decide(approval ? { ...req, approval } : req, signal)
    m.decisionTime.since(started)
    return d
  }

  decideNow(action: string, command: Command, signal?: AbortSignal): Decision {
    const m = this.manager.metrics
    if (m === null) return this.manager.engine.decideNow({ identity: this.identity, connection: this.connection, action, command }, signal)
    const started = performance.now()
    const d = this.manager.engine.decideNow({ identity: this.identity, connection: this.connection, action, command }, signal)
    m.decisionTime.since(started)
    return d
  }

  possibleMasks(actions: readonly string[]): PossibleMasks {
    const e = this.manager.engine
    return e.possibleMasks ? e.possibleMasks(this.identity, this.connection, actions) : { known: [], policy: true }
  }

  decisionEpoch(): object | null {
    return this.manager.engine.decisionEpoch?.() ?? null
  }

  /** engine/approvals: a grant for this held command, or a request that reviewers decide. */
  requestApproval(req: ApprovalAsk): Promise<ApprovalOutcome> {
    const a = this.manager.approvals
    if (!a) return Promise.reject(new GatehouseError('GH_ERR_STATE', 'approvals are not available in this gateway'))
    return a.request(this, req)
  }

  /** The event with this session's fields first (and never overridden by the caller's). One
   * object built in place: this runs twice per statement on the hot path. */
  private stamp(event: { readonly type: AuditEvent['type']; readonly [key: string]: unknown }): AuditEvent {
    const out: Record<string, unknown> = { type: event.type, session: this.id, chain: this.chainIds, connection: this.connection.name }
    for (const k in event) {
      if (k !== 'type' && k !== 'session' && k !== 'chain' && k !== 'connection') out[k] = event[k]
    }
    // Every decided command of every protocol passes here as its `statement` event, including
    // those whose decision was reused rather than evaluated again: the one place to count them.
    const m = this.manager.metrics
    if (m !== null && event.type === 'statement') countCommand(m, event)
    return out as AuditEvent
  }

  audit(event: SessionAuditEvent): Promise<void> {
    if (!pluginMayWrite(this.connection.protocol, event.type)) return Promise.reject(refuseType(this.connection.protocol, event.type))
    return this.manager.audit.append(this.stamp(event))
  }

  auditNow(event: SessionAuditEvent): boolean {
    if (!pluginMayWrite(this.connection.protocol, event.type)) throw refuseType(this.connection.protocol, event.type)
    const log = this.manager.audit
    if (log.fsyncMode === 'always') return false
    log.appendSync(this.stamp(event))
    return true
  }

  auditGrouped(event: SessionAuditEvent): Promise<void> {
    if (!pluginMayWrite(this.connection.protocol, event.type)) return Promise.reject(refuseType(this.connection.protocol, event.type))
    return this.manager.audit.appendGrouped(this.stamp(event))
  }

  auditLater(event: SessionAuditEvent): void {
    if (!pluginMayWrite(this.connection.protocol, event.type)) throw refuseType(this.connection.protocol, event.type)
    this.manager.audit.appendDeferred(this.stamp(event))
  }

  /** The engine's own records about this session (start, end, approvals): any type. */
  engineAudit(event: { readonly type: AuditEvent['type']; readonly [key: string]: unknown }): Promise<void> {
    return this.manager.audit.append(this.stamp(event))
  }

  onTerminate(handler: (reason: string) => void): void {
    this.terminateHandler = handler
    if (this.pendingTerminate !== null) {
      const r = this.pendingTerminate
      this.pendingTerminate = null
      handler(r)
    }
  }

  /** Asks the plugin to end the session; the plugin calls `end` when both sides are closed. */
  terminate(reason: string): void {
    if (this.ended) return
    if (this.terminateHandler) {
      const h = this.terminateHandler
      this.terminateHandler = null
      h(reason)
    } else this.pendingTerminate = reason
  }

  end(reason: string): void {
    if (this.ended) return
    this.ended = true
    if (this.expiryTimer) clearTimeout(this.expiryTimer)
    this.manager.ended(this, reason)
  }
}

/** A statement event's action and decision; a multi-statement string counts each statement
 * under the decision the string as a whole got. */
export function countCommand(m: Metrics, event: { readonly [key: string]: unknown }): void {
  const decision = event.decision
  if (typeof decision !== 'string') return
  const action = event.action
  if (typeof action === 'string') m.command(action, decision)
  else if (Array.isArray(event.statements)) {
    for (const st of event.statements as readonly { readonly action?: unknown }[]) {
      if (typeof st.action === 'string') m.command(st.action, decision)
    }
  } else m.command('unknown', decision)
}

export class SessionManager {
  readonly live = new Map<string, LiveSession>()
  /** Set by the gateway at start (engine/approvals); null: held commands are refused. */
  approvals: ApprovalService | null = null
  /** Set by the gateway at start; null: nothing is counted. */
  metrics: Metrics | null = null
  /** The other workers of `serve --workers N` (engine/peers.ts); null: a single process. */
  peers: Peers | null = null

  constructor(
    readonly engine: DecisionEngine,
    readonly audit: AuditLog,
    private readonly store: Store,
    private readonly log: Logger,
  ) {}

  /** Registers an admitted session: recorded in the store and audited (durably) before use. */
  async admit(s: {
    identity: Identity
    connection: ConnectionRef
    target: Address
    settings: Readonly<Record<string, unknown>>
    secrets: ReadonlyMap<string, string>
    /** Secrets held by the session's connector, proven on request instead of resolved. */
    provers?: ReadonlyMap<string, SecretProver>
    client: { address: string; user?: string; application?: string }
    decision: Decision
    /** The connector link carrying the session (its id and the connector's principal), for the audit. */
    carrier?: { readonly link: string; readonly principal: string }
  }): Promise<LiveSession> {
    const session = new LiveSession(newSessionId(), s.identity, s.connection, s.target, s.settings, s.secrets, s.provers ?? new Map(), this)
    try {
      await session.engineAudit({
        type: 'session.start',
        protocol: s.connection.protocol,
        ...(s.connection.via !== undefined ? { via: s.connection.via } : {}),
        ...(s.carrier ? { via_link: s.carrier.link, via_principal: s.carrier.principal } : {}),
        client: s.client,
        decision: s.decision.effect,
        rules: s.decision.rules,
        policy_version: s.decision.policy,
        tokens: s.identity.tokenIds,
      })
    } catch (err) {
      session.end('audit failed')
      throw err instanceof GatehouseError
        ? new GatehouseError('GH_ERR_AUDIT', err.message, { cause: err, publicMessage: 'the gateway cannot record this session; refused' })
        : err
    }
    this.live.set(session.id, session)
    if (this.metrics) this.metrics.sessionOpened(s.connection.protocol).n++
    try {
      this.store.recordSessionStart({
        id: session.id,
        connection: s.connection.name,
        protocol: s.connection.protocol,
        chain: session.chainIds,
        tokenIds: s.identity.tokenIds,
        client: s.client.address,
        startedAt: new Date().toISOString(),
        worker: this.peers?.worker ?? null,
      })
    } catch (err) {
      this.log.error({ err, session: session.id }, 'cannot record session in the state database')
    }
    this.log.info(
      { session: session.id, chain: session.chainIds, connection: s.connection.name, client: s.client.address },
      'session started',
    )
    return session
  }

  ended(session: LiveSession, reason: string): void {
    if (!this.live.delete(session.id)) return
    try {
      this.store.recordSessionEnd(session.id, reason)
    } catch (err) {
      this.log.error({ err, session: session.id }, 'cannot record session end in the state database')
    }
    this.audit.appendDeferred({
      type: 'session.end',
      session: session.id,
      chain: session.chainIds,
      connection: session.connection.name,
      reason,
    })
    this.log.info({ session: session.id, chain: session.chainIds, reason }, 'session ended')
  }

  kill(id: string, reason: string): boolean {
    const s = this.live.get(id)
    if (!s) return false
    s.terminate(reason)
    return true
  }

  /** Ends every live session opened with `jti` anywhere in its chain. */
  killByToken(jti: string, reason: string): number {
    let n = 0
    for (const s of [...this.live.values()]) {
      if (s.identity.tokenIds.includes(jti)) {
        s.terminate(reason)
        n++
      }
    }
    return n
  }

  /** `kill`, here or on whichever worker serves the session. */
  async killAnywhere(id: string, reason: string): Promise<boolean> {
    if (this.kill(id, reason)) return true
    return this.peers !== null && (await this.peers.tell({ kind: 'kill', session: id, reason })) > 0
  }

  /** `killByToken` here and on every other worker; the number of sessions ended in all. */
  async killByTokenEverywhere(jti: string, reason: string): Promise<number> {
    const here = this.killByToken(jti, reason)
    return this.peers === null ? here : here + (await this.peers.tell({ kind: 'revoke', jti, reason }))
  }

  /** Live sessions by protocol. */
  openByProtocol(): Map<string, number> {
    const by = new Map<string, number>()
    for (const s of this.live.values()) by.set(s.connection.protocol, (by.get(s.connection.protocol) ?? 0) + 1)
    return by
  }

  terminateAll(reason: string): void {
    for (const s of [...this.live.values()]) s.terminate(reason)
  }
}
