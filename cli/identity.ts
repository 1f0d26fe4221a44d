// The identity commands of `gatehouse`:
//
//   login [--device] [--provider NAME]     OIDC login; the token is kept in the user's config dir
//   logout                                 forget that token
//   whoami [--json]                        principal, groups, scope, expiry and the chain
//   token delegate --agent NAME [--scope '…'] [--ttl 15m] [--audience URL]
//                                          a child token for an agent (RFC 8693), alone on stdout
//   token exchange (--jwt T | --jwt-file F | --api-key K | --api-key-file F)
//                                          a CI job's OIDC token or a service-account key → a token
//   service-account key create|list|rotate|revoke
//
// A command acting as someone takes the token from --token, GATEHOUSE_TOKEN, or the stored login
// (docs/identity.md). The server is --server, GATEHOUSE_SERVER, the server running for --config (its
// run.json), or tokens.issuer. Administrative key commands use the admin credential the server
// keeps in its data directory, or the data directory itself when no server runs.

import { spawn } from 'node:child_process'
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { homedir } from 'node:os'
import { dirname, join } from 'node:path'
import { type Command, Option } from 'commander'
import { openLocalAuditLog } from '../engine/audit/writer.js'
import type { Config } from '../engine/config/config.js'
import { issuerFor } from './gateway/gateway.js'
import { parseDuration } from '../engine/duration.js'
import { splitScope } from '../engine/identity/scope.js'
import { ServiceKeys } from '../engine/identity/service-keys.js'
import { GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS, TOKEN_TYPE_API_KEY, TOKEN_TYPE_JWT } from '../engine/identity/routes.js'
import { Store } from '../engine/store.js'
import { loadOrCreateSigningKey, TokenIssuer } from '../engine/identity/tokens.js'
import { ApiClient, ApiError, resolveConfig, runningServer, ServerUnreachableError } from './client.js'
import { revokedLine, revokeById } from './revoke.js'

/** A problem the user can fix; printed as `gatehouse: <message>`. */
export class CliError extends ApiError {
  constructor(message: string) {
    super(0, message)
  }
}

const LOGIN_TIMEOUT_MS = 5 * 60 * 1000

function out(line: string): void {
  process.stdout.write(`${line}\n`)
}
function say(line: string): void {
  process.stderr.write(`${line}\n`)
}

const configOpt = (): Option => new Option('-c, --config <file>', 'configuration file (default ./gatehouse.yaml or $GATEHOUSE_CONFIG)')
const serverOpt = (): Option =>
  new Option('--server <url>', 'the Gatehouse API (default $GATEHOUSE_SERVER, the server running for --config, or tokens.issuer)')
const tokenOpt = (): Option => new Option('--token <token>', 'act with this token (default $GATEHOUSE_TOKEN, then the stored login)')

/** Where `gatehouse login` keeps tokens: $XDG_CONFIG_HOME/gatehouse/credentials.json (mode 0600). */
export function credentialsPath(): string {
  const base = process.env.XDG_CONFIG_HOME || join(homedir(), '.config')
  return join(base, 'gatehouse', 'credentials.json')
}

interface StoredLogin {
  token: string
  principal: string
  expires_at: string
}

function readCredentials(): Record<string, StoredLogin> {
  const f = credentialsPath()
  if (!existsSync(f)) return {}
  try {
    const v = JSON.parse(readFileSync(f, 'utf8')) as unknown
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, StoredLogin>) : {}
  } catch {
    return {}
  }
}

function writeCredentials(all: Record<string, StoredLogin>): void {
  const f = credentialsPath()
  mkdirSync(dirname(f), { recursive: true, mode: 0o700 })
  writeFileSync(f, `${JSON.stringify(all, null, 2)}\n`, { mode: 0o600 })
  chmodSync(f, 0o600)
}

/** The `gatehouse login` token kept for `server`, if any (an unreadable file counts as none). */
export function storedLoginToken(server: string): string | undefined {
  const t: unknown = readCredentials()[server]?.token
  return typeof t === 'string' ? t : undefined
}

