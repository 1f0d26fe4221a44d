// Loads and validates gatehouse.yaml. Everything arrives as `unknown` and leaves as a typed,
// normalized Config; every problem is reported with the file, the key path and what is wrong,
// all at once, so an operator fixes a broken file in one pass.

import { readFileSync } from 'node:fs'
import { dirname, isAbsolute, resolve } from 'node:path'
import yaml from 'js-yaml'
import { GatehouseError } from './errors.js'
import { type AuditConfig, parseAuditConfig } from './audit/config.js'
import { type IdentityConfig, parseIdentityConfig } from './identity/config.js'
import { type ApprovalsConfig, parseApprovalsConfig } from './approvals/config.js'

export type TlsMode = 'disable' | 'require' | 'verify-full'
export type FsyncMode = 'batched' | 'always'

export interface ConnectionConfig {
  readonly name: string
  readonly protocol: string
  readonly host: string
  readonly port: number
  readonly labels: Readonly<Record<string, string>>
  /** Protocol-specific keys (database, user, password, tls, ca, …), checked by the plugin. */
  readonly settings: Readonly<Record<string, unknown>>
}

export interface PluginRef {
  /** Module path (relative to the config file) or package name. */
  readonly module: string
  readonly options: Readonly<Record<string, unknown>>
}

export interface ListenAddress {
  readonly host: string
  readonly port: number
}

export interface Config {
  /** Absolute path of the file this came from, or null for `serve --dev` without a file. */
  readonly file: string | null
  readonly dataDir: string
  readonly listen: Readonly<Record<string, ListenAddress>>
  readonly tls: { readonly cert: string | null; readonly key: string | null; readonly allowPlaintext: boolean }
  readonly audit: AuditConfig
  readonly limits: { readonly maxMessageBytes: number }
  readonly tokens: { readonly defaultTtlSeconds: number; readonly maxTtlSeconds: number; readonly issuer: string }
  readonly connections: readonly ConnectionConfig[]
  readonly plugins: readonly PluginRef[]
  /** Policy directory or bundle.tar.gz (absolute); null: the default bundle shipped in policies/. */
  readonly policies: string | null
  /** OIDC providers, trusted workload issuers, delegation limits, service-account keys. */
  readonly identity: IdentityConfig
  /** Held commands: wait timeout, request lifetime, webhook (engine/approvals/config.ts). */
  readonly approvals: ApprovalsConfig
  /** /metrics on the API listener: open to anyone who reaches it, or for admin tokens only. */
  readonly metrics: { readonly auth: MetricsAuth }
  readonly logLevel: string
}

export type MetricsAuth = 'open' | 'admin'

/** PostgreSQL's own cap on a client message is 1 GiB; a gateway holding one per session cannot
 * afford that, and no ordinary statement, bind or COPY chunk comes near 16 MiB. */
export const DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024

/** Listeners that run unless the configuration says `off` for them. */
export const DEFAULT_LISTEN: Readonly<Record<string, string>> = { api: '127.0.0.1:8080', postgres: '127.0.0.1:15432' }

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/
const TOP_KEYS = [
  'data_dir',
  'listen',
  'tls',
  'audit',
  'limits',
  'tokens',
  'connections',
  'plugins',
  'policies',
  'identity',
  'log_level',
  'approvals',
  'metrics',
]
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']

export function parseDuration(text: string): number | null {
  const m = /^(\d+)(s|m|h|d)$/.exec(text.trim())
  if (!m) return null
  const n = Number(m[1])
  const unit = m[2] === 's' ? 1 : m[2] === 'm' ? 60 : m[2] === 'h' ? 3600 : 86400
  return n * unit
}

export function parseAddress(text: string): ListenAddress | null {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(text.trim())
  if (!m || m[1] === undefined) return null
  const port = Number(m[2])
  if (port > 65535) return null
  const host = m[1].startsWith('[') ? m[1].slice(1, -1) : m[1]
  return { host, port }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/** Collects problems as "path: what is wrong" so all of them are reported at once. */
class Problems {
  readonly list: string[] = []
  add(path: string, what: string): void {
    this.list.push(`${path}: ${what}`)
  }
  unknownKeys(obj: Record<string, unknown>, path: string, allowed: readonly string[]): void {
    for (const key of Object.keys(obj)) {
      if (!allowed.includes(key)) {
        this.add(path ? `${path}.${key}` : key, `unknown key (allowed: ${allowed.join(', ')})`)
      }
    }
  }
}

function str(p: Problems, obj: Record<string, unknown>, key: string, path: string): string | undefined {
  const v = obj[key]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'string' || v.length === 0) {
    p.add(`${path}${key}`, `must be a non-empty string (got ${JSON.stringify(v)})`)
    return undefined
  }
  return v
}

function duration(p: Problems, obj: Record<string, unknown>, key: string, path: string, dflt: number): number {
  const v = str(p, obj, key, path)
  if (v === undefined) return dflt
  const s = parseDuration(v)
  if (s === null || s === 0) {
    p.add(`${path}${key}`, `must be a duration like 30s, 15m, 1h or 7d (got ${JSON.stringify(v)})`)
    return dflt
  }
  return s
}

