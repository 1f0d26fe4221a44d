// The contract every protocol plugin implements, built-in or third-party. A plugin owns a
// listener and a wire protocol: it turns bytes into typed commands, asks `decide`, and applies the
// answer in its protocol's own terms. It gets this narrow context, never the engine: identity,
// policy, secrets and audit stay on the engine's side of the seam.
//
// A third-party plugin is an ES module whose default export (or named export `plugin`) is a
// ProxyPlugin; it is loaded from `plugins:` in the config by path or package name.
//
// What a plugin receives has two parts: the core every plugin gets (ProxyContext: openSession,
// decide, audit, dial, log, TLS, limits, its state directory) and capabilities it asks for by name
// (`capabilities: ['httpMounts']`), typed so that a plugin that did not ask cannot reach them.
// docs/plugins.md walks through writing one.

import type { ZodType } from 'zod'
import type { Socket } from 'node:net'
import type { SecureContext } from 'node:tls'
import type { Logger } from 'pino'
import type { GatehouseError } from '../engine/errors.js'
import type { TerminalRecording } from '../engine/audit/recording.js'
import type {
  Address,
  Command,
  ConnectionRef,
  Decision,
  DecisionRequest,
  Identity,
  PossibleMasks,
  SecretProver,
  SessionAuditEvent,
} from '../engine/types.js'
import type { ApprovalAsk, ApprovalOutcome } from '../engine/approvals/types.js'
import type { HttpHandler } from '../engine/server/api.js'

export type {
  Address,
  AuditEvent,
  Command,
  ConnectionRef,
  Decision,
  DecisionRequest,
  Identity,
  MaskObligation,
  PossibleMasks,
  SecretProver,
  SessionAuditEvent,
} from '../engine/types.js'
export type { ApprovalAsk, ApprovalOutcome } from '../engine/approvals/types.js'
export type { HttpHandler, HttpMount } from '../engine/server/api.js'
export type { GatehouseError, GatehouseErrorCode } from '../engine/errors.js'
export type { TerminalRecording } from '../engine/audit/recording.js'

/**
 * The version of this contract. A plugin declares the version it was written for (`contract`);
 * the loader refuses any other with a message naming both, instead of failing later at a call.
 */
export const PLUGIN_CONTRACT = 1

/** Audit event types any plugin may write; everything else it writes is `<plugin name>.<event>`. */
export const PLUGIN_AUDIT_TYPES = ['statement', 'result'] as const

/** An audit event type a plugin writes: a shared one, or one in its own namespace (`http.retry`). */
export type PluginAuditEventType = (typeof PLUGIN_AUDIT_TYPES)[number] | `${string}.${string}`

export interface ProxyPlugin<O extends object = Record<string, unknown>, C extends CapabilityName = never> {
  /** The protocol name: `connections[].protocol` and the `listen:` key refer to it. Unique. */
  readonly name: string
  /** The contract version the plugin was written for: PLUGIN_CONTRACT. */
  readonly contract: number
  /** Other plugins this one needs loaded (by name), checked at load with a clear error. */
  readonly requires?: readonly string[]
  /** Capabilities beyond the core context; each one named here appears on `ctx`. */
  readonly capabilities?: readonly C[]
  /** Connection settings whose values are secret references (`env:…`, `file:…`), never literals. */
  readonly secretKeys?: readonly string[]
  /**
   * Of `secretKeys`, those a connection reached through a connector may leave with the connector
   * (`connector:env:NAME`, `connector:file:PATH`): the plugin authenticates with the session's
   * `provers` instead of the value. Any other key refuses such a reference at start.
   */
  readonly provableSecretKeys?: readonly string[]
  /** The actions this plugin asks policy about (`sql.read`, `ssh.exec`): scopes are checked against them. */
  readonly actions?: readonly string[]
  /**
   * The schema of this protocol's connection keys (beyond name, protocol, address, labels): part
   * of the configuration's schema, checked at start with the same "key: what is wrong" messages,
   * and included in `gatehouse config schema`. A zod schema (zod is a dependency of Gatehouse).
   */
  readonly connectionSchema?: ZodType
  /** Checks protocol-specific connection settings; returns problems as "key: what is wrong". */
  validateConnection?(settings: Readonly<Record<string, unknown>>): string[]
  start(ctx: PluginContext<C>, opts: O): Promise<ProxyHandle>
}

/** Any plugin, whatever its options and capabilities (what the loader holds). */
export type AnyProxyPlugin = ProxyPlugin<object, CapabilityName>

export interface ProxyHandle {
  /** Where the listener is bound (the real port when the config asked for port 0). */
  readonly address: Address | null
  /** Stops accepting and ends every session of this plugin, telling clients `reason`. */
  stop(reason: string): Promise<void>
}

