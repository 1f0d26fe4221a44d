// The decision cache keyed without the statement text (engine/policy/reads.ts, engine.ts): the
// scanner that decides whether a policy may read `input.command.sql`, then real bundles compiled by
// opa — one that reads the text must get a fresh decision for every literal value (a cache keyed on
// the shape would serve the first statement's answer to the next), one that does not is served
// from the cache, and an archive built by `gatehouse policy build` keeps the answer.

import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, test } from 'node:test'
import { buildBundle } from '../engine/policy/build.js'
import { loadArchive, loadPolicySource } from '../engine/policy/bundle.js'
import { PolicyEngine } from '../engine/policy/engine.js'
import { readTarGz, writeTarGz } from '../engine/policy/tar.js'
import { regoMayReadSqlText } from '../engine/policy/reads.js'
import type { DecisionRequest, Principal } from '../engine/types.js'

const READS: readonly [string, string][] = [
  ['the path', 'deny contains "x" if contains(input.command.sql, "pg_")'],
  ['bracket keys', 'deny contains "x" if contains(input["command"]["sql"], "pg_")'],
  ['mixed keys', 'deny contains "x" if contains(input.command["sql"], "pg_")'],
  ['a computed key of command', 'deny contains v if { some k; v := input.command[k]; is_string(v) }'],
  ['a computed top-level key', 'deny contains "x" if input[k].sql'],
  ['command passed whole', 'deny contains "x" if object.get(input.command, "sql", "") != ""'],
  ['command read by a path array', 'deny contains "x" if object.get(input.command, ["sql"], "") != ""'],
  ['command read by a computed key', 'deny contains "x" if { some k in ["sql"]; object.get(input.command, k, "") != "" }'],
  ['another function named get', 'deny contains "x" if myobject.get(input.command, "kind", "") != ""'],
  ['input passed whole', 'deny contains "x" if json.marshal(input) != ""'],
  ['input walked', 'deny contains "x" if { walk(input, [p, v]); v == "x" }'],
  ['command bound to a variable', 'deny contains "x" if { c := input.command; contains(c.sql, "x") }'],
  ['import of command', 'import input.command as c\ndeny contains "x" if contains(c.sql, "x")'],
  ['whitespace inside the path', 'deny contains "x" if contains(input .command. sql, "x")'],
  ['a key built from strings', 'deny contains "x" if contains(input.command[concat("", ["s", "ql"])], "x")'],
]

const BLIND: readonly [string, string][] = [
  ['other command keys', 'deny contains "x" if input.command.kind == "delete"\nallow if "t" in input.command.tables'],
  ['other top-level keys', 'allow if input.principal.kind == "user"\nallow if input.action == "sql.read"'],
  ['bracketed other keys', 'allow if input["command"]["kind"] == "select"'],
  ['a comment naming the path', '# input.command.sql is never read here\nallow if input.action == "sql.read"'],
  ['a string naming the path', 'deny contains "input.command.sql" if input.command.kind == "x"'],
  ['one other command member by object.get', 'deny contains r if r := object.get( input.command , "opaque_reason", "opaque")'],
  ['a field of another value named input', 'allow if data.settings.input.command.sql == 1'],
]

describe('regoMayReadSqlText', () => {
  for (const [name, rule] of READS) {
    test(`reads: ${name}`, () => {
      assert.equal(regoMayReadSqlText([`package gatehouse\n\n${rule}\n`]), true)
    })
  }
  for (const [name, rule] of BLIND) {
    test(`does not read: ${name}`, () => {
      assert.equal(regoMayReadSqlText([`package gatehouse\n\n${rule}\n`]), false)
    })
  }
  test('one module that reads is enough', () => {
    assert.equal(regoMayReadSqlText(['package a\nallow if input.action == "x"', 'package b\nx if input.command.sql']), true)
  })
})

const ALICE: Principal = { id: 'user:alice', kind: 'user', groups: [], scope: [] }
const IDENTITY = { chain: [ALICE], tokenIds: ['t1'], expiresAt: 0 }
const CONNECTION = { name: 'app', protocol: 'postgres', labels: {} }

