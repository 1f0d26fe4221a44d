// Which settings a session may change as `sql.session` and which only as `sql.admin`.

/**
 * Settings a session may change as `sql.session`: PostgreSQL 15's user-context (PGC_USERSET)
 * settings that change only how this session's own queries run or look. Everything else is
 * `sql.admin`: superuser-context settings (log_*, track_*, debug_*, dynamic_library_path, …, which
 * the gateway's upstream role could otherwise set), settings that change who the session is or
 * what it may do (role, session_authorization, row_security, default_transaction_read_only,
 * restrict_nonsystem_relation_kind), settings that change how SQL is lexed
 * (standard_conforming_strings, client_encoding, backslash_quote), settings that load code
 * (local_preload_libraries), that hide this session from the server's log or activity view
 * (log_parameter_max_length_on_error, debug_print_*, trace_*), and every unknown or custom
 * (`app.tenant`) name: a custom setting is often what a row-level security policy reads.
 */
export const SESSION_SETTINGS: ReadonlySet<string> = new Set([
  'application_name',
  'array_nulls',
  'bytea_output',
  'check_function_bodies',
  'client_min_messages',
  'commit_siblings',
  'constraint_exclusion',
  'cpu_index_tuple_cost',
  'cpu_operator_cost',
  'cpu_tuple_cost',
  'cursor_tuple_fraction',
  'datestyle',
  'default_statistics_target',
  'default_table_access_method',
  'default_tablespace',
  'default_text_search_config',
  'default_toast_compression',
  'default_transaction_isolation',
  'effective_cache_size',
  'effective_io_concurrency',
  'enable_async_append',
  'enable_bitmapscan',
  'enable_gathermerge',
  'enable_hashagg',
  'enable_hashjoin',
  'enable_incremental_sort',
  'enable_indexonlyscan',
  'enable_indexscan',
  'enable_material',
  'enable_memoize',
  'enable_mergejoin',
  'enable_nestloop',
  'enable_parallel_append',
  'enable_parallel_hash',
  'enable_partition_pruning',
  'enable_partitionwise_aggregate',
  'enable_partitionwise_join',
  'enable_seqscan',
  'enable_sort',
  'enable_tidscan',
  'extra_float_digits',
  'from_collapse_limit',
  'geqo',
  'geqo_effort',
  'geqo_generations',
  'geqo_pool_size',
  'geqo_seed',
  'geqo_selection_bias',
  'geqo_threshold',
  'gin_fuzzy_search_limit',
  'gin_pending_list_limit',
  'hash_mem_multiplier',
  'idle_in_transaction_session_timeout',
  'idle_session_timeout',
  'intervalstyle',
  'jit',
  'jit_above_cost',
  'jit_expressions',
  'jit_inline_above_cost',
  'jit_optimize_above_cost',
  'jit_tuple_deforming',
  'join_collapse_limit',
  'lc_monetary',
  'lc_numeric',
  'lc_time',
  'lock_timeout',
  'maintenance_io_concurrency',
  'maintenance_work_mem',
  'max_parallel_maintenance_workers',
  'max_parallel_workers',
  'max_parallel_workers_per_gather',
  'min_parallel_index_scan_size',
  'min_parallel_table_scan_size',
  'parallel_leader_participation',
  'parallel_setup_cost',
  'parallel_tuple_cost',
  'plan_cache_mode',
  'quote_all_identifiers',
  'random_page_cost',
  'recursive_worktable_factor',
  'search_path',
  'seq_page_cost',
  'statement_timeout',
  'synchronize_seqscans',
  'synchronous_commit',
  'temp_buffers',
  'temp_tablespaces',
  'timezone',
  'timezone_abbreviations',
  'transaction_deferrable',
  'transaction_isolation',
  'transform_null_equals',
  'work_mem',
  'xmlbinary',
  'xmloption',
])

/**
 * The gateway's own placeholders (proxies/postgres/hold.ts): they steer how a held statement waits
 * and what reviewers read, never what is allowed, so any chain that may run SQL may set them. Only
 * these two names: any other `gatehouse.*` name is an ordinary custom setting.
 */
export const GATEWAY_SETTINGS: ReadonlySet<string> = new Set(['gatehouse.approval_wait', 'gatehouse.reason'])

/** Whether changing setting `name` (lower case) is `sql.admin` rather than `sql.session`. */
export function settingNeedsAdmin(name: string): boolean {
  return name !== 'all' && !SESSION_SETTINGS.has(name) && !GATEWAY_SETTINGS.has(name)
}