export interface ClientInfo {
  /** `ip:port` of the caller. */
  readonly address: string
  /** What the client claims (a PostgreSQL `user`, an SSH user name): recorded, never trusted. */
  readonly user?: string
  readonly application?: string
}

export interface OpenSessionRequest {
  /** The bearer credential the client presented (a Gatehouse token). */
  readonly credential: string
  /**
   * Instead of a credential: the caller proved possession of this public key (the plugin verified
   * its signature in the protocol); the engine finds the principal it is registered to.
   */
  readonly publicKey?: { readonly fingerprint: string }
  /** The connection name the client asked for. */
  readonly connection: string
  readonly client: ClientInfo
}

export type OpenSessionResult =
  | { readonly ok: true; readonly session: ProxySession }
  | { readonly ok: false; readonly error: GatehouseError }

/** A session the engine has admitted: identified, allowed to connect, secrets resolved. */
export interface ProxySession {
  readonly id: string
  readonly identity: Identity
  readonly connection: ConnectionRef
  /** The connection's target address and protocol-specific settings from the config. */
  readonly target: Address
  readonly settings: Readonly<Record<string, unknown>>
  /** Resolved values of `secretKeys`, for this session only. Never log, audit or echo them. */
  readonly secrets: ReadonlyMap<string, string>
  /**
   * The `provableSecretKeys` whose secret the session's connector holds (`connector:env:NAME`):
   * not in `secrets`, proven on request. A plugin without a prover for a key it needs fails the
   * session; it never asks the connector for the secret itself.
   */
  readonly provers?: ReadonlyMap<string, SecretProver>
  /** Decides one command for every hop of this session's chain. Throws only on engine failure.
   * `approval` is passed to policy as input.approval; only after `requestApproval` answered
   * `granted` for this very command may a plugin pass `{granted: true}`. */
  decide(action: string, command: Command, signal?: AbortSignal, approval?: { readonly granted: boolean }): Promise<Decision>
  /**
   * The masking that may come with this session's decisions of `actions`, before any is made: the
   * masking.yaml obligations on its connection and whether Rego `mask` entries may add to them.
   * Absent (an older engine): take it that anything may be masked.
   */
  possibleMasks?(actions: readonly string[]): PossibleMasks
  /** A held command: uses a matching grant, or files an approval request and (unless `wait` is
   * false) waits for the reviewers' decision. Never blocks other sessions. Rejects only when the
   * request cannot be recorded (audit or state failure): the plugin then refuses the command. */
  requestApproval?(req: ApprovalAsk): Promise<ApprovalOutcome>
  /** Appends an event stamped with this session; resolves when durable, rejects when not. */
  audit(event: SessionAuditEvent): Promise<void>
  /** Appends an event describing finished work; written with the next durable append. */
  auditLater(event: SessionAuditEvent): void
  /** Called at most once when the engine ends the session (kill, revocation, shutdown). */
  onTerminate(handler: (reason: string) => void): void
  /** Records the session's end. Idempotent. */
  end(reason: string): void
}

/**
 * A session with the synchronous fast path (capability `fastPath`): for a plugin whose per-command
 * cost matters (the PostgreSQL proxy). The answers are the same as `decide` and `audit`.
 */
export interface FastPathSession extends ProxySession {
  /** `decide`, answered directly (the same decision). */
  decideNow(action: string, command: Command, signal?: AbortSignal): Decision
  /** While this returns the same object, `decideNow` answers commands that differ only in
   * `command.sql` alike; null: no such promise. */
  decisionEpoch(): object | null
  /** `audit` without a promise where the log allows it: true once the event is durable (in the OS,
   * with `fsync: batched`); false, having written nothing, when durability needs an await (`fsync:
   * always`: use `audit`). Throws GH_ERR_AUDIT when the append fails. */
  auditNow(event: SessionAuditEvent): boolean
  /** `audit`, written with every append of the same event-loop turn (all sessions') in one
   * write(2): resolves once the event is durable as `audit`'s does, so the work goes ahead after it. */
  auditGrouped(event: SessionAuditEvent): Promise<void>
}

/** An audit event outside a session, as a plugin writes it (same type rule as SessionAuditEvent). */
export interface PluginAuditEvent {
  readonly type: PluginAuditEventType
  readonly session: string | null
  readonly chain: readonly string[]
  readonly connection: string | null
  readonly [key: string]: unknown
}

export interface TlsMaterial {
  /** The gateway's server certificate for client-facing TLS. */
  readonly secureContext: SecureContext
  /** Whether tokens may travel in plaintext from non-loopback clients (config `tls.allow_plaintext`). */
  readonly allowPlaintext: boolean
}

