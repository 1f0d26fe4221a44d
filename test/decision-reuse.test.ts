// A session reuses the decision of an earlier statement of the same shape (proxies/postgres/
// statements.ts, decideShape) only while nothing the decision depends on has changed. Each test
// tries a way a reused answer would be wrong, through a real gateway and PostgreSQL: the same text
// naming another table after SET search_path, a policy reloaded mid-session, a policy that depends
// on the second (input.time), and a policy that reads the statement text itself.

import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import pg from 'pg'
import { readPolicyDir } from '../engine/policy/sources.js'
import { direct, LOCAL_PG, TestGateway } from './helpers/gateway.js'

const DB = 'gh_decision_reuse'

const BASE = `package gatehouse

default allow := false

allow if input.action in {"connect", "sql.read", "sql.session"}

deny contains {"rule": "no-hr", "reason": "hr is off limits"} if {
	some t in input.command.tables
	startswith(t, "hr.")
}

deny contains {"rule": "odd-seconds", "reason": "ticks are read in even seconds only"} if {
	"public.ticks" in input.command.tables
	input.time.unix % 2 == 1
}
`

const NO_NOTES = `
deny contains {"rule": "no-notes", "reason": "notes are closed"} if "public.notes" in input.command.tables
`

const READS_TEXT = `
deny contains {"rule": "no-13", "reason": "note 13 is private"} if contains(input.command.sql, "id = 13")
`

describe('decisions reused by statement shape', () => {
  let gw: TestGateway
  let dir: string
  let client: pg.Client

  function writePolicy(rego: string): string {
    writeFileSync(join(dir, 'policy.rego'), rego)
    return readPolicyDir(dir).version
  }

  async function waitForVersion(version: string): Promise<void> {
    const token = readFileSync(join(gw.dataDir, 'admin.token'), 'utf8').trim()
    const deadline = Date.now() + 10_000
    for (;;) {
      const res = await fetch(`${gw.apiUrl}/v1/policy`, { headers: { authorization: `Bearer ${token}` } })
      const s = (await res.json()) as { version: string; last_error: string | null }
      if (s.version === version) return
      if (Date.now() > deadline) assert.fail(`the policy was not reloaded: ${JSON.stringify(s)}`)
      await new Promise((r) => setTimeout(r, 25))
    }
  }

  /** 'ok', or the rule that denied it. */
  async function outcome(sql: string): Promise<string> {
    try {
      await client.query(sql)
      return 'ok'
    } catch (err) {
      const e = err as { code?: string; message?: string }
      assert.equal(e.code, '42501', String(err))
      return /denied by ([\w-]+)/.exec(e.message ?? '')?.[1] ?? String(e.message)
    }
  }

  before(async () => {
    direct(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`)
    direct(`CREATE DATABASE ${DB}`)
    const setup = new pg.Client({ host: '127.0.0.1', port: 5432, user: 'postgres', database: DB })
    await setup.connect()
    await setup.query(
      "CREATE SCHEMA hr; CREATE TABLE notes (id int, body text); CREATE TABLE hr.notes (id int, body text); CREATE TABLE ticks (n int); INSERT INTO notes VALUES (1, 'public'); INSERT INTO hr.notes VALUES (1, 'secret')",
    )
    await setup.end()
    dir = mkdtempSync(join(tmpdir(), 'gh-reuse-'))
    writePolicy(BASE)
    gw = await TestGateway.start({ connections: [{ ...LOCAL_PG, name: 'app', database: DB }], config: { policies: dir } })
    const token = gw.token('user:rita')
    client = new pg.Client({ host: '127.0.0.1', port: gw.pgPort, database: 'app', user: 'rita', password: token, ssl: false })
    await client.connect()
  })
  after(async () => {
    await client?.end().catch(() => undefined)
    await gw?.cleanup()
    rmSync(dir, { recursive: true, force: true })
    direct(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`)
  })

  test('the same text names another table after SET search_path, and is decided for that table', async () => {
    for (let i = 0; i < 5; i++) assert.equal(await outcome(`SELECT body FROM notes WHERE id = ${i}`), 'ok')
    assert.equal(await outcome('SET search_path = hr, public'), 'ok')
    // Same shape as above; the server would read hr.notes now.
    assert.equal(await outcome('SELECT body FROM notes WHERE id = 1'), 'no-hr')
    assert.equal(await outcome('SELECT body FROM notes WHERE id = 2'), 'no-hr')
    assert.equal(await outcome('SET search_path = public'), 'ok')
    assert.equal(await outcome('SELECT body FROM notes WHERE id = 3'), 'ok')
  })

  test('a statement of a known shape is decided by a policy reloaded mid-session, and audited so', async () => {
    const base = readPolicyDir(dir).version
    assert.equal(await outcome('SELECT body FROM notes WHERE id = 7'), 'ok')
    const closed = writePolicy(BASE + NO_NOTES)
    await waitForVersion(closed)
    assert.equal(await outcome('SELECT body FROM notes WHERE id = 8'), 'no-notes')
    await waitForVersion(writePolicy(BASE))
    assert.equal(await outcome('SELECT body FROM notes WHERE id = 9'), 'ok')
    // A reused decision is still each statement's own audit record: its text, verdict, rules and
    // the version that decided it.
    const events = gw.auditEvents(['--type', 'statement'])
    const of = (id: number): Record<string, unknown> => {
      const e = events.filter((x) => x.sql === `SELECT body FROM notes WHERE id = ${id}`).at(-1)
      assert.ok(e, `a statement event for id = ${id}`)
      return e
    }
    assert.deepEqual([of(7).decision, of(7).policy_version], ['allow', base])
    assert.deepEqual([of(8).decision, of(8).rules, of(8).policy_version], ['deny', ['no-notes'], closed])
    assert.deepEqual([of(9).decision, of(9).policy_version], ['allow', base])
  })

  test('a decision that depends on the second is not carried into the next one', async () => {
    // The policy allows ticks in even seconds only. Statements of one shape for ~2.5 s: each one
    // sent and answered within one second must have that second's answer.
    const seen = { even: 0, odd: 0 }
    const until = Date.now() + 2500
    for (let i = 0; Date.now() < until; i++) {
      const sent = Date.now()
      const got = await outcome(`SELECT n FROM ticks WHERE n = ${i}`)
      const answered = Date.now()
      const second = Math.floor(sent / 1000)
      if (second !== Math.floor(answered / 1000)) continue
      const odd = second % 2 === 1
      assert.equal(got, odd ? 'odd-seconds' : 'ok', `statement ${i} in second ${second}`)
      if (odd) seen.odd++
      else seen.even++
    }
    assert.ok(seen.even > 0 && seen.odd > 0, `both kinds of second were tried: ${JSON.stringify(seen)}`)
  })

  test('a policy that reads the statement text decides every text, not every shape', async () => {
    await waitForVersion(writePolicy(BASE + READS_TEXT))
    for (let i = 10; i < 16; i++) {
      assert.equal(await outcome(`SELECT body FROM notes WHERE id = ${i}`), i === 13 ? 'no-13' : 'ok', `id = ${i}`)
      assert.equal(await outcome('SELECT body FROM notes WHERE id = 13'), 'no-13')
    }
  })
})
