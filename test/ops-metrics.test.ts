// Operations endpoints of a real gateway process: /metrics scraped before and after a real psql
// session (statement counters by action and decision, sessions, decision and audit times moved),
// /healthz and /readyz unauthenticated; readiness 503 while the policy source does not compile and
// while the audit file system is full (a real tmpfs, filled with dd), 200 again once fixed;
// `metrics.auth: admin` keeps /metrics for admin tokens. The log is JSON Lines when stderr is not a
// terminal, pretty lines on a terminal (a real pty, through `script`) or with --log-format pretty.

import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { appendFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { BIN, LOCAL_PG, psql, REPO, TestGateway } from './helpers/gateway.js'
import { freePort } from './helpers/sshd.js'

type Samples = Map<string, number>

/** Parses the Prometheus text format into `name{labels}` → value. */
function parseMetrics(text: string): Samples {
  const out: Samples = new Map()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const i = line.lastIndexOf(' ')
    out.set(line.slice(0, i), Number(line.slice(i + 1)))
  }
  return out
}

async function scrape(gw: TestGateway, token?: string): Promise<Samples> {
  const res = await fetch(`${gw.apiUrl}/metrics`, token ? { headers: { authorization: `Bearer ${token}` } } : {})
  assert.equal(res.status, 200)
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/)
  return parseMetrics(await res.text())
}

const v = (s: Samples, key: string): number => s.get(key) ?? 0

async function readyz(
  gw: TestGateway,
): Promise<{ status: number; body: { status: string; checks: Record<string, { ok: boolean; detail: string }> } }> {
  const res = await fetch(`${gw.apiUrl}/readyz`)
  return { status: res.status, body: (await res.json()) as { status: string; checks: Record<string, { ok: boolean; detail: string }> } }
}

async function waitReady(gw: TestGateway, want: number, what: string): Promise<Awaited<ReturnType<typeof readyz>>> {
  const deadline = Date.now() + 15_000
  for (;;) {
    const r = await readyz(gw)
    if (r.status === want) return r
    if (Date.now() > deadline) assert.fail(`/readyz stayed ${r.status} (${what}): ${JSON.stringify(r.body)}`)
    await new Promise((res) => setTimeout(res, 100))
  }
}

