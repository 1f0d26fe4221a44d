// Target host keys trusted on first use (`host_key: trust-on-first-use`): the first key a target
// shows is remembered in the plugin's state directory, one JSON line per connection, and every
// later connection must show the same key. Remove the connection's line to accept a new key.

import { appendFileSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

export const TOFU_FILE = 'known_hosts.jsonl'

/** The remembered keys cannot be read: trusting on first use again would trust any key. */
export class HostKeyFileError extends Error {}

/**
 * The key remembered for `connection` (`"ssh-ed25519 AAAA…"`), or null on first use. Throws
 * HostKeyFileError when a line of the file cannot be read: it may be this connection's, and
 * treating it as absent would remember whatever key the target shows next.
 */
export function rememberedHostKey(stateDir: string, connection: string): string | null {
  let text: string
  try {
    text = readFileSync(join(stateDir, TOFU_FILE), 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw new HostKeyFileError(`${TOFU_FILE} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
  }
  let found: string | null = null
  text.split('\n').forEach((line, i) => {
    if (line === '') return
    let e: unknown
    try {
      e = JSON.parse(line)
    } catch {
      throw new HostKeyFileError(`line ${i + 1} of ${TOFU_FILE} is not a JSON object`)
    }
    if (
      typeof e !== 'object' ||
      e === null ||
      !('connection' in e) ||
      !('key' in e) ||
      typeof e.connection !== 'string' ||
      typeof e.key !== 'string'
    ) {
      throw new HostKeyFileError(`line ${i + 1} of ${TOFU_FILE} has no connection and key`)
    }
    if (e.connection === connection && found === null) found = e.key
  })
  return found
}

/** Remembers the key a target showed on first use (the raw SSH public key blob). */
export function rememberHostKey(stateDir: string, connection: string, blob: Buffer): string {
  const len = blob.length >= 4 ? blob.readUInt32BE(0) : 0
  const type = blob.subarray(4, 4 + len).toString('latin1')
  const key = `${type} ${blob.toString('base64')}`
  appendFileSync(join(stateDir, TOFU_FILE), `${JSON.stringify({ connection, key, time: new Date().toISOString() })}\n`, { mode: 0o600 })
  return key
}
