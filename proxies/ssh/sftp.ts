// The SFTP gate: every file operation a client asks for (draft-ietf-secsh-filexfer-02, the version
// OpenSSH speaks, plus OpenSSH's extensions) is resolved on the target, decided on its canonical
// path, and forwarded with that canonical path; a refused one is answered by the gateway with
// SSH_FXP_STATUS and never forwarded.
//
// Client → target (`SftpRequestFilter`): every packet is buffered whole (capped) and read, except
// WRITE, whose head (up to its handle) is read and whose data streams through as views. Requests
// naming paths have each path resolved (sftp-paths.ts: the target's REALPATH), are decided, and are
// re-encoded with the canonical paths, so what reaches the target is what was decided. Requests
// naming handles (read, write, fstat, fsetstat, readdir, close, fsync, copy-data) go through only
// with a handle the target returned for an open or opendir the gateway decided; a handle is mapped
// to the decided path by the target's HANDLE reply to that request (an open whose request id is
// still awaiting its reply is refused, so a reused id cannot attach a handle to a decoy path).
// FSETSTAT (a chmod on a file opened only for reading) is decided as `setstat` on that path.
//
// Target → client (`SftpReplyInjector`): the gateway's own replies are slipped in between the
// target's packets (never inside one), and HANDLE replies are read to learn which handle names
// which path.

import { PathRefused, resolveFollow, resolveLinkText, resolveNoFollow, expandHome, type TargetFs } from './sftp-paths.js'
import {
  bytes,
  Fx,
  FX_FAILURE,
  FX_OP_UNSUPPORTED,
  FX_PERMISSION_DENIED,
  MAX_HANDLE,
  type PathField,
  parseSftpRequest,
  rebuildRequest,
  type SftpOperation,
  type Shape,
  statusPacket,
} from './sftp-wire.js'

/** Largest SFTP packet accepted. OpenSSH's sftp-server refuses packets over 256 KiB
 * (SFTP_MAX_MSG_LENGTH in sftp-common.h) and closes the session; so does the gateway. */
export const MAX_SFTP_PACKET = 256 * 1024
/** Handles remembered per sftp channel (OpenSSH's sftp-server has at most 512 open). */
export const MAX_TRACKED_HANDLES = 1024

/** The operations to decide for a request, on canonical paths, and the canonical value of each path field. */
export interface ResolvedRequest {
  readonly ops: readonly SftpOperation[]
  readonly canonical: readonly string[]
}

/** A symlink moved or linked to a new name is judged as making a link there to where it points. */
async function linkCopy(fs: TargetFs, from: string, to: string, spelled: string, via: string): Promise<SftpOperation[]> {
  if ((await fs.lstat(from)) !== 'symlink') return []
  return [{ operation: 'symlink', path: to, target: await resolveFollow(fs, from), requested_path: spelled, via }]
}

/** Resolves every path of a request on the target (sftp-paths.ts). Throws PathRefused. */
export async function resolveRequest(shape: Shape, fields: readonly PathField[], fs: TargetFs): Promise<ResolvedRequest> {
  const [a, b] = fields.map((f) => f.value) as [string, string]
  switch (shape.kind) {
    case 'one': {
      const path =
        shape.resolve === 'follow'
          ? await resolveFollow(fs, a)
          : shape.resolve === 'expand'
            ? await resolveFollow(fs, await expandHome(fs, a))
            : await resolveNoFollow(fs, a, shape.resolve === 'new')
      const op: SftpOperation = {
        operation: shape.operation,
        path,
        requested_path: a,
        ...(shape.mode ? { mode: shape.mode } : {}),
        ...(shape.permissions ? { permissions: shape.permissions } : {}),
      }
      return { ops: [op], canonical: [path] }
    }
    case 'rename': {
      const from = await resolveNoFollow(fs, a, true)
      const to = await resolveNoFollow(fs, b, true)
      const op: SftpOperation = { operation: 'rename', path: from, target: to, requested_path: a, requested_target: b }
      return { ops: [op, ...(await linkCopy(fs, from, to, b, 'rename'))], canonical: [from, to] }
    }
    case 'link': {
      // hardlink@openssh.com is link(oldpath, newpath): the new name is what gets created.
      const from = await resolveNoFollow(fs, a, true)
      const to = await resolveNoFollow(fs, b, true)
      const op: SftpOperation = { operation: 'link', path: to, target: from, requested_path: b, requested_target: a }
      return { ops: [op, ...(await linkCopy(fs, from, to, b, 'link'))], canonical: [from, to] }
    }
    case 'symlink': {
      const link = await resolveNoFollow(fs, b, true)
      const dest = await resolveLinkText(fs, link, a)
      const op: SftpOperation = { operation: 'symlink', path: link, target: dest, requested_path: b, requested_target: a }
      // The link is made pointing at the canonical destination that was judged.
      return { ops: [op], canonical: [dest, link] }
    }
  }
}

