// The fixture of the SSH proxy's end-to-end files: a real OpenSSH sshd started here, Gatehouse in
// front of it, and the real ssh client logging in with a Gatehouse token as the password. The
// bindings below are live: a test file calls useSshProxy() and reads them once its before() ran.

import { type SpawnSyncReturns, spawnSync } from 'node:child_process'
import { connect } from 'node:net'
import { join } from 'node:path'
import { after, before } from 'node:test'
import { REPO, TestGateway } from './gateway.js'
import { sshClientSetup, TestSshd } from './sshd.js'

export let sshd: TestSshd
export let gw: TestGateway
export let sshPort = 0
export let token = ''

/** Starts the sshd and the gateway before the file's tests and stops them after. */
export function useSshProxy(): void {
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
}

export function ssh(args: readonly string[], opts: { token?: string; input?: string; port?: number } = {}): SpawnSyncReturns<string> {
  const c = sshClientSetup(gw.dir, opts.token ?? token)
  return spawnSync('ssh', [...c.opts, '-p', String(opts.port ?? sshPort), ...args], {
    encoding: 'utf8',
    env: { ...process.env, ...c.env },
    input: opts.input ?? '',
    timeout: 120_000,
  })
}

/** Connects to 127.0.0.1:port, sends `text`, and returns what comes back before the peer closes or `ms` pass. */
export function echoThrough(port: number, text: string, ms = 10_000): Promise<string> {
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

export function eventsOf(type: string): Record<string, unknown>[] {
  return gw.auditEvents().filter((e) => e.type === type)
}
