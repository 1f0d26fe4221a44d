// Masking Kubernetes API responses. A policy's `mask` obligation for `kube.request` names a
// resource and a JSON path inside its objects, as its `column`: `secrets:data`,
// `secrets:stringData`, `configmaps:data.password`, `*:metadata.annotations` (`*` is any resource,
// or any key at one level of the path; `['a.b/c']` is a key with dots, as annotation names have). The values found there (every string under an object or
// list) are replaced. The path is applied to every object of the answer: the object itself, each
// of a list's `items`, a watch event's `object`, and a Table's `rows[].object`, so `get`, `list`,
// `watch` and `kubectl get -o yaml` (which kubectl renders from JSON) are all covered.

import type { Decision } from '../types.js'

type MaskObligation = Extract<Decision, { effect: 'allow' }>['mask'][number]

const MASKED = '[masked]'
/** A `data` value of a Secret is base64: its masked form stays base64 so typed clients still decode it. */
const MASKED_BASE64 = Buffer.from(MASKED).toString('base64')

export interface KubeMask {
  /** Paths (split on `.`) to mask in every object of the answer. */
  readonly paths: readonly (readonly string[])[]
  /** The rules, for the audit. */
  readonly rules: readonly string[]
}

/**
 * `a.b.*` or `a['key.with.dots']` (a quoted key, for annotation names) as segments; null when
 * malformed (the obligation is then not ours to read).
 */
export function splitPath(text: string): string[] | null {
  const out: string[] = []
  let i = 0
  while (i < text.length) {
    if (text.startsWith("['", i)) {
      const end = text.indexOf("']", i + 2)
      if (end < 0) return null
      out.push(text.slice(i + 2, end))
      i = end + 2
      if (i < text.length && text[i] !== '.' && text[i] !== '[') return null
      if (text[i] === '.') i++
      continue
    }
    let j = i
    while (j < text.length && text[j] !== '.' && text[j] !== '[') j++
    if (j === i) return null
    out.push(text.slice(i, j))
    i = j
    if (text[i] === '.') {
      i++
      if (i === text.length) return null
    }
  }
  return out.length > 0 ? out : null
}

/** The obligations that concern `resource`, as paths; null when nothing is to be masked. */
export function kubeMaskFor(resource: string, obligations: readonly MaskObligation[]): KubeMask | null {
  const paths: string[][] = []
  const rules: string[] = []
  for (const o of obligations) {
    const i = o.column.indexOf(':')
    if (i <= 0) continue
    const r = o.column.slice(0, i)
    if (r !== '*' && r !== resource) continue
    const path = splitPath(o.column.slice(i + 1))
    if (path === null) continue
    paths.push(path)
    rules.push(o.rule)
  }
  return paths.length === 0 ? null : { paths, rules: [...new Set(rules)] }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/** Replaces every string (and number, boolean) under `v`; `base64` keeps Secret data decodable. */
function maskAll(v: unknown, base64: boolean): unknown {
  if (Array.isArray(v)) return v.map((x) => maskAll(x, base64))
  if (isObject(v)) {
    const out: Record<string, unknown> = {}
    for (const [k, x] of Object.entries(v)) out[k] = maskAll(x, base64)
    return out
  }
  if (v === null) return null
  return base64 ? MASKED_BASE64 : MASKED
}

function maskPath(obj: unknown, path: readonly string[], base64: boolean): void {
  if (!isObject(obj)) return
  const [head, ...rest] = path
  if (head === undefined) return
  const keys = head === '*' ? Object.keys(obj) : Object.hasOwn(obj, head) ? [head] : []
  for (const k of keys) {
    if (rest.length === 0) obj[k] = maskAll(obj[k], base64)
    else maskPath(obj[k], rest, base64)
  }
}

/** Masks one Kubernetes object in place (its `kind` may be absent, as in a list's items). */
function maskObject(obj: unknown, mask: KubeMask, resource: string): void {
  for (const p of mask.paths) maskPath(obj, p, resource === 'secrets' && p[0] === 'data')
}

/** Masks a decoded answer (object, list, watch event or Table) in place. */
export function maskDocument(doc: unknown, mask: KubeMask, resource: string): void {
  if (!isObject(doc)) return
  // A watch event: {type, object}.
  if (typeof doc.type === 'string' && isObject(doc.object)) {
    maskDocument(doc.object, mask, resource)
    return
  }
  if (Array.isArray(doc.items)) for (const item of doc.items) maskObject(item, mask, resource)
  if (doc.kind === 'Table' && Array.isArray(doc.rows)) {
    for (const row of doc.rows) if (isObject(row) && isObject(row.object)) maskDocument(row.object, mask, resource)
  }
  maskObject(doc, mask, resource)
}
