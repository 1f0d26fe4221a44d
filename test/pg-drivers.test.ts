// What drivers see through the gateway matches what PostgreSQL itself does, for the cases
// node-postgres's own integration suite exposed (bench/node-postgres-suite.sh runs that suite):
// a Terminate before any StartupMessage is answered with a silent close, as PostgreSQL does (raw
// bytes, compared with the server); a 2 MB query and a COPY FROM STDIN written one byte at a time
// (every message split across many reads) go through and arrive whole; and when the server ends a
// session (pg_terminate_backend, 57P01) the client's socket closes at once. And `options`
// (PGOPTIONS) with real psql: allowed settings take effect and are audited as SETs; a setting the
// policy denies, one off the allow-list, and one that changes lexing each refuse the connection.

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'
import { serialize } from 'pg-protocol'
import fc from 'fast-check'
import { encodeStartupOptions, parseStartupOptions, splitOptions } from '../proxies/postgres/startup-options.js'
import { direct, REPO, TestGateway } from './helpers/gateway.js'

/** Writers may INSERT (and COPY FROM STDIN) under the default policy bundle. */
const WRITER = ['--group', 'writers']
const TABLE = 'ghd_copy_bytes'

interface Received {
  readonly bytes: Buffer[]
  readonly closed: Promise<void>
}

function rawConnect(port: number): Promise<{ socket: Socket; received: Received }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, noDelay: true })
    const bytes: Buffer[] = []
    const closed = new Promise<void>((r) => socket.on('close', () => r()))
    socket.on('data', (d: Buffer) => bytes.push(d))
    socket.once('error', reject)
    socket.once('connect', () => resolve({ socket, received: { bytes, closed } }))
  })
}

/** Frames backend messages from a byte stream (type byte, Int32 length). */
class Frames {
  private buf = Buffer.alloc(0)
  readonly types: string[] = []
  readonly errors: string[] = []
  /** The first column of each DataRow, as text. */
  readonly values: string[] = []

  push(d: Buffer): void {
    this.buf = Buffer.concat([this.buf, d])
    while (this.buf.length >= 5) {
      const len = this.buf.readInt32BE(1)
      if (this.buf.length < len + 1) return
      const type = String.fromCharCode(this.buf[0] as number)
      this.types.push(type)
      if (type === 'E')
        this.errors.push(
          this.buf
            .subarray(5, len + 1)
            .toString('utf8')
            .replace(/\0/g, ' '),
        )
      if (type === 'D') {
        const n = this.buf.readInt32BE(7)
        this.values.push(this.buf.toString('utf8', 11, 11 + n))
      }
      this.buf = this.buf.subarray(len + 1)
    }
  }

  async until(pred: () => boolean, what: string, ms = 15_000): Promise<void> {
    const end = Date.now() + ms
    while (!pred()) {
      if (Date.now() > end) assert.fail(`timed out waiting for ${what}; got ${this.types.join('')} ${this.errors.join('; ')}`)
      await sleep(5)
    }
  }

  count(t: string): number {
    return this.types.filter((x) => x === t).length
  }
}

/** Writes `b` one byte per write(2), each write waited for: every message arrives split across many reads. */
async function writeBytewise(s: Socket, b: Buffer): Promise<void> {
  for (let i = 0; i < b.length; i++) {
    await new Promise<void>((r, j) => s.write(b.subarray(i, i + 1), (err) => (err ? j(err) : r())))
    // Let the gateway read between writes now and then, so reads really are this small.
    if (i % 64 === 0) await new Promise((r) => setImmediate(r))
  }
}

/** A guardrail for the PGOPTIONS tests: a statement_timeout of an hour is denied by policy. */
const DENY_LONG_TIMEOUT = `package gatehouse

deny contains {"rule": "no-hour-timeout", "reason": "statement_timeout of an hour is not allowed"} if {
	input.action == "sql.session"
	contains(input.command.sql, "statement_timeout = '1h'")
}
`

