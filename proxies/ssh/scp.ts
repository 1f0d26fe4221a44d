// File-transfer programs under exec. The gateway never runs one on the target: an exec of the
// SFTP server (`/usr/lib/openssh/sftp-server`, which `sftp -s` sends, or `internal-sftp`) becomes
// the target's sftp subsystem behind the SFTP gate; a legacy `scp -t` / `scp -f` is carried out by
// the gateway itself — it speaks the scp protocol to the client and does every file operation on
// the target through its own SFTP channel, each one resolved to its canonical path and decided as
// the SFTP operation it is (`write`, `mkdir`, `setstat`, `read`, `readdir`). Any other use of a
// transfer program (`rsync --server`, scp with options it does not model, a transfer program
// inside a longer line or behind a wrapper) is refused.
//
// The scp protocol (OpenSSH scp.c): the sink acknowledges with one zero byte, or answers
// `\x01message\n` (the file is skipped, the transfer goes on) or `\x02message\n` (fatal). The
// source sends `T<mtime> 0 <atime> 0`, `C<mode> <size> <name>` followed by the bytes and a zero
// byte, `D<mode> 0 <name>` … `E` for directories (with -r).

import type { SFTPWrapper, Stats } from 'ssh2'
import type { ExecCommand } from './command.js'
import { expandHome, PathRefused, resolveFollow, type TargetFs } from './sftp-paths.js'
import type { SftpVerdict } from './sftp.js'
import type { SftpOperation } from './sftp-wire.js'

/** Programs that move files: an exec naming one is intercepted or refused, wherever the name stands. */
const TRANSFER_PROGRAMS = new Set(['scp', 'sftp-server', 'internal-sftp', 'rsync', 'rrsync'])
/** Longest scp control line accepted (scp.c reads at most 2 KiB into its buffer). */
export const MAX_SCP_LINE = 2048
/** Deepest directory tree sent by `scp -r -f` (a link to a parent would otherwise recurse forever). */
export const MAX_SCP_DEPTH = 32
/** Size of each read and write on the target. */
const CHUNK = 32 * 1024

export interface ScpTransfer {
  readonly direction: 'upload' | 'download'
  readonly recursive: boolean
  readonly preserve: boolean
  /** -d: the target must be a directory (several sources). */
  readonly targetDirectory: boolean
  /** upload: the one target; download: every source, as the client spelled them. */
  readonly paths: readonly string[]
}

export type TransferExec =
  | { readonly kind: 'sftp-server' }
  | { readonly kind: 'scp'; readonly transfer: ScpTransfer }
  | { readonly kind: 'refused'; readonly reason: string }

function basename(word: string): string {
  const i = word.lastIndexOf('/')
  return i >= 0 ? word.slice(i + 1) : word
}

/**
 * Whether an exec runs a file-transfer program, and how the gateway handles it; null when it does
 * not. The hook the exec path calls before anything else: a line naming a transfer program
 * anywhere (behind `timeout`, `env`, in a pipeline, inside an opaque line) is never run as an exec.
 */
export function classifyTransferExec(cmd: ExecCommand): TransferExec | null {
  if (cmd.opaque) {
    return /sftp-server|internal-sftp|\bscp\b|rsync/.test(cmd.command)
      ? {
          kind: 'refused',
          reason: `a file-transfer program inside a command line the gateway cannot judge (${cmd.opaque_reason ?? 'opaque'})`,
        }
      : null
  }
  const named = cmd.commands.some((c) => c.some((w) => TRANSFER_PROGRAMS.has(basename(w))))
  if (!named) return null
  const argv = cmd.commands[0] ?? []
  const program = basename(argv[0] ?? '')
  if (cmd.commands.length !== 1 || !TRANSFER_PROGRAMS.has(program)) {
    return {
      kind: 'refused',
      reason: 'a file-transfer program runs only as the whole command, not inside a longer line or behind a wrapper',
    }
  }
  if (program === 'sftp-server' || program === 'internal-sftp') {
    // Options would change what the server does (-d: start directory, -P/-p: request lists, -u: umask).
    return argv.length === 1
      ? { kind: 'sftp-server' }
      : { kind: 'refused', reason: 'the SFTP server runs through the gateway without options' }
  }
  if (program !== 'scp') return { kind: 'refused', reason: `${program} is not supported through the gateway (use sftp or scp)` }
  return parseScpArgs(argv.slice(1))
}