/** The API a command acting as someone talks to: --server, GATEHOUSE_SERVER, the running server, tokens.issuer. */
export function serverUrl(config: Config, server: string | undefined): string {
  const s = server ?? process.env.GATEHOUSE_SERVER ?? runningServer(config)?.api ?? (config.tokens.issuer || null)
  if (!s) throw new CliError('no Gatehouse server: give --server URL, set GATEHOUSE_SERVER, or run this where the server for --config runs')
  return s.replace(/\/$/, '')
}

/** Who a command acts as: --token, GATEHOUSE_TOKEN, then the stored login for `server`. */
export function actingToken(server: string, token: string | undefined): string {
  const t = token ?? process.env.GATEHOUSE_TOKEN ?? storedLoginToken(server)
  if (!t) throw new CliError(`no token: give --token, set GATEHOUSE_TOKEN, or run gatehouse login (server ${server})`)
  return t
}

async function request<T>(
  url: string,
  init: { method: 'GET' | 'POST'; token?: string; json?: unknown; form?: Record<string, string> },
): Promise<{ status: number; body: T }> {
  let res: Response
  try {
    res = await fetch(url, {
      method: init.method,
      headers: {
        ...(init.token ? { authorization: `Bearer ${init.token}` } : {}),
        ...(init.json !== undefined ? { 'content-type': 'application/json' } : {}),
        ...(init.form !== undefined ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
      },
      ...(init.json !== undefined ? { body: JSON.stringify(init.json) } : {}),
      ...(init.form !== undefined ? { body: new URLSearchParams(init.form).toString() } : {}),
    })
  } catch (err) {
    throw new ServerUnreachableError(`the server did not answer at ${new URL(url).origin} (${(err as Error).message})`)
  }
  const text = await res.text()
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    body = { error: text }
  }
  if (res.status >= 400) {
    const b = body as { error?: unknown; error_description?: unknown }
    const msg = typeof b.error_description === 'string' ? b.error_description : typeof b.error === 'string' ? b.error : res.statusText
    throw new ApiError(res.status, msg)
  }
  return { status: res.status, body: body as T }
}

function openBrowser(url: string): void {
  const cmd = process.platform === 'darwin' ? 'open' : process.platform === 'win32' ? 'explorer' : 'xdg-open'
  if (process.platform === 'linux' && !process.env.DISPLAY && !process.env.WAYLAND_DISPLAY) return
  try {
    const child = spawn(cmd, [url], { stdio: 'ignore', detached: true })
    child.on('error', () => undefined)
    child.unref()
  } catch {
    // No browser here: the URL is printed.
  }
}

interface Issued {
  token: string
  id: string
  expires_at: string
  principal: string
  groups: string[]
}

/** Browser login: a loopback callback (RFC 8252) receives the code; the gateway redeems it. */
async function browserLogin(server: string, provider: string | undefined, port: number, browser: boolean): Promise<Issued> {
  let resolveCallback: (url: string) => void = () => undefined
  const callback = new Promise<string>((r) => {
    resolveCallback = r
  })
  const http = createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://127.0.0.1')
    if (u.pathname !== '/callback') {
      res.writeHead(404).end()
      return
    }
    res
      .writeHead(200, { 'content-type': 'text/html; charset=utf-8' })
      .end('<!DOCTYPE html><p>Gatehouse: you can close this window and return to the terminal.</p>')
    resolveCallback(`${redirect}${u.search}`)
  })
  await new Promise<void>((r, j) => {
    http.once('error', j)
    http.listen(port, '127.0.0.1', r)
  })
  const a = http.address()
  const redirect = `http://127.0.0.1:${a && typeof a === 'object' ? a.port : port}/callback`
  try {
    const start = await request<{ login_id: string; authorization_url: string }>(`${server}/v1/login/start`, {
      method: 'POST',
      json: { ...(provider ? { provider } : {}), redirect_uri: redirect },
    })
    say(`Open this URL in a browser to log in:\n\n  ${start.body.authorization_url}\n`)
    if (browser) openBrowser(start.body.authorization_url)
    const timer = new Promise<never>((_, j) =>
      setTimeout(() => j(new CliError('the login was not completed within 5 minutes')), LOGIN_TIMEOUT_MS).unref(),
    )
    const url = await Promise.race([callback, timer])
    const done = await request<Issued>(`${server}/v1/login/finish`, {
      method: 'POST',
      json: { login_id: start.body.login_id, callback_url: url },
    })
    return done.body
  } finally {
    http.closeAllConnections()
    http.close()
  }
}

