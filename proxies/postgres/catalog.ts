// What the classifier needs from the server to name tables as the server resolves them: the
// session's starting search_path and user, and which relations exist in which schema. Read with the
// gateway's own query on the session's server connection before the client gets it; the relation
// list is shared by the sessions of a connection for a short while (and dropped when DDL passes).

import type { Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import { serialize } from 'pg-protocol'
import type { Catalog } from './sql/index.js'
import type { FunctionCatalog } from './sql/functions.js'
import type { RelationCode } from './statements.js'
import type { Logger } from 'pino'
import {
  CATALOG_CHECK_SQL,
  type CatalogCheck,
  catalogCheckParams,
  LINEAGE_CATALOG_SQL,
  type LineageCatalogSnapshot,
  parseLineageCatalog,
  snapshotCurrent,
} from './sql/lineage-catalog.js'
import { BackendCode, INTERNAL_SQL_MARK, readErrorFields } from './messages.js'
import { connectUpstream, type UpstreamOptions } from './upstream.js'

/** Relations in a busy database change rarely; sessions of one connection share a snapshot this long. */
export const CATALOG_TTL_MS = 30_000
/** A catalog larger than this is not worth holding; resolution then falls back to the path alone. */
const MAX_RELATIONS = 200_000

const RELATIONS_SQL =
  "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r','v','m','f','p') AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' LIMIT " +
  String(MAX_RELATIONS + 1)
const SCHEMAS_SQL = 'SELECT nspname FROM pg_catalog.pg_namespace'
// Names of every function and operator that is not a PostgreSQL built-in (outside pg_catalog, or
// created in it: oid >= 16384): such a name can win over the built-in it shares a name with. And
// the types a cast to which can run such code (user base types, domains, ranges; user casts).
const USER_ROUTINES_SQL =
  "SELECT DISTINCT 'f', p.proname::text FROM pg_catalog.pg_proc p WHERE p.oid >= 16384 OR p.pronamespace <> 'pg_catalog'::pg_catalog.regnamespace UNION SELECT DISTINCT 'o', o.oprname::text FROM pg_catalog.pg_operator o WHERE o.oid >= 16384 OR o.oprnamespace <> 'pg_catalog'::pg_catalog.regnamespace " +
  "UNION SELECT DISTINCT 't', t.typname::text FROM pg_catalog.pg_type t WHERE t.typtype IN ('b', 'd', 'r', 'm') AND (t.oid >= 16384 OR t.typnamespace <> 'pg_catalog'::pg_catalog.regnamespace) " +
  "UNION SELECT DISTINCT 't', t.typname::text FROM pg_catalog.pg_cast c JOIN pg_catalog.pg_type t ON t.oid = c.casttarget WHERE c.oid >= 16384 AND c.castfunc <> 0"
const SESSION_SQL = "SELECT pg_catalog.current_setting('search_path'), current_user"

export interface SessionStart {
  readonly searchPath: string
  readonly user: string
}

/** Runs one simple query on a server connection that is idle and not yet relayed; returns text rows. */
export function query(socket: Socket | TLSSocket, sql: string, timeoutMs = 10_000): Promise<(string | null)[][][]> {
  return exchange(socket, serialize.query(INTERNAL_SQL_MARK + sql), timeoutMs)
}

/** Sends frontend messages ending in a Sync (or a Query) and collects the text rows of each result
 *  until ReadyForQuery; an ErrorResponse rejects. */
function exchange(socket: Socket | TLSSocket, messages: Buffer, timeoutMs: number): Promise<(string | null)[][][]> {
  return new Promise((resolve, reject) => {
    let buf: Buffer = Buffer.alloc(0)
    const results: (string | null)[][][] = [[]]
    let error: string | null = null
    const done = (err: Error | null): void => {
      clearTimeout(timer)
      socket.off('data', onData)
      socket.off('close', onClose)
      if (err) reject(err)
      else resolve(results.slice(0, -1))
    }
    const onClose = (): void => done(new Error('the server closed the connection'))
    const timer = setTimeout(() => done(new Error('catalog query timed out')), timeoutMs)
    const onData = (d: Buffer): void => {
      buf = buf.length === 0 ? d : Buffer.concat([buf, d])
      while (buf.length >= 5) {
        const len = buf.readInt32BE(1)
        if (buf.length < len + 1) return
        const type = buf[0]
        const body = buf.subarray(5, len + 1)
        buf = buf.subarray(len + 1)
        if (type === BackendCode.DataRow) {
          const n = body.readInt16BE(0)
          const row: (string | null)[] = []
          let p = 2
          for (let i = 0; i < n; i++) {
            const l = body.readInt32BE(p)
            p += 4
            if (l < 0) row.push(null)
            else {
              row.push(body.toString('utf8', p, p + l))
              p += l
            }
          }
          results[results.length - 1]?.push(row)
        } else if (type === BackendCode.CommandComplete) results.push([])
        else if (type === BackendCode.ErrorResponse) error = readErrorFields(body).get('M') ?? 'error'
        else if (type === BackendCode.ReadyForQuery) {
          done(error ? new Error(error) : null)
          return
        }
      }
    }
    socket.on('data', onData)
    socket.on('close', onClose)
    socket.write(messages)
  })
}

export async function readSessionStart(socket: Socket | TLSSocket): Promise<SessionStart> {
  const [rows] = await query(socket, SESSION_SQL)
  const row = rows?.[0]
  return { searchPath: row?.[0] ?? '"$user", public', user: row?.[1] ?? '' }
}

export interface CatalogSnapshot {
  /** Which relations exist where (null: too many to hold). */
  readonly catalog: Catalog | null
  /** Columns, view definitions and user functions, for masking lineage (null: could not be read,
   * and statements of sessions with mask obligations are then refused or fully masked). */
  readonly lineage: LineageCatalogSnapshot | null
  /** Functions and operators that are not built-ins (null: could not be read, and then every
   *  function call counts as opaque). */
  readonly functions: FunctionCatalog | null
}

function functionCatalog(rows: readonly (readonly (string | null)[])[] | undefined): FunctionCatalog | null {
  if (!rows) return null
  const userFunctions = new Set<string>()
  const userOperators = new Set<string>()
  const userTypes = new Set<string>()
  for (const [tag, name] of rows) {
    if (typeof name !== 'string') return null
    if (tag === 'f') userFunctions.add(name)
    else if (tag === 'o') userOperators.add(name)
    else if (tag === 't') userTypes.add(name)
    else return null
  }
  return { userFunctions, userOperators, userTypes }
}

export async function readCatalog(socket: Socket | TLSSocket): Promise<CatalogSnapshot> {
  // One round trip; the lineage part comes last because its SET LOCAL lasts to the end of the message.
  const [rels, schemas, routines, , lineageRows] = await query(
    socket,
    `${RELATIONS_SQL}; ${SCHEMAS_SQL}; ${USER_ROUTINES_SQL}; ${LINEAGE_CATALOG_SQL}`,
  )
  const catalog =
    !rels || !schemas || rels.length > MAX_RELATIONS
      ? null
      : { relations: new Set(rels.map((r) => `${r[0] ?? ''}.${r[1] ?? ''}`)), schemas: new Set(schemas.map((r) => r[0] ?? '')) }
  let lineage: LineageCatalogSnapshot | null = null
  try {
    lineage = lineageRows ? parseLineageCatalog(lineageRows) : null
  } catch {
    lineage = null
  }
  return { catalog, lineage, functions: functionCatalog(routines) }
}

/** Per-connection catalog snapshots, shared by sessions, refreshed after the TTL or after DDL. */
export class CatalogCache {
  private readonly entries = new Map<string, { snapshot: CatalogSnapshot; at: number }>()
  private readonly refreshing = new Map<string, Promise<CatalogSnapshot>>()

  async get(connection: string, socket: Socket | TLSSocket): Promise<CatalogSnapshot> {
    const e = this.entries.get(connection)
    if (e && Date.now() - e.at < CATALOG_TTL_MS) return e.snapshot
    const snapshot = await readCatalog(socket)
    this.entries.set(connection, { snapshot, at: Date.now() })
    return snapshot
  }

  /**
   * Reads a fresh snapshot over a connection of its own (`open`), for a session that met a relation
   * its snapshot does not know (created after it was read). Concurrent callers share one read.
   */
  async refresh(connection: string, open: () => Promise<Socket | TLSSocket>): Promise<CatalogSnapshot> {
    const inFlight = this.refreshing.get(connection)
    if (inFlight) return inFlight
    const p = (async () => {
      const socket = await open()
      try {
        const snapshot = await readCatalog(socket)
        this.entries.set(connection, { snapshot, at: Date.now() })
        return snapshot
      } finally {
        socket.end(serialize.end())
        setTimeout(() => socket.destroy(), 1000).unref()
      }
    })()
    this.refreshing.set(connection, p)
    try {
      return await p
    } finally {
      this.refreshing.delete(connection)
    }
  }

  invalidate(connection: string): void {
    this.entries.delete(connection)
  }

  /**
   * Runs one catalog query on this connection's checker: a server connection of the gateway's own,
   * kept open and shared by the connection's sessions, one query at a time. Any failure closes it
   * (the next check opens another) and rejects: the caller fails closed.
   */
  async check(connection: string, open: () => Promise<Socket | TLSSocket>, check: CatalogCheck): Promise<(string | null)[][]> {
    const prev = this.checkQueue.get(connection) ?? Promise.resolve()
    const run = prev.then(async () => {
      let socket = this.checkers.get(connection)
      if (!socket || socket.destroyed) {
        socket = await open()
        socket.unref()
        socket.setNoDelay(true)
        socket.on('error', () => undefined)
        try {
          // Prepared once per checker: planning the query costs far more than running it.
          await exchange(
            socket,
            Buffer.concat([serialize.parse({ name: CHECK_STATEMENT, text: INTERNAL_SQL_MARK + CATALOG_CHECK_SQL }), serialize.sync()]),
            CHECK_TIMEOUT_MS,
          )
        } catch (err) {
          socket.destroy()
          throw err
        }
        this.checkers.set(connection, socket)
      }
      try {
        const msg = Buffer.concat([
          serialize.bind({ statement: CHECK_STATEMENT, values: catalogCheckParams(check) }),
          serialize.execute({}),
          serialize.sync(),
        ])
        const [rows] = await exchange(socket, msg, CHECK_TIMEOUT_MS)
        return rows ?? []
      } catch (err) {
        socket.destroy()
        this.checkers.delete(connection)
        throw err
      }
    })
    const settled = run.then(
      () => undefined,
      () => undefined,
    )
    this.checkQueue.set(connection, settled)
    return run
  }

  /** Closes the checker connections (the plugin is stopping). */
  close(): void {
    for (const s of this.checkers.values()) s.end(serialize.end())
    this.checkers.clear()
  }

  private readonly checkers = new Map<string, Socket | TLSSocket>()
  private readonly checkQueue = new Map<string, Promise<void>>()
}

/**
 * One session's view of the lineage catalog: the snapshot its statements are classified (views)
 * and masked against, checked against the server before a statement that touches a masked relation
 * or a view, and read anew when it may be stale (docs/masking.md, "Catalog freshness").
 */
export class SessionCatalog {
  constructor(
    private readonly cache: CatalogCache,
    /** The Gatehouse connection's name (the cache's key). */
    private readonly connection: string,
    /** The lineage snapshot as last read (null: the catalog of relations could not be read). */
    public snapshot: LineageCatalogSnapshot | null,
    private readonly upstream: UpstreamOptions,
    private readonly signal: AbortSignal,
    private readonly log: Logger,
    private readonly sessionId: string,
  ) {}

  /** What reading a relation runs, by qualified name, from the current snapshot: a view's
   * definition, whether it is a foreign table, the row-level security policies that apply (null: a
   * plain table; `absent`: not in the snapshot; undefined: the catalog could not be read). */
  readonly viewDefinition = (qualified: string): RelationCode | null | undefined => {
    if (this.snapshot === null) return undefined
    const rel = this.snapshot.relations.get(qualified)
    if (rel === undefined) return ABSENT
    const definition = rel.kind === 'view' ? rel.definition : null
    if (definition === null && rel.foreign !== true && rel.policies === undefined) return null
    return rel
  }

  /** Whether the snapshot still holds for the names of `check`; null when it cannot be told. */
  async current(check: CatalogCheck): Promise<boolean | null> {
    const snap = this.snapshot
    if (!snap) return null
    try {
      const rows = await this.cache.check(
        this.connection,
        async () => {
          // The gateway's own connection, shared by sessions: none of this client's startup settings.
          const params = new Map([
            ['client_encoding', 'UTF8'],
            ['application_name', 'gatehouse catalog check'],
            ['plan_cache_mode', 'force_generic_plan'],
          ])
          return (await connectUpstream({ ...this.upstream, params })).socket
        },
        check,
      )
      return snapshotCurrent(snap, check, rows)
    } catch (err) {
      this.log.warn({ session: this.sessionId, err: String(err) }, 'cannot check the catalog for masking')
      return null
    }
  }

  /** Re-reads the snapshot over a separate server connection; false when it could not. */
  async refresh(): Promise<boolean> {
    try {
      const snap = await this.cache.refresh(this.connection, async () => {
        const up = await connectUpstream(this.upstream, this.signal)
        return up.socket
      })
      this.snapshot = snap.lineage
      return true
    } catch (err) {
      this.log.warn({ session: this.sessionId, err: String(err) }, 'cannot refresh the catalog for masking')
      return false
    }
  }

  /** The shared snapshot may be stale (DDL passed, or a result was withheld): the next read is fresh. */
  invalidate(): void {
    this.cache.invalidate(this.connection)
  }
}

const ABSENT: RelationCode = { definition: null, absent: true }

/** A catalog check answers in well under a millisecond; a server that takes this long is not usable. */
const CHECK_TIMEOUT_MS = 5_000
const CHECK_STATEMENT = 'gatehouse_catalog_check'
