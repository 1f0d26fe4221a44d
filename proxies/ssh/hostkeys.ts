// Target host keys trusted on first use (`host_key: trust-on-first-use`): the first key a target
// shows is remembered in the plugin's state directory, one JSON line per connection, and every
// later connection must show the same key. Remove the connection's line to accept a new key.

import { appendFileSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

export const TOFU_FILE = 'known_hosts.jsonl'

/** The key remembered for `connection` (`"ssh-ed25519 AAAA…"`), or null on first use. */
export function rememberedHostKey(stateDir: string, connection: string): string | null {
  let text: string
  try {
    text = readFileSync(join(stateDir, TOFU_FILE), 'utf8')
  } catch {
    return null
  }
  for (const line of text.split('\n')) {
    if (line === '') continue
    try {
      const e = JSON.parse(line) as unknown
      if (
        typeof e === 'object' &&
        e !== null &&
        'connection' in e &&
        'key' in e &&
        e.connection === connection &&
        typeof e.key === 'string'
      ) {
        return e.key
      }
    } catch {
      // a torn line: ignored
    }
  }
  return null
}

/** Remembers the key a target showed on first use (the raw SSH public key blob). */
export function rememberHostKey(stateDir: string, connection: string, blob: Buffer): string {
  const len = blob.length >= 4 ? blob.readUInt32BE(0) : 0
  const type = blob.subarray(4, 4 + len).toString('latin1')
  const key = `${type} ${blob.toString('base64')}`
  appendFileSync(join(stateDir, TOFU_FILE), `${JSON.stringify({ connection, key, time: new Date().toISOString() })}\n`, { mode: 0o600 })
  return key
}
