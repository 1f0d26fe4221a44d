// The request target: which connection a request names, and the one normalised path that policy
// judges and the upstream receives. Anything ambiguous is refused rather than guessed, because the
// gateway and the upstream must read the same path or a rule on one is a bypass on the other.
//
// Normalisation (RFC 3986 §6.2.2):
// - percent-encoded unreserved characters (A–Z a–z 0–9 - . _ ~) are decoded; every other escape is
//   kept, with upper-case hex;
// - encoded `/`, `\`, NUL and control characters are refused: upstreams disagree on whether `%2F`
//   separates segments, so no rule could be written for both readings;
// - the decoded bytes must be valid UTF-8 (overlong forms such as `%C0%AE` are refused);
// - `;` is refused by default (servlet-style path parameters hide segments: `/admin;x/secret`),
//   a connection may allow it (`path_params: true`);
// - empty segments (`//`) are merged, dot segments (`.`, `..`) are removed, never above the root;
// - a connection on an upstream that matches paths case-insensitively sets `path_case:
//   insensitive`, and the path is lower-cased (judged and sent lower-cased).

/** Why a target was refused: a 400 with this detail. */
export class TargetError extends Error {}

const UNRESERVED = /[A-Za-z0-9\-._~]/
/** Characters allowed raw in a path (RFC 3986 pchar and `/`), `;` handled separately. */
const PATH_CHARS = /^[A-Za-z0-9\-._~!$&'()*+,=:@/%;]*$/
/** Characters allowed raw in a query. */
const QUERY_CHARS = /^[A-Za-z0-9\-._~!$&'()*+,=:@/?%;]*$/
const HEX = '0123456789ABCDEF'

export interface PathRules {
  /** Lower-case the path (upstream matches case-insensitively). */
  readonly caseInsensitive: boolean
  /** Allow `;` in paths. */
  readonly pathParams: boolean
}

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48
  if (c >= 65 && c <= 70) return c - 55
  if (c >= 97 && c <= 102) return c - 87
  return -1
}

/**
 * The normalised form of a raw path (no query), or a TargetError. The result starts with `/`, has
 * no empty or dot segments, and is what the upstream receives.
 */
export function normalisePath(raw: string, rules: PathRules): string {
  if (!PATH_CHARS.test(raw)) throw new TargetError('the path has characters that must be percent-encoded')
  if (!rules.pathParams && raw.includes(';')) throw new TargetError('the path has ";" parameters, which this connection refuses')
  // Already normal (the common case): ASCII, nothing escaped, no empty or dot segments.
  if (raw.charCodeAt(0) === 0x2f && !raw.includes('%') && !raw.includes('//') && !raw.includes('/.') && !raw.includes(';')) {
    return rules.caseInsensitive ? raw.toLowerCase() : raw
  }
  // Decode unreserved escapes, keep the rest (upper-case hex), and check the decoded bytes.
  let out = ''
  const bytes: number[] = []
  for (let i = 0; i < raw.length; i++) {
    const ch = raw[i] as string
    if (ch !== '%') {
      out += ch
      bytes.push(ch.charCodeAt(0))
      continue
    }
    const hi = hexValue(raw.charCodeAt(i + 1))
    const lo = hexValue(raw.charCodeAt(i + 2))
    if (hi < 0 || lo < 0) throw new TargetError('the path has a malformed percent-escape')
    const b = hi * 16 + lo
    i += 2
    if (b === 0x2f || b === 0x5c) throw new TargetError('the path has an encoded "/" or "\\", which the gateway refuses')
    if (b < 0x20 || b === 0x7f) throw new TargetError('the path has an encoded control character')
    if (b === 0x3b && !rules.pathParams) throw new TargetError('the path has ";" parameters, which this connection refuses')
    bytes.push(b)
    const c = String.fromCharCode(b)
    out += b < 0x80 && UNRESERVED.test(c) ? c : `%${HEX[hi]}${HEX[lo]}`
  }
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(Uint8Array.from(bytes))
  } catch {
    throw new TargetError('the path is not valid UTF-8 once decoded')
  }
  if (!out.startsWith('/')) throw new TargetError('the path must start with "/"')
  // Segments: merge empty ones, resolve dot segments (never above the root); a last segment that
  // is empty or a dot segment leaves a trailing "/".
  const input = out.split('/').slice(1)
  const stack: string[] = []
  for (let i = 0; i < input.length; i++) {
    const s = input[i] as string
    const last = i === input.length - 1
    if (s === '..') stack.pop()
    else if (s !== '' && s !== '.') {
      stack.push(s)
      continue
    }
    if (last) stack.push('')
  }
  const path = `/${stack.join('/')}`
  return rules.caseInsensitive ? path.toLowerCase() : path
}

/** The raw query is forwarded as sent; it must be well-formed. */
export function checkQuery(raw: string): void {
  if (!QUERY_CHARS.test(raw)) throw new TargetError('the query has characters that must be percent-encoded')
  for (let i = raw.indexOf('%'); i >= 0; i = raw.indexOf('%', i + 1)) {
    if (hexValue(raw.charCodeAt(i + 1)) < 0 || hexValue(raw.charCodeAt(i + 2)) < 0) {
      throw new TargetError('the query has a malformed percent-escape')
    }
  }
}

/** The query as policy sees it: each name with its value, or its values when repeated. */
export function parseQuery(raw: string): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = Object.create(null) as Record<string, string | string[]>
  if (raw === '') return out
  for (const [k, v] of new URLSearchParams(raw)) {
    const prev = out[k]
    if (prev === undefined) out[k] = v
    else if (Array.isArray(prev)) prev.push(v)
    else out[k] = [prev, v]
  }
  return { ...out }
}

