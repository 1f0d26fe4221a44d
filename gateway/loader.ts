// Loads proxy plugins: the built-in ones and those named in `plugins:` (module path or package
// name). Every plugin is checked against the ProxyPlugin shape, and duplicate names fail at start
// with a message naming both modules.

import { pathToFileURL } from 'node:url'
import { isAbsolute } from 'node:path'
import { GatehouseError } from '../engine/errors.js'
import type { PluginRef } from '../engine/config.js'
import type { ProxyPlugin } from '../proxies/types.js'

export interface LoadedPlugin {
  readonly plugin: ProxyPlugin<object>
  readonly options: Readonly<Record<string, unknown>>
  readonly source: string
}

const PLUGIN_NAME_RE = /^[a-z][a-z0-9_-]{0,31}$/

function isPlugin(v: unknown): v is ProxyPlugin<object> {
  if (typeof v !== 'object' || v === null) return false
  const p = v as Record<string, unknown>
  return typeof p.name === 'string' && typeof p.start === 'function'
}

export async function loadPlugins(builtin: readonly ProxyPlugin<object>[], refs: readonly PluginRef[]): Promise<LoadedPlugin[]> {
  const out: LoadedPlugin[] = builtin.map((plugin) => ({ plugin, options: {}, source: `built-in ${plugin.name}` }))
  for (const ref of refs) {
    let mod: Record<string, unknown>
    try {
      const spec = isAbsolute(ref.module) ? pathToFileURL(ref.module).href : ref.module
      mod = (await import(spec)) as Record<string, unknown>
    } catch (err) {
      throw new GatehouseError('GH_ERR_PLUGIN', `plugin ${ref.module}: cannot be loaded: ${(err as Error).message}`, { cause: err })
    }
    const candidate = mod.default ?? mod.plugin
    if (!isPlugin(candidate)) {
      throw new GatehouseError(
        'GH_ERR_PLUGIN',
        `plugin ${ref.module}: its default export (or export "plugin") must be an object with a name and a start(ctx, options) function`,
      )
    }
    out.push({ plugin: candidate, options: ref.options, source: ref.module })
  }
  const seen = new Map<string, string>()
  for (const l of out) {
    if (!PLUGIN_NAME_RE.test(l.plugin.name)) {
      throw new GatehouseError(
        'GH_ERR_PLUGIN',
        `plugin ${l.source}: name ${JSON.stringify(l.plugin.name)} must be lower-case letters, digits, _ or -`,
      )
    }
    if (l.plugin.name === 'api') throw new GatehouseError('GH_ERR_PLUGIN', `plugin ${l.source}: the name "api" is reserved`)
    const prev = seen.get(l.plugin.name)
    if (prev) throw new GatehouseError('GH_ERR_PLUGIN', `plugin ${l.source}: name "${l.plugin.name}" is already used by ${prev}`)
    seen.set(l.plugin.name, l.source)
  }
  return out
}
