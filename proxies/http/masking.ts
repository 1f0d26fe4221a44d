// Masking response bodies: `json_paths:` rules (engine/masking/json-stream.ts) applied to what the
// upstream answers, while it streams. Everything here fails closed: a response the gateway cannot
// mask (compressed in an unknown way, not JSON, partial content, broken JSON) is refused or cut,
// never passed through.
//
// Other routes to an unmasked representation are shut when a rule applies (docs/http.md,
// "Masking response bodies"):
//   - Range / If-Range are not forwarded (a 206 slice would be unparseable, hence unmaskable), and
//     a 206 that comes anyway is refused;
//   - conditional headers (If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since) are
//     not forwarded: a 412 or 304 against a guessed ETag would say something about the clear body;
//   - the response's ETag, Content-Length, Content-MD5 and digest fields describe the clear body
//     (an ETag is often its hash: a dictionary oracle) and are dropped; the body goes chunked;
//   - Accept-Encoding is `identity` upstream; gzip, deflate and br answers are decompressed, any
//     other Content-Encoding is refused;
//   - content negotiation: only JSON (and NDJSON, JSON sequences, server-sent events of JSON) can
//     be masked, so any other media type with a body is refused: `Accept: text/csv` cannot fetch
//     the same records as a CSV the rules do not reach.

import { createHmac, randomBytes } from 'node:crypto'
import type { Transform } from 'node:stream'
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib'
import {
  JsonMaskError,
  type JsonMaskedPath,
  JsonMasker,
  type JsonMaskPlan,
  loadMaskingKey,
  type MaskObligation,
  type MaskingKeys,
  maskJson,
  TextDetectorMasker,
} from '../kit/index.js'

const MASKING_KEYS = new Map<string, Buffer>()
const SESSION_KEYS = new WeakMap<object, MaskingKeys>()

/** The HTTP plugin's masking key (`<stateDir>/keys/masking.key`, made on first use) and a key
 *  drawn per gateway session for hash_session. */
export function sessionMaskKeys(stateDir: string, session: object): MaskingKeys {
  let k = SESSION_KEYS.get(session)
  if (!k) {
    let key = MASKING_KEYS.get(stateDir)
    if (!key) {
      key = loadMaskingKey(stateDir)
      MASKING_KEYS.set(stateDir, key)
    }
    k = { key, sessionKey: createHmac('sha256', key).update(randomBytes(32)).digest() }
    SESSION_KEYS.set(session, k)
  }
  return k
}

/** Request headers not forwarded when a rule masks the response. */
export const MASKED_REQUEST_DROP = new Set([
  'range',
  'if-range',
  'if-match',
  'if-none-match',
  'if-modified-since',
  'if-unmodified-since',
  // The older spelling of Range, WebDAV's and CalDAV's conditions on ETags, and digest requests:
  // each would tell the caller something about the clear representation.
  'request-range',
  'if',
  'if-schedule-tag-match',
  'want-digest',
  'want-repr-digest',
  'want-content-digest',
  'accept-encoding',
])

/** Response headers that describe the clear body, dropped when it is masked. */
const MASKED_RESPONSE_DROP = new Set([
  'content-length',
  'content-encoding',
  'etag',
  'content-md5',
  'digest',
  'content-digest',
  'repr-digest',
  'accept-ranges',
  'content-range',
])

export function dropForMasked(header: string): boolean {
  return MASKED_RESPONSE_DROP.has(header)
}

/** A synchronous transform of a body (the shape of exchange.ts's BodyFilter). */
export interface SyncFilter {
  write(chunk: Buffer): Buffer[]
  end(): Buffer[]
}

/** A Content-Encoding the gateway can undo to mask. */
export type Coding = 'gzip' | 'deflate' | 'br'

/**
 * The decoders of a body's encodings, in the order they are undone, piped into each other: write
 * the body into `head`, read the decoded bytes from `tail`. Streams, not one-shot calls: zlib then
 * decodes only as fast as its output is read (16 KiB at a time), so a small compressed chunk that
 * expands a thousandfold is never held decoded whole.
 */
export function decoderChain(codings: readonly Coding[]): { head: Transform; tail: Transform; all: readonly Transform[] } {
  const all = codings.map((c) => (c === 'gzip' ? createGunzip() : c === 'deflate' ? createInflate() : createBrotliDecompress()))
  for (let i = 0; i + 1 < all.length; i++) (all[i] as Transform).pipe(all[i + 1] as Transform)
  return { head: all[0] as Transform, tail: all[all.length - 1] as Transform, all }
}

