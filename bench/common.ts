// Small helpers several benchmarks share: their integer options and psql as the local superuser.

import { spawnSync } from 'node:child_process'

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
