// The file-transfer corpus: an agent whose policy allows reading and writing only under one
// directory tries to read or write elsewhere through every file-transfer route the gateway has —
// SFTP path tricks (symlinks, `..`, relative paths, renames, links, setstat, handles and request
// ids), legacy scp in both directions (the real `scp -O` client and the raw protocol), and the
// SFTP server or other transfer programs run as an exec (`sftp -s`). Each attempt checks the
// target's filesystem itself: nothing outside the allowed directory changed, nothing secret came
// back; and the allowed transfers arrive with the right content.

import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { spawn } from 'node:child_process'
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { homedir } from 'node:os'
import { join, relative } from 'node:path'
import { after, before, describe, test } from 'node:test'
import ssh2, { type ClientChannel } from 'ssh2'
import { REPO, TestGateway } from './helpers/gateway.js'
import { sshClientSetup, TestSshd } from './helpers/sshd.js'

const SECRET = 'TOP-SECRET-7f3a'
let sshd: TestSshd
let gw: TestGateway
let sshPort = 0
let agent = ''
let base = ''
let allowed = ''
let secret = ''
let local = ''
let client: InstanceType<typeof ssh2.Client>
const counts: Record<string, number> = {}
/** A path under the allowed directory, spelled as given (no lexical normalisation, unlike path.join). */
const A = (p: string): string => `${allowed}/${p}`

/** The target's tree, reset before every attempt: an allowed directory with links in and out of it. */
function resetTree(): void {
  rmSync(base, { recursive: true, force: true })
  mkdirSync(join(allowed, 'sub'), { recursive: true })
  mkdirSync(join(allowed, 'readonly'))
  mkdirSync(secret)
  mkdirSync(`${allowed}x`)
  writeFileSync(join(allowed, 'hello.txt'), 'hello\n')
  writeFileSync(join(allowed, 'sub', 'inner.txt'), 'inner\n')
  writeFileSync(join(allowed, 'readonly', 'ro.txt'), 'read only\n', { mode: 0o644 })
  writeFileSync(join(allowed, 'decoy.txt'), 'decoy\n', { mode: 0o644 })
  writeFileSync(join(secret, 'key.txt'), `${SECRET}\n`, { mode: 0o600 })
  chmodSync(join(secret, 'key.txt'), 0o600)
  writeFileSync(join(`${allowed}x`, 'beside.txt'), `${SECRET} beside\n`)
  symlinkSync('../secret', join(allowed, 'out-link'))
  symlinkSync(join(secret, 'key.txt'), join(allowed, 'passwd-link'))
  symlinkSync('hello.txt', join(allowed, 'in-link'))
  symlinkSync('../secret/newfile', join(allowed, 'dangling'))
  rmSync(local, { recursive: true, force: true })
  mkdirSync(local, { recursive: true })
}

/** Every name outside the allowed directory, with its type, mode and content (or link text). */
function snapshotOutside(): string[] {
  const out: string[] = []
  const walk = (dir: string): void => {
    for (const n of readdirSync(dir).sort()) {
      const p = join(dir, n)
      if (p === allowed) continue
      const st = lstatSync(p)
      if (st.isSymbolicLink()) out.push(`${p} link ${readlinkSync(p)}`)
      else if (st.isDirectory()) {
        out.push(`${p} dir ${(st.mode & 0o7777).toString(8)}`)
        walk(p)
      } else out.push(`${p} file ${(st.mode & 0o7777).toString(8)} ${createHash('sha256').update(readFileSync(p)).digest('hex')}`)
    }
  }
  walk(base)
  return out
}

/** Everything the client saved locally, for the check that no secret came back. */
function localText(): string {
  let s = ''
  const walk = (dir: string): void => {
    for (const n of readdirSync(dir)) {
      const p = join(dir, n)
      const st = lstatSync(p)
      if (st.isDirectory()) walk(p)
      else if (st.isFile()) s += readFileSync(p, 'latin1')
    }
  }
  if (existsSync(local)) walk(local)
  return s
}

/** One attempt: a fresh tree; afterwards nothing outside the allowed directory changed and no secret reached the client. */
async function attempt(family: string, name: string, fn: () => Promise<string | undefined> | string | undefined): Promise<void> {
  resetTree()
  const before = snapshotOutside()
  let seen = ''
  try {
    seen = (await fn()) ?? ''
  } catch (err) {
    // What the target and the gateway said, for a failure under load.
    console.log(
      `${family} / ${name} failed; sshd:\n${sshd.stderr.split('\n').slice(-15).join('\n')}\ngateway:\n${gw.stderr.split('\n').slice(-10).join('\n')}`,
    )
    throw err
  }
  assert.deepEqual(snapshotOutside(), before, `${family} / ${name}: nothing outside the allowed directory changed`)
  assert.ok(!seen.includes(SECRET), `${family} / ${name}: no secret in what the client received`)
  assert.ok(!localText().includes(SECRET), `${family} / ${name}: no secret saved by the client`)
  counts[family] = (counts[family] ?? 0) + 1
}

// ---- a raw SFTP client on ssh2 channels, for requests the stock clients never send ----

function u32(v: number): Buffer {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(v)
  return b
}
function sstr(v: string | Buffer): Buffer {
  const b = typeof v === 'string' ? Buffer.from(v) : v
  return Buffer.concat([u32(b.length), b])
}
const ATTR_NONE = u32(0)
function attrMode(mode: number): Buffer {
  return Buffer.concat([u32(0x4), u32(mode)])
}

interface Reply {
  readonly type: number
  readonly id: number
  readonly body: Buffer
}

class RawSftp {
  private buf = Buffer.alloc(0)
  private readonly replies: Reply[] = []
  private waiter: (() => void) | null = null
  private nextId = 100

