// The `approvals:` section of gatehouse.yaml:
//
//   approvals:
//     timeout: 5m            how long a held statement waits for a decision (default 5m)
//     request_ttl: 1h        how long a request stays open, and an approved once-grant usable,
//                            for clients that do not wait (default 1h; at least `timeout`)
//     max_window: 8h         the longest window an access request (`gatehouse request --for`) may ask
//     max_pending: 200       requests waiting at once for chains with the same root principal
//     webhook:
//       url: https://hooks.slack.com/services/…
//       secret: env:GATEHOUSE_WEBHOOK_SECRET    HMAC-SHA256 key (a secret reference, never a literal)
//
// Validated by `approvalsSchema`, part of the configuration's one schema; every problem is
// reported with its key path, like the rest of the configuration.

import { z } from 'zod'
import { duration, issueLines, secretRef, strict } from '../config/zod.js'
import { parseDuration } from '../duration.js'
import { parseSecretRef, type SecretRef } from '../secrets.js'

export interface WebhookConfig {
  readonly url: string
  readonly secret: SecretRef
}

export interface ApprovalsConfig {
  readonly timeoutSeconds: number
  readonly requestTtlSeconds: number
  readonly maxWindowSeconds: number
  /** Requests pending at once for chains with the same root (reviewers and the webhook are not flooded). */
  readonly maxPending: number
  readonly webhook: WebhookConfig | null
}

export const DEFAULT_APPROVALS: ApprovalsConfig = {
  timeoutSeconds: 300,
  requestTtlSeconds: 3600,
  maxWindowSeconds: 8 * 3600,
  maxPending: 200,
  webhook: null,
}

const DURATION = 'must be a duration like 30s, 5m, 1h or 1d'
const SECRET = 'is required: a secret reference (env:NAME or file:PATH), never the secret itself'

/** The `approvals:` section of the configuration schema (engine/config/config.ts composes it). */
export const approvalsSchema = strict(
  {
    timeout: duration(DURATION).optional(),
    request_ttl: duration(DURATION).optional(),
    max_window: duration(DURATION).optional(),
    max_pending: z
      .number({ error: (iss) => `must be an integer from 1 to 100000 (got ${JSON.stringify(iss.input)})` })
      .int({ error: (iss) => `must be an integer from 1 to 100000 (got ${JSON.stringify(iss.input)})` })
      .min(1, { error: (iss) => `must be an integer from 1 to 100000 (got ${JSON.stringify(iss.input)})` })
      .max(100_000, { error: (iss) => `must be an integer from 1 to 100000 (got ${JSON.stringify(iss.input)})` })
      .optional(),
    webhook: strict(
      {
        url: z
          .string({ error: 'is required: an http(s) URL' })
          .refine((u) => URL.canParse(u), { error: (iss) => `is not a URL (got ${JSON.stringify(iss.input)})`, abort: true })
          .refine((u) => ['http:', 'https:'].includes(new URL(u).protocol), { error: 'must be an http or https URL' }),
        // Every delivery is signed, so the receiver can tell a forged approval request from ours.
        secret: secretRef(SECRET),
      },
      'must be a mapping with url and secret',
    )
      .nullable()
      .optional(),
  },
  'must be a mapping (timeout, request_ttl, max_window, max_pending, webhook)',
)
  .superRefine((a, ctx) => {
    const timeout = parseDuration(a.timeout ?? '5m') ?? 0
    if (a.request_ttl !== undefined && (parseDuration(a.request_ttl) ?? 0) < timeout) {
      ctx.addIssue({ code: 'custom', path: ['request_ttl'], message: 'must be at least approvals.timeout' })
    }
  })
  .nullable()
  .optional()

export type ApprovalsSection = z.output<typeof approvalsSchema>

/** The validated section as the engine uses it; relative secret files against `baseDir`. */
export function approvalsFromSection(a: ApprovalsSection, baseDir: string): ApprovalsConfig {
  if (a === undefined || a === null) return DEFAULT_APPROVALS
  const dur = (v: string | undefined, dflt: number): number => (v === undefined ? dflt : (parseDuration(v) ?? dflt))
  const timeoutSeconds = dur(a.timeout, DEFAULT_APPROVALS.timeoutSeconds)
  const webhook = a.webhook ? { url: a.webhook.url, secret: parseSecretRef(a.webhook.secret, baseDir) } : null
  return {
    timeoutSeconds,
    requestTtlSeconds: dur(a.request_ttl, Math.max(DEFAULT_APPROVALS.requestTtlSeconds, timeoutSeconds)),
    maxWindowSeconds: dur(a.max_window, DEFAULT_APPROVALS.maxWindowSeconds),
    maxPending: a.max_pending ?? DEFAULT_APPROVALS.maxPending,
    webhook: webhook?.secret ? { url: webhook.url, secret: webhook.secret } : null,
  }
}

/** Validates and converts `approvals:` alone; problems go to `problem` as (key path, what). */
export function parseApprovalsConfig(raw: unknown, baseDir: string, problem: (path: string, what: string) => void): ApprovalsConfig {
  const r = approvalsSchema.safeParse(raw)
  if (!r.success) {
    for (const l of issueLines(r.error.issues, ['approvals']))
      problem(l.line.slice(0, l.line.indexOf(': ')), l.line.slice(l.line.indexOf(': ') + 2))
    return DEFAULT_APPROVALS
  }
  return approvalsFromSection(r.data, baseDir)
}
