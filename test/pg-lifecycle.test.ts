// Sessions end the way an operator expects, and the audit holds through every ending:
// `sessions kill` closes both sides; SIGTERM ends sessions with 57P01 and flushes the audit;
// `kill -9` in the middle of a pgbench run loses no audit event of a statement the database
// executed; and when the audit cannot be written, statements are refused and never run.

import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import pg from 'pg'
import { direct, LOCAL_PG, TestGateway } from './helpers/gateway.js'

/** Writers may INSERT under the default policy bundle. */
const WRITER = ['--group', 'writers']

function client(gw: TestGateway, token: string, app: string): pg.Client {
  const c = new pg.Client({ host: '127.0.0.1', port: gw.pgPort, database: 'app', user: 'alice', password: token, application_name: app })
  return c
}

/** The client's next error, or null after `ms` (generous: the gateway's answer may be slow on a loaded machine). */
function nextError(c: pg.Client, ms = 60_000): Promise<{ code?: string; message: string } | null> {
  return Promise.race([
    new Promise<{ code?: string; message: string }>((resolve) => c.on('error', (e) => resolve(e as { code?: string; message: string }))),
    new Promise<null>((r) => setTimeout(() => r(null), ms)),
  ])
}

/** Waits for a condition; the limit only bounds a failure (a loaded machine is slow, not wrong). */
async function waitFor(pred: () => boolean, ms = 60_000): Promise<void> {
  const end = Date.now() + ms
  while (!pred()) {
    if (Date.now() > end) throw new Error(`condition not met in ${ms} ms`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

describe('session lifecycle and audit durability', () => {
  before(() => {
    direct('DROP TABLE IF EXISTS ghl_k9; CREATE TABLE ghl_k9 (v bigint); DROP TABLE IF EXISTS ghl_fail; CREATE TABLE ghl_fail (v text)')
  })
  after(() => {
    direct('DROP TABLE IF EXISTS ghl_k9; DROP TABLE IF EXISTS ghl_fail')
  })

  test('sessions list shows live sessions; sessions kill ends the client and the server side', async () => {
    const gw = await TestGateway.start()
    try {
      const c = client(gw, gw.token('user:alice', WRITER), 'ghl-kill')
      await c.connect()
      await c.query('SELECT 1')
      const list = gw.cli(['sessions', 'list', '--active', '--json'])
      assert.equal(list.code, 0, list.stderr)
      const rows = list.stdout
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { id: string; chain: string[]; active: boolean })
      assert.equal(rows.length, 1)
      assert.deepEqual(rows[0]?.chain, ['user:alice'])
      assert.equal(direct("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ghl-kill'"), '1')
      // The CLI runs synchronously: its start-up (seconds on a loaded machine) counts against the
      // wait, and the error that arrived meanwhile is only read once it returns.
      const err = nextError(c, 120_000)
      const k = gw.cli(['sessions', 'kill', rows[0]?.id ?? ''])
      assert.equal(k.code, 0, k.stderr)
      assert.equal((await err)?.code, '57P01')
      await waitFor(() => direct("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ghl-kill'") === '0')
      const all = gw.cli(['sessions', 'list', '--json'])
      assert.match(all.stdout, /"active":false/)
      const unknown = gw.cli(['sessions', 'kill', 's-000000000000'])
      assert.notEqual(unknown.code, 0)
      assert.match(unknown.stderr, /no live session/)
    } finally {
      await gw.cleanup()
    }
  })

  test('SIGTERM ends sessions with 57P01, flushes the audit and exits cleanly', async () => {
    const gw = await TestGateway.start()
    try {
      const c = client(gw, gw.token('user:alice', WRITER), 'ghl-term')
      await c.connect()
      await c.query("SELECT 'before-sigterm'")
      const err = nextError(c)
      gw.signal('SIGTERM')
      assert.equal((await err)?.code, '57P01')
      await gw.waitExit()
      assert.equal(gw.exitCode, 0)
      // With the server gone the CLI reads the audit files directly.
      const events = gw.auditEvents()
      const st = events.find((e) => e.type === 'statement' && e.sql === "SELECT 'before-sigterm'")
      assert.ok(st)
      assert.ok(events.some((e) => e.type === 'result' && e.session === st.session))
      assert.ok(events.some((e) => e.type === 'session.end' && e.session === st.session))
      await waitFor(() => direct("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ghl-term'") === '0')
    } finally {
      await gw.cleanup()
    }
  })

  test('kill -9 during a pgbench run loses no audit event of a statement the database executed', async () => {
    const gw = await TestGateway.start()
    const dir = mkdtempSync(join(tmpdir(), 'ghl-k9-'))
    try {
      const script = join(dir, 'insert.sql')
      writeFileSync(script, '\\set v random(1, 1000000000000)\nINSERT INTO ghl_k9 VALUES (:v);\n')
      const bench = spawn('pgbench', ['-n', '-c', '4', '-j', '2', '-T', '120', '-f', script, gw.conninfo(gw.token('user:alice', WRITER))], {
        stdio: 'ignore',
      })
      // Runs until the gateway is killed under it (the limit only bounds a failure).
      const benchDone = new Promise<void>((r) => bench.on('exit', () => r()))
      await waitFor(() => Number(direct('SELECT count(*) FROM ghl_k9')) > 500, 120_000)
      gw.signal('SIGKILL')
      await gw.waitExit()
      await benchDone
      const inDb = direct('SELECT v FROM ghl_k9').split('\n').filter(Boolean)
      assert.ok(inDb.length > 500)
      const audited = new Set(
        gw
          .auditEvents(['--type', 'statement'])
          .map((e) => /INSERT INTO ghl_k9 VALUES \((\d+)\)/.exec(String(e.sql))?.[1])
          .filter((v): v is string => v !== undefined),
      )
      const missing = inDb.filter((v) => !audited.has(v))
      assert.deepEqual(missing, [], `${missing.length} executed statements have no audit event`)
    } finally {
      await gw.cleanup()
      rmSync(dir, { recursive: true, force: true })
    }
  })

  // With a second connection open, statements take the grouped audit path (one write per turn for
  // all sessions); alone, the synchronous one. Both must refuse when the write fails.
  for (const grouped of [false, true]) {
    test(`with the audit store failing (disk full), a statement is refused and never executed${grouped ? ' (grouped appends: a second connection open)' : ''}`, async (t) => {
      if (process.getuid?.() !== 0) {
        t.skip('needs root to mount a small tmpfs for the audit directory')
        return
      }
      const root = mkdtempSync(join(tmpdir(), 'ghl-full-'))
      const dataDir = join(root, 'data')
      const auditDir = join(dataDir, 'audit')
      mkdirSync(auditDir, { recursive: true })
      const mount = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', auditDir])
      assert.equal(mount.status, 0, `mount failed: ${mount.stderr}`)
      direct('TRUNCATE ghl_fail')
      const gw = await TestGateway.start({ dataDir, connections: [LOCAL_PG] })
      try {
        const c = client(gw, gw.token('user:alice', WRITER), 'ghl-full')
        c.on('error', () => undefined)
        await c.connect()
        const other = grouped ? client(gw, gw.token('user:alice', WRITER), 'ghl-full-other') : null
        other?.on('error', () => undefined)
        await other?.connect()
        await c.query("INSERT INTO ghl_fail VALUES ('while-the-disk-has-room')")
        // Fill the audit file system.
        spawnSync('dd', ['if=/dev/zero', `of=${join(auditDir, 'filler')}`, 'bs=4k'], { stdio: 'ignore' })
        // The segment's last page still has slack; use it up with harmless statements until the
        // audit write fails (a few dozen at most).
        let refused = 0
        for (let i = 0; i < 200 && refused === 0; i++) {
          await c.query(`SELECT ${i} AS filler_${'x'.repeat(100)}`).catch((e: { code?: string }) => {
            if (e.code === '58030') refused++
          })
        }
        assert.equal(refused, 1, 'the audit file system should be full by now')
        await assert.rejects(c.query("INSERT INTO ghl_fail VALUES ('must-not-exist')"), (e: { code?: string; message: string }) => {
          assert.equal(e.code, '58030')
          assert.match(e.message, /audit log cannot record this statement/)
          return true
        })
        await assert.rejects(c.query({ text: 'INSERT INTO ghl_fail VALUES ($1)', values: ['must-not-exist'] }), /audit/)
        assert.equal(direct("SELECT count(*) FROM ghl_fail WHERE v = 'must-not-exist'"), '0')
        // Room again: the same session works, nothing was lost or torn.
        rmSync(join(auditDir, 'filler'))
        await c.query("INSERT INTO ghl_fail VALUES ('after-room-returned')")
        assert.equal(direct("SELECT count(*) FROM ghl_fail WHERE v = 'after-room-returned'"), '1')
        await c.end()
        await other?.end()
        const events = gw.auditEvents()
        assert.ok(events.some((e) => e.sql === "INSERT INTO ghl_fail VALUES ('after-room-returned')"))
        assert.ok(!events.some((e) => typeof e.sql === 'string' && e.sql.includes('must-not-exist') && e.decision === 'allow'))
      } finally {
        await gw.cleanup()
        spawnSync('umount', [auditDir])
        rmSync(root, { recursive: true, force: true })
      }
    })
  }
})
