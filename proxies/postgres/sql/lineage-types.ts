// What column lineage reports for a statement (StatementLineage) and what it needs to know of the
// database (LineageCatalog): the contract between lineage.ts and the PostgreSQL proxy's masking.

export interface RelationInfo {
  readonly schema: string
  readonly name: string
  readonly kind: 'table' | 'view' // materialized views and foreign tables: 'view' / 'table'
  readonly columns: readonly string[] // in attnum order, dropped columns excluded
  /** Views and materialized views: the SELECT that defines them, names schema-qualified. */
  readonly definition: string | null
  /** A foreign table: its rows come from outside this database (another server, a file, a program
   *  the server runs), so what its columns hold and what reading it runs are unknown. */
  readonly foreign?: boolean
  /** Row-level security applies to the session's role: the expressions (USING and WITH CHECK, of
   *  every policy and command, strictest reading) the server evaluates over its rows, deparsed with
   *  every name schema-qualified; present (maybe empty) only when RLS applies. */
  readonly policies?: readonly string[]
}
export interface LineageCatalog {
  /** A relation as the server would resolve it (unqualified: through the session's search_path); null if unknown. */
  relation(schema: string | null, name: string): RelationInfo | null
  /** True when a function of this (unqualified, lower-case) name exists outside pg_catalog. The name
   *  is passed as parsed (unquoted names are lower-case; a quoted "LOWER" stays as is). */
  isUserFunction(name: string): boolean
  /** True when an operator of this name exists outside pg_catalog (its function may run anything). */
  isUserOperator?(name: string): boolean
  /** The same catalog seen through another search_path (a SET search_path earlier in the same query). */
  withSearchPath?(searchPath: string): LineageCatalog
  /** Every relation of this name in any schema: an unqualified name the path does not resolve may
   *  still be one of them (a search_path the caller did not follow), so its columns count too. */
  relationsNamed?(name: string): readonly RelationInfo[]
  /** Casts whose function is user-defined in a language that can run SQL (`source -> target`): the
   *  server may call one implicitly wherever a value changes type, so a computed value may reach it. */
  userCasts?(): readonly string[]
}
/** 'schema.table.column'. For a relation the catalog does not know: the schema as written, or '?'. */
export type Source = string
export interface OutputLineage {
  /** The column's name as PostgreSQL labels it where cheap (alias, column, function name, ?column?). */
  readonly name: string
  /** Every base column the value derives from (through views: the view column AND its base columns). */
  readonly sources: readonly Source[]
  /** The one base column projected as is (alias allowed; a cast or any function makes it derived); else null. */
  readonly direct: Source | null
  /** Every column projected as is on the way (view columns and the base column); empty when derived. */
  readonly directVia: readonly Source[]
  /** Why the value may depend on data the gateway cannot see; null otherwise. */
  readonly opaque: string | null
  /** `*` over a relation the catalog does not know: stands for one or more columns the caller
   *  resolves from RowDescription; `sources` then empty. */
  readonly unknownStar?: string
}
export interface LineageWrite {
  /** 'schema.relation.column' where the column is known, else 'schema.relation' (or 'file:…', 'program'). */
  readonly target: string
  readonly sources: readonly Source[]
  /** The written value may carry data the analysis cannot see (a user-defined function…). */
  readonly opaque: string | null
}
export interface LineageCall {
  /** The function's name as parsed (unquoted names lower-case). */
  readonly name: string
  /** The schema as written, or null when unqualified. */
  readonly schema: string | null
  /** Every base column its arguments derive from. */
  readonly sources: readonly Source[]
  readonly opaque: string | null
}
/** A column or expression that DDL attaches to a relation or type (index, constraint, statistics,
 *  default, domain check): the server evaluates it over stored rows, now and on later writes. */
export interface LineageDdl {
  readonly what: string
  readonly sources: readonly Source[]
  /** Code the analysis cannot see into runs there (a user-defined function, a new operator…). */
  readonly opaque: string | null
}
export interface StatementLineage {
  /** The statement's own text. */
  readonly sql: string
  /** Output columns in order; null when the statement returns no rows. */
  readonly outputs: readonly OutputLineage[] | null
  /** Every relation read (schema.name). */
  readonly relations: readonly string[]
  /** Base columns read outside output values (WHERE, JOIN, GROUP BY, ORDER BY, window, LIMIT…). */
  readonly predicates: readonly Source[]
  /** Values that flow into stored data, each with its target and the sources of what flows in. */
  readonly writes: readonly LineageWrite[]
  /** Opaque calls anywhere in the statement (also in WHERE or FROM): code that may read or write anything. */
  readonly opaqueCalls: readonly string[]
  /** Function calls whose arguments carry table data (or an opaque value), anywhere in the statement. */
  readonly calls?: readonly LineageCall[]
  /** Base columns whose values something computes on (a function, an operator, a cast, CASE, a
   *  whole row…), anywhere in the statement: any such expression may fail for some values only. A
   *  column passed through as is, or only counted (`count(col)`), is not listed. */
  readonly computed?: readonly Source[]
  /** What DDL attaches to relations or types (see LineageDdl). */
  readonly ddl?: readonly LineageDdl[]
  /** `COPY … (ENCODING …)`: the encoding named (the fields are then split in it, not in UTF-8). */
  readonly copyEncoding?: string
  /** Functions this statement creates or renames (by their new name): later statements must treat
   *  the name as user-defined before any catalog snapshot knows it. */
  readonly definesFunctions?: readonly string[]
  /** Non-null when lineage could not be established; the caller fails closed. */
  readonly unresolved: string | null
  readonly declare?: string
  readonly fetch?: string
  readonly prepare?: string
  readonly execute?: string
  readonly copy?: {
    readonly format: 'text' | 'csv' | 'binary'
    readonly delimiter: string
    readonly null: string
    readonly quote: string
    readonly escape: string
    readonly header: boolean
  }
}
