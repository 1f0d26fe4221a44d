// Loads and validates gatehouse.yaml with one zod schema (`configSchema`, composed of the
// sections' own schemas). Everything arrives as `unknown` and leaves as a typed, normalized
// Config; every problem is reported with the file, its line, the key path and what is wrong, all
// at once, so an operator fixes a broken file in one pass. `gatehouse config schema` prints the
// same schema as JSON Schema for editors.

import { readFileSync } from 'node:fs'
import { dirname, isAbsolute, resolve } from 'node:path'
import yaml from 'js-yaml'
import { isNode, LineCounter, parseDocument } from 'yaml'
import { z } from 'zod'
import { type ApprovalsConfig, approvalsFromSection, approvalsSchema } from '../approvals/config.js'
import { type AuditConfig, auditFromSection, auditSchema } from '../audit/config.js'
import { ADDRESS_RE, address, bool, duration, int, issueLines, NAME_RE, strict, text, uniqueNames } from './zod.js'
import { parseDuration } from '../duration.js'
import { GatehouseError } from '../errors.js'
import { type IdentityConfig, identityFromSection, identitySchema } from '../identity/config.js'

export type TlsMode = 'disable' | 'require' | 'verify-full'

export interface ConnectionConfig {
  readonly name: string
  readonly protocol: string
  readonly host: string
  readonly port: number
  readonly labels: Readonly<Record<string, string>>
  /** Connectors that reach this target (any attached one carries a session); empty: dialled directly. */
  readonly via: readonly string[]
  /** Protocol-specific keys (database, user, password, tls, ca, …), checked by the plugin. */
  readonly settings: Readonly<Record<string, unknown>>
}

export interface ConnectorConfig {
  readonly name: string
  /** The principal whose credential attaches as this connector; default `service:<name>`. */
  readonly principal: string
  /** Lifetime of the credential a connector gets for a join token (replaced at two thirds of it). */
  readonly credentialTtlSeconds: number
}

export interface PluginRef {
  /** Module path (relative to the config file) or package name. */
  readonly module: string
  readonly options: Readonly<Record<string, unknown>>
}

/** More workers than this buys nothing on any host a gateway runs on, and costs memory. */
export const MAX_WORKERS = 64

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
  /** Connectors: agents in private networks that dial out to `listen.connectors` (engine/connector). */
  readonly connectors: readonly ConnectorConfig[]
  /** Policy directory or bundle.tar.gz (absolute); null: the default bundle shipped in policies/. */
  readonly policies: string | null
  /** OIDC providers, trusted workload issuers, delegation limits, service-account keys. */
  readonly identity: IdentityConfig
  /** Held commands: wait timeout, request lifetime, webhook (engine/approvals/config.ts). */
  readonly approvals: ApprovalsConfig
  /** /metrics on the API listener: open to anyone who reaches it, or for admin tokens only. */
  readonly metrics: { readonly auth: MetricsAuth }
  /** The web console at / on the API listener (engine/console). */
  readonly console: ConsoleConfig
  readonly logLevel: string
  /** Worker processes `serve` runs (1: the gateway serves in the process that was started). */
  readonly workers: number
}

export interface ConsoleConfig {
  /** The console's public URL (its OIDC callback is <url>/console/callback); null: loopback only. */
  readonly url: string | null
  /** The login form takes a Gatehouse token (always on with --dev). */
  readonly tokenLogin: boolean
}

export type MetricsAuth = 'open' | 'admin'

/** PostgreSQL's own cap on a client message is 1 GiB; a gateway holding one per session cannot
 * afford that, and no ordinary statement, bind or COPY chunk comes near 16 MiB. */
export const DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024

/** Listeners that run unless the configuration says `off` for them. */
export const DEFAULT_LISTEN: Readonly<Record<string, string>> = { api: '127.0.0.1:8080', postgres: '127.0.0.1:15432' }

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const

export function parseAddress(text: string): ListenAddress | null {
  const m = ADDRESS_RE.exec(text.trim())
  if (!m || m[1] === undefined) return null
  const port = Number(m[2])
  if (port > 65535) return null
  const host = m[1].startsWith('[') ? m[1].slice(1, -1) : m[1]
  return { host, port }
}

