// Both durability modes survive `kill -9` of a real gateway in the middle of `pgbench -c 8`:
// after the restart the audit log verifies, and every statement the database executed (counted by
// a trigger, in a database this test creates and drops) has its `statement` event.

import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { direct, LOCAL_PG, TestGateway } from './helpers/gateway.js'

const DB = `gh_audit_k9_${randomBytes(4).toString('hex')}`

/** Runs SQL directly in the test's own database (bypassing the gateway). */
function inDb(sql: string): string {
  const r = spawnSync('psql', ['-X', '-At', '-h', '127.0.0.1', '-U', 'postgres', '-d', DB, '-v', 'ON_ERROR_STOP=1', '-c', sql], {
    encoding: 'utf8',
    timeout: 60_000,
  })
  if (r.status !== 0) throw new Error(`psql failed: ${r.stderr}`)
  return r.stdout.trim()
}

async function waitFor(pred: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms
  while (!pred()) {
    if (Date.now() > end) throw new Error('condition not met in time')
    await new Promise((r) => setTimeout(r, 100))
  }
}

describe('audit durability under kill -9 (pgbench -c 8)', () => {
  const dirs: string[] = []
  before(() => {
    direct(`CREATE DATABASE ${DB}`)
    inDb(`
      CREATE TABLE work (v bigint NOT NULL);
      CREATE TABLE executed (v bigint NOT NULL);
      CREATE FUNCTION count_executed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO executed VALUES (NEW.v); RETURN NEW; END $$;
      CREATE TRIGGER count_executed AFTER INSERT ON work FOR EACH ROW EXECUTE FUNCTION count_executed();
    `)
  })
  after(() => {
    direct(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`)
    for (const d of dirs) rmSync(d, { recursive: true, force: true })
  })

  for (const fsync of ['batched', 'always'] as const) {
    test(`fsync ${fsync}: kill -9 mid-run, restart, verify passes and no executed statement lacks its event`, async () => {
      inDb('TRUNCATE work; TRUNCATE executed')
      const gw = await TestGateway.start({
        connections: [{ ...LOCAL_PG, name: 'k9', database: DB }],
        config: { audit: { fsync } },
      })
      const dir = mkdtempSync(join(tmpdir(), 'gh-k9-'))
      dirs.push(dir)
      try {
        const script = join(dir, 'insert.sql')
        writeFileSync(script, '\\set v random(1, 1000000000000000)\nINSERT INTO work VALUES (:v);\n')
        const bench = spawn(
          'pgbench',
          ['-n', '-c', '8', '-j', '2', '-T', '30', '-f', script, gw.conninfo(gw.token('user:alice', ['--group', 'writers']), 'k9')],
          { stdio: 'ignore' },
        )
        const benchDone = new Promise<void>((r) => bench.on('exit', () => r()))
        await waitFor(() => Number(inDb('SELECT count(*) FROM executed')) > 2000, 25_000)
        gw.signal('SIGKILL')
        await gw.waitExit()
        await benchDone

        // The restart seals the crash with a signed checkpoint; a clean stop signs the rest.
        await gw.launch()
        await gw.stop()
        const v = gw.cli(['audit', 'verify', '--json'])
        assert.equal(v.code, 0, `${v.stdout}\n${v.stderr}`)
        const report = JSON.parse(v.stdout) as { ok: boolean; problem: unknown; recoveries: unknown[] }
        assert.equal(report.problem, null)
        assert.equal(report.recoveries.length, 1, 'the crash was sealed by the restart')

        const executed = inDb('SELECT v FROM executed').split('\n').filter(Boolean)
        assert.ok(executed.length > 2000)
        assert.equal(inDb('SELECT count(*) FROM work'), String(executed.length))
        const audited = new Set(
          gw
            .auditEvents(['--type', 'statement', '--connection', 'k9'])
            .map((e) => /INSERT INTO work VALUES \((\d+)\)/.exec(String(e.sql))?.[1])
            .filter((x): x is string => x !== undefined),
        )
        const missing = executed.filter((x) => !audited.has(x))
        assert.deepEqual(missing, [], `${missing.length} of ${executed.length} executed statements have no audit event`)
      } finally {
        await gw.cleanup()
      }
    })
  }
})
