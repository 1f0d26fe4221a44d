// Held SSH execs wait for an approval too: a real sshd behind the gateway, the real ssh
// client; an exec on a connection labelled env: prod waits until a member of `ops` approves it,
// and a denial ends it with the reviewer's comment on stderr and a non-zero exit status.

import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { REPO, TestGateway } from './helpers/gateway.js'
import { sshClientSetup, TestSshd } from './helpers/sshd.js'

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

describe('approvals: held SSH execs', () => {
  let sshd: TestSshd
  let gw: TestGateway
  let policyDir = ''
  let sshPort = 0
  let alice = ''
  let olga = ''

  before(async () => {
    sshd = await TestSshd.start()
    policyDir = mkdtempSync(join(tmpdir(), 'gh-appr-ssh-'))
    copyFileSync(join(REPO, 'test/data/ssh/policy.rego'), join(policyDir, 'policy.rego'))
    writeFileSync(
      join(policyDir, 'approvals.yaml'),
      'requirements:\n  - name: prod-exec\n    action: ssh.exec\n    labels: { env: prod }\n    approvers: { group: ops, count: 1 }\n    reason: commands on production need ops\n',
    )
    gw = await TestGateway.start({
      connections: [sshd.connection('web-prod', { labels: { env: 'prod' } })],
      config: {
        listen: { api: '127.0.0.1:0', postgres: '127.0.0.1:0', ssh: '127.0.0.1:0' },
        policies: policyDir,
        // Generous: the wait is ended by the approval, and a loaded two-core machine is slow.
        approvals: { timeout: '180s' },
      },
    })
    sshPort = gw.port('ssh')
    alice = gw.token('user:alice', ['--group', 'ops'])
    olga = gw.token('user:olga', ['--group', 'ops'])
  })
  after(async () => {
    await gw?.cleanup()
    await sshd?.stop()
    if (policyDir) rmSync(policyDir, { recursive: true, force: true })
  })

  function sshAsync(command: string): { proc: ChildProcess; out: { stdout: string; stderr: string }; done: Promise<number | null> } {
    const c = sshClientSetup(gw.dir, alice)
    const proc = spawn('ssh', [...c.opts, '-p', String(sshPort), 'web-prod@127.0.0.1', command], {
      env: { ...process.env, ...c.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const out = { stdout: '', stderr: '' }
    proc.stdout?.on('data', (d: Buffer) => {
      out.stdout += d.toString()
    })
    proc.stderr?.on('data', (d: Buffer) => {
      out.stderr += d.toString()
    })
    // 'close', not 'exit': only then has all of the child's output been read.
    return { proc, out, done: new Promise((r) => proc.on('close', (code) => r(code))) }
  }

  // Reviewers act through the admin API: what is tested is the SSH side of a hold, and a CLI
  // process per step takes seconds on a loaded machine.
  async function api(method: 'GET' | 'POST', path: string, token: string, body?: unknown): Promise<{ status: number; text: string }> {
    const res = await fetch(`${gw.apiUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    })
    return { status: res.status, text: await res.text() }
  }

  /** The pending request's id, once the held exec has reached the gateway (a bound, not a timing). */
  async function pendingRequest(): Promise<string> {
    const deadline = Date.now() + 120_000
    while (Date.now() < deadline) {
      const r = await api('GET', '/v1/approvals', olga)
      const list = r.status === 200 ? (JSON.parse(r.text) as { approvals: { id: string; status: string }[] }).approvals : []
      const pending = list.find((a) => a.status === 'pending')
      if (pending) return pending.id
      await sleep(200)
    }
    throw new Error('no pending request')
  }

  async function until(what: string, cond: () => boolean, ms = 60_000): Promise<void> {
    const deadline = Date.now() + ms
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`)
      await sleep(50)
    }
  }

  test('a held exec waits and runs once approved', async () => {
    const run = sshAsync('echo approved-run')
    const id = await pendingRequest()
    assert.equal(run.proc.exitCode, null)
    assert.equal(run.out.stdout, '')
    // The caller is told at once, on stderr, what it waits for and how to approve it.
    await until('the notice on stderr', () => run.out.stderr.includes(id))
    assert.match(
      run.out.stderr,
      new RegExp(
        `gatehouse: approval required \\(request ${id}\\), waiting for group ops; approve with: gatehouse approvals approve ${id}`,
      ),
    )
    const self = await api('POST', `/v1/approvals/${id}/approve`, alice, {})
    assert.notEqual(self.status, 200, 'the requester cannot approve it')
    const ok = await api('POST', `/v1/approvals/${id}/approve`, olga, {})
    assert.equal(ok.status, 200, ok.text)
    assert.equal(await run.done, 0, run.out.stderr)
    assert.equal(run.out.stdout, 'approved-run\n')
  })

  test('a denied exec ends with the comment', async () => {
    const run = sshAsync('echo never')
    const id = await pendingRequest()
    const denied = await api('POST', `/v1/approvals/${id}/deny`, olga, { comment: 'use the runbook' })
    assert.equal(denied.status, 200, denied.text)
    assert.notEqual(await run.done, 0)
    assert.equal(run.out.stdout, '')
    assert.match(run.out.stderr, new RegExp(`request ${id} was denied by user:olga: use the runbook`))
  })
})
