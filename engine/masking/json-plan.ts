// The JSON masker's paths compiled to a lazily built automaton (a DFA over member names and array
// indices): each state is the set of (path, step) positions a value's path has reached, built the
// first time a name or index leads there; a final state says which target masks the value there.

import type { MaskObligation } from '../types.js'
import { type JsonPath, parseJsonPath } from './jsonpath.js'
import type { JsonMaskTarget } from './json-mask-types.js'
import { stricter } from './plan.js'

export interface Compiled {
  readonly target: JsonMaskTarget
  readonly path: JsonPath
  /** Names of each step as the latin1 reading of their UTF-8 bytes (the scanner's key form). */
  readonly names: readonly (readonly string[])[]
}

/** What a final automaton state does to the value there. */
export interface FinalAction {
  readonly targets: readonly number[]
  /** The winning (strictest) target. */
  readonly target: number
}

/** A state of the lazily built DFA: the set of (path, step) positions a value's path has reached. */
export class DState {
  readonly dead: boolean
  /** Member names some position here would advance on (key form). */
  readonly relevantNames: ReadonlySet<string>
  /** The same names as bytes, compared with a member name without allocating. */
  readonly nameBytes: readonly Buffer[]
  readonly nameKeys: readonly string[]
  readonly relevantIndices: ReadonlySet<number>
  readonly byName = new Map<string, DState>()
  readonly byIndex = new Map<number, DState>()
  otherName: DState | null = null
  otherIndex: DState | null = null

  constructor(
    readonly positions: readonly number[],
    readonly final: FinalAction | null,
    plan: JsonMaskPlan,
  ) {
    this.dead = positions.length === 0
    const names = new Set<string>()
    const indices = new Set<number>()
    for (const pos of positions) {
      const c = plan.compiled[pos >> 8] as Compiled
      const s = pos & 0xff
      const step = c.path.steps[s]
      if (!step) continue
      for (const n of c.names[s] as readonly string[]) names.add(n)
      for (const x of step.indices) indices.add(x)
    }
    this.relevantNames = names
    this.nameKeys = [...names]
    this.nameBytes = this.nameKeys.map((n) => Buffer.from(n, 'latin1'))
    this.relevantIndices = indices
  }

  /** Whether the member name matters here (else every name goes to `otherName`). */
  get needsKey(): boolean {
    return this.relevantNames.size > 0
  }
}

/**
 * The rules' paths compiled once (per decision's set of obligations); many maskers may share it.
 * Throws JsonPathError for a path it cannot parse.
 */
export class JsonMaskPlan {
  readonly compiled: readonly Compiled[]
  readonly root: DState
  readonly dead: DState
  /** Longest member name in any path, in UTF-8 bytes. */
  readonly maxNameBytes: number
  private readonly interned = new Map<string, DState>()

  constructor(targets: readonly JsonMaskTarget[]) {
    if (targets.length > 0xffffff) throw new Error('too many JSON paths')
    this.compiled = targets.map((t) => {
      const path = parseJsonPath(t.path)
      return { target: t, path, names: path.steps.map((s) => s.names.map((n) => Buffer.from(n, 'utf8').toString('latin1'))) }
    })
    let max = 0
    for (const c of this.compiled) for (const ns of c.names) for (const n of ns) max = Math.max(max, n.length)
    this.maxNameBytes = max
    this.dead = this.intern([])
    this.root = this.intern(this.compiled.map((_, i) => i << 8))
  }

  /** The targets whose paths are compiled, in order. */
  get targets(): readonly JsonMaskTarget[] {
    return this.compiled.map((c) => c.target)
  }

  private intern(positions: number[]): DState {
    positions.sort((a, b) => a - b)
    const key = positions.join(',')
    let d = this.interned.get(key)
    if (d) return d
    const finals: number[] = []
    for (const pos of positions) {
      const c = this.compiled[pos >> 8] as Compiled
      if ((pos & 0xff) === c.path.steps.length) finals.push(pos >> 8)
    }
    let final: FinalAction | null = null
    if (finals.length > 0) {
      let best = finals[0] as number
      for (const f of finals) if (stricter(this.obligation(f), this.obligation(best))) best = f
      final = { targets: finals, target: best }
    }
    d = new DState(positions, final, this)
    this.interned.set(key, d)
    return d
  }

  private obligation(i: number): MaskObligation {
    const t = (this.compiled[i] as Compiled).target
    return { rule: t.rule, column: '', strategy: t.strategy, ...(t.keep === undefined ? {} : { keep: t.keep }) }
  }

  private step(from: DState, name: string | null, index: number | null): DState {
    const out = new Set<number>()
    for (const pos of from.positions) {
      const ci = pos >> 8
      const s = pos & 0xff
      const c = this.compiled[ci] as Compiled
      const step = c.path.steps[s]
      if (!step) continue // a final position: the value is masked whole, nothing below it is reached
      if (step.descendant) out.add(pos)
      const hit = step.any || (name !== null ? (c.names[s] as readonly string[]).includes(name) : step.indices.includes(index as number))
      if (hit) out.add((ci << 8) | (s + 1))
    }
    return this.intern([...out])
  }

  /** The state of a member `key` (key form: latin1 of its UTF-8) of an object in state `from`. */
  member(from: DState, key: string | null): DState {
    if (from.dead) return from
    if (key === null || !from.relevantNames.has(key)) {
      from.otherName ??= this.step(from, '\u0000\uffff-no-such-name', null)
      return from.otherName
    }
    let d = from.byName.get(key)
    if (!d) {
      d = this.step(from, key, null)
      from.byName.set(key, d)
    }
    return d
  }

  /** The state of element `index` of an array in state `from`. */
  element(from: DState, index: number): DState {
    if (from.dead) return from
    if (!from.relevantIndices.has(index)) {
      from.otherIndex ??= this.step(from, null, -1)
      return from.otherIndex
    }
    let d = from.byIndex.get(index)
    if (!d) {
      d = this.step(from, null, index)
      from.byIndex.set(index, d)
    }
    return d
  }
}

const PLANS = new Map<string, JsonMaskPlan>()
/** Plans remembered by their obligations; beyond this the map starts over (rules that never repeat). */
const PLANS_MAX = 256

/**
 * The plan for the JSON-path obligations of a decision (those with `json_path`), or null when there
 * are none. Plans are remembered by what they are made of, so the decisions of one rule set share
 * one plan (and its lazily built automaton) across requests, sessions and plugins.
 */
export function jsonMaskPlan(mask: readonly MaskObligation[]): JsonMaskPlan | null {
  let key = ''
  for (const m of mask) if (m.json_path !== undefined) key += `${m.rule}\u0000${m.json_path}\u0000${m.strategy}\u0000${m.keep ?? ''}\u0001`
  if (key === '') return null
  let p = PLANS.get(key)
  if (p === undefined) {
    const targets: JsonMaskTarget[] = []
    for (const m of mask) {
      if (m.json_path === undefined) continue
      targets.push({ path: m.json_path, rule: m.rule, strategy: m.strategy, ...(m.keep === undefined ? {} : { keep: m.keep }) })
    }
    p = new JsonMaskPlan(targets)
    if (PLANS.size >= PLANS_MAX) PLANS.clear()
    PLANS.set(key, p)
  }
  return p
}
