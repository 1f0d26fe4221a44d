// What the gateway itself answers a Kubernetes client: a `Status` object (meta/v1), which kubectl
// prints as `Error from server (Forbidden): <message>`, never an upstream's body.

import type { ServerResponse } from 'node:http'

const REASONS: Record<number, string> = {
  400: 'BadRequest',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'NotFound',
  413: 'RequestEntityTooLarge',
  429: 'TooManyRequests',
  500: 'InternalError',
  502: 'InternalError',
  503: 'ServiceUnavailable',
}

export interface StatusAnswer {
  readonly code: number
  readonly message: string
  /** Gatehouse's own fields (rules, approval request), under `details`. */
  readonly details?: Readonly<Record<string, unknown>>
}

export function statusBody(s: StatusAnswer): string {
  return JSON.stringify({
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message: s.message,
    reason: REASONS[s.code] ?? 'Unknown',
    ...(s.details ? { details: s.details } : {}),
    code: s.code,
  })
}

export function sendStatus(res: ServerResponse, s: StatusAnswer, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  const body = statusBody(s)
  res.writeHead(s.code, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    ...headers,
  })
  res.end(body)
}
