// The approvals webhook: every request and decision is POSTed as JSON to `approvals.webhook.url`,
// signed like the audit HTTP sink (engine/audit/sinks.ts): `X-Gatehouse-Timestamp` (Unix seconds)
// and `X-Gatehouse-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>">`. The body has a `text`
// field, so a Slack incoming webhook URL works as is. Deliveries never sit in the data path: they
// are queued, sent in order, and retried with exponential back-off; after MAX_ATTEMPTS a delivery
// is dropped with a warning (the audit log keeps the authoritative record).

import { createHmac } from 'node:crypto'
import type { Logger } from 'pino'

const BACKOFF_MIN_MS = 250
const BACKOFF_MAX_MS = 30_000
const MAX_ATTEMPTS = 10
const TIMEOUT_MS = 10_000
/** Deliveries waiting beyond this are dropped (oldest first): a dead receiver must not grow memory. */
const MAX_QUEUE = 10_000

export function signWebhook(secret: string, timestamp: string, body: string): string {
  return `v1=${createHmac('sha256', secret).update(`${timestamp}.`).update(body).digest('hex')}`
}

export class WebhookNotifier {
  private readonly queue: string[] = []
  private running = false
  private closed = false
  private wake: (() => void) | null = null

  constructor(
    private readonly url: string,
    private readonly secret: string,
    private readonly log: Logger,
  ) {}

  send(payload: Record<string, unknown>): void {
    if (this.closed) return
    if (this.queue.length >= MAX_QUEUE) {
      this.queue.shift()
      this.log.warn('approvals webhook queue full; dropped the oldest delivery')
    }
    this.queue.push(JSON.stringify(payload))
    if (!this.running) void this.run()
  }

  private async run(): Promise<void> {
    this.running = true
    try {
      while (!this.closed && this.queue.length > 0) {
        const body = this.queue[0] as string
        let delay = BACKOFF_MIN_MS
        for (let attempt = 1; ; attempt++) {
          const err = await this.post(body)
          if (err === null) break
          if (attempt >= MAX_ATTEMPTS || this.closed) {
            this.log.warn({ err, attempts: attempt }, 'approvals webhook delivery failed; dropped')
            break
          }
          this.log.warn({ err, retryInMs: delay }, 'approvals webhook delivery failed; retrying')
          await this.sleep(delay)
          delay = Math.min(delay * 2, BACKOFF_MAX_MS)
        }
        this.queue.shift()
      }
    } finally {
      this.running = false
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((r) => {
      const t = setTimeout(r, ms)
      t.unref()
      this.wake = () => {
        clearTimeout(t)
        r()
      }
    })
  }

  /** null on success (any 2xx), else what went wrong. */
  private async post(body: string): Promise<string | null> {
    const ts = String(Math.floor(Date.now() / 1000))
    try {
      const res = await fetch(this.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'x-gatehouse-timestamp': ts,
          'x-gatehouse-signature': signWebhook(this.secret, ts, body),
        },
        body,
        signal: AbortSignal.timeout(TIMEOUT_MS),
      })
      await res.arrayBuffer().catch(() => undefined)
      return res.ok ? null : `HTTP ${res.status}`
    } catch (err) {
      return err instanceof Error ? err.message : String(err)
    }
  }

  close(): void {
    this.closed = true
    this.wake?.()
  }
}
