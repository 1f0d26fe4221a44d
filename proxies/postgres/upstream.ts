// Opens the gateway's own connection to the PostgreSQL server: dial, optional TLS (SSLRequest),
// StartupMessage, and authentication with the session's resolved credential — SCRAM-SHA-256,
// md5, cleartext or trust — up to the first ReadyForQuery. The client never sees any of it.

import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import type { Socket } from 'node:net'
import { serialize } from 'pg-protocol'
import { GatehouseError } from '../kit/index.js'
import type { Address, SecretProver } from '../types.js'
import { BackendCode, readErrorFields } from './messages.js'
import { md5Password, ScramClient, ScramError } from './scram.js'
import { CANCEL_REQUEST_CODE } from './frontend.js'

/** Server messages during authentication are small; a larger one is a broken or hostile server. */
const MAX_AUTH_MESSAGE = 1024 * 1024
/** A server that has not finished authenticating in this time is treated as unreachable. */
const AUTH_TIMEOUT_MS = 15_000

export type UpstreamTls = 'disable' | 'require' | 'verify-full'

/**
 * The weakest password exchange a connection accepts (`auth:` in its settings). SCRAM-SHA-256 proves
 * knowledge of the password without sending it (and checks the server's proof); md5 hands the
 * server a replayable hash; `password` hands it the password itself. A server that asks for less
 * than the minimum gets nothing: a downgrade (a spoofed or misconfigured target) never receives
 * the secret. `trust` (the server asks for nothing) sends nothing, so it is not a downgrade.
 */
export type UpstreamAuth = 'scram-sha-256' | 'md5' | 'password'
export const UPSTREAM_AUTH_MODES: readonly UpstreamAuth[] = ['scram-sha-256', 'md5', 'password']
const AUTH_STRENGTH: Record<UpstreamAuth, number> = { password: 0, md5: 1, 'scram-sha-256': 2 }

export interface UpstreamOptions {
  readonly target: Address
  readonly database: string
  readonly user: string
  readonly password: string | undefined
  /**
   * The password's holder when the connection's connector keeps it (`connector:env:NAME`): SCRAM
   * and md5 are answered with its proofs; a cleartext request fails (answering would need the
   * password itself).
   */
  readonly prover?: SecretProver
  readonly tls: UpstreamTls
  readonly ca: Buffer | undefined
  /** The weakest password exchange accepted (default SCRAM-SHA-256). */
  readonly auth?: UpstreamAuth
  /** Startup parameters passed through from the client (already allow-listed). */
  readonly params: ReadonlyMap<string, string>
  readonly dial: (target: Address, signal?: AbortSignal) => Promise<Socket>
}

export interface Upstream {
  readonly socket: Socket | TLSSocket
  readonly pid: number
  readonly secret: Buffer
  /** Raw ParameterStatus and NoticeResponse messages the server sent during startup, in order. */
  readonly startupMessages: Buffer[]
  /** The raw ReadyForQuery that ended the startup. */
  readonly readyForQuery: Buffer
}

function upstreamError(message: string, cause?: unknown, publicMessage = 'the target server refused the connection'): GatehouseError {
  return new GatehouseError('GH_ERR_UPSTREAM', message, { cause, publicMessage })
}

/** Promise-style reader over a socket for the short startup conversation. */
class StartupConversation {
  private buf: Buffer = Buffer.alloc(0)
  private waiter: (() => void) | null = null
  private failure: Error | null = null

  constructor(private socket: Socket | TLSSocket) {
    this.attach(socket)
  }

