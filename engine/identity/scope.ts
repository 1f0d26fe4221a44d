// Scope narrowing for delegation (docs/identity.md, "Delegation chains that can only narrow"). A child's scope is computed from
// what it asks for and what its parent holds, and it can only narrow:
//
//   - an empty request means "whatever the parent could": the child gets a copy of the parent's scope;
//   - `connection:<name>` entries: each must be reachable by the parent; none given inherits the
//     parent's connection entries (and so its connection restriction);
//   - action names (`sql.read`) and families (`sql.*`, `*`): each must be covered by the parent;
//     none given inherits the parent's action entries;
//   - `tool:<connection>/<tool>` entries: each must be a tool the parent may call (its connection
//     reachable, and among the parent's tool entries when it has any); none given inherits the
//     parent's tool entries;
//   - `unmask:<rule>`: only those asked for (an agent without one sees the rule's columns masked),
//     each held by the parent, or for the root hop, allowed by `mayUnmask` (the masking rules say
//     the root's groups see that rule's columns clear).
//
// A request for anything the parent lacks is refused, naming the entry, never silently dropped.
// The same `scopeWithin` check runs when a delegated token is verified, hop by hop.

import { parseScope, type Scope } from '../policy/scope.js'

const CONNECTION_RE = /^connection:[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/
const UNMASK_RE = /^unmask:[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$/
/** An MCP tool name (1–128 characters of the spec's recommended set) on a connection. */
const TOOL_RE = /^tool:[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\/[A-Za-z0-9_.\-/]{1,128}$/
const ACTION_RE = /^(\*|[a-z][a-z0-9_]{0,31}(\.[a-z][a-z0-9_]{0,31})*(\.\*)?)$/
/** Enough for every connection and action of a realistic grant; keeps tokens small. */
export const MAX_SCOPE_ENTRIES = 32

/** Splits a space-separated scope string (OAuth `scope`) into entries, dropping empties and duplicates. */
export function splitScope(text: string | readonly string[]): string[] {
  const parts = typeof text === 'string' ? text.split(/\s+/) : text.flatMap((t) => t.split(/\s+/))
  return [...new Set(parts.filter((p) => p.length > 0))]
}

/** Null when every entry has a known form, else what is wrong with the first one that does not. */
export function scopeSyntaxProblem(entries: readonly string[]): string | null {
  if (entries.length > MAX_SCOPE_ENTRIES) return `a scope has at most ${MAX_SCOPE_ENTRIES} entries (got ${entries.length})`
  for (const e of entries) {
    if (e.startsWith('connection:')) {
      if (!CONNECTION_RE.test(e)) return `scope entry ${JSON.stringify(e)} is not connection:<name>`
    } else if (e.startsWith('unmask:')) {
      if (!UNMASK_RE.test(e)) return `scope entry ${JSON.stringify(e)} is not unmask:<masking rule>`
    } else if (e.startsWith('tool:')) {
      if (!TOOL_RE.test(e)) return `scope entry ${JSON.stringify(e)} is not tool:<connection>/<tool>`
    } else if (!ACTION_RE.test(e)) {
      return `scope entry ${JSON.stringify(e)} is not connection:<name>, unmask:<rule>, an action (sql.read), a family (sql.*) or tool:<connection>/<tool>`
    }
  }
  return null
}

/** What scope entries may name: the actions of the loaded plugins and the configured connections. */
export interface ScopeVocabulary {
  readonly actions: readonly string[]
  readonly connections: readonly string[]
}

/** Actions every gateway decides, whatever plugins are loaded. */
export const CORE_ACTIONS: readonly string[] = ['connect']

/**
 * Every entry that names something that does not exist, each named: a misspelt action
 * (`sql.raed`) or an unknown connection would otherwise be accepted and then deny everything.
 * Families (`sql.*`) must cover at least one known action; `unmask:` rules are checked elsewhere.
 */
export function scopeVocabularyProblems(entries: readonly string[], vocab: ScopeVocabulary): string[] {
  const problems: string[] = []
  const actions = [...new Set([...CORE_ACTIONS, ...vocab.actions])].sort()
  for (const e of entries) {
    if (e.startsWith('unmask:') || e === '*') continue
    if (e.startsWith('connection:') || e.startsWith('tool:')) {
      const name = e.startsWith('tool:') ? e.slice('tool:'.length, e.indexOf('/')) : e.slice('connection:'.length)
      if (!vocab.connections.includes(name)) {
        problems.push(
          `scope entry ${JSON.stringify(e)}: no connection named ${JSON.stringify(name)} (configured: ${vocab.connections.join(', ') || 'none'})`,
        )
      }
    } else if (e.endsWith('.*')) {
      const fam = e.slice(0, -1)
      if (!actions.some((a) => a.startsWith(fam))) {
        problems.push(`scope entry ${JSON.stringify(e)}: no action in this family (actions: ${actions.join(', ')})`)
      }
    } else if (!actions.includes(e)) {
      problems.push(`scope entry ${JSON.stringify(e)}: no such action (actions: ${actions.join(', ')})`)
    }
  }
  return problems
}

function isAction(e: string): boolean {
  return !e.startsWith('connection:') && !e.startsWith('unmask:') && !e.startsWith('tool:')
}

function isTool(e: string): boolean {
  return e.startsWith('tool:')
}

/** Whether one requested entry is covered by the parent's parsed scope. */
function entryWithin(e: string, p: Scope, mayUnmask: (rule: string) => boolean): boolean {
  if (e.startsWith('connection:')) return p.connections === null || p.connections.has(e.slice('connection:'.length))
  if (e.startsWith('unmask:')) {
    const rule = e.slice('unmask:'.length)
    return p.unmask.has(rule) || mayUnmask(rule)
  }
  if (e.startsWith('tool:')) {
    const key = e.slice('tool:'.length)
    const connection = key.slice(0, key.indexOf('/'))
    if (p.connections !== null && !p.connections.has(connection)) return false
    return p.tools === null || p.tools.has(key)
  }
  if (p.actions === null && p.families.length === 0) return true
  if (e === '*') return p.families.includes('')
  if (e.endsWith('.*')) {
    const fam = e.slice(0, -1)
    return p.families.some((g) => fam.startsWith(g))
  }
  if (p.actions?.has(e)) return true
  return p.families.some((g) => e.startsWith(g))
}

export type NarrowResult = { readonly ok: true; readonly scope: readonly string[] } | { readonly ok: false; readonly problem: string }

/**
 * The child's effective scope, or why the request asks for more than the parent holds.
 * `mayUnmask` answers for `unmask:` entries the parent does not list (the root hop only).
 */
export function narrowScope(
  parent: readonly string[],
  requested: readonly string[],
  mayUnmask: (rule: string) => boolean = () => false,
): NarrowResult {
  const syntax = scopeSyntaxProblem(requested)
  if (syntax) return { ok: false, problem: syntax }
  if (requested.length === 0) return { ok: true, scope: [...parent] }
  const p = parseScope(parent)
  for (const e of requested) {
    if (!entryWithin(e, p, mayUnmask)) {
      return {
        ok: false,
        problem: `requested scope ${e} is not within the parent's scope (${parent.length ? parent.join(' ') : 'unrestricted'})`,
      }
    }
  }
  const conns = requested.filter((e) => e.startsWith('connection:'))
  const actions = requested.filter(isAction)
  const unmask = requested.filter((e) => e.startsWith('unmask:'))
  const tools = requested.filter(isTool)
  const scope = [
    ...(conns.length > 0 ? conns : parent.filter((e) => e.startsWith('connection:'))),
    ...(actions.length > 0 ? actions : parent.filter(isAction)),
    ...(tools.length > 0 ? tools : parent.filter(isTool)),
    ...unmask,
  ]
  return { ok: true, scope }
}

/**
 * Whether `child` grants nothing that `parent` does not: every entry covered, and every dimension
 * the parent restricts (connections, actions) restricted in the child too. Null when it is, else why not.
 */
export function scopeWithinProblem(
  child: readonly string[],
  parent: readonly string[],
  mayUnmask: (rule: string) => boolean = () => false,
): string | null {
  const p = parseScope(parent)
  for (const e of child) {
    if (!entryWithin(e, p, mayUnmask)) return `scope ${e} is not within the parent's scope`
  }
  const c = parseScope(child)
  if (p.connections !== null && c.connections === null) return "the parent's connection restriction is missing"
  if ((p.actions !== null || p.families.length > 0) && c.actions === null && c.families.length === 0) {
    return "the parent's action restriction is missing"
  }
  if (p.tools !== null && c.tools === null) return "the parent's tool restriction is missing"
  return null
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false
  const s = new Set(a)
  return b.every((e) => s.has(e))
}

/**
 * The shortest request that `narrowScope(parent, request)` turns into `effective` (a scope that
 * narrowing produced from `parent`): dimensions equal to the parent's are left out, since an
 * unspecified dimension is inherited. Used to keep the prior hops of a delegated token small.
 */
export function minimalRequest(effective: readonly string[], parent: readonly string[]): string[] {
  if (sameSet(effective, parent)) return []
  const conns = effective.filter((e) => e.startsWith('connection:'))
  const actions = effective.filter(isAction)
  const unmask = effective.filter((e) => e.startsWith('unmask:'))
  const tools = effective.filter(isTool)
  const pConns = parent.filter((e) => e.startsWith('connection:'))
  const pActions = parent.filter(isAction)
  const pTools = parent.filter(isTool)
  const req = [
    ...(sameSet(conns, pConns) ? [] : conns),
    ...(sameSet(actions, pActions) ? [] : actions),
    ...(sameSet(tools, pTools) ? [] : tools),
    ...unmask,
  ]
  // An empty request would inherit the parent's unmask entries too: say the scope in full instead.
  return req.length > 0 ? req : [...effective]
}
