// The shapes every part of Gatehouse shares: who is asking (principals and chains), what they
// ask (the decision input of the policy contract, docs/policies.md), what the engine answers, and what the
// audit log records. Proxies see these types; they never see the engine's internals.

export type PrincipalKind = 'user' | 'workload' | 'service' | 'agent'

/** One identity in a chain. `id` is `<kind>:<name>` (`user:alice`, `agent:summarizer`). */
export interface Principal {
  readonly id: string
  readonly kind: PrincipalKind
  readonly groups: readonly string[]
  /** Scope of the token this hop holds; empty means "whatever its parent could". */
  readonly scope: readonly string[]
}

/** An authenticated caller: the chain (root first) plus the token that proved it. */
export interface Identity {
  /** Root first; the last entry is the principal presenting the token. */
  readonly chain: readonly Principal[]
  /** The token id (`jti`) of the presenting token, and of every ancestor, root first. */
  readonly tokenIds: readonly string[]
  /** Unix seconds at which the presenting token expires. */
  readonly expiresAt: number
}

export interface ConnectionRef {
  readonly name: string
  readonly protocol: string
  readonly labels: Readonly<Record<string, string>>
  /** The connector carrying this session, for connections configured `via` connectors (policy
   * reads it as `input.connection.via`). Absent: the gateway dials the target itself. */
  readonly via?: string
}

/** The `command` part of the decision input; proxies add their own fields. */
export interface Command {
  readonly [key: string]: unknown
}

export interface DecisionTime {
  readonly rfc3339: string
  readonly unix: number
  readonly weekday: string
  readonly hour: number
  readonly minute: number
}

/** What a proxy asks about: the engine adds principal, chain and time itself. */
export interface DecisionRequest {
  readonly identity: Identity
  readonly connection: ConnectionRef
  readonly action: string
  readonly command: Command
  readonly approval?: { readonly granted: boolean }
}

/** The input document handed to policy, once per hop (docs/policies.md, "The policy contract"). */
export interface DecisionInput {
  readonly principal: Principal
  readonly chain: readonly Pick<Principal, 'id' | 'kind' | 'groups'>[]
  readonly connection: ConnectionRef
  readonly action: string
  readonly command: Command
  readonly approval: { readonly granted: boolean }
  readonly time: DecisionTime
}

export interface MaskObligation {
  readonly rule: string
  readonly column: string
  readonly strategy: 'redact' | 'partial' | 'hash' | 'hash_session' | 'null'
  readonly keep?: number
  /** A value detector to run on unclassified text columns (rule `detector:<name>`, column ''). */
  readonly detector?: string
  /** A JSONPath masked in JSON bodies (HTTP and other JSON protocols; column ''). */
  readonly json_path?: string
}

/**
 * The masking that may come with a session's decisions of some actions, known before any of them
 * is made: the masking.yaml obligations of its chain on its connection (what every decision there
 * carries) and whether the policy's Rego `mask` rules may add entries (engine/policy/mask-scope.ts;
 * true when that cannot be told).
 */
export interface PossibleMasks {
  readonly known: readonly MaskObligation[]
  readonly policy: boolean
}

export interface DenyReason {
  readonly rule: string
  readonly reason: string
  /** The principal id of the hop whose evaluation produced this reason. */
  readonly hop: string
}

export type Decision =
  | {
      readonly effect: 'allow'
      readonly rules: readonly string[]
      readonly mask: readonly MaskObligation[]
      readonly policy: string
      /** From masking.yaml, present whenever `mask` is not empty. */
      readonly maskOptions?: { readonly strictPredicates: boolean; readonly unknownLineage: 'refuse' | 'mask' }
    }
  | {
      readonly effect: 'deny'
      readonly rules: readonly string[]
      readonly reason: string
      readonly reasons: readonly DenyReason[]
      readonly policy: string
    }
  | {
      readonly effect: 'hold'
      readonly rules: readonly string[]
      readonly approvers: readonly string[]
      readonly policy: string
      /** Which requirements asked (approvals.yaml entries and Rego `approval` entries): who must
       * approve, how many, and what the approval grants. Absent: one approval by any approver, once. */
      readonly requirements?: readonly HoldRequirement[]
    }

