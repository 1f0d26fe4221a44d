// What reaches the agent besides results, on a session where a masking rule may apply (a masked
// session, bridge.ts): list answers, progress notifications, the upstream's own identity. Each is
// treated as a result (masking.ts): only the fields MCP defines are kept, each listed item is
// masked as one JSON document by the rules known for it (the session's and its own decision's),
// and the upstream's free text that a JSON path cannot read (descriptions, titles, display names)
// is withheld or, where MCP makes the field optional, dropped. Identifiers the agent needs to act
// (a tool's or prompt's name, a URI, an argument's name) are kept: they are what policy decides on.
//
// A tool's input schema is kept as structure only (types, properties, required, enum and const
// values, formats, bounds, local references): the free text JSON Schema allows (descriptions,
// titles, examples, defaults, patterns, comments, keywords it does not define) is dropped. It is
// not masked by path, since a path such as `$..ssn` names a schema's property, not a value, and
// replacing it would leave a schema the agent's client refuses; instead, when a rule's path reaches
// anything in it, every enum and const value is dropped too. Its output schema is dropped (masked
// values need not fit it).

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

/** JSON Schema keywords that shape values (the rest is prose or unknown). */
const SCHEMA_VALUES = ['type', 'required', 'enum', 'const'] as const
const FORMAT = /^[a-z][a-z0-9-]{0,40}$/
const LOCAL_REF = /^#\/(\$defs|definitions)\/[A-Za-z0-9_.-]{1,128}$/
const SCHEMA_NUMBERS = [
  'minimum',
  'maximum',
  'exclusiveMinimum',
  'exclusiveMaximum',
  'multipleOf',
  'minLength',
  'maxLength',
  'minItems',
  'maxItems',
  'uniqueItems',
  'minProperties',
  'maxProperties',
] as const
const SCHEMA_ONE = ['items', 'additionalProperties', 'not', 'contains', 'propertyNames', 'additionalItems'] as const
const SCHEMA_MANY = ['anyOf', 'oneOf', 'allOf', 'prefixItems'] as const
const SCHEMA_MAPS = ['properties', 'patternProperties', '$defs', 'definitions'] as const

/** A JSON Schema as structure only (see the top of this file); depth-bounded. `values`: keep enum and const. */
export function schemaShape(s: unknown, values = true, depth = 0): unknown {
  if (typeof s === 'boolean') return s
  if (!isObj(s) || depth > 32) return {}
  const out: Obj = {}
  for (const k of SCHEMA_VALUES) if (s[k] !== undefined && (values || (k !== 'enum' && k !== 'const'))) out[k] = s[k]
  if (typeof s.format === 'string' && FORMAT.test(s.format)) out.format = s.format
  if (typeof s.$ref === 'string' && LOCAL_REF.test(s.$ref)) out.$ref = s.$ref
  for (const k of SCHEMA_NUMBERS) if (typeof s[k] === 'number' || typeof s[k] === 'boolean') out[k] = s[k]
  for (const k of SCHEMA_ONE) if (s[k] !== undefined) out[k] = schemaShape(s[k], values, depth + 1)
  for (const k of SCHEMA_MANY) if (Array.isArray(s[k])) out[k] = (s[k] as unknown[]).map((x) => schemaShape(x, values, depth + 1))
  for (const k of SCHEMA_MAPS) {
    const m = s[k]
    if (!isObj(m)) continue
    const o: Obj = {}
    for (const [name, sub] of Object.entries(m)) o[name] = schemaShape(sub, values, depth + 1)
    out[k] = o
  }
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
