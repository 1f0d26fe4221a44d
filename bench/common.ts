// Small helpers several benchmarks share: their integer options, psql as the local superuser, and
// waiting for a server they started (a gateway's run.json above all).

import { type ChildProcess, spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

/** The positive integer after option `name` on the command line, or `def` when it is absent. */
export function arg(name: string, def: number): number {
  const i = process.argv.indexOf(name)
  const v = i >= 0 ? Number(process.argv[i + 1]) : def
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name} needs a positive integer`)
  return v
}

/** Runs SQL in database `db` of the machine's PostgreSQL as `postgres`, stopping at the first error; its output. */
export function admin(sql: string, db: string): string {
  const r = spawnSync('psql', ['-X', '-At', '-h', '127.0.0.1', '-U', 'postgres', '-d', db, '-v', 'ON_ERROR_STOP=1', '-c', sql], {
    encoding: 'utf8',
  })
  if (r.status !== 0) throw new Error(`psql failed: ${r.stderr}`)
  return r.stdout.trim()
}

/**
 * Waits until `cond` holds, failing at once (with `log()`, what the server printed) when `child`
 * exits first, and after `timeoutMs`.
 */
export async function waitFor(
  what: string,
  cond: () => boolean,
  child: ChildProcess,
  log: () => string,
  // A gateway took over 20 s to start on the shared machine at load average 24.
  timeoutMs = 120_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (cond()) return
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${what} exited during start (${child.exitCode ?? child.signalCode}):\n${log()}`)
    }
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`${what} did not become ready in ${timeoutMs / 1000}s:\n${log()}`)
}

/** What a started gateway writes to `<data_dir>/run.json` once every listener is bound. */
export interface GatewayRun {
  readonly pid: number
  readonly listeners: Record<string, string>
}

/** Waits for the gateway `child` (data directory `dataDir`) to be ready; its run.json. */
export async function gatewayReady(dataDir: string, child: ChildProcess, log: () => string): Promise<GatewayRun> {
  const runFile = join(dataDir, 'run.json')
  await waitFor('gatehouse', () => existsSync(runFile), child, log)
  return JSON.parse(readFileSync(runFile, 'utf8')) as GatewayRun
}

/** The port of a listener address as run.json names it (`127.0.0.1:5432`, `[::1]:5432`); 0 if absent. */
export function listenerPort(address: string | undefined): number {
  const a = address ?? ''
  return Number(a.slice(a.lastIndexOf(':') + 1))
}
