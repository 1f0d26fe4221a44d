// One caller's SSH connection: authenticate with a Gatehouse token (password or
// keyboard-interactive) or a registered public key, open the Gatehouse session, connect upstream
// with the connection's key and pinned host key, then decide, audit and bridge each channel
// request and port forward. Deny by default: a request with no handler here (streamlocal
// forwarding, unknown global requests) is rejected; agent and X11 forwarding are refused and
// recorded.

import { createHash, timingSafeEqual } from 'node:crypto'
import type { Socket } from 'node:net'
import ssh2 from 'ssh2'
import type {
  AcceptConnection,
  AuthContext,
  AuthenticationType,
  PublicKeyAuthContext,
  ClientChannel,
  Connection,
  PseudoTtyInfo,
  RejectConnection,
  SFTPWrapper,
  ServerChannel,
  Session,
  ClientInfo as SshClientInfo,
  TcpConnectionDetails,
  TcpipBindInfo,
  TcpipRequestInfo,
} from 'ssh2'
import type { Decision, OpenSessionRequest, ProxyContext, ProxySession, TerminalRecording } from '../types.js'
import { awaitApproval } from '../approval.js'
import { analyzeExec, type ExecCommand } from './command.js'
import { auditEnv, EnvRequests, TERM_NAME } from './env.js'
import { classifyTransferExec, resolveScpPaths, runScp, type TransferExec } from './scp.js'
import { deniedStatus, type GatewayStatus, heldStatus, isStatusTag, STATUS_ENV, statusLine } from './status.js'
import { type ForwardCommand, forwardText, MAX_FORWARD_CHANNELS, MAX_REMOTE_FORWARDS, splice } from './forward.js'
import { rememberedHostKey, rememberHostKey, TOFU_FILE } from './hostkeys.js'
import { ShellCommandDetector } from './shell-detect.js'
import { handshakeSlot } from './upstream-limit.js'
import { type SftpOperation, SftpReplyInjector, SftpRequestFilter, type SftpVerdict } from './sftp.js'
import { PathRefused, sftpTargetFs, type TargetFs } from './sftp-paths.js'

const { Client, utils } = ssh2

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
/** Time to reach and authenticate to the target. */
export const UPSTREAM_TIMEOUT_MS = 15_000

