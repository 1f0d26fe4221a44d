// Loads proxy plugins: the built-in ones and those named in `plugins:` (module path or package
// name). Every plugin is checked against the ProxyPlugin shape, its contract version, the
// capabilities it asks for and the plugins it needs; each failure stops the start with a message
// naming the module, and duplicate names name both modules.

import { pathToFileURL } from 'node:url'
import { isAbsolute } from 'node:path'
import { GatehouseError } from '../../engine/errors.js'
import type { PluginRef } from '../../engine/config/config.js'
import { type AnyProxyPlugin, CAPABILITY_NAMES, PLUGIN_CONTRACT } from '../../proxies/types.js'

export interface LoadedPlugin {
  readonly plugin: AnyProxyPlugin
  readonly options: Readonly<Record<string, unknown>>
  readonly source: string
}

/** The API listener, and the engine's own audit namespaces (a plugin writes `<name>.<event>`). */
const RESERVED_NAMES = new Set(['api', 'session', 'approval', 'token', 'audit', 'connector', 'gateway', 'policy'])

const PLUGIN_NAME_RE = /^[a-z][a-z0-9_-]{0,31}$/

function isPlugin(v: unknown): v is AnyProxyPlugin {
  if (typeof v !== 'object' || v === null) return false
  const p = v as Record<string, unknown>
  return typeof p.name === 'string' && typeof p.start === 'function'
}

export async function loadPlugins(builtin: readonly AnyProxyPlugin[], refs: readonly PluginRef[]): Promise<LoadedPlugin[]> {
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
    if (RESERVED_NAMES.has(l.plugin.name)) {
      throw new GatehouseError('GH_ERR_PLUGIN', `plugin ${l.source}: the name "${l.plugin.name}" is reserved`)
    }
    const prev = seen.get(l.plugin.name)
    if (prev) throw new GatehouseError('GH_ERR_PLUGIN', `plugin ${l.source}: name "${l.plugin.name}" is already used by ${prev}`)
    seen.set(l.plugin.name, l.source)
    checkContract(l)
  }
  for (const l of out) {
    for (const need of l.plugin.requires ?? []) {
      if (!seen.has(need)) {
        throw new GatehouseError(
          'GH_ERR_PLUGIN',
          `plugin ${l.source}: needs plugin "${need}", which is not loaded (loaded: ${[...seen.keys()].join(', ')})`,
        )
      }
    }
  }
  return out
}

function checkContract(l: LoadedPlugin): void {
  const p = l.plugin as { contract?: unknown; capabilities?: unknown; requires?: unknown }
  if (p.contract !== PLUGIN_CONTRACT) {
    throw new GatehouseError(
      'GH_ERR_PLUGIN',
      p.contract === undefined
        ? `plugin ${l.source}: declares no contract version (this gateway speaks plugin contract ${PLUGIN_CONTRACT}: add contract: ${PLUGIN_CONTRACT})`
        : `plugin ${l.source}: written for plugin contract ${JSON.stringify(p.contract)}, this gateway speaks contract ${PLUGIN_CONTRACT}`,
    )
  }
  for (const [key, allowed] of [
    ['capabilities', CAPABILITY_NAMES],
    ['requires', null],
  ] as const) {
    const v = p[key]
    if (v === undefined) continue
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) {
      throw new GatehouseError('GH_ERR_PLUGIN', `plugin ${l.source}: ${key} must be a list of names`)
    }
    for (const name of v as string[]) {
      if (allowed && !(allowed as readonly string[]).includes(name)) {
        throw new GatehouseError(
          'GH_ERR_PLUGIN',
          `plugin ${l.source}: asks for unknown capability ${JSON.stringify(name)} (known: ${allowed.join(', ')})`,
        )
      }
    }
  }
}
