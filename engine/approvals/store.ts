// Approval state in the gateway's embedded SQLite database (<data_dir>/state.db), through its own
// connection and its own tables (approval_requests, approval_votes), so it stays apart from the
// core Store. Single statements are atomic; consuming a once-grant is one conditional UPDATE, so a
// grant is used at most once even if two sessions race for it (or, later, two replicas).

import Database from 'better-sqlite3'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { GatehouseError } from '../errors.js'

export type RequestStatus = 'pending' | 'approved' | 'denied' | 'expired' | 'used'
export type GrantType = 'once' | 'window'

export interface Requirement {
  readonly rule: string
  readonly group: string
  readonly count: number
  readonly reason: string
}

export interface ApprovalRecord {
  readonly id: string
  readonly status: RequestStatus
  /** statement: a held command; access: asked ahead of time (`gatehouse request`). */
  readonly kind: 'statement' | 'access'
  readonly createdAt: number
  /** Milliseconds: a pending request expires then. */
  readonly expiresAt: number
  readonly decidedAt: number | null
  readonly session: string | null
  readonly connection: string
  readonly action: string
  /** What reviewers see (passwords redacted). */
  readonly display: string
  readonly fingerprint: string | null
  readonly chain: readonly string[]
  readonly tokenIds: readonly string[]
  readonly rules: readonly string[]
  readonly requirements: readonly Requirement[]
  readonly reason: string | null
  readonly grant: GrantType
  readonly windowSeconds: number | null
  /** Milliseconds: an approved grant is usable strictly before this instant. */
  readonly grantExpiresAt: number | null
  readonly usedAt: number | null
  readonly policy: string
}

export interface VoteRecord {
  readonly reviewer: string
  readonly groups: readonly string[]
  readonly verdict: 'approve' | 'deny'
  readonly comment: string | null
  readonly at: number
}

interface Row {
  id: string
  status: string
  kind: string
  created_at: number
  expires_at: number
  decided_at: number | null
  session: string | null
  connection: string
  action: string
  display: string
  fingerprint: string | null
  chain: string
  token_ids: string
  chain_key: string
  rules: string
  requirements: string
  reason: string | null
  grant_type: string
  window_seconds: number | null
  grant_expires_at: number | null
  used_at: number | null
  policy: string
}

interface VoteRow {
  reviewer: string
  groups: string
  verdict: string
  comment: string | null
  at: number
}

/** One key for the whole chain: principal ids and token ids, in order. */
export function chainKey(chain: readonly string[], tokenIds: readonly string[]): string {
  return JSON.stringify([chain, tokenIds])
}

export class ApprovalStore {
  private readonly db: Database.Database
  private readonly byId: Database.Statement<[string], Row>
  private readonly onceGrant: Database.Statement<[string, string, string, number], Row>
  private readonly windowGrants: Database.Statement<[string, string, string, number], Row>
  private readonly consume: Database.Statement<[number, string, number]>

