// The result backstop of masking, end to end: a gateway session stays open while another client
// changes the catalog directly (so the session's catalog snapshot is stale), then the session reads
// at once. The server's RowDescription names each column's origin; a column the snapshot cannot
// vouch for is withheld (SQLSTATE 40001) before any row reaches the client, and the next statement
// runs on a fresh catalog, masked. Every byte the gateway sends is captured and searched for the
// seeded secrets.

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import yaml from 'js-yaml'
import pg from 'pg'
import { LOCAL_PG, REPO, TestGateway } from './helpers/gateway.js'

const DB = 'gh_mask_backstop'
const SECRETS = ['zed.secret@example.com', 'phone.secret@example.net', 'added.secret@example.org', 'extended.secret@example.io']

function admin(sql: string, db = DB): string {
  const r = spawnSync('psql', ['-X', '-At', '-h', '127.0.0.1', '-U', 'postgres', '-d', db, '-v', 'ON_ERROR_STOP=1', '-c', sql], {
    encoding: 'utf8',
  })
  if (r.status !== 0) throw new Error(`admin psql failed: ${r.stderr}`)
  return r.stdout.trim()
}

function forms(secret: string): string[] {
  const b = Buffer.from(secret, 'utf8')
  return [secret, secret.toUpperCase(), [...secret].reverse().join(''), b.toString('base64'), b.toString('hex')]
}

function leaks(bytes: Buffer): string[] {
  const text = bytes.toString('latin1')
  return SECRETS.flatMap(forms).filter((f) => text.includes(f))
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
    up.on('error', end).on('close', end)
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
  rules: [{ name: 'emails', columns: ['*.email'], strategy: 'redact', clear_for: ['pii-readers'] }],
}

