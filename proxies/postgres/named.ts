// Prepared statements and portals as the server holds them. An entry is made when the client's
// Parse or Bind goes to the server and confirmed (or failed) when the server answers; a Bind or an
// Execute that depends on an entry sent before the last Sync and not yet answered waits for it,
// since whether it took effect is not yet known. SQL-level PREPARE, DEALLOCATE, DECLARE, CLOSE and
// DISCARD change the tables once they complete (`applyNames`).

import type { StatementFacts } from './sql/index.js'
import type { FieldInfo } from './messages.js'
import type { StatementEffect, Verdict } from './statements.js'

/** A prepared statement or portal as the gateway believes the server has it. Entries sent in an
 * earlier Sync batch and not yet answered are uncertain: Execute waits for them to settle. */
export interface NamedEntry {
  /** SQL text, or null when unknown (created by SQL-level PREPARE, or possibly replaced by it). */
  readonly sql: string | null
  /** For a statement created by SQL-level PREPARE: what it runs, as classified then. */
  readonly facts: StatementFacts | null
  readonly params: readonly (string | null)[] | null
  /** 'failed': the server refused the message that made it; 'skipped': the server never read it
   * (it came after an error in its batch), so the name holds what it held before. */
  state: 'pending' | 'ok' | 'failed' | 'skipped'
  readonly batch: number
  /** What the name held before, while this entry may not take (dropped once it is known). */
  prev: NamedEntry | null
  /** For a portal: the statement entry it was bound from. */
  readonly statement: NamedEntry | null
  /** A statement's own name; for a portal, the name of the statement it was bound from. */
  readonly statementName: string
  waiters: (() => void)[] | null
  /** The result shape the server described (Describe), read only while the session masks. */
  fields?: FieldInfo[] | null
  /** For a portal: the result format codes of its Bind. */
  resultFormats?: readonly number[]
  /** For a portal: the verdict its Bind was judged and audited with. */
  judged?: { readonly seq: number; readonly verdict: Verdict; readonly secret: boolean }
}

/** What a portal will run. */
export interface ResolvedPortal {
  /** The live portal entry (its Bind's verdict, when it was judged at Bind). */
  readonly entry?: NamedEntry
  readonly sql: string | null
  readonly facts: StatementFacts | null
  readonly name: string
  readonly params: readonly (string | null)[] | null
}

/** `f(v)` at once when `v` is a value, after it when it is a promise: a step that may have to wait
 * keeps the common case free of an await. */
export function andThen<T>(v: T | Promise<T>, f: (value: T) => Promise<void> | undefined): Promise<void> | undefined {
  return v instanceof Promise ? v.then(f) : f(v)
}

/** The server answered the message that made the entry, or skipped it. */
export function settle(e: NamedEntry, state: 'ok' | 'failed' | 'skipped'): void {
  if (e.state !== 'pending') return
  e.state = state
  // The earlier holder of the name stands only when this entry did not take. The unnamed statement
  // is dropped before a Parse of it is parsed (PostgreSQL exec_parse_message): a Parse of it that
  // failed leaves none.
  if (state === 'ok' || (state === 'failed' && e.statementName === '')) e.prev = null
  const w = e.waiters
  e.waiters = null
  if (w) for (const f of w) f()
}

/** The entry that may hold the name: the newest one that is pending or took effect (null: none). */
function standing(e: NamedEntry | null): NamedEntry | null {
  let cur = e
  while (cur !== null && cur.state !== 'ok' && cur.state !== 'pending') cur = cur.prev
  return cur
}

const NO_PORTAL: ResolvedPortal = { sql: null, facts: null, name: '', params: null }

/** An entry of an earlier batch the server has not answered yet, which decides the outcome. */
interface Blocked {
  readonly blockedBy: NamedEntry
}

export class NamedObjects {
  readonly statements = new Map<string, NamedEntry>()
  readonly portals = new Map<string, NamedEntry>()
  /** Sync messages sent: the batch an entry made now belongs to. */
  batch = 0
  /** Sync batches the server has answered (NamedEntry.batch below this: answered). */
  answeredBatches = 0

  /** `flush` sends what is queued for the server, before waiting for its answer. */
  constructor(private readonly flush: () => void) {}

