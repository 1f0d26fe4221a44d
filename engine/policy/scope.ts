// Token scope, enforced by the engine before any Rego runs (docs/policies.md, "Scope"). A hop's scope
// lists `connection:<name>` entries (none: any connection its parent could reach), action names
// (`sql.read`) or families (`sql.*`, `*`) (none: any action), and `unmask:<masking rule>` entries.
// `connect` and `mcp.call` are front doors, not scoped actions: the connection part of the scope
// still applies to them. Any `sql.` entry implies `sql.session`, so a reader can BEGIN, SET and
// use cursors. `tool:<connection>/<tool>` entries (none: any tool) name the MCP tools a hop may
// call: a front door still, but only those doors. An entry of no known form is an action name that
// matches nothing: it narrows, never widens.

import type { Principal } from '../types.js'

export const FRONT_DOORS: ReadonlySet<string> = new Set(['connect', 'mcp.call'])

export interface Scope {
  /** null: unrestricted. */
  readonly connections: ReadonlySet<string> | null
  /** Exact action names; null (with no families): unrestricted. */
  readonly actions: ReadonlySet<string> | null
  /** Family prefixes with their dot (`sql.`); `''` for `*`. */
  readonly families: readonly string[]
  readonly unmask: ReadonlySet<string>
  /** `<connection>/<tool>` the hop may call as `mcp.call`; null: any tool. */
  readonly tools: ReadonlySet<string> | null
}

export function parseScope(entries: readonly string[]): Scope {
  let connections: Set<string> | null = null
  let actions: Set<string> | null = null
  const families: string[] = []
  const unmask = new Set<string>()
  let tools: Set<string> | null = null
  for (const e of entries) {
    if (e.startsWith('connection:')) {
      connections ??= new Set()
      connections.add(e.slice('connection:'.length))
    } else if (e.startsWith('unmask:')) unmask.add(e.slice('unmask:'.length))
    else if (e.startsWith('tool:')) {
      tools ??= new Set()
      tools.add(e.slice('tool:'.length))
    } else {
      actions ??= new Set()
      if (e === '*') families.push('')
      else if (e.endsWith('.*')) families.push(e.slice(0, -1))
      else actions.add(e)
      if (e.startsWith('sql.')) actions.add('sql.session')
    }
  }
  return { connections, actions, families, unmask, tools }
}

const cache = new WeakMap<Principal, Scope>()

/** The parsed scope of a principal (parsed once per principal object, i.e. once per session). */
export function scopeOf(p: Principal): Scope {
  let s = cache.get(p)
  if (!s) {
    s = parseScope(p.scope)
    cache.set(p, s)
  }
  return s
}

export function connectionInScope(s: Scope, connection: string): boolean {
  return s.connections === null || s.connections.has(connection)
}

export function actionInScope(s: Scope, action: string): boolean {
  if (s.actions === null || FRONT_DOORS.has(action) || s.actions.has(action)) return true
  for (const f of s.families) if (action.startsWith(f)) return true
  return false
}

/**
 * Whether an `mcp.call` of `command.tool` on `connection` is among the hop's `tool:` entries (any
 * tool when it lists none). Other actions are not about tools. A call that names no tool is out.
 */
export function toolInScope(s: Scope, connection: string, action: string, command: Readonly<Record<string, unknown>>): boolean {
  if (s.tools === null || action !== 'mcp.call') return true
  const tool = command.tool
  return typeof tool === 'string' && s.tools.has(`${connection}/${tool}`)
}

export function inScope(s: Scope, connection: string, action: string): boolean {
  return connectionInScope(s, connection) && actionInScope(s, action)
}
