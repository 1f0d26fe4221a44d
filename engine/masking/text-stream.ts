// Value detectors (detectors.ts) over a text body that streams: every span a detector finds is
// replaced by `****`, with values that straddle chunk boundaries found whole.
//
// The text is decoded (UTF-8 or Latin-1) and scanned in windows: what is emitted stops TAIL
// characters short of the end, so any value no longer than TAIL (every detector's but a JWT's or
// a PEM block's) is seen whole by one scan before any of it leaves; a span found across that line
// moves it back to the span's start. The two long kinds hold more: a trailing run of token
// characters holding `eyJ` (a JWT still growing) and a `-----BEGIN` without its END line are held
// from their start, up to MAX_HOLD characters, past which the body is refused (TextMaskError): the
// caller cuts the stream rather than let part of a key out. The last CONTEXT characters already
// sent are scanned again with the next window (for look-behinds: `aws_secret_access_key=`,
// `AccountKey=`), and spans inside them are not sent twice.
//
// Memory: at most twice MAX_HOLD, plus one chunk. Cost: linear; each window rescans what it held
// (TAIL + CONTEXT characters, more while a long value is held), and the next window waits for at
// least as many new characters (SCAN_MIN at the least).

import { StringDecoder } from 'node:string_decoder'
import { detect } from './detectors.js'

/** Characters held back from the end of a window: longer than any value but a JWT or a PEM block. */
export const TAIL = 4096
const CONTEXT = 64
/** New characters gathered before a window is scanned (smaller chunks are held to this). */
const SCAN_MIN = 16 * 1024
/** Most characters held for a value still being read (a JWT, a PEM block). */
export const MAX_HOLD = 256 * 1024
const MASK = '****'

export class TextMaskError extends Error {
  override readonly name = 'TextMaskError'
}

function tokenChar(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 45 || c === 46 || c === 95
}

export class TextDetectorMasker {
  private readonly decoder: StringDecoder
  private pending = ''
  private context = ''
  private readonly counts = new Map<string, number>()
  /** Pending length at which the next window is scanned: at least SCAN_MIN new characters, and
   *  at least as many as are held, so text held for a long value is not rescanned per chunk. */
  private nextScan = SCAN_MIN

  constructor(
    private readonly detectors: readonly string[],
    private readonly encoding: 'utf8' | 'latin1' = 'utf8',
  ) {
    this.decoder = new StringDecoder(encoding)
  }

  /** Masked output for `chunk` (possibly nothing yet: held until a window fills). */
  write(chunk: Buffer): Buffer[] {
    this.pending += this.decoder.write(chunk)
    if (this.pending.length < this.nextScan) return []
    const out = this.flush(false)
    this.nextScan = this.pending.length + Math.max(SCAN_MIN, this.pending.length)
    return out
  }

  /** The rest, masked. */
  end(): Buffer[] {
    this.pending += this.decoder.end()
    return this.flush(true)
  }

  /** Matches per detector so far. */
  found(): { detector: string; count: number }[] {
    return [...this.counts].map(([detector, count]) => ({ detector, count }))
  }

  private flush(final: boolean): Buffer[] {
    const text = this.context + this.pending
    const base = this.context.length
    const hits = detect(text, this.detectors)
    let cut = text.length
    if (!final) {
      cut = Math.max(base, text.length - TAIL)
      // A JWT may still be growing at the end: hold from its `eyJ`.
      let run = text.length
      while (run > base && tokenChar(text.charCodeAt(run - 1))) run--
      const jwt = text.indexOf('eyJ', run)
      if (jwt >= 0 && jwt < cut) cut = jwt
      // A PEM block whose END line has not come yet: hold from its BEGIN.
      const pem = text.lastIndexOf('-----BEGIN')
      if (pem >= base && pem < cut && text.indexOf('-----END', pem) < 0) cut = pem
      for (const h of hits) if (h.start >= base && h.start < cut && h.end > cut) cut = h.start
      // Never between the two halves of a surrogate pair.
      const c = text.charCodeAt(cut - 1)
      if (cut > base && c >= 0xd800 && c <= 0xdbff) cut--
      if (text.length - cut > MAX_HOLD) throw new TextMaskError(`a value the detectors are still reading runs past ${MAX_HOLD} characters`)
    }
    let out = ''
    let p = base
    for (const h of hits) {
      if (h.end <= base || h.start >= cut) continue
      const s = Math.max(h.start, base)
      const e = Math.min(h.end, cut)
      out += text.slice(p, s) + MASK
      p = e
      this.counts.set(h.detector, (this.counts.get(h.detector) ?? 0) + 1)
    }
    out += text.slice(p, cut)
    const sent = text.slice(0, cut)
    this.context = sent.slice(Math.max(0, sent.length - CONTEXT))
    this.pending = text.slice(cut)
    return out.length === 0 ? [] : [Buffer.from(out, this.encoding)]
  }
}
