// What one HTTP exchange carries through the pipeline: the plugin context, the per-connection plan
// parsed once per session, the request being handled, the body filter interface responses pass
// through, and whether the caller is still there.

import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Pool } from 'undici'
import type { Socket } from 'node:net'
import type { Decision, FastPathSession, PluginContext, ProxySession } from '../types.js'
import type { UpstreamSpec } from './upstream.js'

export type HttpContext = PluginContext<'gateway' | 'recordings' | 'fastPath'>

/**
 * A synchronous transform of a response body on its way to the caller (the secret scrubber; a
 * masker): `write` returns what may be sent so far, `end` the rest. Either may throw, which ends
 * the response (it is never sent unfiltered).
 */
export interface BodyFilter {
  write(chunk: Buffer): Buffer[]
  end(): Buffer[]
}

/** A decision kept for requests of the same shape while the engine's epoch holds. */
export interface Reused {
  readonly epoch: object
  readonly decision: Decision
}

/** Per-connection settings the pipeline needs, parsed once per session. */
export interface ConnectionPlan {
  readonly pool: Pool
  /** Where the upstream is (for a WebSocket, dialled outside the pool). */
  readonly spec: UpstreamSpec
  /** The session's synchronous decide and audit (the same answers as the session's own). */
  readonly fast: FastPathSession
  /** Decisions by request shape (method, path, query, headers; no body), see decideShape. */
  readonly reuse: Map<string, Reused>
  /** Header name (lower case) → value to send upstream, resolved secrets. */
  readonly inject: ReadonlyMap<string, string>
  /** Byte strings masked in responses (the injected values in their echo forms). */
  readonly needles: readonly Buffer[]
  /** JSON bodies up to this size are parsed for policy; larger ones are `body_opaque`. */
  readonly bodyLimit: number
  /** Bytes of each body kept in recordings. */
  readonly recordBytes: number
}

export interface Exchange {
  readonly ctx: HttpContext
  readonly session: ProxySession
  readonly plan: ConnectionPlan
  readonly seq: number
  readonly method: string
  readonly path: string
  readonly rawQuery: string
  /** The Host that named the connection (host-name routing); null for `/c/<connection>/`. */
  readonly host: string | null
  readonly req: IncomingMessage
  /** For an upgrade: a response written on the raw socket, for the gateway's own refusals. */
  readonly res: ServerResponse
  /** A WebSocket upgrade: the client's socket and the bytes that came after its request head. */
  readonly upgrade?: { readonly socket: Socket; readonly head: Buffer }
}

/**
 * Whether the caller is still there: an AbortSignal made only when something needs one (most
 * requests finish without), and the relay to stop when the caller goes (forward.ts sets it).
 */
export class Liveness {
  gone = false
  private controller: AbortController | null = null
  onGone: { gone(): void } | null = null

  constructor(private readonly res: ServerResponse) {
    // `on`, not `once`: a response closes once, and `once` wraps the listener per request.
    res.on('close', this.closed)
  }

  /** The caller went away (or the session ended) before the answer was complete: stop the work. */
  private readonly closed = (): void => {
    if (this.res.writableFinished) return
    this.gone = true
    this.controller?.abort()
    this.onGone?.gone()
  }

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController()
      if (this.gone) this.controller.abort()
    }
    return this.controller.signal
  }
}
