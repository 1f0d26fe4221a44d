// Which functions a statement may call and still be a read. An allow-list: a function is harmless
// only when it resolves to a PostgreSQL built-in (pg_catalog, oid < 16384) that is known to have no
// effect outliving the statement. Everything else is a side effect: the built-ins listed below with
// their class, any user-defined or extension function (its body is opaque: even one marked
// IMMUTABLE may call nextval through a SELECT), and any name this module does not know (a newer
// server's built-in, a typo the server will reject, a function created after the catalog was read).
//
// Two sources, so that neither a hand-kept list nor the catalog decides alone:
// - functions-pg15.ts: pg_catalog's IMMUTABLE/STABLE functions as PostgreSQL 15 declares them
//   (read from pg_proc), less the reviewed exceptions classed here (txid_current assigns an xid);
// - this file: every VOLATILE built-in of PostgreSQL 15, reviewed one by one, either harmless
//   (random, clock_timestamp, size and status functions) or classed by its effect.
//
// The masking analysis reuses the classes: an effect class is a sink that a value can be written
// into and read back later (a lock key, a sequence value, a large object, a notification, a
// setting), `timing` and `nondeterministic` are not effects but matter to oracles.

import { PG15_NON_VOLATILE_BUILTINS, PG15_OPERATORS } from './functions-pg15.js'

/** Built-in functions that run SQL (or read a table) named in a string argument: what they read
 * cannot be seen in the statement's tree, so a statement calling one is `sql.other`.
 * `cursor_to_xml` and `cursor_to_xmlschema` read a cursor instead: also `runs-sql`, not listed here. */
export const SQL_TEXT_FUNCTIONS: ReadonlySet<string> = new Set([
  'query_to_xml',
  'query_to_xmlschema',
  'query_to_xml_and_xmlschema',
  'table_to_xml',
  'table_to_xmlschema',
  'table_to_xml_and_xmlschema',
  'schema_to_xml',
  'schema_to_xmlschema',
  'schema_to_xml_and_xmlschema',
  'database_to_xml',
  'database_to_xmlschema',
  'database_to_xml_and_xmlschema',
  'ts_stat',
  'ts_rewrite',
])

/** What calling a function can do beyond computing its result. */
export type SideEffectClass =
  /** pg_advisory_lock…: a lock other sessions see in pg_locks, held past the statement. */
  | 'advisory-lock'
  /** nextval, setval: sequence state, not rolled back. */
  | 'sequence'
  /** lo_*: large objects created, written, removed; lo_import/lo_export touch server files. */
  | 'large-object'
  /** pg_notify: a message to every listener. */
  | 'notify'
  /** set_config: a session setting (search_path, role-like settings…). */
  | 'setting'
  /** pg_read_file, pg_ls_dir, pg_stat_file…: the server's file system. */
  | 'server-file'
  /** pg_terminate_backend, pg_reload_conf, pg_switch_wal, backups, WAL replay, log rotation… */
  | 'server-admin'
  /** replication slots and origins, logical decoding (consumes changes), logical messages. */
  | 'replication'
  /** pg_stat_reset*: statistics other sessions read. */
  | 'statistics-reset'
  /** txid_current, pg_current_xact_id: assign a transaction id (the transaction then writes WAL). */
  | 'transaction-id'
  /** brin_summarize_*, gin_clean_pending_list, pg_import_system_collations…: index or catalog writes. */
  | 'maintenance'
  /** query_to_xml, ts_stat, cursor_to_xml…: run SQL given as text (or move a cursor). */
  | 'runs-sql'
  /** dblink and friends: SQL on another server, invisible here. */
  | 'remote'
  /** trigger, handler, validator and binary-upgrade functions: internal entry points. */
  | 'internal'
  /** a function that is not a known built-in (user-defined, extension, or unknown). */
  | 'opaque'

/** A harmless function's class: `pure`, or harmless but not repeatable (`nondeterministic`), or
 *  harmless but able to stall the session for as long as asked (`timing`). */
export type HarmlessClass = 'pure' | 'nondeterministic' | 'timing'

export type FunctionClass = HarmlessClass | SideEffectClass

