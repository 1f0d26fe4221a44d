// The SSH proxy end to end: a real OpenSSH sshd started here, Gatehouse in front of it, and the
// real ssh, scp and sftp clients logging in with a Gatehouse token as the password.

import assert from 'node:assert/strict'
import { type SpawnSyncReturns, spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { connect, createServer, type Server } from 'node:net'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import ssh2 from 'ssh2'
import { MAX_CHANNELS, MAX_CONNECTIONS_PER_PRINCIPAL } from '../proxies/ssh/connection.js'
import { MAX_FORWARD_CHANNELS } from '../proxies/ssh/forward.js'
import { MAX_PENDING_AUTH } from '../proxies/ssh/index.js'
import { REPO, TestGateway } from './helpers/gateway.js'
import { freePort, sshClientSetup, TestSshd, waitPort } from './helpers/sshd.js'

let sshd: TestSshd
let gw: TestGateway
let sshPort = 0
let token = ''

before(async () => {
  sshd = await TestSshd.start()
  gw = await TestGateway.start({
    connections: [
      sshd.connection('web-1', { labels: { env: 'test' } }),
      sshd.connection('web-bad', { host_key: sshd.otherHostKey }),
      sshd.connection('web-tofu', { host_key: 'trust-on-first-use' }),
    ],
    config: {
      listen: { api: '127.0.0.1:0', postgres: '127.0.0.1:0', ssh: '127.0.0.1:0' },
      policies: join(REPO, 'test/data/ssh'),
    },
  })
  sshPort = gw.port('ssh')
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
    timeout: 120_000,
  })
}

/** Connects to 127.0.0.1:port, sends `text`, and returns what comes back before the peer closes or `ms` pass. */
function echoThrough(port: number, text: string, ms = 10_000): Promise<string> {
  return new Promise((resolve) => {
    let got = ''
    const s = connect(port, '127.0.0.1', () => s.write(text))
    const t = setTimeout(() => {
      s.destroy()
      resolve(got)
    }, ms)
    s.on('data', (d: Buffer) => {
      got += d.toString()
      if (got.length >= text.length) {
        clearTimeout(t)
        s.destroy()
        resolve(got)
      }
    })
    s.on('error', () => undefined)
    s.on('close', () => {
      clearTimeout(t)
      resolve(got)
    })
  })
}

