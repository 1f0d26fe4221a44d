// For tests that run a PostgreSQL server of their own (SCRAM-only auth, md5/password auth, the
// server's own statement log, …): the server programs live outside PATH and refuse to run as root,
// so they run as the postgres user. Every test that starts a cluster stops it (`cluster.stop()`).

import { spawnSync } from 'node:child_process'
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort } from './sshd.js'

export { freePort } from './sshd.js'

export const PG_BIN = '/usr/lib/postgresql/15/bin'

/** Runs a command as the postgres user (initdb, pg_ctl and postgres refuse to run as root). */
export function asPostgres(args: string[]): { status: number | null; stderr: string } {
  const r = spawnSync('runuser', ['-u', 'postgres', '--', ...args], { encoding: 'utf8', timeout: 60_000 })
  return { status: r.status, stderr: r.stderr }
}

/** One record of the server's JSON log (PostgreSQL 15 `jsonlog`); only the fields tests read. */
export interface ServerLogRecord {
  readonly pid: number
  readonly error_severity: string
  readonly message: string
  readonly application_name?: string
  readonly detail?: string
  readonly statement?: string
  readonly state_code?: string
  readonly backend_type?: string
}

export interface ClusterOptions {
  /** pg_hba.conf contents (default: trust for everyone over TCP on loopback). */
  readonly hba?: string
  /** The superuser's password (set with initdb; needed when `hba` asks for one). */
  readonly password?: string
  /** Extra postgresql.conf lines. */
  readonly conf?: string
  /**
   * The server's own statement log as ground truth: `log_statement = all`, connections and
   * disconnections, NOTICEs, as JSON lines (jsonlog) with the backend pid and application_name.
   */
  readonly statementLog?: boolean
}

/** A private PostgreSQL 15 cluster on a free loopback port, its files in a temporary directory. */
export class PgCluster {
  port = 0
  private logOffset = 0
  private readonly records: ServerLogRecord[] = []

  private constructor(
    readonly dir: string,
    readonly opts: ClusterOptions,
  ) {}

  get dataDir(): string {
    return join(this.dir, 'data')
  }

  static async start(opts: ClusterOptions = {}): Promise<PgCluster> {
    const dir = mkdtempSync(join(tmpdir(), 'gh-pg-'))
    chmodSync(dir, 0o755)
    const c = new PgCluster(dir, opts)
    const uid = Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout.trim())
    const gid = Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim())
    chownSync(dir, uid, gid)
    const args = [`${PG_BIN}/initdb`, '-D', c.dataDir, '-U', 'postgres', '-E', 'UTF8', '--locale=C', '--no-sync']
    if (opts.password !== undefined) {
      const pwfile = join(dir, 'pw')
      writeFileSync(pwfile, `${opts.password}\n`)
      chownSync(pwfile, uid, gid)
      args.push('--auth=scram-sha-256', `--pwfile=${pwfile}`)
    } else args.push('--auth=trust')
    const init = asPostgres(args)
    rmSync(join(dir, 'pw'), { force: true })
    if (init.status !== 0) throw new Error(`initdb failed: ${init.stderr}`)
    writeFileSync(join(c.dataDir, 'pg_hba.conf'), opts.hba ?? 'host all all 127.0.0.1/32 trust\nlocal all all trust\n')
    c.port = await freePort()
    const lines = [
      "listen_addresses = '127.0.0.1'",
      `port = ${c.port}`,
      `unix_socket_directories = '${dir}'`,
      'fsync = off',
      'synchronous_commit = off',
      'full_page_writes = off',
      'shared_buffers = 16MB',
      'max_connections = 40',
    ]
    if (opts.statementLog) {
      lines.push(
        'logging_collector = on',
        `log_directory = '${join(dir, 'log')}'`,
        "log_filename = 'server.log'",
        "log_destination = 'jsonlog'",
        'log_statement = all',
        'log_connections = on',
        'log_disconnections = on',
        "log_min_messages = 'notice'",
        "log_min_error_statement = 'error'",
        "log_line_prefix = '%m [%p] %a '",
      )
    }
    if (opts.conf) lines.push(opts.conf)
    writeFileSync(join(c.dataDir, 'postgresql.auto.conf'), `${lines.join('\n')}\n`)
    for (const f of ['pg_hba.conf', 'postgresql.auto.conf']) chownSync(join(c.dataDir, f), uid, gid)
    const st = asPostgres([`${PG_BIN}/pg_ctl`, '-D', c.dataDir, '-l', join(dir, 'startup.log'), '-w', 'start'])
    if (st.status !== 0) throw new Error(`pg_ctl start failed: ${st.stderr}\n${readFileSafe(join(dir, 'startup.log'))}`)
    return c
  }

  /** Runs SQL directly as the superuser (bypassing any gateway); returns psql's unaligned output. */
  sql(sql: string, db = 'postgres'): string {
    const r = spawnSync(
      'psql',
      ['-X', '-At', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1', '-p', String(this.port), '-U', 'postgres', '-d', db, '-c', sql],
      {
        encoding: 'utf8',
        env: { ...process.env, ...(this.opts.password !== undefined ? { PGPASSWORD: this.opts.password } : {}) },
        timeout: 30_000,
      },
    )
    if (r.status !== 0) throw new Error(`psql on the private cluster failed: ${r.stderr}`)
    return r.stdout.trim()
  }

  /** The statement log's records so far (statementLog clusters only), oldest first. */
  serverLog(): readonly ServerLogRecord[] {
    const file = join(this.dir, 'log', 'server.json')
    if (!existsSync(file)) return this.records
    const buf = readFileSync(file)
    if (buf.length > this.logOffset) {
      const end = buf.lastIndexOf(0x0a) + 1
      if (end > this.logOffset) {
        for (const line of buf.toString('utf8', this.logOffset, end).split('\n')) {
          if (line.trim() !== '') this.records.push(JSON.parse(line) as ServerLogRecord)
        }
        this.logOffset = end
      }
    }
    return this.records
  }

  /** Log records of the sessions whose application_name is `app`. */
  recordsOf(app: string): ServerLogRecord[] {
    return this.serverLog().filter((r) => r.application_name === app)
  }

  /** Waits until every backend that used application_name `app` has logged its disconnection. */
  async settled(app: string, timeoutMs = 10_000): Promise<ServerLogRecord[]> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const recs = this.recordsOf(app)
      const pids = new Set(recs.filter((r) => r.backend_type === 'client backend').map((r) => r.pid))
      const gone = new Set(recs.filter((r) => r.message.startsWith('disconnection:')).map((r) => r.pid))
      if (pids.size > 0 && [...pids].every((p) => gone.has(p))) return recs
      if (Date.now() > deadline) throw new Error(`the server log has no disconnection for application ${app}`)
      await new Promise((r) => setTimeout(r, 20))
    }
  }

  stop(): void {
    asPostgres([`${PG_BIN}/pg_ctl`, '-D', this.dataDir, '-m', 'immediate', 'stop'])
    rmSync(this.dir, { recursive: true, force: true })
  }

  /** For debugging a failing test: the log files' names. */
  logFiles(): string[] {
    const d = join(this.dir, 'log')
    return existsSync(d) ? readdirSync(d) : []
  }
}

function readFileSafe(p: string): string {
  try {
    return readFileSync(p, 'utf8')
  } catch {
    return ''
  }
}