/** The remote side of OpenSSH's scp: `scp [-v] [-r] [-p] [-d] -t|-f [--] PATH…`, each option alone or clustered. */
function parseScpArgs(args: readonly string[]): TransferExec {
  const flags = new Set<string>()
  let i = 0
  for (; i < args.length; i++) {
    const a = args[i] as string
    if (a === '--') {
      i++
      break
    }
    if (!a.startsWith('-') || a === '-') break
    for (const f of a.slice(1)) {
      if (!'tfrpdv'.includes(f)) return { kind: 'refused', reason: `scp option -${f} is not supported through the gateway` }
      flags.add(f)
    }
  }
  const paths = args.slice(i)
  if (flags.has('t') === flags.has('f')) return { kind: 'refused', reason: 'scp needs exactly one of -t (upload) and -f (download)' }
  const direction = flags.has('t') ? 'upload' : 'download'
  if (paths.length === 0 || (direction === 'upload' && paths.length !== 1)) {
    return { kind: 'refused', reason: direction === 'upload' ? 'scp -t takes one target path' : 'scp -f needs a path' }
  }
  for (const p of paths) {
    // The target's shell would expand these; the gateway expands nothing it did not judge.
    if (/[*?[\]{}$`\\]/.test(p)) return { kind: 'refused', reason: `scp path ${JSON.stringify(p)} has glob or expansion characters` }
    if (p === '') return { kind: 'refused', reason: 'an empty scp path' }
  }
  return {
    kind: 'scp',
    transfer: { direction, recursive: flags.has('r'), preserve: flags.has('p'), targetDirectory: flags.has('d'), paths },
  }
}

/** Canonical paths of an scp exec's named paths (`~` is the start directory). Throws PathRefused. */
export async function resolveScpPaths(t: ScpTransfer, fs: TargetFs): Promise<string[]> {
  const out: string[] = []
  for (const p of t.paths) out.push(await resolveFollow(fs, await expandHome(fs, p)))
  return out
}

export interface ScpHooks {
  readonly fs: TargetFs
  readonly sftp: SFTPWrapper
  /** Decides and records one operation (as ssh.sftp); a rejection is a refusal. */
  decide(op: SftpOperation): Promise<SftpVerdict>
}

/** The client's side of the channel: what the gateway reads from and writes to. */
export interface ScpChannel {
  on(event: 'data', f: (d: Buffer) => void): unknown
  on(event: 'end' | 'close', f: () => void): unknown
  once(event: 'drain', f: () => void): unknown
  write(b: Buffer | string): boolean
  pause(): unknown
  resume(): unknown
}

class ScpFatal extends Error {}

/** Reads the client's bytes: lines, single bytes, counted data; pauses the channel while enough is buffered. */
class ChannelReader {
  private readonly chunks: Buffer[] = []
  private buffered = 0
  private ended = false
  private waiter: (() => void) | null = null

  constructor(private readonly ch: ScpChannel) {
    ch.on('data', (d: Buffer) => {
      this.chunks.push(d)
      this.buffered += d.length
      if (this.buffered > 4 * CHUNK) ch.pause()
      this.wake()
    })
    const end = (): void => {
      this.ended = true
      this.wake()
    }
    ch.on('end', end)
    ch.on('close', end)
  }

  private wake(): void {
    const w = this.waiter
    this.waiter = null
    w?.()
  }

  private async more(): Promise<boolean> {
    if (this.chunks.length > 0) return true
    if (this.ended) return false
    this.ch.resume()
    await new Promise<void>((r) => {
      this.waiter = r
    })
    return this.chunks.length > 0
  }

  /** Up to `max` bytes (at least one), or null at the end of the stream. */
  async take(max: number): Promise<Buffer | null> {
    if (!(await this.more())) return null
    const c = this.chunks[0] as Buffer
    const piece = c.length <= max ? c : c.subarray(0, max)
    if (piece === c) this.chunks.shift()
    else this.chunks[0] = c.subarray(max)
    this.buffered -= piece.length
    if (this.buffered <= CHUNK) this.ch.resume()
    return piece
  }

  async byte(): Promise<number | null> {
    const b = await this.take(1)
    return b ? (b[0] as number) : null
  }

  /** One line without its newline, or null at the end of the stream; over the cap is fatal. */
  async line(first?: number): Promise<string | null> {
    const parts: Buffer[] = first === undefined ? [] : [Buffer.from([first])]
    let n = parts.length
    for (;;) {
      const b = await this.byte()
      if (b === null) return n === 0 ? null : Buffer.concat(parts).toString('utf8')
      if (b === 0x0a) return Buffer.concat(parts).toString('utf8')
      parts.push(Buffer.from([b]))
      if (++n > MAX_SCP_LINE) throw new ScpFatal('an scp control line over the limit')
    }
  }
}

function call<T>(f: (cb: (err: Error | undefined | null, v: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => f((err, v) => (err ? reject(err) : resolve(v))))
}

function plainName(name: string): boolean {
  return name !== '' && name !== '.' && name !== '..' && !name.includes('/') && !name.includes('\0')
}

/** The name a C or D record carries: the last component as the client spelled it (a link keeps its own name). */
function recordName(spelled: string, canon: string): string {
  const s = spelled.replace(/\/+$/, '')
  const name = s.slice(s.lastIndexOf('/') + 1)
  return plainName(name) && name !== '~' ? name : canon.slice(canon.lastIndexOf('/') + 1) || 'root'
}

function joinPath(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`
}

/**
 * Runs one scp transfer against the target's SFTP channel, as the remote scp would, with every
 * file and directory decided on its canonical path. Resolves with scp's exit status (1 when
 * anything was refused or failed).
 */
export async function runScp(t: ScpTransfer, canonical: readonly string[], ch: ScpChannel, hooks: ScpHooks): Promise<number> {
  const reader = new ChannelReader(ch)
  const run = new ScpRun(t, ch, reader, hooks)
  try {
    if (t.direction === 'upload') await run.sink(canonical[0] as string, t.paths[0] as string, true)
    else await run.source(canonical)
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err)
    if (!(err instanceof ScpFatal) || msg !== '') ch.write(`\x02gatehouse: ${msg}\n`)
    return 1
  }
  return run.errors > 0 ? 1 : 0
}

class ScpRun {
  errors = 0

  constructor(
    private readonly t: ScpTransfer,
    private readonly ch: ScpChannel,
    private readonly reader: ChannelReader,
    private readonly hooks: ScpHooks,
  ) {}

  private async send(b: Buffer | string): Promise<void> {
    if (!this.ch.write(b)) await new Promise<void>((r) => this.ch.once('drain', r))
  }

  /** A non-fatal error for the client (`\x01`): the file is skipped. */
  private async complain(msg: string): Promise<void> {
    this.errors++
    await this.send(`\x01gatehouse: ${msg.replace(/\n/g, ' ')}\n`)
  }

  private async allowed(op: SftpOperation): Promise<string | null> {
    let v: SftpVerdict
    try {
      v = await this.hooks.decide(op)
    } catch {
      return 'refused: the gateway could not decide this operation'
    }
    return v.allow ? null : v.message
  }

  private async stat(path: string): Promise<Stats | null> {
    try {
      return await call<Stats>((cb) => this.hooks.sftp.stat(path, cb))
    } catch {
      return null
    }
  }

  // ---- upload: the gateway is the sink ----

  /** scp.c sink(): acknowledges, then reads records for `dir` (canonical) until E or the end. */
  async sink(target: string, spelled: string, top: boolean): Promise<void> {
    const st = await this.stat(target)
    const isDir = st?.isDirectory() === true
    if (top && this.t.targetDirectory && !isDir) throw new ScpFatal(`${spelled}: not a directory`)
    await this.send(Buffer.from([0]))
    let times: { mtime: number; atime: number } | null = null
    for (;;) {
      const first = await this.reader.byte()
      if (first === null) {
        if (top) return
        throw new ScpFatal('the client ended inside a directory')
      }
      const line = await this.reader.line(first)
      if (line === null) return
      const kind = line[0]
      if (kind === '\x01' || kind === '\x02') {
        // The client's own error message: fatal ones end the transfer.
        if (kind === '\x02') throw new ScpFatal('')
        continue
      }
      if (kind === 'E' && line === 'E') {
        await this.send(Buffer.from([0]))
        return
      }
      if (kind === 'T') {
        const m = /^T(\d{1,20}) (\d{1,9}) (\d{1,20}) (\d{1,9})$/.exec(line)
        if (!m) throw new ScpFatal('a malformed time record')
        times = { mtime: Number(m[1]), atime: Number(m[3]) }
        await this.send(Buffer.from([0]))
        continue
      }
      const m = /^([CD])([0-7]{4}) (\d{1,19}) (.+)$/.exec(line)
      if (!m) throw new ScpFatal('expected a C, D, E or T record')
      const name = m[4] as string
      if (!plainName(name)) throw new ScpFatal(`unexpected file name ${JSON.stringify(name)}`)
      const mode = Number.parseInt(m[2] as string, 8)
      const size = Number(m[3])
      if (!Number.isSafeInteger(size)) throw new ScpFatal('a file size out of range')
      const path = isDir ? joinPath(target, name) : target
      const spelledPath = isDir ? joinPath(spelled, name) : spelled
      const t0 = times
      times = null
      if (m[1] === 'D') await this.sinkDir(path, spelledPath, mode, t0)
      else await this.sinkFile(path, spelledPath, mode, size, t0)
    }
  }

  private async sinkDir(path: string, spelled: string, mode: number, times: { mtime: number; atime: number } | null): Promise<void> {
    if (!this.t.recursive) throw new ScpFatal('received a directory without -r')
    let canon: string
    try {
      canon = await resolveFollow(this.hooks.fs, path)
    } catch (err) {
      return this.complain(`${spelled}: ${err instanceof Error ? err.message : String(err)}`)
    }
    const st = await this.stat(canon)
    if (st && !st.isDirectory()) return this.complain(`${spelled}: not a directory`)
    if (!st) {
      const no = await this.allowed({ operation: 'mkdir', path: canon, requested_path: spelled, via: 'scp' })
      if (no) return this.complain(`${spelled}: ${no}`)
      try {
        await call<void>((cb) => this.hooks.sftp.mkdir(canon, { mode: mode | 0o700 }, (e) => cb(e, undefined)))
      } catch (err) {
        return this.complain(`${spelled}: ${err instanceof Error ? err.message : String(err)}`)
      }
    }
    await this.sink(canon, spelled, false)
    if (this.t.preserve) await this.setAttrs(canon, spelled, mode, times)
  }

  private async setAttrs(path: string, spelled: string, mode: number, times: { mtime: number; atime: number } | null): Promise<void> {
    const no = await this.allowed({ operation: 'setstat', path, requested_path: spelled, via: 'scp' })
    if (no) return this.complain(`${spelled}: ${no}`)
    try {
      await call<void>((cb) =>
        this.hooks.sftp.setstat(path, { mode, ...(times ? { mtime: times.mtime, atime: times.atime } : {}) }, (e) => cb(e, undefined)),
      )
    } catch (err) {
      await this.complain(`${spelled}: ${err instanceof Error ? err.message : String(err)}`)
    }
  }

  /** Reads `size` bytes and the source's trailing status byte, passing the bytes to `each`. */
  private async receive(size: number, each: (b: Buffer, at: number) => Promise<void>): Promise<void> {
    let at = 0
    while (at < size) {
      const b = await this.reader.take(Math.min(CHUNK, size - at))
      if (!b) throw new ScpFatal('the client ended inside a file')
      await each(b, at)
      at += b.length
    }
    const status = await this.reader.byte()
    if (status !== 0) throw new ScpFatal('the client reported an error after a file')
  }

  private async sinkFile(
    path: string,
    spelled: string,
    mode: number,
    size: number,
    times: { mtime: number; atime: number } | null,
  ): Promise<void> {
    let canon: string
    try {
      canon = await resolveFollow(this.hooks.fs, path)
    } catch (err) {
      return this.complain(`${spelled}: ${err instanceof Error ? err.message : String(err)}`)
    }
    const no = await this.allowed({ operation: 'write', path: canon, mode: 'write,create,truncate', requested_path: spelled, via: 'scp' })
    if (no) return this.complain(`${spelled}: ${no}`)
    const sftp = this.hooks.sftp
    let handle: Buffer
    try {
      handle = await call<Buffer>((cb) => sftp.open(canon, 'w', { mode }, cb))
    } catch (err) {
      return this.complain(`${spelled}: ${err instanceof Error ? err.message : String(err)}`)
    }
    await this.send(Buffer.from([0]))
    let failure: string | null = null
    try {
      await this.receive(size, async (b, at) => {
        if (failure !== null) return
        try {
          await call<void>((cb) => sftp.write(handle, b, 0, b.length, at, (e) => cb(e, undefined)))
        } catch (err) {
          failure = err instanceof Error ? err.message : String(err)
        }
      })
    } finally {
      await call<void>((cb) => sftp.close(handle, (e) => cb(e, undefined))).catch(() => undefined)
    }
    if (failure !== null) return this.complain(`${spelled}: ${failure}`)
    if (this.t.preserve) await this.setAttrs(canon, spelled, mode, times)
    await this.send(Buffer.from([0]))
  }

  // ---- download: the gateway is the source ----

  /** The sink's answer to a record: null when it acknowledged, its message otherwise. */
  private async response(): Promise<string | null> {
    const b = await this.reader.byte()
    if (b === null) throw new ScpFatal('')
    if (b === 0) return null
    const msg = (await this.reader.line()) ?? ''
    if (b === 2) throw new ScpFatal('')
    this.errors++
    return msg
  }

  async source(paths: readonly string[]): Promise<void> {
    await this.response()
    for (let i = 0; i < paths.length; i++) await this.sendPath(paths[i] as string, this.t.paths[i] as string, 0)
  }

  private async sendPath(canon: string, spelled: string, depth: number): Promise<void> {
    const st = await this.stat(canon)
    if (!st) {
      // Decided first, so that whether a refused path exists is not shown.
      const no = await this.allowed({ operation: 'read', path: canon, mode: 'read', requested_path: spelled, via: 'scp' })
      return this.complain(`${spelled}: ${no ?? 'No such file or directory'}`)
    }
    if (st.isDirectory()) {
      if (!this.t.recursive) return this.complain(`${spelled}: not a regular file`)
      return this.sendDir(canon, spelled, st, depth)
    }
    const no = await this.allowed({ operation: 'read', path: canon, mode: 'read', requested_path: spelled, via: 'scp' })
    if (no) return this.complain(`${spelled}: ${no}`)
    if (!st.isFile()) return this.complain(`${spelled}: not a regular file`)
    await this.sendFile(canon, spelled, st)
  }

  private async sendTimes(st: Stats): Promise<boolean> {
    if (!this.t.preserve) return true
    await this.send(`T${st.mtime} 0 ${st.atime} 0\n`)
    return (await this.response()) === null
  }

  private async sendFile(canon: string, spelled: string, st: Stats): Promise<void> {
    const sftp = this.hooks.sftp
    let handle: Buffer
    try {
      handle = await call<Buffer>((cb) => sftp.open(canon, 'r', cb))
    } catch (err) {
      return this.complain(`${spelled}: ${err instanceof Error ? err.message : String(err)}`)
    }
    try {
      if (!(await this.sendTimes(st))) return
      const size = st.size
      const name = recordName(spelled, canon)
      await this.send(`C${(st.mode & 0o7777).toString(8).padStart(4, '0')} ${size} ${name}\n`)
      if ((await this.response()) !== null) return
      let at = 0
      const buf = Buffer.alloc(CHUNK)
      while (at < size) {
        const n = await new Promise<number>((resolve, reject) =>
          sftp.read(handle, buf, 0, Math.min(CHUNK, size - at), at, (err, got) => (err ? reject(err) : resolve(got))),
        ).catch(() => 0)
        if (n <= 0) {
          // The file shrank or could not be read: pad as scp does, then report the error.
          await this.send(Buffer.alloc(size - at))
          await this.complain(`${spelled}: read error`)
          await this.response()
          return
        }
        await this.send(Buffer.from(buf.subarray(0, n)))
        at += n
      }
      await this.send(Buffer.from([0]))
      await this.response()
    } finally {
      await call<void>((cb) => sftp.close(handle, (e) => cb(e, undefined))).catch(() => undefined)
    }
  }

  private async sendDir(canon: string, spelled: string, st: Stats, depth: number): Promise<void> {
    if (depth >= MAX_SCP_DEPTH) return this.complain(`${spelled}: directory tree deeper than ${MAX_SCP_DEPTH}`)
    const no = await this.allowed({ operation: 'readdir', path: canon, requested_path: spelled, via: 'scp' })
    if (no) return this.complain(`${spelled}: ${no}`)
    let entries: { filename: string }[]
    try {
      entries = await call((cb) => this.hooks.sftp.readdir(canon, cb))
    } catch (err) {
      return this.complain(`${spelled}: ${err instanceof Error ? err.message : String(err)}`)
    }
    if (!(await this.sendTimes(st))) return
    const name = recordName(spelled, canon)
    await this.send(`D${(st.mode & 0o7777).toString(8).padStart(4, '0')} 0 ${name}\n`)
    if ((await this.response()) !== null) return
    for (const e of entries) {
      if (!plainName(e.filename)) continue
      // Each entry is resolved again: a link inside the tree is judged where it points.
      const child = joinPath(canon, e.filename)
      let c: string
      try {
        c = await resolveFollow(this.hooks.fs, child)
      } catch (err) {
        await this.complain(`${joinPath(spelled, e.filename)}: ${err instanceof PathRefused ? err.message : String(err)}`)
        continue
      }
      await this.sendPath(c, joinPath(spelled, e.filename), depth + 1)
    }
    await this.send('E\n')
    await this.response()
  }
}
