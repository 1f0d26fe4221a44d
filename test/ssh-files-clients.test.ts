// The file-transfer corpus through the real clients and execs (the fixture is
// test/helpers/ssh-files.ts): an agent whose policy allows reading and writing only under one
// directory tries to read or write elsewhere with the stock `sftp` client (also `sftp -s`), legacy
// scp in both directions (the real `scp -O` client and the raw protocol), scp over SFTP, and the
// SFTP server or other transfer programs run as an exec. Each attempt checks the target's
// filesystem itself: nothing outside the allowed directory changed, nothing secret came back; and
// the allowed transfers arrive with the right content. The audit names every path touched. Raw
// SFTP requests are in ssh-files-sftp.test.ts.

import assert from 'node:assert/strict'
import { existsSync, lstatSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { join, relative } from 'node:path'
import { describe, test } from 'node:test'
import {
  A,
  allowed,
  at,
  attempt,
  client3,
  DENIED,
  gw,
  local,
  OK,
  RawSftp,
  rawExec,
  resetTree,
  secret,
  sftpBatch,
  useFilesLab,
} from './helpers/ssh-files.js'

useFilesLab()

describe('file transfer: an agent allowed one directory', () => {
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
