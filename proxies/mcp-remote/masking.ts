// Masking what an upstream returns by JSON path (`json_paths:` masking rules and Rego `mask`
// entries with a `json_path`, the same obligations the HTTP proxy applies to JSON bodies), with the
// engine's JSON masker. While a rule applies, what reaches the agent is an allow-list, built here:
//
//   - each JSON document in a result is masked on its own, rooted at `$`: a tool result's
//     `structuredContent`, and every `text` content item (of a tool result, a prompt message, an
//     embedded resource) and every `text` of a resource's contents, when that text is JSON;
//   - then the whole result (those documents set aside) is masked as one JSON document rooted at
//     the result, so `_meta` (of the result, a content item, a resource's contents), annotations
//     and every other field kept are masked too (`$..ssn` matches anywhere);
//   - only the fields MCP defines for each part are kept; anything else the upstream adds is dropped;
//   - a string value (or a document that is itself a JSON string) that is a JSON document is masked
//     as one of its own, rooted at `$`, and re-serialised (`maskText`): APIs often return
//     `"payload": "<json>"`, which a reader (or one `JSON.parse`) opens as easily as the outer one.
//
// Fails closed, as the HTTP proxy does for bodies it cannot read: what cannot be masked (text
// that is not JSON, images, audio, blobs, content of an unknown type) is withheld and replaced by a
// note saying why, and so is free text the masker cannot read (a prompt's or a link's description,
// an upstream error's message, a link's name).

import { createHmac, randomBytes, randomUUID } from 'node:crypto'
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

/** What replaces free text of the upstream's that a JSON-path rule cannot read. */
export function withheldText(what: string): string {
  return `gatehouse: withheld ${what}: masking rules apply to this result`
}

type Obj = Record<string, unknown>

function isObj(v: unknown): v is Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

/** The fields of `o` named in `keys` that are present (an allow-list of what MCP defines). */
function pick(o: Obj, keys: readonly string[]): Obj {
  const out: Obj = {}
  for (const k of keys) if (o[k] !== undefined) out[k] = o[k]
  return out
}

const ISO_TIME = /^\d{4}-\d{2}-\d{2}(T[\d:.]+(Z|[+-]\d{2}:?\d{2})?)?$/

/** Annotations (of a resource or content item) as MCP defines them: an audience, a priority, a time. */
export function annotations(a: unknown): Obj | undefined {
  if (!isObj(a)) return undefined
  const out: Obj = {}
  if (Array.isArray(a.audience)) out.audience = a.audience.filter((x) => x === 'user' || x === 'assistant')
  if (typeof a.priority === 'number') out.priority = a.priority
  if (typeof a.lastModified === 'string' && ISO_TIME.test(a.lastModified)) out.lastModified = a.lastModified
  return out
}

/** The fields of `o` named in `keys`, with its annotations as MCP defines them. */
function pickItem(o: Obj, keys: readonly string[]): Obj {
  const out = pick(o, keys)
  const a = annotations(o.annotations)
  if (a) out.annotations = a
  return out
}

const TEXT_ITEM = ['type', 'text', '_meta'] as const
const RESOURCE_ITEM = ['type', '_meta'] as const
// A link's name, title and description are display text: withheld (the name) or dropped.
const LINK_ITEM = ['type', 'uri', 'mimeType', 'size', '_meta'] as const
const CONTENTS = ['uri', 'mimeType', '_meta'] as const

/** Where nested masking reports what it masked and withheld. */
export interface MaskSink {
  count(masked: readonly JsonMaskedPath[]): void
  withheld: number
}

/** How deep JSON documents inside strings are opened; one nested deeper is withheld. */
const NESTED_DEPTH = 4
/** A string this long that is a JSON document is withheld rather than opened (the work is bounded). */
const NESTED_MAX = 8 * 1024 * 1024
/** A masked text may hold a string that opens as JSON (`"{`, `"[`, `"\"`, or leading space or an escape). */
const NESTED_HINT = /"(?:[\s{[]|\\)/