  private readonly onData = (d: Buffer): void => {
    this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d])
    this.wake()
  }
  private readonly onEnd = (): void => {
    this.failure ??= upstreamError('the server closed the connection during startup')
    this.wake()
  }
  private readonly onError = (err: Error): void => {
    this.failure ??= upstreamError(`server connection error during startup: ${err.message}`, err)
    this.wake()
  }

  private attach(s: Socket | TLSSocket): void {
    s.on('data', this.onData)
    s.on('end', this.onEnd)
    s.on('close', this.onEnd)
    s.on('error', this.onError)
  }

  detach(): void {
    this.socket.off('data', this.onData)
    this.socket.off('end', this.onEnd)
    this.socket.off('close', this.onEnd)
    this.socket.off('error', this.onError)
  }

  replaceSocket(s: TLSSocket): void {
    this.detach()
    this.socket = s
    this.buf = Buffer.alloc(0)
    this.attach(s)
  }

  fail(err: Error): void {
    this.failure ??= err
    this.wake()
  }

  private wake(): void {
    const w = this.waiter
    this.waiter = null
    w?.()
  }

  private async waitFor(n: number): Promise<void> {
    while (this.buf.length < n) {
      if (this.failure) throw this.failure
      await new Promise<void>((r) => {
        this.waiter = r
      })
    }
  }

  async byte(): Promise<number> {
    await this.waitFor(1)
    const b = this.buf[0] as number
    this.buf = this.buf.subarray(1)
    return b
  }

  async message(): Promise<{ type: number; body: Buffer; raw: Buffer }> {
    await this.waitFor(5)
    const len = this.buf.readInt32BE(1)
    if (len < 4 || len > MAX_AUTH_MESSAGE) throw upstreamError(`invalid server message length ${len} during startup`)
    await this.waitFor(len + 1)
    const raw = this.buf.subarray(0, len + 1)
    this.buf = this.buf.subarray(len + 1)
    return { type: raw[0] as number, body: raw.subarray(5), raw }
  }

  rest(): Buffer {
    return this.buf
  }
}

async function startTls(socket: Socket, conv: StartupConversation, opts: UpstreamOptions): Promise<TLSSocket> {
  socket.write(serialize.requestSsl())
  const answer = await conv.byte()
  if (answer !== 0x53) throw upstreamError('the server does not accept TLS but the connection requires it (tls: ' + opts.tls + ')')
  conv.detach()
  return await new Promise<TLSSocket>((resolve, reject) => {
    const verify = opts.tls === 'verify-full'
    const isIpHost = /^[\d.]+$|:/.test(opts.target.host)
    const t = tlsConnect({
      socket,
      host: opts.target.host,
      rejectUnauthorized: verify,
      ...(isIpHost ? {} : { servername: opts.target.host }),
      ...(opts.ca ? { ca: opts.ca } : {}),
      ...(verify ? {} : { checkServerIdentity: () => undefined }),
    })
    t.once('secureConnect', () => {
      t.removeAllListeners('error')
      resolve(t)
    })
    t.once('error', (err) => reject(upstreamError(`TLS handshake with the server failed: ${err.message}`, err)))
  })
}

