// Resource URIs as the upstream reads them. The upstream's SDK parses a URI with the WHATWG URL
// parser before it looks a resource up (it lower-cases the scheme, trims leading and trailing
// controls and spaces, removes tabs and newlines anywhere), so `SECRET://x`, ` secret://x` and
// `sec\tret://x` all read `secret://x`. "Run exactly what was judged": the gateway parses the URI
// the same way, judges the canonical form (`href`) and sends exactly that string upstream; a URI
// that does not parse is refused, never passed on for the upstream to interpret.

/** The canonical form of a resource URI (WHATWG `href`), or null when it does not parse. */
export function canonicalUri(uri: unknown): string | null {
  if (typeof uri !== 'string') return null
  try {
    return new URL(uri).href
  } catch {
    return null
  }
}
