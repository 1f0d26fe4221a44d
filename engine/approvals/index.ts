// Wires the approvals service into a gateway: its store (same state.db), the webhook (secret
// resolved once at start: a gateway whose webhook secret is missing does not start), and the
// requirements of the loaded policy bundle for access requests.

import type { Logger } from 'pino'
import type { AuditLog } from '../audit/writer.js'
import type { Config } from '../config/config.js'
import type { ApprovalRequirement } from '../policy/data.js'
import { matchingRequirements } from '../policy/match.js'
import { resolveSecret } from '../secrets.js'
import { ApprovalService } from './service.js'
import { ApprovalStore } from './store.js'
import { WebhookNotifier } from './webhook.js'

export { ApprovalService } from './service.js'
export { approvalRoutes } from './routes.js'

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
