// Keeps injected credentials out of what the caller sees. An upstream that echoes the request
// (a debugging endpoint, an error page quoting headers) would otherwise hand the caller the very
// secret the gateway holds for it. Every form a secret is likely to be echoed in is masked with
// `*` of the same length, so Content-Length stays true and the body can be streamed.

import { Transform, type TransformCallback } from 'node:stream'

/** Shorter fragments are not masked: they would match ordinary text. */
export const MIN_NEEDLE = 6

/** The byte strings to mask for a set of injected header values. */
export function needlesFor(values: Iterable<string>): Buffer[] {
  const out = new Set<string>()
  const add = (s: string): void => {
    if (s.length >= MIN_NEEDLE) out.add(s)
  }
  for (const v of values) {
    add(v)
    // `Bearer <token>`, `Basic <base64>`, `Token <x>`: the credential without its scheme.
    const sp = v.indexOf(' ')
    const cred = sp > 0 ? v.slice(sp + 1).trim() : v
    add(cred)
    if (/^basic$/i.test(v.slice(0, sp))) {
      const decoded = Buffer.from(cred, 'base64').toString('utf8')
      add(decoded)
      const colon = decoded.indexOf(':')
      if (colon >= 0) add(decoded.slice(colon + 1))
    }
    for (const s of [v, cred]) {
      // As a JSON string, URL-encoded, and base64 (an echo that re-encodes it).
      add(JSON.stringify(s).slice(1, -1))
      add(JSON.stringify(s).slice(1, -1).replaceAll('/', '\\/'))
      add(encodeURIComponent(s))
      add(Buffer.from(s).toString('base64').replace(/=+$/, ''))
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
 * A stream that masks needles across chunk boundaries: it holds back the last (longest needle − 1)
 * bytes until the next chunk or the end, so a secret split between two chunks is still found.
 */
export class Scrubber extends Transform {
  private tail: Buffer = Buffer.alloc(0)
  private readonly keep: number
  masked = 0

  constructor(private readonly needles: readonly Buffer[]) {
    super()
    this.keep = Math.max(0, ...needles.map((n) => n.length)) - 1
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    const buf = this.tail.length > 0 ? Buffer.concat([this.tail, chunk]) : Buffer.from(chunk)
    this.masked += maskInPlace(buf, this.needles)
    const cut = Math.max(0, buf.length - this.keep)
    this.tail = buf.subarray(cut)
    if (cut > 0) this.push(buf.subarray(0, cut))
    done()
  }

  override _flush(done: TransformCallback): void {
    if (this.tail.length > 0) this.push(this.tail)
    done()
  }
}
