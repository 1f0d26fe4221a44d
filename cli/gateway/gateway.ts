// The composition root: opens the data directory (state, signing key, TLS, audit), loads and
// starts the proxy plugins with their narrow contexts, starts the API, and stops it all in order.

import {
  accessSync,
  constants as fsConstants,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statfsSync,
  statSync,
  writeFileSync,
} from 'node:fs'
import { isIP } from 'node:net'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import { loadOrMintAdminToken, rotateAdminToken } from '../../engine/server/admin-token.js'
import { type ApiDeps, buildApi, type Readiness, type ReadinessCheck } from '../../engine/server/api.js'
import { parseDuration } from '../../engine/duration.js'
import { AuditLog } from '../../engine/audit/writer.js'
import { isExternalAnchor } from '../../engine/audit/config.js'
import { type AuditSigner, resolveAuditSigner } from '../../engine/audit/keys.js'
import { AuditServices } from '../../engine/audit/service.js'
import { type Config, configProblem } from '../../engine/config/config.js'
import { GatehouseError, isGatehouseError } from '../../engine/errors.js'
import { Metrics } from '../../engine/server/metrics.js'
import { IdentityService } from '../../engine/identity/service.js'
import { instantiate, type LoadedBundle, loadPolicySource } from '../../engine/policy/bundle.js'
import { PolicyEngine } from '../../engine/policy/engine.js'
import { PolicyReloader } from '../../engine/policy/reload.js'
import { defaultPolicySource } from '../../engine/policy/sources.js'
import { parseSecretRef, resolveSecret } from '../../engine/secrets.js'
import { SessionManager } from '../../engine/sessions.js'
import { startApprovals } from '../../engine/approvals/index.js'
import { Store } from '../../engine/store.js'
import { ensureSelfSigned, loadSecureContext } from '../../engine/server/tls.js'
import { loadOrCreateSigningKey, TokenIssuer } from '../../engine/identity/tokens.js'
import { pluginContext } from './context.js'
import { loadPlugins } from './loader.js'
import { checkConfigAgainstPlugins, scopeCheckerFor } from './plugin-checks.js'
import { ConnectorHub } from '../../engine/connector/hub.js'
import { JOIN_DEFAULT_TTL_S, JOIN_MAX_TTL_S, JoinTokens } from '../../engine/connector/join.js'
import { authorityOf, CONNECTOR_AUDIENCE } from '../../engine/connector/protocol.js'
import type { PeerMessage, Peers } from '../../engine/peers.js'
import type { Address, AnyProxyPlugin, CapabilityName, HttpMount, PluginContext, ProxyHandle, TlsMaterial } from '../../proxies/types.js'

export interface RunInfo {
  readonly pid: number
  readonly api: string | null
  readonly listeners: Record<string, string>
  readonly started: string
}

export { adminTokenPath } from '../../engine/server/admin-token.js'
export function runInfoPath(dataDir: string): string {
  return join(dataDir, 'run.json')
}

function fmt(a: Address): string {
  return isIP(a.host) === 6 ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`
}

/** The token issuer (and default audience): `tokens.issuer`, else the API's URL. */
export function issuerFor(config: Config): string {
  const a = config.listen.api
  return config.tokens.issuer || `http://${a ? fmt(a) : '127.0.0.1:8080'}`
}

/** The end reason of sessions a killed gateway left open. */
const ORPHAN_REASON = 'gateway stopped unexpectedly'

/** This process as one worker of `serve --workers N` (gateway/primary.ts starts them). */
export interface WorkerRole {
  /** 1 … N; the worker writes its own audit segment series, `<data_dir>/audit/w<id>/`. */
  readonly id: number
  /**
   * The first worker of a start ends every session a stopped gateway left open; a worker that
   * replaces a crashed one ends only its predecessor's (the other workers' are alive).
   */
  readonly cleanAll: boolean
  readonly peers: Peers
}

/** A bundle as another worker loads it. */
function policyMessage(b: LoadedBundle): PeerMessage {
  return {
    kind: 'policy',
    version: b.version,
    source: b.source,
    wasm: Buffer.from(b.compiled.wasm).toString('base64'),
    data: b.compiled.data,
    rego: b.compiled.rego,
  }
}