export type BodyKind = 'json' | 'sequence' | 'sse' | 'text'

/** How a response may be masked, or why it cannot. */
export type MaskVerdict =
  | { readonly ok: true; readonly kind: BodyKind | null; readonly codings: readonly Coding[]; readonly charset?: 'utf8' | 'latin1' }
  | { readonly ok: false; readonly why: string }

const SEQUENCE_TYPES = new Set([
  'application/x-ndjson',
  'application/ndjson',
  'application/jsonl',
  'application/x-jsonlines',
  'application/json-seq',
])

function mediaType(contentType: string): { type: string; charset: string | null } {
  const [t, ...params] = contentType.split(';')
  let charset: string | null = null
  for (const p of params) {
    const m = /^\s*charset\s*=\s*"?([^";\s]+)"?\s*$/i.exec(p)
    if (m) charset = (m[1] as string).toLowerCase()
  }
  return { type: (t ?? '').trim().toLowerCase(), charset }
}

/**
 * What to do with a response when rules apply: no body (HEAD, 204, 304, an empty body) passes;
 * otherwise the body must be JSON of a kind the masker reads, in UTF-8, with encodings the
 * gateway can undo.
 */
export function maskVerdict(method: string, status: number, headers: Record<string, string | string[] | undefined>): MaskVerdict {
  if (status === 206) return { ok: false, why: 'partial content (206) cannot be masked' }
  const one = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v.join(', ') : v)
  const noBody =
    method === 'HEAD' || status === 204 || status === 304 || (status >= 100 && status < 200) || one(headers['content-length']) === '0'
  if (noBody) return { ok: true, kind: null, codings: [] }
  const codings: Coding[] = []
  const encoding = one(headers['content-encoding'])
  if (encoding !== undefined) {
    // Listed in the order applied: undone last first.
    const listed = encoding
      .split(',')
      .map((s) => s.trim().toLowerCase())
      .filter((s) => s !== '' && s !== 'identity')
    for (const c of listed.reverse()) {
      if (c === 'gzip' || c === 'x-gzip') codings.push('gzip')
      else if (c === 'deflate') codings.push('deflate')
      else if (c === 'br') codings.push('br')
      else return { ok: false, why: `the body is encoded as ${JSON.stringify(c)}, which the gateway cannot decode to mask` }
    }
  }
  const fail = (why: string): MaskVerdict => ({ ok: false, why })
  const ct = one(headers['content-type'])
  if (ct === undefined) return fail('the body has no Content-Type; only JSON can be masked')
  const { type, charset } = mediaType(ct)
  if (charset !== null && charset !== 'utf-8' && charset !== 'utf8')
    return fail(`the body is in charset ${charset}; JSON is masked as UTF-8`)
  let kind: BodyKind
  if (type === 'application/json' || (type.startsWith('application/') && type.endsWith('+json'))) kind = 'json'
  else if (SEQUENCE_TYPES.has(type)) kind = 'sequence'
  else if (type === 'text/event-stream') kind = 'sse'
  else return fail(`the body is ${type || 'of no media type'}; only JSON can be masked`)
  return { ok: true, kind, codings }
}

/** The value detectors a decision's obligations switch on for this chain. */
export function detectorsOf(mask: readonly MaskObligation[]): string[] {
  const out: string[] = []
  for (const m of mask) if (m.detector !== undefined && !out.includes(m.detector)) out.push(m.detector)
  return out
}

/** Charsets a text body may be masked in (decoded and encoded back exactly). */
const TEXT_CHARSETS: Readonly<Record<string, 'utf8' | 'latin1'>> = {
  'utf-8': 'utf8',
  utf8: 'utf8',
  'us-ascii': 'utf8',
  'iso-8859-1': 'latin1',
  latin1: 'latin1',
}

/**
 * When only value detectors apply: a `text/*` body is masked by them (decoded, in its charset), a
 * text body in a charset or encoding the gateway cannot undo is refused, and any other body passes
 * as it is (null): the detectors are for text.
 */
export function textVerdict(method: string, status: number, headers: Record<string, string | string[] | undefined>): MaskVerdict | null {
  const one = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v.join(', ') : v)
  const ct = one(headers['content-type'])
  const { type, charset } = mediaType(ct ?? '')
  if (!type.startsWith('text/')) return null
  const v = maskVerdict(method, status, { ...headers, 'content-type': 'application/json' })
  if (!v.ok || v.kind === null) return v
  const cs = TEXT_CHARSETS[charset ?? 'utf-8']
  if (cs === undefined) return { ok: false, why: `the text body is in charset ${charset}, which the detectors cannot read` }
  return { ok: true, kind: 'text', codings: v.codings, charset: cs }
}