export type SftpVerdict = { readonly allow: true } | { readonly allow: false; readonly message: string }

export interface SftpFilterHooks {
  /** Sends bytes to the target; false means wait for `drained()`. */
  forward(bytes: Buffer): boolean
  /** Sends one of the gateway's own replies to the client. */
  reply(packet: Buffer): void
  /** The target's answers about paths (REALPATH, LSTAT), on the gateway's own channel. */
  fs(): Promise<TargetFs>
  /** Decides and records one operation. A rejection is taken as a refusal. */
  decide(op: SftpOperation): Promise<SftpVerdict>
  /** Records a request refused before any decision (unsupported, unreadable, unresolvable, unknown handle). */
  refused(what: string): void
  /** Called when the filter can take more input after push() returned false. */
  resume(): void
  /** The stream broke the protocol (a packet over the cap): the channel must end. */
  fail(why: string): void
}

type Outcome = { readonly forward: Buffer; readonly opened: string | null } | { readonly code: number; readonly message: string }

/** Client → target. Feed it the client's bytes in order; it forwards, holds or answers. */
export class SftpRequestFilter {
  private readonly chunks: Buffer[] = []
  /** A packet (or a WRITE's head) being collected: its parts and their length. */
  private acc: Buffer[] = []
  private accLen = 0
  /** Bytes of the current WRITE still to pass through, or to drop (its handle was refused). */
  private passLeft = 0
  private dropLeft = 0
  private deciding = false
  private blocked = false
  private failed = false
  /** Opens in flight (request id → decided canonical path) and handles the target handed out. */
  private readonly opening = new Map<number, string>()
  private readonly handles = new Map<string, string>()

  constructor(private readonly hooks: SftpFilterHooks) {}

  /** Queues `data`; false when the caller should stop reading until `resume`. */
  push(data: Buffer): boolean {
    if (this.failed) return true
    this.chunks.push(data)
    this.run()
    return !(this.deciding || this.blocked)
  }

  /** The target's side drained: carry on. */
  drained(): void {
    if (!this.blocked) return
    this.blocked = false
    this.run()
    if (!this.deciding && !this.blocked) this.hooks.resume()
  }

  /** A HANDLE reply from the target (see SftpReplyInjector): remember which decided path it names. */
  handleReply(id: number, handle: Buffer): void {
    const path = this.opening.get(id)
    if (path === undefined) return
    this.opening.delete(id)
    if (this.handles.size >= MAX_TRACKED_HANDLES) this.handles.delete(this.handles.keys().next().value as string)
    this.handles.set(handle.toString('hex'), path)
  }

  /** A STATUS reply: an open that failed leaves no handle. */
  statusReply(id: number): void {
    this.opening.delete(id)
  }

  private out(b: Buffer): void {
    if (!this.hooks.forward(b)) this.blocked = true
  }

  private take(n: number): Buffer {
    const c = this.chunks[0] as Buffer
    if (n >= c.length) {
      this.chunks.shift()
      return c
    }
    this.chunks[0] = c.subarray(n)
    return c.subarray(0, n)
  }

  private run(): void {
    this.pump()
    this.idleCheck()
  }

  private collected(): Buffer {
    const b = this.acc.length === 1 ? (this.acc[0] as Buffer) : Buffer.concat(this.acc)
    this.acc = [b]
    return b
  }

  /** Bytes of the current packet to collect before acting: all of it, or a WRITE's head up to its handle. */
  private need(): number {
    if (this.accLen < 5) return 5
    const head = this.collected()
    const whole = 4 + head.readUInt32BE(0)
    if (head[4] !== Fx.Write) return whole
    if (this.accLen < 13) return Math.min(whole, 13)
    const h = head.readUInt32BE(9)
    return h > MAX_HANDLE ? this.accLen : Math.min(whole, 13 + h)
  }