const CONNECTOR_PRINCIPAL_RE = /^(service|workload):[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}$/

function connectorName(): z.ZodString {
  return text().regex(NAME_RE, { error: 'must be letters, digits, _ . - (at most 63)' })
}

type ViaSpec = string | readonly string[] | { readonly labels: Readonly<Record<string, string>> }

function isViaNames(via: ViaSpec): via is string | readonly string[] {
  return typeof via === 'string' || Array.isArray(via)
}

/**
 * The connectors a connection's `via:` names. A label selector is resolved here, once: connectors
 * are configured, so the set it selects is known at load (every label must match; empty labels
 * select none).
 */
function viaNames(
  via: ViaSpec | undefined,
  connectors: readonly { name: string; labels?: Record<string, string> | undefined }[],
): string[] {
  if (via === undefined) return []
  if (typeof via === 'string') return [via]
  if (isViaNames(via)) return [...via]
  const want = Object.entries(via.labels)
  if (want.length === 0) return []
  return connectors.filter((c) => want.every(([k, v]) => c.labels?.[k] === v)).map((c) => c.name)
}

const connectorSchema = strict({
  name: connectorName(),
  principal: text()
    .regex(CONNECTOR_PRINCIPAL_RE, { error: 'must be a service: or workload: principal' })
    .optional()
    .describe('whose credential attaches as this connector (default service:<name>)'),
  labels: z
    .record(z.string(), z.string(), { error: 'must be a mapping of strings' })
    .optional()
    .describe('labels a connection may select this connector by (via: {labels: …})'),
  credential_ttl: duration()
    .refine((t) => (parseDuration(t) ?? 0) >= 5, { error: 'must be at least 5s' })
    .optional()
    .describe('lifetime of the credential a connector gets for its join token, replaced before it ends (default 1h)'),
})
/** host and port of an http(s) URL (default ports 80 and 443), or null. */
function addressOfUrl(url: string): ListenAddress | null {
  try {
    const u = new URL(url)
    if (u.protocol !== 'http:' && u.protocol !== 'https:') return null
    return { host: u.hostname.replace(/^\[|\]$/g, ''), port: u.port ? Number(u.port) : u.protocol === 'https:' ? 443 : 80 }
  } catch {
    return null
  }
}

const connectionSchema = z
  .looseObject(
    {
      name: text().regex(NAME_RE, { error: 'must be letters, digits, _ . - (at most 63)' }),
      protocol: text(),
      // An HTTP-style connection names its target by `url:` instead; its host and port are the address.
      address: address('is required as host:port').optional(),
      url: z.string({ error: 'must be http(s)://host[:port]' }).optional(),
      labels: z
        .record(z.string(), z.union([z.string(), z.number(), z.boolean()], { error: 'must be a string' }), {
          error: 'must be a mapping of strings',
        })
        .optional(),
      via: z
        .union([connectorName(), z.array(connectorName()), strict({ labels: z.record(z.string(), z.string()) })], {
          error: 'must be a connector name, a list of them, or {labels: {key: value}}',
        })
        .optional()
        .describe(
          'the connector(s) that reach this target from inside its network (connectors:), or a label selector over them; absent: dialled directly',
        ),
    },
    { error: 'must be a mapping with name, protocol and address' },
  )
  .refine((c) => c.address !== undefined || (c.url !== undefined && addressOfUrl(c.url) !== null), {
    error: (iss) => {
      const c = iss.input as { url?: unknown; address?: unknown }
      return c.url !== undefined
        ? `url: must be http(s)://host[:port] (got ${JSON.stringify(c.url)})`
        : `address: is required as host:port (got ${JSON.stringify(c.address)})`
    },
  })
  // Protocol-specific keys (database, user, tls, …) pass through here and are checked by the
  // plugin that serves the protocol (ProxyPlugin.connectionSchema / validateConnection).
  .describe('a connection; keys beyond name, protocol, address and labels belong to its protocol plugin')

const pluginSchema = z.union(
  [text(), strict({ module: text(), options: z.record(z.string(), z.unknown(), { error: 'must be a mapping' }).optional() })],
  { error: 'must be a module path or {module, options}' },
)

