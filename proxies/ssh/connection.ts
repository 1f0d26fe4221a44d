// One caller's SSH connection: authenticate with a Gatehouse token (password or
// keyboard-interactive), open the Gatehouse session, connect upstream with the connection's key
// and pinned host key, then decide, audit and bridge each channel request. Deny by default: a
// request with no handler here (X11, agent forwarding, port forwarding, global requests) is
// rejected by ssh2.

import { timingSafeEqual } from 'node:crypto'
import type { Socket } from 'node:net'
import ssh2 from 'ssh2'
import type { AuthContext, ClientChannel, Connection, PseudoTtyInfo, ServerChannel, Session, ClientInfo as SshClientInfo } from 'ssh2'
import type { Decision, ProxyContext, ProxySession, TerminalRecording } from '../types.js'
import { analyzeExec, type ExecCommand, scpTransfer } from './command.js'
import { rememberedHostKey, rememberHostKey, TOFU_FILE } from './hostkeys.js'
import { SftpObserver } from './sftp.js'

const { Client } = ssh2

/** Session channels open at once per SSH connection (OpenSSH's MaxSessions default is 10). */
export const MAX_CHANNELS = 10
/** Failed authentication attempts before the connection is closed (OpenSSH MaxAuthTries is 6). */
export const MAX_AUTH_TRIES = 3
/** Time a caller has to authenticate (OpenSSH LoginGraceTime is 120 s). */
export const LOGIN_GRACE_MS = 30_000
/** Time to reach and authenticate to the target. */
export const UPSTREAM_TIMEOUT_MS = 15_000
/** Environment variables passed on to the target (it applies its own AcceptEnv too). */
const ENV_ALLOWED = /^(LANG|LC_[A-Z]+|TERM|TZ)$/
const MAX_ENV = 32

export interface SshShared {
  readonly ctx: ProxyContext
  readonly connections: Set<SshConnection>
  /** Tells the listener that the caller at `address` authenticated (it stops counting as pending). */
  authenticated(address: string): void
}

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

type Upstream = { ok: true; client: InstanceType<typeof Client> } | { ok: false; message: string }