/** Where a process writes its audit segments: `audit/`, or `audit/w<N>/` for worker N. */
export function auditDirOf(dataDir: string, worker: number | null): string {
  return worker === null ? join(dataDir, 'audit') : join(dataDir, 'audit', `w${worker}`)
}

/** Free space the audit directory needs to count as writable: room for a batch of events. */
const AUDIT_MIN_FREE_BYTES = 64 * 1024

export class Gateway {
  private handles: { name: string; handle: ProxyHandle }[] = []
  private api: FastifyInstance | null = null
  private stopping: Promise<void> | null = null
  private reloader: PolicyReloader | null = null
  auditServices: AuditServices | null = null
  readonly addresses: Record<string, string> = {}
  /** Bound listeners by plugin name (and `api`), for ProxyContext.listener. */
  private readonly bound = new Map<string, Address>()
  /** HTTP handlers plugins mount on the API listener (ProxyContext.mountHttp). */
  private readonly mounts: HttpMount[] = []
  adminToken = ''
  readonly metrics = new Metrics()
  /** Set once every listener is bound; cleared when stopping starts. */
  private serving = false
  /** Links from connectors (engine/connector); null when no connector is configured. */
  connectors: ConnectorHub | null = null
  /** Creates a connector join token (the API's POST /v1/connectors/join-tokens); null without connectors. */
  joinToken: ApiDeps['joinToken'] | null = null
  /** Targets reachable only through a connector: never dialled directly. */
  private readonly tunnelOnly = new Set<string>()
  /** This process's worker number under `serve --workers N`; null: a single process. */
  workerId: number | null = null

  private constructor(
    readonly config: Config,
    readonly log: Logger,
    readonly store: Store,
    readonly audit: AuditLog,
    readonly issuer: TokenIssuer,
    readonly engine: PolicyEngine,
    readonly sessions: SessionManager,
    readonly identity: IdentityService,
    private readonly tls: TlsMaterial,
  ) {}

  static async start(
    config: Config,
    builtin: readonly AnyProxyPlugin[],
    log: Logger,
    opts: { readonly dev?: boolean; readonly worker?: WorkerRole } = {},
  ): Promise<Gateway> {
    const worker = opts.worker ?? null
    const plugins = await loadPlugins(builtin, config.plugins)
    checkConfigAgainstPlugins(config, plugins)
    // The policy first: a gateway that cannot decide does not start (and touches nothing).
    const policySource = config.policies ?? defaultPolicySource()
    let bundle: Awaited<ReturnType<typeof loadPolicySource>>
    try {
      bundle = await loadPolicySource(policySource)
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err)
      throw configProblem(config, [`policies${config.policies ? '' : ' (the default bundle)'}: ${why.replaceAll('\n', '\n  ')}`])
    }
    const engine = new PolicyEngine(bundle, log.child({ component: 'policy' }))
    log.info({ version: bundle.version, source: bundle.source }, 'policy loaded')