export interface LoadOptions {
  /** Protocols that loaded plugins serve, to check `connections[].protocol` and `listen` keys. */
  readonly protocols?: readonly string[]
}

export function loadConfigFile(file: string): Config {
  const abs = resolve(file)
  let text: string
  try {
    text = readFileSync(abs, 'utf8')
  } catch (err) {
    throw new GatehouseError('GH_ERR_CONFIG', `${abs}: cannot read the configuration file (${(err as Error).message})`, {
      cause: err,
    })
  }
  let raw: unknown
  try {
    raw = yaml.load(text, { filename: abs })
  } catch (err) {
    throw new GatehouseError('GH_ERR_CONFIG', `${abs}: not valid YAML: ${(err as Error).message}`, { cause: err })
  }
  return parseConfig(raw ?? {}, abs)
}

/** Validates a parsed document. `file` is used in messages and to resolve relative paths. */
export function parseConfig(raw: unknown, file: string | null, baseDir = process.cwd()): Config {
  const where = file ?? '(built-in configuration)'
  const base = file ? dirname(file) : baseDir
  const p = new Problems()
  if (!isRecord(raw)) {
    throw new GatehouseError('GH_ERR_CONFIG', `${where}: the top level must be a mapping of keys`)
  }
  p.unknownKeys(raw, '', TOP_KEYS)
  const rel = (v: string): string => (isAbsolute(v) ? v : resolve(base, v))

  const dataDir = rel(str(p, raw, 'data_dir', '') ?? './gatehouse-data')

  // Listing one listener adds it to the defaults; only an explicit `off` turns a default off, so
  // adding `ssh:` never silently takes the API (and with it every CLI command) away.
  const listen: Record<string, ListenAddress> = {}
  const listenRaw = raw.listen ?? {}
  if (!isRecord(listenRaw)) p.add('listen', 'must be a mapping of listener name to host:port (or off)')
  else {
    for (const [k, v] of Object.entries({ ...DEFAULT_LISTEN, ...listenRaw })) {
      if (v === 'off' || v === false) continue
      const a = typeof v === 'string' ? parseAddress(v) : null
      if (!a) p.add(`listen.${k}`, `must be host:port, e.g. 127.0.0.1:15432, or off (got ${JSON.stringify(v)})`)
      else listen[k] = a
    }
  }

  const tlsRaw = raw.tls ?? {}
  let tls: Config['tls'] = { cert: null, key: null, allowPlaintext: false }
  if (!isRecord(tlsRaw)) p.add('tls', 'must be a mapping')
  else {
    p.unknownKeys(tlsRaw, 'tls', ['cert', 'key', 'allow_plaintext'])
    const cert = str(p, tlsRaw, 'cert', 'tls.')
    const key = str(p, tlsRaw, 'key', 'tls.')
    if ((cert === undefined) !== (key === undefined)) p.add('tls', 'cert and key must be given together')
    const ap = tlsRaw.allow_plaintext ?? false
    if (typeof ap !== 'boolean') p.add('tls.allow_plaintext', 'must be true or false')
    tls = { cert: cert ? rel(cert) : null, key: key ? rel(key) : null, allowPlaintext: ap === true }
  }

  // The audit section (durability, checkpoints, retention, sinks, recordings) has its own parser.
  const parsedAudit = parseAuditConfig(raw.audit, base)
  for (const problem of parsedAudit.problems) p.list.push(problem)
  const audit = parsedAudit.config

  const limitsRaw = raw.limits ?? {}
  let limits: Config['limits'] = { maxMessageBytes: DEFAULT_MAX_MESSAGE_BYTES }
  if (!isRecord(limitsRaw)) p.add('limits', 'must be a mapping')
  else {
    p.unknownKeys(limitsRaw, 'limits', ['max_message_bytes'])
    const m = limitsRaw.max_message_bytes ?? DEFAULT_MAX_MESSAGE_BYTES
    if (typeof m !== 'number' || !Number.isInteger(m) || m < 1024 || m > 1024 * 1024 * 1024) {
      p.add('limits.max_message_bytes', 'must be an integer between 1024 and 1073741824')
    } else limits = { maxMessageBytes: m }
  }

  const tokRaw = raw.tokens ?? {}
  let tokens: Config['tokens'] = { defaultTtlSeconds: 3600, maxTtlSeconds: 7 * 86400, issuer: '' }
  if (!isRecord(tokRaw)) p.add('tokens', 'must be a mapping')
  else {
    p.unknownKeys(tokRaw, 'tokens', ['default_ttl', 'max_ttl', 'issuer'])
    const issuer = str(p, tokRaw, 'issuer', 'tokens.') ?? ''
    tokens = {
      defaultTtlSeconds: duration(p, tokRaw, 'default_ttl', 'tokens.', 3600),
      maxTtlSeconds: duration(p, tokRaw, 'max_ttl', 'tokens.', 7 * 86400),
      issuer,
    }
  }

  const connections: ConnectionConfig[] = []
  const connRaw = raw.connections ?? []
  if (!Array.isArray(connRaw)) p.add('connections', 'must be a list')
  else {
    const seen = new Set<string>()
    connRaw.forEach((c: unknown, i: number) => {
      const path = `connections[${i}]`
      if (!isRecord(c)) {
        p.add(path, 'must be a mapping with name, protocol and address')
        return
      }
      const name = str(p, c, 'name', `${path}.`)
      if (name === undefined) p.add(`${path}.name`, 'is required')
      else if (!NAME_RE.test(name)) p.add(`${path}.name`, 'must be letters, digits, _ . - (at most 63)')
      else if (seen.has(name)) p.add(`${path}.name`, `duplicate connection name ${JSON.stringify(name)}`)
      else seen.add(name)
      const protocol = str(p, c, 'protocol', `${path}.`)
      if (protocol === undefined) p.add(`${path}.protocol`, 'is required')
      const address = str(p, c, 'address', `${path}.`)
      const addr = address === undefined ? null : parseAddress(address)
      if (!addr) p.add(`${path}.address`, `is required as host:port (got ${JSON.stringify(c.address)})`)
      const labels: Record<string, string> = {}
      const l = c.labels ?? {}
      if (!isRecord(l)) p.add(`${path}.labels`, 'must be a mapping of strings')
      else {
        for (const [k, v] of Object.entries(l)) {
          if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') {
            p.add(`${path}.labels.${k}`, 'must be a string')
          } else labels[k] = String(v)
        }
      }
      const settings: Record<string, unknown> = {}
      for (const [k, v] of Object.entries(c)) {
        if (['name', 'protocol', 'address', 'labels'].includes(k)) continue
        // File paths in connection settings (a CA certificate) are relative to the config file.
        settings[k] = (k === 'ca' || k.endsWith('_file')) && typeof v === 'string' ? rel(v) : v
      }
      if (name && protocol && addr) {
        connections.push({ name, protocol, host: addr.host, port: addr.port, labels, settings })
      }
    })
  }

  const plugins: PluginRef[] = []
  const plRaw = raw.plugins ?? []
  if (!Array.isArray(plRaw)) p.add('plugins', 'must be a list of module paths or {module, options}')
  else {
    plRaw.forEach((e: unknown, i: number) => {
      const path = `plugins[${i}]`
      const resolveModule = (m: string): string => (m.startsWith('.') || isAbsolute(m) ? rel(m) : m)
      if (typeof e === 'string' && e.length > 0) plugins.push({ module: resolveModule(e), options: {} })
      else if (isRecord(e)) {
        p.unknownKeys(e, path, ['module', 'options'])
        const m = str(p, e, 'module', `${path}.`)
        const o = e.options ?? {}
        if (m === undefined) p.add(`${path}.module`, 'is required')
        if (!isRecord(o)) p.add(`${path}.options`, 'must be a mapping')
        if (m !== undefined && isRecord(o)) plugins.push({ module: resolveModule(m), options: o })
      } else p.add(path, 'must be a module path or {module, options}')
    })
  }

  // A policy directory (compiled at start and on every change) or a prebuilt bundle.tar.gz.
  const policiesRaw = str(p, raw, 'policies', '')
  const policies = policiesRaw === undefined ? null : rel(policiesRaw)

  const identity = parseIdentityConfig(raw.identity, (path, what) => p.add(path, what))

  const metricsRaw = raw.metrics ?? {}
  let metrics: Config['metrics'] = { auth: 'open' }
  if (!isRecord(metricsRaw)) p.add('metrics', 'must be a mapping')
  else {
    p.unknownKeys(metricsRaw, 'metrics', ['auth'])
    const auth = metricsRaw.auth ?? 'open'
    if (auth !== 'open' && auth !== 'admin') p.add('metrics.auth', `must be open or admin (got ${JSON.stringify(auth)})`)
    else metrics = { auth }
  }

  const logLevel = str(p, raw, 'log_level', '') ?? 'info'
  if (!LOG_LEVELS.includes(logLevel)) p.add('log_level', `must be one of ${LOG_LEVELS.join(', ')}`)

  if (p.list.length > 0) {
    throw new GatehouseError('GH_ERR_CONFIG', `${where}: invalid configuration:\n  ${p.list.join('\n  ')}`)
  }
  const approvals = parseApprovalsConfig(raw.approvals, base, (path, what) => p.add(path, what))
  if (p.list.length > 0) {
    throw new GatehouseError('GH_ERR_CONFIG', `${where}: invalid configuration:\n  ${p.list.join('\n  ')}`)
  }
  return { file, dataDir, listen, tls, audit, limits, tokens, connections, plugins, policies, identity, logLevel, approvals, metrics }
}

/** Re-raises problems that only the loaded plugins can detect, in the same format. */
export function configProblem(config: Config, problems: readonly string[]): GatehouseError {
  const where = config.file ?? '(built-in configuration)'
  return new GatehouseError('GH_ERR_CONFIG', `${where}: invalid configuration:\n  ${problems.join('\n  ')}`)
}
