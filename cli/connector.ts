// `gatehouse connector`: the agent that runs inside a private network, dials OUT to the gateway's
// connector listener over TLS and carries the gateway's streams to targets only it can reach
// (engine/connector/protocol.ts has the wire contract). `gatehouse connectors list` shows the links
// a running gateway holds.
//
// The agent serves HTTP/2 on the socket it dialled, so the gateway is the side that opens streams
// and a connector can never open one into the gateway. It dials only the addresses the gateway
// listed for it at attach (the targets of connections configured `via` it), narrowed further by
// `--allow` when given; every other CONNECT is refused.

import { readFileSync, renameSync, writeFileSync } from 'node:fs'
import { constants as h2, createServer as createH2Server, type Http2Session, type ServerHttp2Stream } from 'node:http2'
import { connect as netConnect, isIP } from 'node:net'
import { hostname } from 'node:os'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import type { Command, Option } from 'commander'
import type { Logger } from 'pino'
import { createLogger } from '../engine/server/log.js'
import {
  ALPN,
  ATTACH_PATH,
  type AttachHello,
  CREDENTIAL_PATH,
  ERROR_HEADER,
  LINK_WINDOW_BYTES,
  PING_INTERVAL_MS,
  PING_TIMEOUT_MS,
  PROVE_PATH,
  parseAuthority,
  readJsonBody,
  REFUSED_PATH,
  SESSION_HEADER,
  STREAM_WINDOW_BYTES,
  TARGETS_PATH,
} from '../engine/connector/protocol.js'
import { ApiClient, resolveConfig, ServerUnreachableError } from './client.js'
import { hostSigned, SshKexWatcher } from './connector-kex.js'
import { type HeldSecret, HeldSecrets, parseHeldSecret, ProofRefused } from './connector-secrets.js'
import { UsageError } from './exit.js'

/** Back-off between attempts: doubling from the first to the cap, with ±20% jitter. */
export const BACKOFF_FIRST_MS = 500
export const BACKOFF_MAX_MS = 30_000
/** A link that stayed up this long resets the back-off. */
const STABLE_MS = 10_000
const TARGET_DIAL_TIMEOUT_MS = 10_000
/** The target socket's read buffer, one per stream. */
const RELAY_READ_BYTES = 64 * 1024

export interface ConnectorOptions {
  readonly host: string
  readonly port: number
  readonly credential: string
  /**
   * Where the credential came from: the credential the gateway gives for a join token (and each
   * successor) replaces it there, so a restarted connector attaches again without a new join token.
   */
  readonly credentialFile?: string
  /** PEM CA bundle to verify the gateway's certificate against (system CAs when absent). */
  readonly ca?: Buffer
  /** The gateway certificate's SHA-256 fingerprint (hex, colons optional): pins that certificate. */
  readonly fingerprint?: string
  /** host:port the operator allows here; empty: whatever the gateway lists. */
  readonly allow: readonly string[]
  /** Secrets kept here for connections (`--secret connection=ref`): proven to the gateway, never sent. */
  readonly secrets?: ReadonlyMap<string, HeldSecret>
  readonly version: string
  /** The host name the attach answer reports (os.hostname() when absent). */
  readonly hostname?: string
  readonly log: Logger
}

export function normalizeFingerprint(text: string): string | null {
  const hex = text
    .replace(/^sha256:/i, '')
    .replaceAll(':', '')
    .toLowerCase()
  return /^[0-9a-f]{64}$/.test(hex) ? hex : null
}

