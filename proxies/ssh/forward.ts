// Port forwarding through the gateway, only where policy allows it (`ssh.forward`):
//
// - local (`ssh -L`, a `direct-tcpip` channel): the caller asks the gateway to reach host:port from
//   the target; each such channel is decided with `command.direction: "local"`, `command.host` and
//   `command.port` (the destination), then opened from the target with the gateway's own session.
// - remote (`ssh -R`, a `tcpip-forward` global request): the caller asks the target to listen on
//   host:port; the request is decided with `direction: "remote"` and the bind address and port, and
//   every connection that arrives on it is audited as it is handed back to the caller.
//
// Each forwarded connection is audited (`statement` before, `result` with byte counts after).
// Streams are piped with backpressure; forwarded channels are bounded per SSH connection.

import type { Duplex } from 'node:stream'

/** Forwarded TCP channels open at once per SSH connection. */
export const MAX_FORWARD_CHANNELS = 64
/** Remote listeners (`-R`) per SSH connection. */
export const MAX_REMOTE_FORWARDS = 16

export interface ForwardCommand {
  readonly [key: string]: unknown
  readonly direction: 'local' | 'remote'
  /** local: the destination; remote: the address the target listens on. */
  readonly host: string
  readonly port: number
  /** Where the forwarded connection comes from, when known. */
  readonly origin_host?: string
  readonly origin_port?: number
}

export function forwardText(c: ForwardCommand): string {
  return `forward ${c.direction} ${c.host}:${c.port}`
}

/**
 * Pipes two channels together both ways with backpressure; `done` runs once with the byte counts
 * when both sides are closed (or one failed).
 */
export function splice(a: Duplex, b: Duplex, done: (bytesIn: number, bytesOut: number) => void): void {
  let bytesIn = 0
  let bytesOut = 0
  let finished = false
  a.on('data', (d: Buffer) => {
    bytesIn += d.length
  })
  b.on('data', (d: Buffer) => {
    bytesOut += d.length
  })
  const end = (): void => {
    if (finished) return
    finished = true
    a.destroy()
    b.destroy()
    done(bytesIn, bytesOut)
  }
  a.on('error', end)
  b.on('error', end)
  a.on('close', end)
  b.on('close', end)
  a.pipe(b)
  b.pipe(a)
}
