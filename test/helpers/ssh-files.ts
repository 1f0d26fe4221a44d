// The file-transfer corpus's fixture: sshd, a gateway and an agent allowed one directory, a tree reset per attempt, a raw SFTP client.

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
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { join } from 'node:path'
import { after, before } from 'node:test'
import ssh2, { type ClientChannel } from 'ssh2'
import { REPO, TestGateway } from './gateway.js'
import { sshClientSetup, TestSshd } from './sshd.js'

const SECRET = 'TOP-SECRET-7f3a'
// Live bindings: set by the before() that useFilesLab() registers, read by the tests after it ran.
let sshd: TestSshd
export let gw: TestGateway
let sshPort = 0
let agent = ''
let base = ''
export let allowed = ''
export let secret = ''
export let local = ''
let client: InstanceType<typeof ssh2.Client>
const counts: Record<string, number> = {}
/** A path under the allowed directory, spelled as given (no lexical normalisation, unlike path.join). */
export const A = (p: string): string => `${allowed}/${p}`

/** The target's tree, reset before every attempt: an allowed directory with links in and out of it. */
export function resetTree(): void {
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
export async function attempt(family: string, name: string, fn: () => Promise<string | undefined> | string | undefined): Promise<void> {
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

export function u32(v: number): Buffer {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(v)
  return b
}
export function sstr(v: string | Buffer): Buffer {
  const b = typeof v === 'string' ? Buffer.from(v) : v
  return Buffer.concat([u32(b.length), b])
}
export const ATTR_NONE = u32(0)
export function attrMode(mode: number): Buffer {
  return Buffer.concat([u32(0x4), u32(mode)])
}

export interface Reply {
  readonly type: number
  readonly id: number
  readonly body: Buffer
}

export class RawSftp {
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

export function statusCode(r: Reply): number | null {
  return r.type === 101 ? r.body.readUInt32BE(0) : null
}
export function statusText(r: Reply): string {
  return r.type === 101 ? r.body.toString('utf8', 8, 8 + r.body.readUInt32BE(4)) : ''
}
export function handleOf(r: Reply): Buffer {
  assert.equal(r.type, 102, `a HANDLE reply (got ${r.type}: ${statusText(r)})`)
  return r.body.subarray(4, 4 + r.body.readUInt32BE(0))
}
/** Every text an SFTP reply carries (names, data), for the no-secret check. */
export function replyText(r: Reply): string {
  return r.body.toString('latin1')
}

export const OK = 0
export const DENIED = 3

/** Runs an exec through the gateway on the raw connection; `input` is sent, then (unless `keepOpen`) EOF. */
export async function rawExec(
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

export interface ClientResult {
  readonly status: number | null
  readonly stdout: string
  readonly stderr: string
}

/**
 * Runs a stock client without blocking the event loop: sshd logs to a pipe this process drains,
 * and a synchronous spawn would let that pipe fill and stall sshd.
 */
export function client3(bin: 'sftp' | 'scp', args: readonly string[], input = ''): Promise<ClientResult> {
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
export function sftpBatch(commands: string, extra: readonly string[] = []): Promise<ClientResult> {
  // -b turns BatchMode on, which would refuse the token as a password; the first value given wins.
  return client3('sftp', ['-o', 'BatchMode=no', ...extra, '-b', '-', 'files@127.0.0.1'], commands)
}
export const at = (p: string): string => `files@127.0.0.1:${p}`

/** Starts the sshd and the gateway, connects the agent, before the file’s tests; stops them after. */
export function useFilesLab(): void {
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
}
