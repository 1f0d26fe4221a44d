// One caller's SSH connection: authenticate with a Gatehouse token (password or
// keyboard-interactive) or a registered public key, open the Gatehouse session, and once admitted
// connect upstream (upstream.ts) and hand each request to its handler: session channels
// (channel.ts), port forwards (forward.ts). Deny by default: a request with no handler here
// (streamlocal forwarding, unknown global requests) is rejected. Also the connection's end.

import { createHash } from 'node:crypto'
import ssh2 from 'ssh2'
import type {
  AuthContext,
  AuthenticationType,
  Connection,
  PublicKeyAuthContext,
  ServerChannel,
  ClientInfo as SshClientInfo,
  TcpipBindInfo,
} from 'ssh2'
import type { OpenSessionRequest, PluginContext, ProxySession } from '../types.js'
import { type Admitted, once, SESSION_ENDED } from './admitted.js'
import { handleSession } from './channel.js'
import { Forwards } from './forward.js'
import { disconnectWithReason } from './refusal.js'
import { Target } from './upstream.js'

const { utils } = ssh2

/** Authentication methods offered to callers. */
const METHODS: AuthenticationType[] = ['publickey', 'password', 'keyboard-interactive']

/** Session channels open at once per SSH connection (OpenSSH's MaxSessions default is 10). */
export const MAX_CHANNELS = 10
/** SSH connections open at once per root principal (a person and every agent acting for them). */
export const MAX_CONNECTIONS_PER_PRINCIPAL = 32
/** Failed authentication attempts before the connection is closed (OpenSSH MaxAuthTries is 6). */
export const MAX_AUTH_TRIES = 3
/** Time a caller has to authenticate (OpenSSH LoginGraceTime is 120 s). */
export const LOGIN_GRACE_MS = 30_000
/** Time a caller has to close the channels told why the connection ends, before it is cut. */
export const CLOSE_GRACE_MS = 2_000

export interface SshShared {
  readonly ctx: PluginContext<'recordings'>
  readonly connections: Set<SshConnection>
  /** Tells the listener that the caller at `address` authenticated (it stops counting as pending). */
  authenticated(address: string): void
  /** Open SSH connections per root principal (bounded by MAX_CONNECTIONS_PER_PRINCIPAL). */
  readonly perPrincipal: Map<string, number>
}

export class SshConnection {
  /** The caller's session and the root principal it counts against, once admitted. */
  private admission: { readonly session: ProxySession; readonly principal: string } | null = null
  /** The target connection, once ssh2 reports the admitted caller ready. */
  private target: Target | null = null
  /** Channels that run something, told and closed when the connection ends. */
  private readonly channels = new Set<ServerChannel>()
  private failures = 0
  /** Session channels open (requested or running), bounded by MAX_CHANNELS. */
  private sessionChannels = 0
  private authenticating = false
  private closed = false
  private readonly grace: NodeJS.Timeout
  private readonly address: string

  constructor(
    private readonly client: Connection,
    info: SshClientInfo,
    private readonly shared: SshShared,
  ) {
    this.address = `${info.ip}:${info.port}`
    shared.connections.add(this)
    this.grace = setTimeout(() => this.close('authentication timed out'), LOGIN_GRACE_MS)
    this.grace.unref()
    client.on('error', (err: Error) => {
      shared.ctx.log.debug({ client: this.address, err: err.message }, 'ssh client error')
      this.close('client error')
    })
    client.on('close', () => this.close('client closed'))
    client.on('end', () => this.close('client closed'))
    client.on('authentication', (actx) => {
      this.authenticate(actx).catch((err: unknown) => {
        shared.ctx.log.warn({ client: this.address, err: String(err) }, 'ssh authentication failed')
        this.close('authentication failed')
      })
    })
    client.on('ready', () => this.ready())
  }

