// For tests that run a PostgreSQL server of their own (SCRAM-only auth, many connections, …): the
// server programs live outside PATH and refuse to run as root, so they run as the postgres user.

import { spawnSync } from 'node:child_process'

export { freePort } from './sshd.js'

export const PG_BIN = '/usr/lib/postgresql/15/bin'

/** Runs a command as the postgres user (initdb, pg_ctl and postgres refuse to run as root). */
export function asPostgres(args: string[]): { status: number | null; stderr: string } {
  const r = spawnSync('runuser', ['-u', 'postgres', '--', ...args], { encoding: 'utf8', timeout: 60_000 })
  return { status: r.status, stderr: r.stderr }
}
