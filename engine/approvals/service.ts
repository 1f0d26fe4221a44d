// Just-in-time approvals. A held command becomes a request bound to the exact work and
// the exact chain; reviewers from the requirement's groups approve or deny it; an approval creates
// a grant that only that chain can use:
//
//   once    one execution of the command whose fingerprint (SHA-256 of the SQL text and its
//           parameters) was approved, on that connection, by that chain (principal ids and token
//           ids): another statement, a sub-agent (a longer chain), another user or the same user
//           with another token do not match; consumed atomically on use
//   window  the action on that connection for that chain, strictly before the grant's expiry
//
// Nobody approves a request whose chain they are in (their own, or one of their agents'), even
// when they are in the approving group; only root tokens review (an agent carries no groups).
// Waiting is a promise per held command, woken by the decision or a timer: nothing blocks the
// event loop, so a hundred held statements cost a hundred idle promises.
//
// Every request, vote, grant, use and expiry is an audit event with the request's chain; requests
// and decisions also go to the webhook.

import { GatehouseError } from '../errors.js'
import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import type { AuditLog } from '../audit/writer.js'
import type { AuditEvent, ConnectionRef, Decision, HoldRequirement, Identity } from '../types.js'
import type { ApprovalAsk, ApprovalOutcome } from './types.js'
import type { ApprovalsConfig } from './config.js'
import { ApprovalError } from './errors.js'
import { type ApprovalRecord, type ApprovalStore, chainKey, type GrantType, type Requirement, type VoteRecord } from './store.js'
import type { WebhookNotifier } from './webhook.js'

/** The session asking: what the service reads of it, and where it writes the request's events. */
export interface ApprovalRequester {
  readonly id: string
  readonly identity: Identity
  readonly connection: ConnectionRef
  /** The engine's own records in the session's name (approval events are not a plugin's to write). */
  engineAudit(event: { readonly type: AuditEvent['type']; readonly [key: string]: unknown }): Promise<void>
}

/** The group whose members may read every request (they approve only where they are reviewers). */
const ADMIN_GROUP = 'gatehouse-admins'
const SWEEP_MS = 1000
const MAX_COMMENT = 2000
const MAX_REASON = 2000
/** What reviewers are shown of a statement; the fingerprint covers all of it. */
const MAX_DISPLAY = 64 * 1024

type Decided = { readonly status: 'approved' } | { readonly status: 'denied'; readonly reviewer: string; readonly comment: string | null }

export interface ApprovalServiceDeps {
  readonly store: ApprovalStore
  readonly audit: AuditLog
  readonly config: ApprovalsConfig
  readonly webhook: WebhookNotifier | null
  readonly log: Logger
  /** The connection by name, for access requests. */
  readonly connection: (name: string) => ConnectionRef | null
  /** The approvals.yaml requirements that apply to an action on a connection (access requests). */
  readonly requirementsFor: (action: string, connection: ConnectionRef) => readonly HoldRequirement[]
  readonly policyVersion: () => string
}

/** What the API and the CLI show: who asks, through which chain, what, where, why, and who decided. */
export interface ApprovalView {
  readonly id: string
  readonly status: ApprovalRecord['status']
  readonly kind: ApprovalRecord['kind']
  readonly requester: string
  readonly chain: readonly string[]
  readonly token_ids: readonly string[]
  readonly connection: string
  /** The connection's labels as configured now (what the requirement matched on). */
  readonly connection_labels: Readonly<Record<string, string>>
  readonly session: string | null
  readonly action: string
  readonly statement: string
  readonly fingerprint: string | null
  readonly rules: readonly string[]
  readonly requirements: readonly Requirement[]
  readonly reason: string | null
  readonly grant: GrantType
  readonly window_seconds: number | null
  readonly created_at: string
  readonly expires_at: string
  readonly decided_at: string | null
  readonly grant_expires_at: string | null
  readonly used_at: string | null
  readonly policy_version: string
  readonly votes: readonly { reviewer: string; verdict: string; comment: string | null; at: string }[]
}