/**
 * The one schema of gatehouse.yaml: every section, each with the messages an operator reads.
 * Sections live beside the code that uses them (audit, identity, approvals); connection keys
 * beyond the common ones are validated by the protocol's plugin, so a new protocol (or a new
 * top-level section: add it here) extends the schema without touching the others.
 */
export const configSchema = strict(
  {
    data_dir: text().optional().describe('state.db, keys/, tls/, audit/, admin.token, run.json (relative to this file)'),
    listen: z
      .record(
        z.string(),
        z.union([z.literal('off'), z.literal(false), address('must be host:port, e.g. 127.0.0.1:15432, or off')], {
          error: (iss) => `must be host:port, e.g. 127.0.0.1:15432, or off (got ${JSON.stringify(iss.input)})`,
        }),
        { error: 'must be a mapping of listener name to host:port (or off)' },
      )
      .optional()
      .describe('host:port per listener (api, postgres, ssh, or a plugin name), or off; api and postgres are on by default'),
    tls: strict({ cert: text().optional(), key: text().optional(), allow_plaintext: bool().optional() })
      .refine((t) => (t.cert === undefined) === (t.key === undefined), { error: 'cert and key must be given together' })
      .optional(),
    audit: auditSchema,
    limits: strict({
      max_message_bytes: int(1024, 1024 * 1024 * 1024, 'must be an integer between 1024 and 1073741824').optional(),
    }).optional(),
    tokens: strict({ default_ttl: duration().optional(), max_ttl: duration().optional(), issuer: text().optional() }).optional(),
    connections: uniqueNames(z.array(connectionSchema, { error: 'must be a list' }), 'connection name').optional(),
    connectors: uniqueNames(z.array(connectorSchema, { error: 'must be a list of {name, principal}' }), 'connector name')
      .optional()
      .describe('connectors: agents in private networks that dial out to listen.connectors; connections name them in via:'),
    plugins: z.array(pluginSchema, { error: 'must be a list of module paths or {module, options}' }).optional(),
    policies: text().optional().describe('a policy directory or bundle.tar.gz (default: the bundle in policies/)'),
    identity: identitySchema,
    log_level: z.enum(LOG_LEVELS, { error: `must be one of ${LOG_LEVELS.join(', ')}` }).optional(),
    workers: int(1, MAX_WORKERS, `must be an integer between 1 and ${MAX_WORKERS}`)
      .optional()
      .describe('gateway worker processes sharing the listeners (default 1: one process); see docs/operations.md'),
    approvals: approvalsSchema,
    metrics: strict({
      auth: z
        .enum(['open', 'admin'], { error: (iss) => `must be open or admin (got ${JSON.stringify(iss.input)})` })
        .optional()
        .describe('who may scrape /metrics: open (default) or admin (the admin token)'),
    }).optional(),
    console: strict({
      url: z
        .url({ protocol: /^https?$/, error: 'must be an http(s) URL such as https://gatehouse.example.com' })
        .optional()
        .describe("the console's public URL; its OIDC callback is <url>/console/callback (default: loopback addresses only)"),
      token_login: z.boolean({ error: 'must be true or false' }).optional().describe('the login page also takes a Gatehouse token'),
    }).optional(),
  },
  'the top level must be a mapping of keys',
).superRefine((d, ctx) => {
  // Every via: names a configured connector, each principal attaches as one connector only, and
  // connectors have an address to dial.
  const names = new Set((d.connectors ?? []).map((c) => c.name))
  ;(d.connections ?? []).forEach((c, i) => {
    if (c.via !== undefined && !isViaNames(c.via)) {
      if (viaNames(c.via, d.connectors ?? []).length === 0) {
        const sel = Object.entries(c.via.labels)
          .map(([k, v]) => `${k}=${v}`)
          .join(', ')
        ctx.addIssue({ code: 'custom', path: ['connections', i, 'via'], message: `no connector has the labels ${sel || '(none given)'}` })
      }
      return
    }
    const via = c.via === undefined ? [] : typeof c.via === 'string' ? [c.via] : c.via
    for (const v of via) {
      if (!names.has(v))
        ctx.addIssue({
          code: 'custom',
          path: ['connections', i, 'via'],
          message: `no connector named ${JSON.stringify(v)} (connectors: lists them)`,
        })
    }
  })
  const principals = new Map<string, string>()
  ;(d.connectors ?? []).forEach((c, i) => {
    const p = c.principal ?? `service:${c.name}`
    const other = principals.get(p)
    if (other !== undefined)
      ctx.addIssue({ code: 'custom', path: ['connectors', i, 'principal'], message: `${p} is already the principal of connector ${other}` })
    principals.set(p, c.name)
  })
  // A connector's link is held by the one worker it dialled; sessions on the others could not use it.
  if ((d.workers ?? 1) > 1 && (d.connectors ?? []).length > 0) {
    ctx.addIssue({ code: 'custom', path: ['workers'], message: 'must be 1 while connectors are configured (a link lives in one worker)' })
  }
  const at = d.listen?.connectors
  if ((d.connectors ?? []).length > 0 && (at === undefined || at === 'off' || at === false)) {
    ctx.addIssue({
      code: 'custom',
      path: ['listen', 'connectors'],
      message: 'is required when connectors are configured: the TLS address connectors dial (e.g. 0.0.0.0:8443)',
    })
  }
})