/** The same value, or a copy with its strings that are JSON documents masked (same reference when nothing changed). */
function nested(v: unknown, plan: JsonMaskPlan, keys: MaskingKeys, sink: MaskSink, depth: number): unknown {
  if (typeof v === 'string') return nestedString(v, plan, keys, sink, depth)
  if (Array.isArray(v)) {
    let changed = false
    const out = v.map((x) => {
      const y = nested(x, plan, keys, sink, depth)
      if (y !== x) changed = true
      return y
    })
    return changed ? out : v
  }
  if (isObj(v)) {
    let changed = false
    const out = Object.entries(v).map(([k, x]) => {
      // A key can be a JSON document too (a tool that returns `{"<row as JSON>": 1}`): a client
      // reads it as easily as a value, so it is masked (or withheld) the same way.
      const k2 = nestedString(k, plan, keys, sink, depth)
      const y = nested(x, plan, keys, sink, depth)
      if (y !== x || k2 !== k) changed = true
      return [k2, y] as const
    })
    if (!changed) return v
    // Two keys masked into one would lose a member without a word: refuse the document instead.
    if (new Set(out.map(([k]) => k)).size !== out.length) throw new JsonMaskError('two keys of an object are the same once masked', 0)
    // fromEntries defines `__proto__` as an own key, as JSON.parse did.
    return Object.fromEntries(out)
  }
  return v
}

function nestedString(s: string, plan: JsonMaskPlan, keys: MaskingKeys, sink: MaskSink, depth: number): string {
  const t = s.trim()
  const c = t[0]
  if (c !== '{' && c !== '[' && c !== '"') return s
  try {
    JSON.parse(t)
  } catch {
    return s // not JSON: a string like any other
  }
  if (depth >= NESTED_DEPTH || t.length > NESTED_MAX) {
    sink.withheld++
    return withheldText('a JSON document nested in a string too deep or too large to mask')
  }
  try {
    const out = maskText(plan, keys, t, sink, depth + 1)
    return out === t ? s : out
  } catch (err) {
    if (!(err instanceof JsonMaskError)) throw err
    sink.withheld++
    return withheldText('a JSON document in a string that cannot be masked')
  }
}

/**
 * A JSON text masked rooted at `$`, and every JSON document inside its strings masked as its own
 * (bounded depth). The text's own bytes are kept when nothing inside it changed. Throws
 * JsonMaskError when `text` is not JSON.
 */
export function maskText(plan: JsonMaskPlan, keys: MaskingKeys, text: string, sink: MaskSink, depth = 0): string {
  const { body, masked } = maskJson(plan, keys, Buffer.from(text, 'utf8'))
  sink.count(masked)
  const out = body.toString('utf8')
  if (!NESTED_HINT.test(out)) return out
  const doc: unknown = JSON.parse(out)
  const opened = nested(doc, plan, keys, sink, depth)
  return opened === doc ? out : JSON.stringify(opened)
}

/** Masks one result; counts what each path masked and what was withheld. */
export class ResultMasker {
  private readonly counts = new Map<string, JsonMaskedPath>()
  /** Documents masked on their own, set aside while the whole result is masked (by placeholder). */
  private readonly docs = new Map<string, unknown>()
  private readonly nonce = randomUUID()
  withheld = 0

  constructor(
    private readonly plan: JsonMaskPlan,
    private readonly keys: MaskingKeys,
  ) {}

  /** A JSON value masked as a document of its own. */
  value(v: unknown): unknown {
    try {
      return JSON.parse(maskText(this.plan, this.keys, JSON.stringify(v) ?? 'null', this)) as unknown
    } catch (err) {
      if (!(err instanceof JsonMaskError)) throw err
      this.withheld++
      return withheldText('a JSON document that cannot be masked')
    }
  }

  /** A text that must be a JSON document to be passed; null when it is not (withhold it). */
  text(t: string): string | null {
    try {
      return maskText(this.plan, this.keys, t, this)
    } catch (err) {
      if (err instanceof JsonMaskError) return null
      throw err
    }
  }

