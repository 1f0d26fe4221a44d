// The SSH proxy end to end: a real OpenSSH sshd started here, Gatehouse in front of it, and the
// real ssh, scp and sftp clients logging in with a Gatehouse token as the password.

import assert from 'node:assert/strict'
import { type SpawnSyncReturns, spawn, spawnSync } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { connect, createServer, type Server } from 'node:net'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import ssh2 from 'ssh2'
import { MAX_CHANNELS } from '../proxies/ssh/connection.js'
import { MAX_PENDING_AUTH } from '../proxies/ssh/index.js'
import { REPO, TestGateway } from './helpers/gateway.js'
import { sshClientSetup, TestSshd } from './helpers/sshd.js'

let sshd: TestSshd
let gw: TestGateway
let sshPort = 0
let token = ''

before(async () => {
  sshd = await TestSshd.start()
  const base = { protocol: 'ssh', address: `127.0.0.1:${sshd.port}`, user: sshd.user, private_key: `file:${sshd.clientKeyPath}` }
  gw = await TestGateway.start({
    connections: [
      { name: 'web-1', ...base, host_key: sshd.hostKey, labels: { env: 'test' } },
      { name: 'web-bad', ...base, host_key: sshd.otherHostKey },
      { name: 'web-tofu', ...base, host_key: 'trust-on-first-use' },
    ],
    config: {
      listen: { api: '127.0.0.1:0', postgres: '127.0.0.1:0', ssh: '127.0.0.1:0' },
      policies: join(REPO, 'test/data/ssh'),
    },
  })
  const run = JSON.parse(readFileSync(join(gw.dataDir, 'run.json'), 'utf8')) as { listeners: Record<string, string> }
  const a = run.listeners.ssh ?? ''
  sshPort = Number(a.slice(a.lastIndexOf(':') + 1))
  token = gw.token('user:alice')
})

after(async () => {
  await gw?.cleanup()
  await sshd?.stop()
})

function ssh(args: readonly string[], opts: { token?: string; input?: string; port?: number } = {}): SpawnSyncReturns<string> {
  const c = sshClientSetup(gw.dir, opts.token ?? token)
  return spawnSync('ssh', [...c.opts, '-p', String(opts.port ?? sshPort), ...args], {
    encoding: 'utf8',
    env: { ...process.env, ...c.env },
    input: opts.input ?? '',
    timeout: 30_000,
  })
}

function eventsOf(type: string): Record<string, unknown>[] {
  return gw.auditEvents().filter((e) => e.type === type)
}

