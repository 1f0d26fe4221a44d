// The SFTP gate: every file operation a client asks for (draft-ietf-secsh-filexfer-02, the version
// OpenSSH speaks, plus OpenSSH's extensions) is decided before it reaches the target; a refused one
// is answered by the gateway with SSH_FXP_STATUS "permission denied" and never forwarded.
//
// Client → target (`SftpRequestFilter`): packets that name a path (open, remove, rename, mkdir,
// rmdir, setstat, opendir, stat, readlink, symlink, the path-taking extensions) are buffered whole
// (capped), decided, then forwarded or answered. Everything else (READ/WRITE data above all) streams
// through as views of the incoming chunks, so a transfer costs a header check per packet.
// Handle-based requests were decided when the handle was opened; FSETSTAT (which can chmod a file
// opened only for reading) is decided as `setstat` on the path the handle was opened with.
//
// Target → client (`SftpReplyInjector`): the gateway's own replies are slipped in between the
// target's packets (never inside one), and HANDLE replies are read to learn which handle names
// which path.

/** Largest SFTP packet accepted. OpenSSH's sftp-server refuses packets over 256 KiB
 * (SFTP_MAX_MSG_LENGTH in sftp-common.h) and closes the session; so does the gateway. */
export const MAX_SFTP_PACKET = 256 * 1024
/** Handles remembered per sftp channel (OpenSSH's sftp-server has at most 512 open). */
export const MAX_TRACKED_HANDLES = 1024

export enum Fx {
  Init = 1,
  Open = 3,
  Close = 4,
  Read = 5,
  Write = 6,
  Lstat = 7,
  Fstat = 8,
  Fsetstat = 10,
  Setstat = 9,
  Opendir = 11,
  Readdir = 12,
  Remove = 13,
  Mkdir = 14,
  Rmdir = 15,
  Realpath = 16,
  Stat = 17,
  Rename = 18,
  Readlink = 19,
  Symlink = 20,
  Extended = 200,
  Status = 101,
  Handle = 102,
}

/** SSH_FX_* status codes used in the gateway's own replies. */
export const FX_PERMISSION_DENIED = 3
export const FX_OP_UNSUPPORTED = 8

const FXF_READ = 0x1
const FXF_WRITE = 0x2
const FXF_APPEND = 0x4
const FXF_CREAT = 0x8
const FXF_TRUNC = 0x10

const SIMPLE: Record<number, string> = {
  [Fx.Setstat]: 'setstat',
  [Fx.Opendir]: 'readdir',
  [Fx.Remove]: 'remove',
  [Fx.Mkdir]: 'mkdir',
  [Fx.Rmdir]: 'rmdir',
  [Fx.Stat]: 'stat',
  [Fx.Lstat]: 'stat',
  // realpath shows whether a path exists, like stat: judged the same way.
  [Fx.Realpath]: 'stat',
  [Fx.Readlink]: 'readlink',
}

/** OpenSSH extensions that name no path (or only handles already decided): forwarded. */
const PASS_EXTENSIONS = new Set([
  'limits@openssh.com',
  'fsync@openssh.com',
  'fstatvfs@openssh.com',
  'copy-data',
  'home-directory',
  'users-groups-by-id@openssh.com',
])

export interface SftpOperation {
  /** read | write | remove | rename | mkdir | rmdir | setstat | readdir | stat | readlink | symlink | link */
  readonly operation: string
  readonly path: string
  /** rename: the new name; symlink/link: what the new link points to. */
  readonly target?: string
  /** open: read, write or read-write, with create/truncate/append when asked. */
  readonly mode?: string
}

/** What a request asks for: a decision on `op`, a refusal as unsupported, or nothing (forward). */
export type SftpRequest =
  | { readonly kind: 'decide'; readonly id: number; readonly op: SftpOperation }
  | { readonly kind: 'unsupported'; readonly id: number; readonly what: string }
  | { readonly kind: 'pass' }

function str(b: Buffer, at: number): { value: string; next: number } | null {
  if (at + 4 > b.length) return null
  const n = b.readUInt32BE(at)
  if (at + 4 + n > b.length) return null
  return { value: b.toString('utf8', at + 4, at + 4 + n), next: at + 4 + n }
}

function bytes(b: Buffer, at: number): Buffer | null {
  if (at + 4 > b.length) return null
  const n = b.readUInt32BE(at)
  if (at + 4 + n > b.length) return null
  return b.subarray(at + 4, at + 4 + n)
}

