// Approval timeouts, expiry and grant windows against real PostgreSQL and psql: nobody deciding
// ends the wait with a timeout and the request expires; an approved once-grant is refused after it
// expired; a window grant needs every approval, lets writes through during its window and not
// after it; a held Execute is bound to its parameters.

import assert from 'node:assert/strict'
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import pg from 'pg'
import { direct, LOCAL_PG, REPO, TestGateway } from './helpers/gateway.js'
import { psqlAsync, requestIdOf } from './helpers/held.js'

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

function table(): string {
  return `appr_${Math.random().toString(36).slice(2, 10)}`
}

/** Requirements for the expiry and window tests: a once-grant, a two-lead window, a billing write. */
function expiryRequirements(window: string): string {
  return [
    'requirements:',
    '  - name: prod-ddl',
    '    action: sql.ddl',
    '    labels: { env: prod }',
    '    approvers: { group: dba, count: 1 }',
    '    grant: once',
    '    reason: schema changes on production need a DBA',
    '  - name: prod-writes',
    '    action: sql.write',
    '    labels: { env: prod }',
    '    approvers: { group: leads, count: 2 }',
    '    grant: window',
    `    window: ${window}`,
    '    reason: writes on production need two leads',
    '  - name: billing-writes',
    '    action: sql.write',
    '    labels: { tier: billing }',
    '    approvers: { group: dba, count: 1 }',
    '    grant: once',
    '    reason: billing writes need a DBA',
    '',
  ].join('\n')
}

/** A gateway with those requirements: `approvals` is the config section (timeouts), `window` the grant's. */
function expiryFixture(approvals: Record<string, string>, window: string) {
  const f = { gw: undefined as unknown as TestGateway, policyDir: '', alice: '', bob: '', dropped: [] as string[] }
  before(async () => {
    f.policyDir = mkdtempSync(join(tmpdir(), 'gh-appr-pol-'))
    cpSync(join(REPO, 'policies'), f.policyDir, { recursive: true })
    rmSync(join(f.policyDir, 'default.cases.yaml'), { force: true })
    writeFileSync(join(f.policyDir, 'approvals.yaml'), expiryRequirements(window))
    f.gw = await TestGateway.start({
      connections: [
        { ...LOCAL_PG, labels: { env: 'prod' } },
        { ...LOCAL_PG, name: 'billing', labels: { tier: 'billing' } },
      ],
      config: { policies: f.policyDir, approvals },
    })
    f.alice = f.gw.token('user:alice', ['--group', 'dba', '--group', 'writers'])
    f.bob = f.gw.token('user:bob', ['--group', 'dba', '--group', 'leads'])
  })
  after(async () => {
    for (const t of f.dropped) direct(`DROP TABLE IF EXISTS ${t}`)
    await f.gw?.cleanup()
    if (f.policyDir) rmSync(f.policyDir, { recursive: true, force: true })
  })
  return f
}

/** Approves request `id` as `token` through the API: quicker than a CLI process on a loaded machine. */
function approveByApi(gw: TestGateway, id: string, token: string): Promise<Response> {
  return fetch(`${gw.apiUrl}/v1/approvals/${id}/approve`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: '{}',
  })
}

describe('approvals: timeouts and expiry', () => {
  // Short on purpose: these tests wait for the expiry.
  const f = expiryFixture({ timeout: '4s', request_ttl: '4s' }, '3s')

  test('nobody decides: the statement ends with a timeout error and the request expires', async () => {
    const t = table()
    // From before psql starts: the wait cannot be shorter than the timeout from there, however
    // late this process notices the hold on a loaded machine.
    const started = Date.now()
    const run = psqlAsync(f.gw.conninfo(f.alice), [`CREATE TABLE ${t} (id int)`])
    const id = await requestIdOf(run)
    assert.notEqual(await run.done, 0)
    assert.ok(Date.now() - started >= 3900, 'it waited for the configured timeout')
    assert.match(run.stderr, new RegExp(`approval request ${id} timed out after 4s`))
    const a = f.gw.cli(['approvals', 'approve', id, '--token', f.bob])
    assert.notEqual(a.code, 0, 'an expired request cannot be approved')
    assert.match(a.stderr, /expired/)
    assert.equal(direct(`SELECT to_regclass('${t}') IS NULL`), 't')
  })

  test('an approved once-grant is refused after it expired', async () => {
    const t = table()
    f.dropped.push(t)
    const stmt = `CREATE TABLE ${t} (id int)`
    const first = psqlAsync(f.gw.conninfo(f.alice), ["SET gatehouse.approval_wait = 'off'", stmt])
    await first.done
    const id = await requestIdOf(first)
    // Through the API: a CLI start-up could outlast the request's 4 s on a loaded machine.
    const ok = await approveByApi(f.gw, id, f.bob)
    assert.equal(ok.status, 200, await ok.text())
    await sleep(4200)
    const late = psqlAsync(f.gw.conninfo(f.alice), ["SET gatehouse.approval_wait = 'off'", stmt])
    assert.notEqual(await late.done, 0)
    assert.notEqual(await requestIdOf(late), id)
    assert.equal(direct(`SELECT to_regclass('${t}') IS NULL`), 't')
  })
})

