// What a policy may call. Policies are compiled against the built-ins that the WebAssembly
// target really runs, so a built-in the runtime lacks fails `gatehouse policy build` with its name
// and file:line, never a decision later.
//
// The list is opa's own (v1.22.3, internal/compiler/wasm/wasm.go `builtinsFunctions`: the
// built-ins compiled into the module) plus the few that @open-policy-agent/opa-wasm 1.10.0
// implements in JavaScript (src/builtins: sprintf, json.is_valid, yaml.*, regex.split). Every other
// built-in would compile into a call to the host that the SDK answers with "not implemented"
// at evaluation time: time.now_ns, http.send, io.jwt.*, net.lookup_ip_addr, rand.intn,
// uuid.*, opa.runtime, trace, crypto.*, units.*, semver.*, … Leaving them out also makes every
// evaluation a pure function of (module, data, input), which is what makes decisions cacheable.

import { runOpa } from './opa.js'

export const WASM_BUILTINS: ReadonlySet<string> = new Set([
  // unification and assignment are compiled away by the planner
  'eq',
  'assign',
  // arithmetic
  'plus',
  'minus',
  'mul',
  'div',
  'abs',
  'round',
  'ceil',
  'floor',
  'rem',
  // arrays, sets, objects
  'array.concat',
  'array.flatten',
  'array.reverse',
  'array.slice',
  'set_diff',
  'and',
  'or',
  'intersection',
  'union',
  'object.filter',
  'object.get',
  'object.keys',
  'object.remove',
  'object.union',
  'object.union_n',
  'json.remove',
  'json.filter',
  'internal.member_2',
  'internal.member_3',
  'walk',
  'graph.reachable',
  // types
  'is_number',
  'is_string',
  'is_boolean',
  'is_array',
  'is_set',
  'is_object',
  'is_null',
  'type_name',
  // bits
  'bits.or',
  'bits.and',
  'bits.negate',
  'bits.xor',
  'bits.lsh',
  'bits.rsh',
  // aggregates
  'count',
  'sum',
  'product',
  'max',
  'min',
  'sort',
  'all',
  'any',
  // encodings
  'base64.is_valid',
  'base64.decode',
  'base64.encode',
  'base64url.encode',
  'base64url.decode',
  'json.marshal',
  'json.unmarshal',
  'json.is_valid',
  'yaml.is_valid',
  'yaml.marshal',
  'yaml.unmarshal',
  // networks (pure CIDR arithmetic; no lookups)
  'net.cidr_contains',
  'net.cidr_overlap',
  'net.cidr_intersects',
  // comparison
  'equal',
  'gt',
  'gte',
  'lt',
  'lte',
  'neq',
  // strings and patterns
  'glob.match',
  'concat',
  'format_int',
  'indexof',
  'substring',
  'lower',
  'upper',
  'contains',
  'startswith',
  'endswith',
  'strings.reverse',
  'split',
  'replace',
  'strings.replace_n',
  'trim',
  'trim_left',
  'trim_prefix',
  'trim_right',
  'trim_suffix',
  'trim_space',
  'sprintf',
  'internal.template_string',
  'regex.is_valid',
  'regex.match',
  're_match',
  'regex.find_all_string_submatch_n',
  'regex.split',
  // numbers
  'numbers.range',
  'to_number',
  // print() is compiled out of WebAssembly modules (opa build --wasm-include-print is not used)
  'print',
  'internal.print',
])

interface CapabilitiesDoc {
  builtins: { name: string }[]
  [key: string]: unknown
}

function isCapabilitiesDoc(v: unknown): v is CapabilitiesDoc {
  return (
    typeof v === 'object' &&
    v !== null &&
    Array.isArray((v as { builtins?: unknown }).builtins) &&
    (v as { builtins: unknown[] }).builtins.every(
      (b) => typeof b === 'object' && b !== null && typeof (b as { name?: unknown }).name === 'string',
    )
  )
}

export interface Capabilities {
  /** The JSON to hand `opa build --capabilities`. */
  readonly json: string
  /** Every built-in opa knows, to tell "not in WebAssembly" from "no such function". */
  readonly known: ReadonlySet<string>
}

let cached: Promise<Capabilities> | null = null

/** `opa capabilities --current`, narrowed to the WebAssembly built-ins (computed once per process). */
export function wasmCapabilities(): Promise<Capabilities> {
  cached ??= (async () => {
    const r = await runOpa(['capabilities', '--current'])
    let doc: unknown
    try {
      doc = JSON.parse(r.stdout)
    } catch {
      doc = null
    }
    if (r.code !== 0 || !isCapabilitiesDoc(doc)) {
      throw new Error(`opa capabilities --current failed: ${(r.stderr || r.stdout).trim().slice(0, 500)}`)
    }
    const known = new Set(doc.builtins.map((b) => b.name))
    const narrowed = { ...doc, builtins: doc.builtins.filter((b) => WASM_BUILTINS.has(b.name)) }
    return { json: JSON.stringify(narrowed), known }
  })()
  cached.catch(() => {
    cached = null
  })
  return cached
}
