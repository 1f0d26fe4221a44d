// Canonical paths for file operations: the target itself says what a path names (SFTP REALPATH on
// a channel of the gateway's own), so policy decides on the file that will be touched and the
// canonical path is what goes upstream. Nothing here models the target's filesystem.
//
// Operations that follow a final symlink (open, stat, setstat, opendir) are resolved whole: the
// target's realpath follows every link, `..` and relative spelling (relative to the session's start
// directory, the account's home, which the gateway's channel shares with the caller's). Operations
// that act on the final name itself (remove, rmdir, lstat, readlink, mkdir, a rename's two names,
// a link's new name) resolve the parent and append the final component, which must be a plain name.
//
// What remains (documented in docs/ssh.md): between the target's REALPATH and the operation, a
// directory on the canonical path could be replaced by a symlink through another channel. Within
// SFTP and scp the gateway judges every way of making such a link (symlink, rename or hard link of
// a link, each judged as a link to where it points), so the residue needs a link pointing out of
// the allowed tree that already exists there, or an exec that policy allows to make one.

import type { SFTPWrapper, Stats } from 'ssh2'

/** Longest path accepted (Linux PATH_MAX). */
export const MAX_PATH_BYTES = 4096
const FX_NO_SUCH_FILE = 2

/** What the target reports about a name without following it. */
export type PathKind = 'missing' | 'symlink' | 'directory' | 'file' | 'other'

/** The target's own answers, asked on the gateway's SFTP channel. */
export interface TargetFs {
  /** The canonical path, or null when the target reports no such file (a missing parent, a dangling link). */
  realpath(path: string): Promise<string | null>
  lstat(path: string): Promise<PathKind>
}

/** A path that cannot be resolved or is not allowed as spelled; `code` is the SSH_FX status to answer. */
export class PathRefused extends Error {
  constructor(
    message: string,
    readonly code: number = 3,
  ) {
    super(message)
  }
}

/** Refuses spellings the target would read differently from the gateway (NUL ends a C string). */
export function checkSpelling(path: string): void {
  if (path.includes('\0')) throw new PathRefused('a path containing a NUL byte')
  if (Buffer.byteLength(path) > MAX_PATH_BYTES) throw new PathRefused(`a path over ${MAX_PATH_BYTES} bytes`)
}

/** Resolves a path whose final symlink is followed; a missing final component is allowed (the target's realpath allows it). */
export async function resolveFollow(fs: TargetFs, path: string): Promise<string> {
  checkSpelling(path)
  const r = await fs.realpath(path)
  if (r === null) throw new PathRefused('no such file (a missing directory or a dangling link)', FX_NO_SUCH_FILE)
  if (!r.startsWith('/')) throw new PathRefused('the target did not give an absolute path')
  return r
}

/** Splits off the final component, trailing slashes dropped: `a/b//` → [`a`, `b`]; `b` → [`.`, `b`]. */
export function splitLast(path: string): { dir: string; name: string } {
  const p = path.replace(/\/+$/, '')
  if (p === '') return { dir: '/', name: path === '' ? '' : '.' }
  const i = p.lastIndexOf('/')
  if (i < 0) return { dir: '.', name: p }
  return { dir: p.slice(0, i) === '' ? '/' : p.slice(0, i), name: p.slice(i + 1) }
}

function join(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`
}

/**
 * Resolves a path whose final component is acted on itself. `create`: the name is made (mkdir, the
 * new name of a rename or link), so it must be a plain name; otherwise `.`/`..` or a root resolve
 * as a directory (following is the same thing there).
 */
export async function resolveNoFollow(fs: TargetFs, path: string, create: boolean): Promise<string> {
  checkSpelling(path)
  const { dir, name } = splitLast(path)
  if (name === '' || name === '.' || name === '..') {
    if (create) throw new PathRefused('a new name must be a plain file name (not ".", ".." or a directory)')
    return resolveFollow(fs, path)
  }
  return join(await resolveFollow(fs, dir), name)
}

/** Where a symlink whose text is `text`, made at canonical `linkPath`, points (relative text from the link's directory). */
export async function resolveLinkText(fs: TargetFs, linkPath: string, text: string): Promise<string> {
  if (text === '') throw new PathRefused('an empty link target')
  return resolveFollow(fs, text.startsWith('/') ? text : join(splitLast(linkPath).dir, text))
}

/** `~` and `~/x` (expand-path@openssh.com, scp's remote paths) mean the start directory; `~user` is refused. */
export async function expandHome(fs: TargetFs, path: string): Promise<string> {
  if (path === '~' || path.startsWith('~/')) return `${await resolveFollow(fs, '.')}${path.slice(1)}`
  if (path.startsWith('~')) throw new PathRefused("another user's home directory (~user)")
  return path
}

/** A TargetFs on an SFTP channel the gateway opened to the target (ssh2 client). */
export function sftpTargetFs(sftp: SFTPWrapper): TargetFs {
  const noSuch = (err: unknown): boolean =>
    typeof err === 'object' && err !== null && 'code' in err && (err as { code: unknown }).code === FX_NO_SUCH_FILE
  return {
    realpath: (path) =>
      new Promise((resolve, reject) => {
        sftp.realpath(path, (err, abs) => {
          if (!err) resolve(abs)
          else if (noSuch(err)) resolve(null)
          else reject(err)
        })
      }),
    lstat: (path) =>
      new Promise((resolve, reject) => {
        sftp.lstat(path, (err: Error | undefined, st: Stats) => {
          if (!err) resolve(st.isSymbolicLink() ? 'symlink' : st.isDirectory() ? 'directory' : st.isFile() ? 'file' : 'other')
          else if (noSuch(err)) resolve('missing')
          else reject(err)
        })
      }),
  }
}