describe('approvals: windows and parameters', () => {
  // Requests live the default hour: what is tested here must not race their expiry. The window is
  // long enough for two psql runs on a loaded machine, short enough to wait out.
  const WINDOW_MS = 10_000
  const f = expiryFixture({}, '10s')

  test('a window grant needs every approval, lets writes through during its window, and not after it', async () => {
    const t = table()
    f.dropped.push(t)
    direct(`CREATE TABLE ${t} (id int)`)
    const carol = f.gw.token('user:carol', ['--group', 'leads'])
    const run = psqlAsync(f.gw.conninfo(f.alice), [`INSERT INTO ${t} VALUES (1)`])
    const id = await requestIdOf(run)
    const approve = (token: string): Promise<Response> => approveByApi(f.gw, id, token)
    const one = await approve(f.bob)
    const oneBody = await one.text()
    assert.equal(one.status, 200, oneBody)
    assert.equal((JSON.parse(oneBody) as { status: string }).status, 'pending', 'one of two leads is not enough')
    const again = await approve(f.bob)
    assert.notEqual(again.status, 200, 'the same reviewer counts once')
    const second = await approve(carol)
    assert.equal(second.status, 200, await second.text())
    assert.equal(await run.done, 0, run.stderr)
    const approvedAt = Date.now()
    // During the window: more writes pass without a new request.
    const more = psqlAsync(f.gw.conninfo(f.alice), [`INSERT INTO ${t} VALUES (2)`, `UPDATE ${t} SET id = id + 10 WHERE id = 2`])
    assert.equal(await more.done, 0, more.stderr)
    assert.ok(Date.now() - approvedAt < WINDOW_MS, 'still inside the window')
    assert.equal(direct(`SELECT string_agg(id::text, ',' ORDER BY id) FROM ${t}`), '1,12')
    // After it: held again.
    await sleep(Math.max(0, approvedAt + WINDOW_MS + 100 - Date.now()))
    const late = psqlAsync(f.gw.conninfo(f.alice), ["SET gatehouse.approval_wait = 'off'", `INSERT INTO ${t} VALUES (3)`])
    assert.notEqual(await late.done, 0)
    assert.notEqual(await requestIdOf(late), id)
    assert.equal(direct(`SELECT count(*) FROM ${t}`), '2')
  })

  test('extended protocol: a held Execute is bound to its parameters', async () => {
    const t = table()
    f.dropped.push(t)
    direct(`CREATE TABLE ${t} (id int)`)
    const c = new pg.Client({ host: '127.0.0.1', port: f.gw.pgPort, database: 'billing', user: 'alice', password: f.alice })
    await c.connect()
    try {
      await c.query("SET gatehouse.approval_wait = 'off'")
      const insert = `INSERT INTO ${t} VALUES ($1)`
      const first = await c.query(insert, [1]).then(
        () => null,
        (e: Error) => e.message,
      )
      const id = /request (R-[0-9a-f]{6})/.exec(first ?? '')?.[1] ?? ''
      assert.ok(id, `held: ${first}`)
      const ok = f.gw.cli(['approvals', 'approve', id, '--token', f.bob])
      assert.equal(ok.code, 0, ok.stderr)
      // Other parameters: another statement, held anew.
      const other = await c.query(insert, [999]).then(
        () => null,
        (e: Error) => e.message,
      )
      assert.match(other ?? '', /approval required \(request R-/)
      assert.doesNotMatch(other ?? '', new RegExp(id))
      // The approved parameters: runs once.
      await c.query(insert, [1])
      assert.equal(direct(`SELECT string_agg(id::text, ',') FROM ${t}`), '1')
    } finally {
      await c.end()
    }
  })
})
