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

/** Largest SFTP packet accepted. OpenSSH's sftp-server refuses packets over 256 KiB
 * (SFTP_MAX_MSG_LENGTH in sftp-common.h) and closes the session; so does the gateway. */
export const MAX_SFTP_PACKET = 256 * 1024
/** Handles remembered per sftp channel (OpenSSH's sftp-server has at most 512 open). */
export const MAX_TRACKED_HANDLES = 1024
/** Longest handle accepted (the draft caps handles at 256 bytes). */
const MAX_HANDLE = 256

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
export const FX_NO_SUCH_FILE = 2
export const FX_PERMISSION_DENIED = 3
export const FX_FAILURE = 4
export const FX_OP_UNSUPPORTED = 8

const FXF_READ = 0x1
const FXF_WRITE = 0x2
const FXF_APPEND = 0x4
const FXF_CREAT = 0x8
const FXF_TRUNC = 0x10
const FXF_EXCL = 0x20
const FXF_KNOWN = FXF_READ | FXF_WRITE | FXF_APPEND | FXF_CREAT | FXF_TRUNC | FXF_EXCL

/**
 * How a request's paths are resolved and what policy is asked. `follow`: the final symlink is
 * followed (realpath of the whole path); `name`: the final name itself is acted on (parent
 * resolved, plain name appended); `new`: a name that is made, so it must be a plain name.
 */
type Shape =
  | {
      readonly kind: 'one'
      readonly operation: string
      readonly resolve: 'follow' | 'name' | 'new' | 'expand'
      readonly mode?: string
      readonly permissions?: string
    }
  | { readonly kind: 'rename' }
  | { readonly kind: 'link' }
  | { readonly kind: 'symlink' }

const SIMPLE: Record<number, Shape> = {
  [Fx.Setstat]: { kind: 'one', operation: 'setstat', resolve: 'follow' },
  [Fx.Opendir]: { kind: 'one', operation: 'readdir', resolve: 'follow' },
  [Fx.Remove]: { kind: 'one', operation: 'remove', resolve: 'new' },
  [Fx.Mkdir]: { kind: 'one', operation: 'mkdir', resolve: 'new' },
  [Fx.Rmdir]: { kind: 'one', operation: 'rmdir', resolve: 'new' },
  [Fx.Stat]: { kind: 'one', operation: 'stat', resolve: 'follow' },
  [Fx.Lstat]: { kind: 'one', operation: 'stat', resolve: 'name' },
  // realpath shows whether a path exists, like stat: judged the same way.
  [Fx.Realpath]: { kind: 'one', operation: 'stat', resolve: 'follow' },
  [Fx.Readlink]: { kind: 'one', operation: 'readlink', resolve: 'name' },
}

/** OpenSSH extensions that name no path and no handle: forwarded. */
const PASS_EXTENSIONS = new Set(['limits@openssh.com', 'home-directory', 'users-groups-by-id@openssh.com'])

export interface SftpOperation {
  /** read | write | remove | rename | mkdir | rmdir | setstat | readdir | stat | readlink | symlink | link */
  readonly operation: string
  /** The canonical path on the target (what the operation touches). */
  readonly path: string
  /** rename: the new name; symlink/link: what the new link points to (canonical). */
  readonly target?: string
  /** open: read, write or read-write, with create/truncate/append/exclusive when asked. */
  readonly mode?: string
  /** open: the permission bits (octal) the client asks a created file to get, when it names any. */
  readonly permissions?: string
  /** The client's spelling of `path` and `target`. */
  readonly requested_path?: string
  readonly requested_target?: string
  /** Why a second operation is asked for one request (`rename` of a symlink is judged as making that link too). */
  readonly via?: string
}

/** A path string inside a request body: its text and where its length prefix starts and the string ends. */
interface PathField {
  readonly value: string
  readonly start: number
  readonly end: number
}

/** What a request asks for. */
export type SftpRequest =
  | { readonly kind: 'paths'; readonly id: number; readonly shape: Shape; readonly fields: readonly PathField[] }
  | {
      readonly kind: 'handles'
      readonly id: number
      readonly handles: readonly Buffer[]
      readonly setstat: boolean
      readonly close: boolean
    }
  | { readonly kind: 'unsupported'; readonly id: number; readonly what: string }
  | { readonly kind: 'pass' }

