// Just-in-time approvals against real PostgreSQL, real psql and the real CLI in other
// processes: a held DDL waits and completes once a DBA approves; a denial ends it with the comment;
// a denial inside a transaction leaves it unable to commit; a wait longer than
// idle_in_transaction_session_timeout keeps the session; an approval cannot be replayed for another
// statement, by a sub-agent or by another user; nobody approves their own request; a chain cannot
// flood reviewers; and a webhook receiver verifies every signature and sees every request and
// decision. Timeouts, expiry and windows: approvals-expiry.test.ts.

import assert from 'node:assert/strict'
import { connect, type Socket } from 'node:net'
import { after, before, describe, test } from 'node:test'
import { parseConfig } from '../engine/config/config.js'
import { direct, LOCAL_PG, TestGateway } from './helpers/gateway.js'
import { psqlAsync, requestIdOf } from './helpers/held.js'
import { WebhookReceiver } from './helpers/webhook.js'
import { cstr, int32, msg } from './helpers/wire.js'

const SECRET = 'test-webhook-secret-5f1c'
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

function table(): string {
  return `appr_${Math.random().toString(36).slice(2, 10)}`
}

/** A raw protocol client (plain TCP on loopback): logs in, then lets a test pipeline messages. */
class RawClient {
  private buf = Buffer.alloc(0)
  readonly messages: { type: string; body: Buffer }[] = []
  /** BackendKeyData: pid and secret, for a CancelRequest. */
  key: Buffer | null = null
  private constructor(readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d])
      while (this.buf.length >= 5) {
        const len = this.buf.readInt32BE(1)
        if (this.buf.length < len + 1) break
        this.messages.push({ type: String.fromCharCode(this.buf[0] as number), body: this.buf.subarray(5, len + 1) })
        this.buf = this.buf.subarray(len + 1)
      }
    })
  }

  static async login(port: number, token: string): Promise<RawClient> {
    const socket = connect({ host: '127.0.0.1', port })
    await new Promise<void>((r) => socket.once('connect', () => r()))
    const c = new RawClient(socket)
    const params = Buffer.concat([cstr('user'), cstr('alice'), cstr('database'), cstr('app'), Buffer.from([0])])
    socket.write(Buffer.concat([int32(params.length + 8), int32(196608), params]))
    await c.until((m) => m.type === 'R')
    socket.write(msg('p', cstr(token)))
    await c.until((m) => m.type === 'Z')
    c.key = c.messages.find((m) => m.type === 'K')?.body ?? null
    c.messages.length = 0
    return c
  }

  count(type: string): number {
    return this.messages.filter((m) => m.type === type).length
  }

  async until(pred: (m: { type: string; body: Buffer }) => boolean, timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (!this.messages.some(pred)) {
      if (Date.now() > deadline) throw new Error(`timed out; got ${this.messages.map((m) => m.type).join('')}`)
      await sleep(10)
    }
  }
}

