// Masking through the PostgreSQL proxy, end to end: a real gateway, the machine's
// PostgreSQL, psql and Node drivers. Every case of the laundering corpus (test/data/laundering.yaml)
// runs through a relay that records every byte the gateway sends the client; the clear values must
// not appear in any form (as is, upper case, reversed, base64, hex) unless the case expects them.

import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import yaml from 'js-yaml'
import pg from 'pg'
import postgres from 'postgres'
import { LOCAL_PG, REPO, TestGateway } from './helpers/gateway.js'

const DB = 'gh_masking_e2e'

interface Case {
  readonly name: string
  readonly sql: string
  readonly expect: 'masked' | 'withheld' | 'refused' | 'clear'
  readonly columns?: readonly (number | string)[]
  readonly predicate?: boolean
  /** The statement fails on the server, and the error message would quote the value. */
  readonly server_error?: boolean
}
interface Corpus {
  readonly secrets: readonly string[]
  readonly setup: string
  readonly teardown: string
  readonly cases: readonly Case[]
}

const corpus = yaml.load(readFileSync(join(REPO, 'test/data/laundering.yaml'), 'utf8')) as Corpus

function psqlAsync(conninfo: string, sql: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn('psql', ['-X', '-At', '-v', 'ON_ERROR_STOP=1', '-d', conninfo, '-c', sql])
    let stdout = ''
    let stderr = ''
    p.stdout.on('data', (d: Buffer) => {
      stdout += d.toString('utf8')
    })
    p.stderr.on('data', (d: Buffer) => {
      stderr += d.toString('utf8')
    })
    const timer = setTimeout(() => p.kill('SIGKILL'), 30_000)
    p.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
}

function admin(sql: string, db = DB): string {
  const r = spawnSync('psql', ['-X', '-At', '-h', '127.0.0.1', '-U', 'postgres', '-d', db, '-v', 'ON_ERROR_STOP=1', '-c', sql], {
    encoding: 'utf8',
  })
  if (r.status !== 0) throw new Error(`admin psql failed: ${r.stderr}`)
  return r.stdout.trim()
}

/** Every form a clear value could take on the way out. */
function forms(secret: string): string[] {
  const b = Buffer.from(secret, 'utf8')
  return [secret, secret.toUpperCase(), [...secret].reverse().join(''), b.toString('base64'), b.toString('hex')]
}