function eventsOf(type: string): Record<string, unknown>[] {
  return gw.auditEvents().filter((e) => e.type === type)
}

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
        timeout: 120_000,
      })
      assert.equal(up.status, 0, up.stderr)
      assert.deepEqual(readFileSync(remote), data)
      const down = spawnSync('scp', [...flags, `web-1@127.0.0.1:${remote}`, back], {
        encoding: 'utf8',
        env: { ...process.env, ...c.env },
        timeout: 120_000,
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
      timeout: 120_000,
    })
    assert.equal(r.status, 0, r.stderr)
    assert.equal(readFileSync(remote, 'utf8'), 'sftp through gatehouse\n')
    assert.match(r.stdout, /sftp-put\.txt/)
    assert.ok(eventsOf('statement').some((e) => e.action === 'ssh.sftp' && e.command === 'sftp' && e.decision === 'allow'))
    // Every file operation is decided and recorded (durably, before it is forwarded).
    const put = eventsOf('statement').find((e) => e.action === 'ssh.sftp' && e.operation === 'write' && e.path === remote)
    assert.equal(put?.decision, 'allow')
    assert.match(String(put?.mode), /^write/)
    const dirs = eventsOf('statement').filter((e) => e.operation === 'readdir' && e.decision === 'allow')
    assert.ok(
      dirs.some((e) => String(e.path).replace(/\/+$/, '') === sshd.dir),
      JSON.stringify(dirs.map((e) => e.path)),
    )
  })

  test('sftp file operations that policy refuses get permission denied, are audited, and never reach the target', () => {
    const c = sshClientSetup(gw.dir, token)
    const secret = join(sshd.dir, 'secret')
    mkdirSync(secret, { recursive: true })
    writeFileSync(join(secret, 'key.txt'), 'top secret\n')
    writeFileSync(join(sshd.dir, 'plain.txt'), 'plain\n')
    const local = join(gw.dir, 'sftp-denied.txt')
    writeFileSync(local, 'should not land\n')
    const sftp = (input: string): SpawnSyncReturns<string> =>
      // Not -b: batch mode would switch password authentication off.
      spawnSync('sftp', [...c.opts, '-P', String(sshPort), 'web-1@127.0.0.1'], {
        encoding: 'utf8',
        env: { ...process.env, ...c.env },
        input,
        timeout: 120_000,
      })
    // sftp's get looks the file up first (stat); refused, the client reports it as not found.
    const get = sftp(`get ${join(secret, 'key.txt')} ${join(gw.dir, 'stolen.txt')}\n`)
    assert.match(get.stderr, /Permission denied|not found/)
    assert.ok(!existsSync(join(gw.dir, 'stolen.txt')))
    const put = sftp(`put ${local} ${join(secret, 'planted.txt')}\n`)
    assert.match(put.stderr, /Permission denied/)
    assert.ok(!existsSync(join(secret, 'planted.txt')), 'the refused upload did not reach the target')
    const mv = sftp(`rename ${join(sshd.dir, 'plain.txt')} ${join(secret, 'moved.txt')}\n`)
    assert.match(mv.stderr, /Permission denied/)
    assert.ok(existsSync(join(sshd.dir, 'plain.txt')), 'the refused rename did not happen')
    const rm = sftp(`rm ${join(secret, 'key.txt')}\n`)
    assert.match(rm.stderr, /Permission denied/)
    assert.ok(existsSync(join(secret, 'key.txt')), 'the refused remove did not happen')
    // Allowed work in the same kind of session still goes through.
    const ok = sftp(`rename ${join(sshd.dir, 'plain.txt')} ${join(sshd.dir, 'plain2.txt')}\n`)
    assert.doesNotMatch(ok.stderr, /denied/)
    assert.ok(existsSync(join(sshd.dir, 'plain2.txt')))
    const denied = eventsOf('statement').filter((e) => e.action === 'ssh.sftp' && e.decision === 'deny')
    const ops = denied.map((e) => `${String(e.operation)} ${String(e.path)}${e.target ? ` ${String(e.target)}` : ''}`)
    assert.ok(ops.includes(`stat ${join(secret, 'key.txt')}`) || ops.includes(`read ${join(secret, 'key.txt')}`), ops.join('\n'))
    assert.ok(ops.includes(`write ${join(secret, 'planted.txt')}`), ops.join('\n'))
    assert.ok(ops.includes(`rename ${join(sshd.dir, 'plain.txt')} ${join(secret, 'moved.txt')}`), ops.join('\n'))
    assert.ok(ops.includes(`remove ${join(secret, 'key.txt')}`), ops.join('\n'))
    assert.deepEqual(denied[0]?.rules, ['no-secret-files'])
    // Legacy scp is a file transfer under the same rules.
    const scp = spawnSync(
      'scp',
      [...c.opts, '-O', '-P', String(sshPort), `web-1@127.0.0.1:${join(secret, 'key.txt')}`, join(gw.dir, 'x')],
      {
        encoding: 'utf8',
        env: { ...process.env, ...c.env },
        timeout: 120_000,
      },
    )
    assert.notEqual(scp.status, 0)
    const legacy = eventsOf('statement').find((e) => e.operation === 'download' && e.path === join(secret, 'key.txt'))
    assert.equal(legacy?.decision, 'deny')
  })

  test('port forwarding: ssh -L and -R work where policy allows, are refused elsewhere, and every forward is audited', async () => {
    const echo = createServer((c) => c.pipe(c))
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r))
    const ea = echo.address()
    const echoPort = ea && typeof ea === 'object' ? ea.port : 0
    const [lOk, lDenied, rOk] = [await freePort(), await freePort(), await freePort()]
    const c = sshClientSetup(gw.dir, token)
    const p = spawn(
      'ssh',
      [
        ...c.opts,
        '-N',
        '-o',
        'ExitOnForwardFailure=yes',
        '-L',
        `${lOk}:127.0.0.1:${echoPort}`,
        '-L',
        `${lDenied}:localhost:${echoPort}`,
        '-R',
        `${rOk}:127.0.0.1:${echoPort}`,
        '-p',
        String(sshPort),
        'web-1@127.0.0.1',
      ],
      { env: { ...process.env, ...c.env }, stdio: ['ignore', 'ignore', 'pipe'] },
    )
    let stderr = ''
    p.stderr.on('data', (d: Buffer) => {
      stderr += d.toString()
    })
    try {
      await waitPort(lOk, () => `nothing listens on ${lOk}: ${stderr}`)
      await waitPort(rOk, () => `nothing listens on ${rOk}: ${stderr}`)
      // Through -L: the caller's port → the gateway → the target → the echo server.
      assert.equal(await echoThrough(lOk, 'via-local'), 'via-local', stderr)
      // Through -R: the target's port → the target's sshd → the gateway → the caller → the echo server.
      assert.equal(await echoThrough(rOk, 'via-remote'), 'via-remote', stderr)
      // A destination policy does not allow: the channel is refused, nothing is echoed.
      assert.equal(await echoThrough(lDenied, 'denied', 3000), '', stderr)
    } finally {
      p.kill('SIGTERM')
      echo.close()
    }
    const fw = eventsOf('statement').filter((e) => e.action === 'ssh.forward')
    const seen = fw.map((e) => `${String(e.direction)} ${String(e.host)}:${String(e.port)} ${String(e.decision)}`)
    assert.ok(seen.includes(`local 127.0.0.1:${echoPort} allow`), seen.join('\n'))
    assert.ok(seen.includes(`local localhost:${echoPort} deny`), seen.join('\n'))
    assert.ok(
      seen.some((x) => x.startsWith('remote ') && x.includes(`:${rOk} allow`)),
      seen.join('\n'),
    )
    assert.deepEqual(fw.find((e) => e.decision === 'deny')?.chain, ['user:alice'])
  })

  test('agent and X11 forwarding are refused and recorded', async () => {
    // A real agent (ssh-agent runs ssh under it), so ssh -A really asks to forward it.
    const c = sshClientSetup(gw.dir, token)
    const r = spawnSync(
      'ssh-agent',
      ['ssh', ...c.opts, '-A', '-p', String(sshPort), 'web-1@127.0.0.1', 'printenv SSH_AUTH_SOCK || echo no-agent'],
      {
        encoding: 'utf8',
        env: { ...process.env, ...c.env },
        timeout: 120_000,
      },
    )
    assert.equal(r.stdout, 'no-agent\n', r.stderr)
    // X11: ssh2's client asks for it before the command runs; the gateway refuses.
    const client = new ssh2.Client()
    await new Promise<void>((resolve, reject) => {
      client.on('ready', () => resolve())
      client.on('error', reject)
      client.connect({ host: '127.0.0.1', port: sshPort, username: 'web-1', password: token })
    })
    const x11 = await new Promise<string>((resolve) =>
      client.exec('echo hi', { x11: true }, (err) => resolve(err ? err.message : 'accepted')),
    )
    client.end()
    assert.notEqual(x11, 'accepted')
    let kinds: unknown[] = []
    for (let i = 0; i < 40; i++) {
      kinds = eventsOf('statement')
        .filter((e) => e.action === 'ssh.forward' && e.decision === 'deny')
        .map((e) => e.direction)
      if (kinds.includes('agent') && kinds.includes('x11')) break
      await new Promise((res) => setTimeout(res, 100))
    }
    assert.ok(kinds.includes('agent') && kinds.includes('x11'), `refusals recorded: ${JSON.stringify(kinds)}`)
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
    // sessions list --json shows it with its id and connection.
    const list = gw.cli(['sessions', 'list', '--json'])
    assert.equal(list.code, 0, list.stderr)
    const row = list.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((x) => x.id === id)
    assert.equal(row?.connection, 'web-1')
    assert.equal(row?.protocol, 'ssh')
    assert.deepEqual(row?.chain, ['user:alice'])
    // The typed command line was detected (best effort), recorded and marked in the recording.
    let typed: Record<string, unknown> | undefined
    for (let i = 0; i < 40 && !typed; i++) {
      typed = eventsOf('result').find((e) => e.action === 'ssh.shell.command' && e.session === id)
      if (!typed) spawnSync('sleep', ['0.1'])
    }
    assert.equal(typed?.command, 'echo shell-marker-$((6*7))')
    assert.equal(typed?.detected, true)
    assert.ok(
      lines.some((l) => l.includes('"m"') && l.includes('echo shell-marker')),
      'the detected command is a marker in the recording',
    )
  })

  test('a secret typed with echo off in a shell is not recorded as a command', async () => {
    const c = sshClientSetup(gw.dir, token)
    const p = spawn('ssh', [...c.opts, '-tt', '-p', String(sshPort), 'web-1@127.0.0.1'], { env: { ...process.env, ...c.env } })
    let out = ''
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString()
    })
    const waitFor = (re: RegExp): Promise<void> =>
      new Promise((resolve, reject) => {
        const t0 = Date.now()
        const tick = (): void => {
          if (re.test(out)) resolve()
          else if (Date.now() - t0 > 15_000) reject(new Error(`timed out waiting for ${re}: ${out}`))
          else setTimeout(tick, 50)
        }
        tick()
      })
    const exited = new Promise<void>((resolve) => p.on('close', () => resolve()))
    p.stdin.write('echo READY-$((1+1))\n')
    await waitFor(/READY-2/)
    p.stdin.write('stty -echo; read -r X; stty echo; echo DONE-$((2+2))\n')
    await new Promise((r) => setTimeout(r, 500))
    p.stdin.write('hunter2-secret\n')
    await waitFor(/DONE-4/)
    p.stdin.write('exit\n')
    await exited
    assert.doesNotMatch(out, /hunter2-secret/)
    let cmds: unknown[] = []
    for (let i = 0; i < 40; i++) {
      cmds = eventsOf('result')
        .filter((e) => e.action === 'ssh.shell.command')
        .map((e) => e.command)
      if (cmds.includes('echo READY-$((1+1))')) break
      await new Promise((r) => setTimeout(r, 100))
    }
    assert.ok(cmds.includes('echo READY-$((1+1))'), JSON.stringify(cmds))
    assert.ok(!cmds.some((x) => String(x).includes('hunter2')), 'the secret is not in the audit')
    assert.ok(!JSON.stringify(gw.auditEvents()).includes('hunter2'), 'the secret is nowhere in the audit')
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
