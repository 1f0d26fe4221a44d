// The function catalog (proxies/postgres/sql/functions.ts) against the machine's PostgreSQL 15: every
// built-in the server has is classified (the review is complete), every VOLATILE built-in is listed
// by hand as harmless or with its effect, the non-volatile list agrees with pg_proc, and a name the
// review does not know, a qualified call outside pg_catalog or a user function shadowing a
// built-in's name is a side effect.

import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import pg from 'pg'
import {
  builtinFunctionClass,
  classifyCall,
  HARMLESS_VOLATILE_FUNCTIONS,
  isHarmless,
  SIDE_EFFECT_FUNCTIONS,
  sideEffectCalls,
} from '../proxies/postgres/sql/functions.js'
import { PG15_NON_VOLATILE_BUILTINS } from '../proxies/postgres/sql/functions-pg15.js'

describe('function catalog', () => {
  let client: pg.Client
  let builtins: { name: string; volatility: string }[] = []

  before(async () => {
    client = new pg.Client({ host: '127.0.0.1', port: 5432, user: 'postgres', database: 'test' })
    await client.connect()
    const r = await client.query<{ name: string; volatility: string }>(
      "SELECT proname AS name, provolatile AS volatility FROM pg_proc WHERE pronamespace = 'pg_catalog'::regnamespace AND oid < 16384",
    )
    builtins = r.rows
  })
  after(() => client.end())

  test('the server is PostgreSQL 15, the version the review was made for', async () => {
    const r = await client.query<{ server_version_num: string }>('SHOW server_version_num')
    assert.match(r.rows[0]?.server_version_num ?? '', /^15/)
  })

  test('every VOLATILE built-in is reviewed: harmless or classed by its effect', () => {
    const volatile = [...new Set(builtins.filter((b) => b.volatility === 'v').map((b) => b.name))]
    assert.ok(volatile.length > 200)
    const missing = volatile.filter((n) => !SIDE_EFFECT_FUNCTIONS.has(n) && !HARMLESS_VOLATILE_FUNCTIONS.has(n))
    assert.deepEqual(missing, [])
  })

  test('every built-in of the server has a class other than opaque', () => {
    const unknown = [...new Set(builtins.map((b) => b.name))].filter((n) => builtinFunctionClass(n) === 'opaque')
    assert.deepEqual(unknown, [])
  })

  test('the non-volatile list is what pg_proc declares non-volatile, less the classed exceptions', () => {
    const nonVolatile = new Set(builtins.filter((b) => b.volatility !== 'v').map((b) => b.name))
    const notInServer = PG15_NON_VOLATILE_BUILTINS.filter((n) => !nonVolatile.has(n))
    assert.deepEqual(notInServer, [])
    const overlap = PG15_NON_VOLATILE_BUILTINS.filter((n) => SIDE_EFFECT_FUNCTIONS.has(n) || HARMLESS_VOLATILE_FUNCTIONS.has(n))
    assert.deepEqual(overlap, [])
    for (const n of ['txid_current', 'pg_current_xact_id', 'query_to_xml', 'ts_stat'])
      assert.ok(nonVolatile.has(n) || builtins.some((b) => b.name === n), n)
  })

  test('no name is both harmless and a side effect', () => {
    const both = [...HARMLESS_VOLATILE_FUNCTIONS.keys()].filter((n) => SIDE_EFFECT_FUNCTIONS.has(n))
    assert.deepEqual(both, [])
  })

  const classes: [string, string][] = [
    ['nextval', 'sequence'],
    ['setval', 'sequence'],
    ['pg_advisory_lock', 'advisory-lock'],
    ['pg_try_advisory_xact_lock_shared', 'advisory-lock'],
    ['lo_create', 'large-object'],
    ['lo_from_bytea', 'large-object'],
    ['lo_unlink', 'large-object'],
    ['lo_import', 'large-object'],
    ['pg_notify', 'notify'],
    ['set_config', 'setting'],
    ['pg_read_file', 'server-file'],
    ['pg_ls_dir', 'server-file'],
    ['pg_terminate_backend', 'server-admin'],
    ['pg_cancel_backend', 'server-admin'],
    ['pg_reload_conf', 'server-admin'],
    ['pg_switch_wal', 'server-admin'],
    ['pg_stat_reset', 'statistics-reset'],
    ['txid_current', 'transaction-id'],
    ['pg_current_xact_id', 'transaction-id'],
    ['query_to_xml', 'runs-sql'],
    ['dblink_connect', 'remote'],
    ['dblink', 'remote'],
    ['pg_logical_emit_message', 'replication'],
    ['brin_summarize_range', 'maintenance'],
    ['lower', 'pure'],
    ['sum', 'pure'],
    ['row_number', 'pure'],
    ['jsonb_build_object', 'pure'],
    ['date_trunc', 'pure'],
    ['now', 'pure'],
    ['regexp_replace', 'pure'],
    ['array_agg', 'pure'],
    ['int4pl', 'pure'],
    ['txid_current_if_assigned', 'pure'],
    ['current_setting', 'pure'],
    ['random', 'nondeterministic'],
    ['clock_timestamp', 'nondeterministic'],
    ['currval', 'nondeterministic'],
    ['pg_sleep', 'timing'],
    ['my_function', 'opaque'],
    ['RANDOM', 'opaque'],
    ['Lower', 'opaque'],
  ]
  for (const [name, want] of classes) {
    test(`${name} is ${want}`, () => assert.equal(builtinFunctionClass(name), want))
  }

  test('a call resolves as the server would: qualified outside pg_catalog or shadowed is opaque', () => {
    const catalog = { userFunctions: new Set(['lower', 'my_fn']), userOperators: new Set<string>() }
    assert.equal(classifyCall({ schema: null, name: 'upper' }, catalog), 'pure')
    assert.equal(classifyCall({ schema: 'pg_catalog', name: 'upper' }, catalog), 'pure')
    assert.equal(classifyCall({ schema: 'public', name: 'upper' }, catalog), 'opaque')
    assert.equal(classifyCall({ schema: null, name: 'lower' }, catalog), 'opaque')
    assert.equal(classifyCall({ schema: null, name: 'lower' }, null), 'pure')
    assert.equal(classifyCall({ schema: null, name: 'my_fn' }, null), 'opaque')
    assert.equal(classifyCall({ schema: 'pg_catalog', name: 'nextval' }, null), 'sequence')
    assert.deepEqual(
      sideEffectCalls(
        [
          { schema: null, name: 'count' },
          { schema: null, name: 'nextval' },
          { schema: 'public', name: 'f' },
          { schema: null, name: 'nextval' },
        ],
        null,
      ),
      ['nextval', 'public.f'],
    )
    assert.ok(isHarmless('timing'))
    assert.ok(!isHarmless('opaque'))
  })
})