async function deviceLogin(server: string, provider: string | undefined): Promise<Issued> {
  const d = await request<{
    login_id: string
    user_code: string
    verification_uri: string
    verification_uri_complete: string | null
    expires_in: number
    interval: number
  }>(`${server}/v1/login/device`, { method: 'POST', json: provider ? { provider } : {} })
  const b = d.body
  say(`To log in, visit\n\n  ${b.verification_uri}\n\nand enter the code  ${b.user_code}`)
  if (b.verification_uri_complete) say(`(or open ${b.verification_uri_complete})`)
  say('')
  const deadline = Date.now() + b.expires_in * 1000 + 60_000
  const every = Math.max(1, Math.min(b.interval, 5)) * 1000
  while (Date.now() < deadline) {
    const r = await request<Issued | { status: string }>(`${server}/v1/login/device/poll`, {
      method: 'POST',
      json: { login_id: b.login_id },
    })
    if (r.status === 200) return r.body as Issued
    await new Promise((res) => setTimeout(res, every))
  }
  throw new CliError('the device code expired before the login was confirmed')
}

function printIdentity(w: WhoAmI, json: boolean): void {
  if (json) {
    out(JSON.stringify(w))
    return
  }
  out(`principal: ${w.principal}`)
  out(`groups:    ${w.groups.length ? w.groups.join(', ') : '(none)'}`)
  out(`scope:     ${w.scope.length ? w.scope.join(' ') : '(unrestricted)'}`)
  out(`expires:   ${w.expires_at}`)
  out(`chain:     ${w.chain.map((p) => p.id).join(' → ')}`)
  if (w.chain.length > 1) {
    for (const p of w.chain)
      out(
        `  ${p.id}${p.groups.length ? `  groups: ${p.groups.join(', ')}` : ''}  scope: ${p.scope.length ? p.scope.join(' ') : '(unrestricted)'}`,
      )
  }
}

interface WhoAmI {
  principal: string
  kind: string
  groups: string[]
  scope: string[]
  expires_at: string
  chain: { id: string; kind: string; groups: string[]; scope: string[] }[]
  token_ids: string[]
}

function readSecretArg(value: string | undefined, file: string | undefined, what: string): string | undefined {
  if (value !== undefined) return value.trim()
  if (file === undefined) return undefined
  try {
    return (file === '-' ? readFileSync(0, 'utf8') : readFileSync(file, 'utf8')).trim()
  } catch (err) {
    throw new CliError(`cannot read the ${what} from ${file} (${(err as Error).message})`)
  }
}

async function auditLocal(config: Config, event: Record<string, unknown>): Promise<void> {
  const audit = await openLocalAuditLog(config)
  await audit.append({ type: 'token.issued', session: null, chain: ['local:cli'], connection: null, ...event })
  audit.close()
}

