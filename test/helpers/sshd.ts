// Starts OpenSSH's sshd on a free 127.0.0.1 port with its own config, host key and authorized key
// (for the user running the tests), and drives the real ssh/scp/sftp clients through Gatehouse
// with the token given by an SSH_ASKPASS script. Every test that starts one stops it.

import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { chmodSync, closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { connect, createServer } from 'node:net'
import { tmpdir, userInfo } from 'node:os'
import { join } from 'node:path'

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const a = s.address()
      const port = a && typeof a === 'object' ? a.port : 0
      s.close(() => resolve(port))
    })
  })
}

/** Waits until something listens on 127.0.0.1:port; throws `failure()` after `timeoutMs` or once `gaveUp()`
 * (the bound only ends a failure: a server starting on a loaded two-core machine may take a minute). */
export async function waitPort(port: number, failure: () => string, timeoutMs = 120_000, gaveUp = (): boolean => false): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const up = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1', () => {
        s.destroy()
        resolve(true)
      })
      s.on('error', () => resolve(false))
    })
    if (up) return
    if (Date.now() > deadline || gaveUp()) throw new Error(failure())
    await new Promise((r) => setTimeout(r, 50))
  }
}

function keygen(path: string): string {
  const r = spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'gatehouse-test', '-f', path], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`ssh-keygen failed: ${r.stderr}`)
  return readFileSync(`${path}.pub`, 'utf8').trim()
}

export class TestSshd {
  private proc: ChildProcess | null = null

  private constructor(
    readonly dir: string,
    readonly port: number,
    readonly user: string,
    /** `ssh-ed25519 AAAA…` of the server's host key, as a connection pins it. */
    readonly hostKey: string,
    /** A different host key, for the mismatch test. */
    readonly otherHostKey: string,
    readonly clientKeyPath: string,
    /** The address sshd listens on. */
    readonly host = '127.0.0.1',
  ) {}

  /** A gateway connection to this server, pinned to its host key; `extra` adds or overrides keys. */
  connection(name: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
    return {
      name,
      protocol: 'ssh',
      address: `${this.host}:${this.port}`,
      user: this.user,
      private_key: `file:${this.clientKeyPath}`,
      host_key: this.hostKey,
      ...extra,
    }
  }

  /**
   * `config`: extra sshd_config lines (SetEnv, AcceptEnv, …), appended to the defaults. `netns`:
   * run sshd inside that network namespace, listening on `host` (port 22 there).
   */
  static async start(opts: { config?: readonly string[]; netns?: string; host?: string } = {}): Promise<TestSshd> {
    const dir = mkdtempSync(join(tmpdir(), 'gh-sshd-'))
    const hostKey = keygen(join(dir, 'host_ed25519'))
    const otherHostKey = keygen(join(dir, 'other_ed25519'))
    const clientPub = keygen(join(dir, 'id_ed25519'))
    writeFileSync(join(dir, 'authorized_keys'), `${clientPub}\n`, { mode: 0o600 })
    const host = opts.host ?? '127.0.0.1'
    const port = opts.netns ? 22 : await freePort()
    const user = userInfo().username
    writeFileSync(
      join(dir, 'sshd_config'),
      [
        `Port ${port}`,
        `ListenAddress ${host}`,
        `HostKey ${join(dir, 'host_ed25519')}`,
        `PidFile ${join(dir, 'sshd.pid')}`,
        `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
        'PermitRootLogin prohibit-password',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'PubkeyAuthentication yes',
        'StrictModes no',
        'UsePAM no',
        'Subsystem sftp internal-sftp',
        'LogLevel VERBOSE',
        ...(opts.config ?? []),
        '',
      ].join('\n'),
    )
    mkdirSync('/run/sshd', { recursive: true, mode: 0o755 })
    const d = new TestSshd(
      dir,
      port,
      user,
      hostKey.split(' ').slice(0, 2).join(' '),
      otherHostKey.split(' ').slice(0, 2).join(' '),
      join(dir, 'id_ed25519'),
      host,
    )
    const sshd = ['/usr/sbin/sshd', '-D', '-e', '-f', join(dir, 'sshd_config')]
    const argv = opts.netns ? ['ip', 'netns', 'exec', opts.netns, ...sshd] : sshd
    // sshd logs to a file, not a pipe: a test blocked in spawnSync does not drain a pipe, and an sshd
    // whose log write blocks stalls every login until that spawnSync times out.
    const log = openSync(join(dir, 'sshd.log'), 'a')
    const proc = spawn(argv[0] as string, argv.slice(1), { stdio: ['ignore', 'ignore', log] })
    closeSync(log)
    d.proc = proc
    // sshd says when it listens; probing the port alone would also succeed when sshd lost the port
    // (picked free, then taken before sshd bound it) to another listener, and the test would then
    // talk to that one. Inside a network namespace the port is not reachable from here at all.
    const deadline = Date.now() + 120_000
    while (!/Server listening on/.test(d.stderr)) {
      if (proc.exitCode !== null || Date.now() > deadline) {
        throw new Error(`sshd did not start${opts.netns ? ` in ${opts.netns}` : ''}:\n${d.stderr}`)
      }
      await new Promise((r) => setTimeout(r, 50))
    }
    if (!opts.netns) {
      await waitPort(
        port,
        () => `sshd did not start:\n${d.stderr}`,
        120_000,
        () => proc.exitCode !== null,
      )
    }
    return d
  }

  /** sshd's log so far (VERBOSE). */
  get stderr(): string {
    try {
      return readFileSync(join(this.dir, 'sshd.log'), 'utf8')
    } catch {
      return ''
    }
  }

  /** How many connections sshd has accepted so far (from its VERBOSE log). */
  connectionCount(): number {
    return (this.stderr.match(/Connection from /g) ?? []).length
  }

  async stop(): Promise<void> {
    const p = this.proc
    if (p && p.exitCode === null && p.signalCode === null) {
      const exited = new Promise((r) => p.once('exit', r))
      p.kill('SIGTERM')
      await exited
    }
    rmSync(this.dir, { recursive: true, force: true })
  }
}

/** Options and environment that make ssh/scp/sftp log in to Gatehouse with `token` as the password. */
export function sshClientSetup(dir: string, token: string): { opts: string[]; env: Record<string, string> } {
  const askpass = join(dir, `askpass-${Math.random().toString(36).slice(2)}.sh`)
  writeFileSync(askpass, '#!/bin/sh\nprintf "%s\\n" "$GH_TOKEN"\n')
  chmodSync(askpass, 0o700)
  return {
    opts: [
      '-F',
      '/dev/null',
      '-o',
      'StrictHostKeyChecking=no',
      '-o',
      'UserKnownHostsFile=/dev/null',
      '-o',
      'PreferredAuthentications=password,keyboard-interactive',
      '-o',
      'PubkeyAuthentication=no',
      '-o',
      'NumberOfPasswordPrompts=1',
      '-o',
      'LogLevel=ERROR',
    ],
    env: { SSH_ASKPASS: askpass, SSH_ASKPASS_REQUIRE: 'force', DISPLAY: ':0', GH_TOKEN: token },
  }
}