function openMode(f: number): string {
  const base = f & FXF_WRITE ? (f & FXF_READ ? 'read-write' : 'write') : 'read'
  const extra = [f & FXF_CREAT ? 'create' : '', f & FXF_TRUNC ? 'truncate' : '', f & FXF_APPEND ? 'append' : ''].filter(Boolean)
  return [base, ...extra].join(',')
}

/**
 * Whether packets of this type are buffered whole and parsed. Only the handle-based data requests
 * (decided when the handle was opened) and INIT stream through; every other type, known or not, is
 * judged or refused — a request type the gateway does not know never reaches the target.
 */
export function isGated(type: number): boolean {
  return type !== Fx.Init && type !== Fx.Read && type !== Fx.Write && type !== Fx.Fstat && type !== Fx.Readdir
}

/**
 * Reads one request body (type byte first). A request the gateway cannot read is refused, never
 * forwarded unjudged: `handlePath` gives the path a handle was opened with (FSETSTAT).
 */
export function parseSftpRequest(body: Buffer, handlePath: (h: Buffer) => string | null = () => null): SftpRequest {
  const type = body[0]
  if (type === undefined || !isGated(type)) return { kind: 'pass' }
  if (body.length < 5) return { kind: 'unsupported', id: 0, what: 'a truncated request' }
  const id = body.readUInt32BE(1)
  const bad: SftpRequest = { kind: 'unsupported', id, what: 'a malformed request' }
  if (type === Fx.Fsetstat) {
    const h = bytes(body, 5)
    if (!h) return bad
    return { kind: 'decide', id, op: { operation: 'setstat', path: handlePath(h) ?? '' } }
  }
  if (type === Fx.Extended) {
    const name = str(body, 5)
    if (!name) return bad
    if (PASS_EXTENSIONS.has(name.value)) return { kind: 'pass' }
    const a = str(body, name.next)
    const b = a ? str(body, a.next) : null
    switch (name.value) {
      case 'posix-rename@openssh.com':
        return a && b ? { kind: 'decide', id, op: { operation: 'rename', path: a.value, target: b.value } } : bad
      case 'hardlink@openssh.com':
        // link(oldpath, newpath): the new name is what gets created.
        return a && b ? { kind: 'decide', id, op: { operation: 'link', path: b.value, target: a.value } } : bad
      case 'lsetstat@openssh.com':
        return a ? { kind: 'decide', id, op: { operation: 'setstat', path: a.value } } : bad
      case 'statvfs@openssh.com':
      case 'expand-path@openssh.com':
        return a ? { kind: 'decide', id, op: { operation: 'stat', path: a.value } } : bad
      default:
        return { kind: 'unsupported', id, what: `the extension ${JSON.stringify(name.value.slice(0, 64))}` }
    }
  }
  const p = str(body, 5)
  if (!p) return bad
  if (type === Fx.Open) {
    if (p.next + 4 > body.length) return bad
    const f = body.readUInt32BE(p.next)
    return { kind: 'decide', id, op: { operation: f & FXF_WRITE ? 'write' : 'read', path: p.value, mode: openMode(f) } }
  }
  if (type === Fx.Rename) {
    const t = str(body, p.next)
    return t ? { kind: 'decide', id, op: { operation: 'rename', path: p.value, target: t.value } } : bad
  }
  if (type === Fx.Symlink) {
    // OpenSSH sends (target, linkpath), the reverse of the draft; its client and server agree.
    const t = str(body, p.next)
    return t ? { kind: 'decide', id, op: { operation: 'symlink', path: t.value, target: p.value } } : bad
  }
  const op = SIMPLE[type]
  if (op === undefined) return { kind: 'unsupported', id, what: `SFTP request type ${type}` }
  return { kind: 'decide', id, op: { operation: op, path: p.value } }
}

/** An SSH_FXP_STATUS reply. */
export function statusPacket(id: number, code: number, message: string): Buffer {
  const msg = Buffer.from(message)
  const body = Buffer.alloc(1 + 4 + 4 + 4 + msg.length + 4)
  let at = body.writeUInt8(Fx.Status, 0)
  at = body.writeUInt32BE(id, at)
  at = body.writeUInt32BE(code, at)
  at = body.writeUInt32BE(msg.length, at)
  at += msg.copy(body, at)
  body.writeUInt32BE(0, at)
  const len = Buffer.alloc(4)
  len.writeUInt32BE(body.length)
  return Buffer.concat([len, body])
}