export function registerIdentityCommands(program: Command, token: Command): void {
  program
    .command('login')
    .description('log in through OIDC; the Gatehouse token is kept in your config directory')
    .addOption(configOpt())
    .addOption(serverOpt())
    .option('--device', 'device authorization grant, for a machine without a browser')
    .option('--provider <name>', 'which identity.oidc provider (default the first)')
    .option('--port <n>', 'loopback port for the browser callback (default any free port)', (v: string) => Number.parseInt(v, 10), 0)
    .option('--no-browser', 'print the URL instead of opening a browser')
    .action(async (o: { config?: string; server?: string; device?: boolean; provider?: string; port: number; browser: boolean }) => {
      const server = serverUrl(resolveConfig(o.config), o.server)
      const issued = o.device ? await deviceLogin(server, o.provider) : await browserLogin(server, o.provider, o.port, o.browser)
      const all = readCredentials()
      all[server] = { token: issued.token, principal: issued.principal, expires_at: issued.expires_at }
      writeCredentials(all)
      say(
        `Logged in to ${server} as ${issued.principal}${issued.groups.length ? ` (groups: ${issued.groups.join(', ')})` : ''}; the token expires at ${issued.expires_at}.`,
      )
    })

  program
    .command('logout')
    .description('forget the token gatehouse login stored for this server')
    .addOption(configOpt())
    .addOption(serverOpt())
    .action((o: { config?: string; server?: string }) => {
      const server = serverUrl(resolveConfig(o.config), o.server)
      const all = readCredentials()
      const had = server in all
      delete all[server]
      if (Object.keys(all).length === 0) rmSync(credentialsPath(), { force: true })
      else writeCredentials(all)
      say(had ? `Logged out of ${server}.` : `No stored login for ${server}.`)
    })

  program
    .command('whoami')
    .description('the principal, groups, scope, expiry and chain of your token')
    .addOption(configOpt())
    .addOption(serverOpt())
    .addOption(tokenOpt())
    .option('--json', 'print as JSON')
    .action(async (o: { config?: string; server?: string; token?: string; json?: boolean }) => {
      const config = resolveConfig(o.config)
      const local = !o.server && !process.env.GATEHOUSE_SERVER && !runningServer(config) && existsSync(join(config.dataDir, 'keys'))
      if (local) {
        // No server runs: on the gateway's host, the data directory can answer.
        const t = o.token ?? process.env.GATEHOUSE_TOKEN
        if (!t) throw new CliError('no server runs for this configuration; give --token or GATEHOUSE_TOKEN to check a token locally')
        printIdentity(await verifyLocally(config, t), o.json === true)
        return
      }
      const server = serverUrl(config, o.server)
      const r = await request<WhoAmI>(`${server}/v1/whoami`, { method: 'GET', token: actingToken(server, o.token) })
      printIdentity(r.body, o.json === true)
    })

  token
    .command('delegate')
    .description('a child token for an agent, narrowed from yours (RFC 8693); prints it alone on stdout')
    .addOption(configOpt())
    .addOption(serverOpt())
    .addOption(tokenOpt())
    .requiredOption('--agent <name>', 'the agent the token is for: the principal agent:<name>')
    .option('--scope <scope>', 'space-separated scope, within yours, e.g. "connection:app sql.read" (default: all of yours)')
    .option('--ttl <duration>', "lifetime, e.g. 15m (no longer than your token's; default identity.delegation.default_ttl)")
    .option('--audience <url>', 'the resource the token is for (default this gateway)')
    .option('--json', 'print the token endpoint answer as JSON')
    .action(
      async (o: {
        config?: string
        server?: string
        token?: string
        agent: string
        scope?: string
        ttl?: string
        audience?: string
        json?: boolean
      }) => {
        const server = serverUrl(resolveConfig(o.config), o.server)
        const r = await request<{ access_token: string }>(`${server}/oauth/token`, {
          method: 'POST',
          form: {
            grant_type: GRANT_TOKEN_EXCHANGE,
            subject_token: actingToken(server, o.token),
            subject_token_type: TOKEN_TYPE_ACCESS,
            agent: o.agent,
            ...(o.scope !== undefined ? { scope: splitScope(o.scope).join(' ') } : {}),
            ...(o.ttl !== undefined ? { ttl: o.ttl } : {}),
            ...(o.audience !== undefined ? { audience: o.audience } : {}),
          },
        })
        out(o.json ? JSON.stringify(r.body) : r.body.access_token)
      },
    )

  token
    .command('exchange')
    .description("a CI job's OIDC token (RFC 8693 federation) or a service-account key for a Gatehouse token, alone on stdout")
    .addOption(configOpt())
    .addOption(serverOpt())
    .option('--jwt <token>', "the workload's OIDC token")
    .option('--jwt-file <file>', "read the workload's OIDC token from a file (- for stdin)")
    .option('--api-key <key>', 'a service-account key')
    .option('--api-key-file <file>', 'read the service-account key from a file (- for stdin)')
    .option('--audience <url>', 'the resource the token is for (default this gateway)')
    .option('--json', 'print the token endpoint answer as JSON')
    .action(
      async (o: {
        config?: string
        server?: string
        jwt?: string
        jwtFile?: string
        apiKey?: string
        apiKeyFile?: string
        audience?: string
        json?: boolean
      }) => {
        const server = serverUrl(resolveConfig(o.config), o.server)
        const jwt = readSecretArg(o.jwt, o.jwtFile, 'workload token')
        const key = readSecretArg(o.apiKey ?? process.env.GATEHOUSE_API_KEY, o.apiKeyFile, 'API key')
        if ((jwt === undefined) === (key === undefined))
          throw new CliError('give exactly one of --jwt/--jwt-file and --api-key/--api-key-file')
        const r = await request<{ access_token: string }>(`${server}/oauth/token`, {
          method: 'POST',
          form: {
            grant_type: GRANT_TOKEN_EXCHANGE,
            subject_token: jwt ?? key ?? '',
            subject_token_type: jwt !== undefined ? TOKEN_TYPE_JWT : TOKEN_TYPE_API_KEY,
            ...(o.audience !== undefined ? { audience: o.audience } : {}),
          },
        })
        out(o.json ? JSON.stringify(r.body) : r.body.access_token)
      },
    )

  const sa = program.command('service-account').description('service-account API keys (stored as hashes, scoped, expiring, rotatable)')
  const key = sa.command('key').description('create, list, rotate and revoke API keys')
  key
    .command('create')
    .description('create a key for service:<name>; prints the key alone on stdout (it is not shown again)')
    .addOption(configOpt())
    .requiredOption('--name <name>', 'the service: the principal service:<name>')
    .option('--group <group>', 'a group of the service (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--scope <scope>', 'space-separated scope entries, e.g. "connection:app sql.read"')
    .option('--ttl <duration>', 'lifetime, e.g. 90d (default identity.service_keys.default_ttl)')
    .option('--description <text>', 'what the key is for')
    .option('--json', 'print {key, id, principal, expires_at} as JSON')
    .action(
      async (o: { config?: string; name: string; group: string[]; scope?: string; ttl?: string; description?: string; json?: boolean }) => {
        const config = resolveConfig(o.config)
        const body = {
          name: o.name,
          groups: o.group,
          scope: splitScope(o.scope ?? ''),
          ...(o.ttl ? { ttl: o.ttl } : {}),
          ...(o.description ? { description: o.description } : {}),
        }
        const api = ApiClient.forServer(config)
        let r: { key: string; id: string; principal: string; expires_at: string }
        if (api) r = await api.call('POST', '/v1/service-keys', body)
        else {
          const ttl = o.ttl ? parseDuration(o.ttl) : config.identity.serviceKeys.defaultTtlSeconds
          if (ttl === null || ttl <= 0) throw new CliError('--ttl must be a duration like 90d')
          if (ttl > config.identity.serviceKeys.maxTtlSeconds) throw new CliError('--ttl exceeds identity.service_keys.max_ttl')
          const store = new Store(config.dataDir)
          try {
            const k = new ServiceKeys(store).create({ ...body, ttlSeconds: ttl })
            r = {
              key: k.key,
              id: k.record.id,
              principal: k.record.principal,
              expires_at: new Date(k.record.expiresAt * 1000).toISOString(),
            }
          } finally {
            store.close()
          }
          await auditLocal(config, {
            token: { id: r.id, source: 'service-key', action: 'created', subject: r.principal, groups: o.group, scope: body.scope },
          })
        }
        out(o.json ? JSON.stringify(r) : r.key)
      },
    )
  key
    .command('list')
    .description('keys, oldest first (never the secrets)')
    .addOption(configOpt())
    .option('--json', 'JSON Lines')
    .action(async (o: { config?: string; json?: boolean }) => {
      const config = resolveConfig(o.config)
      const api = ApiClient.forServer(config)
      type Row = {
        id: string
        principal: string
        groups: string[]
        scope: string[]
        expires_at: string
        rotated_to: string | null
        revoked: boolean
        expired: boolean
      }
      let rows: Row[]
      if (api) rows = (await api.call<{ keys: Row[] }>('GET', '/v1/service-keys')).keys
      else {
        const store = new Store(config.dataDir)
        const now = Math.floor(Date.now() / 1000)
        rows = new ServiceKeys(store).list().map((k) => ({
          id: k.id,
          principal: k.principal,
          groups: [...k.groups],
          scope: [...k.scope],
          expires_at: new Date(k.expiresAt * 1000).toISOString(),
          rotated_to: k.rotatedTo,
          revoked: k.revoked,
          expired: k.expiresAt <= now,
        }))
        store.close()
      }
      for (const r of rows) {
        if (o.json) out(JSON.stringify(r))
        else {
          const state = r.revoked ? 'revoked' : r.expired ? 'expired' : 'active'
          out(
            [
              r.id,
              state.padEnd(7),
              r.principal,
              r.expires_at,
              r.groups.join(',') || '-',
              r.scope.join(' ') || '-',
              r.rotated_to ? `→ ${r.rotated_to}` : '',
            ].join('  '),
          )
        }
      }
    })
  key
    .command('rotate')
    .description('a successor key with the same rights (printed alone on stdout); the old key ends after --grace')
    .addOption(configOpt())
    .argument('<id>', 'key id')
    .option('--grace <duration>', 'how long the old key keeps working, e.g. 10m (default 0: ends now)')
    .option('--ttl <duration>', 'lifetime of the new key (default: as long as the old one was issued for)')
    .option('--json', 'print {key, id, replaces, expires_at, old_expires_at} as JSON')
    .action(async (id: string, o: { config?: string; grace?: string; ttl?: string; json?: boolean }) => {
      const config = resolveConfig(o.config)
      const api = ApiClient.forServer(config)
      if (!api)
        throw new ServerUnreachableError(
          'no Gatehouse server is running for this configuration; rotation goes through the server so the old key ends at once',
        )
      const r = await api.call<{ key: string }>('POST', `/v1/service-keys/${encodeURIComponent(id)}/rotate`, {
        ...(o.grace ? { grace: o.grace } : {}),
        ...(o.ttl ? { ttl: o.ttl } : {}),
      })
      out(o.json ? JSON.stringify(r) : r.key)
    })
  key
    .command('revoke')
    .description('revoke a key: it, every token exchanged for it and their descendants are refused, their sessions end')
    .addOption(configOpt())
    .argument('<id>', 'key id')
    .option('--reason <text>', 'why, for the audit log')
    .option('--json', 'print {revoked, sessions_ended}')
    .action(async (id: string, o: { config?: string; reason?: string; json?: boolean }) => {
      const r = await revokeById(resolveConfig(o.config), id, o.reason)
      out(o.json ? JSON.stringify(r) : revokedLine(r))
    })
}

/** Verifies a token with the data directory's key when no server runs (the gateway's host only). */
export async function verifyLocally(config: Config, token: string): Promise<WhoAmI> {
  const issuer = new TokenIssuer(await loadOrCreateSigningKey(config.dataDir), issuerFor(config), {
    maxDepth: config.identity.delegation.maxDepth,
  })
  const store = new Store(config.dataDir)
  try {
    const id = await issuer.verify(token, (j) => store.isRevoked(j))
    const me = id.chain[id.chain.length - 1]
    return {
      principal: me?.id ?? '',
      kind: me?.kind ?? '',
      groups: [...(me?.groups ?? [])],
      scope: [...(me?.scope ?? [])],
      expires_at: new Date(id.expiresAt * 1000).toISOString(),
      chain: id.chain.map((p) => ({ id: p.id, kind: p.kind, groups: [...p.groups], scope: [...p.scope] })),
      token_ids: [...id.tokenIds],
    }
  } finally {
    store.close()
  }
}
