// Where a policy's Rego `mask` entries can come from, decided from its source: the actions and
// connections a `mask` rule can fire for.
//
// Why: a plugin that must treat a whole session differently while masking may apply to it (the
// remote-MCP plugin withholds the upstream's free text and refuses its sampling requests there)
// needs to know before any decision whether one can carry a mask obligation. masking.yaml says so
// exactly (a rule's `connections:`); a Rego rule says so only in its body. The default policy masks
// Kubernetes Secrets (`input.action == "kube.request"`), which must not make every other session
// count as masked.
//
// The check is conservative, like reads.ts: each body of each `mask` rule of package `gatehouse` is
// read for top-level conditions `input.action == "<literal>"` (or `in {…}` of literals) and
// `input.connection.name == "<literal>"`; a body without an action condition can fire for any
// action, one without a connection condition for any connection. Anything the scanner does not
// understand (a `mask` defined by value, by `else`, as a function or a partial object, a module of a
// package under `gatehouse.mask`, a body that is not a braced block) counts as "anywhere". A false
// "anywhere" only costs the stricter treatment; a false "not here" would let a masked session be
// treated as unmasked.

/** Where mask entries may come from: each entry a body's conditions (null: any value). */
export type MaskScope = readonly { readonly actions: ReadonlySet<string> | null; readonly connections: ReadonlySet<string> | null }[]

/** Matches everything. */
const ANYWHERE: MaskScope = [{ actions: null, connections: null }]

type Tok = { readonly t: string; readonly nl: boolean }

const IDENT_START = /[A-Za-z_]/
const IDENT_PART = /[A-Za-z0-9_]/

/** Tokens with comments dropped; strings kept whole (with their quotes); `nl`: a newline came before. */
function tokenize(src: string): Tok[] {
  const out: Tok[] = []
  let nl = true
  let i = 0
  const n = src.length
  while (i < n) {
    const c = src[i] as string
    if (c === '\n') {
      nl = true
      i++
      continue
    }
    if (c === ' ' || c === '\t' || c === '\r') {
      i++
      continue
    }
    if (c === '#') {
      while (i < n && src[i] !== '\n') i++
      continue
    }
    let j = i + 1
    if (c === '"') {
      while (j < n && src[j] !== '"' && src[j] !== '\n') j += src[j] === '\\' ? 2 : 1
      j++
    } else if (c === '`') {
      const end = src.indexOf('`', i + 1)
      j = end < 0 ? n : end + 1
    } else if (IDENT_START.test(c)) {
      while (j < n && IDENT_PART.test(src[j] as string)) j++
    } else if ((c === ':' || c === '=' || c === '!' || c === '<' || c === '>') && src[j] === '=') j++
    out.push({ t: src.slice(i, j), nl })
    nl = false
    i = j
  }
  return out
}

const OPEN: Record<string, string> = { '{': '}', '[': ']', '(': ')' }

/** The index just after the balanced group opening at `i`. */
function skipGroup(toks: readonly Tok[], i: number): number {
  let depth = 0
  for (let k = i; k < toks.length; k++) {
    const t = (toks[k] as Tok).t
    if (t in OPEN) depth++
    else if (t === '}' || t === ']' || t === ')') {
      depth--
      if (depth === 0) return k + 1
    }
  }
  return toks.length
}

function literal(t: string | undefined): string | null {
  if (t === undefined || !t.startsWith('"') || !t.endsWith('"') || t.length < 2) return null
  try {
    const v: unknown = JSON.parse(t)
    return typeof v === 'string' ? v : null
  } catch {
    return null
  }
}

/** `input.<path>` spelt out at tokens[i…]; the index after it, or -1. */
function inputRef(toks: readonly Tok[], i: number, path: readonly string[]): number {
  if (toks[i]?.t !== 'input') return -1
  let k = i + 1
  for (const p of path) {
    if (toks[k]?.t !== '.' || toks[k + 1]?.t !== p) return -1
    k += 2
  }
  return k
}

/** The literals of `{"a", "b"}` or `["a", "b"]` at tokens[i…] with the index after; null if not only literals. */
function literalSet(toks: readonly Tok[], i: number): { values: Set<string>; end: number } | null {
  const open = toks[i]?.t
  if (open !== '{' && open !== '[') return null
  const close = open === '{' ? '}' : ']'
  const values = new Set<string>()
  let k = i + 1
  for (;;) {
    const v = literal(toks[k]?.t)
    if (v === null) return null
    values.add(v)
    k++
    if (toks[k]?.t === ',') k++
    if (toks[k]?.t === close) return { values, end: k + 1 }
  }
}

