// Whether a policy can read the statement text (`input.command.sql`), decided from its Rego source.
//
// Why: a statement's facts (kind, tables, functions, …) are the same for every literal value
// (proxies/postgres/sql/index.ts caches them by shape), so a policy that never looks at the text itself
// decides `SELECT … WHERE aid = 1` and `… aid = 2` alike, and the engine can key its decision cache
// on the input without the text (engine.ts). That saves the policy evaluation on almost every
// statement of a busy session.
//
// The check is conservative: it answers "reads the text" for any reference to `input` that could
// reach `input.command.sql` — `input` or `input.command` as a whole (passed to a function, walked,
// imported, marshalled), a computed key (`input[k]`, `input.command[k]`), or the path itself. Only
// references that name a top-level key other than `command`, or a key of `command` other than
// `sql`, are known not to. Comments are skipped; string contents are skipped too, since a string is
// not a reference. A false "reads" only costs speed; a false "does not read" would serve a cached
// decision made for another text, so anything the scanner does not understand counts as a read.

const IDENT_START = /[A-Za-z_]/
const IDENT_PART = /[A-Za-z0-9_]/

/** True when any of the Rego module texts may read `input.command.sql`. */
export function regoMayReadSqlText(modules: readonly string[]): boolean {
  return modules.some(moduleMayReadSqlText)
}

function moduleMayReadSqlText(src: string): boolean {
  let i = 0
  const n = src.length
  let prevSignificant = ''
  while (i < n) {
    const c = src[i] as string
    if (c === '#') {
      while (i < n && src[i] !== '\n') i++
      continue
    }
    if (c === '"') {
      i = skipString(src, i)
      prevSignificant = '"'
      continue
    }
    if (c === '`') {
      const end = src.indexOf('`', i + 1)
      i = end < 0 ? n : end + 1
      prevSignificant = '`'
      continue
    }
    if (IDENT_START.test(c)) {
      let j = i + 1
      while (j < n && IDENT_PART.test(src[j] as string)) j++
      const word = src.slice(i, j)
      // `x.input` is a field named input, not the input document.
      if (word === 'input' && prevSignificant !== '.' && refMayReachSql(src, j) && !objectGetOfCommandKey(src, i, j)) return true
      i = j
      prevSignificant = 'a'
      continue
    }
    if (c !== ' ' && c !== '\t' && c !== '\n' && c !== '\r') prevSignificant = c
    i++
  }
  return false
}

/** Index just past the closing quote of the string starting at `start` (or the end of the text). */
function skipString(src: string, start: number): number {
  let i = start + 1
  while (i < src.length) {
    const c = src[i]
    if (c === '\\') i += 2
    else if (c === '"') return i + 1
    else if (c === '\n') return i
    else i++
  }
  return i
}

/** Reads the path after `input` at `at`: up to two segments, each `.name` or `["name"]`. */
function refMayReachSql(src: string, at: number): boolean {
  const first = segment(src, at)
  if (first === null || first.name === null) return true
  if (first.name !== 'command') return false
  const second = segment(src, first.end)
  if (second === null || second.name === null) return true
  return second.name === 'sql'
}

/**
 * `object.get(input.command, "<key>", …)` with a literal key other than `sql`: one member of the
 * command, read by name (the usual way to default a member that may be missing). `input` spans
 * `start`..`end`. Any other form (a path array, a computed key) is left to the caller's answer.
 */
function objectGetOfCommandKey(src: string, start: number, end: number): boolean {
  let i = start - 1
  while (i >= 0 && /\s/.test(src[i] as string)) i--
  if (src[i] !== '(') return false
  i--
  while (i >= 0 && /\s/.test(src[i] as string)) i--
  const at = i - 'object.get'.length + 1
  if (at < 0 || src.slice(at, i + 1) !== 'object.get' || /[A-Za-z0-9_.]/.test(src[at - 1] ?? '')) return false
  const first = segment(src, end)
  if (first === null || first.name !== 'command' || segment(src, first.end) !== null) return false
  const m = /^\s*,\s*"([A-Za-z0-9_]*)"\s*,/.exec(src.slice(first.end, first.end + 120))
  return m !== null && m[1] !== 'sql'
}

/** One path segment: its name (null when computed), or null when there is none. */
function segment(src: string, at: number): { name: string | null; end: number } | null {
  let i = at
  while (src[i] === ' ' || src[i] === '\t') i++
  if (src[i] === '.') {
    i++
    while (src[i] === ' ' || src[i] === '\t') i++
    const start = i
    if (!IDENT_START.test(src[i] ?? '')) return { name: null, end: i }
    while (i < src.length && IDENT_PART.test(src[i] as string)) i++
    return { name: src.slice(start, i), end: i }
  }
  if (src[i] === '[') {
    i++
    while (src[i] === ' ' || src[i] === '\t') i++
    const m = /^"([A-Za-z0-9_]*)"\s*\]/.exec(src.slice(i, i + 80))
    if (!m) return { name: null, end: i }
    return { name: m[1] as string, end: i + m[0].length }
  }
  return null
}