export type ConfigDocument = z.output<typeof configSchema>

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
  return parseConfig(raw ?? {}, abs, process.cwd(), text)
}

/** The line (1-based) of the node at `path` in YAML `text`, or of its nearest ancestor there. */
function lineOf(text: string, path: readonly (string | number)[]): number | null {
  const counter = new LineCounter()
  const doc = parseDocument(text, { lineCounter: counter })
  for (let n = path.length; n >= 0; n--) {
    const node = doc.getIn(path.slice(0, n), true)
    // An unknown key is best shown at the key itself: its pair's key node.
    if (isNode(node) && node.range) return counter.linePos(node.range[0]).line
  }
  return null
}

/** Validates a parsed document. `file` is used in messages and to resolve relative paths. */
export function parseConfig(raw: unknown, file: string | null, baseDir = process.cwd(), text?: string): Config {
  const where = file ?? '(built-in configuration)'
  const base = file ? dirname(file) : baseDir
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new GatehouseError('GH_ERR_CONFIG', `${where}: the top level must be a mapping of keys`)
  }
  const r = configSchema.safeParse(raw)
  if (!r.success) {
    const lines = issueLines(r.error.issues).map((l) => {
      // file:line first when the text is at hand, so an editor jumps to it.
      const line = text === undefined ? null : lineOf(text, l.path)
      return line === null ? l.line : `${where}:${line}: ${l.line}`
    })
    throw new GatehouseError('GH_ERR_CONFIG', `${where}: invalid configuration:\n  ${lines.join('\n  ')}`)
  }
  return configFromDocument(r.data, file, base)
}

