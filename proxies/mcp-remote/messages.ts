// What reaches the agent besides results, on a session where a masking rule may apply (a masked
// session, bridge.ts): list answers, progress notifications, the upstream's own identity. Each is
// treated as a result (masking.ts): only the fields MCP defines are kept, each listed item is
// masked as one JSON document by the rules known for it (the session's and its own decision's),
// and the upstream's free text that a JSON path cannot read (descriptions, titles, display names)
// is withheld or, where MCP makes the field optional, dropped. Identifiers the agent needs to act
// (a tool's or prompt's name, a URI, an argument's name) are kept: they are what policy decides on.
//
// A tool's input schema is kept as structure only, an allow-list (type names, properties, items,
// required names that are properties, additionalProperties as a boolean, enum and const values):
// everything else JSON Schema allows can carry a value (bounds and lengths equal to it, pattern
// keys, reference targets, definitions' names, formats, free text) and is dropped. It is not
// masked by path, since a path such as `$..ssn` names a schema's property, not a value, and
// replacing it would leave a schema the agent's client refuses; instead, when a rule's path reaches
// anything in it, every enum and const value is dropped, and a subschema the path reaches keeps
// its type only (its own property names and required list are the upstream's). Its output schema
// is dropped (masked values need not fit it).

import { type JsonMaskPlan, type MaskingKeys, maskJson } from '../kit/index.js'
import { annotations, maskText, withheldText } from './masking.js'

type Obj = Record<string, unknown>

function isObj(v: unknown): v is Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

/** An item masked as one document; without a known path, its `_meta` (the upstream's own) is dropped. */
export function maskItem(item: Obj, plan: JsonMaskPlan | null, keys: MaskingKeys | null): Obj {
  if (plan === null || keys === null) {
    const { _meta: _dropped, ...rest } = item
    return rest
  }
  const sink = { count: () => undefined, withheld: 0 }
  const out: unknown = JSON.parse(maskText(plan, keys, JSON.stringify(item), sink))
  return isObj(out) ? out : {}
}

const TOOL_HINTS = ['readOnlyHint', 'destructiveHint', 'idempotentHint', 'openWorldHint'] as const

/** The JSON Schema type names: the only `type` values kept (anything else is the upstream's text). */
const TYPE_NAMES = new Set(['string', 'number', 'integer', 'boolean', 'object', 'array', 'null'])

function typeOf(t: unknown): unknown {
  if (typeof t === 'string') return TYPE_NAMES.has(t) ? t : undefined
  if (!Array.isArray(t)) return undefined
  const names = t.filter((x): x is string => typeof x === 'string' && TYPE_NAMES.has(x))
  return names.length > 0 ? [...new Set(names)] : undefined
}

function primitives(v: unknown): boolean {
  return v === null || ['string', 'number', 'boolean'].includes(typeof v)
}

/**
 * A JSON Schema as structure only (see the top of this file), an allow-list: `type` (type names),
 * `properties`, `items`, `required` (names that are properties), `additionalProperties` (a
 * boolean), and with `values`, `enum` and `const` of plain values. Everything else (bounds, lengths,
 * patterns, formats, references and definitions, combinators) is dropped: each can carry a value.
 */
export function schemaShape(s: unknown, values = true, depth = 0): unknown {
  if (!isObj(s) || depth > 32) return {}
  const out: Obj = {}
  const type = typeOf(s.type)
  if (type !== undefined) out.type = type
  if (values && Array.isArray(s.enum) && s.enum.every(primitives)) out.enum = s.enum
  if (values && s.const !== undefined && primitives(s.const)) out.const = s.const
  if (isObj(s.properties)) {
    const o: Obj = {}
    for (const [name, sub] of Object.entries(s.properties))
      Object.defineProperty(o, name, { value: schemaShape(sub, values, depth + 1), enumerable: true, writable: true, configurable: true })
    out.properties = o
    if (Array.isArray(s.required)) {
      const names = s.required.filter((r): r is string => typeof r === 'string' && Object.hasOwn(o, r))
      if (names.length > 0) out.required = [...new Set(names)]
    }
  }
  if (isObj(s.items)) out.items = schemaShape(s.items, values, depth + 1)
  if (typeof s.additionalProperties === 'boolean') out.additionalProperties = s.additionalProperties
  return out
}