/** Parses `--gateway`: https://host:port, host:port. */
export function parseGatewayUrl(text: string): { host: string; port: number } | null {
  const t = text.replace(/^(https|tls):\/\//, '').replace(/\/$/, '')
  return parseAuthority(t)
}

export class ConnectorAgent {
  private stopped = false
  private attempt = 0
  private current: { sock: TLSSocket; session: Http2Session | null } | null = null
  private wake: (() => void) | null = null
  /** Streams open now (for the log and tests). */
  streams = 0
  /** What the next attach presents: the configured credential, or the gateway's replacement of it. */
  private credential: string
  private readonly held: HeldSecrets
  /** Open CONNECT streams per session and target: a proof is given only to a session carried now. */
  private readonly carried = new Map<string, number>()
  /** The SSH key exchanges read on open streams, per session and target (see connector-kex.ts). */
  private readonly kex = new Map<string, Set<SshKexWatcher>>()

  constructor(private readonly opts: ConnectorOptions) {
    this.credential = opts.credential
    this.held = new HeldSecrets(opts.secrets ?? new Map(), opts.log)
  }

  /** Takes the credential the gateway issued (for a join token, or as a successor) for every later attach. */
  private adopt(credential: string): void {
    this.credential = credential
    const file = this.opts.credentialFile
    if (!file) return
    try {
      // Written aside and renamed: a crash never leaves half a credential (or none) behind.
      const tmp = `${file}.${process.pid}.tmp`
      writeFileSync(tmp, `${credential}\n`, { mode: 0o600 })
      renameSync(tmp, file)
    } catch (err) {
      this.opts.log.warn({ file, err: (err as Error).message }, 'cannot store the new credential; it is kept in memory only')
    }
  }

  /** Keeps a link up until `stop`. */
  async run(): Promise<void> {
    while (!this.stopped) {
      const started = Date.now()
      const outcome = await this.once()
      if (this.stopped) break
      if (Date.now() - started > STABLE_MS) this.attempt = 0
      const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt)
      // A refusal will not change by retrying quickly: wait the longest.
      const wait = outcome === 'refused' ? BACKOFF_MAX_MS : Math.round(base * (0.8 + Math.random() * 0.4))
      this.attempt++
      this.opts.log.info({ retry_in_ms: wait }, 'reconnecting to the gateway')
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, wait)
        this.wake = () => {
          clearTimeout(t)
          resolve()
        }
      })
      this.wake = null
    }
  }

  stop(): void {
    this.stopped = true
    this.current?.session?.close()
    this.current?.sock.destroy()
    this.wake?.()
  }

  /** One link, from dial to close: 'lost' (retry with back-off) or 'refused' (the gateway said no). */
  private once(): Promise<'lost' | 'refused'> {
    const { host, port, log } = this.opts
    return new Promise((resolve) => {
      let outcome: 'lost' | 'refused' = 'lost'
      let done = false
      const finish = (): void => {
        if (done) return
        done = true
        this.current = null
        resolve(outcome)
      }
      const pinned = this.opts.fingerprint
      const sock = tlsConnect({
        host,
        port,
        ALPNProtocols: [ALPN],
        ...(isIP(host) ? {} : { servername: host }),
        ...(this.opts.ca ? { ca: this.opts.ca } : {}),
        // With a pin the certificate itself is the trust anchor: checked below, before any byte is sent.
        rejectUnauthorized: pinned === undefined,
      })
      this.current = { sock, session: null }
      sock.once('error', (err) => {
        log.warn({ gateway: `${host}:${port}`, err: err.message }, 'cannot reach the gateway')
        finish()
      })
      sock.once('close', finish)
      sock.once('secureConnect', () => {
        if (pinned !== undefined) {
          const got = normalizeFingerprint(sock.getPeerCertificate().fingerprint256 ?? '')
          if (got !== pinned) {
            log.error({ gateway: `${host}:${port}` }, 'the gateway certificate does not match the pinned fingerprint; not attaching')
            outcome = 'refused'
            sock.destroy()
            return
          }
        }
        if (sock.alpnProtocol !== ALPN) {
          log.error({ gateway: `${host}:${port}` }, 'the gateway did not negotiate h2; not attaching')
          sock.destroy()
          return
        }
        this.serve(sock, (o) => {
          outcome = o
        })
      })
    })
  }

  private serve(sock: TLSSocket, setOutcome: (o: 'lost' | 'refused') => void): void {
    const { log } = this.opts
    let targets: ReadonlySet<string> | null = null
    let name = ''
    let attached = false
    const server = createH2Server({ settings: { initialWindowSize: STREAM_WINDOW_BYTES, enablePush: false } })
    server.on('session', (session: Http2Session) => {
      if (this.current) this.current.session = session
      session.on('error', (err) => log.warn({ err: err.message }, 'link error'))
      session.once('connect', () => {
        try {
          session.setLocalWindowSize(LINK_WINDOW_BYTES)
        } catch {
          // closing already
        }
      })
      // Our own keep-alive: a gateway that stops answering is redialled.
      const pinger = setInterval(() => {
        let answered = false
        const t = setTimeout(() => {
          if (answered) return
          log.warn('the gateway stopped answering pings; redialling')
          session.destroy()
          sock.destroy()
        }, PING_TIMEOUT_MS)
        t.unref()
        try {
          session.ping(() => {
            answered = true
            clearTimeout(t)
          })
        } catch {
          // the session is closing; 'close' redials
        }
      }, PING_INTERVAL_MS)
      session.once('close', () => {
        clearInterval(pinger)
        if (attached) log.warn({ connector: name }, 'link to the gateway closed')
        sock.destroy()
      })
    })
    server.on('stream', (stream: ServerHttp2Stream, headers) => {
      const method = headers[h2.HTTP2_HEADER_METHOD]
      const path = headers[h2.HTTP2_HEADER_PATH]
      stream.on('error', () => undefined)
      if (method === 'GET' && path === ATTACH_PATH) {
        const hello: AttachHello = { credential: this.credential, version: this.opts.version, hostname: this.opts.hostname ?? hostname() }
        stream.respond({ [h2.HTTP2_HEADER_STATUS]: 200, 'content-type': 'application/json' })
        stream.end(JSON.stringify(hello))
        return
      }
      if (method === 'POST' && path === TARGETS_PATH) {
        readJsonBody(stream)
          .then((body) => {
            const b = body as { name?: unknown; targets?: unknown; credential?: unknown }
            if (typeof b.name !== 'string' || !Array.isArray(b.targets)) throw new Error('malformed targets')
            if (typeof b.credential === 'string') this.adopt(b.credential)
            name = b.name
            targets = new Set(b.targets.filter((t): t is string => typeof t === 'string'))
            attached = true
            this.attempt = 0
            log.info({ connector: name, targets: [...targets] }, 'attached to the gateway')
            stream.respond({ [h2.HTTP2_HEADER_STATUS]: 204 })
            stream.end()
          })
          .catch(() => {
            stream.respond({ [h2.HTTP2_HEADER_STATUS]: 400 })
            stream.end()
          })
        return
      }
      if (method === 'POST' && path === CREDENTIAL_PATH) {
        readJsonBody(stream)
          .then((body) => {
            const c = (body as { credential?: unknown }).credential
            if (!attached || typeof c !== 'string' || c.length === 0) throw new Error('malformed credential')
            this.adopt(c)
            log.info({ connector: name }, "the gateway replaced this connector's credential")
            stream.respond({ [h2.HTTP2_HEADER_STATUS]: 204 })
            stream.end()
          })
          .catch(() => {
            stream.respond({ [h2.HTTP2_HEADER_STATUS]: 400 })
            stream.end()
          })
        return
      }
      if (method === 'POST' && path === REFUSED_PATH) {
        readJsonBody(stream)
          .then((body) => {
            const reason = (body as { reason?: unknown }).reason
            log.error({ reason: typeof reason === 'string' ? reason : 'no reason given' }, 'the gateway refused this connector')
          })
          .catch(() => undefined)
          .finally(() => {
            setOutcome('refused')
            stream.respond({ [h2.HTTP2_HEADER_STATUS]: 204 })
            stream.end()
          })
        return
      }
      if (method === 'POST' && path === PROVE_PATH) {
        const ctx = {
          targets,
          allow: this.opts.allow,
          carries: (session: string, target: string) => (this.carried.get(`${session} ${target}`) ?? 0) > 0,
          hostSigned: (session: string, target: string, sessionId: Buffer) =>
            [...(this.kex.get(`${session} ${target}`) ?? [])].some((w) => w.replies.some((r) => hostSigned(r, sessionId))),
        }
        readJsonBody(stream)
          .then((body) => (attached ? this.held.prove(body, ctx) : Promise.reject(new ProofRefused('not attached'))))
          .then((answer) => {
            if (stream.destroyed) return
            stream.respond({ [h2.HTTP2_HEADER_STATUS]: 200, 'content-type': 'application/json' })
            stream.end(JSON.stringify(answer))
          })
          .catch((err: unknown) => {
            if (stream.destroyed) return
            const why = err instanceof ProofRefused ? err.message : 'malformed proof request'
            stream.respond({ [h2.HTTP2_HEADER_STATUS]: 403, [ERROR_HEADER]: why.replace(/[^\x20-\x7e]/g, '?') }, { endStream: true })
          })
        return
      }
      if (method === 'CONNECT') {
        this.carry(stream, String(headers[h2.HTTP2_HEADER_AUTHORITY] ?? ''), targets, String(headers[SESSION_HEADER] ?? ''))
        return
      }
      stream.respond({ [h2.HTTP2_HEADER_STATUS]: 404 }, { endStream: true })
    })
    server.emit('connection', sock)
  }

  /** One CONNECT: only to an address the gateway listed (and the operator allows). */
  private carry(stream: ServerHttp2Stream, authority: string, targets: ReadonlySet<string> | null, session: string): void {
    const { log } = this.opts
    const refuse = (status: number, why: string): void => {
      log.warn({ target: authority, session, why }, 'stream refused')
      if (!stream.destroyed) stream.respond({ [h2.HTTP2_HEADER_STATUS]: status, [ERROR_HEADER]: why }, { endStream: true })
    }
    const addr = parseAuthority(authority)
    if (!addr) {
      refuse(400, 'malformed target address')
      return
    }
    if (targets === null || !targets.has(authority)) {
      refuse(403, `${authority} is not a target of this connector`)
      return
    }
    if (this.opts.allow.length > 0 && !this.opts.allow.includes(authority)) {
      refuse(403, `${authority} is not allowed by this connector's --allow`)
      return
    }
    // The target's bytes are read into one buffer per stream (no allocation per read) and copied
    // into the HTTP/2 stream; a full stream pauses the reads (its window is the back-pressure).
    const readBuffer = Buffer.allocUnsafe(RELAY_READ_BYTES)
    const watcher = new SshKexWatcher()
    const target = netConnect({
      host: addr.host,
      port: addr.port,
      noDelay: true,
      onread: {
        buffer: readBuffer,
        callback: (n: number, buf: Uint8Array): boolean => {
          if (stream.destroyed) return false
          if (watcher.watching) watcher.feed(Buffer.from(buf.buffer, buf.byteOffset, n))
          if (stream.write(Buffer.from(buf.subarray(0, n)))) return true
          stream.once('drain', () => target.resume())
          return false
        },
      },
    })
    const timer = setTimeout(() => {
      target.destroy()
      refuse(504, 'the target did not answer in time')
    }, TARGET_DIAL_TIMEOUT_MS)
    target.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer)
      refuse(502, `the connector cannot reach ${authority} (${err.code ?? err.message})`)
    })
    target.once('connect', () => {
      clearTimeout(timer)
      if (stream.destroyed) {
        target.destroy()
        return
      }
      target.removeAllListeners('error')
      this.streams++
      const key = `${session} ${authority}`
      this.carried.set(key, (this.carried.get(key) ?? 0) + 1)
      const watched = this.kex.get(key) ?? new Set<SshKexWatcher>()
      this.kex.set(key, watched.add(watcher))
      stream.respond({ [h2.HTTP2_HEADER_STATUS]: 200 })
      // Each side's back-pressure stops only its own stream: a stalled reader never blocks the link.
      stream.on('data', (d: Buffer) => {
        if (!target.write(d)) stream.pause()
      })
      target.on('drain', () => stream.resume())
      stream.on('end', () => target.end())
      target.on('end', () => {
        if (!stream.destroyed && !stream.writableEnded) stream.end()
      })
      target.on('error', () => stream.close(h2.NGHTTP2_CANCEL))
      stream.on('close', () => {
        this.streams--
        const n = (this.carried.get(key) ?? 1) - 1
        if (n > 0) this.carried.set(key, n)
        else this.carried.delete(key)
        watched.delete(watcher)
        if (watched.size === 0 && this.kex.get(key) === watched) this.kex.delete(key)
        target.destroy()
      })
      target.on('close', () => {
        if (!stream.destroyed && !stream.writableEnded) stream.end()
      })
    })
  }
}

