// What a Kubernetes API request asks for, read from its path, method and query exactly as the API
// server reads it (k8s.io/apiserver/pkg/endpoints/request/requestinfo.go, v1.34): verb, API group
// and version, resource, subresource, namespace and name. Paths the API server could read in a
// way this parser might not (encoded slashes, dot or empty segments, escapes of anything but
// plain characters) are refused, never guessed: the canonical path that was judged is the one
// sent upstream.

/** Why a request target was refused: a 400 with this message. */
export class KubePathError extends Error {}

export interface KubeRequestInfo {
  /** False for discovery and other non-resource paths (`/api`, `/version`, `/openapi/v2`, `/healthz`). */
  readonly resource_request: boolean
  /** The canonical path: what was parsed and what the API server receives. */
  readonly path: string
  /**
   * get, list, watch, create, update, patch, delete, deletecollection (resource requests: the API
   * server's verbs; `proxy` and `watch` also by path prefix), or the lower-case method for
   * non-resource paths.
   */
  readonly verb: string
  /** `api` or `apis` (empty for non-resource requests). */
  readonly api_prefix: string
  /** `""` for the core group. */
  readonly group: string
  readonly version: string
  readonly resource: string
  readonly subresource: string
  /** `""` for cluster-scoped resources (and for the namespace objects themselves). */
  readonly namespace: string
  readonly name: string
  /** The path segments after the subresource (`/proxy/<path>` of a service or pod). */
  readonly rest: readonly string[]
}

const SPECIAL_VERBS = new Set(['proxy', 'watch'])
const SPECIAL_VERBS_NO_SUBRESOURCES = new Set(['proxy'])
const NAMESPACE_SUBRESOURCES = new Set(['status', 'finalize'])
/** Characters a canonical path segment carries raw; anything else is sent percent-encoded. */
const SEGMENT_RAW = /^[A-Za-z0-9\-._~!$&'()*+,=:@]$/

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48
  if (c >= 65 && c <= 70) return c - 55
  if (c >= 97 && c <= 102) return c - 87
  return -1
}

/**
 * The decoded segments of a raw path, or a KubePathError. The API server splits the decoded path
 * on `/` after trimming slashes at both ends; anything where a decoded byte could change that split
 * or where another reader would resolve differently is refused.
 */
export function pathSegments(raw: string): string[] {
  if (!raw.startsWith('/')) throw new KubePathError('the path must start with "/"')
  if (!/^[\x21-\x7e]*$/.test(raw)) throw new KubePathError('the path has characters that must be percent-encoded')
  if (raw.includes(';')) throw new KubePathError('the path has ";", which the gateway refuses')
  if (raw.includes('\\')) throw new KubePathError('the path has "\\", which the gateway refuses')
  const body = raw.length > 1 && raw.endsWith('/') ? raw.slice(1, -1) : raw.slice(1)
  if (body === '') return []
  const segments: string[] = []
  for (const seg of body.split('/')) {
    if (seg === '') throw new KubePathError('the path has an empty segment ("//")')
    let out = ''
    for (let i = 0; i < seg.length; i++) {
      const ch = seg[i] as string
      if (ch !== '%') {
        out += ch
        continue
      }
      const hi = hexValue(seg.charCodeAt(i + 1))
      const lo = hexValue(seg.charCodeAt(i + 2))
      if (hi < 0 || lo < 0) throw new KubePathError('the path has a malformed percent-escape')
      const b = hi * 16 + lo
      i += 2
      // An escape may only stand for a character that could be sent raw: never "/", "%", "\",
      // controls or non-ASCII, so the decoded path splits exactly as the raw one.
      const c = String.fromCharCode(b)
      if (b >= 0x80 || !SEGMENT_RAW.test(c)) {
        throw new KubePathError(`the path has an encoded ${JSON.stringify(c)}, which the gateway refuses`)
      }
      out += c
    }
    if (out === '.' || out === '..') throw new KubePathError('the path has a "." or ".." segment')
    segments.push(out)
  }
  return segments
}

/** The canonical path of decoded segments (a trailing slash is dropped: the API server ignores it). */
export function canonicalPath(segments: readonly string[]): string {
  return `/${segments.join('/')}`
}

/** The first value of a query parameter as Go's url.Values reads it. */
export function firstQueryValue(query: URLSearchParams, name: string): string | undefined {
  const v = query.get(name)
  return v === null ? undefined : v
}