function request(sql: string): DecisionRequest {
  return {
    // One identity and connection object for every request, as in a session (the engine caches
    // their JSON by object).
    identity: IDENTITY,
    connection: CONNECTION,
    action: 'sql.read',
    // What SessionSql sends: every field but `sql` is the same for every literal value.
    command: { sql, kind: 'select', tables: ['public.accounts'], write_tables: [], functions: [], has_where: true, statements: 1 },
  }
}

const dirs: string[] = []
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
})

function policyDir(rego: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'gh-sqltext-'))
  dirs.push(dir)
  writeFileSync(join(dir, 'policy.rego'), rego)
  return dir
}

const READS_TEXT = `package gatehouse

default allow := false

allow if input.action == "sql.read"

deny contains {"rule": "no-aid-13", "reason": "account 13 is off limits"} if contains(input.command.sql, "aid = 13")
`

const BLIND_TEXT = `package gatehouse

default allow := false

allow if input.action == "sql.read"

deny contains {"rule": "no-deletes", "reason": "no deletes"} if input.command.kind == "delete"
`

describe('decisions for one statement shape with different literals', () => {
  test('a policy that reads the text decides each text (the shape is never the key)', async () => {
    const bundle = await loadPolicySource(policyDir(READS_TEXT))
    assert.equal(bundle.readsSqlText, true)
    const engine = new PolicyEngine(bundle)
    // Alternate many times, so a cache keyed on anything but the text would answer wrongly.
    for (let i = 0; i < 50; i++) {
      const ok = engine.decideNow(request(`SELECT abalance FROM accounts WHERE aid = ${i === 13 ? 12 : i}`))
      assert.equal(ok.effect, 'allow', `aid = ${i}`)
      const denied = engine.decideNow(request('SELECT abalance FROM accounts WHERE aid = 13'))
      assert.equal(denied.effect, 'deny')
      assert.deepEqual(denied.rules, ['no-aid-13'])
      assert.equal((await engine.decide(request('SELECT abalance FROM accounts WHERE aid = 13'))).effect, 'deny')
    }
  })

  test('a policy that does not read the text decides every literal alike, and other shapes apart', async () => {
    const bundle = await loadPolicySource(policyDir(BLIND_TEXT))
    assert.equal(bundle.readsSqlText, false)
    const engine = new PolicyEngine(bundle)
    for (let i = 0; i < 20; i++) assert.equal(engine.decideNow(request(`SELECT abalance FROM accounts WHERE aid = ${i}`)).effect, 'allow')
    const del = request('DELETE FROM accounts WHERE aid = 1')
    assert.equal(engine.decideNow({ ...del, command: { ...del.command, kind: 'delete' } }).effect, 'deny')
    assert.equal(engine.decideNow(request('SELECT abalance FROM accounts WHERE aid = 99')).effect, 'allow')
  })

  test('the shipped bundle does not read the text (pgbench-like traffic is served from the cache)', async () => {
    const bundle = await loadPolicySource(join(process.cwd(), 'policies'))
    assert.equal(bundle.readsSqlText, false)
  })

  test('an archive from gatehouse policy build carries its modules; the answer survives', async () => {
    for (const [rego, want] of [
      [READS_TEXT, true],
      [BLIND_TEXT, false],
    ] as const) {
      const dir = policyDir(rego)
      const built = await buildBundle(dir)
      const file = join(dir, 'bundle.tar.gz')
      writeFileSync(file, built.archive)
      const loaded = await loadArchive(file)
      assert.equal(loaded.readsSqlText, want)
      // Without its modules (a plain opa bundle, say) nothing is known: assume the text is read.
      const bare = join(dir, 'bare.tar.gz')
      const files = readTarGz(built.archive)
      writeFileSync(bare, writeTarGz([...files].filter(([n]) => !n.endsWith('.rego')).map(([name, data]) => ({ name, data }))))
      assert.equal((await loadArchive(bare)).readsSqlText, true)
      if (want) {
        const engine = new PolicyEngine(loaded)
        assert.equal(engine.decideNow(request('SELECT abalance FROM accounts WHERE aid = 12')).effect, 'allow')
        assert.equal(engine.decideNow(request('SELECT abalance FROM accounts WHERE aid = 13')).effect, 'deny')
      }
    }
  })
})