  /** A masked document, held aside: the whole-result pass sees a placeholder in its place. */
  private doc(v: unknown): string {
    const key = `\u0000gatehouse-document:${this.nonce}:${this.docs.size}`
    this.docs.set(key, v)
    return key
  }

  /**
   * The whole result masked as one document rooted at the result, then the documents masked on
   * their own put back (a placeholder a rule replaced stays replaced).
   */
  private whole(r: Obj): Obj {
    const masked = this.value(r)
    const put = (v: unknown): unknown => {
      if (typeof v === 'string') return this.docs.has(v) ? this.docs.get(v) : v
      if (Array.isArray(v)) return v.map(put)
      if (isObj(v)) {
        const out: Obj = {}
        for (const [k, x] of Object.entries(v)) out[k] = put(x)
        return out
      }
      return v
    }
    const out = put(masked)
    this.docs.clear()
    return isObj(out) ? out : {}
  }

  /** One content item (text, image, audio, resource, resource_link), its documents set aside. */
  item(item: unknown): unknown {
    if (!isObj(item)) return this.note('content that cannot be masked')
    if (item.type === 'resource_link') {
      const link = pickItem(item, LINK_ITEM)
      link.name = withheldText("the link's name")
      if (item.description !== undefined) link.description = withheldText("the link's description")
      return link
    }
    if (item.type === 'text' && typeof item.text === 'string') {
      const t = this.text(item.text)
      return t === null ? this.note('text that is not JSON') : { ...pickItem(item, TEXT_ITEM), text: this.doc(t) }
    }
    if (item.type === 'resource' && isObj(item.resource)) {
      const r = this.contents(item.resource)
      return r === null ? this.note('an embedded resource that is not JSON') : { ...pickItem(item, RESOURCE_ITEM), resource: r }
    }
    return this.note(`${typeof item.type === 'string' ? item.type : 'content'} that cannot be masked`)
  }

  /** One entry of a resource's contents, its document set aside; null when it cannot be masked. */
  contents(c: unknown): Obj | null {
    if (!isObj(c) || typeof c.text !== 'string') return null
    const t = this.text(c.text)
    return t === null ? null : { ...pick(c, CONTENTS), text: this.doc(t) }
  }

  /** A tool result as the agent may see it. */
  toolResult(out: Obj): Obj {
    const r: Obj = { content: Array.isArray(out.content) ? out.content.map((c) => this.item(c)) : [] }
    if (out.structuredContent !== undefined) r.structuredContent = this.doc(this.value(out.structuredContent))
    if (out.isError !== undefined) r.isError = out.isError === true
    if (out._meta !== undefined) r._meta = out._meta
    return this.whole(r)
  }

  /** A resources/read result as the agent may see it: what cannot be masked is withheld. */
  readResult(out: Obj): Obj {
    const contents: Obj[] = []
    for (const c of Array.isArray(out.contents) ? out.contents : []) {
      const masked = this.contents(c)
      if (masked) contents.push(masked)
      else {
        this.withheld++
        contents.push({
          uri: isObj(c) && typeof c.uri === 'string' ? c.uri : '',
          mimeType: 'text/plain',
          text: withheldText('content that cannot be masked'),
        })
      }
    }
    const r: Obj = { contents }
    if (out._meta !== undefined) r._meta = out._meta
    return this.whole(r)
  }

  /** A prompts/get result as the agent may see it: the description (prose) is withheld. */
  promptResult(out: Obj): Obj {
    const messages = (Array.isArray(out.messages) ? out.messages : []).map((m) => {
      const o = isObj(m) ? m : {}
      return { role: o.role, content: this.item(o.content) }
    })
    const r: Obj = { messages }
    if (out.description !== undefined) r.description = withheldText("the prompt's description")
    if (out._meta !== undefined) r._meta = out._meta
    return this.whole(r)
  }

  private note(what: string): Obj {
    this.withheld++
    return { type: 'text', text: withheldText(what) }
  }

  count(masked: readonly JsonMaskedPath[]): void {
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
