// Held statements in the PostgreSQL protocol (engine/approvals): what the client is told, what an
// approval binds to, and the per-session settings a client uses to steer the wait.
//
//   SET gatehouse.approval_wait = off   the held statement fails at once with an error naming the
//                                       request; the identical statement sent again after approval
//                                       runs once (clients that cannot wait)
//   SET gatehouse.reason = '…'          a justification attached to the next requests
//
// PostgreSQL accepts any `gatehouse.*` placeholder setting, so these SETs also run on the server,
// harmlessly; the gateway reads the value from the statement as it forwards it (not from the
// server: a SET rolled back with its transaction still counts here — the settings only steer the
// wait and the text reviewers read, never what is allowed).

import { createHash } from 'node:crypto'
import type { SqlAnalyzer } from './sql/index.js'
import type { ApprovalOutcome } from '../types.js'
import type { ErrorFields } from './messages.js'
import type { Verdict } from './statements.js'

/** A Flush message. Reading any message disarms the server's idle_in_transaction_session_timeout
 * (and idle_session_timeout), and only sending ReadyForQuery arms them again, which Flush does not
 * cause: one Flush at the start of a hold keeps the server session from timing out while it waits,
 * without running anything or touching the transaction (PostgreSQL postgres.c, PostgresMain). */
export const FLUSH = Buffer.from([0x48, 0, 0, 0, 4])

/** The grant of an approval is bound to this: the exact text and parameters, nothing normalized. */
export function statementFingerprint(sql: string | null, params: readonly (string | null)[] | null): string {
  return createHash('sha256')
    .update(JSON.stringify([sql, params ?? []]))
    .digest('hex')
}

/**
 * Whether the text names what runs. `EXECUTE name` of an SQL-level prepared statement does not
 * (the name can be prepared again with another body), nor does a statement the gateway cannot
 * see: those are only approved while the client waits, bound to that one wait.
 */
export function bindable(verdict: Verdict, sql: string | null, sqlLevelExecute: boolean): boolean {
  return sql !== null && !sqlLevelExecute && !verdict.statements.some((s) => s.wrapper === 'execute')
}

/** Statements of one query held for different reasons must be sent (and approved) separately:
 * one approval covers one set of rules. Returns the problem, or null. */
export function mixedHolds(verdict: Verdict): string | null {
  const held = verdict.statements.filter((s) => s.decision === 'hold')
  if (held.length <= 1) return null
  const key = (s: (typeof held)[number]): string => `${s.action}\0${[...s.rules].sort().join('\0')}`
  const first = key(held[0] as (typeof held)[number])
  return held.every((s) => key(s) === first)
    ? null
    : 'gatehouse: this query holds statements that need different approvals; send them one at a time'
}

/** The action of the held statements (they share one, see mixedHolds). */
export function heldAction(verdict: Verdict, fallback: string): string {
  return verdict.statements.find((s) => s.decision === 'hold')?.action ?? fallback
}

export class ApprovalPrefs {
  wait = true
  reason: string | null = null

  /** Follows `SET gatehouse.approval_wait|reason`, RESET and RESET ALL in a forwarded query. */
  note(analyzer: SqlAnalyzer, verdict: Verdict, sql: string | null): void {
    if (sql === null || !verdict.statements.some((s) => s.kind === 'set' || s.kind === 'reset')) return
    for (const st of analyzer.analyze(sql).statements) {
      for (const s of st.settings) {
        if (s.name === 'all' || s.name === 'gatehouse.approval_wait') {
          this.wait = s.value === null || !/^(off|false|no|0)$/i.test(s.value.trim().replace(/^'|'$/g, ''))
        }
        if (s.name === 'all' || s.name === 'gatehouse.reason') this.reason = s.value === null ? null : s.value.slice(0, 2000)
      }
    }
  }
}

export function holdNotice(request: string, approvers: readonly string[]): ErrorFields {
  return {
    severity: 'NOTICE',
    code: '00000',
    message: `gatehouse: approval required (request ${request}), waiting for group ${approvers.join(', ')}; approve with: gatehouse approvals approve ${request}`,
  }
}

/** What the client reads when the held statement does not run. */
export function holdError(o: Exclude<ApprovalOutcome, { status: 'granted' }>): ErrorFields {
  switch (o.status) {
    case 'denied':
      return {
        severity: 'ERROR',
        code: '42501',
        message: `gatehouse: request ${o.request} was denied by ${o.reviewer}${o.comment ? `: ${o.comment}` : ''}`,
      }
    case 'timeout':
      return {
        severity: 'ERROR',
        code: '57014',
        message: `gatehouse: approval request ${o.request} timed out after ${o.after_seconds}s without a decision; the statement was not run`,
      }
    case 'pending':
      return {
        severity: 'ERROR',
        code: '42501',
        message: `gatehouse: approval required (request ${o.request}) from group ${o.approvers.join(', ')}; once it is approved, send the identical statement again and it runs once`,
        hint: `approve with: gatehouse approvals approve ${o.request}`,
      }
    case 'aborted':
      return {
        severity: 'ERROR',
        code: '57014',
        message: `gatehouse: stopped waiting for approval request ${o.request}; the statement was not run`,
      }
  }
}