/** Known side-effect functions by name, with their class. Built-ins of PostgreSQL 15 unless noted. */
export const SIDE_EFFECT_FUNCTIONS: ReadonlyMap<string, SideEffectClass> = new Map<string, SideEffectClass>([
  ...names('advisory-lock', [
    'pg_advisory_lock',
    'pg_advisory_lock_shared',
    'pg_advisory_unlock',
    'pg_advisory_unlock_all',
    'pg_advisory_unlock_shared',
    'pg_advisory_xact_lock',
    'pg_advisory_xact_lock_shared',
    'pg_try_advisory_lock',
    'pg_try_advisory_lock_shared',
    'pg_try_advisory_xact_lock',
    'pg_try_advisory_xact_lock_shared',
  ]),
  ...names('sequence', ['nextval', 'setval']),
  ...names('large-object', [
    'lo_close',
    'lo_creat',
    'lo_create',
    'lo_export',
    'lo_from_bytea',
    'lo_import',
    'lo_lseek',
    'lo_lseek64',
    'lo_open',
    'lo_put',
    'lo_tell',
    'lo_tell64',
    'lo_truncate',
    'lo_truncate64',
    'lo_unlink',
    'loread',
    'lowrite',
    // lo_get reads only, but a large object's data is read by oid outside any table the policy sees.
    'lo_get',
    // the `lo` extension
    'lo_manage',
  ]),
  ...names('notify', ['pg_notify']),
  ...names('setting', ['set_config']),
  ...names('server-file', [
    'pg_read_file',
    'pg_read_file_old',
    'pg_read_binary_file',
    'pg_stat_file',
    'pg_ls_dir',
    'pg_ls_logdir',
    'pg_ls_waldir',
    'pg_ls_tmpdir',
    'pg_ls_archive_statusdir',
    'pg_ls_logicalmapdir',
    'pg_ls_logicalsnapdir',
    'pg_ls_replslotdir',
    // adminpack
    'pg_file_write',
    'pg_file_rename',
    'pg_file_unlink',
    'pg_file_sync',
    'pg_logdir_ls',
  ]),
  ...names('server-admin', [
    'pg_cancel_backend',
    'pg_terminate_backend',
    'pg_reload_conf',
    'pg_rotate_logfile',
    'pg_rotate_logfile_old',
    'pg_switch_wal',
    'pg_create_restore_point',
    'pg_backup_start',
    'pg_backup_stop',
    'pg_promote',
    'pg_wal_replay_pause',
    'pg_wal_replay_resume',
    'pg_log_backend_memory_contexts',
    'pg_stat_force_next_flush',
    'pg_export_snapshot',
    'pg_nextoid',
    'pg_stop_making_pinned_objects',
    'pg_extension_config_dump',
    // pg_prewarm, pg_stat_statements
    'pg_prewarm',
    'autoprewarm_start_worker',
    'autoprewarm_dump_now',
    'pg_stat_statements_reset',
  ]),
  ...names('replication', [
    'pg_create_physical_replication_slot',
    'pg_create_logical_replication_slot',
    'pg_copy_physical_replication_slot',
    'pg_copy_logical_replication_slot',
    'pg_drop_replication_slot',
    'pg_replication_slot_advance',
    'pg_logical_slot_get_changes',
    'pg_logical_slot_get_binary_changes',
    'pg_logical_slot_peek_changes',
    'pg_logical_slot_peek_binary_changes',
    'pg_logical_emit_message',
    'pg_replication_origin_advance',
    'pg_replication_origin_create',
    'pg_replication_origin_drop',
    'pg_replication_origin_session_reset',
    'pg_replication_origin_session_setup',
    'pg_replication_origin_xact_reset',
    'pg_replication_origin_xact_setup',
  ]),
  ...names('statistics-reset', [
    'pg_stat_reset',
    'pg_stat_reset_shared',
    'pg_stat_reset_single_table_counters',
    'pg_stat_reset_single_function_counters',
    'pg_stat_reset_slru',
    'pg_stat_reset_replication_slot',
    'pg_stat_reset_subscription_stats',
  ]),
  ...names('transaction-id', ['txid_current', 'pg_current_xact_id']),
  ...names('maintenance', [
    'brin_summarize_range',
    'brin_summarize_new_values',
    'brin_desummarize_range',
    'gin_clean_pending_list',
    'pg_import_system_collations',
    'amvalidate',
  ]),
  ...names('runs-sql', [...SQL_TEXT_FUNCTIONS, 'cursor_to_xml', 'cursor_to_xmlschema']),
  ...names('remote', [
    'dblink',
    'dblink_exec',
    'dblink_connect',
    'dblink_connect_u',
    'dblink_disconnect',
    'dblink_open',
    'dblink_fetch',
    'dblink_close',
    'dblink_send_query',
    'dblink_get_result',
    'dblink_cancel_query',
    'dblink_get_notify',
    'dblink_build_sql_insert',
    'dblink_build_sql_update',
    'dblink_build_sql_delete',
    'postgres_fdw_disconnect',
    'postgres_fdw_disconnect_all',
  ]),
  ...names('internal', [
    'RI_FKey_cascade_del',
    'RI_FKey_cascade_upd',
    'RI_FKey_check_ins',
    'RI_FKey_check_upd',
    'RI_FKey_noaction_del',
    'RI_FKey_noaction_upd',
    'RI_FKey_restrict_del',
    'RI_FKey_restrict_upd',
    'RI_FKey_setdefault_del',
    'RI_FKey_setdefault_upd',
    'RI_FKey_setnull_del',
    'RI_FKey_setnull_upd',
    'brinhandler',
    'bthandler',
    'ginhandler',
    'gisthandler',
    'hashhandler',
    'spghandler',
    'heap_tableam_handler',
    'dsnowball_init',
    'dsnowball_lexize',
    'plpgsql_call_handler',
    'plpgsql_inline_handler',
    'plpgsql_validator',
    'suppress_redundant_updates_trigger',
    'tsvector_update_trigger',
    'tsvector_update_trigger_column',
    'unique_key_recheck',
    'binary_upgrade_create_empty_extension',
    'binary_upgrade_set_missing_value',
    'binary_upgrade_set_next_array_pg_type_oid',
    'binary_upgrade_set_next_heap_pg_class_oid',
    'binary_upgrade_set_next_heap_relfilenode',
    'binary_upgrade_set_next_index_pg_class_oid',
    'binary_upgrade_set_next_index_relfilenode',
    'binary_upgrade_set_next_multirange_array_pg_type_oid',
    'binary_upgrade_set_next_multirange_pg_type_oid',
    'binary_upgrade_set_next_pg_authid_oid',
    'binary_upgrade_set_next_pg_enum_oid',
    'binary_upgrade_set_next_pg_tablespace_oid',
    'binary_upgrade_set_next_pg_type_oid',
    'binary_upgrade_set_next_toast_pg_class_oid',
    'binary_upgrade_set_next_toast_relfilenode',
    'binary_upgrade_set_record_init_privs',
    'binary_upgrade_set_next_attribute_versions',
  ]),
])

