// Bounds on connections that have not authenticated yet, counted on our own TCP listener before
// ssh2 sees a byte: at most MAX_PENDING_AUTH across the listener and MAX_PENDING_PER_SOURCE from
// one source (an IPv4 address, an IPv6 /64), so one host holding idle or half-handshaken sockets
// cannot lock everyone else out; each must finish the SSH handshake within HANDSHAKE_TIMEOUT_MS
// and authenticate within LOGIN_GRACE_MS, or it is dropped.

import { isIPv6 } from 'node:net'
import type { Socket } from 'node:net'

/** Connections waiting to authenticate across the listener; more are dropped at once. */
export const MAX_PENDING_AUTH = 64
/**
 * Connections waiting to authenticate from one source address; more are dropped at once. Half the
 * overall bound: one source can never hold every slot, and a burst of logins from one CI runner
 * (25 at once, say) still fits.
 */
export const MAX_PENDING_PER_SOURCE = 32
/** Time to send a banner and finish the key exchange. */
export const HANDSHAKE_TIMEOUT_MS = 10_000

/** The source a connection counts against: the IPv4 address, or the /64 of an IPv6 one. */
export function sourceOf(address: string | undefined): string {
  if (!address) return '?'
  const v4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)
  if (v4) return v4[1] as string
  if (!isIPv6(address)) return address
  // Expand `::` so the first four groups are the /64.
  const [head = '', tail = ''] = address.split('::')
  const h = head === '' ? [] : head.split(':')
  const t = tail === '' ? [] : tail.split(':')
  const groups = address.includes('::') ? [...h, ...Array(8 - h.length - t.length).fill('0'), ...t] : h
  return `${groups
    .slice(0, 4)
    .map((g) => g.toLowerCase().replace(/^0+(?=.)/, ''))
    .join(':')}::/64`
}

interface Pending {
  readonly socket: Socket
  readonly source: string
  readonly timers: NodeJS.Timeout[]
}

export class PendingConnections {
  private readonly pending = new Map<string, Pending>()
  private readonly perSource = new Map<string, number>()

  constructor(private readonly loginGraceMs: number) {}

  get size(): number {
    return this.pending.size
  }

  /** Counts a new socket as pending; false (the caller drops it) when a bound is reached. */
  admit(socket: Socket): boolean {
    const source = sourceOf(socket.remoteAddress)
    const fromSource = this.perSource.get(source) ?? 0
    if (this.pending.size >= MAX_PENDING_AUTH || fromSource >= MAX_PENDING_PER_SOURCE) return false
    const key = keyOf(socket.remoteAddress, socket.remotePort)
    const drop = (): void => {
      if (this.pending.get(key)?.socket === socket) socket.destroy()
    }
    const timers = [setTimeout(drop, HANDSHAKE_TIMEOUT_MS), setTimeout(drop, this.loginGraceMs)]
    for (const t of timers) t.unref()
    this.pending.set(key, { socket, source, timers })
    this.perSource.set(source, fromSource + 1)
    socket.once('close', () => this.release(key, socket))
    return true
  }

  /** The SSH handshake finished: only the authentication deadline is left. */
  handshaken(address: string | undefined, port: number | undefined): void {
    const p = this.pending.get(keyOf(address, port))
    if (p) clearTimeout(p.timers[0])
  }

  /** Authenticated (or gone): no longer pending. */
  release(key: string, socket?: Socket): void {
    const p = this.pending.get(key)
    if (!p || (socket && p.socket !== socket)) return
    for (const t of p.timers) clearTimeout(t)
    this.pending.delete(key)
    const n = (this.perSource.get(p.source) ?? 1) - 1
    if (n > 0) this.perSource.set(p.source, n)
    else this.perSource.delete(p.source)
  }
}

export function keyOf(address: string | undefined, port: number | undefined): string {
  return `${address}:${port}`
}
