// Keeps injected credentials out of what the caller sees. An upstream that echoes the request
// (a debugging endpoint, an error page quoting headers) would otherwise hand the caller the very
// secret the gateway holds for it. Every form a secret is likely to be echoed in is masked with
// `*` of the same length, so Content-Length stays true and the body can be streamed.

import { Transform, type TransformCallback } from 'node:stream'

/** Shorter fragments are not masked: they would match ordinary text. */
export const MIN_NEEDLE = 6

/**
 * The base64 (and base64url) spellings of `s` wherever it starts in the encoded bytes: base64 works
 * in 3-byte groups, so a secret after 0, 1 or 2 other bytes is spelt three different ways. Only
 * the characters that depend on the secret alone are kept (the first group's mixed characters and
 * the last partial group's are dropped), so each form matches whatever surrounds the secret.
 */
function base64Forms(s: string): string[] {
  const out: string[] = []
  const bytes = Buffer.from(s)
  for (const lead of [0, 1, 2]) {
    const b = Buffer.concat([Buffer.alloc(lead), bytes])
    let enc = b.toString('base64').replace(/=+$/, '')
    if (b.length % 3 !== 0) enc = enc.slice(0, -1)
    enc = enc.slice([0, 2, 3][lead])
    out.push(enc, enc.replaceAll('+', '-').replaceAll('/', '_'))
  }
  return out
}

/** URL-encoded spellings: upper- and lower-case escapes, and `+` for a space (form encoding). */
function urlForms(s: string): string[] {
  const upper = encodeURIComponent(s)
  const lower = upper.replace(/%[0-9A-F]{2}/g, (m) => m.toLowerCase())
  return [upper, lower, upper.replaceAll('%20', '+'), lower.replaceAll('%20', '+')]
}

/** The byte strings to mask for a set of injected header values. */
export function needlesFor(values: Iterable<string>): Buffer[] {
  const out = new Set<string>()
  const add = (s: string): void => {
    if (s.length >= MIN_NEEDLE) out.add(s)
  }
  for (const v of values) {
    // `Bearer <token>`, `Basic <base64>`, `Token <x>`: the credential without its scheme.
    const sp = v.indexOf(' ')
    const cred = sp > 0 ? v.slice(sp + 1).trim() : v
    const secrets = [v, cred]
    if (/^basic$/i.test(v.slice(0, sp))) {
      const decoded = Buffer.from(cred, 'base64').toString('utf8')
      secrets.push(decoded)
      const colon = decoded.indexOf(':')
      if (colon >= 0) secrets.push(decoded.slice(colon + 1))
    }
    for (const s of secrets) {
      add(s)
      // As a JSON string, URL-encoded, and base64 (an echo that re-encodes it).
      add(JSON.stringify(s).slice(1, -1))
      add(JSON.stringify(s).slice(1, -1).replaceAll('/', '\\/'))
      for (const f of urlForms(s)) add(f)
      for (const f of base64Forms(s)) add(f)
    }
  }
  return [...out].map((s) => Buffer.from(s))
}

/** Masks every needle in `buf` in place; returns how many matches were masked. */
export function maskInPlace(buf: Buffer, needles: readonly Buffer[]): number {
  let n = 0
  for (const needle of needles) {
    for (let i = buf.indexOf(needle); i >= 0; i = buf.indexOf(needle, i + needle.length)) {
      buf.fill(0x2a, i, i + needle.length)
      n++
    }
  }
  return n
}

/** A header value with every needle masked. */
export function maskString(value: string, needles: readonly Buffer[]): string {
  if (needles.length === 0) return value
  const b = Buffer.from(value)
  return maskInPlace(b, needles) > 0 ? b.toString() : value
}

/**
 * Masks needles across chunk boundaries, synchronously: it holds back the last (longest needle − 1)
 * bytes until the next chunk or the end, so a secret split between two chunks is still found.
 * `write` returns what may be sent so far, `end` the rest.
 */
export class ScrubState {
  private tail: Buffer = Buffer.alloc(0)
  private readonly keep: number
  masked = 0

  constructor(private readonly needles: readonly Buffer[]) {
    this.keep = Math.max(0, ...needles.map((n) => n.length)) - 1
  }

  write(chunk: Buffer): Buffer[] {
    const buf = this.tail.length > 0 ? Buffer.concat([this.tail, chunk]) : Buffer.from(chunk)
    this.masked += maskInPlace(buf, this.needles)
    const cut = Math.max(0, buf.length - this.keep)
    this.tail = buf.subarray(cut)
    return cut > 0 ? [buf.subarray(0, cut)] : []
  }

  end(): Buffer[] {
    const t = this.tail
    this.tail = Buffer.alloc(0)
    return t.length > 0 ? [t] : []
  }
}

/** ScrubState as a stream. */
export class Scrubber extends Transform {
  private readonly state: ScrubState

  constructor(needles: readonly Buffer[]) {
    super()
    this.state = new ScrubState(needles)
  }

  get masked(): number {
    return this.state.masked
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    for (const b of this.state.write(chunk)) this.push(b)
    done()
  }

  override _flush(done: TransformCallback): void {
    for (const b of this.state.end()) this.push(b)
    done()
  }
}
