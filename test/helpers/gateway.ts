// Starts a real Gatehouse server process (`gatehouse serve --config …`) on free ports with its own
// data directory, and drives it the way a user would: the CLI for tokens, psql for SQL.
// Every test that starts one stops it (`await gw.stop()` in `after`).

import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import yaml from 'js-yaml'

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..')
export const BIN = join(REPO, 'cli/bin/gatehouse.js')

/** The machine's PostgreSQL (trust auth), as a Gatehouse connection. */
export const LOCAL_PG = {
  name: 'app',
  protocol: 'postgres',
  address: '127.0.0.1:5432',
  database: 'test',
  user: 'postgres',
  labels: { env: 'test' },
}

export interface CliResult {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

export interface GatewayOptions {
  readonly connections?: readonly Record<string, unknown>[]
  /** Extra top-level config keys (audit, limits, plugins, …). */
  readonly config?: Record<string, unknown>
  readonly env?: Record<string, string>
  /** Use this data directory (e.g. one on a tmpfs) instead of a fresh one. */
  readonly dataDir?: string
  /** Arguments for the server's node process (a benchmark's `--cpu-prof`). */
  readonly nodeArgs?: readonly string[]
}

/** The text of a file the test wrote to, or '' once it is gone (after cleanup). */
export function readOutput(path: string): string {
  try {
    return readFileSync(path, 'utf8')
  } catch {
    return ''
  }
}

export class TestGateway {
  proc: ChildProcess | null = null
  pgPort = 0
  apiUrl = ''
  /** Every bound listener by name (`postgres`, `ssh`, `api`, …) as run.json names it (`host:port`). */
  listeners: Record<string, string> = {}
  exitCode: number | null = null
  exitSignal: NodeJS.Signals | null = null
  private exited: Promise<void> = Promise.resolve()

  constructor(
    readonly dir: string,
    readonly configFile: string,
    readonly dataDir: string,
    readonly env: Record<string, string>,
    readonly nodeArgs: readonly string[] = [],
  ) {}

  /**
   * The server's output goes to files, not pipes: a test that blocks its own event loop (spawnSync of
   * ssh, psql or the CLI) would not drain a pipe, and a server or sshd writing to a full pipe stalls
   * until that spawnSync times out.
   */
  get stdout(): string {
    return readOutput(join(this.dir, 'server.stdout'))
  }

  get stderr(): string {
    return readOutput(join(this.dir, 'server.stderr'))
  }

  static async start(opts: GatewayOptions = {}): Promise<TestGateway> {
    const dir = mkdtempSync(join(tmpdir(), 'gh-test-'))
    const dataDir = opts.dataDir ?? join(dir, 'data')
    const configFile = join(dir, 'gatehouse.yaml')
    const doc = {
      data_dir: dataDir,
      listen: { api: '127.0.0.1:0', postgres: '127.0.0.1:0' },
      log_level: 'info',
      connections: opts.connections ?? [LOCAL_PG],
      ...opts.config,
    }
    writeFileSync(configFile, yaml.dump(doc))
    const gw = new TestGateway(dir, configFile, dataDir, opts.env ?? {}, opts.nodeArgs ?? [])
    await gw.launch()
    return gw
  }

  /** Starts (or restarts) the server process and waits until it is ready. */
  async launch(): Promise<void> {
    const runFile = join(this.dataDir, 'run.json')
    rmSync(runFile, { force: true })
    this.exitCode = null
    this.exitSignal = null
    const out = openSync(join(this.dir, 'server.stdout'), 'a')
    const err = openSync(join(this.dir, 'server.stderr'), 'a')
    const proc = spawn(process.execPath, [...this.nodeArgs, BIN, 'serve', '--config', this.configFile], {
      env: { ...process.env, ...this.env },
      stdio: ['ignore', out, err],
    })
    closeSync(out)
    closeSync(err)
    this.proc = proc
    this.exited = new Promise((r) =>
      proc.on('exit', (code, signal) => {
        this.exitCode = code
        this.exitSignal = signal
        r()
      }),
    )
    // Generous: on a loaded two-core machine a cold start (WASM compile, SQLite, TLS, SSH host keys)
    // can take well over the usual second (over a minute was seen beside another test file).
    const deadline = Date.now() + 120_000
    while (Date.now() < deadline) {
      if (this.exitCode !== null || this.exitSignal !== null) {
        throw new Error(`gatehouse exited during start (${this.exitCode ?? this.exitSignal}):\n${this.stderr}`)
      }
      if (existsSync(runFile)) {
        const run = JSON.parse(readFileSync(runFile, 'utf8')) as { api: string; listeners: Record<string, string> }
        this.listeners = run.listeners
        this.pgPort = this.port('postgres')
        this.apiUrl = run.api
        return
      }
      await new Promise((r) => setTimeout(r, 50))
    }
    // A gateway that never became ready must not outlive the test: its open handles would keep
    // the test process (and the suite) alive.
    await this.stop()
    throw new Error(`gatehouse did not become ready:\n${this.stderr}`)
  }

