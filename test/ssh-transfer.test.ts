// Table tests for the pieces of file transfer that need no server: which execs are transfer
// programs and what the gateway does with them, and how paths are split and resolved against a
// target's answers (a fake target here; the corpus in ssh-files-*.test.ts asks a real sshd).

import assert from 'node:assert/strict'
import { posix } from 'node:path'
import { describe, test } from 'node:test'
import { analyzeExec } from '../proxies/ssh/command.js'
import { classifyTransferExec } from '../proxies/ssh/scp.js'
import {
  expandHome,
  PathRefused,
  resolveFollow,
  resolveLinkText,
  resolveNoFollow,
  splitLast,
  type TargetFs,
} from '../proxies/ssh/sftp-paths.js'

describe('transfer programs under exec', () => {
  const cases: [string, string][] = [
    ['/usr/lib/openssh/sftp-server', 'sftp-server'],
    ['internal-sftp', 'sftp-server'],
    ['sftp-server', 'sftp-server'],
    ['/usr/lib/openssh/sftp-server -d /', 'refused'],
    ['/usr/lib/openssh/sftp-server -e', 'refused'],
    ['timeout 5 /usr/lib/openssh/sftp-server', 'refused'],
    ['env sftp-server', 'refused'],
    ['rsync --server -vlogDtpre.iLsfxC . /tmp/x', 'refused'],
    ['scp -t /tmp/x', 'scp'],
    ['scp -r -p -d -t -- /tmp/x', 'scp'],
    ['scp -v -f /tmp/a /tmp/b', 'scp'],
    ['/usr/bin/scp -prf /tmp/a', 'scp'],
    ['scp -t /tmp/a /tmp/b', 'refused'],
    ['scp -t -f /tmp/a', 'refused'],
    ['scp /tmp/a', 'refused'],
    ['scp -S /bin/sh -f /tmp/a', 'refused'],
    ['scp -o ProxyCommand=x -f /tmp/a', 'refused'],
    ['scp -f /tmp/*', 'refused'],
    ['scp -f /tmp/a?', 'refused'],
    ['scp -f /tmp/{a,b}', 'refused'],
    ['scp -f "$HOME"/x', 'refused'],
    ['echo x; scp -f /tmp/a', 'refused'],
    ['ls | scp -t /tmp', 'refused'],
    ["sh -c 'scp -f /etc/shadow'", 'refused'],
    ['cat /tmp/scp.txt', 'none'],
    ['ls -l', 'none'],
  ]
  for (const [line, want] of cases) {
    test(`${line} → ${want}`, () => {
      const t = classifyTransferExec(analyzeExec(line))
      assert.equal(t === null ? 'none' : t.kind, want)
    })
  }

  test('scp arguments are read exactly', () => {
    const t = classifyTransferExec(analyzeExec('scp -r -p -f -- /tmp/a /tmp/-b'))
    assert.ok(t?.kind === 'scp')
    assert.deepEqual(t.transfer, {
      direction: 'download',
      recursive: true,
      preserve: true,
      targetDirectory: false,
      paths: ['/tmp/a', '/tmp/-b'],
    })
  })
})

/** A target with /home/u, /data (a directory), /data/out → /etc, /data/dangling → /nope/x. */
const links: Record<string, string> = { '/data/out': '/etc', '/data/dangling': '/nope/x' }
const dirs = new Set(['/', '/home', '/home/u', '/data', '/etc'])
function resolveOn(path: string): string | null {
  const parts = posix.resolve('/home/u', path).split('/').filter(Boolean)
  let cur = '/'
  for (let i = 0; i < parts.length; i++) {
    const next = posix.join(cur, parts[i] as string)
    const l = links[next]
    if (l !== undefined) {
      const r = resolveOn(posix.join(l, ...parts.slice(i + 1)))
      return r
    }
    if (!dirs.has(next) && i < parts.length - 1) return null
    cur = next
  }
  return cur
}
const fakeFs: TargetFs = {
  realpath: async (p) => {
    const r = resolveOn(p)
    // Like OpenSSH: a missing final component is allowed, a dangling final link is not.
    return r !== null && !r.startsWith('/nope') ? r : null
  },
  lstat: async (p) => (links[p] !== undefined ? 'symlink' : dirs.has(p) ? 'directory' : 'missing'),
}

describe('canonical paths', () => {
  test('splitLast', () => {
    assert.deepEqual(splitLast('a/b//'), { dir: 'a', name: 'b' })
    assert.deepEqual(splitLast('b'), { dir: '.', name: 'b' })
    assert.deepEqual(splitLast('/b'), { dir: '/', name: 'b' })
    assert.deepEqual(splitLast('/'), { dir: '/', name: '.' })
    assert.deepEqual(splitLast(''), { dir: '/', name: '' })
  })

  test('follow: links, .., relative paths; unresolvable is no such file', async () => {
    assert.equal(await resolveFollow(fakeFs, '/data/out/passwd'), '/etc/passwd')
    assert.equal(await resolveFollow(fakeFs, '/data/../data//x'), '/data/x')
    assert.equal(await resolveFollow(fakeFs, 'f.txt'), '/home/u/f.txt')
    await assert.rejects(resolveFollow(fakeFs, '/data/dangling'), (e: unknown) => e instanceof PathRefused && e.code === 2)
    await assert.rejects(resolveFollow(fakeFs, '/data/x\0/../../etc'), PathRefused)
  })

  test('no-follow: the parent is resolved and the name kept; new names must be plain', async () => {
    assert.equal(await resolveNoFollow(fakeFs, '/data/out', true), '/data/out')
    assert.equal(await resolveNoFollow(fakeFs, '/data/out/', false), '/data/out')
    assert.equal(await resolveNoFollow(fakeFs, '/data/out/shadow', true), '/etc/shadow')
    assert.equal(await resolveNoFollow(fakeFs, '/data/..', false), '/')
    await assert.rejects(resolveNoFollow(fakeFs, '/data/..', true), PathRefused)
    await assert.rejects(resolveNoFollow(fakeFs, '/data/.', true), PathRefused)
  })

  test('link text is resolved from the link directory; ~ is the start directory', async () => {
    assert.equal(await resolveLinkText(fakeFs, '/data/l', '../etc/passwd'), '/etc/passwd')
    assert.equal(await resolveLinkText(fakeFs, '/data/l', 'out/x'), '/etc/x')
    await assert.rejects(resolveLinkText(fakeFs, '/data/l', ''), PathRefused)
    assert.equal(await expandHome(fakeFs, '~/x'), '/home/u/x')
    assert.equal(await expandHome(fakeFs, '~'), '/home/u')
    await assert.rejects(expandHome(fakeFs, '~root/x'), PathRefused)
  })
})
