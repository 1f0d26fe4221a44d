// After a session is killed the gateway keeps the caller's SSH connection up for a moment (up to
// CLOSE_GRACE_MS) so the caller can read the channels' last words. Channels the caller opens in
// that window must be refused: a new exec or shell must not run, a direct-tcpip must not be
// forwarded, whatever the policy would have said while the session lived.

import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { createServer, type Socket } from 'node:net'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import ssh2 from 'ssh2'
import { eventsOf, gw, sshd, sshPort, token, useSshProxy } from './helpers/ssh-proxy.js'

useSshProxy()

describe('ssh proxy: the close grace period', () => {
  test('channels opened after a kill, while the connection is closing, are refused and never reach the target', async () => {
    // An address policy allows forwarding to, so only the session's end can refuse it.
    const reached: Socket[] = []
    const echo = createServer((c) => {
      reached.push(c)
      c.pipe(c)
    })
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r))
    const ea = echo.address()
    const echoPort = ea && typeof ea === 'object' ? ea.port : 0
    const marker = join(sshd.dir, 'grace-marker')
    const client = new ssh2.Client()
    try {
      await new Promise<void>((resolve, reject) => {
        client.on('ready', () => resolve())
        client.on('error', reject)
        client.connect({ host: '127.0.0.1', port: sshPort, username: 'web-1', password: token, readyTimeout: 90_000 })
      })
      client.on('error', () => undefined)
      // A forward while the session lives works: the refusal below is the session's end, not policy.
      const live = await new Promise<string>((resolve) =>
        client.forwardOut('127.0.0.1', 5555, '127.0.0.1', echoPort, (err, ch) => {
          if (err) return resolve(`refused: ${err.message}`)
          ch.once('data', (d: Buffer) => {
            ch.close()
            resolve(d.toString())
          })
          ch.write('live')
        }),
      )
      assert.equal(live, 'live')
      const opened = await new Promise<ssh2.ClientChannel>((resolve, reject) =>
        client.exec('sleep 120', (err, ch) => (err ? reject(err) : resolve(ch))),
      )
      let id = ''
      for (let i = 0; i < 600 && id === ''; i++) {
        const rows = gw
          .cli(['sessions', 'list', '--json'])
          .stdout.split('\n')
          .filter((l) => l.trim() !== '')
          .map((l) => JSON.parse(l) as { id?: string; active?: boolean; connection?: string })
        id = rows.find((r) => r.active === true && r.connection === 'web-1')?.id ?? ''
        if (id === '') await new Promise((r) => setTimeout(r, 150))
      }
      assert.notEqual(id, '', 'the session is listed')
      // The opens are sent the moment the gateway's exit-status arrives: before ssh2 answers the
      // channel's close, so they reach the gateway inside its grace period. Each answer is kept as
      // it comes: one the connection's end overtakes stays unanswered (ssh2 then reports nothing).
      const answers: Record<string, string> = {}
      const settled = new Promise<void>((resolve) => {
        const answer = (what: string, err: Error | undefined): void => {
          answers[what] = err ? 'refused' : 'accepted'
          if (Object.keys(answers).length === 3) resolve()
        }
        client.once('close', () => resolve())
        opened.once('exit', () => {
          client.exec(`touch ${marker}`, (err) => answer('exec', err))
          client.shell((err) => answer('shell', err))
          client.forwardOut('127.0.0.1', 5556, '127.0.0.1', echoPort, (err, ch) => {
            if (!err) ch.write('late')
            answer('direct-tcpip', err)
          })
        })
      })
      const k = gw.cli(['sessions', 'kill', id])
      assert.equal(k.code, 0, k.stderr)
      await settled
      // The gateway answers each open at once, before its disconnect: an open left unanswered
      // would mean the gateway took it for something to run.
      assert.equal(Object.keys(answers).length, 3, `every open was answered: ${JSON.stringify(answers)}`)
      assert.deepEqual(
        Object.entries(answers).filter(([, a]) => a !== 'refused'),
        [],
        `every channel opened after the kill is refused: ${JSON.stringify(answers)}`,
      )
      await new Promise((r) => setTimeout(r, 1000))
      assert.ok(!existsSync(marker), 'the exec after the kill did not run on the target')
      assert.equal(reached.length, 1, 'only the live forward reached the destination')
      // Each refused open is on record, in the killed session.
      let late: Record<string, unknown>[] = []
      for (let i = 0; i < 100; i++) {
        late = eventsOf('result').filter((e) => e.session === id && e.error === 'refused: the session has ended')
        if (late.length >= 3) break
        await new Promise((r) => setTimeout(r, 100))
      }
      assert.deepEqual(
        late.map((e) => e.action).sort(),
        ['ssh.channel', 'ssh.channel', 'ssh.forward'],
        `refusals audited: ${JSON.stringify(late)}`,
      )
      assert.match(String(late.find((e) => e.action === 'ssh.forward')?.command), new RegExp(`${echoPort}`))
    } finally {
      client.end()
      for (const s of reached) s.destroy()
      echo.close()
    }
  })
})
