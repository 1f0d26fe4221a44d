// The SSH proxy end to end: a real OpenSSH sshd started here, Gatehouse in front of it, and the
// real ssh client logging in with a Gatehouse token as the password: exec, policy, host keys,
// tokens, revocation and abuse. Files, forwarding and shells are in ssh-proxy-channels.test.ts.

import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { connect, createServer, type Server } from 'node:net'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import ssh2 from 'ssh2'
import { MAX_CHANNELS, MAX_CONNECTIONS_PER_PRINCIPAL } from '../proxies/ssh/connection.js'
import { MAX_FORWARD_CHANNELS } from '../proxies/ssh/forward.js'
import { MAX_PENDING_AUTH } from '../proxies/ssh/index.js'
import { sshClientSetup } from './helpers/sshd.js'
import { eventsOf, gw, ssh, sshd, sshPort, token, useSshProxy } from './helpers/ssh-proxy.js'

useSshProxy()

describe('ssh proxy', () => {
  test('exec runs on the target, with stdin, stdout, stderr and exit status bridged, and is audited with the chain', () => {
    const line = 'cat; ls /nonexistent-gatehouse; exit 3'
    const r = ssh(['web-1@127.0.0.1', line], { input: 'hello through the gateway\n' })
    assert.equal(r.stdout, 'hello through the gateway\n', r.stderr)
    assert.match(r.stderr, /nonexistent-gatehouse/)
    assert.equal(r.status, 3)
    const st = eventsOf('statement').find((e) => e.command === line)
    assert.ok(st, 'statement audited')
    assert.equal(st.action, 'ssh.exec')
    assert.equal(st.decision, 'allow')
    assert.deepEqual(st.chain, ['user:alice'])
    assert.equal(st.connection, 'web-1')
    assert.deepEqual(st.argv, ['cat'])
    assert.equal(st.sent, "'cat' ; 'ls' '/nonexistent-gatehouse' ; 'exit' '3'")
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

  test('policy can forbid shells for agents while their execs still run', () => {
    const r0 = gw.cli(['token', 'delegate', '--agent', 'shell-bot', '--token', token, '--json'])
    assert.equal(r0.code, 0, r0.stderr)
    const agent = (JSON.parse(r0.stdout) as { access_token: string }).access_token
    const shell = ssh(['-tt', 'web-1@127.0.0.1'], { token: agent, input: 'echo in-a-shell\nexit\n' })
    assert.equal(shell.status, 126)
    assert.match(shell.stderr, /gatehouse: denied: .*agents run commands with ssh HOST CMD, not shells/)
    assert.doesNotMatch(shell.stdout, /in-a-shell/)
    const exec = ssh(['web-1@127.0.0.1', 'echo agent-exec'], { token: agent })
    assert.equal(exec.stdout, 'agent-exec\n', exec.stderr)
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

  test('revoking the token ends the open session within one second', async () => {
    const t = gw.tokenJson('user:bob')
    const c = sshClientSetup(gw.dir, t.token)
    const p = spawn('ssh', [...c.opts, '-p', String(sshPort), 'web-1@127.0.0.1', 'echo started; sleep 30'], {
      env: { ...process.env, ...c.env },
    })
    const exited = new Promise<number>((resolve) => p.on('close', () => resolve(Date.now())))
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the command did not start')), 120_000)
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
    // The gateway ends the session within a second of the revocation (its audit's clock); the
    // client, which a loaded machine may schedule late, has gone by the time it is looked for.
    const ms = gw.revocationToEnd(t.id, 'echo started; sleep 30')
    assert.ok(ms >= 0 && ms < 1000, `session ended ${ms} ms after the revocation`)
    assert.ok(end - revoked < 10_000, `the client exited ${end - revoked} ms after the revocation`)
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
    const closed: Promise<void>[] = []
    const opened = await Promise.all(
      Array.from(
        { length: MAX_CHANNELS + 2 },
        () =>
          new Promise<boolean>((resolve) =>
            client.exec('sleep 1', (err, ch) => {
              if (err) return resolve(false)
              closed.push(new Promise<void>((r) => ch.on('close', () => r())))
              ch.resume()
              ch.stderr.resume()
              resolve(true)
            }),
          ),
      ),
    )
    assert.equal(opened.filter(Boolean).length, MAX_CHANNELS)
    // Closed channels free their slots (waited for, not timed: a loaded machine runs `sleep 1` late).
    await Promise.all(closed)
    await new Promise((r) => setTimeout(r, 200))
    const again = await new Promise<boolean>((resolve) => client.exec('true', (err) => resolve(!err)))
    assert.ok(again, 'a channel opens once others have closed')
    // Forwarded connections per SSH connection are bounded too.
    const echo = createServer((c) => c.pipe(c))
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r))
    const ea = echo.address()
    const echoPort = ea && typeof ea === 'object' ? ea.port : 0
    const forwards = await Promise.all(
      Array.from(
        { length: MAX_FORWARD_CHANNELS + 2 },
        () =>
          new Promise<boolean>((resolve) =>
            client.forwardOut('127.0.0.1', 1, '127.0.0.1', echoPort, (err, ch) => {
              if (err) return resolve(false)
              ch.on('error', () => undefined)
              ch.resume()
              resolve(true)
            }),
          ),
      ),
    )
    assert.equal(forwards.filter(Boolean).length, MAX_FORWARD_CHANNELS)
    echo.close()
    client.end()
    // SSH sessions per caller (root principal) are bounded: one more is refused, others unaffected.
    const t = gw.token('user:greedy')
    const held: InstanceType<typeof ssh2.Client>[] = []
    const login = (pw: string): Promise<boolean> =>
      new Promise((resolve) => {
        const cl = new ssh2.Client()
        cl.on('ready', () => {
          held.push(cl)
          resolve(true)
        })
        cl.on('error', () => resolve(false))
        cl.connect({ host: '127.0.0.1', port: sshPort, username: 'web-1', password: pw })
      })
    for (let i = 0; i < MAX_CONNECTIONS_PER_PRINCIPAL; i++) assert.ok(await login(t), `session ${i + 1} opens`)
    assert.equal(await login(t), false, 'one session over the bound is refused')
    for (const cl of held) cl.end()
    await new Promise((r) => setTimeout(r, 300))
    assert.ok(await login(t), 'closed sessions free their slots')
    for (const cl of held) cl.end()
    // And the gateway still serves.
    const r = ssh(['web-1@127.0.0.1', 'echo still-up'])
    assert.equal(r.stdout, 'still-up\n', r.stderr)
  })
})