  private async authenticate(actx: AuthContext): Promise<void> {
    if (this.closed) return
    // One authentication in flight per connection: the engine is asked once at a time.
    if (this.authenticating || this.admission) {
      actx.reject(METHODS)
      return
    }
    if (actx.method === 'publickey') {
      await this.authenticateKey(actx)
      return
    }
    let token: string | null = null
    if (actx.method === 'password') token = actx.password
    else if (actx.method === 'keyboard-interactive') {
      this.authenticating = true
      token = await new Promise<string | null>((resolve) => {
        actx.prompt([{ prompt: 'Password: ', echo: false }], 'Gatehouse', 'Enter your Gatehouse token', (answers) =>
          resolve(answers[0] ?? null),
        )
      })
      this.authenticating = false
    }
    if (token === null || token === '') {
      actx.reject(METHODS)
      return
    }
    await this.admit(actx, { credential: token, connection: actx.username, client: { address: this.address, user: actx.username } })
  }

  /**
   * Public-key login: a query (no signature yet) is answered "acceptable" for any well-formed key,
   * so which keys are registered cannot be probed; a signed attempt is verified with ssh2 against
   * the key it names, and only then does the engine look the key up (`publicKey`).
   */
  private async authenticateKey(actx: PublicKeyAuthContext): Promise<void> {
    const parsed = utils.parseKey(actx.key.data)
    const key = Array.isArray(parsed) ? parsed[0] : parsed
    if (!key || key instanceof Error || key.type !== actx.key.algo.replace(/^rsa-sha2-(256|512)$/, 'ssh-rsa')) {
      actx.reject(METHODS)
      return
    }
    if (!actx.signature || !actx.blob) {
      actx.accept()
      return
    }
    if (key.verify(actx.blob, actx.signature, actx.hashAlgo) !== true) {
      this.failed(actx)
      return
    }
    this.authenticating = true
    await this.admit(actx, {
      credential: '',
      publicKey: { fingerprint: fingerprintOf(actx.key.data) },
      connection: actx.username,
      client: { address: this.address, user: actx.username },
    })
  }

  private failed(actx: AuthContext): void {
    this.failures++
    actx.reject(METHODS)
    if (this.failures >= MAX_AUTH_TRIES) this.close('too many failed authentications')
  }

  /** Ends the login with `reason` for the caller to read; a plain failure if that cannot be sent. */
  private refuse(actx: AuthContext, reason: string): void {
    if (disconnectWithReason(this.client, `gatehouse: ${reason}`)) this.close(`login refused: ${reason}`)
    else this.failed(actx)
  }

  /** Opens the Gatehouse session for a caller who presented a token or a verified key. */
  private async admit(actx: AuthContext, req: OpenSessionRequest): Promise<void> {
    this.authenticating = true
    const r = await this.shared.ctx.openSession(req)
    this.authenticating = false
    if (this.closed) {
      if (r.ok) r.session.end('client left during authentication')
      return
    }
    if (!r.ok) {
      // A caller whose credential failed is told only that (and may retry); an identified one is
      // told why (policy, a connector that is not connected, an unknown connection): the public
      // message, as a PostgreSQL client reads it.
      if (r.error.code === 'GH_ERR_AUTH') this.failed(actx)
      else this.refuse(actx, r.error.publicMessage)
      return
    }
    // Sessions are bounded per caller: the root of the chain, so agents share their root's quota.
    const root = r.session.identity.chain[0]?.id ?? ''
    const open = this.shared.perPrincipal.get(root) ?? 0
    if (open >= MAX_CONNECTIONS_PER_PRINCIPAL) {
      this.shared.ctx.log.warn({ principal: root, open }, 'ssh session refused: too many open for this principal')
      const why = `too many open SSH sessions for ${root} (at most ${MAX_CONNECTIONS_PER_PRINCIPAL})`
      r.session.end(why)
      this.refuse(actx, why)
      return
    }
    this.shared.perPrincipal.set(root, open + 1)
    this.admission = { session: r.session, principal: root }
    r.session.onTerminate((reason) => this.close(reason))
    clearTimeout(this.grace)
    this.shared.authenticated(this.address)
    actx.accept()
  }

