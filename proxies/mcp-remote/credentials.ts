// The injected credentials masked in a message to the agent, value by value: masking the message's
// JSON text instead would turn a number that spells the credential (a numeric API key) into `****`,
// which is no longer JSON, and the message would never be sent (the agent would wait for it).

import { maskString } from '../http/public.js'

/** Thrown when a credential is where it cannot be masked: the message must be refused. */
export class CredentialInMessage extends Error {}

function scrub(v: unknown, needles: readonly Buffer[], depth: number): unknown {
  if (typeof v === 'string') return maskString(v, needles)
  if (typeof v === 'number' || typeof v === 'bigint') {
    const s = String(v)
    if (maskString(s, needles) !== s) throw new CredentialInMessage('a number spells the credential')
    return v
  }
  if (v === null || typeof v !== 'object') return v
  if (depth > 200) throw new CredentialInMessage('too deep to scan')
  if (Array.isArray(v)) return v.map((x) => scrub(x, needles, depth + 1))
  const out: Record<string, unknown> = {}
  for (const [k, x] of Object.entries(v)) {
    const key = maskString(k, needles)
    // Two keys that mask alike would lose one of them silently.
    if (Object.hasOwn(out, key)) throw new CredentialInMessage('a masked key collides with another')
    out[key] = scrub(x, needles, depth + 1)
  }
  return out
}

/**
 * `value` with every needle masked in its strings and object keys. Throws CredentialInMessage when
 * a number spells a needle, when masked keys collide, or when a needle still shows in the JSON
 * text (one spanning the text's punctuation): the caller refuses the message.
 */
export function scrubCredentials<T>(value: T, needles: readonly Buffer[]): T {
  const out = scrub(value, needles, 0)
  const text = JSON.stringify(out)
  if (maskString(text, needles) !== text) throw new CredentialInMessage('the credential spans the JSON text')
  return out as T
}