function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString()
}

function requirementsOf(d: Extract<Decision, { effect: 'hold' }>): HoldRequirement[] {
  if (d.requirements && d.requirements.length > 0) return [...d.requirements]
  // An engine that does not say which requirement asked: one approval by any approver group, once.
  return d.approvers.map((g) => ({ rule: d.rules.join(','), group: g, count: 1, grant: 'once', window_seconds: null, reason: '' }))
}

/** window only when every requirement grants a window (the shortest one); otherwise once. */
function grantOf(reqs: readonly HoldRequirement[]): { grant: GrantType; windowSeconds: number | null } {
  let w: number | null = null
  for (const r of reqs) {
    if (r.grant !== 'window' || r.window_seconds === null) return { grant: 'once', windowSeconds: null }
    w = w === null ? r.window_seconds : Math.min(w, r.window_seconds)
  }
  return w === null ? { grant: 'once', windowSeconds: null } : { grant: 'window', windowSeconds: w }
}

function covers(grantRules: readonly string[], rules: readonly string[]): boolean {
  return rules.every((r) => grantRules.includes(r))
}

export class ApprovalService {
  private readonly waiters = new Map<string, Set<(d: Decided) => void>>()
  private readonly sweeper: NodeJS.Timeout
  /** Told of every decision taken here, so other workers wake what they hold for it (engine/peers.ts). */
  announce: ((request: string) => void) | null = null

  constructor(private readonly deps: ApprovalServiceDeps) {
    this.sweeper = setInterval(() => this.sweep(), SWEEP_MS)
    this.sweeper.unref()
  }

  /** Requests waiting for reviewers now. */
  pendingCount(): number {
    return this.deps.store.countPending(Date.now())
  }

  get timeoutSeconds(): number {
    return this.deps.config.timeoutSeconds
  }

  close(): void {
    clearInterval(this.sweeper)
    this.deps.webhook?.close()
    this.deps.store.close()
  }

  // ---- held commands ------------------------------------------------------------------------

