// What one worker of `gatehouse serve --workers N` tells the others. The shared state database
// is the source of truth (a revocation, a vote, a session's end are written there first); these
// messages make every worker act on it at once: end the sessions of a revoked token, end a
// session another worker serves, wake a statement held for an approval given elsewhere, load the
// policy bundle another worker compiled after its source changed (the same bytes, not a compile of
// its own). They travel over the IPC channel each worker has to the
// primary, which relays them to every other worker and returns their answers; a worker whose
// channel closes stops serving (it could no longer learn of revocations).

/** A notification to every other worker; each answers with a count (sessions it ended). */
export type PeerMessage =
  | { readonly kind: 'revoke'; readonly jti: string; readonly reason: string }
  | { readonly kind: 'kill'; readonly session: string; readonly reason: string }
  | { readonly kind: 'approval'; readonly request: string }
  | {
      readonly kind: 'policy'
      readonly version: string
      readonly source: string
      /** The compiled bundle (base64 of policy.wasm), its data document and Rego sources: what the sender loaded. */
      readonly wasm: string
      readonly data: unknown
      readonly rego: readonly string[]
    }

export interface Peers {
  /** This worker's number (1 … N). */
  readonly worker: number
  /** Tells every other worker; resolves with the sum of their answers once all answered. */
  tell(message: PeerMessage): Promise<number>
  /** The handler of what other workers tell this one. */
  listen(handler: (message: PeerMessage) => number | Promise<number>): void
}

/** The IPC envelope between a worker and the primary (cli/gateway/primary.ts relays them). */
export type PeerEnvelope =
  | { readonly gh: 'tell'; readonly seq: number; readonly message: PeerMessage }
  | { readonly gh: 'told'; readonly seq: number; readonly answer: number }
  | { readonly gh: 'peer'; readonly seq: number; readonly message: PeerMessage }
  | { readonly gh: 'peer-answer'; readonly seq: number; readonly answer: number }

export function isPeerEnvelope(m: unknown): m is PeerEnvelope {
  return typeof m === 'object' && m !== null && typeof (m as { gh?: unknown }).gh === 'string'
}

/** How long a worker waits for the primary's relay before it treats the answer as none. */
const TELL_TIMEOUT_MS = 10_000

/** A worker's side: messages to the primary over `process.send`, answers matched by sequence. */
export class IpcPeers implements Peers {
  private seq = 0
  private readonly waiting = new Map<number, (answer: number) => void>()
  private handler: ((message: PeerMessage) => number | Promise<number>) | null = null

  constructor(
    readonly worker: number,
    private readonly send: (m: PeerEnvelope) => boolean,
  ) {}

  /** Feed every IPC message the process receives through this. */
  receive(m: unknown): void {
    if (!isPeerEnvelope(m)) return
    if (m.gh === 'told') {
      const done = this.waiting.get(m.seq)
      this.waiting.delete(m.seq)
      done?.(m.answer)
    } else if (m.gh === 'peer') {
      const seq = m.seq
      const answer = (n: number): void => {
        this.send({ gh: 'peer-answer', seq, answer: n })
      }
      try {
        const r = this.handler ? this.handler(m.message) : 0
        if (typeof r === 'number') answer(r)
        else r.then(answer, () => answer(0))
      } catch {
        answer(0)
      }
    }
  }

  tell(message: PeerMessage): Promise<number> {
    const seq = ++this.seq
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiting.delete(seq)
        resolve(0)
      }, TELL_TIMEOUT_MS)
      timer.unref()
      this.waiting.set(seq, (n) => {
        clearTimeout(timer)
        resolve(n)
      })
      if (!this.send({ gh: 'tell', seq, message })) {
        // The channel is gone: the worker is stopping (see the disconnect handler).
        clearTimeout(timer)
        this.waiting.delete(seq)
        resolve(0)
      }
    })
  }

  listen(handler: (message: PeerMessage) => number | Promise<number>): void {
    this.handler = handler
  }
}
