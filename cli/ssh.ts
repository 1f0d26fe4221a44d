// `gatehouse ssh …`: public keys that log callers in to the SSH proxy, and the gateway's host key.
//
//   ssh add-key PRINCIPAL KEYFILE [--group G]… [--scope "…"] [--ttl 90d] [--json]
//   ssh list-keys [PRINCIPAL] [--json]
//   ssh remove-key ID|FINGERPRINT
//   ssh host-key                     the line to put in known_hosts
//
// Through the running server's API when one runs (so a removal ends the key's live sessions at
// once), else straight in the data directory.

import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Command, Option } from 'commander'
import ssh2 from 'ssh2'
import { openLocalAuditLog } from '../engine/audit/writer.js'
import type { Config } from '../engine/config/config.js'
import { parseDuration } from '../engine/duration.js'
import { PublicKeys, publicKeyJson } from '../engine/identity/public-keys.js'
import { Store } from '../engine/store.js'
import { ApiClient, resolveConfig, runningServer } from './client.js'
import { CliError } from './identity.js'

interface KeyRow {
  readonly id: string
  readonly principal: string
  readonly fingerprint: string
  readonly key: string
  readonly comment: string | null
  readonly groups: readonly string[]
  readonly scope: readonly string[]
  readonly created_at: string
  readonly expires_at: string | null
  readonly revoked: boolean
}

function out(line: string): void {
  process.stdout.write(`${line}\n`)
}

/** Reads KEYFILE (or stdin for `-`) and checks it is one public key, never a private one. */
function readPublicKey(file: string): string {
  let text: string
  try {
    text = readFileSync(file === '-' ? 0 : file, 'utf8')
  } catch (err) {
    throw new CliError(`${file}: cannot read the key (${(err as NodeJS.ErrnoException).code ?? String(err)})`)
  }
  const lines = text.split('\n').filter((l) => l.trim() !== '' && !l.trim().startsWith('#'))
  const parsed = ssh2.utils.parseKey(text)
  const key = Array.isArray(parsed) ? parsed[0] : parsed
  if (text.includes('PRIVATE KEY') || (key && !(key instanceof Error) && key.isPrivateKey())) {
    throw new CliError(`${file}: this is a private key; give the public key (the .pub file). Nothing was sent.`)
  }
  if (lines.length !== 1) throw new CliError(`${file}: expected one OpenSSH public key line, found ${lines.length}`)
  if (!key || key instanceof Error)
    throw new CliError(`${file}: not an OpenSSH public key (${key instanceof Error ? key.message : 'unreadable'})`)
  return (lines[0] as string).trim()
}

async function auditLocal(config: Config, type: 'token.issued' | 'token.revoked', token: Record<string, unknown>): Promise<void> {
  const audit = await openLocalAuditLog(config)
  await audit.append({ type, session: null, chain: ['local:cli'], connection: null, token })
  audit.close()
}

function printKey(r: KeyRow): void {
  const state = r.revoked ? 'revoked' : r.expires_at !== null && Date.parse(r.expires_at) <= Date.now() ? 'expired' : 'active'
  out(
    [
      r.id,
      r.principal,
      r.fingerprint,
      state,
      `groups=${r.groups.join(',') || '-'}`,
      `scope=${r.scope.join(' ') || '-'}`,
      r.expires_at ?? 'no expiry',
      r.comment ?? '',
    ]
      .join('  ')
      .trimEnd(),
  )
}