/** A text body through the value detectors; what they found is added to the tally at the end. */
export class TextBodyMasker implements SyncFilter {
  private readonly m: TextDetectorMasker
  private counted = false
  constructor(
    detectors: readonly string[],
    charset: 'utf8' | 'latin1',
    private readonly tally: MaskTally,
  ) {
    this.m = new TextDetectorMasker(detectors, charset)
  }
  write(chunk: Buffer): Buffer[] {
    return this.m.write(chunk)
  }
  end(): Buffer[] {
    const out = this.m.end()
    this.settle()
    return out
  }
  settle(): void {
    if (this.counted) return
    this.counted = true
    for (const f of this.m.found()) this.tally.add([{ path: '', rule: `detector:${f.detector}`, strategy: 'redact', count: f.count }])
  }
}

/** Accumulates what each path masked over a response. */
export class MaskTally {
  private readonly byPath = new Map<string, { path: string; rule: string; strategy: string; count: number }>()
  /** A detector's matches come as path '' and rule `detector:<name>`; listed as `{detector, rule, strategy, count}`. */
  add(paths: readonly JsonMaskedPath[]): void {
    for (const p of paths) {
      const key = `${p.rule}\u0000${p.path}`
      const e = this.byPath.get(key)
      if (e) e.count += p.count
      else this.byPath.set(key, { ...p })
    }
  }
  list(): Record<string, unknown>[] {
    return [...this.byPath.values()].map((e) =>
      e.path === '' ? { detector: e.rule.slice('detector:'.length), rule: e.rule, strategy: e.strategy, count: e.count } : e,
    )
  }
}

/** A JSON body (one document, or a sequence) masked as it streams; invalid JSON throws. */
export class JsonBodyMasker implements SyncFilter {
  private readonly masker: JsonMasker
  private counted = false
  constructor(
    plan: JsonMaskPlan,
    keys: MaskingKeys,
    multiple: boolean,
    private readonly tally: MaskTally,
  ) {
    this.masker = new JsonMasker(plan, keys, { multiple })
  }
  write(chunk: Buffer): Buffer[] {
    // One buffer per chunk: many small writes would each become a write (and a TLS record).
    const parts = this.masker.write(chunk)
    return parts.length <= 1 ? parts : [Buffer.concat(parts)]
  }
  end(): Buffer[] {
    const parts = this.masker.end()
    this.settle()
    return parts.length <= 1 ? parts : [Buffer.concat(parts)]
  }
  /** Adds what was masked to the tally (also for a body cut short). */
  settle(): void {
    if (this.counted) return
    this.counted = true
    this.tally.add(this.masker.masked())
  }
}

/** Longest server-sent event (its data lines together) the gateway holds to mask. */
export const MAX_EVENT_BYTES = 1024 * 1024

const BOM = Buffer.from([0xef, 0xbb, 0xbf])

/**
 * An event type the masker passes: a name, not a value. A JSON path cannot reach an `event:` line,
 * so one that could carry a record's value (digits, `@`, spaces) is not passed.
 */
const EVENT_TYPE = /^ ?[A-Za-z][A-Za-z_.-]{0,63}$/

/**
 * Server-sent events, read as an allow-list: `data` lines are held until the event ends (a blank
 * line) and then sent masked as one JSON document (the event's data lines joined with newlines, as
 * a client reads them); an `event` line passes when its type is a plain name (EVENT_TYPE), `id`
 * lines are dropped (a resume position is the upstream's free text, out of any path's reach);
 * `retry` passes when it is a number; a comment
 * passes as an empty comment (a keep-alive, its text dropped). Any other line — a JSON document sent
 * as an event stream, `Data:`, `data :` — cuts the stream: what a client or a raw reader would make
 * of it cannot be known, so it is not passed. One byte order mark at the start is dropped (clients
 * drop it too, and a line behind it would not start with a field name). Data that is not JSON is
 * refused: the rules cannot be applied to it. An event larger than MAX_EVENT_BYTES is refused.
 */
