// The MCP plugin runs no SQL and no command itself: it is a client of the gateway's own PostgreSQL
// and SSH listeners on loopback, presenting the caller's own bearer token as the password. So the
// statement goes through exactly what a `psql` of the same chain goes through — identification,
// the connect decision, classification, the per-hop decision, masking, approval holds, the audit
// record written before forwarding — by construction rather than by a second implementation.

import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import pg from 'pg'
import { Client as SshClient } from 'ssh2'
import { HOST_KEY_FILE, STATUS_ENV, takeStatus } from '../ssh/public.js'
import type { Address, GatewayStatus } from '../types.js'

/** What a finished statement returns to the agent: column names, a window of rows, the counts. */
export interface QueryOutcome {
  readonly columns: readonly string[]
  readonly rows: readonly (readonly unknown[])[]
  /** Rows the statement returned in all (including those outside the window). */
  readonly rowCount: number
  /** The command tag's count for writes (INSERT/UPDATE/DELETE), when there is one. */
  readonly affected: number | null
  readonly command: string | null
  /** True when rows after the window were dropped (or the byte cap was reached). */
  readonly truncated: boolean
}

/** A PostgreSQL error as the gateway (or the server) reported it to the loopback client. */
export class LoopbackSqlError extends Error {
  constructor(
    message: string,
    readonly sqlstate: string | null,
    readonly detail: string | null,
    readonly hint: string | null,
  ) {
    super(message)
  }
}

/** Past this many bytes of row data in one result, further rows are counted but not kept. */
export const MAX_RESULT_BYTES = 1024 * 1024
/** A statement still running after this long is cancelled: an agent waits on a tool call. */
export const QUERY_TIMEOUT_MS = 60_000

/**
 * Values as JSON an agent reads: numbers, booleans, JSON and arrays parsed as `pg` does; dates,
 * times, intervals and bytea kept as PostgreSQL's own text (a `Date` would shift a timestamp
 * without time zone into the gateway's zone; a Buffer would serialize as a list of bytes).
 */
const AS_TEXT: ReadonlySet<number> = new Set([17, 1082, 1083, 1114, 1184, 1186, 1266])
const typeParsers: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    AS_TEXT.has(oid) ? (v: string) => v : pg.types.getTypeParser(oid, format)) as pg.CustomTypesConfig['getTypeParser'],
}

function isPgError(err: unknown): err is Error & { code?: string; detail?: string; hint?: string } {
  return err instanceof Error
}

/**
 * One PostgreSQL session through the gateway for one MCP session and connection. Statements are
 * queued by `pg` itself (one at a time, as on any PostgreSQL connection).
 */
export class LoopbackPg {
  private client: pg.Client | null = null
  private connecting: Promise<pg.Client> | null = null
  private closed = false
  /** The `gatehouse.reason` this session carries now. */
  private reason: string | null = null

  constructor(
    private readonly address: () => Address | null,
    private readonly connection: string,
    private readonly token: string,
    /** The MCP session id, as the PostgreSQL application_name (recorded in the audit). */
    private readonly application: string,
  ) {}

