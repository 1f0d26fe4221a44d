// The SFTP wire format the gate reads and writes (draft-ietf-secsh-filexfer-02, the version OpenSSH
// speaks, plus OpenSSH's extensions): packet types, what each request names (paths or handles) and
// how its paths are resolved and judged, request parsing, re-encoding with canonical paths, and the
// gateway's own SSH_FXP_STATUS replies.

/** Longest handle accepted (the draft caps handles at 256 bytes). */
export const MAX_HANDLE = 256

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
export type Shape =
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
export interface PathField {
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

export function bytes(b: Buffer, at: number): Buffer | null {
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