    mkdirSync(config.dataDir, { recursive: true, mode: 0o700 })
    checkDataDirOwnership(config.dataDir)
    const auditLog = log.child({ component: 'audit' })
    const configDir = config.file ? join(config.file, '..') : process.cwd()
    let signer: AuditSigner
    try {
      signer = await resolveAuditSigner(config.audit.signingKey, config.dataDir, configDir)
    } catch (err) {
      // The audit key comes before anything is written: a gateway that cannot sign does not start.
      if (config.audit.signingKey === null || !isGatehouseError(err)) throw err
      throw configProblem(config, [err.message.startsWith('audit.signing_key') ? err.message : `audit.signing_key: ${err.message}`])
    }
    const audit = new AuditLog(auditDirOf(config.dataDir, worker?.id ?? null), config.audit.fsync, config.audit.fsyncIntervalMs, {
      signer,
      checkpointIntervalMs: config.audit.checkpointIntervalMs,
      segmentMaxBytes: config.audit.segmentMaxBytes,
      onProblem: (message, err) => auditLog.warn({ err: err === undefined ? undefined : String(err) }, message),
    })
    // The writer lock first: a second gateway on this data directory stops here, before it
    // touches anything the running one owns (its live sessions in the state database above all).
    audit.open()
    let store: Store
    try {
      store = new Store(config.dataDir)
      // Sessions still open in the index belong to a process that was killed: end them, in the
      // audit log too, so every session.start has its session.end.
      const reason = worker === null ? ORPHAN_REASON : `gateway worker ${worker.id} stopped unexpectedly`
      const orphans = store.closeOrphanedSessions(
        reason,
        (s) => audit.appendSync({ type: 'session.end', session: s.id, chain: [...s.chain], connection: s.connection, reason }),
        worker === null || worker.cleanAll ? undefined : worker.id,
      )
      if (orphans > 0) log.warn({ sessions: orphans }, 'ended sessions left open by a gateway that stopped unexpectedly')
    } catch (err) {
      audit.close()
      throw err
    }
    if (!opts.dev && !config.audit.sinks.some(isExternalAnchor)) {
      auditLog.warn(
        'no external anchor for the audit log: whoever can write the data directory can cut its newest segments undetected; ' +
          'configure an http or syslog sink, or one with checkpoints_only: true, on a host this one cannot write (docs/audit.md)',
      )
    }
    // Sinks, session recordings and retention follow the log from its files, off the data path.
    const auditServices = AuditServices.start({
      audit,
      config: config.audit,
      dataDir: config.dataDir,
      baseDir: config.file ? join(config.file, '..') : process.cwd(),
      log: auditLog,
      worker: worker?.id ?? null,
    })
    const key = await loadOrCreateSigningKey(config.dataDir)
    const apiAddr = config.listen.api
    const issuer = new TokenIssuer(key, issuerFor(config), {
      maxDepth: config.identity.delegation.maxDepth,
      // A root may pass unmask:<rule> to an agent when the loaded masking rules clear its groups.
      mayUnmask: (root, rule) => engine.rootMayUnmask(root, rule),
      onIssued: (t) => store.recordIssued(t.id, t.subject, t.expiresAt),
      scopeProblems: scopeCheckerFor(config, plugins),
    })
    const identity = new IdentityService({
      config: config.identity,
      issuer,
      store,
      audit,
      log: log.child({ component: 'identity' }),
      resolveSecret: (reference) => {
        const ref = parseSecretRef(reference, configDir)
        if (!ref) return Promise.reject(new GatehouseError('GH_ERR_SECRET', `${reference} is not a secret reference`))
        return resolveSecret(ref)
      },
      defaultTtlSeconds: config.tokens.defaultTtlSeconds,
      maxTtlSeconds: config.tokens.maxTtlSeconds,
    })
    const tlsFiles =
      config.tls.cert && config.tls.key ? { cert: config.tls.cert, key: config.tls.key } : await ensureSelfSigned(config.dataDir)
    const tls: TlsMaterial = { secureContext: loadSecureContext(tlsFiles), allowPlaintext: config.tls.allowPlaintext }
    const sessions = new SessionManager(engine, audit, store, log)
    const gw = new Gateway(config, log, store, audit, issuer, engine, sessions, identity, tls)
    gw.auditServices = auditServices
    gw.workerId = worker?.id ?? null
    sessions.metrics = gw.metrics
    audit.timings = { append: gw.metrics.auditAppendTime, sync: gw.metrics.auditSyncTime }
    gw.metrics.attach({
      sessionsOpen: () => sessions.openByProtocol(),
      auditBacklog: () => audit.backlog,
      sinks: async () =>
        (await auditServices.sinkStatus()).map((s) => ({ name: s.name, failures: s.failures, behindBytes: s.behind_bytes })),
      approvalsPending: () => sessions.approvals?.pendingCount() ?? 0,
      policy: () => ({ reloads: engine.reloads, reloadFailures: engine.reloadFailures, lastReloadFailed: !engine.upToDate }),
    })