function psqlWithOptions(conninfo: string, options: string, sql: string): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync('psql', ['-X', '-At', '-v', 'ON_ERROR_STOP=1', '-d', conninfo, '-c', sql], {
    encoding: 'utf8',
    timeout: 30_000,
    env: { ...process.env, PGOPTIONS: options },
  })
  return { code: r.status, stdout: r.stdout.trim(), stderr: r.stderr }
}

describe('startup options, read as PostgreSQL splits them', () => {
  test('startup options: what the gateway sends upstream splits back into exactly the settings it accepted', () => {
    assert.deepEqual(splitOptions('  -c a=b\\ c\t--x=\\\\y\\'), ['-c', 'a=b c', '--x=\\y'])
    fc.assert(
      fc.property(
        fc.constantFrom('search_path', 'timezone', 'datestyle'),
        fc.string({ unit: fc.constantFrom(' ', '\\', '\t', '\n', '\v', 'a', '-', '=', "'", 'é', '😀') }),
        (name, raw) => {
          const value = raw
          const sent = encodeStartupOptions([{ name, value }])
          assert.deepEqual(parseStartupOptions(sent), [{ name, value }])
        },
      ),
      { numRuns: 300 },
    )
  })
})

describe('PostgreSQL drivers: protocol edges', { timeout: 240_000 }, () => {
  let gw: TestGateway
  let writer: string
  let policyDir: string

  before(async () => {
    direct(`DROP TABLE IF EXISTS ${TABLE}; CREATE TABLE ${TABLE} (id int, v text)`)
    policyDir = mkdtempSync(join(tmpdir(), 'gh-drivers-policy-'))
    cpSync(join(REPO, 'policies'), policyDir, { recursive: true })
    writeFileSync(join(policyDir, 'startup_test_guardrail.rego'), DENY_LONG_TIMEOUT)
    gw = await TestGateway.start({ config: { policies: policyDir } })
    writer = gw.token('user:alice', WRITER)
  })
  after(async () => {
    await gw?.cleanup()
    if (policyDir) rmSync(policyDir, { recursive: true, force: true })
    direct(`DROP TABLE IF EXISTS ${TABLE}`)
  })

  test('a Terminate before the StartupMessage: closed without a reply, exactly as PostgreSQL does', async () => {
    const terminate = Buffer.from([0x58, 0, 0, 0, 4])
    for (const [name, port] of [
      ['PostgreSQL', 5432],
      ['the gateway', gw.pgPort],
    ] as const) {
      const { socket, received } = await rawConnect(port)
      socket.on('error', () => undefined)
      socket.write(terminate)
      await Promise.race([received.closed, sleep(5000).then(() => assert.fail(`${name} did not close the socket`))])
      assert.equal(Buffer.concat(received.bytes).length, 0, `${name} sends nothing back`)
    }
    // A driver's connect(); end() before the connection is up: end() resolves as it does against
    // PostgreSQL (node-postgres leaves that connect() promise unsettled either way).
    const c = new pg.Client({ host: '127.0.0.1', port: gw.pgPort, database: 'app', user: 'alice', password: writer })
    c.connect().catch(() => undefined)
    await Promise.race([c.end(), sleep(5000).then(() => assert.fail('end() did not resolve'))])
    assert.doesNotMatch(gw.stderr, /internal error in the PostgreSQL proxy/)
  })

  test('a 2 MB query and an empty one go through, and the session stays usable', async () => {
    const c = new pg.Client({ host: '127.0.0.1', port: gw.pgPort, database: 'app', user: 'alice', password: writer })
    await c.connect()
    try {
      const big = 'x'.repeat(2 * 1024 * 1024)
      const r = await c.query(`SELECT length('${big}') AS n`)
      assert.equal(r.rows[0]?.n, big.length)
      const r2 = await c.query('SELECT $1::text AS v', [big])
      assert.equal(String(r2.rows[0]?.v ?? '').length, big.length)
      // An empty text is a query of no statements, answered by the server (EmptyQueryResponse).
      const empty = await c.query('')
      assert.deepEqual(empty.rows, [])
      const r3 = await c.query('SELECT 1 AS one')
      assert.equal(r3.rows[0]?.one, 1)
    } finally {
      await c.end()
    }
  })

  test('COPY FROM STDIN and queries written one byte at a time arrive whole', async () => {
    const { socket, received } = await rawConnect(gw.pgPort)
    const frames = new Frames()
    socket.on('data', (d: Buffer) => frames.push(d))
    void received
    await writeBytewise(socket, serialize.startup({ user: 'alice', database: 'app' }))
    await frames.until(() => frames.count('R') > 0, 'the password request')
    await writeBytewise(socket, serialize.password(writer))
    await frames.until(() => frames.count('Z') > 0, 'ReadyForQuery after authentication')
    assert.deepEqual(frames.errors, [])

    const rows = Array.from({ length: 40 }, (_, i) => `${i}\tvalue number ${i} ${'y'.repeat(i)}\n`)
    const copy = Buffer.concat([
      serialize.query(`COPY ${TABLE} (id, v) FROM STDIN`),
      ...rows.map((r) => serialize.copyData(Buffer.from(r))),
      serialize.copyDone(),
    ])
    // The CopyInResponse comes before the data is sent, as a driver waits for it.
    const head = serialize.query(`COPY ${TABLE} (id, v) FROM STDIN`)
    await writeBytewise(socket, head)
    await frames.until(() => frames.count('G') > 0, 'CopyInResponse')
    await writeBytewise(socket, copy.subarray(head.length))
    await frames.until(() => frames.count('Z') > 1, 'ReadyForQuery after COPY')
    assert.deepEqual(frames.errors, [])
    assert.equal(
      direct(`SELECT count(*) || ':' || sum(length(v)) FROM ${TABLE}`),
      `40:${rows.reduce((n, r) => n + r.length - r.indexOf('\t') - 2, 0)}`,
    )

    // The extended protocol, every message split across reads, in one pipelined batch.
    const batch = Buffer.concat([
      serialize.parse({ text: `SELECT count(*)::int FROM ${TABLE} WHERE id >= $1` }),
      serialize.bind({ values: ['10'] }),
      serialize.describe({ type: 'P' }),
      serialize.execute(),
      serialize.sync(),
    ])
    await writeBytewise(socket, batch)
    await frames.until(() => frames.count('Z') > 2, 'ReadyForQuery after the extended batch')
    assert.deepEqual(frames.errors, [])
    assert.ok(frames.count('D') >= 1, 'a DataRow came back')
    socket.end(serialize.end())
    await received.closed
  })

  test('a 2 MB query written in 1-byte pieces, then in small ones, arrives whole', async () => {
    const { socket, received } = await rawConnect(gw.pgPort)
    const frames = new Frames()
    socket.on('data', (d: Buffer) => frames.push(d))
    socket.write(serialize.startup({ user: 'alice', database: 'app' }))
    await frames.until(() => frames.count('R') > 0, 'the password request')
    socket.write(serialize.password(writer))
    await frames.until(() => frames.count('Z') > 0, 'ReadyForQuery after authentication')
    const big = 'z'.repeat(2 * 1024 * 1024)
    const q = serialize.query(`SELECT length('${big}') AS n`)
    // Thousands of reads of one incomplete message: the first 16 KiB a byte at a time, the rest in
    // pieces of 997 bytes (every read ends mid-message).
    await writeBytewise(socket, q.subarray(0, 16 * 1024))
    for (let at = 16 * 1024, i = 0; at < q.length; at += 997, i++) {
      await new Promise<void>((r, j) => socket.write(q.subarray(at, at + 997), (err) => (err ? j(err) : r())))
      if (i % 16 === 0) await new Promise((r) => setImmediate(r))
    }
    await frames.until(() => frames.count('Z') > 1, 'ReadyForQuery after the 2 MB query')
    assert.deepEqual(frames.errors, [])
    assert.ok(frames.count('D') === 1, 'one DataRow came back')
    socket.end(serialize.end())
    await received.closed
    assert.doesNotMatch(gw.stderr, /internal error in the PostgreSQL proxy|Maximum call stack/)
  })

  test('large queries back to back, and pipelined behind one another, each run exactly as sent', async () => {
    // The reader keeps a large frame's buffer for the next large frame once the frame has been
    // written to the server: a buffer reused too early would change a query still queued.
    const md5 = (t: string): string => createHash('md5').update(t).digest('hex')
    const texts = [300 * 1024, 2 * 1024 * 1024, 1024 * 1024, 2 * 1024 * 1024 + 7].map((n, i) => 'abcd'.charAt(i).repeat(n))
    const c = new pg.Client({ host: '127.0.0.1', port: gw.pgPort, database: 'app', user: 'alice', password: writer })
    await c.connect()
    try {
      for (const t of texts) {
        const r = await c.query(`SELECT md5('${t}') AS h`)
        assert.equal(r.rows[0]?.h, md5(t))
      }
    } finally {
      await c.end()
    }
    // Raw: a sleep (the server reads nothing meanwhile, so writes to it queue up), six large
    // queries of one size (each fits the buffer the one before it had) and a small one in one
    // write, then again in pieces; each answer must be the digest of its own text.
    const { socket, received } = await rawConnect(gw.pgPort)
    const frames = new Frames()
    socket.on('data', (d: Buffer) => frames.push(d))
    socket.write(serialize.startup({ user: 'alice', database: 'app' }))
    await frames.until(() => frames.count('R') > 0, 'the password request')
    socket.write(serialize.password(writer))
    await frames.until(() => frames.count('Z') > 0, 'ReadyForQuery after authentication')
    const sent = [...'bcdefg'].map((ch) => ch.repeat(2 * 1024 * 1024)).concat('small')
    const batch = ['SELECT pg_sleep(0.5)', ...sent.map((t) => `SELECT md5('${t}')`)]
    const wire = Buffer.concat(batch.map((q) => serialize.query(q)))
    socket.write(wire)
    for (let at = 0; at < wire.length; at += 40_000) {
      await new Promise<void>((r, j) => socket.write(wire.subarray(at, at + 40_000), (err) => (err ? j(err) : r())))
    }
    await frames.until(() => frames.count('Z') > 2 * batch.length, 'ReadyForQuery after each query', 60_000)
    assert.deepEqual(frames.errors, [])
    const expected = ['', ...sent.map(md5)]
    assert.deepEqual(frames.values, [...expected, ...expected])
    socket.end(serialize.end())
    await received.closed
  })

  test('when the server ends the session (pg_terminate_backend), the client socket closes at once', async () => {
    const app = `ghd-term-${process.pid}`
    const c = new pg.Client({ host: '127.0.0.1', port: gw.pgPort, database: 'app', user: 'alice', password: writer, application_name: app })
    await c.connect()
    await c.query('SELECT 1')
    let errorAt = 0
    let code = ''
    c.on('error', (e: Error & { code?: string }) => {
      errorAt ||= performance.now()
      code ||= e.code ?? ''
    })
    const ended = new Promise<number>((r) => c.on('end', () => r(performance.now())))
    assert.equal(direct(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '${app}'`), '1')
    const endAt = await Promise.race([ended, sleep(5000).then(() => assert.fail('the client socket did not close'))])
    assert.equal(code, '57P01')
    assert.ok(errorAt > 0)
    const gap = endAt - errorAt
    assert.ok(gap < 200, `the socket closed ${gap.toFixed(0)} ms after the server's FATAL (want < 200 ms)`)
  })

  test('PGOPTIONS: allowed settings take effect, parsed as PostgreSQL parses them, and are audited as SETs', () => {
    // psql sends application_name itself (fallback "psql"), and a startup parameter wins over
    // options in PostgreSQL too: the comparison with the server shows the same precedence.
    const options =
      '-c search_path=ghd\\\\x,public --statement-timeout=7s -clock_timeout=3s -c DateStyle=ISO,\\ DMY -c application_name=ghd'
    const sql = 'SHOW search_path; SHOW statement_timeout; SHOW lock_timeout; SHOW DateStyle; SHOW application_name'
    const through = psqlWithOptions(gw.conninfo(writer), options, sql)
    assert.equal(through.code, 0, through.stderr)
    const direct = psqlWithOptions('host=127.0.0.1 port=5432 dbname=test user=postgres sslmode=disable', options, sql)
    assert.equal(direct.code, 0, direct.stderr)
    assert.deepEqual(through.stdout.split('\n'), ['ghd\\x,public', '7s', '3s', 'ISO, DMY', 'psql'])
    assert.equal(through.stdout, direct.stdout, 'the same settings as PostgreSQL itself takes from these options')
    const sets = gw.auditEvents().filter((e) => e.type === 'statement' && e.startup_option === true)
    const bySql = new Map(sets.map((e) => [e.sql, e]))
    for (const text of [
      "SET search_path = 'ghd\\x,public'",
      "SET statement_timeout = '7s'",
      "SET lock_timeout = '3s'",
      "SET datestyle = 'ISO, DMY'",
      "SET application_name = 'ghd'",
    ]) {
      const e = bySql.get(text)
      assert.ok(e, `audited: ${text} (have ${[...bySql.keys()].join(' | ')})`)
      assert.equal(e.action, 'sql.session')
      assert.equal(e.decision, 'allow')
    }
    // The session's statements continue the startup settings' numbering: no seq is used twice.
    const session = sets[0]?.session
    const seqs = gw
      .auditEvents()
      .filter((e) => e.type === 'statement' && e.session === session)
      .map((e) => e.seq)
    assert.equal(seqs.length, 6, 'five SETs and the query')
    assert.equal(new Set(seqs).size, seqs.length, `distinct seqs: ${seqs.join(', ')}`)
  })

  test('PGOPTIONS: a setting the policy denies, one off the allow-list, and one that changes lexing refuse the connection', () => {
    for (const [options, want] of [
      ['-c statement_timeout=1h', /denied by no-hour-timeout.*statement_timeout/],
      ['-c role=postgres', /setting "role" is not allowed in startup options/],
      ['--session-authorization=postgres', /setting "session_authorization" is not allowed/],
      ['-c standard_conforming_strings=off', /setting "standard_conforming_strings" changes how the server reads SQL/],
      ['-c client_encoding=SJIS', /setting "client_encoding" changes how the server reads SQL/],
      ['-c backslash_quote=on', /setting "backslash_quote" changes how the server reads SQL/],
      ['-B 100', /startup option "-B" is not allowed/],
      ['-c search_path', /requires a value/],
    ] as const) {
      const r = psqlWithOptions(gw.conninfo(writer), options, 'SELECT 1')
      assert.notEqual(r.code, 0, `${options}: refused`)
      assert.match(r.stderr, want, options)
    }
    const denied = gw.auditEvents().filter((e) => e.type === 'statement' && e.startup_option === true && e.decision === 'deny')
    assert.ok(
      denied.some((e) => e.sql === "SET statement_timeout = '1h'"),
      'the denied SET is audited',
    )
    // client_encoding UTF8 is what the gateway asks for anyway: accepted.
    const utf8 = psqlWithOptions(gw.conninfo(writer), '-c client_encoding=utf-8', 'SHOW client_encoding')
    assert.equal(utf8.code, 0, utf8.stderr)
    assert.equal(utf8.stdout, 'UTF8')
  })
})