describe('ssh proxy', () => {
  test('exec runs on the target, with stdin, stdout, stderr and exit status bridged, and is audited with the chain', () => {
    const r = ssh(['web-1@127.0.0.1', 'cat; echo err >&2; exit 3'], { input: 'hello through the gateway\n' })
    assert.equal(r.stdout, 'hello through the gateway\n', r.stderr)
    assert.match(r.stderr, /err/)
    assert.equal(r.status, 3)
    const st = eventsOf('statement').find((e) => e.command === 'cat; echo err >&2; exit 3')
    assert.ok(st, 'statement audited')
    assert.equal(st.action, 'ssh.exec')
    assert.equal(st.decision, 'allow')
    assert.deepEqual(st.chain, ['user:alice'])
    assert.equal(st.connection, 'web-1')
    assert.deepEqual(st.argv, ['cat'])
  })

  test('a denied rm -rf / gets exit status 126, a clear message, and a deny audit event', () => {
    const r = ssh(['web-1@127.0.0.1', 'rm -rf /'])
    assert.equal(r.status, 126)
    assert.match(r.stderr, /gatehouse: denied: .*recursive forced deletes are not allowed/)
    const st = eventsOf('statement').find((e) => e.command === 'rm -rf /')
    assert.ok(st)
    assert.equal(st.decision, 'deny')
    assert.deepEqual(st.rules, ['no-rm-rf'])
  })

  test('command substitution and sh -c are opaque and refused by this policy', () => {
    for (const cmd of ['echo $(id)', "sh -c 'id'", 'eval id']) {
      const r = ssh(['web-1@127.0.0.1', cmd])
      assert.equal(r.status, 126, cmd)
      assert.match(r.stderr, /cannot judge/, cmd)
    }
  })

  test('a delegated token of the maximum depth works as the ssh password', () => {
    let t = token
    for (const agent of ['A', 'B', 'C', 'D']) {
      const r = gw.cli(['token', 'delegate', '--agent', agent, '--token', t, '--json'])
      assert.equal(r.code, 0, r.stderr)
      t = (JSON.parse(r.stdout) as { access_token: string }).access_token
    }
    assert.ok(t.length < 1000, `depth-4 token is ${t.length} characters`)
    const r = ssh(['web-1@127.0.0.1', 'echo deep-chain'], { token: t })
    assert.equal(r.stdout, 'deep-chain\n', r.stderr)
    const st = eventsOf('statement').find((e) => e.command === 'echo deep-chain')
    assert.deepEqual(st?.chain, ['user:alice', 'agent:A', 'agent:B', 'agent:C', 'agent:D'])
  })

  test('a wrong pinned host key refuses the session with a clear message', () => {
    const r = ssh(['web-bad@127.0.0.1', 'echo should-not-run'])
    assert.notEqual(r.status, 0)
    assert.doesNotMatch(r.stdout, /should-not-run/)
    assert.match(r.stderr, /host key of web-bad does not match/)
  })

  test('trust on first use remembers the first host key and refuses a changed one', () => {
    const first = ssh(['web-tofu@127.0.0.1', 'echo first-use'])
    assert.equal(first.stdout, 'first-use\n', first.stderr)
    const file = join(gw.dataDir, 'plugins', 'ssh', 'known_hosts.jsonl')
    const stored = JSON.parse(readFileSync(file, 'utf8').trim()) as { connection: string; key: string }
    assert.deepEqual([stored.connection, stored.key], ['web-tofu', sshd.hostKey])
    assert.equal(ssh(['web-tofu@127.0.0.1', 'echo again']).stdout, 'again\n')
    writeFileSync(file, `${JSON.stringify({ connection: 'web-tofu', key: sshd.otherHostKey })}\n`)
    const changed = ssh(['web-tofu@127.0.0.1', 'echo should-not-run'])
    assert.equal(changed.status, 255)
    assert.doesNotMatch(changed.stdout, /should-not-run/)
    assert.match(changed.stderr, /host key of web-tofu changed since it was first trusted/)
  })

  test('a forged token is refused and no connection reaches the target', () => {
    const before = sshd.connectionCount()
    const forged = `${token.slice(0, -4)}AAAA`
    const r = ssh(['web-1@127.0.0.1', 'echo hi'], { token: forged })
    assert.equal(r.status, 255)
    assert.match(r.stderr, /Permission denied/)
    assert.equal(sshd.connectionCount(), before)
  })

  test('the target private key never reaches the client', async () => {
    const key = readFileSync(sshd.clientKeyPath, 'utf8')
    const body = key
      .split('\n')
      .filter((l) => l !== '' && !l.startsWith('-----'))
      .join('')
    let seen = Buffer.alloc(0)
    const relay: Server = createServer((c) => {
      const g = connect(sshPort, '127.0.0.1')
      g.on('data', (d: Buffer) => {
        seen = Buffer.concat([seen, d])
        c.write(d)
      })
      c.on('data', (d: Buffer) => g.write(d))
      c.on('close', () => g.destroy())
      g.on('close', () => c.destroy())
      c.on('error', () => g.destroy())
      g.on('error', () => c.destroy())
    })
    await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r))
    const a = relay.address()
    const port = a && typeof a === 'object' ? a.port : 0
    const c = sshClientSetup(gw.dir, token)
    const r = await new Promise<{ code: number | null; out: string }>((resolve) => {
      const p = spawn('ssh', [...c.opts, '-p', String(port), 'web-1@127.0.0.1', 'echo relayed'], { env: { ...process.env, ...c.env } })
      let out = ''
      p.stdout.on('data', (d: Buffer) => {
        out += d.toString()
      })
      p.on('close', (code) => resolve({ code, out }))
    })
    relay.close()
    assert.equal(r.code, 0)
    assert.equal(r.out, 'relayed\n')
    assert.ok(seen.length > 0)
    const text = seen.toString('latin1')
    assert.ok(
      !text.includes(body.slice(0, 40)) && !seen.includes(Buffer.from(body, 'base64').subarray(0, 32)),
      'key material reached the client',
    )
    assert.ok(!gw.stderr.includes(body.slice(0, 40)) && !gw.stdout.includes(body.slice(0, 40)), 'key material in the gateway log')
  })

  test('scp uploads and downloads, over sftp and the legacy protocol', () => {
    const c = sshClientSetup(gw.dir, token)
    const src = join(gw.dir, 'upload.bin')
    const data = Buffer.alloc(300_000)
    for (let i = 0; i < data.length; i++) data[i] = (i * 7919) & 0xff
    writeFileSync(src, data)
    for (const legacy of [false, true]) {
      const remote = join(sshd.dir, `remote-${legacy ? 'legacy' : 'sftp'}.bin`)
      const back = join(gw.dir, `back-${legacy ? 'legacy' : 'sftp'}.bin`)
      const flags = [...c.opts, '-P', String(sshPort), ...(legacy ? ['-O'] : [])]
      const up = spawnSync('scp', [...flags, src, `web-1@127.0.0.1:${remote}`], {
        encoding: 'utf8',
        env: { ...process.env, ...c.env },
        timeout: 30_000,
      })
      assert.equal(up.status, 0, up.stderr)
      assert.deepEqual(readFileSync(remote), data)
      const down = spawnSync('scp', [...flags, `web-1@127.0.0.1:${remote}`, back], {
        encoding: 'utf8',
        env: { ...process.env, ...c.env },
        timeout: 30_000,
      })
      assert.equal(down.status, 0, down.stderr)
      assert.deepEqual(readFileSync(back), data)
    }
    const legacy = eventsOf('statement').filter(
      (e) => e.action === 'ssh.sftp' && typeof e.command === 'string' && e.command.startsWith('scp '),
    )
    assert.ok(legacy.length >= 2, 'legacy scp execs decided as ssh.sftp')
  })

  test('sftp works', () => {
    const c = sshClientSetup(gw.dir, token)
    const remote = join(sshd.dir, 'sftp-put.txt')
    const local = join(gw.dir, 'sftp-local.txt')
    writeFileSync(local, 'sftp through gatehouse\n')
    const r = spawnSync('sftp', [...c.opts, '-P', String(sshPort), 'web-1@127.0.0.1'], {
      encoding: 'utf8',
      env: { ...process.env, ...c.env },
      input: `put ${local} ${remote}\nls ${sshd.dir}\nbye\n`,
      timeout: 30_000,
    })
    assert.equal(r.status, 0, r.stderr)
    assert.equal(readFileSync(remote, 'utf8'), 'sftp through gatehouse\n')
    assert.match(r.stdout, /sftp-put\.txt/)
    assert.ok(eventsOf('statement').some((e) => e.action === 'ssh.sftp' && e.command === 'sftp' && e.decision === 'allow'))
    // File operations are recorded as result events (written with the session's end).
    let ops: Record<string, unknown>[] = []
    for (let i = 0; i < 40 && ops.length === 0; i++) {
      ops = eventsOf('result').filter((e) => e.action === 'ssh.sftp' && e.operation === 'open' && e.path === remote)
      if (ops.length === 0) spawnSync('sleep', ['0.1'])
    }
    assert.equal(ops[0]?.mode, 'write')
  })

  test('a shell with a PTY is recorded as asciicast v2 with the chain in the header, and exports', () => {
    const r = ssh(['-tt', 'web-1@127.0.0.1'], { input: 'echo shell-marker-$((6*7))\nexit\n' })
    assert.equal(r.status, 0, r.stderr)
    assert.match(r.stdout, /shell-marker-42/)
    const st = eventsOf('statement').filter((e) => e.action === 'ssh.shell')
    const last = st[st.length - 1]
    assert.ok(last)
    const id = String(last.session)
    const file = join(gw.dataDir, 'recordings', 'web-1', `${id}.cast`)
    assert.ok(existsSync(file), 'recording written')
    const exported = gw.cli(['sessions', 'export', id])
    assert.equal(exported.code, 0, exported.stderr)
    const lines = exported.stdout.trim().split('\n')
    const header = JSON.parse(lines[0] ?? '{}') as Record<string, unknown>
    assert.equal(header.version, 2)
    assert.equal(typeof header.width, 'number')
    assert.equal(typeof header.height, 'number')
    assert.equal(typeof header.timestamp, 'number')
    assert.deepEqual((header.gatehouse as { chain: string[] }).chain, ['user:alice'])
    let output = ''
    for (const l of lines.slice(1)) {
      const e = JSON.parse(l) as unknown[]
      assert.equal(e.length, 3)
      assert.equal(typeof e[0], 'number')
      assert.ok(['o', 'i', 'r', 'm'].includes(String(e[1])))
      assert.equal(typeof e[2], 'string')
      if (e[1] === 'o') output += String(e[2])
    }
    assert.match(output, /shell-marker-42/)
    const replay = gw.cli(['sessions', 'replay', id, '--speed', '1000'])
    assert.equal(replay.code, 0, replay.stderr)
    assert.match(replay.stdout, /shell-marker-42/)
  })

  test('revoking the token ends the open session within one second', async () => {
    const t = gw.tokenJson('user:bob')
    const c = sshClientSetup(gw.dir, t.token)
    const p = spawn('ssh', [...c.opts, '-p', String(sshPort), 'web-1@127.0.0.1', 'echo started; sleep 30'], {
      env: { ...process.env, ...c.env },
    })
    const exited = new Promise<number>((resolve) => p.on('close', () => resolve(Date.now())))
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the command did not start')), 15_000)
      p.stdout.on('data', (d: Buffer) => {
        if (d.toString().includes('started')) {
          clearTimeout(timer)
          resolve()
        }
      })
    })
    const rv = gw.cli(['token', 'revoke', t.id])
    const revoked = Date.now()
    assert.equal(rv.code, 0, rv.stderr)
    const end = await exited
    assert.ok(end - revoked < 1000, `session ended ${end - revoked} ms after the revocation`)
  })
  test('abuse: garbage, many pending authentications and too many channels do not take the gateway down', async () => {
    // Garbage instead of an SSH banner.
    await new Promise<void>((resolve) => {
      const g = connect(sshPort, '127.0.0.1', () => g.end(Buffer.alloc(200_000, 0x41)))
      g.resume()
      g.on('error', () => resolve())
      g.on('close', () => resolve())
    })
    // More idle connections than the pending-authentication bound: the extra one is dropped.
    const idle = await Promise.all(
      Array.from(
        { length: MAX_PENDING_AUTH },
        () =>
          new Promise<ReturnType<typeof connect>>((resolve) => {
            const s = connect(sshPort, '127.0.0.1', () => resolve(s))
            s.resume()
            s.on('error', () => undefined)
          }),
      ),
    )
    await new Promise((r) => setTimeout(r, 200))
    const dropped = await new Promise<boolean>((resolve) => {
      const s = connect(sshPort, '127.0.0.1')
      s.on('error', () => undefined)
      s.resume()
      const t = setTimeout(() => {
        s.destroy()
        resolve(false)
      }, 3000)
      s.on('close', () => {
        clearTimeout(t)
        resolve(true)
      })
    })
    assert.ok(dropped, 'a connection over the pending-authentication bound is dropped')
    for (const s of idle) s.destroy()
    await new Promise((r) => setTimeout(r, 300))
    // Channels per connection are bounded.
    const client = new ssh2.Client()
    await new Promise<void>((resolve, reject) => {
      client.on('ready', () => resolve())
      client.on('error', reject)
      client.connect({ host: '127.0.0.1', port: sshPort, username: 'web-1', password: token })
    })
    const opened = await Promise.all(
      Array.from(
        { length: MAX_CHANNELS + 2 },
        () =>
          new Promise<boolean>((resolve) =>
            client.exec('sleep 1', (err, ch) => {
              if (err) return resolve(false)
              ch.on('close', () => undefined)
              ch.resume()
              ch.stderr.resume()
              resolve(true)
            }),
          ),
      ),
    )
    assert.equal(opened.filter(Boolean).length, MAX_CHANNELS)
    // Closed channels free their slots.
    await new Promise((r) => setTimeout(r, 1500))
    const again = await new Promise<boolean>((resolve) => client.exec('true', (err) => resolve(!err)))
    assert.ok(again, 'a channel opens once others have closed')
    client.end()
    // And the gateway still serves.
    const r = ssh(['web-1@127.0.0.1', 'echo still-up'])
    assert.equal(r.stdout, 'still-up\n', r.stderr)
  })
})
