// The built-in SSH proxy plugin, on exactly the ProxyPlugin interface a third party would use.
// Callers log in as the connection name with a Gatehouse token as the password; the gateway logs
// in to the target with the connection's key (which never leaves the gateway) after checking the
// target's pinned host key. See README.md in this folder.

import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer, type Socket } from 'node:net'
import { join } from 'node:path'
import ssh2 from 'ssh2'
import { z } from 'zod'
import { GatehouseError } from '../kit/index.js'
import { type PluginContext, PLUGIN_CONTRACT, type ProxyHandle, type ProxyPlugin } from '../types.js'
import { PendingConnections } from './admission.js'
import { LOGIN_GRACE_MS, type SshShared, SshConnection } from './connection.js'
import { parseHostKeyPin } from './upstream.js'
import { envSettingProblems } from './env.js'

const { Server, utils } = ssh2

export { HANDSHAKE_TIMEOUT_MS, MAX_PENDING_AUTH, MAX_PENDING_PER_SOURCE } from './admission.js'
/** SSH connections open at once on the listener. */
export const MAX_CONNECTIONS = 1024
const KNOWN_KEYS = ['user', 'private_key', 'password', 'host_key', 'record', 'record_input', 'env']

/** The keys of a `protocol: ssh` connection, in the configuration's schema. */
export const sshConnectionSchema = z
  .strictObject(
    {
      user: z
        .string({ error: 'the user to log in as on the target is required' })
        .min(1, { error: 'the user to log in as on the target is required' }),
      // Secret references (env:NAME or file:PATH): the gateway checks them for every plugin's secretKeys.
      private_key: z.string({ error: 'must be a secret reference (env:NAME or file:PATH)' }).optional(),
      password: z.string({ error: 'must be a secret reference (env:NAME or file:PATH)' }).optional(),
      host_key: z.unknown().refine((hk) => hk === 'trust-on-first-use' || parseHostKeyPin(hk) !== null, {
        // trust-on-first-use: the first key the target shows is remembered (hostkeys.ts).
        error: 'must be the target\'s public host key, e.g. "ssh-ed25519 AAAAC3Nza…" (ssh-keyscan prints it)',
      }),
      record: z.boolean({ error: 'must be true or false' }).optional(),
      record_input: z.boolean({ error: 'must be true or false' }).optional(),
      env: z.unknown().optional(),
    },
    {
      error: (iss) =>
        iss.code === 'unrecognized_keys' ? `unknown key for an ssh connection (allowed: ${KNOWN_KEYS.join(', ')})` : undefined,
    },
  )
  .superRefine(
    (c, ctx) => {
      if (typeof c !== 'object' || c === null) return
      if (c.private_key === undefined && c.password === undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['private_key'],
          message: 'an ssh connection needs private_key (or password): a secret reference',
        })
      }
      for (const p of envSettingProblems(c.env)) ctx.addIssue({ code: 'custom', path: ['env'], message: p.replace(/^env: /, '') })
    },
    { when: () => true },
  )

export const HOST_KEY_FILE = 'ssh_host_ed25519_key'

/** The gateway's SSH host key: generated once into the plugin's state directory, then reused. */
export function loadOrCreateHostKey(dir: string): { private: string; public: string } {
  const file = join(dir, HOST_KEY_FILE)
  if (!existsSync(file)) {
    const pair = utils.generateKeyPairSync('ed25519')
    writeFileSync(file, pair.private, { mode: 0o600, flag: 'wx' })
    writeFileSync(`${file}.pub`, `${pair.public}\n`, { mode: 0o644 })
  }
  const priv = readFileSync(file, 'utf8')
  const parsed = utils.parseKey(priv)
  if (parsed instanceof Error) throw new GatehouseError('GH_ERR_CONFIG', `${file}: not a usable SSH host key (${parsed.message})`)
  const key = Array.isArray(parsed) ? parsed[0] : parsed
  return { private: priv, public: `${key.type} ${key.getPublicSSH().toString('base64')}` }
}

export const sshPlugin: ProxyPlugin<Record<string, unknown>, 'recordings'> = {
  name: 'ssh',
  contract: PLUGIN_CONTRACT,
  capabilities: ['recordings'],
  secretKeys: ['private_key', 'password'],
  // Through a connector, the login key may stay with it: it signs the login (prover-agent.ts).
  provableSecretKeys: ['private_key'],
  actions: ['ssh.exec', 'ssh.shell', 'ssh.shell.command', 'ssh.sftp', 'ssh.forward'],

  connectionSchema: sshConnectionSchema,

  async start(ctx: PluginContext<'recordings'>): Promise<ProxyHandle> {
    const listen = ctx.listen
    if (!listen) return { address: null, stop: async () => undefined }
    const hostKey = loadOrCreateHostKey(ctx.stateDir)
    ctx.log.info({ host_key: hostKey.public }, 'ssh host key (for known_hosts)')
    // The TCP listener is ours, so connections are bounded before ssh2 sees a byte: at most
    // MAX_CONNECTIONS open, and not-yet-authenticated ones (even those that never send an SSH
    // banner) bounded overall and per source, with handshake and login deadlines (admission.ts).
    const pending = new PendingConnections(LOGIN_GRACE_MS)
    const sockets = new Set<Socket>()
    const shared: SshShared = {
      ctx,
      connections: new Set(),
      authenticated: (address) => pending.release(address),
      perPrincipal: new Map(),
    }
    const server = new Server({ hostKeys: [hostKey.private], ident: 'Gatehouse' }, (client, info) => {
      client.once('handshake', () => pending.handshaken(info.ip, info.port))
      new SshConnection(client, info, shared)
    })
    server.on('error', (err: Error) => ctx.log.warn({ err: err.message }, 'ssh listener error'))
    const tcp = createServer({ noDelay: true }, (socket) => {
      socket.on('error', () => undefined)
      if (sockets.size >= MAX_CONNECTIONS || !pending.admit(socket)) {
        ctx.log.warn({ client: socket.remoteAddress, pending: pending.size, open: sockets.size }, 'ssh connection dropped: too many')
        socket.destroy()
        return
      }
      sockets.add(socket)
      socket.on('close', () => sockets.delete(socket))
      server.injectSocket(socket)
    })
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void =>
        reject(
          new GatehouseError('GH_ERR_CONFIG', `listen.ssh ${listen.host}:${listen.port}: cannot listen (${err.code ?? err.message})`, {
            cause: err,
          }),
        )
      tcp.once('error', onError)
      tcp.listen(listen.port, listen.host, () => {
        tcp.off('error', onError)
        tcp.on('error', (err: Error) => ctx.log.warn({ err: err.message }, 'ssh listener error'))
        resolve()
      })
    })
    const a = tcp.address()
    return {
      address: a && typeof a === 'object' ? { host: a.address, port: a.port } : null,
      async stop(reason) {
        tcp.close()
        for (const c of [...shared.connections]) c.close(reason)
        for (const s of sockets) s.destroy()
      },
    }
  },
}