const utf8 = new TextDecoder('utf-8', { fatal: true })

function str(b: Buffer, at: number): PathField | null {
  if (at + 4 > b.length) return null
  const n = b.readUInt32BE(at)
  if (at + 4 + n > b.length) return null
  let value: string
  try {
    value = utf8.decode(b.subarray(at + 4, at + 4 + n))
  } catch {
    // A name the gateway would read differently from the target is not judged.
    return null
  }
  return { value, start: at, end: at + 4 + n }
}

function bytes(b: Buffer, at: number): Buffer | null {
  if (at + 4 > b.length) return null
  const n = b.readUInt32BE(at)
  if (at + 4 + n > b.length) return null
  return b.subarray(at + 4, at + 4 + n)
}

function openMode(f: number): string {
  const base = f & FXF_WRITE ? (f & FXF_READ ? 'read-write' : 'write') : 'read'
  const extra = [
    f & FXF_CREAT ? 'create' : '',
    f & FXF_TRUNC ? 'truncate' : '',
    f & FXF_APPEND ? 'append' : '',
    f & FXF_EXCL ? 'exclusive' : '',
  ].filter(Boolean)
  return [base, ...extra].join(',')
}

/**
 * An open is a `read` only when its flags are exactly READ. OpenSSH's server turns CREAT, TRUNC,
 * EXCL and APPEND into open(2) flags whatever READ/WRITE say (READ|CREAT|TRUNC creates a missing
 * file and empties an existing one), and flags 0 are not a read anyone sends: everything else
 * changes, or may change, the file, so it is a `write`.
 */
export function openOperation(pflags: number): 'read' | 'write' {
  return pflags === FXF_READ ? 'read' : 'write'
}

const ATTR_SIZE = 0x1
const ATTR_UIDGID = 0x2
const ATTR_PERMISSIONS = 0x4
const ATTR_ACMODTIME = 0x8
const ATTR_EXTENDED = 0x80000000
const ATTR_KNOWN = ATTR_SIZE | ATTR_UIDGID | ATTR_PERMISSIONS | ATTR_ACMODTIME | ATTR_EXTENDED

/**
 * Reads an ATTRS block (filexfer-02 §5) at `at` to its end: the permission bits it names, or null
 * when it cannot be read whole (a flag the gateway does not know, a truncated field, bytes after it).
 */
export function parseAttrs(b: Buffer, at: number): { permissions: number | undefined } | null {
  if (at + 4 > b.length) return null
  const flags = b.readUInt32BE(at)
  if ((flags & ~ATTR_KNOWN) >>> 0 !== 0) return null
  let p = at + 4
  let permissions: number | undefined
  if (flags & ATTR_SIZE) p += 8
  if (flags & ATTR_UIDGID) p += 8
  if (flags & ATTR_PERMISSIONS) {
    if (p + 4 > b.length) return null
    permissions = b.readUInt32BE(p)
    p += 4
  }
  if (flags & ATTR_ACMODTIME) p += 8
  if (p > b.length) return null
  if (flags & ATTR_EXTENDED) {
    if (p + 4 > b.length) return null
    const n = b.readUInt32BE(p)
    p += 4
    for (let i = 0; i < n * 2; i++) {
      const s = bytes(b, p)
      if (!s) return null
      p += 4 + s.length
    }
  }
  return p === b.length ? { permissions } : null
}

/**
 * Reads one request body (type byte first). A request the gateway cannot read is refused, never
 * forwarded unjudged.
 */
