// SQL guardrails that hold against a caller who is trying, through real psql and a real driver to
// real PostgreSQL, under a real Rego/WASM bundle (test/data/guardrails): every case of the evasion
// corpus (test/data/evasions.yaml) is refused with 42501 and changes nothing; the analytical corpus
// (test/data/analytics.sql) and pgbench run without a false rejection; a refused statement leaves a
// transaction exactly as a server error would, including an extended-protocol batch whose earlier
// statements were already forwarded.

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync, rmSync } from 'node:fs'
import { connect } from 'node:net'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import yaml from 'js-yaml'
import pg from 'pg'
import { serialize } from 'pg-protocol'
import { direct, LOCAL_PG, REPO, TestGateway } from './helpers/gateway.js'

interface EvasionCase {
  readonly name: string
  readonly sql: string
  readonly as?: readonly string[]
  readonly allowed_first?: boolean
  readonly then?: string
}

const DB = 'gh_guardrails'
const PROOF = '/tmp/gh-evasion-proof'

function dbSql(sql: string): string {
  const r = spawnSync('psql', ['-X', '-At', '-h', '127.0.0.1', '-U', 'postgres', '-d', DB, '-v', 'ON_ERROR_STOP=1', '-c', sql], {
    encoding: 'utf8',
  })
  if (r.status !== 0) throw new Error(r.stderr)
  return r.stdout.trim()
}

