// The CLI's exit codes, one table for scripts and CI (documented in docs/cli.md):
//
//   0  ok
//   1  what was asked failed: denied, not found, a failing policy case, a broken audit chain
//   2  usage or configuration error: a bad option or argument, an invalid gatehouse.yaml, a
//      configured plugin that does not load, a policy bundle that does not build
//   3  the server is unreachable: no gateway runs for this configuration, or it did not answer
//
// Every error leaves through `exitCodeFor`, so a new command cannot invent its own meaning.

import { CommanderError } from 'commander'
import { isGatehouseError } from '../engine/errors.js'
import { ServerUnreachableError } from './client.js'

export { ServerUnreachableError }

export const EXIT_OK = 0
export const EXIT_FAILED = 1
export const EXIT_USAGE = 2
export const EXIT_UNREACHABLE = 3

/** A mistake in how the command was called (exit 2). */
export class UsageError extends Error {}

/** What was asked could not be done, for a reason the message gives (exit 1). */
export class FailedError extends Error {}

export function exitCodeFor(err: unknown): number {
  if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT_OK : EXIT_USAGE
  if (err instanceof UsageError) return EXIT_USAGE
  if (err instanceof ServerUnreachableError) return EXIT_UNREACHABLE
  // A configuration, a configured plugin or a policy bundle that does not load is a usage error
  // of the command that read it.
  if (isGatehouseError(err)) return ['GH_ERR_CONFIG', 'GH_ERR_POLICY', 'GH_ERR_PLUGIN'].includes(err.code) ? EXIT_USAGE : EXIT_FAILED
  if (err instanceof Error && 'code' in err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ECONNREFUSED' || code === 'ECONNRESET' || code === 'EHOSTUNREACH') return EXIT_UNREACHABLE
  }
  // An API refusal (a delegation outside the parent's scope, an unknown id, a conflict) is a
  // failure of what was asked; the CLI checks what it can itself first and calls that usage.
  return EXIT_FAILED
}