    try {
      const connectorsAt = config.listen.connectors
      if (config.connectors.length > 0 && connectorsAt) {
        for (const c of config.connections) {
          if (c.via.length > 0) gw.tunnelOnly.add(authorityOf(c.host, c.port))
        }
        for (const c of config.connections) {
          if (c.via.length === 0) gw.tunnelOnly.delete(authorityOf(c.host, c.port))
        }
        const joinTokens = new JoinTokens(store)
        gw.joinToken = async (name, ttl, chain) => {
          if (!config.connectors.some((c) => c.name === name)) throw new Error(`no connector named ${JSON.stringify(name)} (connectors:)`)
          const seconds = ttl === undefined ? JOIN_DEFAULT_TTL_S : parseDuration(ttl)
          if (seconds === null || seconds <= 0 || seconds > JOIN_MAX_TTL_S) {
            throw new Error(`ttl must be a duration like 10m or 1h, at most ${JOIN_MAX_TTL_S / 86400}d`)
          }
          const { token, record } = joinTokens.create(name, seconds)
          const expires = new Date(record.expiresAt * 1000).toISOString()
          await audit.append({
            type: 'connector.join_token',
            session: null,
            chain,
            connection: null,
            connector: name,
            id: record.id,
            expires_at: expires,
          })
          return { token, id: record.id, connector: name, expires_at: expires }
        }
        gw.connectors = new ConnectorHub({
          listen: connectorsAt,
          certificate: { cert: readFileSync(tlsFiles.cert), key: readFileSync(tlsFiles.key) },
          connectors: config.connectors,
          targetsFor: (name) => [
            ...new Set(config.connections.filter((c) => c.via.includes(name)).map((c) => authorityOf(c.host, c.port))),
          ],
          identify: (credential) => identity.identify(credential),
          credentials: {
            redeem: (token, by) => joinTokens.redeem(token, by),
            mint: async (principal, source, ttlSeconds) => {
              const t = await issuer.issue({ subject: principal, ttlSeconds, source, audience: CONNECTOR_AUDIENCE })
              return { token: t.token, identity: (await issuer.verifyToken(t.token, identity.isRevoked, CONNECTOR_AUDIENCE)).identity }
            },
            verify: async (token) => (await issuer.verifyToken(token, identity.isRevoked, CONNECTOR_AUDIENCE)).identity,
            retire: (tokenId) => store.revoke(tokenId, 'replaced by the connector credential that succeeded it'),
          },
          revoked: (id) => id.tokenIds.some((jti) => store.isRevoked(jti)),
          audit: (event) => audit.appendDeferred(event),
          killSession: (id, reason) => sessions.kill(id, reason),
          log: log.child({ component: 'connectors' }),
        })
        await gw.connectors.start()
        if (gw.connectors.address) {
          gw.bound.set('connectors', gw.connectors.address)
          gw.addresses.connectors = fmt(gw.connectors.address)
        }
      }
      // Held commands wait for reviewers (engine/approvals); the webhook secret must resolve.
      sessions.approvals = await startApprovals({
        config,
        audit,
        log,
        requirements: () => engine.approvalRequirements(),
        policyVersion: () => engine.version,
      })
      gw.reloader = new PolicyReloader(policySource, engine, log.child({ component: 'policy' }))
      if (worker) gw.joinPeers(worker.peers)
      // One worker watches the policy source and tells the others what it loaded.
      await gw.reloader.start(worker === null || worker.id === 1)
      for (const l of plugins) {
        const listen = config.listen[l.plugin.name] ?? null
        const handle = await l.plugin.start(gw.contextFor(l.plugin), l.options)
        gw.handles.push({ name: l.plugin.name, handle })
        if (handle.address) gw.bound.set(l.plugin.name, handle.address)
        if (handle.address) gw.addresses[l.plugin.name] = fmt(handle.address)
        else if (listen) gw.addresses[l.plugin.name] = fmt(listen)
      }
      if (apiAddr) {
        gw.api = await buildApi({
          issuer,
          store,
          sessions,
          audit,
          auditServices,
          identity,
          maxTtlSeconds: config.tokens.maxTtlSeconds,
          defaultTtlSeconds: config.tokens.defaultTtlSeconds,
          log,
          version: () => ({ policy: engine.version }),
          policy: () => engine.status(),
          approvals: sessions.approvals,
          mounts: gw.mounts,
          connectors: () => gw.connectors?.list() ?? [],
          ...(gw.joinToken ? { joinToken: gw.joinToken } : {}),
          rotateAdmin: async (chain) => {
            const r = await rotateAdminToken(config.dataDir, issuer, store, audit, chain)
            gw.adminToken = r.token
            // Whoever still holds the replaced token (a psql session opened with it) is cut off now.
            if (r.replaced) await sessions.killByTokenEverywhere(r.replaced, 'the admin token was rotated')
            return { id: r.id, revoked: r.replaced }
          },
          metrics: gw.metrics,
          metricsAuth: config.metrics.auth,
          readiness: () => gw.readiness(),
          console: { url: config.console.url, tokenLogin: config.console.tokenLogin || opts.dev === true },
        })
        await gw.api.listen({ host: apiAddr.host, port: apiAddr.port }).catch((err: unknown) => {
          throw new GatehouseError(
            'GH_ERR_CONFIG',
            `listen.api ${fmt(apiAddr)}: cannot listen (${(err as NodeJS.ErrnoException).code ?? String(err)})`,
            {
              cause: err,
            },
          )
        })
        const a = gw.api.server.address()
        if (a && typeof a === 'object') gw.addresses.api = fmt({ host: a.address, port: a.port })
        if (a && typeof a === 'object') gw.bound.set('api', { host: a.address, port: a.port })
      }
    } catch (err) {
      await gw.stop('gateway failed to start')
      throw err
    }