export function registerSshCommands(program: Command, configOption: () => Option): void {
  const ssh = program.command('ssh').description('public keys for SSH logins through Gatehouse, and the gateway host key')
  ssh
    .command('add-key')
    .description('register an OpenSSH public key to a principal: a login with it gets these groups and scope')
    .addOption(configOption())
    .argument('<principal>', 'user:NAME, service:NAME or workload:NAME (agents log in with delegated tokens)')
    .argument('<keyfile>', 'the public key file (id_ed25519.pub), - for stdin')
    .option(
      '--group <group>',
      'a group of the principal when logged in with this key (repeatable)',
      (v: string, acc: string[]) => [...acc, v],
      [] as string[],
    )
    .option('--scope <scope>', 'space-separated scope entries, e.g. "connection:web-1 ssh.exec"')
    .option('--ttl <duration>', 'the key stops working after this long, e.g. 90d (default: until removed)')
    .option('--json', 'print the registered key as JSON')
    .action(
      async (principal: string, keyfile: string, o: { config?: string; group: string[]; scope?: string; ttl?: string; json?: boolean }) => {
        const config = resolveConfig(o.config)
        const key = readPublicKey(keyfile)
        const scope = (o.scope ?? '').split(/\s+/).filter(Boolean)
        if (o.ttl !== undefined) {
          const t = parseDuration(o.ttl)
          if (t === null || t <= 0) throw new CliError('--ttl must be a duration like 90d')
        }
        const body = { principal, key, groups: o.group, scope, ...(o.ttl !== undefined ? { ttl: o.ttl } : {}) }
        const api = ApiClient.forServer(config)
        let row: KeyRow
        if (api) row = await api.call<KeyRow>('POST', '/v1/public-keys', body)
        else {
          const store = new Store(config.dataDir)
          try {
            const ttl = o.ttl !== undefined ? (parseDuration(o.ttl) ?? undefined) : undefined
            const rec = new PublicKeys(store, config.tokens.maxTtlSeconds).register({
              principal,
              key,
              groups: o.group,
              scope,
              ...(ttl !== undefined ? { ttlSeconds: ttl } : {}),
            })
            row = publicKeyJson(rec, false) as unknown as KeyRow
          } catch (err) {
            throw new CliError(err instanceof Error ? err.message : String(err))
          } finally {
            store.close()
          }
          await auditLocal(config, 'token.issued', {
            id: row.id,
            source: 'public-key',
            action: 'registered',
            subject: principal,
            fingerprint: row.fingerprint,
            groups: o.group,
            scope,
          })
        }
        if (o.json) out(JSON.stringify(row))
        else out(`registered ${row.id} ${row.fingerprint} for ${row.principal}`)
      },
    )
  ssh
    .command('list-keys')
    .description('registered public keys, oldest first')
    .addOption(configOption())
    .argument('[principal]', 'only this principal’s keys')
    .option('--json', 'JSON Lines')
    .action(async (principal: string | undefined, o: { config?: string; json?: boolean }) => {
      const config = resolveConfig(o.config)
      const api = ApiClient.forServer(config)
      let rows: KeyRow[]
      if (api) {
        const qs = principal ? `?${new URLSearchParams({ principal })}` : ''
        rows = (await api.call<{ keys: KeyRow[] }>('GET', `/v1/public-keys${qs}`)).keys
      } else {
        const store = new Store(config.dataDir)
        try {
          const list = store.listPublicKeys(principal)
          const revoked = store.revokedAmong(list.map((k) => k.id))
          rows = list.map((k) => publicKeyJson(k, revoked.has(k.id)) as unknown as KeyRow)
        } finally {
          store.close()
        }
      }
      for (const r of rows) {
        if (o.json) out(JSON.stringify(r))
        else printKey(r)
      }
    })
  ssh
    .command('remove-key')
    .description('remove a public key (by id or fingerprint); sessions it opened end at once')
    .addOption(configOption())
    .argument('<key>', 'the key id (pk_…) or its fingerprint (SHA256:…)')
    .option('--json', 'print {removed, fingerprint, sessions_ended}')
    .action(async (id: string, o: { config?: string; json?: boolean }) => {
      const config = resolveConfig(o.config)
      const api = ApiClient.forServer(config)
      if (api) {
        const r = await api.call<{ removed: KeyRow; sessions_ended: number }>('POST', `/v1/public-keys/${encodeURIComponent(id)}/remove`)
        if (o.json) out(JSON.stringify({ removed: r.removed.id, fingerprint: r.removed.fingerprint, sessions_ended: r.sessions_ended }))
        else out(`removed ${r.removed.id} ${r.removed.fingerprint} (${r.sessions_ended} session${r.sessions_ended === 1 ? '' : 's'} ended)`)
        return
      }
      const store = new Store(config.dataDir)
      let removed: ReturnType<Store['removePublicKey']>
      try {
        removed = store.removePublicKey(id)
      } finally {
        store.close()
      }
      if (!removed) throw new CliError(`no public key ${id}`)
      await auditLocal(config, 'token.revoked', {
        id: removed.id,
        source: 'public-key',
        action: 'removed',
        subject: removed.principal,
        fingerprint: removed.fingerprint,
      })
      if (o.json) out(JSON.stringify({ removed: removed.id, fingerprint: removed.fingerprint, sessions_ended: null }))
      else out(`removed ${removed.id} ${removed.fingerprint}`)
    })
  ssh
    .command('host-key')
    .description("the gateway's SSH host key as a known_hosts line")
    .addOption(configOption())
    .option('--json', 'print {key, address, known_hosts}')
    .action((o: { config?: string; json?: boolean }) => {
      const config = resolveConfig(o.config)
      const file = join(config.dataDir, 'plugins', 'ssh', 'ssh_host_ed25519_key.pub')
      if (!existsSync(file)) throw new CliError(`${file} does not exist yet: it is created when the gateway first starts with listen.ssh`)
      const key = readFileSync(file, 'utf8').trim()
      // The address callers use: the running gateway's real one (port 0 in the config picks one).
      const run = runningServer(config)?.listeners.ssh
      const l = config.listen.ssh
      const at = run ? { host: run.slice(0, run.lastIndexOf(':')), port: Number(run.slice(run.lastIndexOf(':') + 1)) } : l
      const line = at ? `${at.port === 22 ? at.host : `[${at.host}]:${at.port}`} ${key}` : key
      out(o.json ? JSON.stringify({ key, address: at ? `${at.host}:${at.port}` : null, known_hosts: line }) : line)
    })
}
