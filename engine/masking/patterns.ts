// Column patterns (docs/masking.md, "Masking rules"): a pattern is matched against the output column's
// source, `schema.table.column`, from the right. `ssn` is any column named ssn, `users.ssn` that
// column of any `users` table, `public.users.ssn` exactly that one. `*` alone is any one segment;
// inside a segment it matches any run of characters in that segment (`password*` matches
// `password_hash`), never across a dot.
//
// Names compare case-insensitively: PostgreSQL folds unquoted names to lower case, and an operator
// writing `Users.Email` means the same column. A quoted "Email" next to an email column is then
// masked by both patterns, which errs on the side of masking.

interface Compiled {
  /** Segments, last first; a RegExp for a segment with a `*` inside, else the lower-cased name. */
  readonly segments: readonly (string | RegExp | null)[]
}

const cache = new Map<string, Compiled>()
const CACHE_MAX = 4096

function compile(pattern: string): Compiled {
  let c = cache.get(pattern)
  if (c !== undefined) return c
  const segments = pattern
    .split('.')
    .reverse()
    .map((s): string | RegExp | null => {
      if (s === '*') return null
      if (!s.includes('*')) return s.toLowerCase()
      const body = s
        .split('*')
        .map((part) => part.replace(/[\\^$+?.()|[\]{}]/g, '\\$&'))
        .join('[^.]*')
      return new RegExp(`^${body}$`, 'i')
    })
  c = { segments }
  if (cache.size >= CACHE_MAX) cache.clear()
  cache.set(pattern, c)
  return c
}

/** Whether `pattern` matches the column `qualified` (`schema.table.column`). */
export function columnMatches(pattern: string, qualified: string): boolean {
  if (pattern.length === 0) return false
  const { segments } = compile(pattern)
  const names = qualified.split('.')
  if (segments.length > names.length) return false
  for (let i = 0; i < segments.length; i++) {
    const want = segments[i] as string | RegExp | null
    const have = names[names.length - 1 - i] as string
    if (want === null) continue
    if (typeof want === 'string') {
      if (want !== have.toLowerCase()) return false
    } else if (!want.test(have)) return false
  }
  return true
}