  private ready(): void {
    const session = this.admission?.session
    if (!session) {
      this.close('not authenticated')
      return
    }
    const ctx = this.shared.ctx
    // Identify first, then reach the target: no byte goes upstream before this point.
    const target = new Target(ctx, session, {
      incoming: (d, accept, reject) => forwards.incoming(d, accept, reject),
      lost: (reason) => this.close(reason),
    })
    this.target = target
    const channels = this.channels
    const connection = this
    const admitted: Admitted = {
      ctx,
      session,
      target,
      get closed() {
        return connection.closed
      },
      close: (reason) => this.close(reason),
      track: (stream) => channels.add(stream),
      untrack: (stream) => channels.delete(stream),
    }
    const forwards = new Forwards(admitted, this.client)
    this.client.on('session', (accept, reject) => {
      if (this.closed || this.sessionChannels >= MAX_CHANNELS) {
        // After a kill or a refusal the connection stays up for the caller to read the channels'
        // last words (CLOSE_GRACE_MS): nothing opened then may run, and the attempt is on record.
        if (this.closed) session.auditLater({ type: 'result', action: 'ssh.channel', channel: 'session', error: SESSION_ENDED })
        reject()
        return
      }
      this.sessionChannels++
      const s = accept()
      s.once('close', () => this.sessionChannels--)
      handleSession(admitted, s)
    })
    this.client.on('tcpip', (accept, reject, info) => {
      forwards.local(accept, reject, info).catch((err: unknown) => {
        ctx.log.warn({ session: session.id, err: String(err) }, 'ssh forward failed')
      })
    })
    this.client.on('request', (accept, reject, name, info) => {
      if (name === 'tcpip-forward' || name === 'cancel-tcpip-forward') {
        forwards.remoteRequest(name, accept, reject, info as TcpipBindInfo).catch((err: unknown) => {
          ctx.log.warn({ session: session.id, err: String(err) }, 'ssh remote forward failed')
          once(reject)
        })
      } else once(reject)
    })
  }

  /** Ends the connection, its channels and the upstream; records the session's end. Idempotent. */
  close(reason: string): void {
    if (this.closed) return
    this.closed = true
    clearTimeout(this.grace)
    const admission = this.admission
    if (admission !== null) {
      const n = (this.shared.perPrincipal.get(admission.principal) ?? 1) - 1
      if (n > 0) this.shared.perPrincipal.set(admission.principal, n)
      else this.shared.perPrincipal.delete(admission.principal)
    }
    this.shared.connections.delete(this)
    const told: ServerChannel[] = []
    for (const c of this.channels) {
      try {
        c.stderr.write(`\r\ngatehouse: session ended: ${reason}\r\n`)
        c.exit(255)
        c.close()
        told.push(c)
      } catch {
        // the channel is already gone
      }
    }
    this.channels.clear()
    this.target?.end()
    admission?.session.end(reason)
    // A disconnect sent with the channels' last words can overtake them: OpenSSH exits on it
    // without writing out the stderr it has already read. The connection ends once the caller
    // has closed those channels (OpenSSH then leaves by itself), or after CLOSE_GRACE_MS.
    let timer: NodeJS.Timeout | undefined
    const end = (): void => {
      clearTimeout(timer)
      try {
        this.client.end()
      } catch {
        // already closed
      }
    }
    if (told.length === 0) {
      end()
      return
    }
    timer = setTimeout(end, CLOSE_GRACE_MS)
    timer.unref()
    let open = told.length
    for (const c of told) {
      c.once('close', () => {
        if (--open === 0) end()
      })
    }
  }
}

/** `SHA256:…` of a key blob, as `ssh-keygen -l` prints it (and the engine stores keys by). */
function fingerprintOf(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`
}
