// The file-transfer corpus over raw SFTP (the fixture is test/helpers/ssh-files.ts): an agent whose
// policy allows reading and writing only under one directory sends SFTP requests the stock clients
// never send to read or write elsewhere — path tricks (symlinks, `..`, relative paths), renames,
// links, setstat, handles and request ids, open flags and attributes. Each attempt checks the
// target's filesystem itself: nothing outside the allowed directory changed, nothing secret came
// back; and the allowed requests have the right effect. The stock clients, scp and transfer
// programs run as an exec are in ssh-files-clients.test.ts.

import assert from 'node:assert/strict'
import { existsSync, lstatSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs'
import { homedir } from 'node:os'
import { join, relative } from 'node:path'
import { describe, test } from 'node:test'
import {
  A,
  ATTR_NONE,
  allowed,
  attempt,
  attrMode,
  DENIED,
  gw,
  handleOf,
  OK,
  RawSftp,
  type Reply,
  replyText,
  secret,
  sstr,
  statusCode,
  statusText,
  u32,
  useFilesLab,
} from './helpers/ssh-files.js'

useFilesLab()

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
})