function runPsql(conninfo: string, commands: readonly string[]): { code: number | null; stdout: string; stderr: string } {
  const args = ['-X', '-At', '-v', 'ON_ERROR_STOP=1', '-v', 'VERBOSITY=verbose', '-d', conninfo]
  for (const c of commands) args.push('-c', c)
  const r = spawnSync('psql', args, { encoding: 'utf8', timeout: 30_000 })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

describe('SQL guardrails through the gateway', () => {
  let gw: TestGateway
  const tokens = new Map<string, string>()
  const tokenFor = (groups: readonly string[]): string => {
    const key = groups.join(',')
    let t = tokens.get(key)
    if (!t) {
      t = gw.token(
        `user:eve-${groups.join('-') || 'none'}`,
        groups.flatMap((g) => ['--group', g]),
      )
      tokens.set(key, t)
    }
    return t
  }
  const reset = (): void => {
    dbSql('TRUNCATE ghg_target; INSERT INTO ghg_target SELECT generate_series(1, 5)')
  }

  before(async () => {
    direct(`DROP DATABASE IF EXISTS ${DB}`)
    direct(`CREATE DATABASE ${DB}`)
    dbSql(
      "CREATE TABLE ghg_target (id int); CREATE SCHEMA hr; CREATE TABLE hr.salaries (emp text, amount int); INSERT INTO hr.salaries VALUES ('ann', 100)",
    )
    spawnSync('pgbench', ['-i', '-s', '1', '-q', '-h', '127.0.0.1', '-U', 'postgres', DB], { encoding: 'utf8' })
    reset()
    rmSync(PROOF, { force: true })
    gw = await TestGateway.start({
      connections: [{ ...LOCAL_PG, database: DB, labels: { env: 'prod' } }],
      config: { policies: join(REPO, 'test/data/guardrails') },
    })
  })
  after(async () => {
    await gw.cleanup()
    direct(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`)
  })

  const corpus = yaml.load(readFileSync(join(REPO, 'test/data/evasions.yaml'), 'utf8')) as EvasionCase[]

  for (const c of corpus) {
    test(`evasion refused: ${c.name}`, () => {
      reset()
      const conn = gw.conninfo(tokenFor(c.as ?? ['analysts']))
      const r = runPsql(conn, c.then ? [c.sql, c.then] : [c.sql])
      assert.notEqual(r.code, 0, `must be refused: ${r.stdout}`)
      assert.match(r.stderr, /ERROR: {2}42501: gatehouse: denied by [\w:-]+/, r.stderr)
      // The preparation itself ran (psql printed its tag or result) and only the follow-up was refused.
      if (c.allowed_first) assert.ok(r.stdout.trim().length > 0, `the preparation itself must be allowed: ${r.stderr}`)
      assert.equal(dbSql('SELECT count(*) FROM ghg_target'), '5', 'nothing changed')
      assert.equal(dbSql("SELECT string_agg(id::text, ',' ORDER BY id) FROM ghg_target"), '1,2,3,4,5')
      assert.equal(existsSync(PROOF), false, 'no program ran')
    })
  }

  test('the denial names the rule and the hop, and the audit has the decision with the policy version', () => {
    const r = runPsql(gw.conninfo(tokenFor(['analysts'])), ['SELECT * FROM hr.salaries'])
    assert.match(r.stderr, /gatehouse: denied by hr-only \(user:eve-analysts\): only group hr reads hr\.salaries/)
    const ev = gw.auditEvents(['--type', 'statement']).filter((e) => e.sql === 'SELECT * FROM hr.salaries')
    assert.ok(ev.length > 0)
    const last = ev[ev.length - 1] as Record<string, unknown>
    assert.equal(last.decision, 'deny')
    assert.deepEqual(last.rules, ['hr-only'])
    assert.match(String(last.policy_version), /^sha256:/)
    // The group that may, can.
    const ok = runPsql(gw.conninfo(tokenFor(['hr'])), ['SELECT emp FROM hr.salaries', 'SET search_path = hr', 'SELECT emp FROM salaries'])
    assert.equal(ok.code, 0, ok.stderr)
    assert.equal(ok.stdout.trim().split('\n').pop(), 'ann')
  })

  test('legitimate analytical SQL and pgbench are not rejected (false rejections: 0)', () => {
    const corpus = readFileSync(join(REPO, 'test/data/analytics.sql'), 'utf8')
      .split(/^-- ---\n/m)
      .map((s) => s.trim())
      .filter((s) => s && !s.startsWith('-- Legitimate'))
    const conn = gw.conninfo(tokenFor(['analysts']))
    const rejected: string[] = []
    for (const sql of corpus) {
      const r = runPsql(conn, [sql])
      if (r.code !== 0) rejected.push(`${sql}\n  ${r.stderr.trim()}`)
    }
    assert.deepEqual(rejected, [], `false rejections: ${rejected.length} of ${corpus.length}`)
    const writer = gw.conninfo(tokenFor(['writers']))
    for (const mode of ['simple', 'extended', 'prepared']) {
      const run = spawnSync('pgbench', ['-n', '-M', mode, '-c', '2', '-t', '50', writer], { encoding: 'utf8' })
      assert.equal(run.status, 0, run.stderr)
      assert.match(run.stdout, /number of failed transactions: 0/)
    }
  })

  test('a refused statement inside a transaction block leaves it unable to commit, as a server error would', async () => {
    const c = new pg.Client({ host: '127.0.0.1', port: gw.pgPort, database: 'app', user: 'w', password: tokenFor(['writers']) })
    await c.connect()
    try {
      reset()
      await c.query('BEGIN')
      await c.query('INSERT INTO ghg_target VALUES (42)')
      await assert.rejects(c.query('DELETE FROM ghg_target'), (e: { code?: string; message: string }) => {
        assert.equal(e.code, '42501')
        assert.match(e.message, /^gatehouse: denied by no-unbounded-write \(user:eve-writers\): UPDATE or DELETE without WHERE$/)
        return true
      })
      await assert.rejects(c.query('SELECT 1'), (e: { code?: string }) => e.code === '25P02')
      const end = await c.query('COMMIT')
      assert.equal(end.command, 'ROLLBACK')
      assert.equal(dbSql('SELECT count(*) FROM ghg_target WHERE id = 42'), '0')
      // Outside a transaction the session simply goes on.
      assert.equal((await c.query('SELECT 7 AS x')).rows[0].x, 7)
    } finally {
      await c.end()
    }
  })

  test('a refused Execute in an extended-protocol batch rolls back the batch’s earlier, forwarded statements', async () => {
    reset()
    const token = tokenFor(['writers'])
    const sock = connect({ host: '127.0.0.1', port: gw.pgPort })
    await new Promise<void>((r) => sock.once('connect', () => r()))
    let buf = Buffer.alloc(0)
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d])
    })
    const waitFor = async (pred: () => boolean): Promise<void> => {
      for (let i = 0; i < 200 && !pred(); i++) await new Promise((r) => setTimeout(r, 25))
      assert.ok(pred(), 'timed out waiting for the gateway')
    }
    const readyCount = (): number => {
      let n = 0
      for (let i = 0; i + 5 < buf.length; ) {
        const len = buf.readInt32BE(i + 1)
        if (buf[i] === 0x5a) n++
        i += len + 1
      }
      return n
    }
    sock.write(serialize.startup({ user: 'w', database: 'app' }))
    await waitFor(() => buf.length >= 9)
    buf = Buffer.alloc(0)
    sock.write(serialize.password(token))
    await waitFor(() => readyCount() === 1)
    buf = Buffer.alloc(0)
    // One batch, one Sync: an allowed INSERT, then a DELETE without WHERE that policy refuses.
    sock.write(
      Buffer.concat([
        serialize.parse({ text: 'INSERT INTO ghg_target VALUES (77)' }),
        serialize.bind({}),
        serialize.execute({}),
        serialize.parse({ text: 'DELETE FROM ghg_target' }),
        serialize.bind({}),
        serialize.execute({}),
        serialize.sync(),
      ]),
    )
    await waitFor(() => readyCount() === 1)
    const text = buf.toString('latin1')
    assert.match(text, /42501/)
    assert.match(text, /gatehouse: denied by no-unbounded-write/)
    assert.doesNotMatch(text, /syntax error/, 'the stand-in error never reaches the client')
    sock.end(serialize.end())
    // The INSERT ran on the server, inside the batch's implicit transaction, and was rolled back.
    assert.equal(dbSql('SELECT count(*) FROM ghg_target WHERE id = 77'), '0')
    assert.equal(dbSql('SELECT count(*) FROM ghg_target'), '5')
  })

  test('the same write through the driver’s extended protocol is refused too', async () => {
    const c = new pg.Client({ host: '127.0.0.1', port: gw.pgPort, database: 'app', user: 'a', password: tokenFor(['analysts']) })
    await c.connect()
    try {
      await assert.rejects(
        c.query({ text: 'DELETE FROM ghg_target WHERE id = $1', values: [1] }),
        (e: { code?: string }) => e.code === '42501',
      )
      await assert.rejects(
        c.query({ name: 'gh-named', text: 'SELECT pg_read_file($1)', values: ['/etc/hostname'] }),
        (e: { code?: string }) => e.code === '42501',
      )
      assert.equal((await c.query({ text: 'SELECT count(*)::int AS n FROM ghg_target WHERE id > $1', values: [0] })).rows[0].n, 5)
    } finally {
      await c.end()
    }
  })
})