  private constructor(private readonly ch: ClientChannel) {
    ch.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d])
      while (this.buf.length >= 4 && this.buf.length >= 4 + this.buf.readUInt32BE(0)) {
        const n = this.buf.readUInt32BE(0)
        const p = this.buf.subarray(4, 4 + n)
        this.buf = this.buf.subarray(4 + n)
        this.replies.push({ type: p[0] as number, id: p.length >= 5 ? p.readUInt32BE(1) : 0, body: Buffer.from(p.subarray(5)) })
      }
      const w = this.waiter
      this.waiter = null
      w?.()
    })
  }

  /** Opens a channel: the sftp subsystem, or an exec of `command` (the SFTP server run as a program). */
  static async open(command?: string): Promise<RawSftp> {
    const ch = await new Promise<ClientChannel>((resolve, reject) => {
      const cb = (err: Error | undefined, c: ClientChannel): void => (err ? reject(err) : resolve(c))
      if (command === undefined) client.subsys('sftp', cb)
      else client.exec(command, cb)
    })
    const r = new RawSftp(ch)
    r.ch.write(Buffer.concat([u32(5), Buffer.from([1]), u32(3)]))
    const v = await r.reply(-1)
    assert.equal(v.type, 2, 'VERSION')
    return r
  }

  packet(type: number, id: number, ...parts: Buffer[]): Buffer {
    const body = Buffer.concat([Buffer.from([type]), u32(id), ...parts])
    return Buffer.concat([u32(body.length), body])
  }

  send(type: number, id: number, ...parts: Buffer[]): void {
    this.ch.write(this.packet(type, id, ...parts))
  }

  sendRaw(b: Buffer): void {
    this.ch.write(b)
  }

  /** The next reply for `id` (-1: the VERSION reply). */
  async reply(id: number): Promise<Reply> {
    const deadline = Date.now() + 10_000
    for (;;) {
      const i = this.replies.findIndex((r) => (id === -1 ? r.type === 2 : r.id === id && r.type !== 2))
      if (i >= 0) return this.replies.splice(i, 1)[0] as Reply
      if (Date.now() > deadline) throw new Error(`no reply for request ${id}`)
      await new Promise<void>((r) => {
        this.waiter = r
        setTimeout(r, 200)
      })
    }
  }

  async req(type: number, ...parts: Buffer[]): Promise<Reply> {
    const id = this.nextId++
    this.send(type, id, ...parts)
    return this.reply(id)
  }

  async open(path: string | Buffer, pflags: number): Promise<Reply> {
    return this.req(3, sstr(path), u32(pflags), ATTR_NONE)
  }

  /** Reads a whole file through a handle; the text (empty when the open was refused). */
  async readFile(path: string | Buffer): Promise<{ status: number | null; text: string }> {
    const o = await this.open(path, 1)
    if (o.type !== 102) return { status: statusCode(o), text: '' }
    const h = handleOf(o)
    let text = ''
    for (let off = 0; ; ) {
      const r = await this.req(5, sstr(h), Buffer.alloc(8), u32(32768))
      if (r.type !== 103) break
      const d = r.body.subarray(4, 4 + r.body.readUInt32BE(0))
      text += d.toString()
      off += d.length
      if (d.length === 0) break
      // A second READ at the new offset.
      const o2 = Buffer.alloc(8)
      o2.writeBigUInt64BE(BigInt(off))
      const r2 = await this.req(5, sstr(h), o2, u32(32768))
      if (r2.type !== 103) break
      text += r2.body.subarray(4, 4 + r2.body.readUInt32BE(0)).toString()
      break
    }
    await this.req(4, sstr(h))
    return { status: null, text }
  }

  async writeFile(path: string, text: string, pflags = 0x1a): Promise<number | null> {
    const o = await this.open(path, pflags)
    if (o.type !== 102) return statusCode(o)
    const h = handleOf(o)
    const w = await this.req(6, sstr(h), Buffer.alloc(8), sstr(text))
    await this.req(4, sstr(h))
    return statusCode(w)
  }

  ext(name: string, ...parts: Buffer[]): Promise<Reply> {
    return this.req(200, sstr(name), ...parts)
  }

  close(): void {
    this.ch.close()
  }
}

function statusCode(r: Reply): number | null {
  return r.type === 101 ? r.body.readUInt32BE(0) : null
}
function statusText(r: Reply): string {
  return r.type === 101 ? r.body.toString('utf8', 8, 8 + r.body.readUInt32BE(4)) : ''
}
function handleOf(r: Reply): Buffer {
  assert.equal(r.type, 102, `a HANDLE reply (got ${r.type}: ${statusText(r)})`)
  return r.body.subarray(4, 4 + r.body.readUInt32BE(0))
}
/** Every text an SFTP reply carries (names, data), for the no-secret check. */
function replyText(r: Reply): string {
  return r.body.toString('latin1')
}

const OK = 0
const DENIED = 3

/** Runs an exec through the gateway on the raw connection; `input` is sent, then (unless `keepOpen`) EOF. */
async function rawExec(
  command: string,
  input: Buffer = Buffer.alloc(0),
  keepOpen = false,
): Promise<{ out: Buffer; err: string; code: number | null }> {
  let code: number | null = null
  // The exit status is an event, not buffered data: a refusal's status can arrive in the same read
  // as the exec's confirmation, so it is listened for before the callback returns.
  const ch = await new Promise<ClientChannel>((resolve, reject) =>
    client.exec(command, (e, c) => {
      if (e) return reject(e)
      c.on('exit', (status: number | null) => {
        code = status
      })
      resolve(c)
    }),
  )
  const out: Buffer[] = []
  let err = ''
  ch.on('data', (d: Buffer) => out.push(d))
  ch.stderr.on('data', (d: Buffer) => {
    err += d.toString()
  })
  ch.write(input)
  if (!keepOpen) ch.end()
  await new Promise<void>((resolve) => {
    const t = setTimeout(() => {
      ch.close()
      resolve()
    }, 15_000)
    ch.on('close', () => {
      clearTimeout(t)
      resolve()
    })
  })
  return { out: Buffer.concat(out), err, code }
}

// ---- the stock OpenSSH clients ----

interface ClientResult {
  readonly status: number | null
  readonly stdout: string
  readonly stderr: string
}

/**
 * Runs a stock client without blocking the event loop: sshd logs to a pipe this process drains,
 * and a synchronous spawn would let that pipe fill and stall sshd.
 */
function client3(bin: 'sftp' | 'scp', args: readonly string[], input = ''): Promise<ClientResult> {
  const c = sshClientSetup(gw.dir, agent)
  const p = spawn(bin, [...c.opts, '-P', String(sshPort), ...args], { env: { ...process.env, ...c.env } })
  let stdout = ''
  let stderr = ''
  p.stdout.on('data', (d: Buffer) => {
    stdout += d.toString()
  })
  p.stderr.on('data', (d: Buffer) => {
    stderr += d.toString()
  })
  p.stdin.end(input)
  const timer = setTimeout(() => p.kill('SIGKILL'), 30_000)
  return new Promise((resolve) =>
    p.on('close', (status) => {
      clearTimeout(timer)
      resolve({ status, stdout, stderr })
    }),
  )
}
function sftpBatch(commands: string, extra: readonly string[] = []): Promise<ClientResult> {
  // -b turns BatchMode on, which would refuse the token as a password; the first value given wins.
  return client3('sftp', ['-o', 'BatchMode=no', ...extra, '-b', '-', 'files@127.0.0.1'], commands)
}
const at = (p: string): string => `files@127.0.0.1:${p}`