  private async open(): Promise<pg.Client> {
    const a = this.address()
    if (!a) throw new LoopbackSqlError('this gateway has no PostgreSQL listener (listen.postgres)', null, null, null)
    const client = new pg.Client({
      host: a.host === '0.0.0.0' ? '127.0.0.1' : a.host === '::' ? '::1' : a.host,
      port: a.port,
      database: this.connection,
      user: 'mcp',
      password: this.token,
      // Loopback: the gateway accepts the token in plaintext only from loopback peers.
      ssl: false,
      application_name: `gatehouse-mcp ${this.application}`.slice(0, 63),
      connectionTimeoutMillis: 10_000,
      types: typeParsers,
    })
    client.on('error', () => {
      // The gateway ended the session (revocation, kill, shutdown): the next call reconnects,
      // which identifies the token again and fails if it is no longer good.
      if (this.client === client) this.client = null
    })
    client.on('end', () => {
      if (this.client === client) this.client = null
    })
    try {
      await client.connect()
      // Non-waiting approvals: a held statement fails at once with the request id instead of
      // blocking the tool call (the agent polls approval_status). Without it a held statement
      // would block the call until the agent's client gives up, so a refusal ends the session
      // with the gateway's reason.
      await client.query('SET gatehouse.approval_wait = off').catch((err: unknown) => {
        const why = toSqlError(err)
        throw new LoopbackSqlError(
          `the gateway refused SET gatehouse.approval_wait = off for this chain, which the query tool needs to report held statements: ${why.message}`,
          why.sqlstate,
          null,
          null,
        )
      })
    } catch (err) {
      await client.end().catch(() => undefined)
      throw toSqlError(err)
    }
    return client
  }

  private async get(): Promise<pg.Client> {
    if (this.closed) throw new LoopbackSqlError('the MCP session is closed', null, null, null)
    if (this.client) return this.client
    if (!this.connecting) {
      this.connecting = this.open()
        .then((c) => {
          this.client = c
          this.reason = null
          return c
        })
        .finally(() => {
          this.connecting = null
        })
    }
    return this.connecting
  }

  /** Runs `sql`; keeps rows [offset, offset + maxRows) of the result, counts the rest. */
  async query(sql: string, opts: { maxRows: number; offset: number; reason?: string }): Promise<QueryOutcome> {
    const client = await this.get()
    // The session setting outlives the statement: set it only when it changes, and clear it for a
    // call that gives none, so a justification is never attached to a later, unrelated request.
    const reason = opts.reason ?? null
    if (reason !== this.reason) {
      const set = reason === null ? 'RESET gatehouse.reason' : `SET gatehouse.reason = ${client.escapeLiteral(reason)}`
      await client.query(set).catch(() => undefined)
      this.reason = reason
    }
    return new Promise<QueryOutcome>((resolve, reject) => {
      let columns: string[] = []
      const rows: unknown[][] = []
      let seen = 0
      let bytes = 0
      let truncated = false
      const config: pg.QueryArrayConfig = { text: sql, rowMode: 'array' }
      const q = new pg.Query(config)
      const timer = setTimeout(() => {
        // A runaway statement: drop the session; the gateway and PostgreSQL end it.
        this.drop()
        reject(new LoopbackSqlError(`the statement did not finish within ${QUERY_TIMEOUT_MS / 1000} s`, null, null, null))
      }, QUERY_TIMEOUT_MS)
      q.on('row', (row: unknown[], result?: pg.QueryResult) => {
        if (columns.length === 0 && result) columns = result.fields.map((f) => f.name)
        const i = seen++
        if (i < opts.offset) return
        if (rows.length >= opts.maxRows || bytes >= MAX_RESULT_BYTES) {
          truncated = true
          return
        }
        for (const v of row) bytes += typeof v === 'string' ? v.length : 16
        rows.push(row)
      })
      q.on('error', (err: Error) => {
        clearTimeout(timer)
        reject(toSqlError(err))
      })
      q.on('end', (result: pg.QueryResult) => {
        clearTimeout(timer)
        if (columns.length === 0 && result.fields) columns = result.fields.map((f) => f.name)
        const isWrite = result.command !== 'SELECT' && result.command !== null
        resolve({
          columns,
          rows,
          rowCount: seen,
          affected: isWrite && typeof result.rowCount === 'number' ? result.rowCount : null,
          command: result.command ?? null,
          truncated,
        })
      })
      client.query(q)
    })
  }

  private drop(): void {
    const c = this.client
    this.client = null
    c?.end().catch(() => undefined)
  }

  async close(): Promise<void> {
    this.closed = true
    const c = this.client ?? (await this.connecting?.catch(() => null)) ?? null
    this.client = null
    await c?.end().catch(() => undefined)
  }
}

