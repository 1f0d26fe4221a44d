// Work a statement defers to a later one, through a real gateway to the machine's PostgreSQL with
// psql and node-postgres: a WITH HOLD cursor's query runs at COMMIT, a DEFERRABLE INITIALLY
// DEFERRED foreign key is checked at COMMIT (or at the Sync that ends an implicit transaction).
// Their errors quote values the earlier statement read; for a chain that masking rules apply to,
// the client, the audit and the recording get only the SQLSTATE. And a SET search_path inside a
// transaction block is followed exactly (savepoints too): the block can always be ended, and later
// statements are masked under the path the server really has.

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import yaml from 'js-yaml'
import pg from 'pg'
import { LOCAL_PG, REPO, TestGateway } from './helpers/gateway.js'

const DB = 'gh_deferred_errors'
const SECRETS = ['ann.secret@example.com', 'bob.hidden@example.org', '123-45-6789', '987-65-4321', 'carol.private@example.net']
const WITHHELD = /withheld because the statement reads masked columns \(SQLSTATE (\w+)\)/

function admin(sql: string, db = DB): string {
  const r = spawnSync('psql', ['-X', '-At', '-h', '127.0.0.1', '-U', 'postgres', '-d', db, '-v', 'ON_ERROR_STOP=1', '-c', sql], {
    encoding: 'utf8',
  })
  if (r.status !== 0) throw new Error(`admin psql failed: ${r.stderr}`)
  return r.stdout.trim()
}

function filesUnder(dir: string): string[] {
  const out: string[] = []
  for (const name of readdirSync(dir)) {
    const p = join(dir, name)
    const st = statSync(p)
    if (st.isDirectory()) out.push(...filesUnder(p))
    else if (st.isFile()) out.push(p)
  }
  return out
}

const MASKING_YAML = {
  rules: [
    { name: 'emails', columns: ['*.email'], strategy: 'partial', keep: 4, clear_for: ['pii-readers'] },
    { name: 'ssn', columns: ['public.users.ssn'], strategy: 'redact', clear_for: ['pii-readers'] },
  ],
}