describe('metrics, healthz and readyz (open metrics)', () => {
  let gw: TestGateway
  before(async () => {
    gw = await TestGateway.start({ connections: [LOCAL_PG] })
  })
  after(async () => {
    await gw?.cleanup()
  })

  test('healthz and readyz answer without a token', async () => {
    const h = await fetch(`${gw.apiUrl}/healthz`)
    assert.equal(h.status, 200)
    assert.deepEqual(await h.json(), { status: 'ok' })
    const r = await readyz(gw)
    assert.equal(r.status, 200)
    assert.equal(r.body.status, 'ready')
    assert.deepEqual(Object.keys(r.body.checks).sort(), ['audit', 'listeners', 'policy'])
    for (const c of Object.values(r.body.checks)) assert.equal(c.ok, true)
    assert.match(r.body.checks.listeners?.detail ?? '', /postgres 127\.0\.0\.1:\d+/)
  })

  test('a psql session moves the statement, session and timing metrics', async () => {
    const beforeScrape = await scrape(gw)
    for (const name of [
      'gatehouse_decision_seconds_count',
      'gatehouse_audit_append_seconds_count',
      'gatehouse_audit_backlog_events',
      'gatehouse_approvals_pending',
      'gatehouse_policy_reloads_total{result="failed"}',
      'gatehouse_process_cpu_seconds_total',
    ]) {
      assert.ok(beforeScrape.has(name), `${name} is exported`)
    }
    const token = gw.token('user:alice') // not a writer: an INSERT is denied under the default policy
    // One session: two reads, then a write the policy denies (psql runs the -c in order).
    const r = psql(gw.conninfo(token), 'INSERT INTO gh_metrics_nosuch VALUES (1)', { extraArgs: ['-c', 'SELECT 1', '-c', 'SELECT 2'] })
    assert.notEqual(r.code, 0)
    assert.match(r.stderr, /denied/)
    const afterScrape = await scrape(gw)
    const delta = (key: string): number => v(afterScrape, key) - v(beforeScrape, key)
    assert.equal(delta('gatehouse_commands_total{action="sql.read",decision="allow"}'), 2)
    assert.equal(delta('gatehouse_commands_total{action="sql.write",decision="deny"}'), 1)
    assert.equal(delta('gatehouse_sessions_opened_total{protocol="postgres"}'), 1)
    assert.equal(v(afterScrape, 'gatehouse_sessions_open{protocol="postgres"}'), 0, 'the session has ended')
    // connect + three statements, each evaluated (or reused) and audited before it ran.
    assert.ok(delta('gatehouse_decision_seconds_count') >= 2)
    assert.ok(delta('gatehouse_audit_append_seconds_count') >= 3)
    assert.ok(delta('gatehouse_decision_seconds_sum') > 0)
    // Buckets are cumulative and end at the count.
    assert.equal(v(afterScrape, 'gatehouse_decision_seconds_bucket{le="+Inf"}'), v(afterScrape, 'gatehouse_decision_seconds_count'))

    // A bad token is a refused session, counted by protocol.
    const bad = psql(gw.conninfo('not-a-token'), 'SELECT 1')
    assert.notEqual(bad.code, 0)
    const refused = await scrape(gw)
    assert.equal(
      v(refused, 'gatehouse_sessions_refused_total{protocol="postgres"}') -
        v(afterScrape, 'gatehouse_sessions_refused_total{protocol="postgres"}'),
      1,
    )
  })

  test('a live session shows in gatehouse_sessions_open', async () => {
    const token = gw.token('user:alice')
    const run = spawnSync('bash', ['-c', 'psql -X -At -d "$CONNINFO" -c "SELECT pg_sleep(3)" & sleep 1.5; curl -s "$API/metrics"; wait'], {
      env: { ...process.env, CONNINFO: gw.conninfo(token), API: gw.apiUrl },
      encoding: 'utf8',
      timeout: 60_000,
    })
    assert.equal(run.status, 0, run.stderr)
    assert.equal(v(parseMetrics(run.stdout), 'gatehouse_sessions_open{protocol="postgres"}'), 1)
  })
})

describe('readyz fails when the policy does not compile or the audit disk is full; metrics.auth: admin', () => {
  let gw: TestGateway
  let root: string
  let policies: string
  let auditDir = ''
  let mounted = false
  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'gh-ops-'))
    policies = join(root, 'policies')
    cpSync(join(REPO, 'policies'), policies, { recursive: true })
    const dataDir = join(root, 'data')
    auditDir = join(dataDir, 'audit')
    mkdirSync(auditDir, { recursive: true })
    if (process.getuid?.() === 0) {
      const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=512k', 'tmpfs', auditDir], { encoding: 'utf8' })
      assert.equal(m.status, 0, `mount failed: ${m.stderr}`)
      mounted = true
    }
    gw = await TestGateway.start({ dataDir, connections: [LOCAL_PG], config: { policies, metrics: { auth: 'admin' } } })
  })
  after(async () => {
    await gw?.cleanup()
    if (mounted) spawnSync('umount', [auditDir])
    rmSync(root, { recursive: true, force: true })
  })

  test('metrics.auth: admin: /metrics needs an admin token; the probes stay open', async () => {
    assert.equal((await fetch(`${gw.apiUrl}/metrics`)).status, 401)
    const user = gw.token('user:alice')
    assert.equal((await fetch(`${gw.apiUrl}/metrics`, { headers: { authorization: `Bearer ${user}` } })).status, 403)
    const admin = readFileSync(join(gw.dataDir, 'admin.token'), 'utf8').trim()
    assert.ok((await scrape(gw, admin)).has('gatehouse_audit_backlog_events'))
    assert.equal((await fetch(`${gw.apiUrl}/healthz`)).status, 200)
    assert.equal((await readyz(gw)).status, 200)
  })

  test('a policy edit that does not compile: 503 until it is fixed', async () => {
    const admin = readFileSync(join(gw.dataDir, 'admin.token'), 'utf8').trim()
    const file = join(policies, 'gatehouse.rego')
    const good = readFileSync(file, 'utf8')
    appendFileSync(file, '\nthis is not rego\n')
    const r = await waitReady(gw, 503, 'broken policy')
    assert.equal(r.body.status, 'not ready')
    assert.equal(r.body.checks.policy?.ok, false)
    assert.match(r.body.checks.policy?.detail ?? '', /last reload failed/)
    assert.equal(r.body.checks.audit?.ok, true)
    const m = await scrape(gw, admin)
    assert.ok(v(m, 'gatehouse_policy_reloads_total{result="failed"}') >= 1)
    assert.equal(v(m, 'gatehouse_policy_last_reload_failed'), 1)
    writeFileSync(file, good)
    await waitReady(gw, 200, 'policy fixed')
    assert.equal(v(await scrape(gw, admin), 'gatehouse_policy_last_reload_failed'), 0)
  })

  test('the audit file system full: 503 until there is room again', async (t) => {
    if (!mounted) {
      t.skip('needs root to mount a small tmpfs for the audit directory')
      return
    }
    const filler = join(auditDir, 'filler')
    spawnSync('dd', ['if=/dev/zero', `of=${filler}`, 'bs=4k'], { stdio: 'ignore' })
    const r = await waitReady(gw, 503, 'audit full')
    assert.equal(r.body.checks.audit?.ok, false)
    assert.match(r.body.checks.audit?.detail ?? '', /bytes free/)
    assert.equal(r.body.checks.policy?.ok, true)
    rmSync(filler)
    await waitReady(gw, 200, 'room again')
  })
})