  private pump(): void {
    while (!this.deciding && !this.blocked && !this.failed && this.chunks.length > 0) {
      const c = this.chunks[0] as Buffer
      if (this.passLeft > 0 || this.dropLeft > 0) {
        const piece = this.take(Math.min(this.passLeft + this.dropLeft, c.length))
        if (this.passLeft > 0) {
          this.passLeft -= piece.length
          this.out(piece)
        } else this.dropLeft -= piece.length
        continue
      }
      const need = this.need()
      if (this.accLen < need) {
        const piece = this.take(Math.min(need - this.accLen, c.length))
        this.acc.push(piece)
        this.accLen += piece.length
        if (this.accLen < 5) continue
        const len = this.collected().readUInt32BE(0)
        if (len === 0 || len > MAX_SFTP_PACKET) {
          this.failed = true
          this.chunks.length = 0
          this.hooks.fail(`an SFTP packet of ${len} bytes (over ${MAX_SFTP_PACKET})`)
          return
        }
        if (this.accLen < this.need()) continue
      }
      const pkt = this.collected()
      this.acc = []
      this.accLen = 0
      const rest = 4 + pkt.readUInt32BE(0) - pkt.length
      if (pkt[4] === Fx.Write) {
        // Only the head was collected: the data streams through, or is dropped with the refusal.
        const req = parseSftpRequest(pkt.subarray(4))
        if (req.kind === 'handles' && this.known(req.handles)) {
          this.passLeft = rest
          this.out(pkt)
        } else {
          this.dropLeft = rest
          this.refuse(pkt.length >= 9 ? pkt.readUInt32BE(5) : 0, FX_FAILURE, 'gatehouse: refused: not a handle the gateway decided')
        }
        continue
      }
      this.gate(pkt)
    }
  }

  private known(handles: readonly Buffer[]): boolean {
    return handles.every((h) => this.handles.has(h.toString('hex')))
  }

  private refuse(id: number, code: number, message: string): void {
    this.hooks.refused(message.replace(/^gatehouse: (refused: )?/, ''))
    this.hooks.reply(statusPacket(id, code, message))
  }

  private gate(pkt: Buffer): void {
    const body = pkt.subarray(4)
    const req = parseSftpRequest(body)
    if (req.kind === 'pass') {
      this.out(pkt)
      return
    }
    if (req.kind === 'unsupported') {
      this.refuse(req.id, FX_OP_UNSUPPORTED, `gatehouse: ${req.what} is not supported through the gateway`)
      return
    }
    if (req.kind === 'handles') {
      if (!this.known(req.handles)) {
        this.refuse(req.id, FX_FAILURE, 'gatehouse: refused: not a handle the gateway decided')
        return
      }
      if (req.close) {
        // CLOSE frees a handle name the target may hand out again: forget its path.
        this.handles.delete((req.handles[0] as Buffer).toString('hex'))
      }
      if (!req.setstat) {
        this.out(pkt)
        return
      }
      const path = this.handles.get((req.handles[0] as Buffer).toString('hex')) as string
      this.settleAsync(req.id, this.decideAll([{ operation: 'setstat', path, requested_path: path }], pkt, null))
      return
    }
    const isOpen = body[0] === Fx.Open || body[0] === Fx.Opendir
    if (isOpen && this.opening.has(req.id)) {
      // The handle the target returns is attached to the path by request id: one open per id at a time.
      this.refuse(req.id, FX_FAILURE, 'gatehouse: refused: the request id of an open still awaiting its reply')
      return
    }
    this.settleAsync(req.id, this.resolveAndDecide(req.shape, req.fields, body, isOpen))
  }

  private async resolveAndDecide(shape: Shape, fields: readonly PathField[], body: Buffer, isOpen: boolean): Promise<Outcome> {
    let r: ResolvedRequest
    try {
      r = await resolveRequest(shape, fields, await this.hooks.fs())
    } catch (err) {
      const code = err instanceof PathRefused ? err.code : FX_FAILURE
      const why = err instanceof PathRefused ? err.message : 'the target could not resolve the path'
      return { code, message: `gatehouse: refused: ${why}` }
    }
    return this.decideAll(r.ops, rebuildRequest(body, fields, r.canonical), isOpen ? (r.ops[0] as SftpOperation).path : null)
  }

  private async decideAll(ops: readonly SftpOperation[], forward: Buffer, opened: string | null): Promise<Outcome> {
    for (const op of ops) {
      const v = await this.hooks.decide(op)
      if (!v.allow) return { code: FX_PERMISSION_DENIED, message: `gatehouse: ${v.message}` }
    }
    return { forward, opened }
  }

