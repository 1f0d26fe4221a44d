// A worker of `serve --workers 2` killed with SIGKILL in the middle of a pgbench run: the primary
// starts a replacement, the killed worker's sessions end with a reason that says so, no executed
// statement lacks its audit event, and the audit log — one segment series per worker — verifies,
// lists and exports as one log.

import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import pg from 'pg'
import { direct, TestGateway } from './helpers/gateway.js'

const WRITER = ['--group', 'writers']

interface RunJson {
  pid: number
  workers: { id: number; pid: number | null }[]
}

function runJson(gw: TestGateway): RunJson {
  return JSON.parse(readFileSync(join(gw.dataDir, 'run.json'), 'utf8')) as RunJson
}

/** Waits for a condition; the limit only bounds a failure (a loaded machine is slow, not wrong). */
async function waitFor(pred: () => boolean, ms = 60_000): Promise<void> {
  const end = Date.now() + ms
  while (!pred()) {
    if (Date.now() > end) throw new Error(`condition not met in ${ms} ms`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

function logOf(id: unknown): string {
  const s = String(id)
  return s.slice(0, s.lastIndexOf('-'))
}

describe('serve --workers 2: a worker killed with SIGKILL', () => {
  let gw: TestGateway
  let dir: string

  before(async () => {
    direct('DROP TABLE IF EXISTS ghw_k9; CREATE TABLE ghw_k9 (v bigint)')
    dir = mkdtempSync(join(tmpdir(), 'ghw-k9-'))
    gw = await TestGateway.start({ config: { workers: 2 } })
  })
  after(async () => {
    await gw.cleanup()
    rmSync(dir, { recursive: true, force: true })
    direct('DROP TABLE IF EXISTS ghw_k9')
  })

  test('is replaced; its sessions end with a clear reason; no executed statement lacks its audit event', async () => {
    const token = gw.token('user:alice', WRITER)
    // A client held on the worker that is about to die: it sees its connection end.
    const held = new pg.Client({ host: '127.0.0.1', port: gw.pgPort, database: 'app', user: 'alice', password: token })
    const heldError = new Promise<Error>((resolve) => held.on('error', resolve))
    const script = join(dir, 'insert.sql')
    writeFileSync(script, '\\set v random(1, 1000000000000)\nINSERT INTO ghw_k9 VALUES (:v);\n')
    const bench = spawn('pgbench', ['-n', '-c', '4', '-j', '2', '-T', '120', '-f', script, gw.conninfo(token)], { stdio: 'ignore' })
    const benchDone = new Promise<void>((r) => bench.on('exit', () => r()))
    try {
      await held.connect()
      await held.query('SELECT 1')
      await waitFor(() => Number(direct('SELECT count(*) FROM ghw_k9')) > 300, 120_000)
      const before = runJson(gw)
      const heldPort = (held as unknown as { connection: { stream: { localPort: number } } }).connection.stream.localPort
      const sessions = gw.cli(['sessions', 'list', '--active', '--json'])
      const heldSession = sessions.stdout
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { id: string; client: string; worker: number })
        .find((s) => s.client === `127.0.0.1:${heldPort}`)
      assert.ok(heldSession, sessions.stderr)
      const victim = before.workers.find((w) => w.id === heldSession.worker)
      assert.ok(victim?.pid)
      process.kill(victim.pid, 'SIGKILL')
      const err = await heldError
      assert.match(err.message, /terminated unexpectedly|ECONNRESET|EPIPE/)
      // The primary starts a replacement (a new pid in run.json) and stays up.
      await waitFor(() => {
        const w = runJson(gw).workers.find((x) => x.id === victim.id)
        return w?.pid !== undefined && w.pid !== null && w.pid !== victim.pid
      }, 120_000)
      assert.equal(runJson(gw).pid, before.pid)
      bench.kill('SIGTERM')
      await benchDone
      // The replacement ended the killed worker's sessions, in the index and the audit log.
      const ended = gw
        .cli(['sessions', 'list', '--json'])
        .stdout.split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { id: string; end_reason: string | null; active: boolean })
        .find((s) => s.id === heldSession.id)
      assert.equal(ended?.end_reason, `gateway worker ${victim.id} stopped unexpectedly`)
      assert.equal(ended?.active, false)
      const ends = gw.auditEvents(['--session', heldSession.id, '--type', 'session.end'])
      assert.equal(ends.at(-1)?.reason, `gateway worker ${victim.id} stopped unexpectedly`)
      // A new connection is served (by either worker).
      const after = new pg.Client({ host: '127.0.0.1', port: gw.pgPort, database: 'app', user: 'alice', password: token })
      await after.connect()
      assert.equal((await after.query('SELECT 2 AS n')).rows[0]?.n, 2)
      await after.end()
    } finally {
      bench.kill('SIGKILL')
      await held.end().catch(() => undefined)
    }
    const inDb = direct('SELECT v FROM ghw_k9').split('\n').filter(Boolean)
    const statements = gw.auditEvents(['--type', 'statement'])
    const audited = new Set(
      statements.map((e) => /INSERT INTO ghw_k9 VALUES \((\d+)\)/.exec(String(e.sql))?.[1]).filter((v): v is string => v !== undefined),
    )
    const missing = inDb.filter((v) => !audited.has(v))
    assert.deepEqual(missing, [], `${missing.length} executed statements have no audit event`)
    // Both workers' series are in the one listing.
    assert.ok(new Set(statements.map((e) => logOf(e.id))).size >= 2, 'statements of both workers are listed')
  })

  test('audit verify passes over every worker’s series; list and export read them as one log ordered by time', async () => {
    await gw.stop()
    assert.deepEqual(readdirSync(join(gw.dataDir, 'audit')).sort(), ['w1', 'w2'])
    const v = gw.cli(['audit', 'verify', '--json'])
    assert.equal(v.code, 0, v.stdout + v.stderr)
    const report = JSON.parse(v.stdout) as { ok: boolean; events: number; series: { series: string; ok: boolean; recoveries: unknown[] }[] }
    assert.equal(report.ok, true)
    assert.deepEqual(
      report.series.map((s) => s.series),
      ['w1', 'w2'],
    )
    // The killed worker's series was sealed by its replacement's recovery checkpoint.
    assert.equal(report.series.filter((s) => s.recoveries.length > 0).length, 1)
    const text = gw.cli(['audit', 'verify'])
    assert.match(text.stdout, /series w1 \(worker 1\):/)
    assert.match(text.stdout, /audit log OK: \d+ events in 2 segment series/)

    const exported = gw.cli(['audit', 'export'])
    assert.equal(exported.code, 0, exported.stderr)
    const lines = exported.stdout.split('\n').filter(Boolean)
    assert.equal(lines.length, report.events, 'export holds every line of every series')
    const times = lines.map((l) => (JSON.parse(l) as { time: string }).time)
    let back = 0
    for (let i = 1; i < times.length; i++) if ((times[i] as string) < (times[i - 1] as string)) back++
    // Merged by time: out of order only where one worker's own log is (a deferred result).
    assert.ok(back < lines.length / 100, `${back} of ${lines.length} lines go back in time`)
    const listed = gw.auditEvents(['--internal'])
    assert.equal(listed.length, report.events)

    // An edit in one worker's series fails the whole verification, naming that series' file.
    const w2 = join(gw.dataDir, 'audit', 'w2')
    const seg = join(
      w2,
      readdirSync(w2)
        .filter((f) => f.endsWith('.jsonl'))
        .sort()[0] as string,
    )
    const original = readFileSync(seg, 'utf8')
    try {
      const edited = original.replace(/"type":"session\.start"/, '"type":"session.strt"')
      assert.notEqual(edited, original)
      writeFileSync(seg, edited)
      const broken = gw.cli(['audit', 'verify'])
      assert.equal(broken.code, 1, broken.stdout)
      assert.match(broken.stdout, /series w2 \(worker 2\):\n {2}audit log BROKEN at .*w2\/0+1-/)
      assert.match(broken.stdout, /audit log NOT OK/)
    } finally {
      writeFileSync(seg, original)
    }

    // A series planted as a copy of another verifies on its own, but is no log of its own.
    const planted = join(gw.dataDir, 'audit', 'w3')
    cpSync(join(gw.dataDir, 'audit', 'w1'), planted, { recursive: true, filter: (f) => !f.endsWith('writer.lock') })
    try {
      const copied = gw.cli(['audit', 'verify'])
      assert.equal(copied.code, 1, copied.stdout)
      assert.match(copied.stdout, /series w3 has the log id of series w1 \([^)]+\): it is a copy of that series/)
      assert.match(copied.stdout, /audit log NOT OK/)
    } finally {
      rmSync(planted, { recursive: true, force: true })
    }
  })

  test('workers that lose their primary stop serving (they could no longer learn of revocations)', async () => {
    await gw.launch()
    const { pid, workers } = runJson(gw)
    const pids = workers.map((w) => w.pid).filter((p): p is number => p !== null)
    assert.equal(pids.length, 2)
    process.kill(pid, 'SIGKILL')
    const alive = (p: number): boolean => {
      try {
        process.kill(p, 0)
        return true
      } catch {
        return false
      }
    }
    await waitFor(() => pids.every((p) => !alive(p)), 30_000)
  })
})