    // One admin credential across starts (engine/server/admin-token.ts): reused while it verifies.
    const admin = await loadOrMintAdminToken(config.dataDir, issuer, store, audit).catch(async (err: unknown) => {
      await gw.stop('gateway failed to start')
      throw err
    })
    gw.adminToken = admin.token
    const run: RunInfo = {
      pid: process.pid,
      api: gw.addresses.api ? `http://${gw.addresses.api}` : null,
      listeners: { ...gw.addresses },
      started: new Date().toISOString(),
    }
    // Written whole and renamed into place: the CLI and scripts read it as soon as it exists. The
    // primary of several workers writes it once they are all ready.
    if (!worker) writeAtomically(runInfoPath(config.dataDir), `${JSON.stringify(run, null, 2)}\n`)
    // A first worker that replaces a crashed one may have loaded a policy the others have not yet.
    else if (worker.id === 1) void worker.peers.tell(policyMessage(bundle))
    gw.serving = true
    log.info({ listeners: gw.addresses, dataDir: config.dataDir }, 'gatehouse ready')
    return gw
  }

  /** Acts on what the other workers tell this one (engine/peers.ts), and tells them what it decides. */
  private joinPeers(peers: Peers): void {
    this.sessions.peers = peers
    if (this.sessions.approvals) this.sessions.approvals.announce = (request) => void peers.tell({ kind: 'approval', request })
    if (this.reloader)
      this.reloader.beforeSwap = async (bundle) => {
        await peers.tell(policyMessage(bundle))
      }
    peers.listen((m: PeerMessage): number | Promise<number> => {
      switch (m.kind) {
        case 'revoke':
          return this.sessions.killByToken(m.jti, m.reason)
        case 'kill':
          return this.sessions.kill(m.session, m.reason) ? 1 : 0
        case 'approval':
          this.sessions.approvals?.decidedElsewhere(m.request)
          return 0
        case 'policy':
          // Answered once loaded: the worker that compiled it swaps it in after every other has.
          return m.version === this.engine.version ? 0 : this.loadFromPeer(m).then(() => 0)
      }
    })
  }

  /** Loads the bundle another worker compiled (the same bytes: no compile here). */
  private async loadFromPeer(m: Extract<PeerMessage, { kind: 'policy' }>): Promise<void> {
    try {
      const bundle = await instantiate(m.source, m.version, Buffer.from(m.wasm, 'base64'), m.data, m.rego)
      if (bundle.version === this.engine.version) return
      const previous = this.engine.version
      this.engine.swap(bundle)
      this.log.info({ version: bundle.version, previous, source: m.source }, 'policy reloaded (compiled by another worker)')
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err)
      this.engine.reloadFailed(why)
      this.log.error({ why }, 'cannot load the policy bundle another worker loaded; the loaded bundle keeps deciding')
    }
  }

  /** What /readyz reports: every listener bound, the audit log writable, the policy source loaded. */
  readiness(): Readiness {
    const listeners: ReadinessCheck = !this.serving
      ? { ok: false, detail: this.stopping ? 'the gateway is stopping' : 'the gateway is starting' }
      : {
          ok: true,
          detail: Object.entries(this.addresses)
            .map(([name, a]) => `${name} ${a}`)
            .join(', '),
        }
    const audit = this.auditCheck()
    const policy = this.policyCheck()
    return { ready: listeners.ok && audit.ok && policy.ok, checks: { listeners, audit, policy } }
  }

  private auditCheck(): ReadinessCheck {
    if (!this.audit.isOpen) return { ok: false, detail: 'the audit log is closed' }
    try {
      // Read-only file systems fail this even for root; a full one shows in statfs.
      accessSync(this.audit.dir, fsConstants.W_OK)
      const fs = statfsSync(this.audit.dir)
      const free = fs.bavail * fs.bsize
      if (free < AUDIT_MIN_FREE_BYTES) return { ok: false, detail: `the audit file system has ${free} bytes free` }
      return { ok: true, detail: `${free} bytes free` }
    } catch (err) {
      return { ok: false, detail: `the audit directory is not writable (${(err as NodeJS.ErrnoException).code ?? String(err)})` }
    }
  }

  private policyCheck(): ReadinessCheck {
    const st = this.engine.status()
    if (this.engine.upToDate) return { ok: true, detail: `version ${st.version}` }
    return { ok: false, detail: `the last reload failed (version ${st.version} still decides): ${st.last_error ?? 'no bundle loaded'}` }
  }

  private contextFor(plugin: AnyProxyPlugin): PluginContext<CapabilityName> {
    return pluginContext(this, plugin, {
      tls: this.tls,
      bound: this.bound,
      mounts: this.mounts,
      tunnelOnly: this.tunnelOnly,
      apiStarted: () => this.api !== null,
    })
  }

  /** Ends every session with `reason`, stops listeners and the API, flushes the audit. */
  stop(reason: string): Promise<void> {
    if (!this.stopping) this.stopping = this.doStop(reason)
    return this.stopping
  }

  private async doStop(reason: string): Promise<void> {
    this.serving = false
    await this.reloader?.close().catch(() => undefined)
    await Promise.allSettled(this.handles.map((h) => h.handle.stop(reason)))
    this.sessions.terminateAll(reason)
    await this.connectors?.stop(reason)
    if (this.api) await this.api.close().catch(() => undefined)
    this.identity.close()
    this.sessions.approvals?.close()
    this.audit.close()
    // After the shutdown checkpoint is written, so the sinks get it too.
    await this.auditServices?.stop()
    this.store.close()
    const run = runInfoPath(this.config.dataDir)
    if (this.workerId === null && existsSync(run)) rmSync(run, { force: true })
    this.log.info({ reason }, 'gatehouse stopped')
  }
}