describe('masking backstop: the server names where each result column comes from', () => {
  let gw: TestGateway
  let relay: Awaited<ReturnType<typeof captureRelay>>
  let policyDir: string
  let client: pg.Client

  /** Runs through the open gateway session; the error's SQLSTATE, or the rows. */
  const run = async (text: string, values?: unknown[]): Promise<{ rows: unknown[][]; code: string | null; bytes: Buffer }> => {
    relay.take()
    try {
      const r = await client.query({ text, values, rowMode: 'array' })
      return { rows: r.rows as unknown[][], code: null, bytes: relay.take() }
    } catch (err) {
      const code = (err as { code?: unknown }).code
      return { rows: [], code: typeof code === 'string' ? code : String(err), bytes: relay.take() }
    }
  }

  before(async () => {
    admin(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`, 'test')
    admin(`CREATE DATABASE ${DB}`, 'test')
    admin(
      'CREATE SCHEMA gh_bs; ' +
        "CREATE TABLE gh_bs.users (id int, email text); INSERT INTO gh_bs.users VALUES (1, 'zed.secret@example.com'); " +
        "CREATE TABLE gh_bs.items (id int, note text); INSERT INTO gh_bs.items VALUES (1, 'plain note'); " +
        "CREATE TABLE gh_bs.contacts (id int, phone text); INSERT INTO gh_bs.contacts VALUES (1, 'phone.secret@example.net'); " +
        "CREATE TABLE gh_bs.leads (id int, phone text); INSERT INTO gh_bs.leads VALUES (1, 'extended.secret@example.io'); " +
        'CREATE TABLE gh_bs.orders (id int, total int); INSERT INTO gh_bs.orders VALUES (1, 42)',
    )
    policyDir = mkdtempSync(join(tmpdir(), 'gh-backstop-policy-'))
    for (const f of ['gatehouse.rego', 'guardrails.rego', 'approvals.yaml']) copyFileSync(join(REPO, 'policies', f), join(policyDir, f))
    writeFileSync(join(policyDir, 'masking.yaml'), yaml.dump(MASKING_YAML))
    gw = await TestGateway.start({ connections: [{ ...LOCAL_PG, database: DB }], config: { policies: policyDir } })
    relay = await captureRelay(() => gw.pgPort)
    const token = gw.token('user:mallory', ['--group', 'writers'])
    client = new pg.Client({ host: '127.0.0.1', port: relay.port, database: 'app', user: 'someone', password: token, ssl: false })
    await client.connect()
  })

  after(async () => {
    await client?.end().catch(() => undefined)
    relay?.close()
    await gw?.cleanup()
    rmSync(policyDir, { recursive: true, force: true })
    admin(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`, 'test')
  })

  test('statements over unchanged relations run as before, masked columns masked', async () => {
    const a = await run('SELECT * FROM gh_bs.items')
    assert.equal(a.code, null)
    assert.deepEqual(a.rows, [[1, 'plain note']])
    const b = await run('SELECT id, email FROM gh_bs.users')
    assert.equal(b.code, null)
    assert.notEqual(b.rows[0]?.[1], 'zed.secret@example.com')
    const c = await run('SELECT total, id AS renamed FROM gh_bs.orders')
    assert.deepEqual(c.rows, [[42, 1]])
    // An alias that a rule's pattern matches, over a column no rule masks: the statement chose the
    // name for the very column the server reports, so it is not taken for a rename.
    const d = await run('SELECT id, phone AS email FROM gh_bs.leads')
    assert.equal(d.code, null)
    assert.equal(d.rows.length, 1)
    assert.deepEqual(leaks(Buffer.concat([a.bytes, b.bytes, c.bytes])), [])
  })

  test('a table swapped for a view over a masked column by another client: withheld, then masked', async () => {
    admin('ALTER TABLE gh_bs.items RENAME TO items_old; CREATE VIEW gh_bs.items AS SELECT id, email AS note FROM gh_bs.users')
    const first = await run('SELECT * FROM gh_bs.items')
    assert.equal(first.code, '40001')
    assert.deepEqual(leaks(first.bytes), [])
    assert.ok(!first.bytes.toString('latin1').includes('note'), 'not even the RowDescription reached the client')
    const next = await run('SELECT * FROM gh_bs.items')
    assert.equal(next.code, null)
    assert.equal(next.rows.length, 1)
    assert.notEqual(next.rows[0]?.[1], 'zed.secret@example.com')
    assert.deepEqual(leaks(next.bytes), [])
  })

  test('ALTER TABLE ADD COLUMN email by another client: withheld, then masked', async () => {
    admin("ALTER TABLE gh_bs.items_old ADD COLUMN email text; UPDATE gh_bs.items_old SET email = 'added.secret@example.org'")
    const first = await run('SELECT * FROM gh_bs.items_old')
    assert.equal(first.code, '40001')
    assert.deepEqual(leaks(first.bytes), [])
    const next = await run('SELECT * FROM gh_bs.items_old')
    assert.equal(next.code, null)
    assert.equal(next.rows[0]?.[0], 1)
    assert.deepEqual(leaks(next.bytes), [])
  })

  test('RENAME COLUMN to a masked name by another client: withheld, then masked', async () => {
    admin('ALTER TABLE gh_bs.contacts RENAME COLUMN phone TO email')
    const first = await run('SELECT * FROM gh_bs.contacts')
    assert.equal(first.code, '40001')
    assert.deepEqual(leaks(first.bytes), [])
    const next = await run('SELECT * FROM gh_bs.contacts')
    assert.equal(next.code, null)
    assert.equal(next.rows[0]?.[0], 1)
    assert.deepEqual(leaks(next.bytes), [])
  })

  test('extended protocol (Parse/Bind/Describe/Execute): withheld at Describe, then masked', async () => {
    admin('ALTER TABLE gh_bs.leads RENAME COLUMN phone TO email')
    const first = await run('SELECT * FROM gh_bs.leads WHERE id = $1', [1])
    assert.equal(first.code, '40001')
    assert.deepEqual(leaks(first.bytes), [])
    const next = await run('SELECT * FROM gh_bs.leads WHERE id = $1', [1])
    assert.equal(next.code, null)
    assert.equal(next.rows[0]?.[0], 1)
    assert.deepEqual(leaks(next.bytes), [])
  })

  test('a table created by another client after the snapshot: never in clear', async () => {
    admin(
      'CREATE TABLE gh_bs.fresh AS SELECT id, email AS contact FROM gh_bs.users; ALTER TABLE gh_bs.fresh RENAME COLUMN contact TO email',
    )
    const r = await run('SELECT * FROM gh_bs.fresh')
    assert.deepEqual(leaks(r.bytes), [])
    if (r.code === null) assert.notEqual(r.rows[0]?.[1], 'zed.secret@example.com')
    const next = await run('SELECT * FROM gh_bs.fresh')
    assert.equal(next.code, null)
    assert.deepEqual(leaks(next.bytes), [])
  })

  test('the session keeps working after the withheld results', async () => {
    const r = await run('SELECT total FROM gh_bs.orders')
    assert.deepEqual(r.rows, [[42]])
  })

  test('a withheld result with later statements of its batch already sent ends the session, nothing in clear', async () => {
    admin("CREATE TABLE gh_bs.late (id int, phone text); INSERT INTO gh_bs.late VALUES (1, 'zed.secret@example.com')")
    // Known to this session's snapshot before the rename.
    assert.equal((await run('SELECT id FROM gh_bs.orders; SELECT * FROM gh_bs.late')).code, null)
    admin('ALTER TABLE gh_bs.late RENAME COLUMN phone TO email')
    const r = await run('SELECT * FROM gh_bs.late; SELECT total FROM gh_bs.orders')
    assert.equal(r.code, '40001')
    assert.deepEqual(leaks(r.bytes), [])
  })
})