export function parseSftpRequest(body: Buffer): SftpRequest {
  const type = body[0]
  if (type === undefined) return { kind: 'unsupported', id: 0, what: 'an empty request' }
  if (type === Fx.Init) return { kind: 'pass' }
  if (body.length < 5) return { kind: 'unsupported', id: 0, what: 'a truncated request' }
  const id = body.readUInt32BE(1)
  const bad: SftpRequest = { kind: 'unsupported', id, what: 'a malformed request (or a name that is not UTF-8)' }
  const handleAt = (at: number, setstat = false, close = false): SftpRequest => {
    const h = bytes(body, at)
    return h && h.length <= MAX_HANDLE ? { kind: 'handles', id, handles: [h], setstat, close } : bad
  }
  switch (type) {
    case Fx.Read:
    case Fx.Write:
    case Fx.Fstat:
    case Fx.Readdir:
      return handleAt(5)
    case Fx.Close:
      return handleAt(5, false, true)
    case Fx.Fsetstat:
      return handleAt(5, true)
  }
  if (type === Fx.Extended) {
    const name = str(body, 5)
    if (!name) return bad
    if (PASS_EXTENSIONS.has(name.value)) return { kind: 'pass' }
    if (name.value === 'fsync@openssh.com' || name.value === 'fstatvfs@openssh.com') return handleAt(name.end)
    if (name.value === 'copy-data') {
      // read-from-handle, offset, length, write-to-handle, offset: both handles must be decided ones.
      const from = bytes(body, name.end)
      const to = from ? bytes(body, name.end + 4 + from.length + 16) : null
      return from && to ? { kind: 'handles', id, handles: [from, to], setstat: false, close: false } : bad
    }
    const a = str(body, name.end)
    const b = a ? str(body, a.end) : null
    switch (name.value) {
      case 'posix-rename@openssh.com':
        return a && b ? { kind: 'paths', id, shape: { kind: 'rename' }, fields: [a, b] } : bad
      case 'hardlink@openssh.com':
        return a && b ? { kind: 'paths', id, shape: { kind: 'link' }, fields: [a, b] } : bad
      case 'lsetstat@openssh.com':
        return a ? { kind: 'paths', id, shape: { kind: 'one', operation: 'setstat', resolve: 'name' }, fields: [a] } : bad
      case 'statvfs@openssh.com':
        return a ? { kind: 'paths', id, shape: { kind: 'one', operation: 'stat', resolve: 'follow' }, fields: [a] } : bad
      case 'expand-path@openssh.com':
        return a ? { kind: 'paths', id, shape: { kind: 'one', operation: 'stat', resolve: 'expand' }, fields: [a] } : bad
      default:
        return { kind: 'unsupported', id, what: `the extension ${JSON.stringify(name.value.slice(0, 64))}` }
    }
  }
  const p = str(body, 5)
  if (!p) return bad
  // Every client asks where it starts (REALPATH "."): the answer names the start directory and
  // nothing in it, so it is not a file operation to decide.
  if (type === Fx.Realpath && (p.value === '.' || p.value === '') && p.end === body.length) return { kind: 'pass' }
  if (type === Fx.Open) {
    if (p.end + 4 > body.length) return bad
    const f = body.readUInt32BE(p.end)
    // Flags or attributes the gateway cannot name are not forwarded to mean something unjudged.
    if ((f & ~FXF_KNOWN) >>> 0 !== 0) return { kind: 'unsupported', id, what: `an open with unknown flags 0x${f.toString(16)}` }
    const attrs = parseAttrs(body, p.end + 4)
    if (!attrs) return bad
    const permissions = attrs.permissions === undefined ? undefined : (attrs.permissions & 0o7777).toString(8).padStart(4, '0')
    return {
      kind: 'paths',
      id,
      shape: { kind: 'one', operation: openOperation(f), resolve: 'follow', mode: openMode(f), ...(permissions ? { permissions } : {}) },
      fields: [p],
    }
  }
  if (type === Fx.Rename || type === Fx.Symlink) {
    // OpenSSH sends SYMLINK as (target, linkpath), the reverse of the draft; its client and server agree.
    const t = str(body, p.end)
    return t ? { kind: 'paths', id, shape: { kind: type === Fx.Rename ? 'rename' : 'symlink' }, fields: [p, t] } : bad
  }
  const shape = SIMPLE[type]
  if (shape === undefined) return { kind: 'unsupported', id, what: `SFTP request type ${type}` }
  return { kind: 'paths', id, shape, fields: [p] }
}

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

function u32(v: number): Buffer {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(v)
  return b
}

/** The request packet (length prefix included) with each path field replaced by its canonical value. */
export function rebuildRequest(body: Buffer, fields: readonly PathField[], values: readonly string[]): Buffer {
  const parts: Buffer[] = []
  let at = 0
  fields.forEach((f, i) => {
    const v = Buffer.from(values[i] as string)
    parts.push(body.subarray(at, f.start), u32(v.length), v)
    at = f.end
  })
  parts.push(body.subarray(at))
  const out = Buffer.concat(parts)
  return Buffer.concat([u32(out.length), out])
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
