// What a protocol plugin asks of the approvals service for a held command, and what it answers.

import type { Decision } from '../types.js'

/** What a plugin asks for when a command is held (engine/approvals). */
export interface ApprovalAsk {
  /** The held command's action (a window grant covers this action). */
  readonly action: string
  /** The hold decision. */
  readonly decision: Extract<Decision, { effect: 'hold' }>
  /** What reviewers are shown: the statement (passwords redacted), argv, … */
  readonly display: string
  /** Hex SHA-256 of the exact command (SQL text and parameters): a once-grant is bound to it. */
  readonly fingerprint: string
  /** The requester's justification (`SET gatehouse.reason`), if any. */
  readonly reason?: string | null
  /** false: file the request and answer `pending` at once (clients that cannot wait). */
  readonly wait: boolean
  /** Aborts the wait (the session ended, the client cancelled). */
  readonly signal?: AbortSignal
  /** Called once a new request is recorded, before waiting (the plugin tells its client). */
  readonly onRequested?: (request: string, approvers: readonly string[]) => void
}

export type ApprovalOutcome =
  /** A usable grant covers the command (and a once-grant was consumed): decide it again with
   * `{granted: true}`. */
  | { readonly status: 'granted'; readonly request: string; readonly grant: 'once' | 'window' }
  | { readonly status: 'denied'; readonly request: string; readonly reviewer: string; readonly comment: string | null }
  | { readonly status: 'timeout'; readonly request: string; readonly after_seconds: number }
  /** Not waiting: the request is filed; the identical command sent again after approval runs once. */
  | { readonly status: 'pending'; readonly request: string; readonly approvers: readonly string[] }
  | { readonly status: 'aborted'; readonly request: string }
