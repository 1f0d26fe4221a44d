// Wires the approvals service into a gateway: its store (same state.db), the webhook (secret
// resolved once at start: a gateway whose webhook secret is missing does not start), and the
// requirements of the loaded policy bundle for access requests.

import type { Logger } from 'pino'
import type { AuditLog } from '../audit/writer.js'
import type { Config } from '../config.js'
import type { ApprovalRequirement } from '../policy/data.js'
import { resolveSecret } from '../secrets.js'
import type { ConnectionRef, HoldRequirement } from '../types.js'
import { ApprovalService } from './service.js'
import { ApprovalStore } from './store.js'
import { WebhookNotifier } from './webhook.js'

export { ApprovalService } from './service.js'
export { approvalRoutes } from './routes.js'

function actionMatches(patterns: readonly string[], action: string): boolean {
  return patterns.some((a) => a === action || a === '*' || (a.endsWith('.*') && action.startsWith(a.slice(0, -1))))
}

/** The requirements that would hold `action` on `connection`, as the engine matches them. */
export function matchingRequirements(all: readonly ApprovalRequirement[], action: string, connection: ConnectionRef): HoldRequirement[] {
  return all
    .filter((r) => actionMatches(r.action, action) && Object.entries(r.labels).every(([k, v]) => connection.labels[k] === v))
    .map((r) => ({
      rule: r.name,
      group: r.approvers.group,
      count: r.approvers.count,
      grant: r.grant === 'window' && r.window_seconds !== null ? 'window' : 'once',
      window_seconds: r.window_seconds,
      reason: r.reason,
    }))
}

export async function startApprovals(opts: {
  config: Config
  audit: AuditLog
  log: Logger
  requirements: () => readonly ApprovalRequirement[]
  policyVersion: () => string
}): Promise<ApprovalService> {
  const { config } = opts
  const log = opts.log.child({ component: 'approvals' })
  const hook = config.approvals.webhook
  const webhook = hook ? new WebhookNotifier(hook.url, await resolveSecret(hook.secret), log) : null
  return new ApprovalService({
    store: new ApprovalStore(config.dataDir),
    audit: opts.audit,
    config: config.approvals,
    webhook,
    log,
    connection: (name) => {
      const c = config.connections.find((x) => x.name === name)
      return c ? { name: c.name, protocol: c.protocol, labels: c.labels } : null
    },
    requirementsFor: (action, connection) => matchingRequirements(opts.requirements(), action, connection),
    policyVersion: opts.policyVersion,
  })
}