/** The validated document as the engine uses it: defaults filled in, paths made absolute. */
function configFromDocument(d: ConfigDocument, file: string | null, base: string): Config {
  const rel = (v: string): string => (isAbsolute(v) ? v : resolve(base, v))
  // Listing one listener adds it to the defaults; only an explicit `off` turns a default off, so
  // adding `ssh:` never silently takes the API (and with it every CLI command) away.
  const listen: Record<string, ListenAddress> = {}
  for (const [k, v] of Object.entries({ ...DEFAULT_LISTEN, ...(d.listen ?? {}) })) {
    const a = typeof v === 'string' && v !== 'off' ? parseAddress(v) : null
    if (a) listen[k] = a
  }
  const tls = {
    cert: d.tls?.cert ? rel(d.tls.cert) : null,
    key: d.tls?.key ? rel(d.tls.key) : null,
    allowPlaintext: d.tls?.allow_plaintext === true,
  }
  const connections: ConnectionConfig[] = (d.connections ?? []).map((c) => {
    const addr = (c.address !== undefined ? parseAddress(c.address) : addressOfUrl(c.url ?? '')) as ListenAddress
    const labels: Record<string, string> = {}
    for (const [k, v] of Object.entries(c.labels ?? {})) labels[k] = String(v)
    const settings: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(c)) {
      if (['name', 'protocol', 'address', 'labels', 'via'].includes(k)) continue
      // File paths in connection settings (a CA certificate) are relative to the config file.
      settings[k] = (k === 'ca' || k === 'client_cert' || k.endsWith('_file')) && typeof v === 'string' ? rel(v) : v
    }
    const via = viaNames(c.via, d.connectors ?? [])
    return { name: c.name, protocol: c.protocol, host: addr.host, port: addr.port, labels, via, settings }
  })
  const resolveModule = (m: string): string => (m.startsWith('.') || isAbsolute(m) ? rel(m) : m)
  const plugins: PluginRef[] = (d.plugins ?? []).map((e) =>
    typeof e === 'string' ? { module: resolveModule(e), options: {} } : { module: resolveModule(e.module), options: e.options ?? {} },
  )
  return {
    file,
    dataDir: rel(d.data_dir ?? './gatehouse-data'),
    listen,
    tls,
    audit: auditFromSection(d.audit, base),
    limits: { maxMessageBytes: d.limits?.max_message_bytes ?? DEFAULT_MAX_MESSAGE_BYTES },
    tokens: {
      defaultTtlSeconds: d.tokens?.default_ttl ? (parseDuration(d.tokens.default_ttl) ?? 3600) : 3600,
      maxTtlSeconds: d.tokens?.max_ttl ? (parseDuration(d.tokens.max_ttl) ?? 7 * 86400) : 7 * 86400,
      issuer: d.tokens?.issuer ?? '',
    },
    connections,
    plugins,
    connectors: (d.connectors ?? []).map((c) => ({
      name: c.name,
      principal: c.principal ?? `service:${c.name}`,
      credentialTtlSeconds: c.credential_ttl ? (parseDuration(c.credential_ttl) ?? 3600) : 3600,
    })),
    // A policy directory (compiled at start and on every change) or a prebuilt bundle.tar.gz.
    policies: d.policies === undefined ? null : rel(d.policies),
    identity: identityFromSection(d.identity),
    logLevel: d.log_level ?? 'info',
    workers: d.workers ?? 1,
    approvals: approvalsFromSection(d.approvals, base),
    metrics: { auth: d.metrics?.auth ?? 'open' },
    console: { url: d.console?.url?.replace(/\/+$/, '') ?? null, tokenLogin: d.console?.token_login ?? false },
  }
}

type JsonObject = Record<string, unknown>

/**
 * The configuration's JSON Schema (draft 2020-12), for editors: `gatehouse config schema`. Each
 * protocol plugin's connection schema applies to connections of its protocol (if/then), with the
 * common keys (name, protocol, address, labels) beside it.
 */
export function configJsonSchema(protocols: readonly { readonly name: string; readonly connectionSchema?: z.ZodType }[]): JsonObject {
  const doc = z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' }) as JsonObject
  const conns = (doc.properties as JsonObject | undefined)?.connections as JsonObject | undefined
  const item = conns?.items as JsonObject | undefined
  if (conns && item) {
    const common = (item.properties ?? {}) as JsonObject
    const branches: JsonObject[] = []
    for (const p of protocols) {
      if (!p.connectionSchema) continue
      const own = z.toJSONSchema(p.connectionSchema, { io: 'input', unrepresentable: 'any' }) as JsonObject
      const { $schema: _s, ...ownRest } = own
      branches.push({
        if: { properties: { protocol: { const: p.name } }, required: ['protocol'] },
        // biome-ignore lint/suspicious/noThenProperty: JSON Schema's if/then keyword, a plain data object that is never awaited
        then: {
          ...ownRest,
          properties: { ...common, ...((own.properties ?? {}) as JsonObject) },
          required: [...new Set([...((item.required ?? []) as string[]), ...((own.required ?? []) as string[])])],
          additionalProperties: false,
        },
      })
    }
    if (branches.length > 0) conns.items = { ...item, allOf: branches }
  }
  return { title: 'gatehouse.yaml', ...doc }
}

/** Re-raises problems that only the loaded plugins can detect, in the same format. */
export function configProblem(config: Config, problems: readonly string[]): GatehouseError {
  const where = config.file ?? '(built-in configuration)'
  return new GatehouseError('GH_ERR_CONFIG', `${where}: invalid configuration:\n  ${problems.join('\n  ')}`)
}