/** A condition `input.<path> == "x"`, `"x" == input.<path>` or `input.<path> in {…}` that is a whole conjunct. */
function condition(conj: readonly Tok[], path: readonly string[]): Set<string> | null {
  const end = inputRef(conj, 0, path)
  if (end > 0) {
    if (conj[end]?.t === '==' && end + 2 === conj.length) {
      const v = literal(conj[end + 1]?.t)
      return v === null ? null : new Set([v])
    }
    if (conj[end]?.t === 'in') {
      const s = literalSet(conj, end + 1)
      return s && s.end === conj.length ? s.values : null
    }
    return null
  }
  const v = literal(conj[0]?.t)
  if (v !== null && conj[1]?.t === '==' && inputRef(conj, 2, path) === conj.length) return new Set([v])
  return null
}

/** The conditions of one braced body (tokens between its braces). */
function bodyScope(body: readonly Tok[]): MaskScope[number] {
  let actions: Set<string> | null = null
  let connections: Set<string> | null = null
  const conjuncts: Tok[][] = [[]]
  let depth = 0
  for (const tok of body) {
    const cur = conjuncts.at(-1) as Tok[]
    // A line after one that ends in an operator continues its expression.
    const ended = cur.length > 0 && /[A-Za-z0-9_"`)\]}]$/.test((cur.at(-1) as Tok).t)
    if (depth === 0 && ((tok.nl && ended) || tok.t === ';') && cur.length > 0) conjuncts.push([])
    if (tok.t === ';') continue
    if (tok.t in OPEN) depth++
    else if (tok.t === '}' || tok.t === ']' || tok.t === ')') depth--
    ;(conjuncts.at(-1) as Tok[]).push(tok)
  }
  const narrow = (prev: Set<string> | null, next: Set<string>): Set<string> =>
    prev === null ? next : new Set([...prev].filter((x) => next.has(x)))
  for (const c of conjuncts) {
    const a = condition(c, ['action'])
    if (a) actions = narrow(actions, a)
    const conn = condition(c, ['connection', 'name'])
    if (conn) connections = narrow(connections, conn)
  }
  return { actions, connections }
}

/** The scope of one module's `mask` rules; ANYWHERE when any is not understood. */
function moduleScope(src: string): MaskScope {
  const toks = tokenize(src)
  const out: MaskScope[number][] = []
  let pkg = ''
  let i = 0
  while (i < toks.length) {
    const tok = toks[i] as Tok
    if (tok.t === 'package' && tok.nl) {
      let k = i + 1
      const parts: string[] = []
      while (k < toks.length && !(toks[k] as Tok).nl) parts.push((toks[k++] as Tok).t)
      pkg = parts.join('')
      // A package under data.gatehouse.mask makes mask an object of its own rules.
      if (pkg === 'gatehouse.mask' || pkg.startsWith('gatehouse.mask.') || pkg.startsWith('gatehouse["mask"]')) return ANYWHERE
      i = k
      continue
    }
    if (tok.t in OPEN) {
      i = skipGroup(toks, i)
      continue
    }
    if (pkg !== 'gatehouse' || tok.t !== 'mask') {
      i++
      continue
    }
    // `mask` at the top level of package gatehouse: a rule of it, unless part of another rule's
    // head (`x := mask` cannot be at a statement's start; `default mask` is).
    if (!tok.nl) return ANYWHERE
    let k = i + 1
    const next = toks[k]?.t
    if (next === 'contains') {
      k++
      const term = toks[k]?.t
      if (term === undefined) return ANYWHERE
      if (term in OPEN) k = skipGroup(toks, k)
      else {
        k++
        while (toks[k]?.t === '.' || toks[k]?.t === '[') k = toks[k]?.t === '.' ? k + 2 : skipGroup(toks, k)
      }
    } else if (next === '[') {
      k = skipGroup(toks, k)
    } else return ANYWHERE
    if (toks[k]?.t === 'if') k++
    if (toks[k]?.t !== '{') return ANYWHERE
    // One or more bodies (`{…} {…}` is an OR of bodies); `else` is not understood.
    while (toks[k]?.t === '{') {
      const end = skipGroup(toks, k)
      out.push(bodyScope(toks.slice(k + 1, end - 1)))
      k = end
    }
    if (toks[k]?.t === 'else') return ANYWHERE
    i = k
  }
  return out
}

/** Where the modules' `mask` entries may come from. */
export function regoMaskScope(modules: readonly string[]): MaskScope {
  const out: MaskScope[number][] = []
  for (const m of modules) {
    const s = moduleScope(m)
    if (s === ANYWHERE) return ANYWHERE
    out.push(...s)
  }
  return out
}

/** Whether a mask entry may come with a decision of one of `actions` on connection `connection`. */
export function maskMayApply(scope: MaskScope, actions: readonly string[], connection: string): boolean {
  for (const s of scope) {
    if (s.connections !== null && !s.connections.has(connection)) continue
    if (s.actions === null || actions.some((a) => s.actions?.has(a))) return true
  }
  return false
}