  async request(session: ApprovalRequester, ask: ApprovalAsk): Promise<ApprovalOutcome> {
    const { store } = this.deps
    const id = session.identity
    const chain = id.chain.map((p) => p.id)
    const key = chainKey(chain, id.tokenIds)
    const conn = session.connection.name
    const rules = ask.decision.rules
    const now = Date.now()

    // 1. A grant this chain already holds: a window over the action, or a once for this very command.
    for (const g of store.findWindowGrants(conn, key, ask.action, now)) {
      if (covers(g.rules, rules)) {
        await this.used(session, g, ask)
        return { status: 'granted', request: g.id, grant: 'window' }
      }
    }
    const once = store.findOnceGrant(conn, key, ask.fingerprint, now)
    if (once && covers(once.rules, rules) && store.consumeOnce(once.id, now)) {
      await this.used(session, once, ask)
      return { status: 'granted', request: once.id, grant: 'once' }
    }

    // 2. The identical command of this chain already waits for reviewers (the client sent it again
    // in non-waiting mode): the same request, not a new one for reviewers to wade through.
    if (!ask.wait) {
      const same = store.findPending(conn, key, ask.fingerprint, now)
      if (same) {
        const groups = [...new Set(same.requirements.map((r) => r.group))]
        ask.onRequested?.(same.id, groups)
        return { status: 'pending', request: same.id, approvers: groups }
      }
    }
    // A chain cannot flood reviewers (and the webhook) with requests.
    const root = chain[0] ?? ''
    const max = this.deps.config.maxPending
    if (store.countPendingForRoot(root, now) >= max) {
      const message = `gatehouse: ${root} already has ${max} approval requests waiting for reviewers (approvals.max_pending); wait for them to be decided before asking again`
      throw new GatehouseError('GH_ERR_DENIED', message, { publicMessage: message })
    }

    // 3. A new request.
    const reqs = requirementsOf(ask.decision)
    const { grant, windowSeconds } = grantOf(reqs)
    const ttl = ask.wait ? this.deps.config.timeoutSeconds : this.deps.config.requestTtlSeconds
    const record = this.insert({
      status: 'pending',
      kind: 'statement',
      createdAt: now,
      expiresAt: now + ttl * 1000,
      decidedAt: null,
      session: session.id,
      connection: conn,
      action: ask.action,
      display: ask.display.slice(0, MAX_DISPLAY),
      fingerprint: ask.fingerprint,
      chain,
      tokenIds: id.tokenIds,
      rules,
      requirements: reqs.map((r) => ({ rule: r.rule, group: r.group, count: r.count, reason: r.reason })),
      reason: ask.reason ? ask.reason.slice(0, MAX_REASON) : null,
      grant,
      windowSeconds,
      grantExpiresAt: null,
      usedAt: null,
      policy: ask.decision.policy,
    })
    const approvers = [...new Set(record.requirements.map((r) => r.group))]
    // Durable before anyone is told: a request the audit cannot record is not filed.
    try {
      await session.engineAudit({ type: 'approval.requested', ...this.eventFields(record) })
    } catch (err) {
      store.expire(record.id)
      throw err
    }
    this.notify('approval.requested', record, null)
    ask.onRequested?.(record.id, approvers)
    if (!ask.wait) return { status: 'pending', request: record.id, approvers }

    // 4. Wait for the decision, the timeout or the end of the session.
    const outcome = await this.waitFor(record.id, ask.signal)
    if (outcome === 'timeout' || outcome === 'aborted') {
      if (store.expire(record.id)) {
        const r = store.get(record.id) as ApprovalRecord
        this.deps.audit.appendDeferred({
          type: 'approval.decided',
          ...this.eventFields(r),
          status: 'expired',
          why: outcome === 'timeout' ? 'nobody decided in time' : 'the requester stopped waiting',
        })
        this.notify('approval.decided', r, null)
        return outcome === 'timeout'
          ? { status: 'timeout', request: record.id, after_seconds: this.deps.config.timeoutSeconds }
          : { status: 'aborted', request: record.id }
      }
      // Decided in the same instant the wait ended: the decision stands.
    }
    const r = store.get(record.id) as ApprovalRecord
    if (r.status === 'denied') {
      const v = store.votes(r.id).find((x) => x.verdict === 'deny')
      return { status: 'denied', request: r.id, reviewer: v?.reviewer ?? 'a reviewer', comment: v?.comment ?? null }
    }
    if (r.status === 'approved') {
      if (r.grant === 'window' || store.consumeOnce(r.id, Date.now())) {
        await this.used(session, r, ask)
        return { status: 'granted', request: r.id, grant: r.grant }
      }
    }
    return { status: 'timeout', request: r.id, after_seconds: this.deps.config.timeoutSeconds }
  }