describe('approvals: held statements in PostgreSQL', () => {
  let gw: TestGateway
  let hook: WebhookReceiver
  let alice = ''
  let bob = ''
  let carol = ''
  const dropped: string[] = []

  before(async () => {
    // The first delivery fails: the webhook must retry it.
    hook = await WebhookReceiver.start(SECRET, 1)
    gw = await TestGateway.start({
      connections: [{ ...LOCAL_PG, labels: { env: 'prod' } }],
      // The first tests' reviewers are CLI processes, which on a loaded two-core machine take seconds each.
      config: { approvals: { timeout: '60s', request_ttl: '1h', webhook: { url: hook.url, secret: 'env:GH_TEST_WEBHOOK_SECRET' } } },
      env: { GH_TEST_WEBHOOK_SECRET: SECRET },
    })
    alice = gw.token('user:alice', ['--group', 'dba', '--group', 'writers'])
    bob = gw.token('user:bob', ['--group', 'dba'])
    carol = gw.token('user:carol', ['--group', 'dba', '--group', 'writers'])
  })
  after(async () => {
    for (const t of dropped) direct(`DROP TABLE IF EXISTS ${t}`)
    await gw?.cleanup()
    await hook?.close()
  })

  // Reviewers act through the API here: a CLI process per vote takes seconds on a loaded machine
  // while a request waits. The first two tests use the CLI (another process), which is what they test.
  const vote = async (verdict: 'approve' | 'deny', id: string, token: string, comment?: string) => {
    const res = await fetch(`${gw.apiUrl}/v1/approvals/${id}/${verdict}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify(comment ? { comment } : {}),
    })
    const text = await res.text()
    return { code: res.ok ? 0 : 1, stderr: res.ok ? '' : text }
  }
  const approve = (id: string, token: string, comment?: string) => vote('approve', id, token, comment)
  const deny = (id: string, token: string, comment: string) => vote('deny', id, token, comment)
  const show = async (id: string, token: string): Promise<Record<string, unknown>> => {
    const res = await fetch(`${gw.apiUrl}/v1/approvals/${id}`, { headers: { authorization: `Bearer ${token}` } })
    const text = await res.text()
    assert.equal(res.status, 200, text)
    return JSON.parse(text) as Record<string, unknown>
  }
  const showByCli = (id: string, token: string): Record<string, unknown> => {
    const r = gw.cli(['approvals', 'show', id, '--json', '--token', token])
    assert.equal(r.code, 0, r.stderr)
    return JSON.parse(r.stdout) as Record<string, unknown>
  }

  test('a held DDL waits, tells the client at once, and completes after an approval from another process', async () => {
    const t = table()
    dropped.push(t)
    const run = psqlAsync(gw.conninfo(alice), [`SET gatehouse.reason = 'ticket OPS-42'`, `CREATE TABLE ${t} (id int)`])
    const id = await requestIdOf(run)
    assert.match(
      run.stderr,
      new RegExp(`approval required \\(request ${id}\\), waiting for group dba; approve with: gatehouse approvals approve ${id}`),
    )
    await sleep(300)
    assert.equal(run.proc.exitCode, null, 'psql is still waiting')
    assert.equal(direct(`SELECT to_regclass('${t}') IS NULL`), 't', 'nothing ran before the approval')

    // What the reviewer sees: who asks, the chain, the statement, the connection, the rule, the reason.
    const r = showByCli(id, bob)
    assert.equal(r.status, 'pending')
    assert.equal(r.requester, 'user:alice')
    assert.deepEqual(r.chain, ['user:alice'])
    assert.equal(r.statement, `CREATE TABLE ${t} (id int)`)
    assert.equal(r.connection, 'app')
    assert.deepEqual(r.rules, ['prod-ddl'])
    assert.equal(r.reason, 'ticket OPS-42')

    const a = gw.cli(['approvals', 'approve', id, '--token', bob, '--comment', 'looks fine'])
    assert.equal(a.code, 0, a.stderr)
    assert.equal(await run.done, 0, run.stderr)
    assert.equal(direct(`SELECT to_regclass('${t}') IS NOT NULL`), 't')
    assert.equal((await show(id, bob)).status, 'used')

    const list = gw.cli(['approvals', 'list', '--json', '--token', bob])
    assert.equal(list.code, 0, list.stderr)
    const rows = list.stdout
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { id: string; status: string })
    assert.ok(rows.some((x) => x.id === id && x.status === 'used'))

    // The audit trail: requested, decided, granted, used, with the chain; the statement ran after.
    await sleep(200)
    const events = gw.auditEvents().filter((e) => e.request === id || e.approval === id)
    const types = events.map((e) => e.type)
    for (const want of ['approval.requested', 'approval.decided', 'approval.granted', 'approval.used', 'statement']) {
      assert.ok(types.includes(want), `audit has ${want}: ${types.join(', ')}`)
    }
    for (const e of events) assert.deepEqual(e.chain, ['user:alice'])
  })

  test('a denial ends the statement with the reviewer’s comment', async () => {
    const t = table()
    const run = psqlAsync(gw.conninfo(alice), [`CREATE TABLE ${t} (id int)`])
    const id = await requestIdOf(run)
    const d = gw.cli(['approvals', 'deny', id, '--token', bob, '--comment', 'not during the freeze'])
    assert.equal(d.code, 0, d.stderr)
    assert.notEqual(await run.done, 0)
    assert.match(run.stderr, new RegExp(`request ${id} was denied by user:bob: not during the freeze`))
    assert.equal(direct(`SELECT to_regclass('${t}') IS NULL`), 't')
    assert.equal((await show(id, alice)).status, 'denied')
  })

  test('a statement denied inside a transaction leaves it unable to commit', async () => {
    const t = table()
    dropped.push(t)
    direct(`CREATE TABLE ${t} (id int)`)
    const run = psqlAsync(
      gw.conninfo(alice),
      ['BEGIN', `INSERT INTO ${t} VALUES (1)`, `ALTER TABLE ${t} ADD COLUMN x int`, `INSERT INTO ${t} VALUES (2)`, 'COMMIT'],
      false,
    )
    const id = await requestIdOf(run)
    assert.equal((await deny(id, bob, 'no')).code, 0)
    await run.done
    assert.match(run.stderr, /denied by user:bob: no/)
    assert.match(run.stderr, /current transaction is aborted/)
    assert.match(run.stdout, /ROLLBACK/)
    assert.equal(direct(`SELECT count(*) FROM ${t}`), '0', 'nothing of the transaction was committed')
  })

  test('a statement held longer than idle_in_transaction_session_timeout keeps its session and commits', async () => {
    const t = table()
    dropped.push(t)
    const run = psqlAsync(gw.conninfo(alice), [
      "SET idle_in_transaction_session_timeout = '1s'",
      'BEGIN',
      `CREATE TABLE ${t} (id int)`,
      `INSERT INTO ${t} VALUES (7)`,
      'COMMIT',
    ])
    const id = await requestIdOf(run)
    await sleep(2500)
    assert.equal(run.proc.exitCode, null, `the session is still there: ${run.stderr}`)
    assert.equal((await approve(id, bob)).code, 0)
    assert.equal(await run.done, 0, run.stderr)
    assert.equal(direct(`SELECT id FROM ${t}`), '7')
  })

  test('nobody approves their own request, even in the approving group; nor a request of their own agent', async () => {
    const t = table()
    const run = psqlAsync(gw.conninfo(alice), [`CREATE TABLE ${t} (id int)`])
    const id = await requestIdOf(run)
    const self = await approve(id, alice)
    assert.notEqual(self.code, 0)
    assert.match(self.stderr, /user:alice is in the chain of request/)
    // An agent of a reviewer cannot review, even for its root.
    const agentOfBob = gw.cli(['token', 'delegate', '--agent', 'helper', '--token', bob]).stdout.trim()
    const viaAgent = await approve(id, agentOfBob)
    assert.notEqual(viaAgent.code, 0)
    // Someone outside the approving group cannot either.
    const dave = gw.token('user:dave', ['--group', 'writers'])
    const outsider = await approve(id, dave)
    assert.notEqual(outsider.code, 0)
    assert.equal((await show(id, bob)).status, 'pending')
    assert.equal((await deny(id, bob, 'cleanup')).code, 0)
    await run.done

    // alice's agent asks; alice (its root, in the group) cannot approve it either.
    const agent = gw.cli(['token', 'delegate', '--agent', 'migrator', '--token', alice]).stdout.trim()
    const run2 = psqlAsync(gw.conninfo(agent), [`CREATE TABLE ${t} (id int)`])
    const id2 = await requestIdOf(run2)
    const root = await approve(id2, alice)
    assert.notEqual(root.code, 0)
    assert.match(root.stderr, /in the chain of request/)
    assert.deepEqual((await show(id2, bob)).chain, ['user:alice', 'agent:migrator'])
    assert.equal((await deny(id2, bob, 'cleanup')).code, 0)
    await run2.done
  })

  test('nothing pipelined behind a held statement overtakes it', async () => {
    const t = table()
    const m = table()
    dropped.push(t, m)
    direct(`CREATE TABLE ${m} (id int)`)
    const c = await RawClient.login(gw.pgPort, alice)
    // Three queries in one write: the held DDL, a write to another table, a write to the new table.
    c.socket.write(
      Buffer.concat([
        msg('Q', cstr(`CREATE TABLE ${t} (id int)`)),
        msg('Q', cstr(`INSERT INTO ${m} VALUES (1)`)),
        msg('Q', cstr(`INSERT INTO ${t} VALUES (2)`)),
      ]),
    )
    await c.until((x) => x.type === 'N')
    const notice = c.messages.find((x) => x.type === 'N')?.body.toString('utf8') ?? ''
    const id = /request (R-[0-9a-f]{6})/.exec(notice)?.[1] ?? ''
    assert.ok(id, notice)
    await sleep(500)
    assert.equal(c.count('Z'), 0, 'no answer to anything behind the held statement')
    assert.equal(direct(`SELECT count(*) FROM ${m}`), '0', 'the pipelined write did not overtake the held DDL')
    assert.equal((await approve(id, bob)).code, 0)
    await c.until(() => c.count('Z') === 3)
    assert.equal(c.count('E'), 0, 'all three ran, in order')
    assert.equal(direct(`SELECT count(*) FROM ${m}`), '1')
    assert.equal(direct(`SELECT id FROM ${t}`), '2')
    c.socket.end(msg('X', Buffer.alloc(0)))
  })

  test('a CancelRequest ends the wait with a clear error', async () => {
    const t = table()
    const c = await RawClient.login(gw.pgPort, alice)
    c.socket.write(msg('Q', cstr(`CREATE TABLE ${t} (id int)`)))
    await c.until((x) => x.type === 'N')
    const key = c.key as Buffer
    const cancel = connect({ host: '127.0.0.1', port: gw.pgPort })
    await new Promise<void>((r) => cancel.once('connect', () => r()))
    cancel.end(Buffer.concat([int32(16), int32(80877102), key]))
    await c.until((x) => x.type === 'Z')
    const err = c.messages.find((x) => x.type === 'E')?.body.toString('utf8') ?? ''
    assert.match(err, /57014/)
    assert.match(err, /stopped waiting for approval request R-[0-9a-f]{6}/)
    assert.equal(direct(`SELECT to_regclass('${t}') IS NULL`), 't')
    c.socket.end(msg('X', Buffer.alloc(0)))
  })

  test('non-waiting mode: the identical statement runs once after approval; replays are refused', async () => {
    const t = table()
    dropped.push(t)
    const stmt = `CREATE TABLE ${t} (id int)`
    const noWait = "SET gatehouse.approval_wait = 'off'"
    const first = psqlAsync(gw.conninfo(alice), [noWait, stmt])
    assert.notEqual(await first.done, 0)
    const id = await requestIdOf(first)
    assert.match(first.stderr, /send the identical statement again/)
    // Sent again before anyone decided: the same request, not a new one for the reviewers.
    const resent = psqlAsync(gw.conninfo(alice), [noWait, stmt])
    assert.notEqual(await resent.done, 0)
    assert.equal(await requestIdOf(resent), id)
    assert.equal((await approve(id, bob)).code, 0)
    assert.equal((await show(id, alice)).status, 'approved')

    const heldAgain = async (token: string, sql: string): Promise<string> => {
      const r = psqlAsync(gw.conninfo(token), [noWait, sql])
      assert.notEqual(await r.done, 0, `${sql} must not run`)
      const other = await requestIdOf(r)
      assert.notEqual(other, id)
      return other
    }
    // Another statement (even one differing only in spacing), another user, a sub-agent: held anew.
    await heldAgain(alice, `CREATE TABLE ${t}  (id int)`)
    await heldAgain(carol, stmt)
    const agent = gw.cli(['token', 'delegate', '--agent', 'replayer', '--token', alice]).stdout.trim()
    await heldAgain(agent, stmt)
    // The same user with another token is another chain.
    const alice2 = gw.token('user:alice', ['--group', 'dba', '--group', 'writers'])
    await heldAgain(alice2, stmt)
    assert.equal(direct(`SELECT to_regclass('${t}') IS NULL`), 't')
    assert.equal((await show(id, alice)).status, 'approved', 'no replay consumed the grant')

    // The requester, identical text: runs once.
    const ok = psqlAsync(gw.conninfo(alice), [noWait, stmt])
    assert.equal(await ok.done, 0, ok.stderr)
    assert.equal(direct(`SELECT to_regclass('${t}') IS NOT NULL`), 't')
    assert.equal((await show(id, alice)).status, 'used')
    // And only once.
    direct(`DROP TABLE ${t}`)
    await heldAgain(alice, stmt)
    assert.equal(direct(`SELECT to_regclass('${t}') IS NULL`), 't')
  })

  test('an access request ahead of time grants a window for that chain only', async () => {
    const t = table()
    dropped.push(t)
    const r = gw.cli([
      'request',
      '--connection',
      'app',
      '--action',
      'sql.ddl',
      '--for',
      '30m',
      '--reason',
      'migration 12',
      '--json',
      '--token',
      alice,
    ])
    assert.equal(r.code, 0, r.stderr)
    const req = JSON.parse(r.stdout) as { id: string; status: string; reason: string; grant: string }
    assert.equal(req.status, 'pending')
    assert.equal(req.grant, 'window')
    assert.equal((await approve(req.id, bob)).code, 0)
    const ok = psqlAsync(gw.conninfo(alice), [`CREATE TABLE ${t} (id int)`, `ALTER TABLE ${t} ADD COLUMN y int`])
    assert.equal(await ok.done, 0, ok.stderr)
    // carol is another chain: her DDL is still held.
    const other = psqlAsync(gw.conninfo(carol), ["SET gatehouse.approval_wait = 'off'", `DROP TABLE ${t}`])
    assert.notEqual(await other.done, 0)
    await requestIdOf(other)
    const bad = gw.cli(['request', '--connection', 'nope', '--action', 'sql.ddl', '--for', '30m', '--token', alice])
    assert.notEqual(bad.code, 0)
    assert.match(bad.stderr, /no connection named "nope"/)
  })

  test('the API answers only to the token’s own identity: no token, a forged one or an outsider learns nothing', async () => {
    const noToken = await fetch(`${gw.apiUrl}/v1/approvals`)
    assert.equal(noToken.status, 401)
    const forged = await fetch(`${gw.apiUrl}/v1/approvals`, { headers: { authorization: 'Bearer not-a-token' } })
    assert.equal(forged.status, 401)
    const dave = gw.token('user:dave', ['--group', 'writers'])
    const mine = await fetch(`${gw.apiUrl}/v1/approvals`, { headers: { authorization: `Bearer ${dave}` } })
    assert.equal(mine.status, 200)
    assert.deepEqual(((await mine.json()) as { approvals: unknown[] }).approvals, [], 'an outsider reads no one else’s requests')
    const asked = gw.cli(['request', '--connection', 'app', '--action', 'sql.ddl', '--for', '5m', '--json', '--token', alice])
    assert.equal(asked.code, 0, asked.stderr)
    const someId = (JSON.parse(asked.stdout) as { id: string }).id
    const peek = await fetch(`${gw.apiUrl}/v1/approvals/${someId}`, { headers: { authorization: `Bearer ${dave}` } })
    assert.equal(peek.status, 404)
    const vote = await fetch(`${gw.apiUrl}/v1/approvals/${someId}/approve`, {
      method: 'POST',
      headers: { authorization: `Bearer ${dave}`, 'content-type': 'application/json' },
      body: '{}',
    })
    assert.equal(vote.status, 404)
    const badBody = await fetch(`${gw.apiUrl}/v1/approvals/${someId}/deny`, {
      method: 'POST',
      headers: { authorization: `Bearer ${bob}`, 'content-type': 'application/json' },
      body: JSON.stringify({ comment: 'x', extra: true }),
    })
    assert.equal(badBody.status, 400, 'unknown body keys are an error')
    assert.equal((await deny(someId, bob, 'not needed')).code, 0)
  })

  test('the webhook receiver verifies every signature and sees every request and decision', async () => {
    const list = gw.cli(['approvals', 'list', '--json', '--token', gw.token('user:root', ['--group', 'gatehouse-admins'])])
    assert.equal(list.code, 0, list.stderr)
    const all = list.stdout
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { id: string; status: string; votes: unknown[] })
    assert.ok(all.length >= 8)
    const deadline = Date.now() + 20_000
    const missing = (): string[] => {
      const out: string[] = []
      for (const a of all) {
        const of = hook.deliveries.filter((d) => (d.body.request as { id?: string } | undefined)?.id === a.id)
        if (!of.some((d) => d.body.type === 'approval.requested')) out.push(`${a.id} requested`)
        if (a.votes.length > 0 && !of.some((d) => d.body.type === 'approval.decided')) out.push(`${a.id} decided`)
      }
      return out
    }
    while (missing().length > 0 && Date.now() < deadline) await sleep(100)
    assert.deepEqual(missing(), [])
    assert.ok(
      hook.deliveries.every((d) => d.valid),
      'every signature verifies',
    )
    assert.ok(
      hook.deliveries.every((d) => typeof d.body.text === 'string' && d.body.text.length > 0),
      'Slack-compatible text',
    )
    assert.ok(hook.attempts > hook.deliveries.length, 'a failed delivery was retried')
  })
})

describe('approvals configuration', () => {
  const problems = (approvals: unknown): string => {
    try {
      parseConfig({ approvals }, null)
      return ''
    } catch (err) {
      return (err as Error).message
    }
  }

  test('defaults: wait 5 minutes, no webhook', () => {
    const c = parseConfig({}, null)
    assert.equal(c.approvals.timeoutSeconds, 300)
    assert.equal(c.approvals.webhook, null)
  })

  test('bad input is an error naming the key', () => {
    assert.match(problems({ timeout: '5 minutes' }), /approvals\.timeout: must be a duration/)
    assert.match(problems({ wait: '5m' }), /approvals\.wait: unknown key/)
    assert.match(
      problems({ webhook: { url: 'https://example.test/h', secret: 'hunter2' } }),
      /approvals\.webhook\.secret: is required: a secret reference/,
    )
    assert.doesNotMatch(problems({ webhook: { url: 'https://example.test/h', secret: 'hunter2' } }), /hunter2/)
    assert.match(
      problems({ webhook: { url: 'ftp://example.test/h', secret: 'env:X' } }),
      /approvals\.webhook\.url: must be an http or https URL/,
    )
    assert.match(problems({ timeout: '10m', request_ttl: '1m' }), /approvals\.request_ttl: must be at least approvals\.timeout/)
    assert.match(problems({ max_pending: 0 }), /approvals\.max_pending: must be an integer from 1 to 100000/)
    assert.equal(problems({ timeout: '1m', webhook: { url: 'https://example.test/h', secret: 'env:X' } }), '')
  })
})

describe('approvals: a chain cannot flood reviewers with requests', () => {
  let gw: TestGateway
  before(async () => {
    gw = await TestGateway.start({
      connections: [{ ...LOCAL_PG, labels: { env: 'prod' } }],
      config: { approvals: { timeout: '20s', max_pending: 2 } },
    })
  })
  after(async () => {
    await gw?.cleanup()
  })

  test('past approvals.max_pending waiting requests of one root, a new held statement is refused with why', async () => {
    const mallory = gw.token('user:mallory', ['--group', 'dba'])
    const agent = gw.cli(['token', 'delegate', '--agent', 'spammer', '--token', mallory]).stdout.trim()
    const noWait = "SET gatehouse.approval_wait = 'off'"
    const ids: string[] = []
    for (const token of [mallory, agent]) {
      const r = psqlAsync(gw.conninfo(token), [noWait, `CREATE TABLE ${table()} (id int)`])
      assert.notEqual(await r.done, 0)
      ids.push(await requestIdOf(r))
    }
    assert.equal(new Set(ids).size, 2)
    // A third, by the root or by its agent: refused, naming the limit; no request filed.
    const third = psqlAsync(gw.conninfo(agent), [noWait, `CREATE TABLE ${table()} (id int)`])
    assert.notEqual(await third.done, 0)
    assert.match(
      third.stderr,
      /ERROR: {2}gatehouse: user:mallory already has 2 approval requests waiting for reviewers \(approvals\.max_pending\)/,
    )
    const admin = gw.cli(['approvals', 'list', '--json', '--token', mallory])
    const pending = admin.stdout
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { status: string })
    assert.equal(pending.filter((p) => p.status === 'pending').length, 2)
    // Another person is not held back by mallory's requests.
    const other = gw.token('user:nina', ['--group', 'dba'])
    const r = psqlAsync(gw.conninfo(other), [noWait, `CREATE TABLE ${table()} (id int)`])
    assert.notEqual(await r.done, 0)
    assert.match(r.stderr, /approval required \(request R-/)
  })
})
