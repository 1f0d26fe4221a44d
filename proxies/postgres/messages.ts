// Messages the gateway itself sends to a PostgreSQL client (errors, notices, authentication
// requests, its own BackendKeyData), and the few server messages it must read. Constant messages
// are built once. Toward the *server*, messages are built with pg-protocol's serializer.

/** Starts every statement the gateway itself runs on a server connection, so the server's log
 * (and pg_stat_activity) tells them from the client's. */
export const INTERNAL_SQL_MARK = '/* gatehouse: internal */ '

export enum BackendCode {
  ParseComplete = 0x31, // 1
  BindComplete = 0x32, // 2
  CloseComplete = 0x33, // 3
  NotificationResponse = 0x41, // A
  CommandComplete = 0x43, // C
  DataRow = 0x44, // D
  ErrorResponse = 0x45, // E
  CopyInResponse = 0x47, // G
  CopyOutResponse = 0x48, // H
  EmptyQueryResponse = 0x49, // I
  BackendKeyData = 0x4b, // K
  NoticeResponse = 0x4e, // N
  Authentication = 0x52, // R
  ParameterStatus = 0x53, // S
  RowDescription = 0x54, // T
  NegotiateProtocolVersion = 0x76, // v
  CopyBothResponse = 0x57, // W
  ReadyForQuery = 0x5a, // Z
  CopyDone = 0x63, // c
  CopyData = 0x64, // d
  NoData = 0x6e, // n
  PortalSuspended = 0x73, // s
  ParameterDescription = 0x74, // t
}

export function frame(type: number, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(body.length + 5)
  out[0] = type
  out.writeInt32BE(body.length + 4, 1)
  body.copy(out, 5)
  return out
}

function int32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4)
  b.writeInt32BE(n, 0)
  return b
}

export const AUTH_OK = frame(BackendCode.Authentication, int32(0))
export const AUTH_CLEARTEXT = frame(BackendCode.Authentication, int32(3))
export const SSL_YES = Buffer.from('S')
export const SSL_NO = Buffer.from('N')

export interface ErrorFields {
  readonly severity: 'ERROR' | 'FATAL' | 'NOTICE' | 'WARNING' | 'INFO'
  readonly code: string
  readonly message: string
  readonly detail?: string
  readonly hint?: string
}

function fields(f: ErrorFields): Buffer {
  const parts: Buffer[] = []
  const add = (k: string, v: string): void => {
    // A NUL would end the field early and let text smuggle extra fields: strip it.
    parts.push(Buffer.from(k, 'ascii'), Buffer.from(v.replace(/\0/g, ''), 'utf8'), Buffer.from([0]))
  }
  add('S', f.severity)
  add('V', f.severity)
  add('C', f.code)
  add('M', f.message)
  if (f.detail) add('D', f.detail)
  if (f.hint) add('H', f.hint)
  parts.push(Buffer.from([0]))
  return Buffer.concat(parts)
}

export function errorResponse(f: ErrorFields): Buffer {
  return frame(BackendCode.ErrorResponse, fields(f))
}

export function noticeResponse(f: ErrorFields): Buffer {
  return frame(BackendCode.NoticeResponse, fields(f))
}

export function backendKeyData(pid: number, secret: Buffer): Buffer {
  const body = Buffer.allocUnsafe(4 + secret.length)
  body.writeInt32BE(pid, 0)
  secret.copy(body, 4)
  return frame(BackendCode.BackendKeyData, body)
}

/** Tells a client that asked for 3.x (x > 0) that the gateway speaks 3.0, and names the
 * `_pq_.` options it ignores (PostgreSQL docs, NegotiateProtocolVersion). */
export function negotiateProtocolVersion(unsupported: readonly string[]): Buffer {
  const parts = [int32(196608), int32(unsupported.length)]
  for (const o of unsupported) parts.push(Buffer.from(`${o}\0`, 'utf8'))
  return frame(BackendCode.NegotiateProtocolVersion, Buffer.concat(parts))
}

/** Reads the fields of an ErrorResponse or NoticeResponse body (the part after the length). */
export function readErrorFields(body: Buffer): Map<string, string> {
  const out = new Map<string, string>()
  let pos = 0
  while (pos < body.length) {
    const k = body[pos]
    if (k === 0 || k === undefined) break
    const end = body.indexOf(0, pos + 1)
    if (end < 0) break
    out.set(String.fromCharCode(k), body.toString('utf8', pos + 1, end))
    pos = end + 1
  }
  return out
}

/** The command tag of a CommandComplete body, e.g. "SELECT 3" or "INSERT 0 1". */
export function readCommandTag(body: Buffer): string {
  const end = body.indexOf(0)
  return body.toString('utf8', 0, end < 0 ? body.length : end)
}

/** Rows affected or returned, from a command tag (the last number), or null when it has none. */
export function rowsFromTag(tag: string): number | null {
  const m = / (\d+)$/.exec(tag)
  return m ? Number(m[1]) : null
}

/** A field of a RowDescription. */
export interface FieldInfo {
  readonly name: string
  readonly tableOid: number
  readonly column: number
  readonly typeOid: number
  readonly format: 0 | 1
}

export function parseRowDescription(body: Buffer): FieldInfo[] {
  const n = body.readInt16BE(0)
  const out: FieldInfo[] = []
  let pos = 2
  for (let i = 0; i < n; i++) {
    const end = body.indexOf(0, pos)
    if (end < 0) throw new Error('malformed RowDescription')
    const name = body.toString('utf8', pos, end)
    pos = end + 1
    out.push({
      name,
      tableOid: body.readInt32BE(pos),
      column: body.readInt16BE(pos + 4),
      typeOid: body.readInt32BE(pos + 6),
      format: body.readInt16BE(pos + 16) === 1 ? 1 : 0,
    })
    pos += 18
  }
  return out
}
