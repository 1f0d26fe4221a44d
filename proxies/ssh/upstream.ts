// The target side of one admitted caller: the upstream SSH connection, made with the connection's
// key after the target's host key matched the pinned (or first-trusted) one, and the gateway's own
// SFTP channel on it. Nothing here runs before the caller is identified: a Target is created only
// once the caller's session is open.

import { timingSafeEqual } from 'node:crypto'
import type { Socket } from 'node:net'
import ssh2 from 'ssh2'
import type { AcceptConnection, ClientChannel, RejectConnection, SFTPWrapper, TcpConnectionDetails } from 'ssh2'
import type { ProxyContext, ProxySession } from '../types.js'
import { rememberedHostKey, rememberHostKey, TOFU_FILE } from './hostkeys.js'
import { sftpTargetFs, type TargetFs } from './sftp-paths.js'
import { handshakeSlot } from './upstream-limit.js'
import { ConnectorKeyAgent } from './prover-agent.js'
import { isGatehouseError } from '../kit/index.js'

const { Client } = ssh2

export type SshClient = InstanceType<typeof Client>

/** Time to reach and authenticate to the target. */
export const UPSTREAM_TIMEOUT_MS = 15_000

/** Handshakes tried per caller session when the target drops or stalls one before authentication. */
export const UPSTREAM_ATTEMPTS = 3

interface HostKeyPin {
  readonly type: string
  readonly blob: Buffer
}

/** Parses a pinned `host_key: "ssh-ed25519 AAAA…"`; null when it is not of that form. */
export function parseHostKeyPin(v: unknown): HostKeyPin | null {
  if (typeof v !== 'string') return null
  const m = /^(ssh-ed25519|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521|ssh-rsa)\s+([A-Za-z0-9+/]+={0,2})(\s.*)?$/.exec(
    v.trim(),
  )
  if (!m) return null
  const blob = Buffer.from(m[2] as string, 'base64')
  // The blob starts with its own type name: a pin whose body disagrees with its label is no pin.
  const len = blob.length >= 4 ? blob.readUInt32BE(0) : -1
  if (len <= 0 || blob.subarray(4, 4 + len).toString('latin1') !== m[1]) return null
  return { type: m[1] as string, blob }
}

function hostKeyAlgorithms(type: string): string[] {
  return type === 'ssh-rsa' ? ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'] : [type]
}

export type Upstream = { ok: true; client: SshClient } | { ok: false; message: string }
/** One handshake's outcome; `transient` when the target dropped or stalled it before judging anything. */
type Attempt = { ok: true; client: SshClient } | { ok: false; message: string; transient: boolean }

/** What the target connection tells the caller's connection. */
export interface TargetEvents {
  /** A connection arrived on a port the target listens on for the caller (`ssh -R`). */
  incoming(d: TcpConnectionDetails, accept: AcceptConnection<ClientChannel>, reject: RejectConnection): void
  /** The target connection failed or closed after it was up: the caller's connection ends. */
  lost(reason: string): void
}

export class Target {
  /** The upstream connection once its handshake settled; never rejects (a failure is `ok: false`). */
  readonly ready: Promise<Upstream>
  private client: SshClient | null = null
  private sftpChannel: Promise<SFTPWrapper> | null = null
  private fsChannel: Promise<TargetFs> | null = null
  private ended = false

  constructor(
    private readonly ctx: ProxyContext,
    private readonly session: ProxySession,
    private readonly events: TargetEvents,
  ) {
    this.ready = this.connect()
  }

  /** Ends the upstream connection, if it was made. */
  end(): void {
    this.ended = true
    this.client?.end()
  }

