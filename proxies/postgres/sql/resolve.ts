// Resolves unqualified relation names the way the server does: through the session's search_path
// (with "$user" and the implicit pg_catalog), against a snapshot of which relations exist in which
// schema. Where the session's path is uncertain (a SET inside a transaction that may still roll
// back), every candidate path is tried and every distinct resolution is reported: a policy then sees
// each table the statement could read.

/** A relation as written: schema null when unqualified (resolved later through search_path). */
export interface RelName {
  readonly schema: string | null
  readonly name: string
}

export interface Catalog {
  /** Schema names that exist. */
  readonly schemas: ReadonlySet<string>
  /** `schema.relation` for every relation (table, view, matview, foreign table, partitioned). */
  readonly relations: ReadonlySet<string>
}

/** Parses a search_path value (`"$user", public, "My Schema"`) into schema names. */
export function parseSearchPath(value: string): string[] {
  const out: string[] = []
  const re = /\s*(?:"((?:[^"]|"")*)"|([^,\s]+))\s*(?:,|$)/g
  let m: RegExpExecArray | null = re.exec(value)
  while (m !== null && m[0] !== '') {
    out.push(m[1] !== undefined ? m[1].replace(/""/g, '"') : (m[2] ?? '').toLowerCase())
    m = re.exec(value)
  }
  return out
}

/** The schemas actually searched, in order: pg_catalog first unless placed explicitly. */
export function effectivePath(path: readonly string[], user: string): string[] {
  const names = path.map((s) => (s === '$user' ? user : s))
  return names.includes('pg_catalog') ? names : ['pg_catalog', ...names]
}

export function qualify(rel: RelName, paths: readonly (readonly string[])[], user: string, catalog: Catalog | null): string[] {
  if (rel.schema !== null) return [`${rel.schema}.${rel.name}`]
  const out = new Set<string>()
  for (const path of paths) {
    const eff = effectivePath(path, user)
    let found: string | null = null
    if (catalog) {
      for (const s of eff) {
        if (catalog.relations.has(`${s}.${rel.name}`)) {
          found = `${s}.${rel.name}`
          break
        }
      }
    }
    if (!found) {
      // Not in the snapshot (created since, or missing): the first existing schema of the path is
      // where the server would create it, and the best guess of where it is. Without a snapshot,
      // "$user" (a schema that rarely exists) is passed over.
      const exists = (s: string): boolean => (catalog ? catalog.schemas.has(s) : !(path.includes('$user') && s === user && eff.length > 2))
      const first = eff.find((s) => s !== 'pg_catalog' && exists(s)) ?? eff[eff.length - 1] ?? 'public'
      found = `${first}.${rel.name}`
    }
    out.add(found)
  }
  return [...out]
}
