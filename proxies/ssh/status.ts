// The gateway's own verdict on an exec, for callers that need it as data (the MCP `exec` tool).
// A target can print anything on stderr, including text shaped like a gateway notice, so stderr is
// never parsed for a status. Instead the caller sends a fresh random tag as an env request
// (`GATEHOUSE_STATUS`), which the gateway keeps to itself (it never reaches policy, the target or
// the audit); when the gateway refuses or holds the command, it writes one line
// `gatehouse-status <tag> <json>` on stderr. Only the gateway knows the tag, so only the gateway
// can write that line.

import { denialOf, type HeldVerdict } from '../kit/index.js'
import type { Decision, GatewayStatus } from '../types.js'

export const STATUS_ENV = 'GATEHOUSE_STATUS'
const TAG = /^[0-9a-f]{32}$/
const PREFIX = 'gatehouse-status '

export function isStatusTag(v: string): boolean {
  return TAG.test(v)
}

/** The line the gateway writes on stderr for a caller that sent `tag`. */
export function statusLine(tag: string, s: GatewayStatus): string {
  return `${PREFIX}${tag} ${JSON.stringify(s)}\r\n`
}

function strings(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === 'string')
}

function nullableString(v: unknown): v is string | null {
  return v === null || typeof v === 'string'
}

function asStatus(v: unknown): GatewayStatus | null {
  if (typeof v !== 'object' || v === null || !('status' in v) || !('message' in v) || typeof v.message !== 'string') return null
  const o = v as Record<string, unknown>
  const message = v.message
  if (o.status === 'denied' && nullableString(o.rule) && nullableString(o.hop) && typeof o.reason === 'string') {
    return { status: 'denied', rule: o.rule, hop: o.hop, reason: o.reason, message }
  }
  if (o.status === 'held' && nullableString(o.request_id) && strings(o.approvers) && strings(o.rules)) {
    return { status: 'held', request_id: o.request_id, approvers: o.approvers, rules: o.rules, message }
  }
  if (o.status === 'error') return { status: 'error', message }
  return null
}

/**
 * Takes the gateway's status line for `tag` out of an exec's stderr. Lines with another tag, or
 * none, are the target's output and stay as they are.
 */
export function takeStatus(stderr: string, tag: string): { status: GatewayStatus | null; stderr: string } {
  const mark = `${PREFIX}${tag} `
  let status: GatewayStatus | null = null
  const kept: string[] = []
  for (const line of stderr.split('\n')) {
    if (status === null && line.startsWith(mark)) {
      try {
        status = asStatus(JSON.parse(line.slice(mark.length).replace(/\r$/, '')) as unknown)
        if (status !== null) continue
      } catch {
        // not a line the gateway wrote: kept as output
      }
    }
    kept.push(line)
  }
  return { status, stderr: kept.join('\n') }
}

/** The status of a denial decided by policy: the first reason's rule and hop. */
export function deniedStatus(d: Extract<Decision, { effect: 'deny' }>): GatewayStatus {
  return { status: 'denied', ...denialOf(d), message: `gatehouse: denied: ${d.reason}` }
}

/** The status of a held command that did not run: still pending, denied by a reviewer, or given up. */
export function heldStatus(d: Extract<Decision, { effect: 'hold' }>, v: Extract<HeldVerdict, { ok: false }>): GatewayStatus {
  const message = `gatehouse: ${v.message}`
  if (v.pending) return { status: 'held', request_id: v.request ?? null, approvers: d.approvers, rules: d.rules, message }
  if (v.reviewer !== undefined) return { status: 'denied', rule: 'approval', hop: null, reason: v.message, message }
  return { status: 'denied', rule: null, hop: null, reason: v.message, message }
}
