// The few lines of tar a bundle needs: a gzip'd ustar archive of regular files (policy.wasm,
// data.json, .manifest). Written deterministically (mtime 0, fixed modes), read with a size cap
// and with the PAX/GNU long-name records Go's archive/tar may write, so bundles made by plain
// `opa build -t wasm` load too.

import { gunzipSync, gzipSync } from 'node:zlib'

/** A bundle is a wasm module and its data; 64 MiB unpacked is far beyond any real one. */
export const MAX_BUNDLE_BYTES = 64 * 1024 * 1024
const BLOCK = 512

function octal(buf: Buffer, off: number, len: number, value: number): void {
  buf.write(`${value.toString(8).padStart(len - 1, '0')}\0`, off, len, 'ascii')
}

function header(name: string, size: number): Buffer {
  const h = Buffer.alloc(BLOCK)
  if (Buffer.byteLength(name) > 100) throw new Error(`tar: name too long: ${name}`)
  h.write(name, 0, 100, 'utf8')
  octal(h, 100, 8, 0o644)
  octal(h, 108, 8, 0)
  octal(h, 116, 8, 0)
  octal(h, 124, 12, size)
  octal(h, 136, 12, 0)
  h.write('        ', 148, 8, 'ascii')
  h.write('0', 156, 1, 'ascii')
  h.write('ustar\0', 257, 6, 'ascii')
  h.write('00', 263, 2, 'ascii')
  let sum = 0
  for (const b of h) sum += b
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'ascii')
  return h
}

export function writeTarGz(files: readonly { name: string; data: Buffer }[]): Buffer {
  const parts: Buffer[] = []
  for (const f of files) {
    parts.push(header(f.name, f.data.length), f.data)
    const pad = (BLOCK - (f.data.length % BLOCK)) % BLOCK
    if (pad) parts.push(Buffer.alloc(pad))
  }
  parts.push(Buffer.alloc(BLOCK * 2))
  return gzipSync(Buffer.concat(parts), { level: 9 })
}

function cstr(buf: Buffer, off: number, len: number): string {
  const end = buf.indexOf(0, off)
  return buf.toString('utf8', off, end === -1 || end > off + len ? off + len : end)
}

function normalize(name: string): string {
  return name.replace(/^(\.\/|\/)+/, '')
}

/** Regular files by name (leading `/` and `./` removed). Throws on a malformed archive. */
export function readTarGz(gz: Buffer): Map<string, Buffer> {
  const tar = gunzipSync(gz, { maxOutputLength: MAX_BUNDLE_BYTES })
  const files = new Map<string, Buffer>()
  let off = 0
  let longName: string | null = null
  while (off + BLOCK <= tar.length) {
    const h = tar.subarray(off, off + BLOCK)
    if (h.every((b) => b === 0)) break
    const sizeText = cstr(h, 124, 12).trim()
    if (!/^[0-7]+$/.test(sizeText)) throw new Error('tar: malformed header (size)')
    const size = Number.parseInt(sizeText, 8)
    const type = String.fromCharCode(h[156] ?? 0)
    const start = off + BLOCK
    if (start + size > tar.length) throw new Error('tar: truncated archive')
    const body = tar.subarray(start, start + size)
    const prefix = cstr(h, 345, 155)
    const name = longName ?? (prefix ? `${prefix}/${cstr(h, 0, 100)}` : cstr(h, 0, 100))
    if (type === 'x') {
      const m = /(?:^|\n)\d+ path=([^\n]*)\n/.exec(body.toString('utf8'))
      longName = m?.[1] ?? null
    } else if (type === 'L') {
      longName = cstr(body, 0, body.length)
    } else {
      if (type === '0' || type === '\0') files.set(normalize(name), Buffer.from(body))
      longName = null
    }
    off = start + Math.ceil(size / BLOCK) * BLOCK
  }
  return files
}