export async function connectUpstream(opts: UpstreamOptions, signal?: AbortSignal): Promise<Upstream> {
  const raw = await opts.dial(opts.target, signal)
  let socket: Socket | TLSSocket = raw
  const conv = new StartupConversation(raw)
  const timer = setTimeout(() => conv.fail(upstreamError('the server did not finish authentication in time')), AUTH_TIMEOUT_MS)
  const onAbort = (): void => conv.fail(upstreamError('aborted'))
  signal?.addEventListener('abort', onAbort, { once: true })
  try {
    if (opts.tls !== 'disable') {
      const t = await startTls(raw, conv, opts)
      socket = t
      conv.replaceSocket(t)
    }
    socket.setNoDelay(true)
    const startup: Record<string, string> = { user: opts.user, database: opts.database }
    for (const [k, v] of opts.params) startup[k] = v
    socket.write(serialize.startup(startup))

    let scram: ScramClient | null = null
    const startupMessages: Buffer[] = []
    let pid = 0
    let secret = Buffer.alloc(0)
    const minimum = opts.auth ?? 'scram-sha-256'
    const allowExchange = (method: UpstreamAuth): void => {
      if (AUTH_STRENGTH[method] < AUTH_STRENGTH[minimum]) {
        throw upstreamError(
          `the server asks for ${method === 'password' ? 'a cleartext password' : 'an md5 password'}, weaker than the connection's minimum (${minimum}); the password was not sent`,
          undefined,
          `the target server asks for a weaker password exchange (${method}) than this connection allows (auth: ${minimum})`,
        )
      }
    }
    const prover = opts.prover
    const needPassword = (): string => {
      if (prover) {
        throw upstreamError(
          `the server asks for a cleartext password; the password of this connection is held by its connector (${prover.ref}) and is never sent to the gateway`,
          undefined,
          'the target server asks for a cleartext password, which a connector-held password never answers (use scram-sha-256)',
        )
      }
      if (opts.password === undefined) throw upstreamError('the server asks for a password but the connection has no password configured')
      return opts.password
    }
    for (;;) {
      const m = await conv.message()
      switch (m.type) {
        case BackendCode.Authentication: {
          if (m.body.length < 4) throw upstreamError('truncated authentication request')
          const code = m.body.readInt32BE(0)
          if (code === 0) break // AuthenticationOk
          if (code === 3) {
            allowExchange('password')
            // Before any other check: a connector-held password is never answered in cleartext.
            if (prover) needPassword()
            if (opts.tls === 'disable' && !isLoopback(opts.target.host)) {
              throw upstreamError('the server asks for a cleartext password over an unencrypted non-local connection; set tls: require')
            }
            socket.write(serialize.password(needPassword()))
          } else if (code === 5) {
            allowExchange('md5')
            const salt = m.body.subarray(4, 8)
            socket.write(
              serialize.password(
                prover ? await prover.md5(opts.user, Buffer.from(salt), signal) : md5Password(opts.user, needPassword(), salt),
              ),
            )
          } else if (code === 10) {
            const mechs = m.body.subarray(4).toString('utf8').split('\0').filter(Boolean)
            if (!mechs.includes('SCRAM-SHA-256')) throw upstreamError(`the server offers no supported SASL mechanism (${mechs.join(', ')})`)
            if (!prover) needPassword()
            scram = new ScramClient()
            socket.write(serialize.sendSASLInitialResponseMessage('SCRAM-SHA-256', scram.clientFirstMessage()))
          } else if (code === 11) {
            if (!scram) throw upstreamError('unexpected SASLContinue')
            const serverFirst = m.body.subarray(4).toString('utf8')
            socket.write(
              serialize.sendSCRAMClientFinalMessage(
                prover
                  ? scram.adoptProof(serverFirst, await prover.scramSha256(scram.clientFirstBare, serverFirst, signal))
                  : await scram.clientFinalMessage(needPassword(), serverFirst),
              ),
            )
          } else if (code === 12) {
            if (!scram) throw upstreamError('unexpected SASLFinal')
            scram.verifyServerFinal(m.body.subarray(4).toString('utf8'))
          } else {
            throw upstreamError(`the server asks for an unsupported authentication method (${code})`)
          }
          break
        }
        case BackendCode.ParameterStatus:
        case BackendCode.NoticeResponse:
          startupMessages.push(Buffer.from(m.raw))
          break
        case BackendCode.BackendKeyData:
          if (m.body.length < 8) throw upstreamError('truncated BackendKeyData')
          pid = m.body.readInt32BE(0)
          secret = Buffer.from(m.body.subarray(4))
          break
        case BackendCode.NegotiateProtocolVersion:
          break
        case BackendCode.ErrorResponse: {
          const f = readErrorFields(m.body)
          throw upstreamError(`the server refused the gateway: ${f.get('C') ?? '?'} ${f.get('M') ?? ''}`)
        }
        case BackendCode.ReadyForQuery: {
          conv.detach()
          const rest = conv.rest()
          if (rest.length > 0) throw upstreamError('the server sent data before any query')
          return { socket, pid, secret, startupMessages, readyForQuery: Buffer.from(m.raw) }
        }
        default:
          throw upstreamError(`unexpected server message 0x${m.type.toString(16)} during startup`)
      }
    }
  } catch (err) {
    conv.detach()
    socket.destroy()
    if (err instanceof GatehouseError) throw err
    if (err instanceof ScramError) throw upstreamError(err.message, err)
    throw upstreamError(`server startup failed: ${(err as Error).message}`, err)
  } finally {
    clearTimeout(timer)
    signal?.removeEventListener('abort', onAbort)
  }
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.') || host === '::ffff:127.0.0.1'
}

/** Sends a CancelRequest for a server backend on a fresh connection (TLS when the connection uses it). */
export async function sendCancel(opts: UpstreamOptions, pid: number, secret: Buffer): Promise<void> {
  const raw = await opts.dial(opts.target)
  let socket: Socket | TLSSocket = raw
  try {
    if (opts.tls !== 'disable') {
      const conv = new StartupConversation(raw)
      try {
        socket = await startTls(raw, conv, opts)
      } finally {
        conv.detach()
      }
    }
    const body = Buffer.allocUnsafe(12 + secret.length)
    body.writeInt32BE(12 + secret.length, 0)
    body.writeInt32BE(CANCEL_REQUEST_CODE, 4)
    body.writeInt32BE(pid, 8)
    secret.copy(body, 12)
    await new Promise<void>((resolve) => {
      socket.on('error', () => resolve())
      socket.on('close', () => resolve())
      socket.end(body)
    })
  } finally {
    socket.destroy()
  }
}