export interface SshShared {
  readonly ctx: ProxyContext
  readonly connections: Set<SshConnection>
  /** Tells the listener that the caller at `address` authenticated (it stops counting as pending). */
  authenticated(address: string): void
  /** Open SSH connections per root principal (bounded by MAX_CONNECTIONS_PER_PRINCIPAL). */
  readonly perPrincipal: Map<string, number>
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
  /** Forwarded TCP channels open (both directions), bounded by MAX_FORWARD_CHANNELS. */
  private forwardChannels = 0
  /** Ports the target listens on for this caller (`ssh -R`). */
  private readonly remoteForwards = new Set<number>()
  private closed = false
  /** The root principal this connection counts against, once authenticated. */
  private principal: string | null = null
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
      this.failed(actx)
      return
    }
    // Sessions are bounded per caller: the root of the chain, so agents share their root's quota.
    const root = r.session.identity.chain[0]?.id ?? ''
    const open = this.shared.perPrincipal.get(root) ?? 0
    if (open >= MAX_CONNECTIONS_PER_PRINCIPAL) {
      this.shared.ctx.log.warn({ principal: root, open }, 'ssh session refused: too many open for this principal')
      r.session.end(`too many open SSH sessions for ${root} (at most ${MAX_CONNECTIONS_PER_PRINCIPAL})`)
      this.failed(actx)
      return
    }
    this.shared.perPrincipal.set(root, open + 1)
    this.principal = root
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
    this.client.on('tcpip', (accept, reject, info) => {
      this.forwardLocal(accept, reject, info, session).catch((err: unknown) => {
        this.shared.ctx.log.warn({ session: session.id, err: String(err) }, 'ssh forward failed')
      })
    })
    this.client.on('request', (accept, reject, name, info) => {
      if (name === 'tcpip-forward' || name === 'cancel-tcpip-forward') {
        this.forwardRemote(name, accept, reject, info as TcpipBindInfo, session).catch((err: unknown) => {
          this.shared.ctx.log.warn({ session: session.id, err: String(err) }, 'ssh remote forward failed')
          once(reject)
        })
      } else once(reject)
    })
  }

  /** `ssh -L`: one forwarded connection to host:port from the target, if policy allows it. */
  private async forwardLocal(
    accept: AcceptConnection<ServerChannel>,
    reject: RejectConnection,
    info: TcpipRequestInfo,
    session: ProxySession,
  ): Promise<void> {
    if (this.closed || this.forwardChannels >= MAX_FORWARD_CHANNELS) return once(reject)
    this.forwardChannels++
    const cmd: ForwardCommand = {
      direction: 'local',
      host: info.destIP,
      port: info.destPort,
      origin_host: info.srcIP,
      origin_port: info.srcPort,
    }
    const text = forwardText(cmd)
    const v = await this.judge(session, 'ssh.forward', cmd, text)
    const u = v.ok ? await this.upstream : null
    if (!v.ok || !u?.ok || this.closed) {
      this.forwardChannels--
      return once(reject)
    }
    u.client.forwardOut(info.srcIP, info.srcPort, info.destIP, info.destPort, (err, ch) => {
      if (err || this.closed) {
        this.forwardChannels--
        session.auditLater({ type: 'result', action: 'ssh.forward', command: text, error: 'the target could not open the forward' })
        return once(reject)
      }
      this.spliceForward(accept(), ch, session, text)
    })
  }

  /** `ssh -R`: the target listens for the caller, if policy allows that address and port. */
  private async forwardRemote(
    name: string,
    accept: ((port?: number) => void) | undefined,
    reject: (() => void) | undefined,
    info: TcpipBindInfo,
    session: ProxySession,
  ): Promise<void> {
    const u = await this.upstream
    if (!u?.ok || this.closed) return once(reject)
    if (name === 'cancel-tcpip-forward') {
      if (!this.remoteForwards.has(info.bindPort)) return once(reject)
      u.client.unforwardIn(info.bindAddr, info.bindPort, (err) => {
        this.remoteForwards.delete(info.bindPort)
        if (err) once(reject)
        else accept?.()
      })
      return
    }
    if (this.remoteForwards.size >= MAX_REMOTE_FORWARDS) return once(reject)
    const cmd: ForwardCommand = { direction: 'remote', host: info.bindAddr, port: info.bindPort }
    const v = await this.judge(session, 'ssh.forward', { ...cmd, listen: true }, `${forwardText(cmd)} (listen)`)
    if (!v.ok || this.closed) return once(reject)
    u.client.forwardIn(info.bindAddr, info.bindPort, (err, port) => {
      if (err || this.closed) return once(reject)
      this.remoteForwards.add(port || info.bindPort)
      accept?.(port || info.bindPort)
    })
  }

  /** A connection arriving on a remote forward: decided and audited, then handed to the caller. */
  private incoming(
    session: ProxySession,
    d: TcpConnectionDetails,
    accept: AcceptConnection<ClientChannel>,
    reject: RejectConnection,
  ): void {
    if (this.closed || !this.remoteForwards.has(d.destPort) || this.forwardChannels >= MAX_FORWARD_CHANNELS) {
      once(reject)
      return
    }
    this.forwardChannels++
    const cmd: ForwardCommand = { direction: 'remote', host: d.destIP, port: d.destPort, origin_host: d.srcIP, origin_port: d.srcPort }
    const text = forwardText(cmd)
    void this.judge(session, 'ssh.forward', cmd, text).then((v) => {
      if (!v.ok || this.closed) {
        this.forwardChannels--
        once(reject)
        return
      }
      this.client.forwardOut(d.destIP, d.destPort, d.srcIP, d.srcPort, (err, ch) => {
        if (err || this.closed) {
          this.forwardChannels--
          once(reject)
          return
        }
        this.spliceForward(ch, accept(), session, text)
      })
    })
  }

  private spliceForward(
    caller: ServerChannel | ClientChannel,
    target: ServerChannel | ClientChannel,
    session: ProxySession,
    text: string,
  ): void {
    const t0 = process.hrtime.bigint()
    splice(caller, target, (bytesIn, bytesOut) => {
      this.forwardChannels--
      session.auditLater({
        type: 'result',
        action: 'ssh.forward',
        command: text,
        bytes_in: bytesIn,
        bytes_out: bytesOut,
        duration_ms: Number(process.hrtime.bigint() - t0) / 1e6,
      })
    })
  }

  private async connectUpstream(session: ProxySession): Promise<Upstream> {
    const stateDir = this.shared.ctx.stateDir
    const name = session.connection.name
    const tofu = session.settings.host_key === 'trust-on-first-use'
    let remembered: string | null = null
    try {
      remembered = tofu ? rememberedHostKey(stateDir, name) : null
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
    const release = await handshakeSlot(name)
    let sock: Socket
    try {
      sock = await this.shared.ctx.dial(session.target)
    } catch (err) {
      release()
      this.shared.ctx.log.warn({ session: session.id, err: String(err) }, 'cannot reach the ssh target')
      return { ok: false, message: `cannot reach ${session.connection.name}` }
    }
    const upstream = new Client()
    this.upstreamClient = upstream
    upstream.on('tcp connection', (d, accept, reject) => this.incoming(session, d, accept, reject))
    let mismatch = false
    return new Promise<Upstream>((resolve) => {
      let settled = false
      const done = (r: Upstream): void => {
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

  /**
   * Decides one command and records the decision durably before anything is forwarded. Not
   * allowed (denied, held, no decision, audit unavailable) comes back with the message to show.
   */
  private async judge(
    session: ProxySession,
    action: string,
    command: Record<string, unknown>,
    text: string,
    /** Where the caller can be told at once that the command waits for an approval (exec, shell). */
    tell?: (line: string) => void,
    /** false: a held command is filed and refused at once (the caller polls for the approval). */
    wait = true,
  ): Promise<{ ok: true } | { ok: false; message: string; status: GatewayStatus }> {
    const error = (message: string) => ({
      ok: false as const,
      message,
      status: { status: 'error' as const, message: `gatehouse: ${message}` },
    })
    let decision: Decision
    try {
      decision = await session.decide(action, command)
    } catch (err) {
      this.shared.ctx.log.warn({ session: session.id, err: String(err) }, 'ssh command refused: no decision')
      return error('refused: the gateway could not decide this command')
    }
    const {
      command: _text,
      commands: _commands,
      operators: _operators,
      programs: _programs,
      redirects: _redirects,
      opaque,
      opaque_reason,
      ...fields
    } = command
    try {
      await session.audit({
        type: 'statement',
        action,
        command: text,
        ...auditEnv(fields, decision.effect === 'allow'),
        ...(opaque === true ? { opaque: true, opaque_reason } : {}),
        decision: decision.effect,
        rules: decision.rules,
        policy_version: decision.policy,
        ...(decision.effect === 'deny' ? { reason: decision.reason } : {}),
      })
    } catch {
      return error('refused: the gateway could not record this command')
    }
    if (decision.effect === 'deny') return { ok: false, message: `denied: ${decision.reason}`, status: deniedStatus(decision) }
    if (decision.effect === 'hold') {
      // A held command waits for reviewers (engine/approvals), then is decided again with the grant.
      const held = await awaitApproval(
        session,
        action,
        command,
        decision,
        text,
        tell
          ? (request, approvers) =>
              tell(
                `gatehouse: approval required (request ${request}), waiting for group ${approvers.join(', ')}; approve with: gatehouse approvals approve ${request}`,
              )
          : undefined,
        wait,
      )
      return held.ok ? { ok: true } : { ok: false, message: held.message, status: heldStatus(decision, held) }
    }
    return { ok: true }
  }

  private refusedFeature(session: ProxySession, direction: string, reason: string): void {
    session.auditLater({
      type: 'statement',
      action: 'ssh.forward',
      command: `forward ${direction}`,
      direction,
      decision: 'deny',
      rules: [`no-${direction}-forwarding`],
      reason,
    })
  }

  private fsChannel: Promise<TargetFs> | null = null

  /**
   * The gateway's own SFTP channel to the target, opened on first use: where paths are resolved
   * (REALPATH) and legacy scp transfers are carried out. A failure is not cached.
   */
  private targetFs(): Promise<TargetFs> {
    if (this.fsChannel) return this.fsChannel
    const p = this.targetSftp().then(sftpTargetFs)
    this.fsChannel = p
    p.catch(() => {
      if (this.fsChannel === p) this.fsChannel = null
    })
    return p
  }

  private sftpChannel: Promise<SFTPWrapper> | null = null

  private targetSftp(): Promise<SFTPWrapper> {
    if (this.sftpChannel) return this.sftpChannel
    const p = (async () => {
      const u = await this.upstream
      if (!u?.ok) throw new Error(u?.message ?? 'no target')
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

  /** One SFTP file operation: decided and recorded like a command, refused as permission denied. */
  private async judgeSftp(session: ProxySession, op: SftpOperation): Promise<SftpVerdict> {
    const text = `sftp ${op.operation} ${op.path}${op.target !== undefined ? ` ${op.target}` : ''}`
    const v = await this.judge(session, 'ssh.sftp', { ...op }, text)
    return v.ok ? { allow: true } : { allow: false, message: v.message }
  }

  /**
   * A legacy scp exec, carried out by the gateway over its own SFTP channel (scp.ts), or a transfer
   * program refused. The exec is decided as `ssh.sftp` with every named path canonical, then each
   * file and directory the transfer touches is decided on its own.
   */
  private async transferExec(
    stream: ServerChannel,
    session: ProxySession,
    cmd: ExecCommand,
    transfer: Exclude<TransferExec, { kind: 'sftp-server' }>,
  ): Promise<void> {
    this.channels.add(stream)
    stream.on('close', () => this.channels.delete(stream))
    stream.on('error', () => undefined)
    if (transfer.kind === 'refused') {
      await session
        .audit({
          type: 'statement',
          action: 'ssh.exec',
          command: cmd.command,
          argv: cmd.argv,
          decision: 'deny',
          rules: ['gateway-file-transfer'],
          reason: transfer.reason,
        })
        .catch(() => undefined)
      this.refuse(stream, `refused: ${transfer.reason}`)
      return
    }
    const t = transfer.transfer
    let canonical: string[]
    let sftp: SFTPWrapper
    let fs: TargetFs
    try {
      ;[fs, sftp] = await Promise.all([this.targetFs(), this.targetSftp()])
      canonical = await resolveScpPaths(t, fs)
    } catch (err) {
      const reason = err instanceof PathRefused ? err.message : 'the target could not resolve the path'
      session.auditLater({ type: 'result', action: 'ssh.sftp', command: cmd.command, operation: 'refused', reason })
      this.refuse(stream, `refused: ${reason}`, 1)
      return
    }
    const command = {
      command: cmd.command,
      argv: cmd.argv,
      operation: t.direction,
      path: canonical[0],
      paths: canonical,
      requested_paths: t.paths,
      recursive: t.recursive,
    }
    const verdict = await this.judge(session, 'ssh.sftp', command, cmd.command)
    if (!verdict.ok) {
      this.refuse(stream, verdict.message)
      return
    }
    const t0 = process.hrtime.bigint()
    const status = await runScp(t, canonical, stream, { fs, sftp, decide: (op) => this.judgeSftp(session, op) })
    session.auditLater({
      type: 'result',
      action: 'ssh.sftp',
      command: cmd.command,
      exit_status: status,
      duration_ms: Number(process.hrtime.bigint() - t0) / 1e6,
    })
    if (!stream.destroyed) {
      stream.exit(status)
      stream.end()
    }
  }

  /** Ends a channel with a message on stderr and an exit status, the way a refused command would. */
  private refuse(stream: ServerChannel, message: string, status = 126, structured = ''): void {
    if (stream.destroyed) return
    stream.stderr.write(`gatehouse: ${message}\r\n${structured}`)
    stream.exit(status)
    stream.end()
  }

  private handleSession(s: Session, session: ProxySession): void {
    let pty: PseudoTtyInfo | null = null
    const envRequests = EnvRequests.fromSetting(session.settings.env)
    const env = envRequests.accepted
    let statusTag: string | null = null
    let used = false
    let up: ClientChannel | null = null
    let recording: TerminalRecording | null = null
    s.on('pty', (accept, reject, info) => {
      // The terminal type reaches the target's programs (terminfo lookups): a terminal name only.
      if (used || !accept || !TERM_NAME.test(info.term)) return reject?.()
      pty = { ...info, cols: Math.min(info.cols, 1000), rows: Math.min(info.rows, 1000) }
      accept()
    })
    s.on('env', (accept, reject, info) => {
      if (info.key === STATUS_ENV) {
        // The caller's status tag (status.ts): the gateway's own, never policy's, the target's or the audit's.
        if (!used && statusTag === null && isStatusTag(info.val)) {
          statusTag = info.val
          accept?.()
        } else reject?.()
      } else if (!used && envRequests.offer(info.key, info.val)) accept?.()
      else reject?.()
    })
    s.on('window-change', (accept, _reject, info) => {
      accept?.()
      const cols = Math.min(info.cols, 1000)
      const rows = Math.min(info.rows, 1000)
      up?.setWindow(rows, cols, info.height, info.width)
      recording?.resize(cols, rows)
    })
    // Agent and X11 forwarding would hand the target a way back into the caller's machine:
    // refused, and the refusal recorded.
    s.on('auth-agent', (_accept, reject) => {
      once(reject)
      this.refusedFeature(session, 'agent', 'agent forwarding is not allowed through the gateway')
    })
    s.on('x11', (_accept, reject) => {
      once(reject)
      this.refusedFeature(session, 'x11', 'X11 forwarding is not allowed through the gateway')
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
      // While a held exec or shell waits, the caller reads why on stderr (sftp has no such channel).
      const tell =
        kind === 'sftp'
          ? undefined
          : (line: string): void => {
              if (!stream.destroyed) stream.stderr.write(`${line}\r\n`)
            }
      // A caller that sent a status tag (status.ts) gets the verdict as data and is never kept waiting.
      const tagged = (s: GatewayStatus): string => (statusTag !== null ? statusLine(statusTag, s) : '')
      const verdict = await this.judge(session, action, command, text, tell, statusTag === null)
      if (!verdict.ok) {
        this.refuse(stream, verdict.message, 126, tagged(verdict.status))
        return
      }
      const u: Upstream = (await this.upstream) ?? { ok: false, message: 'no target' }
      if (!u.ok) {
        this.refuse(stream, u.message, 255, tagged({ status: 'error', message: `gatehouse: ${u.message}` }))
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
      this.bridge(stream, up, session, action, text, t0, recording, kind === 'sftp')
    }
    s.on('exec', (accept, reject, info) => {
      if (used || !accept) return reject?.()
      // What policy judges is what is sent: the re-quoted argv of a plain line (command.ts).
      const cmd: ExecCommand = analyzeExec(info.command)
      // File-transfer programs never run as execs (scp.ts): the SFTP server becomes the SFTP gate,
      // legacy scp is carried out by the gateway, anything else is refused.
      const transfer = classifyTransferExec(cmd)
      if (transfer?.kind === 'sftp-server') {
        void start(accept, 'sftp', 'ssh.sftp', { command: info.command, operation: 'session', subsystem: 'sftp' }, (c) =>
          channelOf((cb) => c.subsys('sftp', cb)),
        )
        return
      }
      if (transfer) {
        used = true
        void this.transferExec(accept(), session, cmd, transfer).catch((err: unknown) => {
          this.shared.ctx.log.warn({ session: session.id, err: String(err) }, 'scp failed')
          this.close('internal error')
        })
        return
      }
      const p = pty
      const input = { ...cmd, ...envRequests.forPolicy(), pty: p !== null, ...(p ? { term: p.term } : {}) }
      void start(accept, 'exec', 'ssh.exec', input, (c) => channelOf((cb) => c.exec(cmd.sent, { env, ...(p ? { pty: p } : {}) }, cb)))
    })
    s.on('shell', (accept, reject) => {
      if (used || !accept) return reject?.()
      const p = pty
      void start(accept, 'shell', 'ssh.shell', { pty: p !== null, term: p?.term ?? null, ...envRequests.forPolicy() }, (c) =>
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
    sftp = false,
  ): void {
    let bytesIn = 0
    let bytesOut = 0
    let bytesErr = 0
    // Shells cannot be judged command by command; what is typed is recorded by best-effort
    // detection (shell-detect.ts), flagged `detected: true`, and marked in the recording.
    const detector =
      action === 'ssh.shell'
        ? new ShellCommandDetector((c) => {
            recording?.marker(c.line)
            session.auditLater({
              type: 'result',
              action: 'ssh.shell.command',
              command: c.line,
              detected: true,
              ...(c.uncertain ? { uncertain: true } : {}),
              ...(c.truncated ? { truncated: true } : {}),
            })
          })
        : null
    stream.on('data', (d: Buffer) => {
      bytesIn += d.length
      recording?.input(d)
      detector?.input(d)
    })
    up.on('data', (d: Buffer) => {
      bytesOut += d.length
      recording?.output(d)
      detector?.output(d)
    })
    up.stderr.on('data', (d: Buffer) => {
      bytesErr += d.length
      recording?.output(d)
    })
    // pipe() carries backpressure both ways: neither side's window is buffered without bound.
    // The caller's EOF goes upstream; the target's end is sent after its exit status (below),
    // since ending a channel whose peer already sent EOF closes it.
    if (sftp) this.gateSftp(stream, up, session)
    else {
      stream.pipe(up)
      up.pipe(stream, { end: false })
    }
    up.stderr.pipe(stream.stderr, { end: false })
    up.on('close', () => {
      const exit = exits.get(up)
      const status = exit?.status ?? null
      const signal = exit?.signal ?? null
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

  /** Bridges an sftp channel through the SFTP gate (sftp.ts), with backpressure both ways. */
  private gateSftp(stream: ServerChannel, up: ClientChannel, session: ProxySession): void {
    const filter: SftpRequestFilter = new SftpRequestFilter({
      forward: (b) => up.write(b),
      reply: (p) => injector.inject(p),
      fs: () => this.targetFs(),
      decide: (op) => this.judgeSftp(session, op),
      refused: (what) => session.auditLater({ type: 'result', action: 'ssh.sftp', operation: 'refused', reason: what }),
      resume: () => stream.resume(),
      fail: (why) => {
        this.shared.ctx.log.warn({ session: session.id, why }, 'sftp channel closed: protocol violation')
        stream.close()
        up.close()
      },
    })
    const injector = new SftpReplyInjector(
      (b) => stream.write(b),
      (id, h) => filter.handleReply(id, h),
      (id) => filter.statusReply(id),
    )
    stream.on('data', (d: Buffer) => {
      if (!filter.push(d)) stream.pause()
    })
    up.on('drain', () => filter.drained())
    // The client's EOF goes upstream once every request before it has been decided and sent.
    stream.on('end', () => filter.finish(() => up.end()))
    stream.on('close', () => filter.stop())
    up.on('data', (d: Buffer) => {
      if (!injector.write(d)) {
        up.pause()
        stream.once('drain', () => up.resume())
      }
    })
  }

  /** Ends the connection, its channels and the upstream; records the session's end. Idempotent. */
  close(reason: string): void {
    if (this.closed) return
    this.closed = true
    clearTimeout(this.grace)
    if (this.principal !== null) {
      const n = (this.shared.perPrincipal.get(this.principal) ?? 1) - 1
      if (n > 0) this.shared.perPrincipal.set(this.principal, n)
      else this.shared.perPrincipal.delete(this.principal)
    }
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

/** Calls a one-shot ssh2 verdict that may be absent or already spent (the client went away). */
function once(f: (() => void) | undefined): void {
  try {
    f?.()
  } catch {
    // the request or channel is already gone
  }
}

/** `SHA256:…` of a key blob, as `ssh-keygen -l` prints it (and the engine stores keys by). */
function fingerprintOf(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`
}

/** The exit status or signal of each upstream channel, recorded from the moment it opens. */
const exits = new WeakMap<ClientChannel, { status: number | null; signal: string | null }>()

function channelOf(open: (cb: (err: Error | undefined, ch: ClientChannel) => void) => void): Promise<ClientChannel> {
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
