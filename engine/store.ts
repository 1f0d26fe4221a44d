// Embedded state in <data_dir>/state.db (SQLite through better-sqlite3): revoked token ids, the
// session index (live and ended), service-account API keys and connector join tokens (hashes
// only), so the CLI can answer when no server runs and a restart knows what was revoked. The
// audit log is not here: it is append-only files (engine/audit/writer.ts).

import Database from 'better-sqlite3'
import { join } from 'node:path'
import { mkdirSync } from 'node:fs'
import { GatehouseError } from './errors.js'

export interface SessionRecord {
  readonly id: string
  readonly connection: string
  readonly protocol: string
  readonly chain: readonly string[]
  readonly tokenIds: readonly string[]
  readonly client: string
  readonly startedAt: string
  readonly endedAt: string | null
  readonly endReason: string | null
  /** The worker process that serves it (`serve --workers N`); null: a single-process gateway. */
  readonly worker: number | null
}

/** A service-account API key as stored: never the secret, only its SHA-256. */
export interface ServiceKeyRecord {
  readonly id: string
  /** `service:<name>`. */
  readonly principal: string
  readonly groups: readonly string[]
  readonly scope: readonly string[]
  readonly description: string | null
  /** Hex SHA-256 of the key's secret part. */
  readonly hash: string
  /** Unix seconds. */
  readonly createdAt: number
  readonly expiresAt: number
  /** The key that replaced this one by rotation, if any. */
  readonly rotatedTo: string | null
}

/** A connector join token as stored: never the secret, only its SHA-256. */
export interface JoinTokenRecord {
  readonly id: string
  /** The configured connector it joins as. */
  readonly connector: string
  readonly hash: string
  /** Unix seconds. */
  readonly createdAt: number
  readonly expiresAt: number
  readonly usedAt: number | null
  /** The address that redeemed it. */
  readonly usedBy: string | null
}

interface JoinTokenRow {
  id: string
  connector: string
  hash: string
  created_at: number
  expires_at: number
  used_at: number | null
  used_by: string | null
}

interface ServiceKeyRow {
  id: string
  principal: string
  groups: string
  scope: string
  description: string | null
  hash: string
  created_at: number
  expires_at: number
  rotated_to: string | null
}

interface SessionRow {
  id: string
  connection: string
  protocol: string
  chain: string
  token_ids: string
  client: string
  started_at: string
  ended_at: string | null
  end_reason: string | null
  worker: number | null
}

export class Store {
  private readonly db: Database.Database
  private readonly revokedStmt: Database.Statement<[string], { jti: string }>
  private readonly insertSession: Database.Statement<[string, string, string, string, string, string, string, number | null]>
  private readonly endSessionStmt: Database.Statement<[string, string, string]>
  private serviceKeyStmt: Database.Statement<[string], ServiceKeyRow> | undefined