/** PostgreSQL 15's VOLATILE built-ins reviewed as harmless: they read state or return a fresh
 *  value but change nothing another statement or session can observe. */
export const HARMLESS_VOLATILE_FUNCTIONS: ReadonlyMap<string, HarmlessClass> = new Map<string, HarmlessClass>([
  ...names('nondeterministic', [
    'random',
    // setseed only reseeds this session's random(): nothing outlives the session.
    'setseed',
    'gen_random_uuid',
    'clock_timestamp',
    'timeofday',
    'currval',
    'lastval',
    'current_query',
    'currtid2',
    // tablesample methods (TABLESAMPLE SYSTEM / BERNOULLI)
    'bernoulli',
    'system',
    'pg_database_size',
    'pg_relation_size',
    'pg_table_size',
    'pg_indexes_size',
    'pg_total_relation_size',
    'pg_tablespace_size',
    'pg_partition_tree',
    'pg_partition_ancestors',
    'pg_sequence_last_value',
    'pg_collation_actual_version',
    'pg_database_collation_actual_version',
    'pg_is_in_recovery',
    'pg_is_wal_replay_paused',
    'pg_get_wal_replay_pause_state',
    'pg_last_wal_receive_lsn',
    'pg_last_wal_replay_lsn',
    'pg_last_xact_replay_timestamp',
    'pg_last_committed_xact',
    'pg_current_wal_lsn',
    'pg_current_wal_insert_lsn',
    'pg_current_wal_flush_lsn',
    'pg_current_logfile',
    'pg_control_checkpoint',
    'pg_control_init',
    'pg_control_recovery',
    'pg_control_system',
    'pg_lock_status',
    'pg_blocking_pids',
    'pg_safe_snapshot_blocking_pids',
    'pg_isolation_test_session_is_blocked',
    'pg_notification_queue_usage',
    'pg_jit_available',
    'pg_prepared_xact',
    'pg_xact_status',
    'txid_status',
    'pg_xact_commit_timestamp',
    'pg_xact_commit_timestamp_origin',
    'pg_get_backend_memory_contexts',
    'pg_get_shmem_allocations',
    'pg_get_multixact_members',
    'pg_get_wal_resource_managers',
    'pg_hba_file_rules',
    'pg_ident_file_mappings',
    'pg_show_all_file_settings',
    'pg_show_replication_origin_status',
    'pg_replication_origin_progress',
    'pg_replication_origin_session_progress',
    'pg_replication_origin_session_is_setup',
    'pg_stat_clear_snapshot',
    'pg_stat_have_stats',
    'pg_stat_get_recovery_prefetch',
    'pg_stat_get_xact_blocks_fetched',
    'pg_stat_get_xact_blocks_hit',
    'pg_stat_get_xact_function_calls',
    'pg_stat_get_xact_function_self_time',
    'pg_stat_get_xact_function_total_time',
    'pg_stat_get_xact_numscans',
    'pg_stat_get_xact_tuples_deleted',
    'pg_stat_get_xact_tuples_fetched',
    'pg_stat_get_xact_tuples_hot_updated',
    'pg_stat_get_xact_tuples_inserted',
    'pg_stat_get_xact_tuples_returned',
    'pg_stat_get_xact_tuples_updated',
  ]),
  ...names('timing', ['pg_sleep', 'pg_sleep_for', 'pg_sleep_until']),
])