  constructor(dataDir: string) {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 })
    const file = join(dataDir, 'state.db')
    try {
      this.db = new Database(file)
    } catch (err) {
      throw new GatehouseError('GH_ERR_STATE', `${file}: cannot open the state database (${(err as Error).message})`, { cause: err })
    }
    this.db.pragma('journal_mode = WAL')
    this.db.pragma('busy_timeout = 5000')
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS approval_requests (
        id TEXT PRIMARY KEY, status TEXT NOT NULL, kind TEXT NOT NULL, created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL, decided_at INTEGER, session TEXT, connection TEXT NOT NULL,
        action TEXT NOT NULL, display TEXT NOT NULL, fingerprint TEXT, chain TEXT NOT NULL,
        token_ids TEXT NOT NULL, chain_key TEXT NOT NULL, rules TEXT NOT NULL, requirements TEXT NOT NULL,
        reason TEXT, grant_type TEXT NOT NULL, window_seconds INTEGER, grant_expires_at INTEGER,
        used_at INTEGER, policy TEXT NOT NULL);
      CREATE INDEX IF NOT EXISTS approval_requests_grant ON approval_requests (status, connection, chain_key);
      CREATE TABLE IF NOT EXISTS approval_votes (
        request_id TEXT NOT NULL, reviewer TEXT NOT NULL, groups TEXT NOT NULL, verdict TEXT NOT NULL,
        comment TEXT, at INTEGER NOT NULL, PRIMARY KEY (request_id, reviewer));
    `)
    this.byId = this.db.prepare('SELECT * FROM approval_requests WHERE id = ?')
    this.onceGrant = this.db.prepare(
      "SELECT * FROM approval_requests WHERE status = 'approved' AND grant_type = 'once' AND connection = ? AND chain_key = ? AND fingerprint = ? AND grant_expires_at > ? ORDER BY created_at LIMIT 1",
    )
    this.windowGrants = this.db.prepare(
      "SELECT * FROM approval_requests WHERE status = 'approved' AND grant_type = 'window' AND connection = ? AND chain_key = ? AND action = ? AND grant_expires_at > ? ORDER BY created_at",
    )
    this.consume = this.db.prepare(
      "UPDATE approval_requests SET status = 'used', used_at = ? WHERE id = ? AND status = 'approved' AND grant_expires_at > ?",
    )
  }

  /** A pending request of this chain for this very command (a resend in non-waiting mode). */
  findPending(connection: string, key: string, fingerprint: string, now: number): ApprovalRecord | null {
    const row = this.db
      .prepare(
        "SELECT * FROM approval_requests WHERE status = 'pending' AND connection = ? AND chain_key = ? AND fingerprint = ? AND expires_at > ? ORDER BY created_at LIMIT 1",
      )
      .get(connection, key, fingerprint, now) as Row | undefined
    return row ? toRecord(row) : null
  }

  /** How many requests are pending and not expired (the metrics gauge). */
  countPending(now: number): number {
    const r = this.db.prepare("SELECT count(*) AS n FROM approval_requests WHERE status = 'pending' AND expires_at > ?").get(now) as {
      n: number
    }
    return r.n
  }

  /** How many requests of chains rooted at `root` are pending (a bound against request floods). */
  countPendingForRoot(root: string, now: number): number {
    const r = this.db
      .prepare(
        "SELECT count(*) AS n FROM approval_requests WHERE status = 'pending' AND expires_at > ? AND json_extract(chain, '$[0]') = ?",
      )
      .get(now, root) as { n: number }
    return r.n
  }

  /** Inserts a request; false when the id is taken (the caller draws another). */
  insert(r: ApprovalRecord): boolean {
    const res = this.db
      .prepare(
        `INSERT OR IGNORE INTO approval_requests (id, status, kind, created_at, expires_at, decided_at, session, connection, action,
          display, fingerprint, chain, token_ids, chain_key, rules, requirements, reason, grant_type, window_seconds,
          grant_expires_at, used_at, policy) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(
        r.id,
        r.status,
        r.kind,
        r.createdAt,
        r.expiresAt,
        r.decidedAt,
        r.session,
        r.connection,
        r.action,
        r.display,
        r.fingerprint,
        JSON.stringify(r.chain),
        JSON.stringify(r.tokenIds),
        chainKey(r.chain, r.tokenIds),
        JSON.stringify(r.rules),
        JSON.stringify(r.requirements),
        r.reason,
        r.grant,
        r.windowSeconds,
        r.grantExpiresAt,
        r.usedAt,
        r.policy,
      )
    return res.changes === 1
  }

  get(id: string): ApprovalRecord | null {
    const row = this.byId.get(id)
    return row ? toRecord(row) : null
  }

  list(): ApprovalRecord[] {
    return (this.db.prepare('SELECT * FROM approval_requests ORDER BY created_at, id').all() as Row[]).map(toRecord)
  }

  votes(id: string): VoteRecord[] {
    const rows = this.db.prepare('SELECT * FROM approval_votes WHERE request_id = ? ORDER BY at, reviewer').all(id) as VoteRow[]
    return rows.map((v) => ({
      reviewer: v.reviewer,
      groups: JSON.parse(v.groups) as string[],
      verdict: v.verdict === 'deny' ? 'deny' : 'approve',
      comment: v.comment,
      at: v.at,
    }))
  }

  /** One vote per reviewer per request; false when this reviewer already voted. */
  addVote(id: string, v: VoteRecord): boolean {
    return (
      this.db
        .prepare('INSERT OR IGNORE INTO approval_votes (request_id, reviewer, groups, verdict, comment, at) VALUES (?, ?, ?, ?, ?, ?)')
        .run(id, v.reviewer, JSON.stringify(v.groups), v.verdict, v.comment, v.at).changes === 1
    )
  }

  /** Moves a pending request on; false when it was no longer pending (someone else decided first). */
  decide(id: string, status: 'approved' | 'denied', at: number, grantExpiresAt: number | null): boolean {
    return (
      this.db
        .prepare("UPDATE approval_requests SET status = ?, decided_at = ?, grant_expires_at = ? WHERE id = ? AND status = 'pending'")
        .run(status, at, grantExpiresAt, id).changes === 1
    )
  }

  expire(id: string): boolean {
    return this.db.prepare("UPDATE approval_requests SET status = 'expired' WHERE id = ? AND status = 'pending'").run(id).changes === 1
  }

  /** Pending requests and unused grants past their time become `expired`; returns their ids. */
  expireDue(now: number): string[] {
    const rows = this.db
      .prepare(
        "SELECT id FROM approval_requests WHERE (status = 'pending' AND expires_at <= ?) OR (status = 'approved' AND grant_expires_at <= ?)",
      )
      .all(now, now) as { id: string }[]
    if (rows.length === 0) return []
    this.db
      .prepare(
        "UPDATE approval_requests SET status = 'expired' WHERE (status = 'pending' AND expires_at <= ?) OR (status = 'approved' AND grant_expires_at <= ?)",
      )
      .run(now, now)
    return rows.map((r) => r.id)
  }

  findOnceGrant(connection: string, key: string, fingerprint: string, now: number): ApprovalRecord | null {
    const row = this.onceGrant.get(connection, key, fingerprint, now)
    return row ? toRecord(row) : null
  }

  findWindowGrants(connection: string, key: string, action: string, now: number): ApprovalRecord[] {
    return this.windowGrants.all(connection, key, action, now).map(toRecord)
  }

  /** Atomically marks an approved once-grant used; false when it was used or expired meanwhile. */
  consumeOnce(id: string, now: number): boolean {
    return this.consume.run(now, id, now).changes === 1
  }

  close(): void {
    this.db.close()
  }
}

function toRecord(r: Row): ApprovalRecord {
  return {
    id: r.id,
    status: r.status as RequestStatus,
    kind: r.kind === 'access' ? 'access' : 'statement',
    createdAt: r.created_at,
    expiresAt: r.expires_at,
    decidedAt: r.decided_at,
    session: r.session,
    connection: r.connection,
    action: r.action,
    display: r.display,
    fingerprint: r.fingerprint,
    chain: JSON.parse(r.chain) as string[],
    tokenIds: JSON.parse(r.token_ids) as string[],
    rules: JSON.parse(r.rules) as string[],
    requirements: JSON.parse(r.requirements) as Requirement[],
    reason: r.reason,
    grant: r.grant_type === 'window' ? 'window' : 'once',
    windowSeconds: r.window_seconds,
    grantExpiresAt: r.grant_expires_at,
    usedAt: r.used_at,
    policy: r.policy,
  }
}