  private async connect(): Promise<Upstream> {
    const { ctx, session } = this
    const name = session.connection.name
    // A handshake that timed out or whose connection dropped before authentication is tried again:
    // nothing of the caller's has reached the target yet, and a busy target (sshd's MaxStartups,
    // a slow fork under load) refuses a burst now and then that it accepts a moment later.
    for (let attempt = 1; ; attempt++) {
      // Read again each time: a key first trusted by the failed attempt is now the pin.
      const key = this.hostKey()
      if (!key.ok) return key
      const r = await this.attempt(name, key.pin, key.tofu)
      if (r.ok || !r.transient || attempt >= UPSTREAM_ATTEMPTS || this.ended) return r.ok ? r : { ok: false, message: r.message }
      ctx.log.warn({ session: session.id, connection: name, attempt }, 'ssh target handshake failed before authentication; trying again')
      await new Promise((resolve) => setTimeout(resolve, 250 * attempt))
    }
  }

  /** The key the target must present: pinned, remembered, or none yet (trust on first use). */
  private hostKey(): { ok: true; pin: HostKeyPin | null; tofu: boolean } | { ok: false; message: string } {
    const { ctx, session } = this
    const name = session.connection.name
    const tofu = session.settings.host_key === 'trust-on-first-use'
    let remembered: string | null = null
    try {
      remembered = tofu ? rememberedHostKey(ctx.stateDir, name) : null
    } catch (err) {
      return {
        ok: false,
        message: `the remembered host keys cannot be read: ${err instanceof Error ? err.message : String(err)}; refusing to connect (an operator must fix ${TOFU_FILE})`,
      }
    }
    const pin = parseHostKeyPin(tofu ? remembered : session.settings.host_key)
    if (!pin && !tofu) return { ok: false, message: 'the connection has no valid pinned host key' }
    // A remembered key that does not parse fails closed: trusting on first use again would trust any key.
    if (!pin && remembered !== null) {
      return {
        ok: false,
        message: `the host key remembered for ${name} in ${TOFU_FILE} cannot be read; refusing to connect (an operator must fix or remove its line)`,
      }
    }
    return { ok: true, pin, tofu }
  }

  /** One dial and handshake; `transient` when it failed before the target judged anything. */
  private async attempt(name: string, pin: HostKeyPin | null, tofu: boolean): Promise<Attempt> {
    const { ctx, session } = this
    const stateDir = ctx.stateDir
    const release = await handshakeSlot(name)
    let sock: Socket
    try {
      sock = await ctx.dial(session.target)
    } catch (err) {
      release()
      ctx.log.warn({ session: session.id, err: String(err) }, 'cannot reach the ssh target')
      return { ok: false, message: `cannot reach ${session.connection.name}`, transient: false }
    }
    const upstream = new Client()
    this.client = upstream
    upstream.on('tcp connection', (d, accept, reject) => this.events.incoming(d, accept, reject))
    let mismatch = false
    return new Promise((resolve) => {
      let settled = false
      const done = (r: Attempt): void => {
        if (settled) return
        settled = true
        release()
        if (!r.ok) upstream.end()
        resolve(r)
      }
      let isUp = false
      upstream.on('ready', () => {
        isUp = true
        done({ ok: true, client: upstream })
      })
      upstream.on('error', (err: Error & { level?: string }) => {
        // After the upstream was up, its failure ends the caller's connection; before, the
        // failure is told on the caller's channel (channel.ts) and the connection closed there.
        if (mismatch) {
          done({
            ok: false,
            transient: false,
            message: tofu
              ? `the host key of ${name} changed since it was first trusted; refusing to connect (an operator must remove its line from ${TOFU_FILE})`
              : `the host key of ${name} does not match the key pinned in the gateway's configuration; refusing to connect`,
          })
        } else {
          ctx.log.warn({ session: session.id, err: err.message }, 'ssh target connection failed')
          const transient =
            err.level === 'client-timeout' || err.level === 'client-socket' || err.message === 'Connection lost before handshake'
          const why =
            err.level === 'client-timeout'
              ? ': the SSH handshake timed out'
              : transient
                ? ': the target closed the connection before the SSH handshake'
                : ''
          // A connector that would not sign with the key it keeps says why (never the key).
          const refused = isGatehouseError(err) && err.code === 'GH_ERR_SECRET' ? `: ${err.publicMessage}` : why
          done({ ok: false, message: `cannot log in to ${session.connection.name}${refused}`, transient })
        }
        if (isUp) this.events.lost('target connection failed')
      })
      upstream.on('close', () => {
        // A close before any error or readiness is a target that dropped the connection unjudged.
        done({ ok: false, message: `${session.connection.name} closed the connection`, transient: true })
        if (isUp) this.events.lost('target closed the connection')
      })
      const privateKey = session.secrets.get('private_key')
      const password = session.secrets.get('password')
      // A key the connector keeps is used through it, as an agent: it signs, the gateway never holds it.
      const keyProver = session.provers?.get('private_key')
      upstream.connect({
        sock,
        username: typeof session.settings.user === 'string' ? session.settings.user : '',
        ...(privateKey !== undefined ? { privateKey } : {}),
        ...(keyProver !== undefined ? { agent: new ConnectorKeyAgent(keyProver) } : {}),
        ...(password !== undefined ? { password } : {}),
        readyTimeout: UPSTREAM_TIMEOUT_MS,
        ...(pin ? { algorithms: { serverHostKey: hostKeyAlgorithms(pin.type) as never } } : {}),
        hostVerifier: (key: Buffer) => {
          if (!pin) {
            const k = rememberHostKey(stateDir, name, key)
            ctx.log.warn({ session: session.id, connection: name, host_key: k }, 'ssh target host key trusted on first use')
            return true
          }
          const ok = key.length === pin.blob.length && timingSafeEqual(key, pin.blob)
          if (!ok) {
            mismatch = true
            ctx.log.warn({ session: session.id, connection: session.connection.name }, 'ssh target host key mismatch')
          }
          return ok
        },
      })
    })
  }

