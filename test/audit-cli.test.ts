// The audit commands against a real gateway: `audit verify` (with --config, and with --dir and
// --pubkey on a copy, where an edit is named by file and line), `audit pubkey`, `audit list`
// filters (time, principal anywhere in the chain, connection, decision, session, policy version,
// text), `audit export --since` and `--follow`, and the API routes behind them.

import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { BIN, psql, TestGateway } from './helpers/gateway.js'

type Ev = Record<string, unknown>

describe('audit CLI and API', () => {
  let gw: TestGateway
  let work: string
  let alice: string
  before(async () => {
    gw = await TestGateway.start()
    work = mkdtempSync(join(tmpdir(), 'gh-audit-cli-'))
    alice = gw.token('user:alice', ['--group', 'writers'])
    const bob = gw.token('user:bob')
    assert.equal(psql(gw.conninfo(alice), "SELECT 'alice-was-here'").code, 0)
    assert.equal(psql(gw.conninfo(bob), "SELECT 'bob-was-here'").code, 0)
    // Denied: bob is not a writer.
    assert.notEqual(psql(gw.conninfo(bob), 'CREATE TEMP TABLE t (x int)').code, 0)
  })
  after(async () => {
    await gw.cleanup()
    rmSync(work, { recursive: true, force: true })
  })

  test('audit list filters by principal, connection, decision, session, policy version, text and time', () => {
    const byAlice = gw.auditEvents(['--principal', 'user:alice', '--type', 'statement'])
    assert.ok(byAlice.length >= 1)
    assert.ok(byAlice.every((e) => (e.chain as string[]).includes('user:alice')))
    assert.ok(byAlice.some((e) => e.sql === "SELECT 'alice-was-here'"))
    assert.ok(!byAlice.some((e) => String(e.sql).includes('bob-was-here')))

    const denied = gw.auditEvents(['--decision', 'deny'])
    assert.ok(denied.length >= 1)
    assert.ok(denied.every((e) => e.decision === 'deny'))
    assert.ok(denied.some((e) => (e.chain as string[]).includes('user:bob')))

    const text = gw.auditEvents(['--text', 'ALICE-WAS'])
    assert.deepEqual(
      text.map((e) => e.sql),
      ["SELECT 'alice-was-here'"],
    )
    const st = text[0] as Ev
    const session = gw.auditEvents(['--session', String(st.session)])
    assert.deepEqual(
      session.map((e) => e.type),
      ['session.start', 'statement', 'result', 'session.end'],
    )
    const pv = String(st.policy_version)
    assert.ok(gw.auditEvents(['--policy-version', pv.slice(0, 12), '--text', 'alice-was']).length === 1)
    assert.equal(gw.auditEvents(['--policy-version', 'sha256:nope', '--type', 'statement']).length, 0)
    assert.equal(gw.auditEvents(['--connection', 'nope']).length, 0)
    assert.ok(gw.auditEvents(['--connection', 'app', '--type', 'statement']).length >= 3)
    assert.equal(gw.auditEvents(['--until', '1h', '--type', 'statement']).length, 0)
    assert.ok(gw.auditEvents(['--since', '1h', '--type', 'statement']).length >= 3)
    const internal = gw.auditEvents(['--type', 'audit.segment'])
    assert.equal(internal.length, 1, 'internal records appear when asked for by type')
    assert.ok(!gw.auditEvents().some((e) => String(e.type).startsWith('audit.')), 'and not otherwise')
    const bad = gw.cli(['audit', 'list', '--since', 'yesterday-ish'])
    assert.notEqual(bad.code, 0)
    assert.match(bad.stderr, /--since/)
  })

  test('audit export --since writes verbatim lines; --follow tails new events', async () => {
    const all = gw.cli(['audit', 'export'])
    assert.equal(all.code, 0, all.stderr)
    const lines = all.stdout.split('\n').filter(Boolean)
    assert.ok(
      lines.every((l) => l.startsWith('{"h":"')),
      'lines are verbatim, hash first',
    )
    assert.ok(lines.some((l) => l.includes('"type":"audit.segment"')))
    const future = gw.cli(['audit', 'export', '--since', new Date(Date.now() + 3600_000).toISOString()])
    assert.equal(future.stdout, '')
    assert.notEqual(gw.cli(['audit', 'export', '--format', 'csv']).code, 0)

    // An absolute --since, taken before the spawn: a relative one is computed when the CLI has
    // started, which on a loaded machine can be after the statement below was written.
    const since = new Date(Date.now() - 1000).toISOString()
    const child = spawn(process.execPath, [BIN, 'audit', 'export', '--follow', '--since', since, '--config', gw.configFile], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let got = ''
    child.stdout.on('data', (d: Buffer) => {
      got += d.toString()
    })
    try {
      await new Promise((r) => setTimeout(r, 700))
      assert.equal(psql(gw.conninfo(alice), "SELECT 'followed-live'").code, 0)
      // Bounds that only end a failure: the follower is a CLI, whose start-up on a loaded machine
      // took tens of seconds.
      const end = Date.now() + 90_000
      while (!got.includes('followed-live') && Date.now() < end) await new Promise((r) => setTimeout(r, 100))
      assert.ok(got.includes('followed-live'), 'the new statement reached the follower')
      // Within a second a signed checkpoint follows it (what a SIEM keeps for verify --checkpoints).
      const end2 = Date.now() + 30_000
      const afterIt = (): string => got.slice(got.indexOf('followed-live'))
      while (!afterIt().includes('"type":"audit.checkpoint"') && Date.now() < end2) await new Promise((r) => setTimeout(r, 100))
      assert.ok(afterIt().includes('"type":"audit.checkpoint"'))
    } finally {
      child.kill('SIGTERM')
    }
  })

  test('audit verify and pubkey through the API, and on a copy with --dir and --pubkey; an edit is named by file and line', async () => {
    const live = gw.cli(['audit', 'verify'])
    assert.equal(live.code, 0, live.stdout + live.stderr)
    assert.match(live.stdout, /^audit log OK: \d+ events/)
    const res = await fetch(`${gw.apiUrl}/v1/audit/verify`, {
      headers: { authorization: `Bearer ${readFileSync(join(gw.dataDir, 'admin.token'), 'utf8').trim()}` },
    })
    assert.equal(res.status, 200)
    assert.equal(((await res.json()) as { ok: boolean }).ok, true)

    const pub = gw.cli(['audit', 'pubkey'])
    assert.equal(pub.code, 0)
    assert.match(pub.stdout, /^-----BEGIN PUBLIC KEY-----\n/)
    const keyFile = join(work, 'audit.pub')
    writeFileSync(keyFile, pub.stdout)

    const copy = join(work, 'copy')
    cpSync(join(gw.dataDir, 'audit'), copy, { recursive: true })
    const ok = gw.cli(['audit', 'verify', '--dir', copy, '--pubkey', keyFile])
    assert.equal(ok.code, 0, ok.stdout + ok.stderr)
    assert.notEqual(gw.cli(['audit', 'verify', '--dir', copy]).code, 0, '--dir needs --pubkey')

    assert.match(readFileSync(join(gw.dataDir, 'audit', 'writer.lock'), 'utf8'), /^\d+\n$/, 'the running gateway holds the writer lock')
    const files = readdirSync(copy).filter((f) => f.endsWith('.jsonl'))
    const file = join(copy, files[0] as string)
    const lines = readFileSync(file, 'utf8').split('\n')
    const i = lines.findIndex((l) => l.includes('alice-was-here'))
    lines[i] = (lines[i] as string).replace('alice-was-here', 'alice-was-HERE')
    writeFileSync(file, lines.join('\n'))
    const broken = gw.cli(['audit', 'verify', '--dir', copy, '--pubkey', keyFile])
    assert.equal(broken.code, 1)
    assert.match(broken.stdout, new RegExp(`BROKEN at ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:${i + 1}\\n`))
    assert.match(broken.stdout, /altered/)
    const json = JSON.parse(gw.cli(['audit', 'verify', '--dir', copy, '--pubkey', keyFile, '--json']).stdout) as {
      ok: boolean
      problem: { line: number }
    }
    assert.equal(json.ok, false)
    assert.equal(json.problem.line, i + 1)
  })

  test('the API documents the audit routes', async () => {
    const doc = (await (await fetch(`${gw.apiUrl}/v1/openapi.json`)).json()) as { paths: Record<string, unknown> }
    for (const p of [
      '/v1/audit',
      '/v1/audit/verify',
      '/v1/audit/pubkey',
      '/v1/audit/export',
      '/v1/audit/sinks',
      '/v1/sessions/{id}/recording',
    ]) {
      assert.ok(doc.paths[p], `${p} documented`)
    }
    const unauth = await fetch(`${gw.apiUrl}/v1/audit/export`)
    assert.equal(unauth.status, 401)
  })

  test('a following export ends cleanly when the gateway stops, and does not hold up the stop', async () => {
    const child = spawn(process.execPath, [BIN, 'audit', 'export', '--follow', '--since', '1s', '--config', gw.configFile], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let got = ''
    child.stdout.on('data', (d: Buffer) => {
      got += d.toString()
    })
    const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)))
    // Stop the gateway only once the follower follows (a fixed wait can lose the race with the CLI's
    // start-up on a loaded machine: stopped before it connects, the follower rightly exits 1).
    const end = Date.now() + 30_000
    while (!got.includes('follower-is-following') && Date.now() < end) {
      assert.equal(psql(gw.conninfo(alice), "SELECT 'follower-is-following'").code, 0)
      await new Promise((r) => setTimeout(r, 300))
    }
    assert.ok(got.includes('follower-is-following'), 'the follower printed a new event')
    const t0 = Date.now()
    gw.signal('SIGTERM')
    await gw.waitExit()
    assert.ok(Date.now() - t0 < 5000, `the gateway took ${Date.now() - t0} ms to stop`)
    assert.equal(gw.exitCode, 0)
    assert.equal(await exited, 0)
    assert.ok(
      got.split('\n').every((l) => l === '' || l.startsWith('{"h":"')),
      'only whole lines',
    )
  })
})
