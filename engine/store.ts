// Embedded state in <data_dir>/state.db (SQLite through better-sqlite3): revoked token ids and the
// session index (live and ended), so the CLI can answer when no server runs and a restart knows
// what was revoked. The audit log is not here: it is append-only files (engine/audit.ts).

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
}

export class Store {
  private readonly db: Database.Database
  private readonly revokedStmt: Database.Statement<[string], { jti: string }>
  private readonly insertSession: Database.Statement<[string, string, string, string, string, string, string]>
  private readonly endSessionStmt: Database.Statement<[string, string, string]>

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
        CREATE TABLE IF NOT EXISTS sessions (
          id TEXT PRIMARY KEY, connection TEXT NOT NULL, protocol TEXT NOT NULL, chain TEXT NOT NULL,
          token_ids TEXT NOT NULL, client TEXT NOT NULL, started_at TEXT NOT NULL,
          ended_at TEXT, end_reason TEXT);
      `)
    }
    this.revokedStmt = this.db.prepare('SELECT jti FROM revoked_tokens WHERE jti = ?')
    this.insertSession = this.db.prepare(
      'INSERT INTO sessions (id, connection, protocol, chain, token_ids, client, started_at) VALUES (?, ?, ?, ?, ?, ?, ?)',
    )
    this.endSessionStmt = this.db.prepare('UPDATE sessions SET ended_at = ?, end_reason = ? WHERE id = ? AND ended_at IS NULL')
  }

  isRevoked(jti: string): boolean {
    return this.revokedStmt.get(jti) !== undefined
  }

  revoke(jti: string, reason: string | null): boolean {
    const r = this.db
      .prepare('INSERT OR IGNORE INTO revoked_tokens (jti, revoked_at, reason) VALUES (?, ?, ?)')
      .run(jti, new Date().toISOString(), reason)
    return r.changes > 0
  }

  recordSessionStart(s: Omit<SessionRecord, 'endedAt' | 'endReason'>): void {
    this.insertSession.run(s.id, s.connection, s.protocol, JSON.stringify(s.chain), JSON.stringify(s.tokenIds), s.client, s.startedAt)
  }

  recordSessionEnd(id: string, reason: string): void {
    this.endSessionStmt.run(new Date().toISOString(), reason, id)
  }

  /** Sessions that a previous process left open (it crashed) are closed as such at start. */
  closeOrphanedSessions(): number {
    return this.db
      .prepare("UPDATE sessions SET ended_at = ?, end_reason = 'gateway stopped unexpectedly' WHERE ended_at IS NULL")
      .run(new Date().toISOString()).changes
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

  close(): void {
    this.db.close()
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
  }
}
