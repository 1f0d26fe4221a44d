// The search_path of an open transaction block, as the server keeps it: the path in effect, the
// one a COMMIT would keep (SET LOCAL changes only the first), and both as each savepoint saw them.
// statements.ts follows it from the server's answers; masking resolves names under it.

/** A savepoint and the paths when it was made. */
interface SavedPath {
  readonly name: string
  readonly current: string[]
  readonly kept: string[]
}

export interface ExactPath {
  /** The path before the transaction (block or implicit) began. */
  start: string[]
  current: string[]
  kept: string[]
  readonly savepoints: SavedPath[]
}

/** Exact tracking from a session's possible paths: only when there is one. */
export function exactFrom(base: readonly string[][]): ExactPath | null {
  const only = base.length === 1 ? (base[0] as string[]) : null
  return only === null ? null : { start: only, current: only, kept: only, savepoints: [] }
}

/**
 * A transaction statement completed with this command tag: COMMIT (its tag is ROLLBACK when the
 * block had failed), ROLLBACK, PREPARE TRANSACTION, SAVEPOINT, RELEASE, ROLLBACK TO, each also
 * … AND CHAIN. The server's own rules for settings: a COMMIT keeps the SETs, a ROLLBACK undoes
 * them, a ROLLBACK TO restores what the savepoint saw, SET LOCAL ends with its block. Returns
 * false when the path can no longer be told (a savepoint the gateway did not see made).
 */
export function followTransaction(x: ExactPath, t: { readonly kind: string; readonly savepoint: string | null }, tag: string): boolean {
  const name = t.savepoint
  if (t.kind === 'commit' || t.kind === 'prepare' || t.kind === 'rollback') {
    if (t.kind !== 'rollback' && tag !== 'ROLLBACK') x.start = x.kept
    x.current = x.start
    x.kept = x.start
    x.savepoints.length = 0
    return true
  }
  if (t.kind === 'savepoint' && name !== null) {
    x.savepoints.push({ name, current: x.current, kept: x.kept })
    return true
  }
  if (t.kind !== 'release' && t.kind !== 'rollback_to') return true
  let at = -1
  for (let i = x.savepoints.length - 1; i >= 0 && at < 0; i--) if (x.savepoints[i]?.name === name) at = i
  if (at < 0) return false
  const sp = x.savepoints[at] as SavedPath
  if (t.kind === 'release') x.savepoints.length = at
  else {
    // ROLLBACK TO keeps the savepoint itself and drops the ones after it.
    x.savepoints.length = at + 1
    x.current = sp.current
    x.kept = sp.kept
  }
  return true
}
