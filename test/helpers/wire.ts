// Byte builders for PostgreSQL wire messages in tests: integers, C strings and typed frames.

export function int32(n: number): Buffer {
  const b = Buffer.alloc(4)
  b.writeInt32BE(n, 0)
  return b
}

export function int16(n: number): Buffer {
  const b = Buffer.alloc(2)
  b.writeInt16BE(n, 0)
  return b
}

export function cstr(s: string): Buffer {
  return Buffer.from(`${s}\0`, 'utf8')
}

/** A typed message: type byte, Int32 length (itself included, unless overridden), body. */
export function msg(type: number | string, body: Buffer, lengthWord = body.length + 4): Buffer {
  const t = typeof type === 'string' ? type.charCodeAt(0) : type
  return Buffer.concat([Buffer.from([t]), int32(lengthWord), body])
}