function toSqlError(err: unknown): LoopbackSqlError {
  if (err instanceof LoopbackSqlError) return err
  if (isPgError(err)) {
    return new LoopbackSqlError(err.message, typeof err.code === 'string' ? err.code : null, err.detail ?? null, err.hint ?? null)
  }
  return new LoopbackSqlError(String(err), null, null, null)
}

export interface ExecOutcome {
  readonly stdout: string
  readonly stderr: string
  /** The gateway's own verdict when it refused or held the command (never read from the target's output). */
  readonly gateway: GatewayStatus | null
  readonly exitCode: number | null
  readonly signal: string | null
  readonly truncated: boolean
}

/** Output kept per stream of an exec; the rest is counted as truncated. */
export const MAX_EXEC_OUTPUT_BYTES = 256 * 1024

/**
 * Runs one command on an SSH connection through the gateway's own SSH listener (token as the
 * password). The gateway's host key is checked against the one its SSH plugin keeps beside our
 * state directory, so even on loopback the token goes only to this gateway.
 */
export function sshExec(address: Address, hostKeyFile: string, connection: string, token: string, command: string): Promise<ExecOutcome> {
  let expected: string
  try {
    expected = readFileSync(hostKeyFile, 'utf8').trim().split(/\s+/)[1] ?? ''
  } catch {
    return Promise.reject(new Error('the gateway SSH host key is not readable'))
  }
  return new Promise<ExecOutcome>((resolve, reject) => {
    const client = new SshClient()
    let settled = false
    const finish = (err: Error | null, out?: ExecOutcome): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      client.end()
      if (err) reject(err)
      else if (out) resolve(out)
    }
    const timer = setTimeout(() => finish(new Error(`the command did not finish within ${QUERY_TIMEOUT_MS / 1000} s`)), QUERY_TIMEOUT_MS)
    client.on('error', (err) => finish(err))
    // A fresh tag per exec: only the gateway learns it, so only the gateway can write its status line.
    const tag = randomBytes(16).toString('hex')
    client.on('ready', () => {
      client.exec(command, { env: { [STATUS_ENV]: tag } }, (err, stream) => {
        if (err) return finish(err)
        const out: Buffer[] = []
        const errOut: Buffer[] = []
        let outBytes = 0
        let errBytes = 0
        let truncated = false
        let exitCode: number | null = null
        let signal: string | null = null
        stream.on('data', (d: Buffer) => {
          if (outBytes + d.length > MAX_EXEC_OUTPUT_BYTES) truncated = true
          else out.push(d)
          outBytes += d.length
        })
        stream.stderr.on('data', (d: Buffer) => {
          if (errBytes + d.length > MAX_EXEC_OUTPUT_BYTES) truncated = true
          else errOut.push(d)
          errBytes += d.length
        })
        stream.on('exit', (code: number | null, sig?: string) => {
          exitCode = typeof code === 'number' ? code : null
          signal = sig ?? null
        })
        stream.on('close', () => {
          const status = takeStatus(Buffer.concat(errOut).toString('utf8'), tag)
          finish(null, {
            stdout: Buffer.concat(out).toString('utf8'),
            stderr: status.stderr,
            gateway: status.status,
            exitCode,
            signal,
            truncated,
          })
        })
        return undefined
      })
    })
    client.connect({
      host: address.host === '0.0.0.0' ? '127.0.0.1' : address.host === '::' ? '::1' : address.host,
      port: address.port,
      username: connection,
      password: token,
      readyTimeout: 10_000,
      hostVerifier: (key: Buffer) => key.toString('base64') === expected,
    })
  })
}

/** Where the SSH plugin keeps the gateway's host key (its state directory, beside ours). */
export function gatewayHostKeyFile(mcpStateDir: string): string {
  return join(mcpStateDir, '..', 'ssh', `${HOST_KEY_FILE}.pub`)
}
