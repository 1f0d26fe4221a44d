// What the connector reads of an SSH key exchange it relays, so that it signs a login only for an
// SSH session with a target it carries. The target's side of the exchange is cleartext up to its
// first SSH_MSG_NEWKEYS: its key-exchange reply (message 31 for curve25519, ECDH and fixed DH
// groups; 33 for DH group exchange) carries its host key K_S and its signature of the exchange hash
// H, and the first H is the session identifier every login signature of that session starts with.
// A login request whose session identifier a target on one of this connector's own streams signed
// is for that session only: a gateway cannot turn it into a login anywhere else (another server's
// H was never signed by a host this connector reached).
//
// Only the target-to-gateway bytes are read, at most MAX_WATCH_BYTES of them, and nothing after the
// first NEWKEYS; a stream that does not start like SSH is given up at once.

import ssh2 from 'ssh2'

/** Bytes of a stream read for its key exchange before giving up. */
const MAX_WATCH_BYTES = 256 * 1024
/** RFC 4253 §6.1: a packet of at most 35000 bytes must be accepted; larger is no key exchange. */
const MAX_PACKET = 35_000
/** Replies kept per stream (one key exchange has one; a hostile target gets no more room). */
const MAX_REPLIES = 4

export interface KexReply {
  readonly hostKey: Buffer
  readonly signature: Buffer
}

export class SshKexWatcher {
  private buf: Buffer = Buffer.alloc(0)
  private seen = 0
  private done = false
  private versionSeen = false
  readonly replies: KexReply[] = []

  /** Whether it still reads (false once NEWKEYS passed, or the stream is not SSH). */
  get watching(): boolean {
    return !this.done
  }

  feed(chunk: Buffer): void {
    if (this.done) return
    this.seen += chunk.length
    if (this.seen > MAX_WATCH_BYTES) {
      this.stop()
      return
    }
    this.buf = this.buf.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.buf, chunk])
    while (!this.versionSeen) {
      const nl = this.buf.indexOf(10)
      const line = nl < 0 ? this.buf : this.buf.subarray(0, nl)
      // RFC 4253 §4.2: lines before the version are text; a binary protocol is not SSH.
      if (line.includes(0) || (line.length >= 4 && !isText(line))) {
        this.stop()
        return
      }
      if (nl < 0) return
      if (line.subarray(0, 4).toString('latin1') === 'SSH-') this.versionSeen = true
      this.buf = this.buf.subarray(nl + 1)
    }
    while (this.buf.length >= 5) {
      const len = this.buf.readUInt32BE(0)
      if (len < 5 || len > MAX_PACKET) {
        this.stop()
        return
      }
      if (this.buf.length < 4 + len) return
      const pad = this.buf[4] as number
      if (pad + 1 > len) {
        this.stop()
        return
      }
      const payload = this.buf.subarray(5, 4 + len - pad)
      this.buf = this.buf.subarray(4 + len)
      const type = payload[0]
      if (type === 21) {
        // SSH_MSG_NEWKEYS: encrypted from here on
        this.stop()
        return
      }
      if ((type === 31 || type === 33) && this.replies.length < MAX_REPLIES) {
        const r = readStrings(payload.subarray(1), 3)
        if (r) this.replies.push({ hostKey: Buffer.from(r[0] as Buffer), signature: Buffer.from(r[2] as Buffer) })
      }
    }
  }

  private stop(): void {
    this.done = true
    this.buf = Buffer.alloc(0)
  }
}

function isText(b: Buffer): boolean {
  for (const c of b.subarray(0, 4)) if (c < 0x20 || c > 0x7e) return false
  return true
}

/** `n` SSH strings from the start of `b`, or null. */
function readStrings(b: Buffer, n: number): Buffer[] | null {
  const out: Buffer[] = []
  let at = 0
  for (let i = 0; i < n; i++) {
    if (at + 4 > b.length) return null
    const len = b.readUInt32BE(at)
    if (at + 4 + len > b.length) return null
    out.push(b.subarray(at + 4, at + 4 + len))
    at += 4 + len
  }
  return out
}

/** Whether `reply`'s host key signed `sessionId` (as the exchange hash H) with the reply's signature. */
export function hostSigned(reply: KexReply, sessionId: Buffer): boolean {
  const key = ssh2.utils.parseKey(reply.hostKey)
  if (!key || key instanceof Error || Array.isArray(key)) return false
  const sig = readStrings(reply.signature, 2)
  if (!sig) return false
  const type = (sig[0] as Buffer).toString('latin1')
  let value = sig[1] as Buffer
  const hash = type === 'rsa-sha2-256' ? 'sha256' : type === 'rsa-sha2-512' ? 'sha512' : undefined
  if (type.startsWith('ecdsa-sha2-')) {
    const rs = readStrings(value, 2)
    if (!rs) return false
    value = derSequence(rs[0] as Buffer, rs[1] as Buffer)
  }
  try {
    return key.verify(sessionId, value, hash) === true
  } catch {
    return false
  }
}

/** DER SEQUENCE { INTEGER r, INTEGER s } from SSH mpints (already two's complement, minimal). */
function derSequence(r: Buffer, s: Buffer): Buffer {
  const int = (v: Buffer): Buffer => Buffer.concat([Buffer.from([2]), derLength(v.length), v])
  const body = Buffer.concat([int(r), int(s)])
  return Buffer.concat([Buffer.from([0x30]), derLength(body.length), body])
}

function derLength(n: number): Buffer {
  return n < 128 ? Buffer.from([n]) : n < 256 ? Buffer.from([0x81, n]) : Buffer.from([0x82, n >> 8, n & 255])
}