/** The core every plugin gets. */
export interface ProxyContext {
  /** This plugin's name (its audit namespace). */
  readonly plugin: string
  /** From `listen.<plugin name>` in the config; null when the config gives none. */
  readonly listen: Address | null
  readonly limits: { readonly maxMessageBytes: number }
  readonly tls: TlsMaterial
  readonly log: Logger
  /** Identify, look up the connection, decide `connect`, resolve secrets, audit session.start. */
  openSession(req: OpenSessionRequest): Promise<OpenSessionResult>
  /** Decides a command outside a session (most plugins use ProxySession.decide). */
  decide(req: DecisionRequest, signal?: AbortSignal): Promise<Decision>
  /** Appends an event outside a session; resolves when durable. */
  audit(event: PluginAuditEvent): Promise<void>
  /** Opens a byte stream to a target: direct TCP today, a connector's tunnel later. */
  dial(target: Address, signal?: AbortSignal): Promise<Socket>
  /** This plugin's own directory under the data directory (created, mode 0700): keys it must keep. */
  readonly stateDir: string
}

/** What a plugin may ask for beyond the core, by name in `capabilities`. */
export interface Capabilities {
  /** The synchronous decide/audit path (see FastPathSession). */
  readonly fastPath: FastPath
  /** Handlers on the API listener. */
  readonly httpMounts: HttpMounts
  /** The rest of the gateway: its issuer, token checks, other listeners, the connection list. */
  readonly gateway: GatewayDirectory
  /** Session recordings: terminals (asciicast) and entries on a session's timeline. */
  readonly recordings: Recordings
}

export type CapabilityName = keyof Capabilities

/** The names the loader accepts in `capabilities`. */
export const CAPABILITY_NAMES: readonly CapabilityName[] = ['fastPath', 'httpMounts', 'gateway', 'recordings']

/** The context a plugin that asked for capabilities `C` receives. */
export type PluginContext<C extends CapabilityName = never> = ProxyContext & { readonly [K in C]: Capabilities[K] }

export interface FastPath {
  /** The fast path of a session this plugin opened. */
  session(session: ProxySession): FastPathSession
}

export interface HttpMounts {
  /**
   * Serves `path` and everything under it on the API listener. Call it during `start` (the API
   * starts after the plugins). The routes are public: the handler authenticates its callers.
   */
  mount(path: string, handler: HttpHandler): void
}

export interface GatewayDirectory {
  /** The gateway's token issuer URL: the default audience of its tokens and the API's public URL. */
  readonly issuer: string
  /** Identifies a bearer credential exactly as openSession does (audience: the issuer), with no connection. */
  identify(credential: string): Promise<Identity>
  /** True when any token of `identity`'s chain is revoked now (a point lookup, no signature check). */
  revoked(identity: Identity): boolean
  /** Where the listener of plugin `name` (or `api`) is bound, once started; null when it has none. */
  listener(name: string): Address | null
  /** The configured connections: names, protocols and labels only (no settings, no secrets). */
  connections(): readonly ConnectionRef[]
  /**
   * The configured settings of a connection of this plugin's own protocol, as written (secret
   * references, never their values); null for an unknown name or another protocol's connection.
   * For what a plugin must know before any session exists (the HTTP proxy's host names).
   */
  connectionSettings(name: string): Readonly<Record<string, unknown>> | null
}

export interface Recordings {
  /**
   * Opens an asciicast v2 recording of a terminal (shell or exec) of `session`, with the session,
   * its chain and connection in the header; null when recordings are switched off.
   */
  terminal(session: ProxySession, meta: TerminalMeta): TerminalRecording | null
  /**
   * Adds an entry to `session`'s timeline recording (what `gatehouse sessions replay` shows), never
   * to the audit log: the plugin redacts credentials and caps sizes before calling. `type` is
   * `<plugin name>.<entry>`. Does nothing when recordings are off for the connection.
   */
  entry(session: ProxySession, type: string, fields: Readonly<Record<string, unknown>>): void
}

export interface TerminalMeta {
  readonly cols: number
  readonly rows: number
  readonly title?: string
  readonly env?: Record<string, string>
  /** Record what the caller types too (connection setting `record_input: true`). */
  readonly recordInput?: boolean
}

/**
 * The gateway's own verdict on a command that did not run, as data for a caller that asked for it
 * (the SSH status line, the MCP tools' results): denied (by which rule, at which hop of the chain),
 * or held for approval (the request to poll and who may approve it).
 */
export type GatewayRefusal =
  | {
      readonly status: 'denied'
      readonly rule: string | null
      readonly hop: string | null
      readonly reason: string
      readonly message: string
    }
  | {
      readonly status: 'held'
      readonly request_id: string | null
      readonly approvers: readonly string[]
      readonly rules: readonly string[]
      readonly message: string
    }

/** A refusal, or `error`: the gateway could not decide, record or reach the target. */
export type GatewayStatus = GatewayRefusal | { readonly status: 'error'; readonly message: string }