/** Go's url.ParseQuery skips pairs with ";" or bad escapes where URLSearchParams keeps them: refuse those. */
export function checkKubeQuery(raw: string): URLSearchParams {
  if (!/^[\x21-\x7e]*$/.test(raw)) throw new KubePathError('the query has characters that must be percent-encoded')
  if (raw.includes(';')) throw new KubePathError('the query has ";", which the gateway refuses')
  for (let i = raw.indexOf('%'); i >= 0; i = raw.indexOf('%', i + 1)) {
    if (hexValue(raw.charCodeAt(i + 1)) < 0 || hexValue(raw.charCodeAt(i + 2)) < 0) {
      throw new KubePathError('the query has a malformed percent-escape')
    }
  }
  return new URLSearchParams(raw)
}

/** `metadata.name` of a field selector that requires it exactly (`metadata.name=x` or `==x`), as the API server takes it. */
function nameFromFieldSelector(selector: string): string {
  // Escaped selectors (`\,` `\=`) are not read: no name is taken, so the request is judged as a
  // list of every name (the broader reading).
  if (selector.includes('\\')) return ''
  for (const term of selector.split(',')) {
    const t = term.trim()
    let m = /^metadata\.name\s*==?\s*(.*)$/.exec(t)
    if (m && !t.startsWith('metadata.name!=')) {
      const name = (m[1] as string).trim()
      // path.IsValidPathSegmentName
      if (name === '.' || name === '..' || name.includes('/') || name.includes('%')) return ''
      return name
    }
    m = null
  }
  return ''
}

/** Parses a Kubernetes API request (method, raw path, raw query) into what policy judges. */
export function parseKubeRequest(method: string, rawPath: string, rawQuery: string): KubeRequestInfo {
  const segments = pathSegments(rawPath)
  const query = checkKubeQuery(rawQuery)
  const path = canonicalPath(segments)
  const nonResource: KubeRequestInfo = {
    resource_request: false,
    path,
    verb: method.toLowerCase(),
    api_prefix: '',
    group: '',
    version: '',
    resource: '',
    subresource: '',
    namespace: '',
    name: '',
    rest: [],
  }
  let parts = segments
  if (parts.length < 3) return nonResource
  const prefix = parts[0] as string
  if (prefix !== 'api' && prefix !== 'apis') return nonResource
  parts = parts.slice(1)
  let group = ''
  if (prefix === 'apis') {
    if (parts.length < 3) return nonResource
    group = parts[0] as string
    parts = parts.slice(1)
  }
  const version = parts[0] as string
  parts = parts.slice(1)
  let verb: string
  if (SPECIAL_VERBS.has(parts[0] as string)) {
    if (parts.length < 2) throw new KubePathError('unable to determine kind and namespace from the path')
    verb = parts[0] as string
    parts = parts.slice(1)
  } else {
    verb = { POST: 'create', GET: 'get', HEAD: 'get', PUT: 'update', PATCH: 'patch', DELETE: 'delete' }[method.toUpperCase()] ?? ''
  }
  let namespace = ''
  if (parts[0] === 'namespaces') {
    if (parts.length > 1) {
      namespace = parts[1] as string
      if (parts.length > 2 && !NAMESPACE_SUBRESOURCES.has(parts[2] as string)) parts = parts.slice(2)
    }
  }
  let resource = ''
  let name = ''
  let subresource = ''
  if (parts.length >= 3 && !SPECIAL_VERBS_NO_SUBRESOURCES.has(verb)) subresource = parts[2] as string
  if (parts.length >= 2) name = parts[1] as string
  if (parts.length >= 1) resource = parts[0] as string
  if (name === '' && verb === 'get') {
    const watch = firstQueryValue(query, 'watch')
    verb = watch !== undefined && watch !== '0' && watch.toLowerCase() !== 'false' ? 'watch' : 'list'
    const fs = firstQueryValue(query, 'fieldSelector')
    if (fs !== undefined) name = nameFromFieldSelector(fs)
  }
  if (name === '' && verb === 'delete') verb = 'deletecollection'
  return {
    resource_request: true,
    path,
    verb,
    api_prefix: prefix,
    group,
    version,
    resource,
    subresource,
    namespace,
    name,
    rest: parts.slice(subresource === '' ? 2 : 3),
  }
}

/** Percent-encodes a decoded segment for the upstream request line. */
export function encodeSegment(s: string): string {
  let out = ''
  for (const c of s) out += SEGMENT_RAW.test(c) ? c : `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`
  return out
}