describe('errors of deferred work, and search_path in a transaction block, under masking', () => {
  let gw: TestGateway
  let policyDir: string
  let reader = '' // no groups: reads only, not cleared
  let writer = '' // writers: may write, not cleared
  let cleared = '' // pii-readers

  /** psql with one Query per `-c`, going on after errors (like a user at the prompt). */
  const run = (token: string, ...sqls: string[]): { code: number | null; out: string; stdout: string; stderr: string } => {
    const r = spawnSync('psql', ['-X', '-At', '-d', gw.conninfo(token), ...sqls.flatMap((s) => ['-c', s])], {
      encoding: 'utf8',
      timeout: 90_000,
    })
    return { code: r.status, out: r.stdout + r.stderr, stdout: r.stdout, stderr: r.stderr }
  }

  const leaks = (text: string): string[] => SECRETS.filter((s) => text.includes(s))

  /** Every byte the gateway keeps (audit log, recordings) and logs, searched for the clear values. */
  const storedLeaks = (): string[] => {
    const hay = filesUnder(gw.dataDir)
      .map((f) => readFileSync(f).toString('latin1'))
      .concat(gw.stdout, gw.stderr)
      .join('\n')
    return leaks(hay)
  }

  before(async () => {
    admin(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`, 'test')
    admin(`CREATE DATABASE ${DB}`, 'test')
    admin(`
      CREATE TABLE users (id int primary key, name text, email text, ssn text);
      INSERT INTO users VALUES (1, 'Ann', 'ann.secret@example.com', '123-45-6789'), (2, 'Bob', 'bob.hidden@example.org', '987-65-4321');
      CREATE SCHEMA s;
      CREATE TABLE s.users (id int, name text, email text, ssn text);
      INSERT INTO s.users VALUES (1, 'decoy', 'd@d', '000-00-0000');
      CREATE TABLE parent (id int primary key, email text unique);
      CREATE TABLE child (id int, email text REFERENCES parent(email) DEFERRABLE INITIALLY DEFERRED);
      INSERT INTO parent VALUES (1, 'carol.private@example.net'), (2, 'carol.private@example.net.2');
      INSERT INTO child VALUES (1, 'carol.private@example.net'), (2, 'carol.private@example.net.2');
    `)
    policyDir = mkdtempSync(join(tmpdir(), 'gh-deferred-policy-'))
    for (const f of ['gatehouse.rego', 'guardrails.rego', 'approvals.yaml']) copyFileSync(join(REPO, 'policies', f), join(policyDir, f))
    writeFileSync(join(policyDir, 'masking.yaml'), yaml.dump(MASKING_YAML))
    gw = await TestGateway.start({ connections: [{ ...LOCAL_PG, database: DB }], config: { policies: policyDir } })
    reader = gw.token('user:rita')
    writer = gw.token('user:eve', ['--group', 'writers'])
    cleared = gw.token('user:pat', ['--group', 'pii-readers', '--group', 'writers'])
  })

  after(async () => {
    await gw?.cleanup()
    if (policyDir) rmSync(policyDir, { recursive: true, force: true })
    admin(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`, 'test')
  })

  const holdCursor = 'declare c cursor with hold for select email::int from users'

  for (const [label, sqls] of [
    ['COMMIT', ['begin', holdCursor, 'commit']],
    ['END', ['begin', `${holdCursor} where id = 2`, 'end']],
    ['COMMIT AND CHAIN', ['begin', 'declare c cursor with hold for select ssn::int from users', 'commit and chain', 'rollback']],
    ['one simple Query', [`begin; ${holdCursor}; commit`]],
  ] as const) {
    test(`a WITH HOLD cursor materialized at ${label}: the error is withheld from a reader without clearance`, () => {
      const r = run(reader, ...sqls)
      assert.match(r.stderr, WITHHELD, r.out)
      assert.equal(WITHHELD.exec(r.stderr)?.[1], '22P02')
      assert.deepEqual(leaks(r.out), [])
      // The session goes on.
      assert.match(run(reader, ...sqls, 'select 1').stdout, /^1$/m)
    })
  }

  test('a WITH HOLD cursor declared outside a block is materialized at once: its error (0A000 cross-database reference, quoting the value) is withheld', () => {
    const r = run(reader, 'declare c cursor with hold for select email::regclass from users', 'select 1')
    assert.equal(WITHHELD.exec(r.stderr)?.[1], '0A000', r.out)
    assert.deepEqual(leaks(r.out), [])
    assert.match(r.stdout, /^1$/m)
    // In one simple Query the implicit transaction ends after the last statement completed.
    const q = run(reader, 'declare c cursor with hold for select email::regclass from users; select 2')
    assert.equal(WITHHELD.exec(q.stderr)?.[1], '0A000', q.out)
    assert.deepEqual(leaks(q.out), [])
  })

  test('the same COMMIT for a cleared chain passes the server message', () => {
    const r = run(cleared, 'begin', 'declare c cursor with hold for select email::int from s.users', 'commit')
    assert.match(r.stderr, /invalid input syntax for type integer: "d@d"/)
  })

  test('a deferred foreign key checked at COMMIT: DETAIL withheld from a writer without clearance', () => {
    const r = run(writer, 'select email from parent order by id', 'begin', 'delete from parent where id = 1', 'commit')
    assert.match(r.stdout, /\*\*\*\*\.net/)
    assert.equal(WITHHELD.exec(r.stderr)?.[1], '23503', r.out)
    assert.doesNotMatch(r.stderr, /DETAIL|Key \(/)
    assert.deepEqual(leaks(r.out), [])
    assert.equal(admin('select count(*) from parent'), '2')
  })

  test('deferred work over the extended protocol: COMMIT as Parse/Bind/Execute, and the Sync of an implicit transaction', async () => {
    const c = new pg.Client({ connectionString: `postgresql://eve:${writer}@127.0.0.1:${gw.pgPort}/app?sslmode=disable` })
    await c.connect()
    try {
      await c.query('begin')
      await c.query({ text: 'delete from parent where id = $1', values: [1] })
      const e1 = await c.query({ name: 'commit_stmt', text: 'commit' }).then(
        () => null,
        (e: Error & { code?: string; detail?: string }) => e,
      )
      assert.ok(e1, 'the commit fails')
      assert.equal(e1.code, '23503')
      assert.match(e1.message, WITHHELD)
      assert.equal(e1.detail, undefined)
      // No block: the DELETE's implicit transaction ends at the Sync, which checks the key.
      const e2 = await c.query({ text: 'delete from parent where id = $1', values: [2] }).then(
        () => null,
        (e: Error & { code?: string; detail?: string }) => e,
      )
      assert.ok(e2, 'the delete fails')
      assert.equal(e2.code, '23503')
      assert.match(e2.message, WITHHELD)
      assert.equal(e2.detail, undefined)
      for (const e of [e1, e2]) assert.deepEqual(leaks(JSON.stringify({ ...e, message: e.message })), [])
    } finally {
      await c.end()
    }
    assert.equal(admin('select count(*) from parent'), '2')
  })

  test('a data exception of a statement that names no masked relation is withheld too (class 22)', () => {
    const r = run(reader, "select 'not-a-number'::int")
    assert.equal(WITHHELD.exec(r.stderr)?.[1], '22P02', r.out)
  })

  test('nothing of the withheld errors reaches the audit log, recordings or logs', () => {
    const ev = gw.auditEvents(['--type', 'result']).filter((e) => (e.error as { code?: string } | undefined)?.code === '22P02')
    // The cleared chain's COMMIT keeps the server's text; every other one is the gateway's.
    const messages = ev.map((e) => String((e.error as { message?: string }).message))
    assert.ok(messages.filter((m) => WITHHELD.test(m)).length >= 8, messages.join('\n'))
    assert.deepEqual(
      messages.filter((m) => !WITHHELD.test(m)),
      ['invalid input syntax for type integer: "d@d"'],
    )
    assert.deepEqual(storedLeaks(), [])
  })

  test('SET search_path in a transaction block: ROLLBACK works, and statements follow the path the server has', () => {
    const r = run(
      reader,
      'begin',
      'set search_path = s, public',
      'select ssn from users', // s.users: no rule, the decoy in clear
      'rollback',
      'select ssn from users', // public.users again: redacted
      'select 1',
    )
    assert.equal(r.code, 0, r.out)
    assert.deepEqual(r.stdout.trim().split('\n'), ['BEGIN', 'SET', '000-00-0000', 'ROLLBACK', '****', '****', '1'])
    assert.deepEqual(leaks(r.out), [])
  })

  test('SET search_path in a block, COMMIT and ABORT', () => {
    const a = run(reader, 'begin', 'set search_path = s, public', 'commit', 'select ssn from users', 'show search_path')
    assert.equal(a.code, 0, a.out)
    assert.deepEqual(a.stdout.trim().split('\n'), ['BEGIN', 'SET', 'COMMIT', '000-00-0000', 's, public'])
    const b = run(reader, 'begin', 'set search_path = s, public', 'abort', 'select ssn from users')
    assert.equal(b.code, 0, b.out)
    assert.deepEqual(b.stdout.trim().split('\n'), ['BEGIN', 'SET', 'ROLLBACK', '****', '****'])
  })

  test('an aborted transaction block ends with ROLLBACK; the session goes on', () => {
    const r = run(reader, 'begin', 'select 1/0', 'rollback', 'select 1')
    assert.match(r.stderr, /SQLSTATE 22012/)
    assert.deepEqual(r.stdout.trim().split('\n'), ['BEGIN', 'ROLLBACK', '1'])
    const t = run(reader, 'begin', 'set search_path = s, public', 'select 1/0', 'select 1', 'rollback', 'select ssn from users')
    assert.match(t.stderr, /25P02|current transaction is aborted/)
    assert.deepEqual(t.stdout.trim().split('\n'), ['BEGIN', 'SET', 'ROLLBACK', '****', '****'])
  })

  test('savepoints: ROLLBACK TO restores the path, RELEASE keeps it, an error inside a savepoint is undone', () => {
    const r = run(
      reader,
      'begin',
      'savepoint a',
      'set search_path = s, public',
      'select ssn from users', // s
      'rollback to a',
      'select ssn from users', // public: redacted
      'set search_path = s, public',
      'savepoint b',
      'set local search_path = public',
      'select 1/0',
      'rollback to savepoint b',
      'select ssn from users', // s again
      'release a',
      'select ssn from users', // s
      'commit',
      'select ssn from users', // s (committed)
    )
    assert.deepEqual(r.stdout.trim().split('\n'), [
      'BEGIN',
      'SAVEPOINT',
      'SET',
      '000-00-0000',
      'ROLLBACK',
      '****',
      '****',
      'SET',
      'SAVEPOINT',
      'SET',
      'ROLLBACK',
      '000-00-0000',
      'RELEASE',
      '000-00-0000',
      'COMMIT',
      '000-00-0000',
    ])
    assert.deepEqual(leaks(r.out), [])
  })

  test('a ROLLBACK TO of a savepoint the gateway never saw made: the block can still be ended', () => {
    const r = run(reader, 'begin', 'set search_path = s, public', 'rollback to nosuch', 'rollback', 'select ssn from users')
    assert.match(r.stderr, /savepoint "nosuch" does not exist/)
    assert.deepEqual(r.stdout.trim().split('\n'), ['BEGIN', 'SET', 'ROLLBACK', '****', '****'])
  })
})
