// A tunnelled stream dressed as a net.Socket, so every proxy's `dial` keeps returning a Socket and
// no plugin changes: reads and writes go to the HTTP/2 stream; there is no file descriptor
// (no _handle), which net.Socket, tls.connect({socket}) and ssh2 all accept.

import { Socket } from 'node:net'
import type { Duplex } from 'node:stream'

export class TunnelSocket extends Socket {
  constructor(
    private readonly inner: Duplex,
    /** Called once when the stream is cut (not ended), before this socket reports the error:
     * returns the error to report (naming the connector). */
    private readonly cut: (err: Error) => Error,
    /**
     * Whether the stream's end is a cut rather than the far side's end: a link that drops closes
     * its streams, and their readable side ends before any error or close is reported. Passed on
     * as the end of the target's bytes, it would have the plugin end the session for the target's
     * reason before the link's loss is known.
     */
    private readonly wasCut: () => boolean,
  ) {
    super({ allowHalfOpen: true })
    // A link that drops cuts every stream it carries, including one whose user holds it without an
    // 'error' listener for a moment (a cancel request in flight, a socket between dial and
    // handshake): an unheard 'error' would end the whole gateway. Its users still hear the error
    // when they listen, and 'close' (hadError) either way.
    this.on('error', () => undefined)
    inner.on('data', (d: Buffer) => {
      if (!this.push(d)) inner.pause()
    })
    inner.on('end', () => {
      if (!this.wasCut()) this.push(null)
      else if (!this.destroyed) this.destroy(this.cut(new Error('the stream was reset')))
    })
    inner.on('error', (err: Error) => {
      if (!this.destroyed) this.destroy(this.cut(err))
    })
    inner.on('close', () => {
      // A stream closed before its far side ended was cut (its link dropped, or it was reset).
      if (!this.destroyed) this.destroy(this.readableEnded ? undefined : this.cut(new Error('the stream was closed')))
    })
  }

  override _read(): void {
    this.inner.resume()
  }

  override _write(chunk: Buffer, encoding: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.inner.write(chunk, encoding, cb)
  }

  // net.Socket's own _writev writes to the file descriptor this socket does not have: writes
  // buffered behind a slow stream (a large upload) must go to the stream too, as one batch.
  override _writev(chunks: { chunk: Buffer; encoding: BufferEncoding }[], cb: (err?: Error | null) => void): void {
    this.inner.cork()
    for (let i = 0; i < chunks.length - 1; i++) this.inner.write((chunks[i] as { chunk: Buffer }).chunk)
    this.inner.write((chunks[chunks.length - 1] as { chunk: Buffer }).chunk, cb)
    this.inner.uncork()
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.inner.end()
    cb()
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.inner.destroy()
    super._destroy(err, cb)
  }
}
