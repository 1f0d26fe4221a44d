// From a decision's mask obligations to what happens to one output column. Where several
// obligations apply to the same column (two hops of a chain, or two rules whose patterns both match
// it), the strictest wins: "for a chain the strictest hop wins".
//
// Strictness, most first: null > redact > hash > partial. null hides even whether there was a
// value; redact shows only that; hash shows no character of the value, only which values are
// equal (needed for joins and GROUP BY); partial shows real characters of it. Between two partials
// the one keeping fewer characters wins.

import type { MaskObligation } from '../types.js'
import { columnMatches } from './patterns.js'
import type { ColumnAction } from './values.js'

const RANK: Readonly<Record<MaskObligation['strategy'], number>> = { null: 5, redact: 4, hash_session: 3, hash: 2, partial: 1 }

/** Whether `a` reveals less than `b` (ties: neither). */
export function stricter(a: MaskObligation, b: MaskObligation): boolean {
  const ra = RANK[a.strategy]
  const rb = RANK[b.strategy]
  if (ra !== rb) return ra > rb
  return a.strategy === 'partial' && (a.keep ?? 4) < (b.keep ?? 4)
}

/**
 * One obligation per column pattern (and per detector), the strictest of those given; order of
 * first appearance is kept. Obligations for different patterns that happen to match the same
 * column are resolved per column by `columnAction`.
 */
export function strictestPerColumn(ms: readonly MaskObligation[]): MaskObligation[] {
  const byKey = new Map<string, number>()
  const out: MaskObligation[] = []
  for (const m of ms) {
    const key = m.detector !== undefined ? `\0detector:${m.detector}` : m.json_path !== undefined ? `\0json:${m.json_path}` : m.column
    const at = byKey.get(key)
    if (at === undefined) {
      byKey.set(key, out.length)
      out.push(m)
    } else if (stricter(m, out[at] as MaskObligation)) out[at] = m
  }
  return out
}

/** The strictest obligation whose column pattern matches `qualified` (schema.table.column), or null. */
export function strictestFor(ms: readonly MaskObligation[], qualified: string): MaskObligation | null {
  let best: MaskObligation | null = null
  for (const m of ms) {
    if (m.detector !== undefined || m.json_path !== undefined || !columnMatches(m.column, qualified)) continue
    if (best === null || stricter(m, best)) best = m
  }
  return best
}

/** The detectors the obligations switch on. */
export function detectorsOf(ms: readonly MaskObligation[]): string[] {
  const out: string[] = []
  for (const m of ms) if (m.detector !== undefined && !out.includes(m.detector)) out.push(m.detector)
  return out
}

/**
 * What to do with an output column, given the classified source columns it derives from (lineage;
 * empty for a column that derives from none, such as a literal) and whether it is the source
 * column projected as is (`direct`). A column derived from several classified columns takes the
 * strictest of their masks; a column with no classified source gets the detectors, if any.
 */
export function columnAction(ms: readonly MaskObligation[], sources: readonly string[], direct: boolean): ColumnAction {
  let best: MaskObligation | null = null
  for (const s of sources) {
    const m = strictestFor(ms, s)
    if (m !== null && (best === null || stricter(m, best))) best = m
  }
  if (best !== null) {
    const derived = !direct || sources.length !== 1
    return best.keep === undefined
      ? { action: 'mask', rule: best.rule, strategy: best.strategy, derived }
      : { action: 'mask', rule: best.rule, strategy: best.strategy, keep: best.keep, derived }
  }
  const detectors = detectorsOf(ms)
  return detectors.length > 0 ? { action: 'detect', detectors } : { action: 'keep' }
}