export class SshConnection {
  private session: ProxySession | null = null
  private upstream: Promise<Upstream> | null = null
  private upstreamClient: InstanceType<typeof Client> | null = null
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
    if (this.authenticating || this.session) {
      actx.reject(['password', 'keyboard-interactive'])
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
      actx.reject(['password', 'keyboard-interactive'])
      return
    }
    this.authenticating = true
    const r = await this.shared.ctx.openSession({
      credential: token,
      connection: actx.username,
      client: { address: this.address, user: actx.username },
    })
    this.authenticating = false
    if (this.closed) {
      if (r.ok) r.session.end('client left during authentication')
      return
    }
    if (!r.ok) {
      this.failures++
      actx.reject(['password', 'keyboard-interactive'])
      if (this.failures >= MAX_AUTH_TRIES) this.close('too many failed authentications')
      return
    }
    this.session = r.session
    this.session.onTerminate((reason) => this.close(reason))
    clearTimeout(this.grace)
    this.shared.authenticated(this.address)
    actx.accept()
  }

  private ready(): void {
    const session = this.session
    if (!session) {
      this.close('not authenticated')
      return
    }
    // Identify first, then reach the target: no byte goes upstream before this point.
    this.upstream = this.connectUpstream(session)
    this.client.on('session', (accept, reject) => {
      if (this.closed || this.sessionChannels >= MAX_CHANNELS) {
        reject()
        return
      }
      this.sessionChannels++
      const s = accept()
      s.once('close', () => this.sessionChannels--)
      this.handleSession(s, session)
    })
  }

  private async connectUpstream(session: ProxySession): Promise<Upstream> {
    const stateDir = this.shared.ctx.stateDir
    const name = session.connection.name
    const tofu = session.settings.host_key === 'trust-on-first-use'
    const pin = parseHostKeyPin(tofu ? rememberedHostKey(stateDir, name) : session.settings.host_key)
    if (!pin && !tofu) return { ok: false, message: 'the connection has no valid pinned host key' }
    let sock: Socket
    try {
      sock = await this.shared.ctx.dial(session.target)
    } catch (err) {
      this.shared.ctx.log.warn({ session: session.id, err: String(err) }, 'cannot reach the ssh target')
      return { ok: false, message: `cannot reach ${session.connection.name}` }
    }
    const upstream = new Client()
    this.upstreamClient = upstream
    let mismatch = false
    return new Promise<Upstream>((resolve) => {
      let settled = false
      const done = (r: Upstream): void => {
        if (settled) return
        settled = true
        if (!r.ok) upstream.end()
        resolve(r)
      }
      let isUp = false
      upstream.on('ready', () => {
        isUp = true
        done({ ok: true, client: upstream })
      })
      upstream.on('error', (err: Error) => {
        // After the upstream was up, its failure ends the caller's connection; before, the
        // failure is told on the caller's channel (run) and the connection closed there.
        if (mismatch) {
          done({
            ok: false,
            message: tofu
              ? `the host key of ${name} changed since it was first trusted; refusing to connect (an operator must remove its line from ${TOFU_FILE})`
              : `the host key of ${name} does not match the key pinned in the gateway's configuration; refusing to connect`,
          })
        } else {
          this.shared.ctx.log.warn({ session: session.id, err: err.message }, 'ssh target connection failed')
          done({ ok: false, message: `cannot log in to ${session.connection.name}` })
        }
        if (isUp) this.close('target connection failed')
      })
      upstream.on('close', () => {
        done({ ok: false, message: `${session.connection.name} closed the connection` })
        if (isUp) this.close('target closed the connection')
      })
      const privateKey = session.secrets.get('private_key')
      const password = session.secrets.get('password')
      upstream.connect({
        sock,
        username: typeof session.settings.user === 'string' ? session.settings.user : '',
        ...(privateKey !== undefined ? { privateKey } : {}),
        ...(password !== undefined ? { password } : {}),
        readyTimeout: UPSTREAM_TIMEOUT_MS,
        ...(pin ? { algorithms: { serverHostKey: hostKeyAlgorithms(pin.type) as never } } : {}),
        hostVerifier: (key: Buffer) => {
          if (!pin) {
            const k = rememberHostKey(stateDir, name, key)
            this.shared.ctx.log.warn({ session: session.id, connection: name, host_key: k }, 'ssh target host key trusted on first use')
            return true
          }
          const ok = key.length === pin.blob.length && timingSafeEqual(key, pin.blob)
          if (!ok) {
            mismatch = true
            this.shared.ctx.log.warn({ session: session.id, connection: session.connection.name }, 'ssh target host key mismatch')
          }
          return ok
        },
      })
    })
  }

  /** Ends a channel with a message on stderr and an exit status, the way a refused command would. */
  private refuse(stream: ServerChannel, message: string, status = 126): void {
    if (stream.destroyed) return
    stream.stderr.write(`gatehouse: ${message}\r\n`)
    stream.exit(status)
    stream.end()
  }

  private handleSession(s: Session, session: ProxySession): void {
    let pty: PseudoTtyInfo | null = null
    const env: Record<string, string> = {}
    let used = false
    let up: ClientChannel | null = null
    let recording: TerminalRecording | null = null
    s.on('pty', (accept, reject, info) => {
      if (used || !accept) return reject?.()
      pty = { ...info, cols: Math.min(info.cols, 1000), rows: Math.min(info.rows, 1000) }
      accept()
    })
    s.on('env', (accept, reject, info) => {
      if (!used && ENV_ALLOWED.test(info.key) && Object.keys(env).length < MAX_ENV && info.val.length < 256) {
        env[info.key] = info.val
        accept?.()
      } else reject?.()
    })
    s.on('window-change', (accept, _reject, info) => {
      accept?.()
      const cols = Math.min(info.cols, 1000)
      const rows = Math.min(info.rows, 1000)
      up?.setWindow(rows, cols, info.height, info.width)
      recording?.resize(cols, rows)
    })
    s.on('signal', (accept, _reject, info) => {
      accept?.()
      up?.signal(info.name)
    })
    const start = async (
      accept: () => ServerChannel,
      kind: 'exec' | 'shell' | 'sftp',
      action: string,
      command: Record<string, unknown>,
      open: (c: InstanceType<typeof Client>) => Promise<ClientChannel>,
    ): Promise<void> => {
      used = true
      try {
        await run(accept, kind, action, command, open)
      } catch (err) {
        this.shared.ctx.log.warn({ session: session.id, err: String(err) }, 'ssh channel failed')
        this.close('internal error')
      }
    }
    const run = async (
      accept: () => ServerChannel,
      kind: 'exec' | 'shell' | 'sftp',
      action: string,
      command: Record<string, unknown>,
      open: (c: InstanceType<typeof Client>) => Promise<ClientChannel>,
    ): Promise<void> => {
      const stream = accept()
      this.channels.add(stream)
      stream.on('close', () => {
        this.channels.delete(stream)
        up?.close()
      })
      stream.on('error', () => undefined)
      const text = typeof command.command === 'string' ? command.command : kind
      let decision: Decision
      try {
        decision = await session.decide(action, command)
      } catch (err) {
        this.shared.ctx.log.warn({ session: session.id, err: String(err) }, 'ssh command refused: no decision')
        this.refuse(stream, 'refused: the gateway could not decide this command')
        return
      }
      try {
        await session.audit({
          type: 'statement',
          action,
          command: text,
          ...(command.argv !== undefined ? { argv: command.argv } : {}),
          ...(command.opaque === true ? { opaque: true, opaque_reason: command.opaque_reason } : {}),
          decision: decision.effect,
          rules: decision.rules,
          policy_version: decision.policy,
          ...(decision.effect === 'deny' ? { reason: decision.reason } : {}),
        })
      } catch {
        this.refuse(stream, 'refused: the gateway could not record this command')
        return
      }
      if (decision.effect === 'deny') {
        this.refuse(stream, `denied: ${decision.reason}`)
        return
      }
      if (decision.effect === 'hold') {
        this.refuse(stream, `held: this command needs an approval (${decision.approvers.join(', ') || 'an approver'})`)
        return
      }
      const u: Upstream = (await this.upstream) ?? { ok: false, message: 'no target' }
      if (!u.ok) {
        this.refuse(stream, u.message, 255)
        // Closed once the message is out: a disconnect sent now could overtake it.
        stream.once('close', () => this.close('target unavailable'))
        return
      }
      if (stream.destroyed || this.closed) return
      try {
        up = await open(u.client)
      } catch (err) {
        this.refuse(stream, `the target refused the ${kind}: ${err instanceof Error ? err.message : String(err)}`, 255)
        return
      }
      const t0 = process.hrtime.bigint()
      // Terminals (a PTY) are recorded as asciicast; a plain exec or a file transfer is recorded
      // as its command, exit status and byte counts (the `result` event), never its bytes.
      if ((kind === 'shell' || pty !== null) && action !== 'ssh.sftp' && this.recordingOn(session)) {
        const p = pty as PseudoTtyInfo | null
        recording = this.shared.ctx.recordTerminal(session, {
          cols: p?.cols || 80,
          rows: p?.rows || 24,
          title: `${session.connection.name}: ${text}`,
          env: { TERM: p?.term ?? env.TERM ?? 'dumb', SHELL: kind },
          recordInput: session.settings.record_input === true,
        })
        if (kind === 'exec') recording?.marker(text)
      }
      if (kind === 'sftp') {
        // File operations are recorded (not yet decided one by one: ssh.sftp is decided per session).
        const observer = new SftpObserver(
          (op) => session.auditLater({ type: 'result', action: 'ssh.sftp', ...op }),
          (why) => session.auditLater({ type: 'result', action: 'ssh.sftp', operation: 'unobserved', reason: why }),
        )
        stream.on('data', (d: Buffer) => observer.push(d))
      }
      this.bridge(stream, up, session, action, text, t0, recording)
    }
    s.on('exec', (accept, reject, info) => {
      if (used || !accept) return reject?.()
      const cmd: ExecCommand = analyzeExec(info.command)
      const scp = scpTransfer(cmd)
      const p = pty
      void start(
        accept,
        'exec',
        scp ? 'ssh.sftp' : 'ssh.exec',
        scp ? { ...cmd, operation: `scp.${scp.operation}`, path: scp.path } : cmd,
        (c) => channelOf((cb) => c.exec(info.command, { env, ...(p ? { pty: p } : {}) }, cb)),
      )
    })
    s.on('shell', (accept, reject) => {
      if (used || !accept) return reject?.()
      const p = pty
      void start(accept, 'shell', 'ssh.shell', { pty: p !== null, term: p?.term ?? null }, (c) =>
        channelOf((cb) => (p ? c.shell(p, { env }, cb) : c.shell(false, { env }, cb))),
      )
    })
    s.on('subsystem', (accept, reject, info) => {
      if (used || !accept || info.name !== 'sftp') return reject?.()
      void start(accept, 'sftp', 'ssh.sftp', { operation: 'session', subsystem: 'sftp' }, (c) => channelOf((cb) => c.subsys('sftp', cb)))
    })
  }

  private recordingOn(session: ProxySession): boolean {
    return session.settings.record !== false
  }

  private bridge(
    stream: ServerChannel,
    up: ClientChannel,
    session: ProxySession,
    action: string,
    command: string,
    t0: bigint,
    recording: TerminalRecording | null,
  ): void {
    let bytesIn = 0
    let bytesOut = 0
    let bytesErr = 0
    let status: number | null = null
    let signal: string | null = null
    stream.on('data', (d: Buffer) => {
      bytesIn += d.length
      recording?.input(d)
    })
    up.on('data', (d: Buffer) => {
      bytesOut += d.length
      recording?.output(d)
    })
    up.stderr.on('data', (d: Buffer) => {
      bytesErr += d.length
      recording?.output(d)
    })
    // pipe() carries backpressure both ways: neither side's window is buffered without bound.
    // The caller's EOF goes upstream; the target's end is sent after its exit status (below),
    // since ending a channel whose peer already sent EOF closes it.
    stream.pipe(up)
    up.pipe(stream, { end: false })
    up.stderr.pipe(stream.stderr, { end: false })
    up.on('exit', (code: number | null, sig?: string) => {
      if (typeof code === 'number') status = code
      else if (typeof sig === 'string') signal = sig
    })
    up.on('close', () => {
      recording?.close()
      session.auditLater({
        type: 'result',
        action,
        command,
        exit_status: status,
        ...(signal ? { signal } : {}),
        bytes_in: bytesIn,
        bytes_out: bytesOut,
        bytes_err: bytesErr,
        duration_ms: Number(process.hrtime.bigint() - t0) / 1e6,
      })
      if (!stream.destroyed) {
        if (status !== null) stream.exit(status)
        else if (signal !== null) stream.exit(signal, false, '')
        stream.end()
      }
    })
    up.on('error', () => undefined)
  }

  /** Ends the connection, its channels and the upstream; records the session's end. Idempotent. */
  close(reason: string): void {
    if (this.closed) return
    this.closed = true
    clearTimeout(this.grace)
    this.shared.connections.delete(this)
    for (const c of this.channels) {
      try {
        c.stderr.write(`\r\ngatehouse: session ended: ${reason}\r\n`)
        c.exit(255)
        c.close()
      } catch {
        // the channel is already gone
      }
    }
    this.channels.clear()
    this.upstreamClient?.end()
    try {
      this.client.end()
    } catch {
      // already closed
    }
    this.session?.end(reason)
  }
}

function channelOf(open: (cb: (err: Error | undefined, ch: ClientChannel) => void) => void): Promise<ClientChannel> {
  return new Promise((resolve, reject) => {
    open((err, ch) => (err ? reject(err) : resolve(ch)))
  })
}
