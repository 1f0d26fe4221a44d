// Reads the SFTP requests a client sends (draft-ietf-secsh-filexfer-02, the version OpenSSH
// speaks) to record its file operations. It only observes: the bytes are forwarded untouched, and
// a frame over the cap stops the observation (the transfer goes on, recorded as unobserved).

/** Largest SFTP request observed. OpenSSH's sftp-server refuses packets over 256 KiB
 * (SFTP_MAX_MSG_LENGTH in sftp-common.h); a larger length stops the observation. */
export const MAX_SFTP_PACKET = 256 * 1024

enum Fx {
  Open = 3,
  Setstat = 9,
  Opendir = 11,
  Remove = 13,
  Mkdir = 14,
  Rmdir = 15,
  Rename = 18,
  Symlink = 20,
}

const OPS: Record<number, string> = {
  [Fx.Open]: 'open',
  [Fx.Setstat]: 'setstat',
  [Fx.Opendir]: 'opendir',
  [Fx.Remove]: 'remove',
  [Fx.Mkdir]: 'mkdir',
  [Fx.Rmdir]: 'rmdir',
  [Fx.Rename]: 'rename',
  [Fx.Symlink]: 'symlink',
}

const FXF_READ = 0x1
const FXF_WRITE = 0x2

export interface SftpOperation {
  readonly operation: string
  readonly path: string
  readonly target?: string
  readonly mode?: 'read' | 'write' | 'read-write'
}

function str(b: Buffer, at: number): { value: string; next: number } | null {
  if (at + 4 > b.length) return null
  const n = b.readUInt32BE(at)
  if (at + 4 + n > b.length) return null
  return { value: b.toString('utf8', at + 4, at + 4 + n), next: at + 4 + n }
}

/** Parses one request body (type byte first); null for requests that are not file operations. */
export function parseSftpRequest(body: Buffer): SftpOperation | null {
  const type = body[0]
  if (type === undefined) return null
  const op = OPS[type]
  if (!op) return null
  // type (1) + request id (4), then the path.
  const p = str(body, 5)
  if (!p) return null
  if (type === Fx.Rename || type === Fx.Symlink) {
    const t = str(body, p.next)
    return t ? { operation: op, path: p.value, target: t.value } : { operation: op, path: p.value }
  }
  if (type === Fx.Open && p.next + 4 <= body.length) {
    const f = body.readUInt32BE(p.next)
    const mode = f & FXF_WRITE ? (f & FXF_READ ? 'read-write' : 'write') : 'read'
    return { operation: op, path: p.value, mode }
  }
  return { operation: op, path: p.value }
}

/** Splits the client's byte stream into SFTP packets and reports each file operation. */
export class SftpObserver {
  private buf: Buffer = Buffer.alloc(0)
  private stopped = false

  constructor(
    private readonly onOperation: (op: SftpOperation) => void,
    private readonly onStop: (why: string) => void,
  ) {}

  push(data: Buffer): void {
    if (this.stopped) return
    this.buf = this.buf.length === 0 ? data : Buffer.concat([this.buf, data])
    let at = 0
    while (this.buf.length - at >= 4) {
      const len = this.buf.readUInt32BE(at)
      if (len === 0 || len > MAX_SFTP_PACKET) {
        this.stopped = true
        this.buf = Buffer.alloc(0)
        this.onStop(`an SFTP packet of ${len} bytes (over ${MAX_SFTP_PACKET})`)
        return
      }
      if (this.buf.length - at - 4 < len) break
      const op = parseSftpRequest(this.buf.subarray(at + 4, at + 4 + len))
      if (op) this.onOperation(op)
      at += 4 + len
    }
    // Keep only the partial tail (copied, so the big chunk it came from can be freed).
    this.buf = at === 0 ? this.buf : Buffer.from(this.buf.subarray(at))
  }
}
