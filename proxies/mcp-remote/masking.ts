// Masking what an upstream returns by JSON path (`json_paths:` masking rules and Rego `mask`
// entries with a `json_path`, the same obligations the HTTP proxy applies to JSON bodies), with the
// engine's JSON masker. Each JSON document in a result is masked on its own, rooted at `$`:
//
//   - a tool result's `structuredContent`;
//   - every `text` content item (of a tool result, a prompt message, an embedded resource) and every
//     `text` of a resource's contents, when that text is a JSON document.
//
// Fails closed, as the HTTP proxy does for bodies it cannot read: while a rule applies to a
// result, what cannot be masked (text that is not JSON, images, audio, blobs) is withheld and
// replaced by a note saying why. Links (`resource_link`) pass: they carry a name, not data.

import { createHmac, randomBytes } from 'node:crypto'
import { JsonMaskError, type JsonMaskedPath, type JsonMaskPlan, loadMaskingKey, type MaskingKeys, maskJson } from '../kit/index.js'

const KEYS = new Map<string, Buffer>()

/** The plugin's masking key (`<stateDir>/keys/masking.key`) and a fresh key for `hash_session`. */
export function sessionKeys(stateDir: string): MaskingKeys {
  let key = KEYS.get(stateDir)
  if (!key) {
    key = loadMaskingKey(stateDir)
    KEYS.set(stateDir, key)
  }
  return { key, sessionKey: createHmac('sha256', key).update(randomBytes(32)).digest() }
}

/** Masks one result's documents; counts what each path masked and what was withheld. */
export class ResultMasker {
  private readonly counts = new Map<string, JsonMaskedPath>()
  withheld = 0

  constructor(
    private readonly plan: JsonMaskPlan,
    private readonly keys: MaskingKeys,
  ) {}

  /** A JSON value masked as a document of its own. */
  value(v: unknown): unknown {
    const { body, masked } = maskJson(this.plan, this.keys, Buffer.from(JSON.stringify(v) ?? 'null'))
    this.count(masked)
    return JSON.parse(body.toString('utf8')) as unknown
  }

  /** A text that must be a JSON document to be passed; null when it is not (withhold it). */
  text(t: string): string | null {
    try {
      const { body, masked } = maskJson(this.plan, this.keys, Buffer.from(t, 'utf8'))
      this.count(masked)
      return body.toString('utf8')
    } catch (err) {
      if (err instanceof JsonMaskError) return null
      throw err
    }
  }

  /** One content item (text, image, audio, resource, resource_link). */
  item(item: unknown): unknown {
    if (item === null || typeof item !== 'object') return item
    const o = item as Record<string, unknown>
    if (o.type === 'resource_link') return item
    if (o.type === 'text' && typeof o.text === 'string') {
      const t = this.text(o.text)
      return t === null ? this.note('text that is not JSON') : { ...o, text: t }
    }
    if (o.type === 'resource' && o.resource !== null && typeof o.resource === 'object') {
      const r = this.contents(o.resource)
      return r === null ? this.note('an embedded resource that is not JSON') : { ...o, resource: r }
    }
    return this.note(`${typeof o.type === 'string' ? o.type : 'content'} that cannot be masked`)
  }

  /** One entry of a resource's contents; null when it cannot be masked. */
  contents(c: unknown): Record<string, unknown> | null {
    const o = c as Record<string, unknown>
    if (typeof o.text !== 'string') return null
    const t = this.text(o.text)
    return t === null ? null : { ...o, text: t }
  }

  private note(what: string): Record<string, unknown> {
    this.withheld++
    return { type: 'text', text: `gatehouse: withheld ${what}: masking rules apply to this result` }
  }

  private count(masked: readonly JsonMaskedPath[]): void {
    for (const m of masked) {
      const k = `${m.rule}\u0000${m.path}`
      const prev = this.counts.get(k)
      this.counts.set(k, prev ? { ...prev, count: prev.count + m.count } : m)
    }
  }

  /** For the result event: the paths that masked something, and what was withheld. */
  summary(): Record<string, unknown> {
    return {
      ...(this.counts.size > 0 ? { masked: [...this.counts.values()] } : {}),
      ...(this.withheld > 0 ? { withheld_content: this.withheld } : {}),
    }
  }
}