  private settleAsync(id: number, outcome: Promise<Outcome>): void {
    this.deciding = true
    const settle = (o: Outcome): void => {
      this.deciding = false
      if (this.failed) return
      if ('forward' in o) {
        if (o.opened !== null) {
          if (this.opening.size >= MAX_TRACKED_HANDLES) this.opening.clear()
          this.opening.set(id, o.opened)
        }
        this.out(o.forward)
      } else {
        if (o.code !== FX_PERMISSION_DENIED) this.hooks.refused(o.message.replace(/^gatehouse: (refused: )?/, ''))
        this.hooks.reply(statusPacket(id, o.code, o.message))
      }
      this.run()
      if (!this.deciding && !this.blocked) this.hooks.resume()
    }
    outcome.then(settle, () =>
      settle({ code: FX_PERMISSION_DENIED, message: 'gatehouse: refused: the gateway could not decide this operation' }),
    )
  }

  /** Calls `done` once everything pushed so far has been forwarded or answered (the client's EOF). */
  finish(done: () => void): void {
    this.onIdle = done
    this.idleCheck()
  }

  private onIdle: (() => void) | null = null

  private idleCheck(): void {
    if (this.onIdle && (this.failed || (!this.deciding && !this.blocked && this.chunks.length === 0))) {
      const f = this.onIdle
      this.onIdle = null
      f()
    }
  }

  /** Stops forwarding (the channel is ending). */
  stop(): void {
    this.failed = true
    this.chunks.length = 0
  }
}

/** Target → client. Forwards the target's packets and slips the gateway's replies in between. */
export class SftpReplyInjector {
  private left = 0
  private readonly head = Buffer.alloc(13)
  private headLen = 0
  private readonly pending: Buffer[] = []
  /** A HANDLE reply being collected (small: id and a handle of at most 256 bytes). */
  private handleBuf: Buffer[] | null = null
  private handleWant = 0
  private handleHave = 0

  constructor(
    private readonly send: (b: Buffer) => boolean,
    private readonly onHandle: (id: number, handle: Buffer) => void,
    private readonly onStatus: (id: number) => void,
  ) {}

  /** Queues a reply; sent at once when the target is between packets. */
  inject(pkt: Buffer): void {
    if (this.left === 0 && this.headLen === 0) this.send(pkt)
    else this.pending.push(pkt)
  }

  /** Returns the last send()'s answer (false: the client's window is full). */
  write(data: Buffer): boolean {
    let ok = true
    let at = 0
    while (at < data.length) {
      if (this.left > 0) {
        const n = Math.min(this.left, data.length - at)
        const piece = data.subarray(at, at + n)
        if (this.handleBuf) {
          this.handleBuf.push(piece)
          this.handleHave += n
        }
        ok = this.send(piece)
        this.left -= n
        at += n
        if (this.left === 0) this.packetDone()
        continue
      }
      // Read the head: length (4), type (1), request id (4) — enough to know what it is.
      const want = this.headLen < 4 ? 4 : Math.min(9, 4 + this.head.readUInt32BE(0))
      const n = Math.min(want - this.headLen, data.length - at)
      data.copy(this.head, this.headLen, at, at + n)
      this.headLen += n
      at += n
      if (this.headLen < want) continue
      const len = this.head.readUInt32BE(0)
      if (this.headLen === 4 && len > 0) continue
      const type = this.head[4]
      const id = this.headLen >= 9 ? this.head.readUInt32BE(5) : 0
      if (type === Fx.Handle && len < 1024) {
        this.handleBuf = []
        this.handleWant = len - 5
        this.handleHave = 0
      } else if (type === Fx.Status && this.headLen >= 9) this.onStatus(id)
      ok = this.send(Buffer.from(this.head.subarray(0, this.headLen)))
      this.left = 4 + len - this.headLen
      this.headLen = 0
      this.handleId = id
      if (this.left === 0) this.packetDone()
    }
    return ok
  }

  private handleId = 0

  private packetDone(): void {
    const id = this.handleId
    if (this.handleBuf) {
      const body = Buffer.concat(this.handleBuf)
      this.handleBuf = null
      if (this.handleHave === this.handleWant) {
        const h = bytes(body, 0)
        if (h) this.onHandle(id, Buffer.from(h))
      }
    }
    while (this.pending.length > 0 && this.left === 0 && this.headLen === 0) this.send(this.pending.shift() as Buffer)
  }
}
