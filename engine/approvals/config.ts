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
// Every problem is reported with its key path, like the rest of the configuration.

import { parseDuration } from '../config.js'
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

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

export function parseApprovalsConfig(raw: unknown, baseDir: string, problem: (path: string, what: string) => void): ApprovalsConfig {
  if (raw === undefined || raw === null) return DEFAULT_APPROVALS
  if (!isRecord(raw)) {
    problem('approvals', 'must be a mapping (timeout, request_ttl, max_window, max_pending, webhook)')
    return DEFAULT_APPROVALS
  }
  for (const k of Object.keys(raw)) {
    if (!['timeout', 'request_ttl', 'max_window', 'max_pending', 'webhook'].includes(k))
      problem(`approvals.${k}`, 'unknown key (allowed: timeout, request_ttl, max_window, max_pending, webhook)')
  }
  const dur = (key: string, dflt: number): number => {
    const v = raw[key]
    if (v === undefined) return dflt
    const s = typeof v === 'string' ? parseDuration(v) : null
    if (s === null || s <= 0) {
      problem(`approvals.${key}`, `must be a duration like 30s, 5m, 1h or 1d (got ${JSON.stringify(v)})`)
      return dflt
    }
    return s
  }
  const timeoutSeconds = dur('timeout', DEFAULT_APPROVALS.timeoutSeconds)
  const requestTtlSeconds = dur('request_ttl', Math.max(DEFAULT_APPROVALS.requestTtlSeconds, timeoutSeconds))
  if (requestTtlSeconds < timeoutSeconds) problem('approvals.request_ttl', 'must be at least approvals.timeout')
  const maxWindowSeconds = dur('max_window', DEFAULT_APPROVALS.maxWindowSeconds)
  let maxPending = DEFAULT_APPROVALS.maxPending
  if (raw.max_pending !== undefined) {
    const n = raw.max_pending
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 100_000) {
      problem('approvals.max_pending', `must be an integer from 1 to 100000 (got ${JSON.stringify(n)})`)
    } else maxPending = n
  }
  let webhook: WebhookConfig | null = null
  const w = raw.webhook
  if (w !== undefined && w !== null) {
    if (!isRecord(w)) problem('approvals.webhook', 'must be a mapping with url and secret')
    else {
      for (const k of Object.keys(w)) {
        if (!['url', 'secret'].includes(k)) problem(`approvals.webhook.${k}`, 'unknown key (allowed: url, secret)')
      }
      let url: string | null = null
      if (typeof w.url !== 'string') problem('approvals.webhook.url', 'is required: an http(s) URL')
      else {
        try {
          const u = new URL(w.url)
          if (u.protocol !== 'https:' && u.protocol !== 'http:') problem('approvals.webhook.url', 'must be an http or https URL')
          else url = w.url
        } catch {
          problem('approvals.webhook.url', `is not a URL (got ${JSON.stringify(w.url)})`)
        }
      }
      // Every delivery is signed, so the receiver can tell a forged approval request from ours.
      const secret = parseSecretRef(w.secret, baseDir)
      if (!secret) problem('approvals.webhook.secret', 'is required: a secret reference (env:NAME or file:PATH), never the secret itself')
      if (url && secret) webhook = { url, secret }
    }
  }
  return { timeoutSeconds, requestTtlSeconds, maxWindowSeconds, maxPending, webhook }
}
