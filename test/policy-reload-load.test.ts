// A policy edit under pgbench load is picked up without a dropped session, and a broken edit is
// rejected while the old bundle keeps deciding: pgbench (4 clients, select-only) runs through the
// gateway while the policy directory is edited twice; no client fails, and the audit shows
// statements decided by both versions.

import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { appendFileSync, cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { readPolicyDir } from '../engine/policy/sources.js'
import { direct, LOCAL_PG, REPO, TestGateway } from './helpers/gateway.js'

const DB = 'gh_reload_load'

async function policyStatus(gw: TestGateway): Promise<{ version: string; last_error: string | null }> {
  const token = readFileSync(join(gw.dataDir, 'admin.token'), 'utf8').trim()
  const res = await fetch(`${gw.apiUrl}/v1/policy`, { headers: { authorization: `Bearer ${token}` } })
  return (await res.json()) as { version: string; last_error: string | null }
}

async function until(pred: () => Promise<boolean>, ms: number): Promise<void> {
  const end = Date.now() + ms
  while (!(await pred())) {
    if (Date.now() > end) assert.fail('condition not met in time')
    await new Promise((r) => setTimeout(r, 50))
  }
}

describe('policy reload under load', () => {
  let gw: TestGateway
  let dir: string
  before(async () => {
    direct(`DROP DATABASE IF EXISTS ${DB}`)
    direct(`CREATE DATABASE ${DB}`)
    const init = spawn('pgbench', ['-i', '-s', '1', '-q', '-h', '127.0.0.1', '-U', 'postgres', DB], { stdio: 'ignore' })
    await new Promise((r) => init.on('exit', r))
    dir = mkdtempSync(join(tmpdir(), 'gh-reload-load-'))
    cpSync(join(REPO, 'policies'), dir, { recursive: true })
    gw = await TestGateway.start({ connections: [{ ...LOCAL_PG, database: DB }], config: { policies: dir } })
  })
  after(async () => {
    await gw.cleanup()
    rmSync(dir, { recursive: true, force: true })
    direct(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`)
  })

  test('edits under pgbench load: no dropped session, the broken one rejected', async () => {
    const v1 = (await policyStatus(gw)).version
    const bench = spawn('pgbench', ['-n', '-S', '-c', '4', '-j', '2', '-T', '8', gw.conninfo(gw.token('user:loader'))], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    bench.stdout.on('data', (d: Buffer) => {
      out += d.toString()
    })
    bench.stderr.on('data', (d: Buffer) => {
      out += d.toString()
    })
    const done = new Promise<number | null>((r) => bench.on('close', (code) => r(code)))
    await new Promise((r) => setTimeout(r, 1500))
    // A good edit.
    appendFileSync(join(dir, 'gatehouse.rego'), '\n# added under load\nallow if input.action == "ssh.exec"\n')
    const v2 = readPolicyDir(dir).version
    await until(async () => (await policyStatus(gw)).version === v2, 4000)
    await new Promise((r) => setTimeout(r, 1000))
    // A broken edit: rejected, v2 keeps deciding.
    const file = join(dir, 'gatehouse.rego')
    const good = readFileSync(file, 'utf8')
    writeFileSync(file, `${good}\nallow if {\n`)
    await until(async () => (await policyStatus(gw)).last_error !== null, 4000)
    assert.equal((await policyStatus(gw)).version, v2)
    const code = await done
    assert.equal(code, 0, out)
    assert.match(out, /number of failed transactions: 0 /)
    assert.doesNotMatch(out, /aborted|connection.*lost|terminat/i)
    const versions = new Set(gw.auditEvents(['--type', 'statement']).map((e) => e.policy_version))
    assert.ok(versions.has(v1) && versions.has(v2), `statements were decided by both bundles: ${[...versions].join(', ')}`)
    const ends = gw.auditEvents(['--type', 'session.end']).map((e) => String(e.reason))
    assert.ok(
      ends.every((r) => /client terminated|client disconnected/.test(r)),
      `sessions ended only by their clients: ${ends.join('; ')}`,
    )
    writeFileSync(file, good)
  })
})
