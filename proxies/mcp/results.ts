// Tool results an agent can act on. A denial or a hold is not a protocol error (an agent would
// retry blindly): it is a tool result with `isError: true` whose text says what happened, which
// rule and which hop of the chain decided it, and what the agent can do next (narrow the request,
// ask a person, wait for the named approvers and poll `approval_status` with the request id).

import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js'
import { denialOf, refusalMessage } from '../kit/index.js'
import type { Decision, GatewayRefusal } from '../types.js'

/** `gatehouse: denied by <rule> (<hop>): <reason>` (proxies/kit refusalMessage). */
const DENIED_RE = /^gatehouse: denied by (\S+)(?: \(([^)]+)\))?: ([\s\S]*)$/
const DENIED_PLAIN_RE = /^gatehouse: denied: ([\s\S]*)$/
/** The approvals' texts (proxies/postgres/hold.ts): `… (request R-1a2b3c) from group dba; …`. */
const REQUEST_ID_RE = /\brequest ([A-Za-z0-9][A-Za-z0-9_-]{2,63})\b/
const REVIEWER_DENIED_RE = /^gatehouse: request (\S+) was denied by (\S+?)(?:: ([\s\S]*))?$/
const GROUPS_RE = /\b(?:from|for) group ([\w.:-]+(?:, [\w.:-]+)*)/
const LEGACY_HOLD_RE = /^gatehouse: approval required from ([^()]+?) \(([^)]*)\)/

/** Reads a gateway refusal out of a PostgreSQL error message; null when it is not one. */
export function parseRefusal(message: string): GatewayRefusal | null {
  if (!message.startsWith('gatehouse:')) return null
  const d = DENIED_RE.exec(message)
  if (d) return { status: 'denied', rule: d[1] ?? null, hop: d[2] ?? null, reason: d[3] ?? '', message }
  const r = REVIEWER_DENIED_RE.exec(message)
  if (r)
    return {
      status: 'denied',
      rule: 'approval',
      hop: null,
      reason: `request ${r[1]} was denied by ${r[2]}${r[3] ? `: ${r[3]}` : ''}`,
      message,
    }
  if (/^gatehouse: approval required\b/.test(message)) {
    const id = REQUEST_ID_RE.exec(message)?.[1] ?? null
    const legacy = LEGACY_HOLD_RE.exec(message)
    const groups = GROUPS_RE.exec(message)?.[1] ?? legacy?.[1] ?? ''
    return {
      status: 'held',
      request_id: id,
      approvers: groups.split(/,\s*/).filter(Boolean),
      rules: legacy?.[2] ? legacy[2].split(/,\s*/).filter(Boolean) : [],
      message,
    }
  }
  const p = DENIED_PLAIN_RE.exec(message)
  return { status: 'denied', rule: null, hop: null, reason: p?.[1] ?? message.slice('gatehouse:'.length).trim(), message }
}

/** The refusal of an `mcp.call` decision (the tool itself was refused before anything ran). */
export function refusalOfDecision(d: Exclude<Decision, { effect: 'allow' }>): GatewayRefusal {
  if (d.effect === 'hold') {
    return { status: 'held', request_id: null, approvers: d.approvers, rules: d.rules, message: refusalMessage(d) }
  }
  return { status: 'denied', ...denialOf(d), message: refusalMessage(d) }
}

/** What the agent can do about a refusal, in one sentence. */
export function advice(r: GatewayRefusal): string {
  if (r.status === 'held') {
    const who = r.approvers.length > 0 ? `a member of ${r.approvers.join(' or ')}` : 'a reviewer'
    return r.request_id
      ? `Nothing ran. The statement waits for ${who} to approve request ${r.request_id}: call approval_status with request_id "${r.request_id}", and once it is approved, call the same tool again with the same arguments.`
      : `Nothing ran. It needs the approval of ${who}; ask a person to request or grant it (gatehouse approvals), then call the tool again.`
  }
  if (r.rule === 'scope') {
    return `Nothing ran. It is outside the scope of ${r.hop ?? 'a hop of your chain'}: a delegated token can only narrow, so ask the principal above you to do it, or to give you a token whose scope covers it.`
  }
  return `Nothing ran. The policy refuses this for your chain${r.hop ? ` (at ${r.hop})` : ''}; retrying will not change the answer. Change the request, or ask a person who may do it.`
}

export function refusalResult(r: GatewayRefusal, extra: Record<string, unknown> = {}): CallToolResult {
  const body = { ...r, ...extra, what_you_can_do: advice(r) }
  return {
    isError: true,
    content: [{ type: 'text', text: `${r.message}\n${advice(r)}\n${JSON.stringify(body)}` }],
    structuredContent: body,
  }
}

export function errorResult(message: string, extra: Record<string, unknown> = {}): CallToolResult {
  const body = { status: 'error', message, ...extra }
  return { isError: true, content: [{ type: 'text', text: `${message}\n${JSON.stringify(body)}` }], structuredContent: body }
}

export function okResult(summary: string, data: Record<string, unknown>): CallToolResult {
  const body = { status: 'ok', ...data }
  return { content: [{ type: 'text', text: `${summary}\n${JSON.stringify(body)}` }], structuredContent: body }
}