export type SftpVerdict = { readonly allow: true } | { readonly allow: false; readonly message: string }

export interface SftpFilterHooks {
  /** Sends bytes to the target; false means wait for `drained()`. */
  forward(bytes: Buffer): boolean
  /** Sends one of the gateway's own replies to the client. */
  reply(packet: Buffer): void
  /** Decides and records one operation. A rejection is taken as a refusal. */
  decide(op: SftpOperation): Promise<SftpVerdict>
  /** Records a request refused as unsupported. */
  unsupported(what: string): void
  /** Called when the filter can take more input after push() returned false. */
  resume(): void
  /** The stream broke the protocol (a packet over the cap): the channel must end. */
  fail(why: string): void
}

/** Client → target. Feed it the client's bytes in order; it forwards, holds or answers. */
export class SftpRequestFilter {
  private readonly chunks: Buffer[] = []
  /** A packet being collected: its parts and their length. */
  private acc: Buffer[] = []
  private accLen = 0
  /** Bytes of the current streamed-through packet still to pass. */
  private passLeft = 0
  private deciding = false
  private blocked = false
  private failed = false
  /** Open requests in flight (request id → path, mode) and handles the target handed out. */
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

  /** A HANDLE reply from the target (see SftpReplyInjector): remember which path it names. */
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

  private pump(): void {
    while (!this.deciding && !this.blocked && !this.failed && this.chunks.length > 0) {
      const c = this.chunks[0] as Buffer
      if (this.passLeft > 0) {
        const piece = this.take(Math.min(this.passLeft, c.length))
        this.passLeft -= piece.length
        this.out(piece)
        continue
      }
      // Collect the 5-byte head (length, type); then the whole packet if it is gated.
      const head = this.accLen < 5 ? 5 : 4 + (this.acc.length === 1 ? (this.acc[0] as Buffer) : Buffer.concat(this.acc)).readUInt32BE(0)
      const piece = this.take(Math.min(head - this.accLen, c.length))
      this.acc.push(piece)
      this.accLen += piece.length
      if (this.accLen < head) continue
      const pkt = this.acc.length === 1 ? (this.acc[0] as Buffer) : Buffer.concat(this.acc)
      this.acc = [pkt]
      const len = pkt.readUInt32BE(0)
      if (len === 0 || len > MAX_SFTP_PACKET) {
        this.failed = true
        this.chunks.length = 0
        this.hooks.fail(`an SFTP packet of ${len} bytes (over ${MAX_SFTP_PACKET})`)
        return
      }
      const type = pkt[4] as number
      if (head === 5 && isGated(type) && len > 1) continue // collect the rest of the packet
      this.acc = []
      this.accLen = 0
      if (!isGated(type)) {
        this.passLeft = 4 + len - pkt.length
        this.out(pkt)
        continue
      }
      this.gate(pkt)
    }
  }

  private gate(pkt: Buffer): void {
    if (pkt[4] === Fx.Close) {
      // CLOSE frees a handle name the target may hand out again: forget its path.
      const h = bytes(pkt, 9)
      if (h) this.handles.delete(h.toString('hex'))
      this.out(pkt)
      return
    }
    const req = parseSftpRequest(pkt.subarray(4), (h) => this.handles.get(h.toString('hex')) ?? null)
    if (req.kind === 'pass') {
      this.out(pkt)
      return
    }
    if (req.kind === 'unsupported') {
      this.hooks.unsupported(req.what)
      this.hooks.reply(statusPacket(req.id, FX_OP_UNSUPPORTED, `gatehouse: ${req.what} is not supported through the gateway`))
      return
    }
    this.deciding = true
    const op = req.op
    const settle = (v: SftpVerdict): void => {
      this.deciding = false
      if (this.failed) return
      if (v.allow) {
        if (pkt[4] === Fx.Open || pkt[4] === Fx.Opendir) {
          if (this.opening.size >= MAX_TRACKED_HANDLES) this.opening.clear()
          this.opening.set(req.id, op.path)
        }
        this.out(pkt)
      } else {
        this.hooks.reply(statusPacket(req.id, FX_PERMISSION_DENIED, `gatehouse: ${v.message}`))
      }
      this.run()
      if (!this.deciding && !this.blocked) this.hooks.resume()
    }
    this.hooks.decide(op).then(settle, () => settle({ allow: false, message: 'refused: the gateway could not decide this operation' }))
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