before(async () => {
  sshd = await TestSshd.start()
  base = realpathSync(mkdtempSync('/tmp/gh-files-'))
  allowed = join(base, 'allowed')
  secret = join(base, 'secret')
  local = join(realpathSync(mkdtempSync('/tmp/gh-files-local-')), 'got')
  resetTree()
  gw = await TestGateway.start({
    connections: [sshd.connection('files', { labels: { files_root: allowed } })],
    config: {
      listen: { api: '127.0.0.1:0', postgres: '127.0.0.1:0', ssh: '127.0.0.1:0' },
      policies: join(REPO, 'test/data/ssh-files'),
    },
  })
  sshPort = gw.port('ssh')
  const user = gw.token('user:alice')
  const d = gw.cli(['token', 'delegate', '--agent', 'files-bot', '--token', user, '--json'])
  assert.equal(d.code, 0, d.stderr)
  agent = (JSON.parse(d.stdout) as { access_token: string }).access_token
  client = new ssh2.Client()
  await new Promise<void>((resolve, reject) => {
    client.once('ready', () => resolve())
    client.once('error', reject)
    client.connect({ host: '127.0.0.1', port: sshPort, username: 'files', password: agent, hostVerifier: () => true })
  })
})

after(async () => {
  client?.end()
  await gw?.cleanup()
  await sshd?.stop()
  if (base) rmSync(base, { recursive: true, force: true })
  if (local) rmSync(join(local, '..'), { recursive: true, force: true })
  const total = Object.values(counts).reduce((a, b) => a + b, 0)
  console.log(`file-transfer corpus: ${total} attempts ${JSON.stringify(counts)}`)
})

