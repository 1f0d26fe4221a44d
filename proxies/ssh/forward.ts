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
import type {
  AcceptConnection,
  ClientChannel,
  Connection,
  RejectConnection,
  ServerChannel,
  TcpConnectionDetails,
  TcpipBindInfo,
  TcpipRequestInfo,
} from 'ssh2'
import { type Admitted, once, SESSION_ENDED } from './admitted.js'
import { judge } from './judge.js'

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

/** One admitted caller's forwards: `ssh -L` channels, `ssh -R` listeners and what arrives on them. */
export class Forwards {
  /** Forwarded TCP channels open (both directions), bounded by MAX_FORWARD_CHANNELS. */
  private channels = 0
  /** Ports the target listens on for this caller (`ssh -R`). */
  private readonly remote = new Set<number>()

  constructor(
    private readonly a: Admitted,
    private readonly caller: Connection,
  ) {}

  /** `ssh -L`: one forwarded connection to host:port from the target, if policy allows it. */
  async local(accept: AcceptConnection<ServerChannel>, reject: RejectConnection, info: TcpipRequestInfo): Promise<void> {
    const a = this.a
    const cmd: ForwardCommand = {
      direction: 'local',
      host: info.destIP,
      port: info.destPort,
      origin_host: info.srcIP,
      origin_port: info.srcPort,
    }
    const text = forwardText(cmd)
    if (a.closed) {
      a.session.auditLater({ type: 'result', action: 'ssh.forward', command: text, error: SESSION_ENDED })
      return once(reject)
    }
    if (this.channels >= MAX_FORWARD_CHANNELS) return once(reject)
    this.channels++
    const v = await judge(a.session, a.ctx.log, 'ssh.forward', cmd, text)
    const u = v.ok ? await a.target.ready : null
    if (!v.ok || !u?.ok || a.closed) {
      this.channels--
      return once(reject)
    }
    u.client.forwardOut(info.srcIP, info.srcPort, info.destIP, info.destPort, (err, ch) => {
      if (err || a.closed) {
        this.channels--
        a.session.auditLater({ type: 'result', action: 'ssh.forward', command: text, error: 'the target could not open the forward' })
        return once(reject)
      }
      this.splice(accept(), ch, text)
    })
  }

  /** `ssh -R`: the target listens for the caller, if policy allows that address and port. */
  async remoteRequest(
    name: 'tcpip-forward' | 'cancel-tcpip-forward',
    accept: ((port?: number) => void) | undefined,
    reject: (() => void) | undefined,
    info: TcpipBindInfo,
  ): Promise<void> {
    const a = this.a
    const u = await a.target.ready
    if (!u.ok || a.closed) return once(reject)
    if (name === 'cancel-tcpip-forward') {
      if (!this.remote.has(info.bindPort)) return once(reject)
      u.client.unforwardIn(info.bindAddr, info.bindPort, (err) => {
        this.remote.delete(info.bindPort)
        if (err) once(reject)
        else accept?.()
      })
      return
    }
    if (this.remote.size >= MAX_REMOTE_FORWARDS) return once(reject)
    const cmd: ForwardCommand = { direction: 'remote', host: info.bindAddr, port: info.bindPort }
    const v = await judge(a.session, a.ctx.log, 'ssh.forward', { ...cmd, listen: true }, `${forwardText(cmd)} (listen)`)
    if (!v.ok || a.closed) return once(reject)
    u.client.forwardIn(info.bindAddr, info.bindPort, (err, port) => {
      if (err || a.closed) return once(reject)
      this.remote.add(port || info.bindPort)
      accept?.(port || info.bindPort)
    })
  }

  /** A connection arriving on a remote forward: decided and audited, then handed to the caller. */
  incoming(d: TcpConnectionDetails, accept: AcceptConnection<ClientChannel>, reject: RejectConnection): void {
    const a = this.a
    if (a.closed || !this.remote.has(d.destPort) || this.channels >= MAX_FORWARD_CHANNELS) {
      once(reject)
      return
    }
    this.channels++
    const cmd: ForwardCommand = { direction: 'remote', host: d.destIP, port: d.destPort, origin_host: d.srcIP, origin_port: d.srcPort }
    const text = forwardText(cmd)
    void judge(a.session, a.ctx.log, 'ssh.forward', cmd, text).then((v) => {
      if (!v.ok || a.closed) {
        this.channels--
        once(reject)
        return
      }
      this.caller.forwardOut(d.destIP, d.destPort, d.srcIP, d.srcPort, (err, ch) => {
        if (err || a.closed) {
          this.channels--
          once(reject)
          return
        }
        this.splice(ch, accept(), text)
      })
    })
  }

  private splice(caller: ServerChannel | ClientChannel, target: ServerChannel | ClientChannel, text: string): void {
    const t0 = process.hrtime.bigint()
    splice(caller, target, (bytesIn, bytesOut) => {
      this.channels--
      this.a.session.auditLater({
        type: 'result',
        action: 'ssh.forward',
        command: text,
        bytes_in: bytesIn,
        bytes_out: bytesOut,
        duration_ms: Number(process.hrtime.bigint() - t0) / 1e6,
      })
    })
  }
}
