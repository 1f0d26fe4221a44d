// PostgreSQL wire messages built by hand, for tests and benchmarks that feed the row masker or the
// backend scanner directly (real servers are used everywhere else).

export /** A DataRow message from values (null = SQL NULL). */
function dataRow(values: readonly (Buffer | string | null)[]): Buffer {
  const parts: Buffer[] = []
  for (const v of values) {
    const len = Buffer.alloc(4)
    if (v === null) {
      len.writeInt32BE(-1)
      parts.push(len)
    } else {
      const b = typeof v === 'string' ? Buffer.from(v, 'utf8') : v
      len.writeInt32BE(b.length)
      parts.push(len, b)
    }
  }
  const body = Buffer.concat(parts)
  const head = Buffer.alloc(7)
  head[0] = 0x44
  head.writeInt32BE(body.length + 6, 1)
  head.writeInt16BE(values.length, 5)
  return Buffer.concat([head, body])
}