/**
 * The data directory holds the signing keys, the admin token and the audit log: a directory
 * another user owns, or one others may write, would let them swap keys or cut the log, so the
 * gateway refuses it rather than start on it.
 */
export function checkDataDirOwnership(dir: string): void {
  const st = statSync(dir)
  if (!st.isDirectory()) throw new GatehouseError('GH_ERR_CONFIG', `data_dir ${dir}: not a directory`)
  const uid = process.getuid?.()
  if (uid !== undefined && st.uid !== uid) {
    throw new GatehouseError(
      'GH_ERR_CONFIG',
      `data_dir ${dir}: owned by uid ${st.uid}, but the gateway runs as uid ${uid}; it holds keys and the audit log, so it must belong to the user that runs the gateway (chown it, or choose another data_dir)`,
    )
  }
  if ((st.mode & 0o022) !== 0) {
    throw new GatehouseError(
      'GH_ERR_CONFIG',
      `data_dir ${dir}: mode ${(st.mode & 0o777).toString(8).padStart(4, '0')} lets other users write it; it holds keys and the audit log (chmod 700 ${dir})`,
    )
  }
}

/** Writes a file so that a reader sees either nothing or the whole content, never a torn file. */
function writeAtomically(path: string, content: string): void {
  const tmp = `${path}.${process.pid}.tmp`
  writeFileSync(tmp, content, { mode: 0o600 })
  renameSync(tmp, path)
}
