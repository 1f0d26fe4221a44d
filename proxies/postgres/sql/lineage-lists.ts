// The names column lineage treats specially: built-ins whose result hides where it came from,
// functions that store or send their arguments (sinks), relations that expose other tables'
// data, and statements that touch no column data.

import { SQL_TEXT_FUNCTIONS } from './functions.js'

/** Builtins that run SQL given as text, read a table or a cursor by name, read files, large objects,
 *  WAL or another database: what they return is not visible in the statement's tree. */
export const OPAQUE_BUILTINS: ReadonlySet<string> = new Set([
  ...SQL_TEXT_FUNCTIONS,
  'cursor_to_xml',
  'cursor_to_xmlschema',
  'pg_read_file',
  'pg_read_binary_file',
  'lo_get',
  'loread',
  'lo_export',
  'lo_import',
  'pg_logical_slot_get_changes',
  'pg_logical_slot_peek_changes',
  'pg_logical_slot_get_binary_changes',
  'pg_logical_slot_peek_binary_changes',
  'dblink',
  'dblink_exec',
  'dblink_fetch',
  'dblink_open',
  'dblink_get_result',
  'xpath_table',
  'crosstab',
])

/** Builtins that send or store their arguments where the result stream never shows them:
 *  calling one with a classified value copies it out (a write). */
export const SINK_FUNCTIONS: ReadonlySet<string> = new Set([
  'pg_notify',
  'set_config',
  'lo_from_bytea',
  'lo_put',
  'lowrite',
  'pg_logical_emit_message',
  'dblink_exec',
  'dblink_send_query',
  'dblink',
  'dblink_open',
  'pg_file_write',
])

/** Relations whose rows are sample values of every column (planner statistics). */
export const OPAQUE_RELATIONS: ReadonlySet<string> = new Set([
  'pg_catalog.pg_statistic',
  'pg_catalog.pg_stats',
  'pg_catalog.pg_stats_ext',
  'pg_catalog.pg_stats_ext_exprs',
  'pg_catalog.pg_statistic_ext_data',
])

/** Statement types that return no table data and move no data between columns. */
export const INERT_STATEMENTS: ReadonlySet<string> = new Set([
  'TransactionStmt',
  'VariableSetStmt',
  'DeallocateStmt',
  'DiscardStmt',
  'ClosePortalStmt',
  'ListenStmt',
  'UnlistenStmt',
  'NotifyStmt',
  'LockStmt',
  'TruncateStmt',
  'VacuumStmt',
  'CheckPointStmt',
  'DropStmt',
  'IndexStmt',
  'GrantStmt',
  'GrantRoleStmt',
  'CommentStmt',
  'CreateSeqStmt',
  'AlterSeqStmt',
  'CreateFunctionStmt',
  'AlterFunctionStmt',
  'CreateRoleStmt',
  'AlterRoleStmt',
  'AlterRoleSetStmt',
  'DropRoleStmt',
  'DefineStmt',
  'CreateDomainStmt',
  'CompositeTypeStmt',
  'CreateEnumStmt',
  'AlterEnumStmt',
  'RefreshMatViewStmt',
  'ReindexStmt',
  'ClusterStmt',
  'CreateExtensionStmt',
  'AlterDefaultPrivilegesStmt',
  'AlterOwnerStmt',
  'CreateStatsStmt',
  'ConstraintsSetStmt',
  'LoadStmt',
  'CreatedbStmt',
  'DropdbStmt',
  'AlterDatabaseSetStmt',
  'AlterSystemStmt',
])
