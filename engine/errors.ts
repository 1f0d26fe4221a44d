// Errors with stable codes. What a *client* is told is built by each proxy in its own protocol's
// format from `code` and `publicMessage`; `message` and `cause` are for the log only and may name
// internals (never secrets).

import type { ApprovalErrorCode } from './approvals/errors.js'

export type GatehouseErrorCode =
  | 'GH_ERR_CONFIG'
  | 'GH_ERR_POLICY'
  | 'GH_ERR_AUTH'
  | 'GH_ERR_UNKNOWN_CONNECTION'
  | 'GH_ERR_DENIED'
  | 'GH_ERR_SECRET'
  | 'GH_ERR_UPSTREAM'
  | 'GH_ERR_AUDIT'
  | 'GH_ERR_PLUGIN'
  | 'GH_ERR_PROTOCOL'
  | 'GH_ERR_STATE'

/** What every code means, for docs/errors.md and the test that keeps the two in step. */
export const ERROR_CODES: Readonly<Record<GatehouseErrorCode, string>> = {
  GH_ERR_CONFIG: 'the configuration file is missing, unreadable or invalid',
  GH_ERR_POLICY: 'a policy directory or bundle does not build or load; a running gateway keeps its last good bundle',
  GH_ERR_AUTH: 'a token is malformed, forged, expired, revoked or meant for another audience',
  GH_ERR_UNKNOWN_CONNECTION: 'the caller named a connection that is not configured for this protocol',
  GH_ERR_DENIED: 'policy refused the work',
  GH_ERR_SECRET: 'a secret reference could not be resolved when the session started, or the connector keeping it would not prove it',
  GH_ERR_UPSTREAM: 'the target could not be reached or refused the gateway',
  GH_ERR_AUDIT: 'an audit event could not be made durable, so the work was refused',
  GH_ERR_PLUGIN: 'a proxy plugin could not be loaded or started',
  GH_ERR_PROTOCOL: 'a client sent bytes the protocol does not allow',
  GH_ERR_STATE: 'the data directory could not be opened or written',
}

/** Codes the HTTP API answers with in `{error, code}` bodies beyond the ones above. */
export const API_ERROR_CODES: Readonly<Record<ApprovalErrorCode | 'GH_ERR_REQUEST' | 'GH_ERR_NOT_FOUND' | 'GH_ERR_CSRF', string>> = {
  GH_ERR_REQUEST: 'a malformed request body or parameter (HTTP 400)',
  GH_ERR_NOT_FOUND: 'no such session or resource (HTTP 404)',
  GH_ERR_CSRF: "a web console request without its session's CSRF token, or from another site (HTTP 403)",
  GH_ERR_APPROVAL_NOT_FOUND: 'no such approval request, or one the caller may not see (HTTP 404)',
  GH_ERR_APPROVAL_CLOSED: 'the approval request is already decided, used or expired (HTTP 409)',
  GH_ERR_APPROVAL_FORBIDDEN: "the caller may not vote: in the request's chain, a delegated token, or in no required group (HTTP 403)",
  GH_ERR_APPROVAL_DUPLICATE: 'the reviewer already voted on this request (HTTP 409)',
  GH_ERR_APPROVAL_REQUEST:
    'a malformed access request: unknown connection, malformed action or duration, or a window over approvals.max_window (HTTP 400)',
}

export class GatehouseError extends Error {
  readonly code: GatehouseErrorCode
  /** Safe to show a client: no internals, no secrets. */
  readonly publicMessage: string

  constructor(code: GatehouseErrorCode, message: string, options?: { cause?: unknown; publicMessage?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'GatehouseError'
    this.code = code
    this.publicMessage = options?.publicMessage ?? message
  }
}

export function isGatehouseError(err: unknown): err is GatehouseError {
  return err instanceof GatehouseError
}