  cli(args: readonly string[], extraEnv: Record<string, string> = {}): CliResult {
    const r = spawnSync(process.execPath, [BIN, ...args, '--config', this.configFile], {
      env: { ...process.env, ...this.env, ...extraEnv },
      encoding: 'utf8',
      // Generous: a CLI start-up beside a heavy test file (fifty ssh logins, a corpus) on two cores can take tens of seconds.
      timeout: 120_000,
      maxBuffer: 512 * 1024 * 1024,
    })
    if (r.error) throw r.error
    return { code: r.status, stdout: r.stdout, stderr: r.stderr }
  }

  /** Issues a token through the CLI (which goes through the API) and returns it. */
  token(subject = 'user:alice', args: readonly string[] = []): string {
    const r = this.cli(['token', 'create', '--subject', subject, ...args])
    if (r.code !== 0) throw new Error(`token create failed: ${r.stderr}`)
    return r.stdout.trim()
  }

  tokenJson(subject = 'user:alice', args: readonly string[] = []): { token: string; id: string } {
    const r = this.cli(['token', 'create', '--subject', subject, '--json', ...args])
    if (r.code !== 0) throw new Error(`token create failed: ${r.stderr}`)
    return JSON.parse(r.stdout) as { token: string; id: string }
  }

  /** The port listener `name` is bound to (0 when it is not listening). */
  port(name: string): number {
    const a = this.listeners[name] ?? ''
    return Number(a.slice(a.lastIndexOf(':') + 1))
  }

  /** A libpq connection string to connection `db` through the gateway. */
  conninfo(token: string, db = 'app', extra = ''): string {
    return `host=127.0.0.1 port=${this.pgPort} dbname=${db} user=alice password=${token} sslmode=disable ${extra}`.trim()
  }

  auditEvents(args: readonly string[] = []): Record<string, unknown>[] {
    const r = this.cli(['audit', 'list', '--json', ...args])
    if (r.code !== 0) throw new Error(`audit list failed: ${r.stderr}`)
    return r.stdout
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>)
  }

  /**
   * Milliseconds, on the gateway's own clock (the audit's times), from the revocation of credential
   * `id` to the end of the session that ran `command`. A client's exit seen by a test on a loaded
   * machine also measures when the client was next scheduled; this measures the gateway.
   */
  revocationToEnd(id: string, command: string): number {
    const ev = this.auditEvents()
    const revoked = ev.find((e) => e.type === 'token.revoked' && (e.token as { id?: string } | undefined)?.id === id)
    const st = ev.find((e) => e.type === 'statement' && e.command === command)
    const end = st ? ev.find((e) => e.type === 'session.end' && e.session === st.session) : undefined
    if (!revoked || !end) throw new Error(`no ${revoked ? 'session.end for the session that ran the command' : `token.revoked for ${id}`}`)
    return Date.parse(String(end.time)) - Date.parse(String(revoked.time))
  }

  signal(sig: NodeJS.Signals): void {
    this.proc?.kill(sig)
  }

  waitExit(): Promise<void> {
    return this.exited
  }

  async stop(): Promise<void> {
    if (this.proc && this.exitCode === null && this.exitSignal === null) {
      this.proc.kill('SIGTERM')
      const t = setTimeout(() => this.proc?.kill('SIGKILL'), 5000)
      await this.exited
      clearTimeout(t)
    }
  }

  async cleanup(): Promise<void> {
    await this.stop()
    rmSync(this.dir, { recursive: true, force: true })
  }
}

/** Runs psql with a connection string and SQL; returns its output (no psqlrc, tuples only, unaligned). */
export function psql(conninfo: string, sql: string, opts: { input?: string; extraArgs?: string[] } = {}): CliResult {
  const r = spawnSync('psql', ['-X', '-At', '-v', 'ON_ERROR_STOP=1', ...(opts.extraArgs ?? []), '-d', conninfo, '-c', sql], {
    encoding: 'utf8',
    input: opts.input,
    timeout: 60_000,
  })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

/** Runs SQL directly against the machine's PostgreSQL (trust auth), bypassing the gateway. */
export function direct(sql: string): string {
  const r = spawnSync(
    'psql',
    ['-X', '-At', '-h', '127.0.0.1', '-p', '5432', '-U', 'postgres', '-d', 'test', '-v', 'ON_ERROR_STOP=1', '-c', sql],
    {
      encoding: 'utf8',
      timeout: 60_000,
    },
  )
  if (r.status !== 0) throw new Error(`direct psql failed: ${r.stderr}`)
  return r.stdout.trim()
}
