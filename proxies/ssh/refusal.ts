// Telling an identified caller why their login was refused. SSH's authentication failure carries
// no text (OpenSSH prints "Permission denied"), and a USERAUTH_BANNER is printed only at LogLevel
// INFO or above; a DISCONNECT's description is printed at every level but QUIET ("Received
// disconnect from … : <reason>"), and ssh2 clients (the MCP exec tool) get it as the error's
// message. ssh2's server sends DISCONNECT without a description, so the packet is written here
// through its transport, the way its own `disconnect` does; without that transport (another ssh2
// version) the caller is refused as before, without the reason.

import type { Connection } from 'ssh2'

/** SSH_MSG_DISCONNECT (RFC 4253 §11.1). */
const MSG_DISCONNECT = 1
/** SSH_DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE: the login is over, retrying will not help. */
const NO_MORE_AUTH_METHODS_AVAILABLE = 14
/** OpenSSH prints at most 400 characters of a disconnect description. */
export const MAX_REASON_CHARS = 400

interface PacketWriter {
  readonly allocStartKEX: number
  alloc(size: number, force: boolean): Buffer
  finalize(packet: Buffer, force: boolean): Buffer
}

interface Transport {
  readonly _packetRW: { readonly write: PacketWriter }
  readonly _cipher: { encrypt(packet: Buffer): void }
}

function transportOf(client: Connection): Transport | null {
  const proto: unknown = (client as unknown as { _protocol?: unknown })._protocol
  if (typeof proto !== 'object' || proto === null) return null
  const t = proto as Partial<Transport>
  const w = t._packetRW?.write
  if (!w || typeof w.alloc !== 'function' || typeof w.finalize !== 'function' || typeof w.allocStartKEX !== 'number') return null
  if (typeof t._cipher?.encrypt !== 'function') return null
  return t as Transport
}

/** One line of printable text: no control characters a terminal would act on, bounded. */
export function reasonText(reason: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is removed
  const line = reason.replace(/[\u0000-\u001f\u007f-\u009f]+/g, ' ').trim()
  return line.length > MAX_REASON_CHARS ? `${line.slice(0, MAX_REASON_CHARS - 1)}…` : line
}

/**
 * Ends the caller's connection with a DISCONNECT whose description is `reason` (shown to the
 * caller: only a public message, never a secret). False when the transport is not reachable; the
 * caller should then refuse the login the ordinary way.
 */
export function disconnectWithReason(client: Connection, reason: string): boolean {
  const transport = transportOf(client)
  if (!transport) return false
  const text = Buffer.from(reasonText(reason), 'utf8')
  try {
    const w = transport._packetRW.write
    const p = w.allocStartKEX
    const packet = w.alloc(1 + 4 + 4 + text.length + 4, true)
    // byte code, uint32 reason, string description, string language tag (empty)
    packet[p] = MSG_DISCONNECT
    packet.writeUInt32BE(NO_MORE_AUTH_METHODS_AVAILABLE, p + 1)
    packet.writeUInt32BE(text.length, p + 5)
    text.copy(packet, p + 9)
    packet.writeUInt32BE(0, p + 9 + text.length)
    transport._cipher.encrypt(w.finalize(packet, true))
  } catch {
    return false
  }
  const sock: unknown = (client as unknown as { _sock?: unknown })._sock
  if (typeof sock === 'object' && sock !== null && typeof (sock as { end?: unknown }).end === 'function') {
    ;(sock as { end(): void }).end()
  }
  return true
}