/** A schema a rule's path reached: its type only (names and values under it are the upstream's). */
function opaque(s: Obj): Obj {
  return s.type !== undefined ? { type: s.type } : {}
}

/**
 * `s` (a shaped schema) where the masker changed its copy `m`: a subschema the masker replaced is
 * reduced to its type, and a keyword it changed is dropped.
 */
function reached(s: Obj, m: unknown): Obj {
  if (!isObj(m)) return opaque(s)
  const out: Obj = {}
  for (const k of ['type', 'enum', 'const', 'required', 'additionalProperties']) {
    if (s[k] !== undefined && JSON.stringify(s[k]) === JSON.stringify(m[k])) out[k] = s[k]
  }
  if (isObj(s.properties)) {
    const mp = m.properties
    if (!isObj(mp)) return opaque(s)
    const o: Obj = {}
    for (const [name, sub] of Object.entries(s.properties)) {
      if (isObj(sub))
        Object.defineProperty(o, name, { value: reached(sub, mp[name]), enumerable: true, writable: true, configurable: true })
    }
    out.properties = o
  }
  if (isObj(s.items)) out.items = reached(s.items, m.items)
  return out
}

/** A listed tool as the agent may see it on a masked session. */
export function tool(t: Obj, plan: JsonMaskPlan | null, keys: MaskingKeys | null): Obj {
  const out: Obj = { name: t.name }
  if (t.description !== undefined) out.description = withheldText("the tool's description")
  if (isObj(t.annotations)) {
    const a: Obj = {}
    for (const k of TOOL_HINTS) if (typeof t.annotations[k] === 'boolean') a[k] = t.annotations[k]
    out.annotations = a
  }
  if (t._meta !== undefined) out._meta = t._meta
  const masked = maskItem(out, plan, keys)
  masked.name = t.name
  let schema = schemaShape(t.inputSchema) as Obj
  if (plan !== null && keys !== null && maskJson(plan, keys, Buffer.from(JSON.stringify(schema))).masked.length > 0) {
    schema = schemaShape(t.inputSchema, false) as Obj
    schema = reached(schema, JSON.parse(maskJson(plan, keys, Buffer.from(JSON.stringify(schema))).body.toString('utf8')))
  }
  masked.inputSchema = { ...schema, type: 'object' }
  return masked
}

function resourceFields(r: Obj, what: string): Obj {
  const out: Obj = { name: withheldText(`the ${what}'s name`) }
  if (r.description !== undefined) out.description = withheldText(`the ${what}'s description`)
  if (typeof r.mimeType === 'string') out.mimeType = r.mimeType
  const a = annotations(r.annotations)
  if (a) out.annotations = a
  if (r._meta !== undefined) out._meta = r._meta
  return out
}

/** A listed resource: its URI (as the gateway judged it) and what MCP defines, free text withheld. */
export function resource(r: Obj, uri: string, plan: JsonMaskPlan | null, keys: MaskingKeys | null): Obj {
  const out: Obj = { uri, ...resourceFields(r, 'resource') }
  if (typeof r.size === 'number') out.size = r.size
  const masked = maskItem(out, plan, keys)
  masked.uri = uri
  return masked
}

/** A listed resource template. */
export function template(r: Obj, plan: JsonMaskPlan | null, keys: MaskingKeys | null): Obj {
  const masked = maskItem({ uriTemplate: r.uriTemplate, ...resourceFields(r, 'resource template') }, plan, keys)
  masked.uriTemplate = r.uriTemplate
  return masked
}

/** A listed prompt: its name and its arguments' names, their descriptions withheld. */
export function prompt(p: Obj, plan: JsonMaskPlan | null, keys: MaskingKeys | null): Obj {
  const out: Obj = { name: p.name }
  if (p.description !== undefined) out.description = withheldText("the prompt's description")
  if (Array.isArray(p.arguments)) {
    out.arguments = p.arguments.filter(isObj).map((a) => ({
      name: a.name,
      ...(a.description !== undefined ? { description: withheldText("the argument's description") } : {}),
      ...(typeof a.required === 'boolean' ? { required: a.required } : {}),
    }))
  }
  if (p._meta !== undefined) out._meta = p._meta
  const masked = maskItem(out, plan, keys)
  masked.name = p.name
  if (Array.isArray(out.arguments)) masked.arguments = out.arguments
  return masked
}
