// The SSH proxy end to end, channels beyond exec: scp and sftp, port forwarding, agent and X11
// forwarding, and shells recorded as asciicast, through real OpenSSH clients and a real sshd.

import assert from 'node:assert/strict'
import { type SpawnSyncReturns, spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import ssh2 from 'ssh2'
import { freePort, sshClientSetup, waitPort } from './helpers/sshd.js'
import { echoThrough, eventsOf, gw, ssh, sshd, sshPort, token, useSshProxy } from './helpers/ssh-proxy.js'

useSshProxy()

describe('ssh proxy: files, forwarding and shells', () => {
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
    for (const deadline = Date.now() + 60_000; !typed && Date.now() < deadline; ) {
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
          else if (Date.now() - t0 > 120_000) reject(new Error(`timed out waiting for ${re}: ${out}`))
          else setTimeout(tick, 50)
        }
        tick()
      })
    const exited = new Promise<void>((resolve) => p.on('close', () => resolve()))
    p.stdin.write('echo READY-$((1+1))\n')
    await waitFor(/READY-2/)
    // The secret is typed once the shell says echo is off, as a person types at a silent prompt: typed
    // earlier, the terminal itself would still echo it.
    p.stdin.write('stty -echo; echo SILENT-$((3+3)); read -r X; stty echo; echo DONE-$((2+2))\n')
    await waitFor(/SILENT-6/)
    p.stdin.write('hunter2-secret\n')
    await waitFor(/DONE-4/)
    p.stdin.write('exit\n')
    await exited
    assert.doesNotMatch(out, /hunter2-secret/)
    let cmds: unknown[] = []
    for (const deadline = Date.now() + 60_000; Date.now() < deadline; ) {
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
})