export class SseMasker implements SyncFilter {
  private line: Buffer[] = []
  private lineLen = 0
  private data: Buffer[] = []
  private dataLen = 0
  private sawCr = false
  /** Bytes of the stream's start held while they could still be a byte order mark. */
  private head: Buffer | null = Buffer.alloc(0)
  constructor(
    private readonly plan: JsonMaskPlan,
    private readonly keys: MaskingKeys,
    private readonly tally: MaskTally,
  ) {}

  private out: Buffer[] = []
  private push(b: Buffer | string): void {
    this.out.push(typeof b === 'string' ? Buffer.from(b) : b)
  }
  private take(): Buffer[] {
    const o = this.out
    this.out = []
    return o.length <= 1 ? o : [Buffer.concat(o)]
  }

  write(input: Buffer): Buffer[] {
    let chunk = input
    if (this.head !== null) {
      const head = Buffer.concat([this.head, chunk])
      if (head.length < 3 && BOM.subarray(0, head.length).equals(head)) {
        this.head = head
        return []
      }
      this.head = null
      chunk = head.length >= 3 && head.subarray(0, 3).equals(BOM) ? head.subarray(3) : head
    }
    {
      let start = 0
      for (let i = 0; i < chunk.length; i++) {
        const c = chunk[i] as number
        if (c !== 0x0a && c !== 0x0d) continue
        if (c === 0x0a && this.sawCr && i === start && this.lineLen === 0) {
          // The LF of a CRLF whose CR ended the previous line.
          this.sawCr = false
          start = i + 1
          continue
        }
        this.sawCr = c === 0x0d
        this.takeLine(chunk.subarray(start, i))
        start = i + 1
      }
      if (start < chunk.length) {
        this.sawCr = false
        this.keepPartial(chunk.subarray(start))
      }
    }
    return this.take()
  }

  end(): Buffer[] {
    if (this.head !== null && this.head.length > 0) throw new JsonMaskError('an event stream that ends inside its first line', 0)
    if (this.lineLen > 0) this.takeLine(Buffer.alloc(0))
    if (this.dataLen > 0) this.dispatch()
    return this.take()
  }

  private keepPartial(part: Buffer): void {
    this.lineLen += part.length
    if (this.lineLen + this.dataLen > MAX_EVENT_BYTES)
      throw new JsonMaskError(`a server-sent event longer than ${MAX_EVENT_BYTES} bytes`, 0)
    this.line.push(Buffer.from(part))
  }

  private takeLine(tail: Buffer): void {
    const line = this.lineLen === 0 ? tail : Buffer.concat([...this.line, tail])
    this.line = []
    this.lineLen = 0
    if (line.length === 0) {
      if (this.dataLen > 0) this.dispatch()
      this.push('\n')
      return
    }
    const colon = line.indexOf(0x3a)
    const name = (colon < 0 ? line : line.subarray(0, colon)).toString('latin1')
    if (name === 'data') {
      // `data:` or `data` (a field without a colon): held for the event.
      let v = line.subarray(colon < 0 ? line.length : colon + 1)
      if (v[0] === 0x20) v = v.subarray(1)
      if (this.data.length > 0) this.data.push(Buffer.from('\n'))
      this.data.push(Buffer.from(v))
      this.dataLen += v.length + 1
      if (this.dataLen > MAX_EVENT_BYTES) throw new JsonMaskError(`a server-sent event longer than ${MAX_EVENT_BYTES} bytes`, 0)
      return
    }
    if (name === '') {
      this.push(':\n')
      return
    }
    if (name === 'id') return
    if (name === 'event') {
      if (!EVENT_TYPE.test(line.subarray(colon < 0 ? line.length : colon + 1).toString('latin1')))
        throw new JsonMaskError('a server-sent event type that is not a plain name (letters, _ . -, up to 64)', 0)
      this.push(Buffer.concat([line, Buffer.from('\n')]))
      return
    }
    if (name === 'retry' && /^ ?[0-9]+$/.test(line.subarray(colon + 1).toString('latin1'))) {
      this.push(Buffer.concat([line, Buffer.from('\n')]))
      return
    }
    throw new JsonMaskError('an event stream line that is not a data, event, id, retry or comment line', 0)
  }

  private dispatch(): void {
    const doc = Buffer.concat(this.data)
    this.data = []
    this.dataLen = 0
    const r = maskJson(this.plan, this.keys, doc)
    this.tally.add(r.masked)
    // One data line per line of the masked document, so the client joins it back the same way.
    for (const l of r.body.toString('utf8').split('\n')) this.push(`data: ${l}\n`)
  }
}
