// What a completed statement changes in the session the server keeps (search_path, prepared
// statements and cursors, routines that may shadow built-ins, savepoints), read from its facts when
// it is judged and applied when its CommandComplete arrives (results.ts).

import { parseSearchPath, type StatementFacts } from './sql/index.js'

/** What a completed statement changes in the session, applied when its CommandComplete arrives. */
export interface StatementEffect {
  readonly prepare: { readonly name: string; readonly inner: StatementFacts } | null
  readonly deallocate: { readonly name: string | null } | null
  readonly searchPath: { readonly path: string[] | 'initial'; readonly local: boolean } | null
  readonly ddl: boolean
  readonly createsRoutine: StatementFacts['createsRoutine']
  /** A cursor name SQL declared or closed (null name: all of them, as CLOSE ALL or DISCARD ALL). */
  readonly cursor: { readonly name: string | null } | null
  /** SAVEPOINT, RELEASE, ROLLBACK TO (with the name), or a COMMIT/ROLLBACK AND CHAIN. */
  readonly transaction: { readonly kind: string; readonly savepoint: string | null; readonly chain: boolean } | null
}

export function effectOf(f: StatementFacts): StatementEffect {
  let searchPath: StatementEffect['searchPath'] = null
  for (const s of f.settings) {
    if (s.name === 'search_path') searchPath = { path: s.value === null ? 'initial' : parseSearchPath(s.value), local: s.local }
    if (s.name === 'all') searchPath = { path: 'initial', local: false }
  }
  return {
    prepare: f.prepare,
    deallocate: f.deallocate,
    searchPath,
    ddl: f.action === 'sql.ddl' || f.action === 'sql.admin',
    createsRoutine: f.createsRoutine,
    cursor:
      f.cursor?.op === 'declare' || f.cursor?.op === 'close'
        ? { name: f.cursor.name }
        : f.kind === 'discard' && f.deallocate !== null
          ? { name: null }
          : null,
    transaction:
      f.transaction && ['commit', 'rollback', 'prepare', 'savepoint', 'release', 'rollback_to'].includes(f.kind)
        ? { kind: f.kind, savepoint: f.transaction.savepoint, chain: f.transaction.chain }
        : null,
  }
}