  /**
   * The gateway's own SFTP channel to the target, opened on first use: where paths are resolved
   * (REALPATH) and legacy scp transfers are carried out. A failure is not cached.
   */
  fs(): Promise<TargetFs> {
    if (this.fsChannel) return this.fsChannel
    const p = this.sftp().then(sftpTargetFs)
    this.fsChannel = p
    p.catch(() => {
      if (this.fsChannel === p) this.fsChannel = null
    })
    return p
  }

  sftp(): Promise<SFTPWrapper> {
    if (this.sftpChannel) return this.sftpChannel
    const p = (async () => {
      const u = await this.ready
      if (!u.ok) throw new Error(u.message)
      return new Promise<SFTPWrapper>((resolve, reject) => {
        u.client.sftp((err, sftp) => {
          if (err) return reject(err)
          sftp.on('close', () => {
            if (this.sftpChannel === p) {
              this.sftpChannel = null
              this.fsChannel = null
            }
          })
          resolve(sftp)
        })
      })
    })()
    this.sftpChannel = p
    p.catch(() => {
      if (this.sftpChannel === p) this.sftpChannel = null
    })
    return p
  }
}

/** The exit status or signal of each upstream channel, recorded from the moment it opens. */
const exits = new WeakMap<ClientChannel, { status: number | null; signal: string | null }>()

/** How an upstream channel ended: its exit status, or the signal that killed it (both null if neither came). */
export function exitOf(ch: ClientChannel): { status: number | null; signal: string | null } {
  const exit = exits.get(ch)
  return { status: exit?.status ?? null, signal: exit?.signal ?? null }
}

/** Opens an upstream channel (exec, shell, subsystem) and starts listening for its exit at once. */
export function channelOf(open: (cb: (err: Error | undefined, ch: ClientChannel) => void) => void): Promise<ClientChannel> {
  return new Promise((resolve, reject) => {
    open((err, ch) => {
      if (err) return reject(err)
      // Listened to at once: a fast command's exit status can arrive in the same read as the
      // channel's confirmation, and ssh2 emits it before any code awaiting this promise runs.
      const exit: { status: number | null; signal: string | null } = { status: null, signal: null }
      exits.set(ch, exit)
      ch.on('exit', (code: number | null, sig?: string) => {
        if (typeof code === 'number') exit.status = code
        else if (typeof sig === 'string') exit.signal = sig
      })
      resolve(ch)
    })
  })
}