const NON_VOLATILE: ReadonlySet<string> = new Set(PG15_NON_VOLATILE_BUILTINS)
const BUILTIN_OPERATORS: ReadonlySet<string> = new Set(PG15_OPERATORS)

function names<const C extends string>(cls: C, list: readonly string[]): [string, C][] {
  return list.map((n) => [n, cls])
}

/**
 * The class of a built-in by name, assuming the call resolves to pg_catalog's function of that name
 * (the caller checks that: see `classifyCall`). `opaque` for a name that is no reviewed built-in.
 */
export function builtinFunctionClass(name: string): FunctionClass {
  // Exact case: the parser folds unquoted names, and a quoted "RANDOM" is not random.
  const n = name
  const effect = SIDE_EFFECT_FUNCTIONS.get(n)
  if (effect !== undefined) return effect
  const harmless = HARMLESS_VOLATILE_FUNCTIONS.get(n)
  if (harmless !== undefined) return harmless
  return NON_VOLATILE.has(n) ? 'pure' : 'opaque'
}

export function isHarmless(c: FunctionClass): c is HarmlessClass {
  return c === 'pure' || c === 'nondeterministic' || c === 'timing'
}

/** A function call as written: `schema` is null when unqualified. Names as the parser gives them
 *  (unquoted identifiers already folded to lower case). */
export interface FunctionCall {
  readonly schema: string | null
  readonly name: string
}

/**
 * What the server's catalog says beyond PostgreSQL's own built-ins: the names of every function
 * that is not a built-in (any schema other than pg_catalog, or in pg_catalog with oid >= 16384).
 * Such a name may win over the built-in of the same name (a better argument match, or a
 * search_path that puts its schema before pg_catalog), so an unqualified call of it is opaque.
 */
export interface FunctionCatalog {
  readonly userFunctions: ReadonlySet<string>
  /** Operators that are not built-ins (their function may be anything). */
  readonly userOperators: ReadonlySet<string>
  /** Types a cast to which may run code that is not a built-in: base, domain, range and multirange
   *  types that are not built-ins (input functions, domain CHECK constraints, subtype functions), and
   *  the targets of user-defined casts. Absent: casts are not checked. */
  readonly userTypes?: ReadonlySet<string>
}

/**
 * Classifies one call as the server would resolve it. Without a catalog (`null`) only the static
 * review speaks: a later check against the catalog can only make the answer stricter.
 */
export function classifyCall(call: FunctionCall, catalog: FunctionCatalog | null): FunctionClass {
  if (call.schema !== null && call.schema !== 'pg_catalog') return 'opaque'
  // A non-built-in in pg_catalog itself (oid >= 16384) shadows even a qualified call.
  if (catalog?.userFunctions.has(call.name)) return 'opaque'
  return builtinFunctionClass(call.name)
}

/** The calls of a list that are not harmless, as `name` or `schema.name`, sorted and distinct. */
export function sideEffectCalls(calls: readonly FunctionCall[], catalog: FunctionCatalog | null): string[] {
  const out = new Set<string>()
  for (const c of calls) if (!isHarmless(classifyCall(c, catalog))) out.add(c.schema === null ? c.name : `${c.schema}.${c.name}`)
  return [...out].sort()
}

/**
 * Operators as the parser gives them (`op`, or `schema.op` for OPERATOR(schema.op)) that are not
 * known-harmless built-ins: qualified outside pg_catalog, a name no built-in operator has, or a
 * name some non-built-in operator also has (it may win on argument types). An operator runs its
 * function: a user-defined one is as opaque as a user-defined function.
 */
export function opaqueOperators(operators: readonly string[], catalog: FunctionCatalog | null): string[] {
  const out: string[] = []
  for (const op of operators) {
    const dot = op.lastIndexOf('.', op.length - 2)
    const schema = dot > 0 ? op.slice(0, dot) : null
    const name = dot > 0 ? op.slice(dot + 1) : op
    if ((schema !== null && schema !== 'pg_catalog') || !BUILTIN_OPERATORS.has(name) || catalog?.userOperators.has(name)) out.push(op)
  }
  return out
}

/** Cast target types (`t` or `schema.t`) whose cast may run code that is not a built-in. */
export function opaqueCasts(types: readonly string[], catalog: FunctionCatalog | null): string[] {
  const user = catalog?.userTypes
  if (!user) return []
  return types.filter((t) => {
    const dot = t.lastIndexOf('.')
    return user.has(dot >= 0 ? t.slice(dot + 1) : t)
  })
}
