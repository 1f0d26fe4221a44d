// Fifty real OpenSSH `ssh` clients run an exec each through the gateway to a real sshd at the same
// moment: every client gets its own command's output and exit status, and every `result` event in
// the audit records it. (Under load the gateway once lost the exit status of a fast command whose
// exit-status arrived in the same read as the channel confirmation: the client saw 255.) And
// through the same real client, a locale or time-zone value that is a path never reaches the target.

import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { MAX_CONNECTIONS_PER_PRINCIPAL } from '../proxies/ssh/connection.js'
import { MAX_PENDING_PER_SOURCE } from '../proxies/ssh/index.js'
import { REPO, TestGateway } from './helpers/gateway.js'
import { sshClientSetup, TestSshd } from './helpers/sshd.js'

interface Run {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

describe('ssh: fifty concurrent ssh execs', () => {
  let sshd: TestSshd
  let gw: TestGateway
  let sshPort = 0
  const tokens: string[] = []

  before(async () => {
    // The target accepts every variable: what reaches it is only what the gateway passed.
    sshd = await TestSshd.start({ config: ['AcceptEnv *'] })
    gw = await TestGateway.start({
      connections: [sshd.connection('web-1'), sshd.connection('web-env', { env: ['LANG', 'LC_*', 'TZ'] })],
      config: { listen: { api: '127.0.0.1:0', postgres: 'off', ssh: '127.0.0.1:0' }, policies: join(REPO, 'test/data/ssh') },
    })
    sshPort = gw.port('ssh')
    tokens.push(gw.token('user:alice'), gw.token('user:bob'))
  })

  after(async () => {
    await gw?.cleanup()
    await sshd?.stop()
  })

  /** One `ssh` client process (never a synchronous spawn: sshd's log pipe must keep draining). */
  function ssh(source: string, token: string, line: string, extra: readonly string[] = [], user = 'web-1'): Promise<Run> {
    const c = sshClientSetup(gw.dir, token)
    const p = spawn(
      'ssh',
      [...c.opts, ...extra, '-o', 'ConnectTimeout=120', '-b', source, '-p', String(sshPort), `${user}@127.0.0.1`, line],
      {
        env: { ...process.env, ...c.env },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    )
    let stdout = ''
    let stderr = ''
    p.stdout.on('data', (d: Buffer) => {
      stdout += d.toString()
    })
    p.stderr.on('data', (d: Buffer) => {
      stderr += d.toString()
    })
    const timer = setTimeout(() => p.kill('SIGKILL'), 150_000)
    return new Promise((resolve) =>
      p.on('close', (code) => {
        clearTimeout(timer)
        resolve({ code, stdout, stderr })
      }),
    )
  }

  test('every client gets its own exit status and the audit records each', async () => {
    const n = 50
    const started = Date.now()
    // Two source addresses and two people: the gateway bounds unauthenticated connections per
    // source (MAX_PENDING_PER_SOURCE) and open connections per person
    // (MAX_CONNECTIONS_PER_PRINCIPAL), both 32; fifty from one is what those bounds refuse.
    assert.ok(n / 2 <= MAX_PENDING_PER_SOURCE && n / 2 <= MAX_CONNECTIONS_PER_PRINCIPAL)
    const runs = await Promise.all(
      Array.from({ length: n }, (_, i) =>
        ssh(i % 2 === 0 ? '127.0.0.1' : '127.0.0.2', tokens[i % 2] as string, `echo run-${i}; ls /nonexistent-${i}; exit ${i % 7}`),
      ),
    )
    const elapsed = Date.now() - started
    const codes: Record<string, number> = {}
    runs.forEach((r, i) => {
      codes[String(r.code)] = (codes[String(r.code)] ?? 0) + 1
      assert.equal(r.stdout, `run-${i}\n`, `client ${i}: ${r.stderr}`)
      assert.match(r.stderr, new RegExp(`nonexistent-${i}\\b`), `client ${i}: the command's own stderr`)
      assert.equal(r.code, i % 7, `client ${i}: exit status (${r.stderr})`)
    })
    let audited: Record<string, unknown>[] = []
    for (let k = 0; k < 100; k++) {
      audited = gw.auditEvents().filter((e) => e.type === 'result' && String(e.command).startsWith('echo run-'))
      if (audited.length === n) break
      await new Promise((r) => setTimeout(r, 100))
    }
    assert.equal(audited.length, n)
    for (const e of audited) {
      const i = Number(/run-(\d+)/.exec(String(e.command))?.[1])
      assert.equal(e.exit_status, i % 7, JSON.stringify(e))
    }
    console.log(`50 concurrent ssh execs: ${elapsed} ms, exit statuses ${JSON.stringify(codes)}`)
  })

  test('SetEnv of a locale or time zone that is a path is refused; a locale name passes', async () => {
    const token = tokens[0] as string
    const setenv = (v: string): string[] => ['-o', `SetEnv=${v}`]
    const bad = await ssh(
      '127.0.0.1',
      token,
      'printenv LC_ALL TZ LANG; echo end',
      [...setenv('LC_ALL=/srv/x TZ=/srv/x/tz LANG=x/../y')],
      'web-env',
    )
    assert.equal(bad.stdout, 'end\n', `no path-valued locale or zone reached the target: ${bad.stderr}`)
    const good = await ssh('127.0.0.1', token, 'printenv LC_ALL TZ', [...setenv('LC_ALL=C.UTF-8 TZ=Europe/Berlin')], 'web-env')
    assert.equal(good.stdout, 'C.UTF-8\nEurope/Berlin\n', good.stderr)
    const e = gw.auditEvents().find((x) => x.type === 'statement' && String(x.command).startsWith('printenv LC_ALL TZ LANG'))
    assert.deepEqual([...((e?.env_refused as string[] | undefined) ?? [])].sort(), ['LANG', 'LC_ALL', 'TZ'])
  })
})
