// Real clients through a real gateway to the machine's PostgreSQL give the same results as a
// direct connection: psql (simple protocol, multi-statement, notices, errors, COPY both ways),
// pgbench (init and run, simple/extended/prepared), the `pg` driver (extended protocol, binary
// results, LISTEN/NOTIFY) and the `postgres` driver (named statements, cancel).

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { after, before, describe, test } from 'node:test'
import pg from 'pg'
import postgres from 'postgres'
import { direct, LOCAL_PG, psql, TestGateway } from './helpers/gateway.js'

const DIRECT = 'host=127.0.0.1 port=5432 dbname=test user=postgres sslmode=disable'
/** pgbench's tables get their own database, so nothing else on the machine touches them. */
const BENCH_DB = 'gh_pgbench_clients'

describe('PostgreSQL clients through Gatehouse', () => {
  let gw: TestGateway
  let token: string

  before(async () => {
    direct(`DROP DATABASE IF EXISTS ${BENCH_DB}`)
    direct(`CREATE DATABASE ${BENCH_DB}`)
    gw = await TestGateway.start({ connections: [LOCAL_PG, { ...LOCAL_PG, name: 'bench', database: BENCH_DB }] })
    token = gw.token('user:alice', ['--group', 'writers', '--group', 'dba'])
    direct('DROP TABLE IF EXISTS ghc_items; CREATE TABLE ghc_items (id int PRIMARY KEY, name text, price numeric(10,2), data bytea)')
    direct("CREATE OR REPLACE FUNCTION ghc_notice() RETURNS void LANGUAGE plpgsql AS $$ BEGIN RAISE NOTICE 'hello from the server'; END $$")
  })
  after(async () => {
    direct('DROP TABLE IF EXISTS ghc_items; DROP TABLE IF EXISTS ghc_copy')
    await gw.cleanup()
    direct(`DROP DATABASE IF EXISTS ${BENCH_DB} WITH (FORCE)`)
  })

  test('psql: the same results as a direct connection, including multi-statement queries and errors', () => {
    const ins = psql(gw.conninfo(token), "INSERT INTO ghc_items VALUES (1, 'ä€ unicode', 9.99, '\\x00ff'), (2, NULL, 0, NULL)")
    assert.equal(ins.stdout, 'INSERT 0 2\n', ins.stderr)
    const sql = `SELECT 1; SELECT id, name, price, data FROM ghc_items ORDER BY id; SELECT now() IS NOT NULL, 1/3.0, ARRAY[1,2], '{"a":1}'::jsonb`
    const via = psql(gw.conninfo(token), sql)
    const dir = psql(DIRECT, sql)
    assert.equal(via.code, 0, via.stderr)
    assert.equal(via.stdout, dir.stdout)
    const err = psql(gw.conninfo(token), 'SELECT * FROM no_such_table_ghc')
    const derr = psql(DIRECT, 'SELECT * FROM no_such_table_ghc')
    assert.notEqual(err.code, 0)
    assert.equal(err.stderr.replace(/LINE.*\n.*\n?/s, ''), derr.stderr.replace(/LINE.*\n.*\n?/s, ''))
  })

  test('psql: notices and transactions behave as direct', () => {
    const sql = `SELECT ghc_notice(); BEGIN; INSERT INTO ghc_items VALUES (10, 'tx', 1, NULL); ROLLBACK; SELECT count(*) FROM ghc_items WHERE id = 10`
    const via = psql(gw.conninfo(token), sql)
    assert.equal(via.code, 0, via.stderr)
    assert.match(via.stderr, /NOTICE: {2}hello from the server/)
    assert.equal(via.stdout.trim().split('\n').pop(), '0')
  })

  test('psql over TLS (sslmode=require)', () => {
    const r = psql(
      gw.conninfo(token, 'app', 'sslmode=require').replace('sslmode=disable ', ''),
      'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()',
    )
    assert.equal(r.code, 0, r.stderr)
    // The gateway→server leg is plain (tls: disable); the client leg is TLS, which psql reports:
    const info = spawnSync(
      'psql',
      ['-X', '-d', gw.conninfo(token, 'app', 'sslmode=require').replace('sslmode=disable ', ''), '-c', '\\conninfo'],
      { encoding: 'utf8' },
    )
    assert.match(info.stdout, /SSL connection \(protocol: TLSv1\.[23]/)
  })

  test('COPY FROM STDIN and COPY TO STDOUT', () => {
    direct('DROP TABLE IF EXISTS ghc_copy; CREATE TABLE ghc_copy (a int, b text)')
    const rows = Array.from({ length: 5000 }, (_, i) => `${i}\tvalue ${i} ${'x'.repeat(i % 50)}`).join('\n')
    const load = psql(gw.conninfo(token), '\\copy ghc_copy FROM STDIN', { input: `${rows}\n\\.\n` })
    assert.equal(load.code, 0, load.stderr)
    assert.equal(direct('SELECT count(*) FROM ghc_copy'), '5000')
    const via = psql(gw.conninfo(token), 'COPY (SELECT * FROM ghc_copy ORDER BY a) TO STDOUT')
    const dir = psql(DIRECT, 'COPY (SELECT * FROM ghc_copy ORDER BY a) TO STDOUT')
    assert.equal(via.code, 0, via.stderr)
    assert.equal(via.stdout, dir.stdout)
    assert.equal(via.stdout.trim().split('\n').length, 5000)
  })

  test('pgbench: init and run (simple, extended and prepared protocols) through the gateway', () => {
    const conn = gw.conninfo(token, 'bench')
    const init = spawnSync('pgbench', ['-i', '-s', '1', '-q', conn], { encoding: 'utf8' })
    assert.equal(init.status, 0, init.stderr)
    for (const mode of ['simple', 'extended', 'prepared']) {
      const run = spawnSync('pgbench', ['-n', '-M', mode, '-c', '2', '-j', '2', '-t', '100', conn], { encoding: 'utf8' })
      assert.equal(run.status, 0, run.stderr)
      assert.match(run.stdout, /number of transactions actually processed: 200\/200/)
      assert.match(run.stdout, /number of failed transactions: 0/)
    }
    const sum = spawnSync(
      'psql',
      [
        '-X',
        '-At',
        '-d',
        `${DIRECT.replace('dbname=test', `dbname=${BENCH_DB}`)}`,
        '-c',
        'SELECT sum(abalance) = (SELECT sum(delta) FROM pgbench_history) FROM pgbench_accounts',
      ],
      {
        encoding: 'utf8',
      },
    )
    assert.equal(sum.stdout.trim(), 't')
  })

  test('pg driver: extended protocol with parameters and binary results match direct', async () => {
    const mk = (port: number, database: string, user: string, password?: string, binary = false): pg.Client =>
      new pg.Client({
        host: '127.0.0.1',
        port,
        database,
        user,
        ...(password ? { password } : {}),
        ...(binary ? { binary: true } : {}),
      } as pg.ClientConfig)
    for (const binary of [false, true]) {
      const via = mk(gw.pgPort, 'app', 'alice', token, binary)
      const dir = mk(5432, 'test', 'postgres', undefined, binary)
      await via.connect()
      await dir.connect()
      try {
        const q = {
          text: 'SELECT $1::int + 1 AS n, $2::text AS t, $3::bytea AS b, $4::int AS nul, now() > $5::timestamptz AS later',
          values: [41, 'héllo', Buffer.from([0, 1, 255]), null, '2000-01-01'],
        }
        const a = await via.query(q)
        const b = await dir.query(q)
        assert.deepEqual(a.rows, b.rows)
        assert.equal(a.rows[0].n, 42)
        // A named prepared statement reused across executions.
        for (let i = 0; i < 3; i++) {
          const r = await via.query({ name: 'ghc-named', text: 'SELECT $1::int * 2 AS d', values: [i] })
          assert.equal(r.rows[0].d, i * 2)
        }
        await assert.rejects(via.query({ text: 'SELECT 1/$1::int', values: [0] }), (e: { code?: string }) => e.code === '22012')
        assert.equal((await via.query('SELECT 7 AS seven')).rows[0].seven, 7)
      } finally {
        await via.end()
        await dir.end()
      }
    }
  })

  test('pg driver: LISTEN/NOTIFY through the gateway', async () => {
    const listener = new pg.Client({ host: '127.0.0.1', port: gw.pgPort, database: 'app', user: 'alice', password: token })
    const notifier = new pg.Client({ host: '127.0.0.1', port: gw.pgPort, database: 'app', user: 'alice', password: token })
    await listener.connect()
    await notifier.connect()
    try {
      const got = new Promise<pg.Notification>((resolve) => listener.on('notification', resolve))
      await listener.query('LISTEN ghc_channel')
      await notifier.query("NOTIFY ghc_channel, 'payload ✓'")
      const n = await Promise.race([got, new Promise<never>((_, rej) => setTimeout(() => rej(new Error('no notification')), 5000))])
      assert.equal(n.channel, 'ghc_channel')
      assert.equal(n.payload, 'payload ✓')
    } finally {
      await listener.end()
      await notifier.end()
    }
  })

  test('postgres driver: named statements, and a cancelled pg_sleep(30) returns 57014 in under a second', async () => {
    const sql = postgres({
      host: '127.0.0.1',
      port: gw.pgPort,
      database: 'app',
      username: 'alice',
      password: token,
      max: 1,
      onnotice: () => undefined,
    })
    try {
      const rows = await sql`SELECT ${5}::int + ${6}::int AS s`
      assert.equal(rows[0]?.s, 11)
      const again = await sql`SELECT ${5}::int + ${6}::int AS s`
      assert.equal(again[0]?.s, 11)
      const started = Date.now()
      const q = sql`SELECT pg_sleep(30)`
      const res = q.then(
        () => null,
        (e: { code?: string }) => e,
      )
      await new Promise((r) => setTimeout(r, 200))
      q.cancel()
      const err = await res
      const elapsed = Date.now() - started
      assert.ok(err, 'the query should fail')
      assert.equal(err?.code, '57014')
      assert.ok(elapsed < 1200, `cancel took ${elapsed} ms`)
      // The session is still usable after the cancel.
      const ok = await sql`SELECT 1 AS one`
      assert.equal(ok[0]?.one, 1)
    } finally {
      await sql.end({ timeout: 2 })
    }
  })

  test('every statement is audited before it runs, with the chain, connection, decision and parameters', () => {
    const conn = gw.conninfo(token, 'app', 'application_name=ghc-audit')
    const r = psql(conn, "SELECT 'audit-marker-1'")
    assert.equal(r.code, 0, r.stderr)
    const events = gw.auditEvents()
    const st = events.find((e) => e.type === 'statement' && e.sql === "SELECT 'audit-marker-1'")
    assert.ok(st, 'statement event present')
    assert.deepEqual(st.chain, ['user:alice'])
    assert.equal(st.connection, 'app')
    assert.equal(st.decision, 'allow')
    assert.equal(typeof st.policy_version, 'string')
    const result = events.find((e) => e.type === 'result' && e.session === st.session && e.seq === st.seq)
    assert.ok(result, 'result event present')
    assert.equal(result.tag, 'SELECT 1')
    assert.equal(result.rows, 1)
    const start = events.find((e) => e.type === 'session.start' && e.session === st.session)
    assert.ok(start)
    assert.equal((start.client as { application: string }).application, 'ghc-audit')
    assert.ok(events.some((e) => e.type === 'session.end' && e.session === st.session))
    // Extended protocol: the parsed SQL and the bound parameters.
    const ext = events.find((e) => e.type === 'statement' && e.sql === 'SELECT $1::int * 2 AS d')
    assert.ok(ext)
    assert.deepEqual(ext.params, ['0'])
  })

  test('password literals are redacted in the audit', () => {
    const r = psql(gw.conninfo(token), "ALTER ROLE ghc_nobody_xyz PASSWORD 'sup3r-s3cret-literal'")
    assert.notEqual(r.code, 0) // the role does not exist; the statement is still audited
    const events = gw.auditEvents(['--type', 'statement'])
    const ev = events.find((e) => typeof e.sql === 'string' && e.sql.includes('ghc_nobody_xyz'))
    assert.ok(ev)
    assert.doesNotMatch(JSON.stringify(events), /sup3r-s3cret-literal/)
    assert.match(String(ev.sql), /PASSWORD '\[redacted\]'/)
  })
})
