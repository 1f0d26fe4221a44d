// Small readers for libpg-query's JSON tree (every node is `{ "TypeName": { …fields } }`), and the
// value type the lineage analysis computes for an expression. Kept apart from lineage.ts so that
// file reads as the analysis itself.

export type Obj = Record<string, unknown>

export function obj(v: unknown): Obj | null {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Obj) : null
}
export function arr(v: unknown): unknown[] {
  return Array.isArray(v) ? v : []
}
export function str(v: unknown): string | null {
  return typeof v === 'string' ? v : null
}
/** The single key of a node wrapper like {"SelectStmt": {...}}. */
export function nodeType(n: unknown): [string, Obj] | null {
  const o = obj(n)
  if (!o) return null
  const keys = Object.keys(o)
  if (keys.length !== 1) return null
  const k = keys[0] as string
  const inner = obj(o[k])
  return inner ? [k, inner] : null
}
/** `[{String: {sval}}…]` as strings (other nodes, e.g. A_Star, become null). */
export function names(v: unknown): (string | null)[] {
  return arr(v).map((x) => str(obj(obj(x)?.String)?.sval))
}
export function stringList(v: unknown): string[] {
  return names(v).filter((x): x is string => x !== null)
}

/** Why lineage cannot be established; thrown anywhere, caught per statement (fail closed). */
export class Unresolved extends Error {
  override readonly name = 'Unresolved'
}
export function fail(reason: string): never {
  throw new Unresolved(reason)
}

/** What a value derives from. */
export interface Lin {
  /** Base columns (and view columns) as 'schema.relation.column'. */
  readonly sources: ReadonlySet<string>
  /** The base column projected as is; null once anything computes on it. */
  readonly direct: string | null
  /** Every column the value is projected from as is: the view column(s) and the base column. */
  readonly via: readonly string[]
  /** Why the value may depend on data the analysis cannot see. */
  readonly opaque: string | null
}

export const CLEAR: Lin = { sources: new Set(), direct: null, via: [], opaque: null }

export function baseLin(source: string): Lin {
  return { sources: new Set([source]), direct: source, via: [source], opaque: null }
}

/** A mutable union of lineages: what a computed value derives from. */
export class Acc {
  readonly sources = new Set<string>()
  opaque: string | null = null

  add(l: Lin): void {
    for (const s of l.sources) this.sources.add(s)
    this.opaque ??= l.opaque
  }
  lin(): Lin {
    return this.sources.size === 0 && this.opaque === null ? CLEAR : { sources: this.sources, direct: null, via: [], opaque: this.opaque }
  }
}

/** The union of two lineages; `direct` survives only where both project the same column as is. */
export function unionLin(a: Lin, b: Lin): Lin {
  const sources = new Set(a.sources)
  for (const s of b.sources) sources.add(s)
  const same = a.direct !== null && a.direct === b.direct
  return { sources, direct: same ? a.direct : null, via: same ? a.via : [], opaque: a.opaque ?? b.opaque }
}

/** Any computation over a value: the same sources, no longer projected as is. */
export function derived(l: Lin): Lin {
  return l.direct === null ? l : { sources: l.sources, direct: null, via: [], opaque: l.opaque }
}
