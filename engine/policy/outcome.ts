// One hop's answer, read from what the policy returned: the contract's `allow`, `deny`, `approval` and
// `mask` entries, validated. A malformed deny entry still denies; any other malformed entry is a
// PolicyEvaluationError, which the engine turns into a deny (fail closed).

import type { MaskObligation } from '../types.js'
import { MASK_STRATEGIES, type MaskStrategy } from './data.js'
import { jsonPathProblem } from '../masking/jsonpath.js'
import { isRecord } from '../record.js'

export interface RuleReason {
  readonly rule: string
  readonly reason: string
}
export interface ApprovalAsk {
  readonly rule: string
  readonly group: string
  readonly reason: string
}

/** What one hop's evaluation said. */
export interface HopOutcome {
  readonly allow: boolean
  readonly deny: readonly RuleReason[]
  readonly approval: readonly ApprovalAsk[]
  readonly mask: readonly MaskObligation[]
}

export class PolicyEvaluationError extends Error {
  override readonly name = 'PolicyEvaluationError'
}

function list(v: unknown, what: string): unknown[] {
  if (Array.isArray(v)) return v
  throw new PolicyEvaluationError(`${what} must be a set of entries (got ${JSON.stringify(v)?.slice(0, 200)})`)
}

/** A deny entry always denies: a malformed one still does, with what it said as the reason. */
function denyEntry(v: unknown): RuleReason {
  if (typeof v === 'string') return { rule: 'deny', reason: v }
  if (isRecord(v)) {
    const rule = typeof v.rule === 'string' && v.rule ? v.rule : 'deny'
    const reason = typeof v.reason === 'string' && v.reason ? v.reason : JSON.stringify(v)
    return { rule, reason }
  }
  return { rule: 'deny', reason: JSON.stringify(v) }
}

function approvalEntry(v: unknown): ApprovalAsk {
  if (isRecord(v) && typeof v.rule === 'string' && typeof v.group === 'string' && v.group) {
    return { rule: v.rule, group: v.group, reason: typeof v.reason === 'string' ? v.reason : `approval by ${v.group}` }
  }
  throw new PolicyEvaluationError(`approval entry ${JSON.stringify(v)} must be {rule, group, reason}`)
}

function maskEntry(v: unknown): MaskObligation {
  if (
    isRecord(v) &&
    typeof v.rule === 'string' &&
    typeof v.column === 'string' &&
    v.column &&
    typeof v.strategy === 'string' &&
    (MASK_STRATEGIES as readonly string[]).includes(v.strategy)
  ) {
    const strategy = v.strategy as MaskStrategy
    if (v.keep !== undefined && (typeof v.keep !== 'number' || !Number.isInteger(v.keep) || v.keep < 0)) {
      throw new PolicyEvaluationError(`mask entry ${JSON.stringify(v)}: keep must be a non-negative integer`)
    }
    const keep = typeof v.keep === 'number' ? v.keep : strategy === 'partial' ? 4 : undefined
    return keep === undefined ? { rule: v.rule, column: v.column, strategy } : { rule: v.rule, column: v.column, strategy, keep }
  }
  // A JSON body path: {rule, json_path, strategy}. A path that does not parse denies (fail closed).
  if (
    isRecord(v) &&
    typeof v.rule === 'string' &&
    typeof v.json_path === 'string' &&
    v.column === undefined &&
    typeof v.strategy === 'string' &&
    (MASK_STRATEGIES as readonly string[]).includes(v.strategy)
  ) {
    const bad = jsonPathProblem(v.json_path)
    if (bad !== null) throw new PolicyEvaluationError(`mask entry ${JSON.stringify(v)}: ${bad}`)
    const strategy = v.strategy as MaskStrategy
    if (v.keep !== undefined && (typeof v.keep !== 'number' || !Number.isInteger(v.keep) || v.keep < 0)) {
      throw new PolicyEvaluationError(`mask entry ${JSON.stringify(v)}: keep must be a non-negative integer`)
    }
    const keep = typeof v.keep === 'number' ? v.keep : strategy === 'partial' ? 4 : undefined
    const base = { rule: v.rule, column: '', json_path: v.json_path, strategy }
    return keep === undefined ? base : { ...base, keep }
  }
  throw new PolicyEvaluationError(
    `mask entry ${JSON.stringify(v)} must be {rule, column, strategy: redact|partial|hash|null} or {rule, json_path, strategy}`,
  )
}

export const EMPTY: readonly never[] = Object.freeze([])

export function outcome(allow: unknown, deny: unknown, approval: unknown, mask: unknown): HopOutcome {
  const d = list(deny, 'deny')
  const a = list(approval, 'approval')
  const m = list(mask, 'mask')
  return {
    allow: allow === true,
    deny: d.length === 0 ? EMPTY : d.map(denyEntry),
    approval: a.length === 0 ? EMPTY : a.map(approvalEntry),
    mask: m.length === 0 ? EMPTY : m.map(maskEntry),
  }
}

/** The value of a result set `[{"result": v}]`; undefined when the rule is undefined. */
export function resultValue(rs: unknown): unknown {
  if (!Array.isArray(rs)) throw new PolicyEvaluationError('the policy returned no result set')
  const first: unknown = rs[0]
  return isRecord(first) ? first.result : undefined
}
