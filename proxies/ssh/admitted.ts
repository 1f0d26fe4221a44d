// What the parts of an admitted caller's connection share (forwarding, session channels, file
// transfer): it exists only once the caller is identified, so its session and target are never null.

import type { ServerChannel } from 'ssh2'
import type { PluginContext, ProxySession } from '../types.js'
import type { Target } from './upstream.js'

export interface Admitted {
  readonly ctx: PluginContext<'recordings'>
  readonly session: ProxySession
  readonly target: Target
  /** True once the caller's connection is closing: nothing new starts. */
  readonly closed: boolean
  /** Ends the caller's connection, its channels and the upstream. */
  close(reason: string): void
  /** A channel that runs something: told and closed when the connection ends. */
  track(stream: ServerChannel): void
  /** The channel finished: nothing more to tell it. */
  untrack(stream: ServerChannel): void
}

/** Calls a one-shot ssh2 verdict that may be absent or already spent (the client went away). */
export function once(f: (() => void) | undefined): void {
  try {
    f?.()
  } catch {
    // the request or channel is already gone
  }
}

/** Why a channel opened while the connection is closing is refused (audited). */
export const SESSION_ENDED = 'refused: the session has ended'