export interface Routed {
  readonly connection: string
  /** The raw path after the connection prefix (before normalisation). */
  readonly rawPath: string
  readonly rawQuery: string
  /** Named by the Host header (a connection's `hosts:`), not by the `/c/` prefix. */
  readonly byHost?: boolean
}

const CONNECTION_NAME = /^[A-Za-z0-9_.-]{1,63}$/

/**
 * Splits an origin-form target `/c/<connection>/<path>?<query>` into its parts. The connection
 * segment is taken literally (no escapes). Null when the target is not under `/c/`.
 */
export function route(target: string): Routed | null {
  if (!target.startsWith('/c/')) return null
  const q = target.indexOf('?')
  const pathPart = q < 0 ? target : target.slice(0, q)
  const rawQuery = q < 0 ? '' : target.slice(q + 1)
  const rest = pathPart.slice(3)
  const slash = rest.indexOf('/')
  const connection = slash < 0 ? rest : rest.slice(0, slash)
  if (!CONNECTION_NAME.test(connection)) return null
  return { connection, rawPath: slash < 0 ? '/' : rest.slice(slash), rawQuery }
}

/** An origin-form target as a whole for `connection` (host-name routing: nothing is stripped). */
export function routeWhole(connection: string, target: string): Routed {
  const q = target.indexOf('?')
  return { connection, rawPath: q < 0 ? target : target.slice(0, q), rawQuery: q < 0 ? '' : target.slice(q + 1), byHost: true }
}

// Host-name routing: a connection's `hosts:` entries are exact host names (compared without
// case), each optionally with a port. An entry without a port matches that name on any port (the
// port a client dials depends on forwarding and load balancers, not on the API it means); an entry
// with a port matches only that port. No wildcards, no IP addresses, no trailing dot: the Host
// header names a connection exactly or not at all.

const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/
const PORT = /^[0-9]{1,5}$/

/** The (lower-case) name and port of a well-formed `name[:port]`, or null. */
function splitHost(value: string): { name: string; port: number | null } | null {
  const colon = value.lastIndexOf(':')
  const name = (colon < 0 ? value : value.slice(0, colon)).toLowerCase()
  const portText = colon < 0 ? null : value.slice(colon + 1)
  if (portText !== null && (!PORT.test(portText) || Number(portText) < 1 || Number(portText) > 65535)) return null
  if (name.length === 0 || name.length > 253) return null
  const labels = name.split('.')
  if (!labels.every((l) => LABEL.test(l))) return null
  // The last label of a DNS name is never all digits: that is an IPv4 address.
  if (/^[0-9]+$/.test(labels[labels.length - 1] as string)) return null
  return { name, port: portText === null ? null : Number(portText) }
}

/** Why a `hosts:` entry is unusable, or null. */
export function hostEntryProblem(entry: string): string | null {
  if (entry.includes('*')) return `${JSON.stringify(entry)}: wildcards are not accepted, list each host name`
  if (entry.endsWith('.') || entry.includes('.:')) return `${JSON.stringify(entry)}: no trailing dot`
  if (entry.startsWith('[') || /^[0-9.]+(:[0-9]*)?$/.test(entry))
    return `${JSON.stringify(entry)}: an IP address cannot name a connection (use a host name)`
  if (splitHost(entry) === null) return `${JSON.stringify(entry)}: must be a host name, or host:port`
  return null
}

/** Which connection each configured host name reaches. */
export class HostRoutes {
  /** name → connection for entries without a port; `name:port` → connection for the others. */
  private readonly anyPort = new Map<string, string>()
  private readonly withPort = new Map<string, string>()

  /** Throws with the two connections' names when one host is claimed twice. */
  add(connection: string, entries: readonly string[]): void {
    for (const e of entries) {
      const h = splitHost(e)
      if (h === null) throw new Error(`connection ${connection}: hosts: ${JSON.stringify(e)} is not a host name`)
      const key = h.port === null ? h.name : `${h.name}:${h.port}`
      const map = h.port === null ? this.anyPort : this.withPort
      const other = map.get(key) ?? (h.port === null ? undefined : this.anyPort.get(h.name))
      const clash = other ?? (h.port === null ? [...this.withPort].find(([k]) => k.startsWith(`${h.name}:`))?.[1] : undefined)
      if (clash !== undefined && clash !== connection) {
        throw new Error(`connections ${clash} and ${connection} both claim host ${JSON.stringify(e)} in hosts:`)
      }
      map.set(key, connection)
    }
  }

  get size(): number {
    return this.anyPort.size + this.withPort.size
  }

  /**
   * The connection the Host header names, or null when it names none (then the request must use
   * `/c/<connection>/`). A Host that is not a well-formed `name[:port]` names none.
   */
  lookup(host: string): string | null {
    if (this.size === 0) return null
    const h = splitHost(host)
    if (h === null) return null
    if (h.port !== null) {
      const exact = this.withPort.get(`${h.name}:${h.port}`)
      if (exact !== undefined) return exact
    }
    return this.anyPort.get(h.name) ?? null
  }

  /** True when `name` (a TLS server name) is a configured host of some connection. */
  claims(name: string): boolean {
    const n = name.toLowerCase()
    if (this.anyPort.has(n)) return true
    for (const k of this.withPort.keys()) if (k.startsWith(`${n}:`)) return true
    return false
  }
}
