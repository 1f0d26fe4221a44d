// psql in the background for tests of held statements: its output as it arrives, and the
// approval request id from the notice or error the gateway sent.

import { type ChildProcess, spawn } from 'node:child_process'

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

export interface Run {
  readonly proc: ChildProcess
  stdout: string
  stderr: string
  readonly done: Promise<number | null>
}

/** psql in the background: one -c per statement (each its own Query), errors do not stop it. */
export function psqlAsync(conninfo: string, statements: readonly string[], stopOnError = true): Run {
  const args = ['-X', '-At', '-v', `ON_ERROR_STOP=${stopOnError ? 1 : 0}`, '-d', conninfo]
  for (const s of statements) args.push('-c', s)
  const proc = spawn('psql', args, { stdio: ['ignore', 'pipe', 'pipe'] })
  const run: Run = {
    proc,
    stdout: '',
    stderr: '',
    done: new Promise((r) => proc.on('close', (code) => r(code))), // 'close': all output read
  }
  proc.stdout?.on('data', (d: Buffer) => {
    run.stdout += d.toString()
  })
  proc.stderr?.on('data', (d: Buffer) => {
    run.stderr += d.toString()
  })
  return run
}

/** The request id from the hold notice (or error) psql printed. */
export async function requestIdOf(run: Run, timeoutMs = 15_000): Promise<string> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    const m = /request (R-[0-9a-f]{6})/.exec(run.stderr)
    if (m?.[1]) return m[1]
    await sleep(20)
  }
  throw new Error(`no approval notice from psql; stderr: ${run.stderr}`)
}
