// Upstream SSH handshakes are queued per target: a burst of callers must not look like a flood to
// the target's sshd, whose MaxStartups (10:30:100 by default) starts dropping connections that
// have not authenticated yet once ten are in flight — each dropped one would be a caller's exec
// failing with 255.

/** Upstream handshakes in flight per target; more wait their turn. */
export const MAX_UPSTREAM_HANDSHAKES = 8

interface Queue {
  active: number
  readonly waiting: (() => void)[]
}

const queues = new Map<string, Queue>()

/** Waits for a handshake slot toward `target`; the returned function gives it back (once). */
export async function handshakeSlot(target: string): Promise<() => void> {
  let q = queues.get(target)
  if (!q) {
    q = { active: 0, waiting: [] }
    queues.set(target, q)
  }
  const queue = q
  if (queue.active >= MAX_UPSTREAM_HANDSHAKES) await new Promise<void>((resolve) => queue.waiting.push(resolve))
  else queue.active++
  let released = false
  return () => {
    if (released) return
    released = true
    const next = queue.waiting.shift()
    // The slot passes straight to the next waiter; the count changes only when nobody waits.
    if (next) next()
    else if (--queue.active === 0) queues.delete(target)
  }
}