  constructor(dataDir: string, opts: { readonly?: boolean } = {}) {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 })
    const file = join(dataDir, 'state.db')
    try {
      this.db = new Database(file, { readonly: opts.readonly ?? false, fileMustExist: opts.readonly ?? false })
    } catch (err) {
      throw new GatehouseError('GH_ERR_STATE', `${file}: cannot open the state database (${(err as Error).message})`, { cause: err })
    }
    if (!opts.readonly) {
      this.db.pragma('journal_mode = WAL')
      this.db.pragma('busy_timeout = 5000')
      this.db.exec(`
        CREATE TABLE IF NOT EXISTS revoked_tokens (jti TEXT PRIMARY KEY, revoked_at TEXT NOT NULL, reason TEXT);
        CREATE TABLE IF NOT EXISTS issued_tokens (jti TEXT PRIMARY KEY, subject TEXT NOT NULL, expires_at INTEGER NOT NULL);
        CREATE TABLE IF NOT EXISTS sessions (
          id TEXT PRIMARY KEY, connection TEXT NOT NULL, protocol TEXT NOT NULL, chain TEXT NOT NULL,
          token_ids TEXT NOT NULL, client TEXT NOT NULL, started_at TEXT NOT NULL,
          ended_at TEXT, end_reason TEXT);
        CREATE TABLE IF NOT EXISTS service_keys (
          id TEXT PRIMARY KEY, principal TEXT NOT NULL, groups TEXT NOT NULL, scope TEXT NOT NULL,
          description TEXT, hash TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
          rotated_to TEXT);
      `)
      // Added with `serve --workers`: which worker serves a session (null: a single process).
      const columns = this.db.prepare('PRAGMA table_info(sessions)').all() as { name: string }[]
      if (!columns.some((c) => c.name === 'worker')) this.db.exec('ALTER TABLE sessions ADD COLUMN worker INTEGER')
    }
    this.revokedStmt = this.db.prepare('SELECT jti FROM revoked_tokens WHERE jti = ?')
    this.insertSession = this.db.prepare(
      'INSERT INTO sessions (id, connection, protocol, chain, token_ids, client, started_at, worker) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
    )
    this.endSessionStmt = this.db.prepare('UPDATE sessions SET ended_at = ?, end_reason = ? WHERE id = ? AND ended_at IS NULL')
  }

  isRevoked(jti: string): boolean {
    return this.revokedStmt.get(jti) !== undefined
  }

  /** Remembers a token id this gateway issued, so a revocation can tell a known id from a typo. */
  recordIssued(jti: string, subject: string, expiresAt: number): void {
    this.db.prepare('INSERT OR IGNORE INTO issued_tokens (jti, subject, expires_at) VALUES (?, ?, ?)').run(jti, subject, expiresAt)
  }

  /** Whether `id` names a token this gateway issued or a service-account key. */
  isKnownCredential(id: string): boolean {
    if (this.db.prepare('SELECT 1 FROM issued_tokens WHERE jti = ?').get(id) !== undefined) return true
    return this.getServiceKey(id) !== null || this.getJoinToken(id) !== null
  }

  revoke(jti: string, reason: string | null): boolean {
    const r = this.db
      .prepare('INSERT OR IGNORE INTO revoked_tokens (jti, revoked_at, reason) VALUES (?, ?, ?)')
      .run(jti, new Date().toISOString(), reason)
    return r.changes > 0
  }

  recordSessionStart(s: Omit<SessionRecord, 'endedAt' | 'endReason'>): void {
    this.insertSession.run(
      s.id,
      s.connection,
      s.protocol,
      JSON.stringify(s.chain),
      JSON.stringify(s.tokenIds),
      s.client,
      s.startedAt,
      s.worker,
    )
  }

  recordSessionEnd(id: string, reason: string): void {
    this.endSessionStmt.run(new Date().toISOString(), reason, id)
  }

  /**
   * Sessions a previous process left open (it was killed) are closed with `reason`. `record` is
   * called for each first (the audit's `session.end`); if it throws, none is closed. Call this
   * only while holding the audit writer lock: otherwise the open sessions may be those of another
   * gateway that is running. With `worker`, only that worker's sessions (its predecessor was
   * killed; the other workers' sessions are alive).
   */
  closeOrphanedSessions(reason: string, record: (s: SessionRecord) => void, worker?: number): number {
    const close = this.db.transaction((): number => {
      const rows = (
        worker === undefined
          ? this.db.prepare('SELECT * FROM sessions WHERE ended_at IS NULL ORDER BY started_at, id').all()
          : this.db.prepare('SELECT * FROM sessions WHERE ended_at IS NULL AND worker = ? ORDER BY started_at, id').all(worker)
      ) as SessionRow[]
      const now = new Date().toISOString()
      for (const r of rows) {
        record(toRecord(r))
        this.endSessionStmt.run(now, reason, r.id)
      }
      return rows.length
    })
    return close()
  }

  listSessions(opts: { activeOnly?: boolean; limit?: number } = {}): SessionRecord[] {
    const where = opts.activeOnly ? 'WHERE ended_at IS NULL' : ''
    const rows = this.db.prepare(`SELECT * FROM sessions ${where} ORDER BY started_at, id`).all() as SessionRow[]
    const list = rows.map(toRecord)
    return opts.limit !== undefined ? list.slice(-opts.limit) : list
  }

  getSession(id: string): SessionRecord | null {
    const row = this.db.prepare('SELECT * FROM sessions WHERE id = ?').get(id) as SessionRow | undefined
    return row ? toRecord(row) : null
  }

  addServiceKey(k: ServiceKeyRecord): void {
    this.db
      .prepare(
        'INSERT INTO service_keys (id, principal, groups, scope, description, hash, created_at, expires_at, rotated_to) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
      )
      .run(
        k.id,
        k.principal,
        JSON.stringify(k.groups),
        JSON.stringify(k.scope),
        k.description,
        k.hash,
        k.createdAt,
        k.expiresAt,
        k.rotatedTo,
      )
  }

  getServiceKey(id: string): ServiceKeyRecord | null {
    this.serviceKeyStmt ??= this.db.prepare('SELECT * FROM service_keys WHERE id = ?')
    const row = this.serviceKeyStmt.get(id)
    return row ? toServiceKey(row) : null
  }

  listServiceKeys(): ServiceKeyRecord[] {
    const rows = this.db.prepare('SELECT * FROM service_keys ORDER BY created_at, id').all() as ServiceKeyRow[]
    return rows.map(toServiceKey)
  }

  /** Rotation: the old key ends at `expiresAt` (no later than it would have) and names its successor. */
  markServiceKeyRotated(id: string, rotatedTo: string, expiresAt: number): void {
    this.db.prepare('UPDATE service_keys SET rotated_to = ?, expires_at = MIN(expires_at, ?) WHERE id = ?').run(rotatedTo, expiresAt, id)
  }

  /** Every revoked id, for listings (`service-account key list` shows revoked keys as such). */
  revokedAmong(ids: readonly string[]): Set<string> {
    return new Set(ids.filter((id) => this.isRevoked(id)))
  }

  // ---- Public keys registered to principals (engine/identity/public-keys.ts; the SSH proxy logs callers in
  // with them). Generic key storage: the engine stores and finds keys by fingerprint, nothing more.
  private publicKeysReady = false

  private ensurePublicKeys(): void {
    if (this.publicKeysReady) return
    if (!this.db.readonly) {
      this.db.exec(`
        CREATE TABLE IF NOT EXISTS public_keys (
          id TEXT PRIMARY KEY, principal TEXT NOT NULL, fingerprint TEXT NOT NULL UNIQUE, key TEXT NOT NULL,
          comment TEXT, groups TEXT NOT NULL, scope TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER);
      `)
    }
    this.publicKeysReady = true
  }

  addPublicKey(k: PublicKeyRecord): void {
    this.ensurePublicKeys()
    this.db
      .prepare(
        'INSERT INTO public_keys (id, principal, fingerprint, key, comment, groups, scope, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
      )
      .run(k.id, k.principal, k.fingerprint, k.key, k.comment, JSON.stringify(k.groups), JSON.stringify(k.scope), k.createdAt, k.expiresAt)
  }

  findPublicKey(fingerprint: string): PublicKeyRecord | null {
    this.ensurePublicKeys()
    const row = this.db.prepare('SELECT * FROM public_keys WHERE fingerprint = ?').get(fingerprint) as PublicKeyRow | undefined
    return row ? toPublicKey(row) : null
  }

  /** Oldest first; only `principal`'s keys when given. */
  listPublicKeys(principal?: string): PublicKeyRecord[] {
    this.ensurePublicKeys()
    const rows = (
      principal === undefined
        ? this.db.prepare('SELECT * FROM public_keys ORDER BY created_at, id').all()
        : this.db.prepare('SELECT * FROM public_keys WHERE principal = ? ORDER BY created_at, id').all(principal)
    ) as PublicKeyRow[]
    return rows.map(toPublicKey)
  }

  /** Removes the key with this id or fingerprint; returns what was removed. */
  removePublicKey(idOrFingerprint: string): PublicKeyRecord | null {
    this.ensurePublicKeys()
    const row = this.db.prepare('SELECT * FROM public_keys WHERE id = ? OR fingerprint = ?').get(idOrFingerprint, idOrFingerprint) as
      | PublicKeyRow
      | undefined
    if (!row) return null
    this.db.prepare('DELETE FROM public_keys WHERE id = ?').run(row.id)
    return toPublicKey(row)
  }
  // ---- end of public keys

  // ---- Connector join tokens (engine/connector/join.ts): one-time, short-lived, hashes only.
  private joinTokensReady = false

  private ensureJoinTokens(): void {
    if (this.joinTokensReady) return
    if (!this.db.readonly) {
      this.db.exec(`
        CREATE TABLE IF NOT EXISTS connector_join_tokens (
          id TEXT PRIMARY KEY, connector TEXT NOT NULL, hash TEXT NOT NULL, created_at INTEGER NOT NULL,
          expires_at INTEGER NOT NULL, used_at INTEGER, used_by TEXT);
      `)
    }
    this.joinTokensReady = true
  }

  addJoinToken(t: JoinTokenRecord): void {
    this.ensureJoinTokens()
    this.db
      .prepare('INSERT INTO connector_join_tokens (id, connector, hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?)')
      .run(t.id, t.connector, t.hash, t.createdAt, t.expiresAt)
  }

  getJoinToken(id: string): JoinTokenRecord | null {
    this.ensureJoinTokens()
    const r = this.db.prepare('SELECT * FROM connector_join_tokens WHERE id = ?').get(id) as JoinTokenRow | undefined
    return r ? toJoinToken(r) : null
  }

  listJoinTokens(): JoinTokenRecord[] {
    this.ensureJoinTokens()
    return (this.db.prepare('SELECT * FROM connector_join_tokens ORDER BY created_at, id').all() as JoinTokenRow[]).map(toJoinToken)
  }

  /** Marks a join token used; false when it already was (one use, even under a race). */
  consumeJoinToken(id: string, at: number, by: string): boolean {
    this.ensureJoinTokens()
    return (
      this.db.prepare('UPDATE connector_join_tokens SET used_at = ?, used_by = ? WHERE id = ? AND used_at IS NULL').run(at, by, id)
        .changes === 1
    )
  }
  // ---- end of join tokens

  close(): void {
    this.db.close()
  }
}