export function registerConnectorCommands(program: Command, configOpt: () => Option, version: string): void {
  program
    .command('connector')
    .description('run a connector: dial out to the gateway and carry its streams to targets in this network')
    .requiredOption('--gateway <url>', "the gateway's connector listener (https://host:port)")
    .option('--token <credential>', 'the connector credential (a join token or service-account key); or GATEHOUSE_CONNECTOR_TOKEN')
    .option('--token-file <path>', 'read the credential from this file (a join token there is replaced by the credential it earns)')
    .option('--ca <file>', "PEM CA bundle that verifies the gateway's certificate")
    .option('--fingerprint <sha256>', "pin the gateway's certificate by its SHA-256 fingerprint instead")
    .option('--allow <host:port...>', 'dial only these targets, even if the gateway lists more')
    .option(
      '--secret <connection=ref...>',
      "keep this connection's password or SSH key here (env:NAME or file:/path, then ,user=NAME ,target=host:port ,md5): the gateway's connection names it connector:<ref>",
    )
    .option('--log-level <level>', 'log level', 'info')
    .action(
      async (o: {
        gateway: string
        token?: string
        tokenFile?: string
        ca?: string
        fingerprint?: string
        allow?: string[]
        secret?: string[]
        logLevel: string
      }) => {
        const gw = parseGatewayUrl(o.gateway)
        if (!gw) throw new UsageError(`--gateway: expected https://host:port (got ${JSON.stringify(o.gateway)})`)
        const credential = (
          o.tokenFile ? readFileSync(o.tokenFile, 'utf8') : (o.token ?? process.env.GATEHOUSE_CONNECTOR_TOKEN ?? '')
        ).trim()
        if (!credential) throw new UsageError('a credential is required: --token, --token-file or GATEHOUSE_CONNECTOR_TOKEN')
        let fingerprint: string | undefined
        if (o.fingerprint !== undefined) {
          const f = normalizeFingerprint(o.fingerprint)
          if (!f) throw new UsageError('--fingerprint: expected a SHA-256 fingerprint (64 hex digits, colons optional)')
          fingerprint = f
        }
        for (const a of o.allow ?? [])
          if (!parseAuthority(a)) throw new UsageError(`--allow: expected host:port (got ${JSON.stringify(a)})`)
        const secrets = new Map<string, HeldSecret>()
        for (const text of o.secret ?? []) {
          const held = parseHeldSecret(text)
          if (!held)
            throw new UsageError(
              `--secret: expected connection=env:NAME or connection=file:/absolute/path, then ,user=NAME ,target=host:port ,md5 (got ${JSON.stringify(text)})`,
            )
          secrets.set(held.connection, held.secret)
        }
        const log = createLogger(o.logLevel).child({ component: 'connector' })
        const agent = new ConnectorAgent({
          host: gw.host,
          port: gw.port,
          credential,
          ...(o.tokenFile ? { credentialFile: o.tokenFile } : {}),
          ...(o.ca ? { ca: readFileSync(o.ca) } : {}),
          ...(fingerprint ? { fingerprint } : {}),
          allow: o.allow ?? [],
          secrets,
          version,
          log,
        })
        const stop = (): void => agent.stop()
        process.once('SIGTERM', stop)
        process.once('SIGINT', stop)
        await agent.run()
      },
    )

  const connectors = program.command('connectors').description('connectors attached to the running gateway')
  connectors
    .command('token')
    .description('a one-time join token for a configured connector: exchanged at its first attach for a short-lived credential')
    .requiredOption('--name <connector>', 'the connector it joins as (connectors: in the configuration)')
    .option('--ttl <duration>', 'how long it may wait to be used (default 1h, at most 7d)')
    .addOption(configOpt())
    .option('--json', 'print {token, id, connector, expires_at}')
    .action(async (o: { name: string; ttl?: string; config?: string; json?: boolean }) => {
      const api = ApiClient.forServer(resolveConfig(o.config))
      if (!api) throw new ServerUnreachableError('no gateway runs for this configuration (join tokens are made by the running gateway)')
      const t = await api.call<{ token: string; id: string; connector: string; expires_at: string }>('POST', '/v1/connectors/join-tokens', {
        name: o.name,
        ...(o.ttl !== undefined ? { ttl: o.ttl } : {}),
      })
      process.stdout.write(o.json ? `${JSON.stringify(t)}\n` : `${t.token}\n`)
      if (!o.json) process.stderr.write(`join token ${t.id} for connector ${t.connector}: one use, until ${t.expires_at}\n`)
    })
  connectors
    .command('list')
    .description('connector links: name, principal, address, version, last seen, streams and sessions')
    .addOption(configOpt())
    .option('--json', 'print JSON Lines')
    .action(async (o: { config?: string; json?: boolean }) => {
      const api = ApiClient.forServer(resolveConfig(o.config))
      // Links live only in a running gateway: there is nothing to read from the data directory.
      if (!api) throw new ServerUnreachableError('no gateway runs for this configuration (connector links exist only while it runs)')
      const list = await api.call<Record<string, unknown>[]>('GET', '/v1/connectors')
      for (const c of list) process.stdout.write(o.json ? `${JSON.stringify(c)}\n` : linkLine(c))
    })
}

/**
 * One link as a line of `connectors list`. Every field is escaped (control characters, tabs and
 * newlines as \xNN): a value that came from a connector must not fake a line or drive the terminal.
 */
export function linkLine(c: Record<string, unknown>): string {
  const f = (v: unknown): string =>
    String(v).replace(/[^\x20-\x5b\x5d-\x7e\xa0-\uffff]/g, (ch) => `\\x${ch.charCodeAt(0).toString(16).padStart(2, '0')}`)
  return `${f(c.name)}\t${f(c.link)}\t${f(c.principal)}\t${f(c.address)}\tv${f(c.version)}\t${f(c.hostname)}\tlast seen ${f(c.last_seen)}\tstreams ${f(c.streams)}\tsessions ${f(c.sessions)}\n`
}
