// What the gateway itself answers: RFC 9457 problem documents, never an upstream's body.

import type { ServerResponse } from 'node:http'

export interface Problem {
  readonly status: number
  readonly title: string
  readonly detail: string
  readonly [key: string]: unknown
}

export function sendProblem(res: ServerResponse, p: Problem, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  const body = JSON.stringify({ type: `urn:gatehouse:problem:${p.status}`, ...p })
  res.writeHead(p.status, {
    'content-type': 'application/problem+json',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    ...headers,
  })
  res.end(body)
}

/** A quoted-string for WWW-Authenticate (RFC 9110 §5.6.4). */
export function quoted(s: string): string {
  return `"${s.replace(/[\\"]/g, '\\$&').replace(/[\r\n]/g, ' ')}"`
}