/** A public key registered to a principal: the key itself (public), never anything secret. */
export interface PublicKeyRecord {
  readonly id: string
  readonly principal: string
  /** `SHA256:<base64, unpadded>` of the key blob, as `ssh-keygen -l` prints it. */
  readonly fingerprint: string
  /** `<type> <base64>`. */
  readonly key: string
  readonly comment: string | null
  readonly groups: readonly string[]
  readonly scope: readonly string[]
  /** Unix seconds. */
  readonly createdAt: number
  readonly expiresAt: number | null
}

interface PublicKeyRow {
  id: string
  principal: string
  fingerprint: string
  key: string
  comment: string | null
  groups: string
  scope: string
  created_at: number
  expires_at: number | null
}

function toPublicKey(r: PublicKeyRow): PublicKeyRecord {
  return {
    id: r.id,
    principal: r.principal,
    fingerprint: r.fingerprint,
    key: r.key,
    comment: r.comment,
    groups: JSON.parse(r.groups) as string[],
    scope: JSON.parse(r.scope) as string[],
    createdAt: r.created_at,
    expiresAt: r.expires_at,
  }
}

function toServiceKey(r: ServiceKeyRow): ServiceKeyRecord {
  return {
    id: r.id,
    principal: r.principal,
    groups: JSON.parse(r.groups) as string[],
    scope: JSON.parse(r.scope) as string[],
    description: r.description,
    hash: r.hash,
    createdAt: r.created_at,
    expiresAt: r.expires_at,
    rotatedTo: r.rotated_to,
  }
}

function toJoinToken(r: JoinTokenRow): JoinTokenRecord {
  return {
    id: r.id,
    connector: r.connector,
    hash: r.hash,
    createdAt: r.created_at,
    expiresAt: r.expires_at,
    usedAt: r.used_at,
    usedBy: r.used_by,
  }
}

function toRecord(r: SessionRow): SessionRecord {
  return {
    id: r.id,
    connection: r.connection,
    protocol: r.protocol,
    chain: JSON.parse(r.chain) as string[],
    tokenIds: JSON.parse(r.token_ids) as string[],
    client: r.client,
    startedAt: r.started_at,
    endedAt: r.ended_at,
    endReason: r.end_reason,
    worker: r.worker ?? null,
  }
}
