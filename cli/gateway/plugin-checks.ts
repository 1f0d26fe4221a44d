// What only the loaded plugins can check in a configuration: listener names, protocols, each
// connection's own keys and secret references, and the scope vocabulary (the plugins' actions and
// the configured connections) that token scopes and workload rules may name.

import { join } from 'node:path'
import { type Config, configProblem } from '../../engine/config/config.js'
import { issueLines } from '../../engine/config/zod.js'
import { type ScopeVocabulary, scopeSyntaxProblem, scopeVocabularyProblems } from '../../engine/identity/scope.js'
import { isRecord } from '../../engine/record.js'
import { CONNECTOR_SECRET_PREFIX, parseConnectorSecretRef, parseSecretRef } from '../../engine/secrets.js'
import type { LoadedPlugin } from './loader.js'

/** What scope entries may name here: the loaded plugins' actions and the configured connections. */
export function scopeVocabularyFor(config: Config, plugins: readonly LoadedPlugin[]): ScopeVocabulary {
  return { actions: plugins.flatMap((l) => l.plugin.actions ?? []), connections: config.connections.map((c) => c.name) }
}

/** Checks a requested scope's syntax, then that each entry names a known action or connection. */
export function scopeCheckerFor(config: Config, plugins: readonly LoadedPlugin[]): (entries: readonly string[]) => string[] {
  const vocab = scopeVocabularyFor(config, plugins)
  return (entries) => {
    const syntax = scopeSyntaxProblem(entries)
    return syntax ? [syntax] : scopeVocabularyProblems(entries, vocab)
  }
}

/** What only the loaded plugins can check: listener names, protocols, each connection's own keys. Throws GH_ERR_CONFIG. */
export function checkConfigAgainstPlugins(config: Config, plugins: readonly LoadedPlugin[]): void {
  const problems: string[] = []
  const vocab = scopeVocabularyFor(config, plugins)
  config.identity.workloadIssuers.forEach((w, i) => {
    w.rules.forEach((r, j) => {
      for (const p of scopeVocabularyProblems(r.scope, vocab)) problems.push(`identity.workload_issuers[${i}].rules[${j}].scope: ${p}`)
    })
  })
  const names = plugins.map((l) => l.plugin.name)
  for (const key of Object.keys(config.listen)) {
    if (key !== 'api' && key !== 'connectors' && !names.includes(key))
      problems.push(`listen.${key}: no plugin named ${JSON.stringify(key)} (loaded: ${names.join(', ')})`)
  }
  config.connections.forEach((c, i) => {
    const l = plugins.find((p) => p.plugin.name === c.protocol)
    if (!l) {
      problems.push(`connections[${i}].protocol: no plugin serves ${JSON.stringify(c.protocol)} (loaded: ${names.join(', ')})`)
      return
    }
    const base = config.file ? join(config.file, '..') : process.cwd()
    for (const key of l.plugin.secretKeys ?? []) {
      const v = c.settings[key]
      if (isRecord(v)) {
        for (const [name, entry] of Object.entries(v)) {
          if (parseSecretRef(entry, base) === null) {
            problems.push(`connections[${i}].${key}.${name}: must be a secret reference (env:NAME or file:PATH), never the secret itself`)
          }
        }
      } else if (typeof v === 'string' && v.startsWith(CONNECTOR_SECRET_PREFIX)) {
        // Left with the connector: only where the plugin can authenticate by proofs, through a connector.
        if (parseConnectorSecretRef(v) === null) {
          problems.push(`connections[${i}].${key}: must be connector:env:NAME or connector:file:/absolute/path`)
        } else if (!(l.plugin.provableSecretKeys ?? []).includes(key)) {
          problems.push(`connections[${i}].${key}: a ${c.protocol} connection cannot leave its ${key} with a connector`)
        } else if (c.via.length === 0) {
          problems.push(`connections[${i}].${key}: a secret held by a connector needs via: (the connector that holds it)`)
        }
      } else if (v !== undefined && parseSecretRef(v, base) === null) {
        problems.push(`connections[${i}].${key}: must be a secret reference (env:NAME or file:PATH), never the secret itself`)
      }
    }
    const schema = l.plugin.connectionSchema
    if (schema) {
      const r = schema.safeParse(c.settings)
      if (!r.success) for (const x of issueLines(r.error.issues, ['connections', i])) problems.push(x.line)
    }
    for (const p of l.plugin.validateConnection?.(c.settings) ?? []) problems.push(`connections[${i}].${p}`)
  })
  if (problems.length > 0) throw configProblem(config, problems)
}
