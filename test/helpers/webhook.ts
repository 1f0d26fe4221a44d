// A webhook receiver for tests: a real HTTP server on a free port that checks every delivery's
// HMAC-SHA256 signature (X-Gatehouse-Timestamp, X-Gatehouse-Signature: v1=<hex of "<ts>.<body>">)
// independently of the gateway's code, and records what it got. `failFirst` answers 503 to the
// first N deliveries, to prove retries.

import { createHmac, timingSafeEqual } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface Delivery {
  readonly body: Record<string, unknown>
  readonly valid: boolean
}

export class WebhookReceiver {
  readonly deliveries: Delivery[] = []
  attempts = 0
  private failures: number

  private constructor(
    private readonly server: Server,
    readonly url: string,
    private readonly secret: string,
    failFirst: number,
  ) {
    this.failures = failFirst
  }

  static async start(secret: string, failFirst = 0): Promise<WebhookReceiver> {
    let self: WebhookReceiver | null = null
    const server = createServer((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        const r = self as WebhookReceiver
        r.attempts++
        if (r.failures > 0) {
          r.failures--
          res.writeHead(503).end()
          return
        }
        const raw = Buffer.concat(chunks)
        const ts = String(req.headers['x-gatehouse-timestamp'] ?? '')
        const sig = String(req.headers['x-gatehouse-signature'] ?? '')
        const want = `v1=${createHmac('sha256', r.secret).update(`${ts}.`).update(raw).digest('hex')}`
        const valid = sig.length === want.length && timingSafeEqual(Buffer.from(sig), Buffer.from(want))
        r.deliveries.push({ body: JSON.parse(raw.toString('utf8')) as Record<string, unknown>, valid })
        res.writeHead(valid ? 200 : 401).end()
      })
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    const port = (server.address() as AddressInfo).port
    self = new WebhookReceiver(server, `http://127.0.0.1:${port}/hook`, secret, failFirst)
    return self
  }

  close(): Promise<void> {
    return new Promise((r) => this.server.close(() => r()))
  }
}
