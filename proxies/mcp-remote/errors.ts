// The JSON-RPC errors the agent gets: the gateway's own refusals (denied, held, a gateway error,
// each with its code) and an upstream failure as the agent may see it.

import { McpError } from '@modelcontextprotocol/sdk/types.js'
import type { Decision, GatewayRefusal } from '../types.js'

/** JSON-RPC error codes of the gateway's own refusals (implementation-defined server range). */
export const DENIED_CODE = -32010
export const HELD_CODE = -32011
export const GATEWAY_ERROR_CODE = -32012

/** A JSON-RPC error the SDK sends as is (code, message, data): no "MCP error" prefix. */
export class RpcError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly data?: unknown,
  ) {
    super(message)
  }
}

export function refusalError(refusal: GatewayRefusal): RpcError {
  return new RpcError(refusal.status === 'held' ? HELD_CODE : DENIED_CODE, refusal.message, refusal)
}

export function denied(d: Extract<Decision, { effect: 'deny' }>): RpcError {
  const first = d.reasons[0]
  return refusalError({
    status: 'denied',
    rule: first ? first.rule || 'policy' : null,
    hop: first ? first.hop || null : null,
    reason: d.reason,
    message: `gatehouse: denied${first ? ` by ${first.rule || 'policy'}${first.hop ? ` (${first.hop})` : ''}` : ''}: ${d.reason}`,
  })
}

/** The codes only the gateway's own decisions use: an upstream cannot answer with them. */
const GATEWAY_CODES = new Set([DENIED_CODE, HELD_CODE, GATEWAY_ERROR_CODE])
/** What an upstream error that used a gateway code becomes. */
export const UPSTREAM_ERROR_CODE = -32000

/** What an upstream error's message becomes while a masking rule applies to the request. */
export const WITHHELD_ERROR = "gatehouse: withheld the upstream's error message: masking rules apply to this request"

/**
 * An upstream failure as the agent sees it: the upstream's JSON-RPC error (its message and data
 * masked), or a gateway error when the upstream could not be reached. An upstream error that uses
 * one of the gateway's codes loses the code and its data: a refusal or a hold (and the approval
 * request an agent would wait for) comes from the gateway's own decision only. While a masking
 * rule applies (`withhold`), the message and data are the upstream's free text, which a JSON-path
 * rule cannot read: the message is replaced by WITHHELD_ERROR and the data dropped.
 */
export function upstreamRpcError(err: unknown, maskText: (s: string) => string, mask: (v: unknown) => unknown, withhold = false): Error {
  if (err instanceof McpError) {
    if (withhold) return new RpcError(GATEWAY_CODES.has(err.code) ? UPSTREAM_ERROR_CODE : err.code, WITHHELD_ERROR)
    // McpError prefixes "MCP error <code>: " (twice when the upstream's own message had it); the
    // agent gets the upstream's own message.
    const msg = maskText(err.message.replace(/^(MCP error -?\d+: )+/, ''))
    if (GATEWAY_CODES.has(err.code)) return new RpcError(UPSTREAM_ERROR_CODE, `upstream error: ${msg}`)
    return new RpcError(err.code, msg, err.data === undefined ? undefined : mask(err.data))
  }
  return new RpcError(GATEWAY_ERROR_CODE, 'gatehouse: the upstream MCP server failed or could not be reached')
}