describe('log format', () => {
  let dir: string
  let config: string
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gh-logfmt-'))
    config = join(dir, 'gatehouse.yaml')
    writeFileSync(
      config,
      `data_dir: ${join(dir, 'data')}\nlisten: { api: 127.0.0.1:${await freePort()}, postgres: 127.0.0.1:${await freePort()} }\n`,
    )
  })
  after(() => {
    rmSync(dir, { recursive: true, force: true })
  })

  /** Starts serve through `command` (bash), reads its output until it is ready, then stops it
   * (by the pid in run.json, whatever wraps it); returns the output. */
  const firstLines = async (command: string): Promise<string> => {
    const run = join(dir, 'data', 'run.json')
    rmSync(run, { force: true })
    const p = spawn('bash', ['-c', command], { env: { ...process.env, GH_BIN: BIN, GH_CONFIG: config }, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    p.stdout?.on('data', (b: Buffer) => {
      out += b.toString()
    })
    p.stderr?.on('data', (b: Buffer) => {
      out += b.toString()
    })
    const exited = new Promise((r) => p.once('exit', r))
    const deadline = Date.now() + 90_000
    while (!(existsSync(run) && /gatehouse ready/.test(out))) {
      if (p.exitCode !== null) assert.fail(`serve exited:\n${out}`)
      if (Date.now() > deadline) assert.fail(`serve did not become ready:\n${out}`)
      await new Promise((r) => setTimeout(r, 100))
    }
    process.kill((JSON.parse(readFileSync(run, 'utf8')) as { pid: number }).pid, 'SIGINT')
    await exited
    return out
  }

  const serve = 'node "$GH_BIN" serve --config "$GH_CONFIG"'

  test('JSON Lines when stderr is not a terminal', async () => {
    const out = await firstLines(`${serve} 2>&1 >/dev/null`)
    const ready = out.split('\n').find((l) => l.includes('gatehouse ready'))
    assert.ok(ready, out)
    assert.equal((JSON.parse(ready) as { msg: string }).msg, 'gatehouse ready')
  })

  test('pretty on a terminal, and with --log-format pretty', async () => {
    // `script` gives the gateway a real pseudo-terminal for stdout and stderr.
    const tty = await firstLines(`script -qefc '${serve}' /dev/null`)
    assert.match(tty, /INFO.*gatehouse ready/)
    assert.doesNotMatch(tty, /"msg":"gatehouse ready"/)
    const flag = await firstLines(`${serve} --log-format pretty 2>&1 >/dev/null`)
    assert.match(flag, /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO.*: gatehouse ready/m)
    assert.doesNotMatch(flag, /"msg":/)
  })
})