/** One approval requirement behind a hold (engine/approvals uses it to pick reviewers and the grant). */
export interface HoldRequirement {
  readonly rule: string
  readonly group: string
  /** Distinct members of `group` who must approve. */
  readonly count: number
  /** once: this exact command; window: the action on the connection for `window_seconds`. */
  readonly grant: 'once' | 'window'
  readonly window_seconds: number | null
  readonly reason: string
}

export type AuditEventType =
  | 'session.start'
  | 'session.end'
  | 'session.refused'
  | 'statement'
  | 'result'
  | 'approval.requested'
  | 'approval.decided'
  | 'approval.granted'
  | 'approval.used'
  | 'token.issued'
  | 'token.revoked'
  // Connectors (engine/connector): a link authenticated, refused, or dropped (with the sessions it
  // carried); a joined connector's short-lived credential replaced; a join token created.
  | 'connector.attached'
  | 'connector.refused'
  | 'connector.detached'
  | 'connector.rotated'
  | 'connector.join_token'
  // The web console (engine/console): a person signed in or out.
  | 'console.login'
  | 'console.logout'
  // The audit log's own records (engine/audit/format.ts): segment headers, signed checkpoints,
  // retention prunes, and a count of result events dropped while the disk refused writes.
  | 'audit.segment'
  | 'audit.checkpoint'
  | 'audit.prune'
  | 'audit.lost'

/**
 * A plugin's own event type, in its namespace: `<plugin name>.<event>` (`mcp.call`, `http.retry`).
 * The gateway refuses a plugin's event outside its namespace and the shared statement/result.
 */
export type PluginEventType = `${string}.${string}`

/** One audit record. Every event has id, time, type, session, chain and connection. */
export interface AuditEvent {
  readonly type: AuditEventType | PluginEventType
  readonly session: string | null
  readonly chain: readonly string[]
  readonly connection: string | null
  readonly [key: string]: unknown
}

export interface StoredAuditEvent extends AuditEvent {
  readonly id: string
  readonly time: string
}

/** A host and port: a listener or a connection's target. */
export interface Address {
  readonly host: string
  readonly port: number
}

/**
 * An audit event as a plugin writes it: the session fills in session, chain and connection. Its
 * type is `statement`, `result` or `<plugin name>.<event>`; any other is refused (GH_ERR_AUDIT).
 */
export interface SessionAuditEvent {
  readonly type: 'statement' | 'result' | PluginEventType
  readonly [key: string]: unknown
}

/**
 * Proofs of a secret that only a connector holds (`password: connector:env:NAME` on a connection
 * reached through it): the connector computes them from its own copy, so the gateway runs the
 * target's authentication without ever holding the secret. Rejects with GH_ERR_SECRET when the
 * connector cannot or may not answer.
 */
export interface SecretProver {
  /** What the connector resolves the secret from (`env:NAME`, `file:PATH`), for messages. */
  readonly ref: string
  /**
   * SCRAM-SHA-256 (RFC 5802, as PostgreSQL speaks it): the client-final-message answering
   * `serverFirst` for the gateway's `clientFirstBare`, and the server signature to expect in the
   * server-final-message (base64).
   */
  scramSha256(
    clientFirstBare: string,
    serverFirst: string,
    signal?: AbortSignal,
  ): Promise<{ readonly clientFinal: string; readonly serverSignature: string }>
  /** PostgreSQL's md5 answer: "md5" + md5(md5(secret + user) + salt). */
  md5(user: string, salt: Buffer, signal?: AbortSignal): Promise<string>
  /** SSH: the public key (OpenSSH one-line form) of the private key the connector keeps. */
  sshPublicKey(signal?: AbortSignal): Promise<string>
  /**
   * SSH: the signature of `data` by that key, as ssh2 signs it (`hash` for RSA: sha256, sha512).
   * The connector signs only an SSH user-authentication request for that key.
   */
  sshSign(data: Buffer, hash: string | undefined, signal?: AbortSignal): Promise<Buffer>
}