  /** A Parse goes to the server: the statement's new entry (replacing the name, pending). */
  parsed(name: string, sql: string): NamedEntry {
    const entry: NamedEntry = {
      sql,
      facts: null,
      params: null,
      state: 'pending',
      batch: this.batch,
      // A Parse the server skips (after an error earlier in its batch) leaves the name as it was.
      prev: standing(this.statements.get(name) ?? null),
      statement: null,
      waiters: null,
      statementName: name,
    }
    this.statements.set(name, entry)
    return entry
  }

  /** A Bind: the portal's new entry, bound from `statement` (as the gateway knows it). */
  bound(
    portal: string,
    statementName: string,
    statement: NamedEntry | null,
    params: readonly (string | null)[],
    resultFormats: readonly number[],
  ): NamedEntry {
    const entry: NamedEntry = {
      sql: null,
      facts: null,
      params,
      state: 'pending',
      batch: this.batch,
      // A Bind that fails leaves no usable portal of that name (the transaction is aborted).
      prev: null,
      statement,
      waiters: null,
      statementName,
      resultFormats,
    }
    this.portals.set(portal, entry)
    return entry
  }

  /** The server answered a Sync: outside a transaction block no portal survives (protocol portals
   * are never WITH HOLD), so those of answered batches are forgotten and a later DECLARE of the
   * name is not taken for them. */
  answered(sync: boolean, idle: boolean): void {
    if (sync) this.answeredBatches++
    if (idle) for (const [name, p] of this.portals) if (p.batch < this.answeredBatches) this.portals.delete(name)
  }

  /** A completed statement's effect on the names (SQL-level PREPARE, DEALLOCATE, DECLARE, CLOSE). */
  applyNames(e: StatementEffect): void {
    if (e.prepare) {
      const { name, inner } = e.prepare
      this.statements.set(name, {
        sql: null,
        facts: inner,
        params: null,
        state: 'ok',
        batch: this.batch,
        prev: null,
        statement: null,
        waiters: null,
        statementName: name,
      })
    }
    if (e.deallocate) {
      if (e.deallocate.name === null) this.statements.clear()
      else this.statements.delete(e.deallocate.name)
    }
    // A portal name taken over by SQL (DECLARE) or dropped by it (CLOSE, DISCARD ALL) is no longer
    // the one a protocol Bind made: an Execute of it is then not resolved from the gateway's table.
    if (e.cursor) {
      if (e.cursor.name === null) this.portals.clear()
      else this.portals.delete(e.cursor.name)
    }
  }

  /**
   * What a portal will run: at once when the server has answered for every entry it depends on,
   * else a promise that waits for entries from earlier Sync batches to be answered (the common
   * case stays without an await).
   */
  portalRuns(portal: NamedEntry): ResolvedPortal | Promise<ResolvedPortal> {
    const r = this.resolve(portal)
    return 'blockedBy' in r ? this.answer(r.blockedBy).then(() => this.portalRuns(portal)) : r
  }

  /** The newest entry of the name that did not fail (null: none), at once or once the server has
   * answered for it, as portalRuns. */
  live(e: NamedEntry | null): NamedEntry | null | Promise<NamedEntry | null> {
    const r = this.walk(e)
    return r !== null && 'blockedBy' in r ? this.answer(r.blockedBy).then(() => this.live(e)) : r
  }

  private resolve(portal: NamedEntry): ResolvedPortal | Blocked {
    const live = this.walk(portal)
    if (live === null) return NO_PORTAL
    if ('blockedBy' in live) return live
    const stmt = live.statement ? this.walk(live.statement) : null
    if (stmt !== null && 'blockedBy' in stmt) return stmt
    return { entry: live, sql: stmt?.sql ?? null, facts: stmt?.facts ?? null, name: live.statementName, params: live.params }
  }

  /**
   * The entries of a name, newest first: the first that did not fail (null: none), or — when an
   * entry sent before the last Sync comes first and is unanswered — that entry, since whether it
   * took effect is not yet known.
   */
  private walk(e: NamedEntry | null): NamedEntry | null | Blocked {
    let cur = e
    while (cur) {
      if (cur.state === 'pending' && cur.batch < this.batch) return { blockedBy: cur }
      if (cur.state === 'ok' || cur.state === 'pending') return cur
      cur = cur.prev
    }
    return null
  }

  /** Resolves when the server has answered for `e` (what is queued for it is sent first). */
  private answer(e: NamedEntry): Promise<void> {
    this.flush()
    return new Promise<void>((r) => {
      e.waiters ??= []
      e.waiters.push(r)
    })
  }
}