describe('file transfer: an agent allowed one directory', () => {
  test('SFTP path tricks: symlinks, .., relative paths, double and trailing slashes, a sibling with the same prefix', async () => {
    const F = 'sftp-paths'
    const s = await RawSftp.open()
    const home = homedir()
    const cases: [string, string | Buffer, 'ok' | 'refused'][] = [
      ['plain allowed file', A('hello.txt'), 'ok'],
      ['.. out of the allowed directory', A('../secret/key.txt'), 'refused'],
      ['double slashes and ..', `${allowed}//..//secret//key.txt`, 'refused'],
      ['through a directory link pointing out', A('out-link/key.txt'), 'refused'],
      ['a file link pointing out', A('passwd-link'), 'refused'],
      ['a link inside the allowed directory', A('in-link'), 'ok'],
      ['relative to the start directory, landing inside', relative(home, A('hello.txt')), 'ok'],
      ['relative to the start directory, landing outside', relative(home, join(secret, 'key.txt')), 'refused'],
      ['a sibling directory sharing the prefix', `${allowed}x/beside.txt`, 'refused'],
      ['.. through a link (physical, not lexical)', A('out-link/../secret/key.txt'), 'refused'],
      ['trailing slash on a link pointing out', A('out-link/'), 'refused'],
      ['a NUL byte cutting the path', Buffer.from(`${allowed}/hello.txt\0/../../secret/key.txt`), 'refused'],
      ['a name that is not UTF-8', Buffer.concat([Buffer.from(`${allowed}/`), Buffer.from([0xff, 0xfe])]), 'refused'],
      ['the secret file by absolute path', join(secret, 'key.txt'), 'refused'],
    ]
    for (const [name, path, want] of cases) {
      await attempt(F, `read: ${name}`, async () => {
        const r = await s.readFile(path)
        if (want === 'ok') assert.equal(r.text, 'hello\n', name)
        else assert.notEqual(r.status, OK, name)
        return r.text
      })
    }
    const writes: [string, string, 'ok' | 'refused'][] = [
      ['create inside', A('new.txt'), 'ok'],
      ['create through ..', A('../secret/planted.txt'), 'refused'],
      ['create through a dangling link pointing out', A('dangling'), 'refused'],
      ['truncate through a file link pointing out', A('passwd-link'), 'refused'],
      ['create through a directory link pointing out', A('out-link/planted.txt'), 'refused'],
      ['create in the sibling with the same prefix', `${allowed}x/planted.txt`, 'refused'],
      ['create relative to the start directory, outside', relative(home, join(secret, 'planted.txt')), 'refused'],
    ]
    for (const [name, path, want] of writes) {
      await attempt(F, `write: ${name}`, async () => {
        const st = await s.writeFile(path, 'written\n')
        if (want === 'ok') {
          assert.equal(st, OK)
          assert.equal(readFileSync(path, 'utf8'), 'written\n')
        } else assert.notEqual(st, OK, name)
        return undefined
      })
    }
    const ops: [string, () => Promise<Reply>, 'ok' | 'refused', () => void][] = [
      [
        'mkdir inside, trailing slash',
        () => s.req(14, sstr(`${allowed}/newdir/`), ATTR_NONE),
        'ok',
        () => assert.ok(statSync(A('newdir')).isDirectory()),
      ],
      ['mkdir through a link pointing out', () => s.req(14, sstr(A('out-link/newdir')), ATTR_NONE), 'refused', () => undefined],
      ['mkdir named ..', () => s.req(14, sstr(`${allowed}/sub/..`), ATTR_NONE), 'refused', () => undefined],
      ['rmdir through a link pointing out', () => s.req(15, sstr(A('out-link'))), 'refused', () => undefined],
      ['rmdir of a link-spelled dir with a trailing dot', () => s.req(15, sstr(A('out-link/.'))), 'refused', () => undefined],
      ['remove through a link pointing out', () => s.req(13, sstr(A('out-link/key.txt'))), 'refused', () => undefined],
      [
        'remove a link pointing out removes the link only',
        () => s.req(13, sstr(A('passwd-link'))),
        'ok',
        () => assert.ok(!existsSync(A('passwd-link'))),
      ],
      ['stat of the secret file', () => s.req(17, sstr(join(secret, 'key.txt'))), 'refused', () => undefined],
      ['lstat of a link pointing out (the link itself)', () => s.req(7, sstr(A('passwd-link'))), 'ok', () => undefined],
      ['realpath through a link pointing out', () => s.req(16, sstr(A('out-link'))), 'refused', () => undefined],
      ['opendir through a link pointing out', () => s.req(11, sstr(A('out-link'))), 'refused', () => undefined],
      ['opendir of the allowed directory', () => s.req(11, sstr(allowed)), 'ok', () => undefined],
      ['statvfs of the secret directory', () => s.ext('statvfs@openssh.com', sstr(secret)), 'refused', () => undefined],
      ['expand-path of ~ (the start directory, outside)', () => s.ext('expand-path@openssh.com', sstr('~')), 'refused', () => undefined],
      ["expand-path of another user's home", () => s.ext('expand-path@openssh.com', sstr('~root/x')), 'refused', () => undefined],
      ['readlink of a link inside', () => s.req(19, sstr(A('in-link'))), 'ok', () => undefined],
      ['readlink in the secret directory', () => s.req(19, sstr(A('out-link/key.txt'))), 'refused', () => undefined],
    ]
    for (const [name, run, want, check] of ops) {
      await attempt(F, name, async () => {
        const r = await run()
        const code = statusCode(r)
        if (want === 'ok') assert.ok(code === null || code === OK, `${name}: ${statusText(r)}`)
        else assert.ok(code !== null && code !== OK, `${name}: expected a refusal, got type ${r.type}`)
        check()
        return replyText(r)
      })
    }
    s.close()
  })

  test('SFTP renames, symlinks, hard links and setstat', async () => {
    const F = 'sftp-links'
    const s = await RawSftp.open()
    const key = join(secret, 'key.txt')
    const cases: [string, () => Promise<Reply>, 'ok' | 'refused', () => void][] = [
      [
        'rename inside',
        () => s.req(18, sstr(A('hello.txt')), sstr(A('h2.txt'))),
        'ok',
        () => assert.equal(readFileSync(A('h2.txt'), 'utf8'), 'hello\n'),
      ],
      ['rename out of the directory', () => s.req(18, sstr(A('hello.txt')), sstr(join(secret, 'stolen.txt'))), 'refused', () => undefined],
      ['rename the secret in', () => s.req(18, sstr(key), sstr(A('key.txt'))), 'refused', () => assert.ok(!existsSync(A('key.txt')))],
      [
        'rename into a directory link pointing out',
        () => s.req(18, sstr(A('hello.txt')), sstr(A('out-link/h.txt'))),
        'refused',
        () => undefined,
      ],
      [
        'rename a link pointing out (judged as making it)',
        () => s.req(18, sstr(A('out-link')), sstr(A('moved-link'))),
        'refused',
        () => assert.ok(lstatSync(A('out-link')).isSymbolicLink()),
      ],
      [
        'rename a link pointing inside',
        () => s.req(18, sstr(A('in-link')), sstr(A('in-link2'))),
        'ok',
        () => assert.ok(lstatSync(A('in-link2')).isSymbolicLink()),
      ],
      [
        'rename over with a relative new name outside',
        () => s.req(18, sstr(A('hello.txt')), sstr(relative(homedir(), join(secret, 'x')))),
        'refused',
        () => undefined,
      ],
      [
        'posix-rename out',
        () => s.ext('posix-rename@openssh.com', sstr(A('hello.txt')), sstr(join(secret, 'x'))),
        'refused',
        () => undefined,
      ],
      [
        'posix-rename inside',
        () => s.ext('posix-rename@openssh.com', sstr(A('hello.txt')), sstr(A('h3'))),
        'ok',
        () => assert.ok(existsSync(A('h3'))),
      ],
      [
        'posix-rename of a file link pointing out',
        () => s.ext('posix-rename@openssh.com', sstr(A('passwd-link')), sstr(A('pl2'))),
        'refused',
        () => assert.ok(!existsSync(A('pl2'))),
      ],
      // OpenSSH's SYMLINK is (target, linkpath).
      [
        'symlink to the secret by absolute path',
        () => s.req(20, sstr(key), sstr(A('l1'))),
        'refused',
        () => assert.ok(!existsSync(A('l1'))),
      ],
      [
        'symlink to the secret by relative text',
        () => s.req(20, sstr('../secret/key.txt'), sstr(A('l2'))),
        'refused',
        () => assert.throws(() => lstatSync(A('l2'))),
      ],
      [
        'symlink to a missing name outside',
        () => s.req(20, sstr('../secret/future'), sstr(A('l3'))),
        'refused',
        () => assert.throws(() => lstatSync(A('l3'))),
      ],
      [
        'symlink relative, inside (made pointing at the canonical path)',
        () => s.req(20, sstr('hello.txt'), sstr(A('l4'))),
        'ok',
        () => assert.equal(readlinkSync(A('l4')), A('hello.txt')),
      ],
      // One rule for a link's target, as for an open: the final name may be missing (it is what a
      // create there would make), every directory before it must exist.
      [
        'symlink to a missing final name inside (made pointing at it, canonical)',
        () => s.req(20, sstr('future.txt'), sstr(A('l6'))),
        'ok',
        () => assert.equal(readlinkSync(A('l6')), A('future.txt')),
      ],
      [
        'symlink into a missing directory inside',
        () => s.req(20, sstr(A('nodir/x')), sstr(A('l7'))),
        'refused',
        () => assert.throws(() => lstatSync(A('l7'))),
      ],
      [
        'symlink through a dangling link',
        () => s.req(20, sstr(A('dangling/x')), sstr(A('l8'))),
        'refused',
        () => assert.throws(() => lstatSync(A('l8'))),
      ],
      ['symlink made in the secret directory', () => s.req(20, sstr(A('hello.txt')), sstr(A('out-link/l5'))), 'refused', () => undefined],
      [
        'hardlink of the secret in',
        () => s.ext('hardlink@openssh.com', sstr(key), sstr(A('hl1'))),
        'refused',
        () => assert.ok(!existsSync(A('hl1'))),
      ],
      [
        'hardlink of a link pointing out',
        () => s.ext('hardlink@openssh.com', sstr(A('passwd-link')), sstr(A('hl2'))),
        'refused',
        () => assert.throws(() => lstatSync(A('hl2'))),
      ],
      [
        'hardlink inside',
        () => s.ext('hardlink@openssh.com', sstr(A('hello.txt')), sstr(A('hl3'))),
        'ok',
        () => assert.equal(readFileSync(A('hl3'), 'utf8'), 'hello\n'),
      ],
      ['hardlink out', () => s.ext('hardlink@openssh.com', sstr(A('hello.txt')), sstr(join(secret, 'hl4'))), 'refused', () => undefined],
      ['setstat of the secret file', () => s.req(9, sstr(key), attrMode(0o666)), 'refused', () => undefined],
      ['setstat through a file link pointing out', () => s.req(9, sstr(A('passwd-link')), attrMode(0o666)), 'refused', () => undefined],
      [
        'setstat through .. spelled from inside',
        () => s.req(9, sstr(`${allowed}/sub/../../secret`), attrMode(0o777)),
        'refused',
        () => undefined,
      ],
      [
        'setstat inside',
        () => s.req(9, sstr(A('hello.txt')), attrMode(0o600)),
        'ok',
        () => assert.equal(statSync(A('hello.txt')).mode & 0o777, 0o600),
      ],
      [
        'lsetstat of a link pointing out (the link itself, never its target)',
        () => s.ext('lsetstat@openssh.com', sstr(A('passwd-link')), attrMode(0o666)),
        'ok',
        () => undefined,
      ],
      ['lsetstat of the secret file', () => s.ext('lsetstat@openssh.com', sstr(key), attrMode(0o666)), 'refused', () => undefined],
    ]
    for (const [name, run, want, check] of cases) {
      await attempt(F, name, async () => {
        const r = await run()
        const code = statusCode(r)
        // lsetstat on a link: Linux cannot chmod a link; the target's own failure is fine, what matters is its target.
        if (want === 'ok' && !name.startsWith('lsetstat')) assert.equal(code, OK, `${name}: ${statusText(r)}`)
        if (want === 'refused') assert.ok(code !== null && code !== OK, `${name}: expected a refusal`)
        check()
        return replyText(r)
      })
    }
    s.close()
  })

  test('SFTP handles: guessed, closed, reused request ids, fsetstat and writes on handles the gateway did not decide', async () => {
    const F = 'sftp-handles'
    // A file the agent may read but not change: the policy's readonly/ directory is read-only for agents
    // only through its mode here, so the check is on the gateway's attribution of the handle.
    const ro = join(allowed, 'readonly', 'ro.txt')
    await attempt(F, 'read with a guessed handle before any open', async () => {
      const s = await RawSftp.open()
      const r = await s.req(5, sstr(u32(0)), Buffer.alloc(8), u32(100))
      assert.notEqual(r.type, 103)
      s.close()
      return replyText(r)
    })
    await attempt(F, 'read on a handle after it was closed', async () => {
      const s = await RawSftp.open()
      const h = handleOf(await s.open(A('hello.txt'), 1))
      assert.equal(statusCode(await s.req(4, sstr(h))), OK)
      const r = await s.req(5, sstr(h), Buffer.alloc(8), u32(100))
      assert.notEqual(r.type, 103)
      s.close()
      return replyText(r)
    })
    await attempt(F, 'a large WRITE on a guessed handle is dropped whole and the session goes on', async () => {
      const s = await RawSftp.open()
      const w = await s.req(6, sstr(u32(1)), Buffer.alloc(8), sstr(Buffer.alloc(100_000, 0x41)))
      assert.notEqual(statusCode(w), OK)
      const after = await s.readFile(A('hello.txt'))
      assert.equal(after.text, 'hello\n')
      s.close()
      return undefined
    })
    await attempt(F, 'a reused request id cannot attach a handle to a decoy path', async () => {
      const s = await RawSftp.open()
      // Two opens with the same request id, in one write: the second (a decoy) is refused while the first awaits its reply.
      s.sendRaw(Buffer.concat([s.packet(3, 7, sstr(ro), u32(1), ATTR_NONE), s.packet(3, 7, sstr(A('decoy.txt')), u32(1), ATTR_NONE)]))
      const replies = [await s.reply(7), await s.reply(7)]
      const handle = replies.find((r) => r.type === 102)
      assert.ok(handle, 'the first open succeeded')
      assert.ok(
        replies.some((r) => statusCode(r) === 4),
        `the reused id was refused: ${replies.map((r) => `${r.type} ${statusText(r)}`)}`,
      )
      // The handle belongs to ro.txt: an fsetstat on it is decided as setstat of ro.txt.
      const fs = await s.req(10, sstr(handleOf(handle)), attrMode(0o777))
      assert.equal(statusCode(fs), DENIED, statusText(fs))
      assert.equal(statSync(ro).mode & 0o777, 0o644)
      assert.equal(statSync(A('decoy.txt')).mode & 0o777, 0o644)
      s.close()
      return undefined
    })
    await attempt(F, 'fsetstat on a read-only file opened for reading is decided as setstat of that file', async () => {
      const s = await RawSftp.open()
      const h = handleOf(await s.open(ro, 1))
      const r = await s.req(10, sstr(h), attrMode(0o777))
      assert.equal(statusCode(r), DENIED)
      assert.equal(statSync(ro).mode & 0o777, 0o644)
      s.close()
      return undefined
    })
    await attempt(F, 'write on a read-only file is refused at open', async () => {
      const s = await RawSftp.open()
      const st = await s.writeFile(ro, 'changed\n', 0x2)
      assert.equal(st, DENIED)
      assert.equal(readFileSync(ro, 'utf8'), 'read only\n')
      s.close()
      return undefined
    })
    await attempt(F, 'fsetstat on an allowed file works', async () => {
      const s = await RawSftp.open()
      const h = handleOf(await s.open(A('decoy.txt'), 1))
      assert.equal(statusCode(await s.req(10, sstr(h), attrMode(0o600))), OK)
      assert.equal(statSync(A('decoy.txt')).mode & 0o777, 0o600)
      s.close()
      return undefined
    })
    await attempt(F, 'copy-data from a handle the gateway did not decide', async () => {
      const s = await RawSftp.open()
      const h = handleOf(await s.open(A('new.bin'), 0x1a))
      const r = await s.ext('copy-data', sstr(u32(9)), Buffer.alloc(16), sstr(h), Buffer.alloc(8))
      assert.notEqual(statusCode(r), OK)
      s.close()
      return undefined
    })
    await attempt(F, 'an extension the gateway does not know, and SFTP v6 LINK', async () => {
      const s = await RawSftp.open()
      const a = await s.ext('evil@example.com', sstr(join(secret, 'key.txt')))
      const b = await s.req(21, sstr(A('l')), sstr(join(secret, 'key.txt')), Buffer.from([0]))
      assert.equal(statusCode(a), 8)
      assert.equal(statusCode(b), 8)
      assert.ok(!existsSync(A('l')))
      s.close()
      return undefined
    })
  })

  test('the stock sftp client, also with sftp -s running the SFTP server as an exec', async () => {
    const F = 'sftp-client'
    const srcFile = join(local, '..', 'upload.txt')
    writeFileSync(srcFile, 'uploaded by sftp\n')
    for (const extra of [[], ['-s', '/usr/lib/openssh/sftp-server']] as const) {
      const tag = extra.length ? ' (sftp -s)' : ''
      await attempt(F, `put inside${tag}`, async () => {
        const r = await sftpBatch(`put ${srcFile} ${allowed}/put.txt\n`, extra)
        assert.equal(r.status, 0, r.stderr)
        assert.equal(readFileSync(A('put.txt'), 'utf8'), 'uploaded by sftp\n')
        return r.stdout
      })
      await attempt(F, `get inside${tag}`, async () => {
        const r = await sftpBatch(`get ${allowed}/hello.txt ${local}/hello.txt\n`, extra)
        assert.equal(r.status, 0, r.stderr)
        assert.equal(readFileSync(join(local, 'hello.txt'), 'utf8'), 'hello\n')
        return r.stdout
      })
      await attempt(F, `get through ..${tag}`, async () => {
        const r = await sftpBatch(`get ${allowed}/../secret/key.txt ${local}/key.txt\n`, extra)
        assert.notEqual(r.status, 0)
        return r.stdout
      })
      await attempt(F, `cd into a link pointing out, then get${tag}`, async () => {
        const r = await sftpBatch(`cd ${allowed}/out-link\nget key.txt ${local}/key.txt\n`, extra)
        assert.notEqual(r.status, 0)
        return r.stdout
      })
      await attempt(F, `put through a link pointing out${tag}`, async () => {
        const r = await sftpBatch(`put ${srcFile} ${allowed}/out-link/planted.txt\n`, extra)
        assert.notEqual(r.status, 0)
        return r.stdout
      })
      await attempt(F, `ln -s to the secret${tag}`, async () => {
        const r = await sftpBatch(`ln -s ${secret}/key.txt ${allowed}/sl\n`, extra)
        assert.notEqual(r.status, 0)
        assert.throws(() => lstatSync(A('sl')))
        return r.stdout
      })
      await attempt(F, `chmod the secret through ..${tag}`, async () => {
        const r = await sftpBatch(`chmod 666 ${allowed}/sub/../../secret/key.txt\n`, extra)
        assert.notEqual(r.status, 0)
        return r.stdout
      })
      await attempt(F, `rename out${tag}`, async () => {
        const r = await sftpBatch(`rename ${allowed}/hello.txt ${secret}/moved.txt\n`, extra)
        assert.notEqual(r.status, 0)
        assert.ok(existsSync(A('hello.txt')))
        return r.stdout
      })
      await attempt(F, `ls of the secret directory${tag}`, async () => {
        const r = await sftpBatch(`ls ${secret}\n`, extra)
        assert.notEqual(r.status, 0)
        assert.doesNotMatch(r.stdout, /key\.txt/)
        return r.stdout
      })
    }
  })

  test('scp -O (the legacy protocol) and scp over SFTP, both directions, several paths, -r', async () => {
    const F = 'scp-client'
    const src = join(local, '..', 'scp-src')
    rmSync(src, { recursive: true, force: true })
    mkdirSync(join(src, 'tree', 'deep'), { recursive: true })
    writeFileSync(join(src, 'a.txt'), 'file a\n')
    writeFileSync(join(src, 'b.txt'), 'file b\n')
    writeFileSync(join(src, 'tree', 'deep', 'c.txt'), 'file c\n')
    for (const legacy of [true, false]) {
      const O = legacy ? ['-O'] : []
      const tag = legacy ? ' (-O)' : ' (sftp)'
      await attempt(F, `upload two files into the directory${tag}`, async () => {
        const r = await client3('scp', [...O, join(src, 'a.txt'), join(src, 'b.txt'), at(`${allowed}/`)])
        assert.equal(r.status, 0, r.stderr)
        assert.equal(readFileSync(A('a.txt'), 'utf8'), 'file a\n')
        assert.equal(readFileSync(A('b.txt'), 'utf8'), 'file b\n')
        return undefined
      })
      await attempt(F, `upload into the secret directory${tag}`, async () => {
        const r = await client3('scp', [...O, join(src, 'a.txt'), at(`${secret}/`)])
        assert.notEqual(r.status, 0)
        return undefined
      })
      await attempt(F, `upload through a directory link pointing out${tag}`, async () => {
        const r = await client3('scp', [...O, join(src, 'a.txt'), at(`${allowed}/out-link/`)])
        assert.notEqual(r.status, 0)
        return undefined
      })
      await attempt(F, `upload over a file link pointing out${tag}`, async () => {
        const r = await client3('scp', [...O, join(src, 'a.txt'), at(`${allowed}/passwd-link`)])
        assert.notEqual(r.status, 0)
        return undefined
      })
      await attempt(F, `upload -r a tree${tag}`, async () => {
        const r = await client3('scp', [...O, '-r', join(src, 'tree'), at(`${allowed}/`)])
        assert.equal(r.status, 0, r.stderr)
        assert.equal(readFileSync(join(allowed, 'tree', 'deep', 'c.txt'), 'utf8'), 'file c\n')
        return undefined
      })
      await attempt(F, `upload -r into the secret directory${tag}`, async () => {
        const r = await client3('scp', [...O, '-r', join(src, 'tree'), at(`${allowed}/../secret/`)])
        assert.notEqual(r.status, 0)
        return undefined
      })
      await attempt(F, `download a file${tag}`, async () => {
        const r = await client3('scp', [...O, at(`${allowed}/hello.txt`), join(local, 'h.txt')])
        assert.equal(r.status, 0, r.stderr)
        assert.equal(readFileSync(join(local, 'h.txt'), 'utf8'), 'hello\n')
        return undefined
      })
      await attempt(F, `download through ..${tag}`, async () => {
        const r = await client3('scp', [...O, at(`${allowed}/../secret/key.txt`), join(local, 'k.txt')])
        assert.notEqual(r.status, 0)
        return undefined
      })
      await attempt(F, `download two paths, one allowed, one through a link pointing out${tag}`, async () => {
        const r = await client3('scp', [...O, at(`${allowed}/hello.txt`), at(`${allowed}/passwd-link`), `${local}/`])
        assert.notEqual(r.status, 0)
        assert.equal(readFileSync(join(local, 'hello.txt'), 'utf8'), 'hello\n')
        return undefined
      })
      await attempt(F, `download -r the allowed directory (links pointing out inside it)${tag}`, async () => {
        const r = await client3('scp', [...O, '-r', at(allowed), `${local}/`])
        assert.equal(readFileSync(join(local, 'allowed', 'hello.txt'), 'utf8'), 'hello\n')
        assert.equal(readFileSync(join(local, 'allowed', 'sub', 'inner.txt'), 'utf8'), 'inner\n')
        return r.stdout
      })
    }
    await attempt(F, 'download with a glob (-O)', async () => {
      const r = await client3('scp', ['-O', at(`${allowed}/*.txt`), `${local}/`])
      assert.notEqual(r.status, 0)
      assert.match(r.stderr, /glob/)
      return undefined
    })
  })

  test('the raw scp protocol: names the stock client never sends', async () => {
    const F = 'scp-raw'
    const z = Buffer.from([0])
    const file = (name: string, body: string, mode = '0644'): Buffer =>
      Buffer.concat([Buffer.from(`C${mode} ${Buffer.byteLength(body)} ${name}\n${body}`), z])
    const sinkCases: [string, string, Buffer, 'ok' | 'refused', () => void][] = [
      [
        'a plain file',
        `scp -t ${allowed}`,
        file('up.txt', 'raw upload\n'),
        'ok',
        () => assert.equal(readFileSync(A('up.txt'), 'utf8'), 'raw upload\n'),
      ],
      ['a name with ..', `scp -t ${allowed}`, file('../secret/x', 'evil'), 'refused', () => undefined],
      ['a name with a slash', `scp -t ${allowed}`, file('sub/../../secret/x', 'evil'), 'refused', () => undefined],
      ['a name that is ..', `scp -r -t ${allowed}`, Buffer.from('D0755 0 ..\nC0644 4 x\nevil\0E\n'), 'refused', () => undefined],
      ['a file over a link pointing out', `scp -t ${allowed}`, file('passwd-link', 'evil'), 'refused', () => undefined],
      ['a file through a dangling link pointing out', `scp -t ${allowed}`, file('dangling', 'evil'), 'refused', () => undefined],
      [
        'a directory record for a link pointing out',
        `scp -r -t ${allowed}`,
        Buffer.from('D0755 0 out-link\nC0644 4 x\nevil\0E\n'),
        'refused',
        () => undefined,
      ],
      ['the target is a link pointing out', `scp -t ${allowed}/out-link`, file('x', 'evil'), 'refused', () => undefined],
      ['the target spelled with ..', `scp -t ${allowed}/../secret`, file('x', 'evil'), 'refused', () => undefined],
      [
        'the target relative to the start directory',
        `scp -t ${relative(homedir(), secret)}`,
        file('x', 'evil'),
        'refused',
        () => undefined,
      ],
      ['the target under ~', 'scp -t ~', file('x', 'evil'), 'refused', () => undefined],
      [
        '-r with nested directories',
        `scp -r -t ${allowed}`,
        Buffer.concat([Buffer.from('D0755 0 d1\nD0700 0 d2\n'), file('f.txt', 'nested\n'), Buffer.from('E\nE\n')]),
        'ok',
        () => assert.equal(readFileSync(join(allowed, 'd1', 'd2', 'f.txt'), 'utf8'), 'nested\n'),
      ],
      [
        '-p with a time record',
        `scp -p -t ${allowed}`,
        Buffer.concat([Buffer.from('T1000000000 0 1000000000 0\n'), file('timed.txt', 'timed\n', '0640')]),
        'ok',
        () => assert.equal(statSync(A('timed.txt')).mtimeMs, 1e12),
      ],
      ['a directory without -r', `scp -t ${allowed}`, Buffer.from('D0755 0 d\nE\n'), 'refused', () => assert.ok(!existsSync(A('d')))],
      ['a file cut short', `scp -t ${allowed}`, Buffer.from('C0644 1000 short.txt\nonly a little'), 'refused', () => undefined],
      ['a record line over the cap', `scp -t ${allowed}`, Buffer.from(`C0644 1 ${'a'.repeat(5000)}\n`), 'refused', () => undefined],
      ['a second target path', `scp -t ${allowed} ${secret}`, file('x', 'evil'), 'refused', () => undefined],
      [
        '-d with a file as target',
        `scp -d -t ${allowed}/hello.txt`,
        file('x', 'evil'),
        'refused',
        () => assert.equal(readFileSync(A('hello.txt'), 'utf8'), 'hello\n'),
      ],
    ]
    for (const [name, cmd, input, want, check] of sinkCases) {
      await attempt(F, `upload: ${name}`, async () => {
        const r = await rawExec(cmd, input)
        if (want === 'ok') assert.equal(r.code, 0, `${name}: ${r.err} ${r.out.toString()}`)
        else assert.notEqual(r.code, 0, name)
        check()
        return r.out.toString('latin1')
      })
    }
    const acks = Buffer.alloc(200)
    const sourceCases: [string, string, 'ok' | 'refused', (out: string) => void][] = [
      ['one file', `scp -f ${allowed}/hello.txt`, 'ok', (o) => assert.match(o, /C0644 6 hello\.txt\nhello\n/)],
      ['two files, one through a link pointing out', `scp -f ${allowed}/hello.txt ${allowed}/passwd-link`, 'refused', () => undefined],
      [
        'two files inside, one a link inside',
        `scp -f ${allowed}/hello.txt ${allowed}/in-link`,
        'ok',
        (o) => assert.match(o, /C\d{4} 6 in-link\nhello\n/),
      ],
      ['-r of the allowed directory', `scp -r -f ${allowed}`, 'refused', (o) => assert.match(o, /inner\n/)],
      ['-r of the secret directory through ..', `scp -r -f ${allowed}/..`, 'refused', () => undefined],
      ['a glob', `scp -f ${allowed}/*`, 'refused', () => undefined],
      ['a brace list', `scp -f ${allowed}/{hello.txt,passwd-link}`, 'refused', () => undefined],
      ['a variable', `scp -f $HOME/x`, 'refused', () => undefined],
      ['~ (the start directory)', 'scp -f ~/.profile', 'refused', () => undefined],
      ['the secret file', `scp -f ${secret}/key.txt`, 'refused', () => undefined],
      ['a relative path landing outside', `scp -f ${relative(homedir(), join(secret, 'key.txt'))}`, 'refused', () => undefined],
      ['an option the gateway does not model', `scp -S /bin/sh -f ${allowed}/hello.txt`, 'refused', () => undefined],
      ['both -t and -f', `scp -t -f ${allowed}/hello.txt`, 'refused', () => undefined],
    ]
    for (const [name, cmd, want, check] of sourceCases) {
      await attempt(F, `download: ${name}`, async () => {
        const r = await rawExec(cmd, acks)
        const out = r.out.toString('latin1')
        if (want === 'ok') assert.equal(r.code, 0, `${name}: ${r.err} ${out}`)
        else assert.notEqual(r.code, 0, name)
        check(out)
        return out
      })
    }
  })

  test('transfer programs run as an exec: the SFTP server is gated, anything else refused', async () => {
    const F = 'transfer-exec'
    for (const server of ['/usr/lib/openssh/sftp-server', 'internal-sftp', 'sftp-server']) {
      await attempt(F, `${server}: reading the secret is refused, reading inside works`, async () => {
        const s = await RawSftp.open(server)
        const bad = await s.readFile(join(secret, 'key.txt'))
        assert.notEqual(bad.status, OK)
        const good = await s.readFile(A('hello.txt'))
        assert.equal(good.text, 'hello\n')
        s.close()
        return bad.text
      })
      await attempt(F, `${server}: writing through a link pointing out is refused`, async () => {
        const s = await RawSftp.open(server)
        assert.notEqual(await s.writeFile(A('out-link/planted'), 'x'), OK)
        s.close()
        return undefined
      })
    }
    const refused = [
      '/usr/lib/openssh/sftp-server -d /',
      '/usr/lib/openssh/sftp-server -P open',
      'timeout 5 /usr/lib/openssh/sftp-server',
      'env /usr/lib/openssh/sftp-server',
      `rsync --server --sender -vlogDtpre.iLsfxC . ${secret}/key.txt`,
      `rsync --server -vlogDtpre.iLsfxC . ${allowed}/`,
      `echo x; scp -f ${secret}/key.txt`,
      `env scp -f ${secret}/key.txt`,
      `nice -n 5 scp -t ${secret}`,
      `sh -c 'scp -f ${secret}/key.txt'`,
      `/usr/bin/scp -f ${secret}/key.txt`,
      `echo $(scp -f ${secret}/key.txt)`,
    ]
    for (const cmd of refused) {
      await attempt(F, cmd, async () => {
        const r = await rawExec(cmd, Buffer.alloc(64))
        assert.notEqual(r.code, 0, cmd)
        return r.out.toString('latin1')
      })
    }
  })

  test('SFTP open flags: anything but exactly READ is a write (CREAT, TRUNC, EXCL, APPEND create or empty files)', async () => {
    // readonly/ may be read but not written by the policy; the filesystem is the ground truth.
    const ro = A('readonly/ro.txt')
    const roDir = join(allowed, 'readonly')
    const seen: Record<string, number> = {}
    await attempt('sftp-open-flags', 'every combination of READ WRITE APPEND CREAT TRUNC EXCL', async () => {
      const s = await RawSftp.open()
      // The attacker's flags first (READ|CREAT|TRUNC, READ|CREAT, CREAT|TRUNC, READ|CREAT|EXCL, READ|APPEND), then all 64.
      const order = [25, 9, 24, 41, 5, ...Array.from({ length: 64 }, (_, f) => f)]
      for (const f of order) {
        for (const path of [ro, A(`readonly/new-${f}`)]) {
          const r = await s.open(path, f)
          if (f === 1) {
            if (path === ro) await s.req(4, sstr(handleOf(r)))
            else assert.equal(statusCode(r), 2, 'READ of a missing file: no such file')
          } else {
            assert.equal(statusCode(r), DENIED, `open flags ${f} of ${path} is a write and denied: ${statusText(r)}`)
          }
          seen[String(f)] = (seen[String(f)] ?? 0) + 1
        }
        assert.equal(readFileSync(ro, 'utf8'), 'read only\n', `flags ${f}: the read-only file keeps its content`)
        assert.deepEqual(readdirSync(roDir), ['ro.txt'], `flags ${f}: no file created in readonly/`)
      }
      s.close()
      return undefined
    })
    const opens = gw.auditEvents().filter((e) => e.type === 'statement' && e.action === 'ssh.sftp' && e.path === ro)
    for (const [f, mode] of [
      [25, 'read,create,truncate'],
      [9, 'read,create'],
      [24, 'read,create,truncate'],
      [41, 'read,create,exclusive'],
      [5, 'read,append'],
    ] as const) {
      const e = opens.find((o) => o.mode === mode && o.operation === 'write')
      assert.ok(e, `flags ${f} audited as a write with mode ${mode}`)
    }
    assert.ok(!opens.some((o) => o.operation === 'read' && o.mode !== 'read'), 'only mode "read" is a read')
    assert.equal(Object.keys(seen).length, 64)
  })

  test('SFTP open: the permissions of a created file reach policy; unknown flags and unreadable attributes are refused', async () => {
    await attempt('sftp-open-flags', 'permissions, unknown flags, bad attributes', async () => {
      const s = await RawSftp.open()
      const made = A('made.txt')
      const o = await s.req(3, sstr(made), u32(0x1a), attrMode(0o640))
      await s.req(4, sstr(handleOf(o)))
      assert.equal(statSync(made).mode & 0o7777, 0o640, 'allowed: created with the asked permissions')
      const e = gw.auditEvents().find((x) => x.type === 'statement' && x.path === made && x.operation === 'write')
      assert.equal(e?.permissions, '0640')
      for (const f of [0x40, 0x80, 0x100, 0x80000000]) {
        const r = await s.open(A(`odd-${f}`), (f | 0x1a) >>> 0)
        assert.equal(statusCode(r), 8, `unknown open flag 0x${f.toString(16)} refused: ${statusText(r)}`)
      }
      // An attribute flag the gateway does not know, and attributes cut short.
      for (const attrs of [u32(0x40), Buffer.concat([u32(0x4)]), Buffer.concat([u32(0x4), u32(0o644), Buffer.from([0])])]) {
        const r = await s.req(3, sstr(A('odd-attrs')), u32(0x1a), attrs)
        assert.equal(statusCode(r), 8, `unreadable attributes refused: ${statusText(r)}`)
      }
      assert.ok(!existsSync(A('odd-attrs')) && !readdirSync(allowed).some((n) => n.startsWith('odd-')), 'nothing created')
      s.close()
      return undefined
    })
  })

  test('a link already inside pointing out: exec arguments are spellings (cat is not granted), SFTP judges the target', async () => {
    // docs/ssh.md: an exec rule checks how a path is spelled and the program follows links, so file
    // access for agents is granted over SFTP, where the same link is judged as the file it points to.
    await attempt('preexisting-link', 'cat of the link by exec, read of the link by SFTP', async () => {
      const r = await rawExec(`cat ${A('passwd-link')}`)
      assert.equal(r.code, 126, `exec cat refused by the policy: ${r.err}`)
      assert.match(r.err, /denied/, 'the client is told the exec was refused')
      const s = await RawSftp.open()
      const got = await s.readFile(A('passwd-link'))
      assert.equal(got.status, DENIED, 'SFTP read through the link is judged on the secret file and denied')
      const inside = await s.readFile(A('in-link'))
      assert.equal(inside.text, 'hello\n', 'a link pointing inside reads')
      s.close()
      return r.out.toString() + got.text
    })
    const e = gw.auditEvents().find((x) => x.type === 'statement' && x.requested_path === A('passwd-link') && x.operation === 'read')
    assert.equal(e?.path, join(secret, 'key.txt'))
    assert.equal(e?.decision, 'deny')
  })

  test('the audit names every path an operation touched, canonical and as requested', async () => {
    resetTree()
    const r = await rawExec(`scp -f ${allowed}/hello.txt ${allowed}/in-link`, Buffer.alloc(64))
    assert.equal(r.code, 0, r.err)
    const s = await RawSftp.open()
    await s.readFile(`${allowed}/sub/../out-link/key.txt`)
    s.close()
    const events = gw.auditEvents().filter((e) => e.type === 'statement' && e.action === 'ssh.sftp')
    const exec = events.find((e) => e.operation === 'download' && typeof e.command === 'string' && e.command.includes('in-link'))
    assert.ok(exec, 'the scp exec is audited')
    assert.deepEqual(exec.paths, [A('hello.txt'), A('hello.txt')])
    assert.deepEqual(exec.requested_paths, [A('hello.txt'), A('in-link')])
    const reads = events.filter((e) => e.operation === 'read' && e.via === 'scp' && e.requested_path === A('in-link'))
    assert.equal(reads.at(-1)?.path, A('hello.txt'))
    const denied = events.find((e) => e.requested_path === `${allowed}/sub/../out-link/key.txt`)
    assert.equal(denied?.path, join(secret, 'key.txt'))
    assert.equal(denied?.decision, 'deny')
  })
})