/** A relay between the client and the gateway that keeps every byte the gateway sends. */
async function captureRelay(target: () => number): Promise<{ port: number; take: () => Buffer; close: () => void }> {
  let captured: Buffer[] = []
  const sockets = new Set<Socket>()
  const server: Server = createServer((client) => {
    const up = connect({ host: '127.0.0.1', port: target() })
    sockets.add(client).add(up)
    client.pipe(up)
    up.on('data', (d: Buffer) => {
      captured.push(Buffer.from(d))
      client.write(d)
    })
    const end = (): void => {
      client.destroy()
      up.destroy()
    }
    client.on('error', end).on('close', end)
    up.on('error', end)
      .on('close', end)
      .on('end', () => client.end())
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const a = server.address()
  return {
    port: a && typeof a === 'object' ? a.port : 0,
    take: () => {
      const out = Buffer.concat(captured)
      captured = []
      return out
    },
    close: () => {
      for (const s of sockets) s.destroy()
      server.close()
    },
  }
}

const MASKING_YAML = {
  rules: [
    { name: 'emails', columns: ['gh_mask.users.email'], strategy: 'partial', keep: 4, clear_for: ['pii-readers'] },
    { name: 'ssn', columns: ['gh_mask.users.ssn', 'gh_mask.ssn_registry.ssn'], strategy: 'hash', clear_for: ['pii-readers'] },
    { name: 'cards', columns: ['*.card'], strategy: 'redact', clear_for: ['pii-readers'] },
  ],
  detectors: [
    { name: 'card', clear_for: ['pii-readers'] },
    { name: 'iban', clear_for: ['pii-readers'] },
  ],
}

describe('masking through the PostgreSQL proxy', () => {
  let gw: TestGateway
  let relay: Awaited<ReturnType<typeof captureRelay>>
  let policyDir: string
  let masked = '' // token of a principal that sees masked values (writers + dba: policy allows the writes, masking refuses them)
  let reader = '' // token of a pii-reader

  const conninfo = (token: string, port = relay.port): string =>
    `host=127.0.0.1 port=${port} dbname=app user=someone password=${token} sslmode=disable`

  // psql runs asynchronously: the relay lives in this process and must keep forwarding meanwhile.
  const run = async (token: string, sql: string): Promise<{ code: number | null; stdout: string; stderr: string; bytes: Buffer }> => {
    relay.take()
    const r = await psqlAsync(conninfo(token), sql)
    return { ...r, bytes: relay.take() }
  }

  const leaks = (bytes: Buffer): string[] => {
    const text = bytes.toString('latin1')
    return corpus.secrets.flatMap(forms).filter((f) => text.includes(f))
  }

  before(async () => {
    admin(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`, 'test')
    admin(`CREATE DATABASE ${DB}`, 'test')
    admin(corpus.setup)
    admin(
      "CREATE TABLE gh_mask.ssn_registry (ssn text, source text); INSERT INTO gh_mask.ssn_registry VALUES ('123-45-6789', 'registry'); " +
        "CREATE TABLE gh_mask.free_text (id int, body text); INSERT INTO gh_mask.free_text VALUES (1, 'pay with 4111 1111 1111 1111 please'), (2, 'not a card: 4111 1111 1111 1112'), (3, 'iban DE89370400440532013000 ok'), (4, 'bad iban DE89370400440532013001')",
    )
    policyDir = mkdtempSync(join(tmpdir(), 'gh-mask-policy-'))
    for (const f of ['gatehouse.rego', 'guardrails.rego', 'approvals.yaml']) copyFileSync(join(REPO, 'policies', f), join(policyDir, f))
    writeFileSync(join(policyDir, 'masking.yaml'), yaml.dump(MASKING_YAML))
    gw = await TestGateway.start({ connections: [{ ...LOCAL_PG, database: DB }], config: { policies: policyDir } })
    relay = await captureRelay(() => gw.pgPort)
    masked = gw.token('user:mallory', ['--group', 'writers', '--group', 'dba'])
    reader = gw.token('user:pat', ['--group', 'pii-readers', '--group', 'writers'])
  })

  after(async () => {
    relay?.close()
    await gw?.cleanup()
    rmSync(policyDir, { recursive: true, force: true })
    admin(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`, 'test')
  })

  test('plain SELECT email returns masked values, not an error; the audit names the masked columns', async () => {
    const r = await run(masked, 'SELECT id, email, ssn, card FROM gh_mask.users ORDER BY id')
    assert.equal(r.code, 0, r.stderr)
    const rows = r.stdout
      .trim()
      .split('\n')
      .map((l) => l.split('|'))
    assert.equal(rows.length, 2)
    assert.deepEqual(
      rows.map((x) => x[1]),
      ['****.com', '****.org'],
    )
    assert.deepEqual(
      rows.map((x) => x[3]),
      ['****', '****'],
    )
    assert.ok(
      rows.every((x) => x[2] !== undefined && /^[A-Za-z0-9_:+/=-]{8,}$/.test(x[2]) && !x[2].includes('-45-')),
      `hashed: ${r.stdout}`,
    )
    assert.deepEqual(leaks(r.bytes), [])
    const ev = gw.auditEvents(['--type', 'statement']).filter((e) => e.sql === 'SELECT id, email, ssn, card FROM gh_mask.users ORDER BY id')
    const last = ev[ev.length - 1] as { masked?: { column: string; rule: string }[] }
    assert.deepEqual(
      last.masked?.map((m) => `${m.column}:${m.rule}`),
      ['email:emails', 'ssn:ssn', 'card:cards'],
    )
  })

  for (const c of corpus.cases) {
    test(`laundering corpus: ${c.expect}: ${c.name}`, async () => {
      const r = await run(masked, c.sql)
      const found = leaks(r.bytes)
      switch (c.expect) {
        case 'masked':
          // Binary COPY cannot be rewritten: the gateway refuses it rather than let it through.
          if (c.server_error) assert.match(r.stderr, /withheld because the statement reads masked columns/)
          else if (!/format binary/i.test(c.sql)) assert.equal(r.code, 0, `must run, masked: ${r.stderr}`)
          assert.deepEqual(found, [], `clear values reached the client: ${r.stdout}`)
          break
        case 'withheld':
          assert.deepEqual(found, [], `clear values reached the client: ${r.stdout}`)
          break
        case 'refused':
          assert.notEqual(r.code, 0, `must be refused: ${r.stdout}`)
          assert.match(r.stderr, /ERROR: {2}gatehouse: denied by /, r.stderr)
          assert.deepEqual(found, [])
          break
        case 'clear':
          assert.equal(r.code, 0, r.stderr)
          assert.ok(!r.stdout.includes('****'), `nothing is masked: ${r.stdout}`)
      }
      // Nothing laundered on the server either.
      assert.equal(admin(`SELECT count(*) FROM gh_mask.notes WHERE body ~ '@|[0-9]{3}-[0-9]{2}-|4111|5500'`), '0')
      assert.equal(admin("SELECT count(*) FROM pg_class WHERE relname LIKE 'leak%' OR relname = 'people'"), '0')
      assert.equal(admin("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'gh_mask' AND table_name = 'users'"), '6')
    })
  }

  test('a caller allowed to unmask sees clear values', async () => {
    const r = await run(reader, 'SELECT email, ssn, card FROM gh_mask.users WHERE id = 1')
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stdout.trim(), 'ann@example.com|123-45-6789|4111111111111111')
  })

  test('a sub-agent sees clear values only with unmask:<rule> in its scope, and only if its parent could', async () => {
    const agent = gw.cli(['token', 'delegate', '--token', reader, '--agent', 'summarizer', '--scope', 'connection:app sql.read'])
    assert.equal(agent.code, 0, agent.stderr)
    const plain = await run(agent.stdout.trim(), 'SELECT email FROM gh_mask.users WHERE id = 1')
    assert.equal(plain.code, 0, plain.stderr)
    assert.equal(plain.stdout.trim(), '****.com')
    const unmasking = gw.cli([
      'token',
      'delegate',
      '--token',
      reader,
      '--agent',
      'auditor',
      '--scope',
      'connection:app sql.read unmask:emails',
    ])
    assert.equal(unmasking.code, 0, unmasking.stderr)
    const r = await run(unmasking.stdout.trim(), 'SELECT email, ssn FROM gh_mask.users WHERE id = 1')
    assert.equal(r.code, 0, r.stderr)
    const [email, ssn] = r.stdout.trim().split('|')
    assert.equal(email, 'ann@example.com')
    assert.notEqual(ssn, '123-45-6789', 'unmask:emails does not unmask the ssn rule')
    // A parent that sees the column masked cannot pass unmask on.
    const refused = gw.cli([
      'token',
      'delegate',
      '--token',
      masked,
      '--agent',
      'sneaky',
      '--scope',
      'connection:app sql.read unmask:emails',
    ])
    assert.notEqual(refused.code, 0, 'a masked parent must not be able to delegate unmask:emails')
  })

  test('joins on a hash-masked column still match', async () => {
    const a = await run(masked, 'SELECT ssn FROM gh_mask.users WHERE id = 1')
    const b = await run(masked, 'SELECT ssn FROM gh_mask.ssn_registry')
    assert.equal(a.code, 0, a.stderr)
    assert.equal(b.code, 0, b.stderr)
    assert.equal(a.stdout.trim(), b.stdout.trim())
    assert.notEqual(a.stdout.trim(), '123-45-6789')
    // And a join in SQL on the masked column still finds its rows.
    const j = await run(masked, 'SELECT r.source, u.ssn FROM gh_mask.users u JOIN gh_mask.ssn_registry r ON r.ssn = u.ssn')
    assert.equal(j.code, 0, j.stderr)
    assert.equal(j.stdout.trim(), `registry|${a.stdout.trim()}`)
  })

  test('binary results through node-postgres are masked; values of other types pass; non-text masks become NULL', async () => {
    const c = new pg.Client({
      host: '127.0.0.1',
      port: relay.port,
      database: 'app',
      user: 'x',
      password: masked,
      binary: true,
    } as pg.ClientConfig)
    await c.connect()
    relay.take()
    try {
      const r = await c.query('SELECT id, email, ssn, card, upper(email) AS up, length(email) AS n FROM gh_mask.users WHERE id = $1', [1])
      const row = r.rows[0] as Record<string, unknown>
      assert.equal(row.id, 1)
      assert.equal(row.email, '****.com')
      assert.equal(row.card, '****')
      assert.equal(row.up, '****', 'derived values are redacted, never partially shown')
      assert.equal(row.n, null, 'a derived integer is masked as NULL')
      assert.deepEqual(leaks(relay.take()), [])
    } finally {
      await c.end()
    }
  })

  test('postgres.js (prepared statements, described once, executed many times) is masked too', async () => {
    const sql = postgres({ host: '127.0.0.1', port: relay.port, database: 'app', username: 'x', password: masked, max: 1 })
    relay.take()
    try {
      for (let i = 0; i < 3; i++) {
        const rows = await sql`SELECT id, email, card FROM gh_mask.users WHERE id = ${1}`
        assert.equal(rows[0]?.email, '****.com')
        assert.equal(rows[0]?.card, '****')
      }
      assert.deepEqual(leaks(relay.take()), [])
    } finally {
      await sql.end()
    }
  })

  test('value detectors mask valid card numbers and IBANs in unclassified text, and leave invalid ones', async () => {
    const r = await run(masked, 'SELECT body FROM gh_mask.free_text ORDER BY id')
    assert.equal(r.code, 0, r.stderr)
    const lines = r.stdout.trim().split('\n')
    assert.ok(!(lines[0] ?? '').includes('4111 1111 1111 1111'), lines[0])
    assert.ok((lines[1] ?? '').includes('4111 1111 1111 1112'), 'an invalid card number is not masked')
    assert.ok(!(lines[2] ?? '').includes('DE89370400440532013000'), lines[2])
    assert.ok((lines[3] ?? '').includes('DE89370400440532013001'), 'an invalid IBAN is not masked')
    // Someone allowed to see everything is not subject to the detectors either.
    const clear = await run(reader, 'SELECT body FROM gh_mask.free_text WHERE id = 1')
    assert.match(clear.stdout, /4111 1111 1111 1111/)
  })

  test('a view created after the session read its catalog is resolved anew, not passed as unknown', async () => {
    const c = new pg.Client({ host: '127.0.0.1', port: relay.port, database: 'app', user: 'x', password: masked })
    await c.connect()
    try {
      await c.query('SELECT 1') // the session's catalog snapshot is read by now
      admin('CREATE VIEW gh_mask.late_view AS SELECT id, email AS contact, ssn AS ident FROM gh_mask.users')
      relay.take()
      const r = await c.query('SELECT contact, ident FROM gh_mask.late_view WHERE id = 1')
      assert.equal(r.rows[0]?.contact, '****.com')
      assert.notEqual(r.rows[0]?.ident, '123-45-6789')
      const star = await c.query('SELECT * FROM gh_mask.late_view WHERE id = 1')
      assert.equal(star.rows[0]?.contact, '****.com')
      assert.deepEqual(leaks(relay.take()), [])
      // A temporary table of the session's own, filled with its own values, works as usual.
      await c.query('CREATE TEMP TABLE scratch (id int, email text)')
      await c.query("INSERT INTO scratch VALUES (1, 'me@example.net')")
      const t = await c.query('SELECT id FROM scratch')
      assert.equal(t.rows.length, 1)
    } finally {
      await c.end()
      admin('DROP VIEW IF EXISTS gh_mask.late_view')
    }
  })

  test('masking.yaml options: strict_predicates refuses conditions on masked columns; unknown_lineage: mask redacts opaque outputs instead of refusing', async () => {
    const version = (): string => (JSON.parse(gw.cli(['policy', 'status', '--json']).stdout) as { version: string }).version
    const before = version()
    const sql = {
      predicate: "SELECT id FROM gh_mask.users WHERE email LIKE 'a%'",
      opaque: 'SELECT gh_mask.email_of(1) AS e',
    }
    // Defaults first: a predicate is allowed, an opaque call refused.
    assert.equal((await run(masked, sql.predicate)).code, 0)
    const refused = await run(masked, sql.opaque)
    assert.match(refused.stderr, /denied by gatehouse:opaque-call/)
    writeFileSync(join(policyDir, 'masking.yaml'), yaml.dump({ ...MASKING_YAML, strict_predicates: true, unknown_lineage: 'mask' }))
    try {
      for (let i = 0; i < 200 && version() === before; i++) await new Promise((r) => setTimeout(r, 50))
      assert.notEqual(version(), before, 'the edited masking.yaml was loaded')
      const p = await run(masked, sql.predicate)
      assert.notEqual(p.code, 0)
      assert.match(
        p.stderr,
        /gh_mask\.users\.email is masked for this chain \(rule emails\) and strict_predicates forbids conditions on it/,
      )
      const o = await run(masked, sql.opaque)
      assert.equal(o.code, 0, o.stderr)
      assert.equal(o.stdout.trim(), '****')
      assert.deepEqual(leaks(o.bytes), [])
      // Nothing else changes: unclassified columns and plain masked reads work as before.
      const plain = await run(masked, 'SELECT name, email FROM gh_mask.users WHERE id = 1')
      assert.equal(plain.stdout.trim(), 'Ann|****.com')
    } finally {
      writeFileSync(join(policyDir, 'masking.yaml'), yaml.dump(MASKING_YAML))
      for (let i = 0; i < 200 && !(await run(masked, sql.opaque)).stderr.includes('opaque-call'); i++)
        await new Promise((r) => setTimeout(r, 50))
    }
  })

  test('a server error that would quote a masked value is withheld; the session goes on', async () => {
    const r = await run(masked, 'SELECT ssn::int FROM gh_mask.users')
    assert.notEqual(r.code, 0)
    assert.match(r.stderr, /withheld because the statement reads masked columns \(SQLSTATE 22P02\)/)
    assert.deepEqual(leaks(r.bytes), [])
  })
})
