// Hot reload against a real gateway process: an edit to the policy directory is compiled off the
// data path and swapped in within two seconds (`gatehouse policy status` shows the new version),
// a live PostgreSQL session carries on and its next statement is decided by the new bundle; a
// broken edit keeps the last good bundle deciding and shows why (`/readyz` answers 503 until the
// source compiles again). A gateway whose policy does not compile does not start.

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { appendFileSync, cpSync, existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import pg from 'pg'
import { readPolicyDir } from '../engine/policy/sources.js'
import { BIN, REPO, TestGateway } from './helpers/gateway.js'

interface Status {
  version: string
  loaded_at: string | null
  last_error: string | null
  source: string | null
}

function status(gw: TestGateway): Status {
  const r = gw.cli(['policy', 'status', '--json'])
  assert.equal(r.code, 0, r.stderr)
  return JSON.parse(r.stdout) as Status
}

/** GET /v1/policy, what `policy status` prints: cheap enough to poll every 25 ms. */
async function apiStatus(gw: TestGateway): Promise<Status> {
  const token = readFileSync(join(gw.dataDir, 'admin.token'), 'utf8').trim()
  const res = await fetch(`${gw.apiUrl}/v1/policy`, { headers: { authorization: `Bearer ${token}` } })
  assert.equal(res.status, 200)
  return (await res.json()) as Status
}

/** Polls the status until `ok` holds; returns it (as the CLI prints it) and how long it took. */
async function waitFor(gw: TestGateway, ok: (s: Status) => boolean, since: number, limitMs = 2000): Promise<{ s: Status; ms: number }> {
  for (;;) {
    const s = await apiStatus(gw)
    const ms = Date.now() - since
    if (ok(s)) {
      const cli = status(gw)
      assert.ok(ok(cli), `gatehouse policy status --json agrees: ${JSON.stringify(cli)}`)
      return { s: cli, ms }
    }
    if (ms > limitMs + 3000) assert.fail(`policy status did not change in time: ${JSON.stringify(s)}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

interface Readyz {
  status: string
  checks: Record<string, { ok: boolean; detail: string }>
}

/** GET /readyz (no token: load balancers call it): its status code and answer. */
async function readyz(gw: TestGateway): Promise<{ code: number; body: Readyz }> {
  const res = await fetch(`${gw.apiUrl}/readyz`)
  return { code: res.status, body: (await res.json()) as Readyz }
}

/** The log is written asynchronously: wait for a line rather than race it. */
async function waitForLog(gw: TestGateway, re: RegExp): Promise<void> {
  const deadline = Date.now() + 3000
  while (!re.test(gw.stderr)) {
    if (Date.now() > deadline) assert.fail(`no log line matching ${re}:\n${gw.stderr}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

describe('policy hot reload', () => {
  let gw: TestGateway
  let dir: string
  let client: pg.Client
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gh-policies-'))
    cpSync(join(REPO, 'policies'), dir, { recursive: true })
    gw = await TestGateway.start({ config: { policies: dir } })
    const token = gw.token('user:wendy', ['--group', 'writers'])
    client = new pg.Client({ host: '127.0.0.1', port: gw.pgPort, database: 'app', user: 'wendy', password: token, ssl: false })
    await client.connect()
  })
  after(async () => {
    await client.end().catch(() => undefined)
    await gw.cleanup()
    rmSync(dir, { recursive: true, force: true })
  })

  /** Runs a statement; a policy refusal is an answer too. Returns the audit event of it. */
  async function statement(sql: string): Promise<Record<string, unknown>> {
    await client.query(sql).catch((err: { code?: string }) => assert.equal(err.code, '42501', String(err)))
    const events = gw.auditEvents(['--type', 'statement']).filter((e) => e.sql === sql)
    const last = events.at(-1)
    assert.ok(last, `a statement event for ${sql}`)
    return last
  }

  test('the configured directory is loaded and named by its content hash', async () => {
    const s = status(gw)
    assert.equal(s.version, readPolicyDir(dir).version)
    assert.equal(s.source, dir)
    assert.equal(s.last_error, null)
    const start = gw.auditEvents(['--type', 'session.start']).at(-1)
    assert.equal(start?.policy_version, s.version, 'session.start names the policy version')
    assert.equal((await statement('SELECT 1 AS before_edit')).policy_version, s.version)
  })

  test('an edit is live within two seconds; the session carries on under the new version', async (t) => {
    const before = status(gw)
    const t0 = Date.now()
    appendFileSync(join(dir, 'gatehouse.rego'), '\n# Operators may open SSH sessions.\nallow if input.action == "ssh.shell"\n')
    const expected = readPolicyDir(dir).version
    assert.notEqual(expected, before.version)
    const { s, ms } = await waitFor(gw, (x) => x.version === expected, t0)
    assert.ok(ms < 2000, `reloaded in ${ms} ms`)
    t.diagnostic(`save → new version in status: ${ms} ms`)
    assert.equal(s.last_error, null)
    assert.ok(s.loaded_at && s.loaded_at > (before.loaded_at ?? ''), 'loaded_at moved')
    await waitForLog(gw, /"msg":"policy reloaded"/)
    // Same connection, next statement: decided by the new bundle.
    assert.equal((await statement('SELECT 2 AS after_edit')).policy_version, expected)
  })

  test('a broken edit keeps the last good bundle deciding and shows why', async (t) => {
    const good = status(gw)
    const file = join(dir, 'gatehouse.rego')
    const text = readFileSync(file, 'utf8')
    const t0 = Date.now()
    t.after(() => writeFileSync(file, text))
    writeFileSync(file, `${text}\nallow if {\n`)
    const { s, ms } = await waitFor(gw, (x) => x.last_error !== null, t0)
    assert.ok(ms < 2000, `failure reported in ${ms} ms`)
    assert.equal(s.version, good.version, 'the old bundle is still loaded')
    assert.match(s.last_error ?? '', /gatehouse\.rego:\d+: rego_parse_error/)
    await waitForLog(gw, /policy reload failed; the loaded bundle keeps deciding/)
    assert.equal((await statement('SELECT 3 AS while_broken')).policy_version, good.version)
    // Readiness says the policy in force is not the one on disk (docs/operations.md), and why;
    // the other checks still pass.
    const notReady = await readyz(gw)
    assert.equal(notReady.code, 503, JSON.stringify(notReady.body))
    assert.equal(notReady.body.status, 'not ready')
    assert.equal(notReady.body.checks.policy?.ok, false)
    assert.match(
      notReady.body.checks.policy?.detail ?? '',
      new RegExp(
        `^the last reload failed \\(version ${good.version.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} still decides\\): .*rego_parse_error`,
        's',
      ),
    )
    assert.equal(notReady.body.checks.audit?.ok, true)
    assert.equal(notReady.body.checks.listeners?.ok, true)
    const human = gw.cli(['policy', 'status'])
    assert.match(human.stdout, /^last error: [^\n]*the policy does not compile:\n\s+\S*gatehouse\.rego:\d+: rego_parse_error/m)

    // An unsupported built-in is a broken edit too.
    writeFileSync(file, `${text}\nallow if time.now_ns() > 0\n`)
    const { s: s2 } = await waitFor(gw, (x) => (x.last_error ?? '').includes('time.now_ns'), Date.now())
    assert.equal(s2.version, good.version)

    // Fixing it clears the error.
    writeFileSync(file, text)
    const { s: fixed } = await waitFor(gw, (x) => x.last_error === null, Date.now())
    assert.equal(fixed.version, good.version)
    const ready = await readyz(gw)
    assert.equal(ready.code, 200, JSON.stringify(ready.body))
    assert.equal(ready.body.status, 'ready')
    assert.equal(ready.body.checks.policy?.ok, true)
  })

  test('a broken masking.yaml is rejected the same way', async () => {
    const good = status(gw)
    writeFileSync(join(dir, 'masking.yaml'), 'rules:\n  - name: x\n    columns: [email]\n    strategy: blur\n')
    const { s } = await waitFor(gw, (x) => x.last_error !== null, Date.now())
    assert.match(s.last_error ?? '', /masking\.yaml: rules\[0\]\.strategy: must be one of redact, partial, hash, hash_session, null/)
    assert.equal(s.version, good.version)
    const t0 = Date.now()
    writeFileSync(join(dir, 'masking.yaml'), 'rules:\n  - name: x\n    columns: [email]\n    strategy: hash\n')
    const expected = readPolicyDir(dir).version
    const { s: ok, ms } = await waitFor(gw, (x) => x.version === expected && x.last_error === null, t0)
    assert.ok(ms < 2000, `reloaded in ${ms} ms`)
    assert.equal(ok.version, expected)
  })
})

/** `gatehouse serve` with `policies`, which must refuse to start; returns what it said. */
function serveExpectingFailure(dir: string, policies: string): string {
  const config = join(dir, 'gatehouse.yaml')
  writeFileSync(config, JSON.stringify({ data_dir: join(dir, 'data'), listen: { api: '127.0.0.1:0', postgres: '127.0.0.1:0' }, policies }))
  const r = spawnSync(process.execPath, [BIN, 'serve', '--config', config], { encoding: 'utf8', timeout: 30_000 })
  // Exit 2: a configuration or policy that cannot be used (docs/cli.md, exit codes).
  assert.equal(r.status, 2, `gatehouse serve must refuse to start:\n${r.stdout}${r.stderr}`)
  assert.ok(!existsSync(join(dir, 'data')), 'nothing was created before the policy loaded')
  return r.stderr
}

describe('policy at gateway start', () => {
  test('without policies: the default bundle shipped in policies/ decides', async () => {
    const gw = await TestGateway.start()
    try {
      const s = status(gw)
      assert.equal(s.source, join(REPO, 'policies'))
      assert.equal(s.version, readPolicyDir(join(REPO, 'policies')).version)
      const health = (await (await fetch(`${gw.apiUrl}/v1/health`)).json()) as { policy_version: string }
      assert.equal(health.policy_version, s.version)
    } finally {
      await gw.cleanup()
    }
  })

  test('a prebuilt bundle.tar.gz is loaded as is', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gh-bundle-'))
    try {
      const bundle = join(dir, 'bundle.tar.gz')
      const refused = serveExpectingFailure(dir, bundle)
      assert.match(refused, /policies: .*no such policy directory or bundle/)
      const built = spawnSync(process.execPath, [BIN, 'policy', 'build', join(REPO, 'examples/policies'), '-o', bundle], {
        encoding: 'utf8',
      })
      assert.equal(built.status, 0, built.stderr)
      const gw = await TestGateway.start({ config: { policies: bundle } })
      try {
        const s = status(gw)
        assert.equal(s.version, built.stdout.trim())
        assert.equal(s.source, bundle)
        // CI drops a new bundle in place (write elsewhere, then rename): it is picked up.
        const next = join(dir, 'next.tar.gz')
        const rebuilt = spawnSync(process.execPath, [BIN, 'policy', 'build', join(REPO, 'policies'), '-o', next], { encoding: 'utf8' })
        assert.equal(rebuilt.status, 0, rebuilt.stderr)
        const t0 = Date.now()
        renameSync(next, bundle)
        const { ms } = await waitFor(gw, (x) => x.version === rebuilt.stdout.trim(), t0)
        assert.ok(ms < 2000, `reloaded in ${ms} ms`)
      } finally {
        await gw.cleanup()
      }
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  test('a policy that does not compile stops the gateway from starting, saying where', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gh-policies-'))
    try {
      cpSync(join(REPO, 'policies'), dir, { recursive: true })
      writeFileSync(join(dir, 'net.rego'), 'package gatehouse\n\nallow if http.send({"url": "http://x", "method": "get"})\n')
      const refused = serveExpectingFailure(dir, dir)
      assert.match(refused, /net\.rego:3: built-in http\.send is not supported in policies/)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