  private waitFor(id: string, signal: AbortSignal | undefined): Promise<'decided' | 'timeout' | 'aborted'> {
    return new Promise((resolve) => {
      let settled = false
      const finish = (how: 'decided' | 'timeout' | 'aborted'): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
        const set = this.waiters.get(id)
        set?.delete(onDecided)
        if (set?.size === 0) this.waiters.delete(id)
        resolve(how)
      }
      const onDecided = (): void => finish('decided')
      const onAbort = (): void => finish('aborted')
      const timer = setTimeout(() => finish('timeout'), this.deps.config.timeoutSeconds * 1000)
      let set = this.waiters.get(id)
      if (!set) {
        set = new Set()
        this.waiters.set(id, set)
      }
      set.add(onDecided)
      if (signal?.aborted) finish('aborted')
      else signal?.addEventListener('abort', onAbort, { once: true })
    })
  }

  /** A grant let a command through: recorded durably before the command is forwarded. */
  private async used(session: ApprovalRequester, r: ApprovalRecord, ask: ApprovalAsk): Promise<void> {
    await session.engineAudit({
      type: 'approval.used',
      request: r.id,
      grant: r.grant,
      action: ask.action,
      fingerprint: ask.fingerprint,
      rules: ask.decision.rules,
      grant_expires_at: iso(r.grantExpiresAt),
    })
  }

  // ---- access requests ahead of time --------------------------------------------------------

  async requestAccess(
    identity: Identity,
    req: { connection: string; action: string; forSeconds: number; reason: string | null },
  ): Promise<ApprovalView> {
    const conn = this.deps.connection(req.connection)
    if (!conn) throw new ApprovalError('GH_ERR_APPROVAL_REQUEST', `no connection named ${JSON.stringify(req.connection)}`)
    if (!/^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$/.test(req.action))
      throw new ApprovalError('GH_ERR_APPROVAL_REQUEST', `action must be an action name like sql.write (got ${JSON.stringify(req.action)})`)
    if (req.forSeconds <= 0 || req.forSeconds > this.deps.config.maxWindowSeconds) {
      throw new ApprovalError(
        'GH_ERR_APPROVAL_REQUEST',
        `the window must be between 1s and approvals.max_window (${this.deps.config.maxWindowSeconds}s)`,
      )
    }
    const reqs = this.deps.requirementsFor(req.action, conn)
    if (reqs.length === 0) {
      throw new ApprovalError(
        'GH_ERR_APPROVAL_REQUEST',
        `no approval requirement applies to ${req.action} on ${conn.name}: there is nothing to approve`,
      )
    }
    const now = Date.now()
    const chain = identity.chain.map((p) => p.id)
    const record = this.insert({
      status: 'pending',
      kind: 'access',
      createdAt: now,
      expiresAt: now + this.deps.config.requestTtlSeconds * 1000,
      decidedAt: null,
      session: null,
      connection: conn.name,
      action: req.action,
      display: `${req.action} on ${conn.name} for ${req.forSeconds}s`,
      fingerprint: null,
      chain,
      tokenIds: identity.tokenIds,
      rules: [...new Set(reqs.map((r) => r.rule))],
      requirements: reqs.map((r) => ({ rule: r.rule, group: r.group, count: r.count, reason: r.reason })),
      reason: req.reason ? req.reason.slice(0, MAX_REASON) : null,
      grant: 'window',
      windowSeconds: req.forSeconds,
      grantExpiresAt: null,
      usedAt: null,
      policy: this.deps.policyVersion(),
    })
    try {
      await this.deps.audit.append({ type: 'approval.requested', ...this.eventFields(record) })
    } catch (err) {
      this.deps.store.expire(record.id)
      throw err
    }
    this.notify('approval.requested', record, null)
    return this.view(record)
  }

  // ---- reviewers ----------------------------------------------------------------------------

  list(caller: Identity): ApprovalView[] {
    this.sweep()
    return this.deps.store
      .list()
      .filter((r) => this.mayRead(caller, r))
      .map((r) => this.view(r))
  }

  show(caller: Identity, id: string): ApprovalView {
    this.sweep()
    const r = this.deps.store.get(id)
    // Someone who may not read it learns nothing, not even that it exists.
    if (!r || !this.mayRead(caller, r)) throw new ApprovalError('GH_ERR_APPROVAL_NOT_FOUND', `no approval request ${id}`)
    return this.view(r)
  }

  async approve(reviewer: Identity, id: string, comment: string | null): Promise<ApprovalView> {
    return this.vote(reviewer, id, 'approve', comment)
  }

  async deny(reviewer: Identity, id: string, comment: string | null): Promise<ApprovalView> {
    return this.vote(reviewer, id, 'deny', comment)
  }

  private async vote(reviewer: Identity, id: string, verdict: 'approve' | 'deny', comment: string | null): Promise<ApprovalView> {
    const { store } = this.deps
    this.sweep()
    const r = store.get(id)
    if (!r || !this.mayRead(reviewer, r)) throw new ApprovalError('GH_ERR_APPROVAL_NOT_FOUND', `no approval request ${id}`)
    if (r.status !== 'pending')
      throw new ApprovalError('GH_ERR_APPROVAL_CLOSED', `request ${id} is ${r.status}; it can no longer be decided`)
    const me = reviewer.chain[0]
    if (reviewer.chain.length !== 1 || !me) {
      throw new ApprovalError(
        'GH_ERR_APPROVAL_FORBIDDEN',
        'only a person or workload with its own token reviews requests, never a delegated agent',
      )
    }
    if (r.chain.includes(me.id)) {
      throw new ApprovalError(
        'GH_ERR_APPROVAL_FORBIDDEN',
        `${me.id} is in the chain of request ${id} (${r.chain.join(' → ')}) and cannot decide it`,
      )
    }
    const groups = [...new Set(r.requirements.map((q) => q.group))]
    const mine = groups.filter((g) => me.groups.includes(g))
    if (mine.length === 0) {
      throw new ApprovalError('GH_ERR_APPROVAL_FORBIDDEN', `deciding ${id} needs a member of ${groups.join(' or ')}; ${me.id} is not one`)
    }
    const now = Date.now()
    const c = comment ? comment.slice(0, MAX_COMMENT) : null
    if (!store.addVote(id, { reviewer: me.id, groups: mine, verdict, comment: c, at: now })) {
      throw new ApprovalError('GH_ERR_APPROVAL_DUPLICATE', `${me.id} has already decided on ${id}`)
    }
    const reviewerField = { id: me.id, groups: mine }
    let status: ApprovalRecord['status'] = 'pending'
    if (verdict === 'deny') {
      if (store.decide(id, 'denied', now, null)) status = 'denied'
    } else if (complete(r.requirements, store.votes(id))) {
      const until = r.grant === 'window' ? now + (r.windowSeconds ?? 0) * 1000 : r.createdAt + this.deps.config.requestTtlSeconds * 1000
      if (store.decide(id, 'approved', now, until)) status = 'approved'
    }
    const after = store.get(id) as ApprovalRecord
    await this.deps.audit.append({
      type: 'approval.decided',
      ...this.eventFields(after),
      verdict,
      reviewer: reviewerField,
      comment: c,
      status,
    })
    if (status === 'approved') {
      await this.deps.audit.append({
        type: 'approval.granted',
        ...this.eventFields(after),
        grant_expires_at: iso(after.grantExpiresAt),
      })
    }
    this.notify('approval.decided', after, { reviewer: me.id, verdict, comment: c })
    if (status !== 'pending') {
      this.wake(id, status === 'denied' ? { status, reviewer: me.id, comment: c } : { status: 'approved' })
      this.announce?.(id)
    }
    return this.view(after)
  }

  /** Another worker decided `id`: a command held here for it reads the decision from the store. */
  decidedElsewhere(id: string): void {
    const r = this.deps.store.get(id)
    if (r && r.status !== 'pending')
      this.wake(id, r.status === 'denied' ? { status: 'denied', reviewer: '', comment: null } : { status: 'approved' })
  }

  private wake(id: string, d: Decided): void {
    const set = this.waiters.get(id)
    if (!set) return
    for (const f of [...set]) f(d)
  }

  private mayRead(caller: Identity, r: ApprovalRecord): boolean {
    const me = caller.chain[caller.chain.length - 1]
    const root = caller.chain[0]
    if (!me || !root) return false
    if (caller.chain.length === 1 && root.groups.includes(ADMIN_GROUP)) return true
    // The requester (any hop of its chain) sees its own requests.
    if (caller.chain.every((p, i) => r.chain[i] === p.id)) return true
    return caller.chain.length === 1 && r.requirements.some((q) => root.groups.includes(q.group))
  }

  private sweep(): void {
    let ids: string[]
    try {
      ids = this.deps.store.expireDue(Date.now())
    } catch (err) {
      this.deps.log.error({ err: String(err) }, 'approvals: cannot expire requests')
      return
    }
    for (const id of ids) {
      const r = this.deps.store.get(id)
      if (!r) continue
      this.deps.audit.appendDeferred({ type: 'approval.decided', ...this.eventFields(r), status: 'expired' })
      this.notify('approval.decided', r, null)
    }
  }

  // ---- records, events, views ---------------------------------------------------------------

  private insert(fields: Omit<ApprovalRecord, 'id'>): ApprovalRecord {
    for (let i = 0; i < 16; i++) {
      const record: ApprovalRecord = { id: `R-${randomBytes(3).toString('hex')}`, ...fields }
      if (this.deps.store.insert(record)) return record
    }
    throw new ApprovalError('GH_ERR_APPROVAL_REQUEST', 'could not allocate a request id')
  }

  private eventFields(r: ApprovalRecord): {
    session: string | null
    chain: readonly string[]
    connection: string
    [k: string]: unknown
  } {
    return {
      session: r.session,
      chain: r.chain,
      connection: r.connection,
      request: r.id,
      kind: r.kind,
      action: r.action,
      statement: r.display,
      fingerprint: r.fingerprint,
      rules: r.rules,
      approvers: [...new Set(r.requirements.map((q) => q.group))],
      reason: r.reason,
      grant: r.grant,
      window_seconds: r.windowSeconds,
      tokens: r.tokenIds,
      policy_version: r.policy,
    }
  }

  private notify(type: string, r: ApprovalRecord, decision: { reviewer: string; verdict: string; comment: string | null } | null): void {
    const hook = this.deps.webhook
    if (!hook) return
    const who = r.chain.join(' → ')
    const groups = [...new Set(r.requirements.map((q) => q.group))].join(', ')
    let text: string
    if (type === 'approval.requested') {
      text = `Approval required (${r.id}) from ${groups}: ${who} wants ${r.action} on ${r.connection}: ${r.display}${
        r.reason ? ` (reason: ${r.reason})` : ''
      }. Approve with: gatehouse approvals approve ${r.id}`
    } else if (decision) {
      text = `${r.id} ${decision.verdict === 'deny' ? 'denied' : 'approved'} by ${decision.reviewer}${
        decision.comment ? `: ${decision.comment}` : ''
      } (status ${r.status})`
    } else text = `${r.id} ${r.status}`
    hook.send({ type, text, request: this.view(r), ...(decision ? { decision } : {}) })
  }

  view(r: ApprovalRecord): ApprovalView {
    return {
      id: r.id,
      status: r.status,
      kind: r.kind,
      requester: r.chain[r.chain.length - 1] ?? '',
      chain: r.chain,
      token_ids: r.tokenIds,
      connection: r.connection,
      connection_labels: this.deps.connection(r.connection)?.labels ?? {},
      session: r.session,
      action: r.action,
      statement: r.display,
      fingerprint: r.fingerprint,
      rules: r.rules,
      requirements: r.requirements,
      reason: r.reason,
      grant: r.grant,
      window_seconds: r.windowSeconds,
      created_at: iso(r.createdAt) as string,
      expires_at: iso(r.expiresAt) as string,
      decided_at: iso(r.decidedAt),
      grant_expires_at: iso(r.grantExpiresAt),
      used_at: iso(r.usedAt),
      policy_version: r.policy,
      votes: this.deps.store
        .votes(r.id)
        .map((v) => ({ reviewer: v.reviewer, verdict: v.verdict, comment: v.comment, at: iso(v.at) as string })),
    }
  }
}

/** Every requirement has `count` distinct approving members of its group. */
function complete(reqs: readonly Requirement[], votes: readonly VoteRecord[]): boolean {
  return reqs.every((q) => votes.filter((v) => v.verdict === 'approve' && v.groups.includes(q.group)).length >= q.count)
}
