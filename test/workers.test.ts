// `gatehouse serve --workers 2`: the primary hands connections to its workers in turn, every
// worker's sessions show in `sessions list`, and what one worker learns (a revocation, an approval
// decision, a kill, a policy change) the other acts on within a second.

import assert from 'node:assert/strict'
import { appendFileSync, cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import pg from 'pg'
import { Agent, request } from 'undici'
import { readPolicyDir } from '../engine/policy/sources.js'
import { direct, LOCAL_PG, REPO, TestGateway } from './helpers/gateway.js'

interface SessionRow {
  id: string
  client: string
  active: boolean
  worker: number | null
  end_reason: string | null
}

function client(gw: TestGateway, token: string, database = 'app'): pg.Client {
  const c = new pg.Client({ host: '127.0.0.1', port: gw.pgPort, database, user: 'alice', password: token })
  // Sessions these tests end report it (more than once: the error, then the closed socket).
  c.on('error', () => undefined)
  return c
}

/** The next error a client reports (its session ended), or null after `ms`. */
function nextError(c: pg.Client, ms = 30_000): Promise<(Error & { code?: string }) | null> {
  return Promise.race([new Promise<Error>((resolve) => c.on('error', resolve)), new Promise<null>((r) => setTimeout(() => r(null), ms))])
}

/** One keep-alive connection to the API, so every request on it is answered by the same worker. */
class ApiConnection {
  readonly agent = new Agent({ connections: 1, pipelining: 1 })
  worker = 0

  constructor(private readonly gw: TestGateway) {}

  async call<T>(method: 'GET' | 'POST', path: string, token?: string, body?: unknown): Promise<{ status: number; json: T }> {
    const r = await request(`${this.gw.apiUrl}${path}`, {
      dispatcher: this.agent,
      method,
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    })
    this.worker = Number(r.headers['x-gatehouse-worker'])
    return { status: r.statusCode, json: (await r.body.json()) as T }
  }

  /** A connection served by a worker other than `not` (the primary hands connections out in turn). */
  static async other(gw: TestGateway, not: number | null): Promise<ApiConnection> {
    for (let i = 0; i < 20; i++) {
      const c = new ApiConnection(gw)
      await c.call('GET', '/healthz')
      if (c.worker !== not) return c
      await c.agent.close()
    }
    throw new Error(`every API connection went to worker ${not}`)
  }
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
  let policyDir: string
  const open: pg.Client[] = []
  const table = `ghw_held_${process.pid}`

  before(async () => {
    policyDir = mkdtempSync(join(tmpdir(), 'ghw-policies-'))
    cpSync(join(REPO, 'policies'), policyDir, { recursive: true })
    gw = await TestGateway.start({
      config: { workers: 2, policies: policyDir },
      connections: [LOCAL_PG, { ...LOCAL_PG, name: 'prod', labels: { env: 'prod' } }],
    })
  })
  after(async () => {
    await Promise.allSettled(open.map((c) => c.end()))
    await gw.cleanup()
    rmSync(policyDir, { recursive: true, force: true })
    direct(`DROP TABLE IF EXISTS ${table}`)
  })

  /** Connected clients until one is served by each worker: [on worker 1, on worker 2]. */
  async function onEachWorker(token: string, database = 'app'): Promise<[pg.Client, pg.Client]> {
    const by = new Map<number, pg.Client>()
    for (let i = 0; i < 6 && by.size < 2; i++) {
      const c = client(gw, token, database)
      await c.connect()
      open.push(c)
      const w = (await sessionOf(gw, c)).worker ?? 0
      if (!by.has(w)) by.set(w, c)
    }
    const one = by.get(1)
    const two = by.get(2)
    assert.ok(one && two, 'a session on each worker')
    return [one, two]
  }

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

  test('a second gateway on the same data directory is refused while the primary runs', () => {
    for (const args of [[], ['--workers', '2']]) {
      const r = gw.cli(['serve', ...args])
      assert.notEqual(r.code, 0, r.stdout)
      assert.match(r.stderr, new RegExp(`another process \\(pid ${gw.proc?.pid}\\) is writing the audit log`))
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

  test('a kill given to one worker ends a session the other serves, within a second', async () => {
    const [c] = await onEachWorker(gw.token('user:alice'))
    const s = await sessionOf(gw, c)
    const api = await ApiConnection.other(gw, s.worker)
    const admin = readFileSync(join(gw.dataDir, 'admin.token'), 'utf8').trim()
    const ended = nextError(c)
    const t0 = Date.now()
    const r = await api.call<{ killed?: string }>('POST', `/v1/sessions/${s.id}/kill`, admin, { reason: 'cross-worker kill' })
    await api.agent.close()
    assert.equal(r.status, 200, JSON.stringify(r.json))
    assert.equal(r.json.killed, s.id)
    const err = await ended
    const ms = Date.now() - t0
    assert.ok(err, 'the client was told')
    assert.equal(err.code, '57P01')
    assert.ok(ms < 1000, `ended ${ms} ms after the kill`)
    // An id no worker serves is refused, after asking both.
    const other = await ApiConnection.other(gw, null)
    const missing = await other.call('POST', '/v1/sessions/s-000000000000/kill', admin, {})
    await other.agent.close()
    assert.equal(missing.status, 404)
  })

  test('a revocation given to either worker ends the token’s sessions on both within a second; new ones are refused', async () => {
    const t = gw.tokenJson('user:rita')
    const [one, two] = await onEachWorker(t.token)
    const ended = [nextError(one), nextError(two)]
    const admin = readFileSync(join(gw.dataDir, 'admin.token'), 'utf8').trim()
    const api = await ApiConnection.other(gw, null)
    const t0 = Date.now()
    const r = await api.call<{ sessions_ended: number }>('POST', `/v1/tokens/${encodeURIComponent(t.id)}/revoke`, admin, {})
    await api.agent.close()
    assert.equal(r.status, 200, JSON.stringify(r.json))
    assert.equal(r.json.sessions_ended, 2, 'both workers ended theirs, and said so')
    for (const e of await Promise.all(ended)) {
      assert.ok(e, 'each client was told')
    }
    const ms = Date.now() - t0
    assert.ok(ms < 1000, `both ended ${ms} ms after the revocation`)
    // Both workers refuse the token from now on (the shared store is the source of truth).
    for (let i = 0; i < 2; i++) {
      const c = client(gw, t.token)
      await assert.rejects(c.connect(), (e: { code?: string }) => e.code === '28P01')
    }
  })

  test('a statement held on one worker is released by an approval given to the other, within a second', async () => {
    const requester = gw.token('user:alice', ['--group', 'dba', '--group', 'writers'])
    const reviewer = gw.token('user:bob', ['--group', 'dba'])
    const c = client(gw, requester, 'prod')
    await c.connect()
    open.push(c)
    const s = await sessionOf(gw, c)
    const notice = new Promise<string>((resolve) =>
      c.on('notice', (n) => {
        const m = /request (R-[0-9a-f]{6})/.exec(n.message ?? '')
        if (m?.[1]) resolve(m[1])
      }),
    )
    const held = c.query(`CREATE TABLE ${table} (id int)`)
    const id = await notice
    const api = await ApiConnection.other(gw, s.worker)
    const t0 = Date.now()
    const r = await api.call<{ status: string }>('POST', `/v1/approvals/${id}/approve`, reviewer, {})
    await api.agent.close()
    assert.equal(r.status, 200, JSON.stringify(r.json))
    await held
    const ms = Date.now() - t0
    assert.ok(ms < 1000, `ran ${ms} ms after the approval`)
    assert.equal(direct(`SELECT to_regclass('${table}') IS NOT NULL`), 't')
  })

  test('a policy change seen by one worker is in force on both within a second, as the same bundle', async () => {
    const [w1, w2] = [await ApiConnection.other(gw, 2), await ApiConnection.other(gw, 1)]
    const admin = readFileSync(join(gw.dataDir, 'admin.token'), 'utf8').trim()
    appendFileSync(join(policyDir, 'gatehouse.rego'), '\n# Operators may open SSH sessions.\nallow if input.action == "ssh.shell"\n')
    const expected = readPolicyDir(policyDir).version
    const seen: number[] = []
    const t0 = Date.now()
    for (;;) {
      const r = await w1.call<{ version: string }>('GET', '/v1/policy', admin)
      if (r.json.version === expected) break
      if (Date.now() - t0 > 60_000) assert.fail(`worker 1 still decides with ${r.json.version}`)
      await new Promise((r) => setTimeout(r, 20))
    }
    seen.push(Date.now())
    assert.equal(w1.worker, 1)
    // Worker 1 watches the source and swaps a new bundle in only after the others loaded it:
    // once it reports the new version, no worker decides with the old one.
    const other = await w2.call<{ version: string }>('GET', '/v1/policy', admin)
    assert.equal(w2.worker, 2)
    assert.equal(other.json.version, expected, 'worker 2 had the new bundle before worker 1 reported it')
    seen.push(Date.now())
    await Promise.all([w1.agent.close(), w2.agent.close()])
    const lag = (seen[1] as number) - (seen[0] as number)
    assert.ok(lag < 1000, `worker 2 decided with the new version ${lag} ms after worker 1`)
  })
})
