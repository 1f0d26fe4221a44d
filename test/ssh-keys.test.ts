// Public-key login to the SSH proxy: keys registered to principals with `gatehouse ssh add-key`,
// used by the real ssh client, with the same chain and audit as a token login; unregistered,
// removed and forged keys are refused.

import assert from 'node:assert/strict'
import { type SpawnSyncReturns, spawn, spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import ssh2 from 'ssh2'
import { REPO, TestGateway } from './helpers/gateway.js'
import { TestSshd } from './helpers/sshd.js'

let sshd: TestSshd
let gw: TestGateway
let sshPort = 0

function keygen(name: string): string {
  const path = join(gw.dir, name)
  const r = spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', name, '-f', path], { encoding: 'utf8' })
  assert.equal(r.status, 0, r.stderr)
  return path
}

function fingerprint(path: string): string {
  const r = spawnSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${path}.pub`], { encoding: 'utf8' })
  return r.stdout.split(' ')[1] ?? ''
}

/** The real ssh client logging in with `key` only (no password, no agent). */
function sshWithKey(key: string, args: readonly string[]): SpawnSyncReturns<string> {
  // The bound only ends a hang: beside other test files on two cores a login took tens of seconds.
  return spawnSync('ssh', [...keyOpts(key), '-p', String(sshPort), ...args], { encoding: 'utf8', timeout: 120_000, input: '' })
}

function keyOpts(key: string): string[] {
  return [
    '-F',
    '/dev/null',
    '-i',
    key,
    '-o',
    'IdentitiesOnly=yes',
    '-o',
    'IdentityAgent=none',
    '-o',
    'PreferredAuthentications=publickey',
    '-o',
    'PasswordAuthentication=no',
    '-o',
    'BatchMode=yes',
    '-o',
    'StrictHostKeyChecking=no',
    '-o',
    'UserKnownHostsFile=/dev/null',
    '-o',
    'LogLevel=ERROR',
  ]
}

before(async () => {
  sshd = await TestSshd.start()
  gw = await TestGateway.start({
    connections: [sshd.connection('web-1')],
    config: {
      listen: { api: '127.0.0.1:0', postgres: '127.0.0.1:0', ssh: '127.0.0.1:0' },
      policies: join(REPO, 'test/data/ssh'),
    },
  })
  sshPort = gw.port('ssh')
})

after(async () => {
  await gw?.cleanup()
  await sshd?.stop()
})

describe('ssh public-key login', () => {
  test('a registered key logs in as its principal, with the same chain and audit as a token login', () => {
    const key = keygen('carol')
    const add = gw.cli(['ssh', 'add-key', 'user:carol', `${key}.pub`, '--group', 'ops', '--json'])
    assert.equal(add.code, 0, add.stderr)
    const row = JSON.parse(add.stdout) as { id: string; fingerprint: string; principal: string; groups: string[] }
    assert.equal(row.principal, 'user:carol')
    assert.equal(row.fingerprint, fingerprint(key))
    assert.deepEqual(row.groups, ['ops'])
    const r = sshWithKey(key, ['web-1@127.0.0.1', 'echo by-key'])
    assert.equal(r.stdout, 'by-key\n', r.stderr)
    const ev = gw.auditEvents()
    const st = ev.find((e) => e.type === 'statement' && e.command === 'echo by-key')
    assert.ok(st, 'the exec is audited')
    assert.deepEqual(st.chain, ['user:carol'])
    assert.equal(st.decision, 'allow')
    const start = ev.find((e) => e.type === 'session.start' && e.session === st.session)
    assert.ok(start, 'session.start recorded')
    assert.deepEqual(start.chain, ['user:carol'])
    // Listed, by principal too.
    const list = gw.cli(['ssh', 'list-keys', 'user:carol', '--json'])
    assert.equal(list.code, 0, list.stderr)
    const rows = list.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { id: string; revoked: boolean })
    assert.deepEqual(
      rows.map((x) => [x.id, x.revoked]),
      [[row.id, false]],
    )
    assert.equal(gw.cli(['ssh', 'list-keys', 'user:nobody', '--json']).stdout, '')
  })

  test('an unregistered key is refused before anything reaches the target', () => {
    const key = keygen('stranger')
    const before = sshd.connectionCount()
    const r = sshWithKey(key, ['web-1@127.0.0.1', 'echo should-not-run'])
    assert.equal(r.status, 255)
    assert.match(r.stderr, /Permission denied/)
    assert.doesNotMatch(r.stdout, /should-not-run/)
    assert.equal(sshd.connectionCount(), before)
    const refused = gw.auditEvents().filter((e) => e.type === 'session.refused')
    assert.ok(refused.length > 0, 'the refusal is audited')
  })

  test('a key registered to another principal gives that principal only, and cannot be registered twice', () => {
    const key = keygen('dave')
    // dave's key may only reach a connection that does not exist here: it never gets carol's rights.
    assert.equal(gw.cli(['ssh', 'add-key', 'user:dave', `${key}.pub`, '--scope', 'connection:web-2']).code, 0)
    const r = sshWithKey(key, ['web-1@127.0.0.1', 'echo as-dave'])
    assert.equal(r.status, 255)
    assert.doesNotMatch(r.stdout, /as-dave/)
    const refused = gw.auditEvents().filter((e) => e.type === 'session.refused' && Array.isArray(e.chain) && e.chain[0] === 'user:dave')
    assert.ok(refused.length > 0, 'refused as user:dave, outside its scope')
    // The same key cannot be registered to someone else as well.
    const again = gw.cli(['ssh', 'add-key', 'user:carol', `${key}.pub`])
    assert.equal(again.code, 1)
    assert.match(again.stderr, /already registered \(to user:dave/)
  })

  test('bad input: a private key is never sent, agents get no keys, garbage is refused', () => {
    const key = keygen('oops')
    const priv = gw.cli(['ssh', 'add-key', 'user:erin', key])
    assert.equal(priv.code, 1)
    assert.match(priv.stderr, /this is a private key/)
    const agent = gw.cli(['ssh', 'add-key', 'agent:bot', `${key}.pub`])
    assert.equal(agent.code, 1)
    assert.match(agent.stderr, /agents act through delegated tokens/)
    const bogus = join(gw.dir, 'bogus.pub')
    spawnSync('sh', ['-c', `echo 'ssh-ed25519 AAAAnotakey x' > ${bogus}`])
    const b = gw.cli(['ssh', 'add-key', 'user:erin', bogus])
    assert.equal(b.code, 1)
    assert.match(b.stderr, /gatehouse: /)
  })

  test('a signature by another key over a registered public key is refused', async () => {
    // The attacker knows carol's public key (it is public) but signs with their own private key.
    const carol = ssh2.utils.parseKey(readFileSync(join(gw.dir, 'carol.pub'), 'utf8'))
    const mallory = ssh2.utils.parseKey(readFileSync(keygen('mallory'), 'utf8'))
    assert.ok(!(carol instanceof Error) && !(mallory instanceof Error))
    const pub = Array.isArray(carol) ? carol[0] : carol
    const priv = Array.isArray(mallory) ? mallory[0] : mallory
    assert.ok(pub && priv)
    const forged = Object.create(priv) as typeof priv
    Object.assign(forged, { getPublicSSH: () => pub.getPublicSSH() })
    const client = new ssh2.Client()
    const outcome = await new Promise<string>((resolve) => {
      client.on('ready', () => resolve('logged in'))
      client.on('error', (err: Error) => resolve(err.message))
      client.connect({
        host: '127.0.0.1',
        port: sshPort,
        username: 'web-1',
        authHandler: [{ type: 'publickey', username: 'web-1', key: forged }] as never,
      })
    })
    client.end()
    assert.match(outcome, /authentication methods failed/)
  })

  test('removing a key ends the session it opened within one second, and refuses it afterwards', async () => {
    const key = keygen('frank')
    const add = gw.cli(['ssh', 'add-key', 'service:frank', `${key}.pub`, '--json'])
    assert.equal(add.code, 0, add.stderr)
    const id = (JSON.parse(add.stdout) as { id: string }).id
    const p = spawn('ssh', [...keyOpts(key), '-p', String(sshPort), 'web-1@127.0.0.1', 'echo started; sleep 30'])
    const exited = new Promise<number>((resolve) => p.on('close', () => resolve(Date.now())))
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('the command did not start')), 120_000)
      p.stdout.on('data', (d: Buffer) => {
        if (d.toString().includes('started')) {
          clearTimeout(t)
          resolve()
        }
      })
    })
    const rm = gw.cli(['ssh', 'remove-key', id])
    const removed = Date.now()
    assert.equal(rm.code, 0, rm.stderr)
    assert.match(rm.stdout, /1 session ended/)
    const end = await exited
    // The gateway ends the session within a second of the removal (its audit's clock); the client,
    // which a loaded machine may schedule late, has gone by the time it is looked for.
    const ms = gw.revocationToEnd(id, 'echo started; sleep 30')
    assert.ok(ms >= 0 && ms < 1000, `session ended ${ms} ms after the removal`)
    assert.ok(end - removed < 10_000, `the client exited ${end - removed} ms after the removal`)
    const r = sshWithKey(key, ['web-1@127.0.0.1', 'echo after-removal'])
    assert.equal(r.status, 255)
    assert.doesNotMatch(r.stdout, /after-removal/)
  })

  test('with no server running, the commands work on the data directory, and the server honours them', async () => {
    const key = keygen('gina')
    await gw.stop()
    const add = gw.cli(['ssh', 'add-key', 'user:gina', `${key}.pub`, '--json'])
    assert.equal(add.code, 0, add.stderr)
    const id = (JSON.parse(add.stdout) as { id: string }).id
    const list = gw.cli(['ssh', 'list-keys', 'user:gina', '--json'])
    assert.equal((JSON.parse(list.stdout) as { id: string }).id, id)
    await gw.launch()
    sshPort = gw.port('ssh')
    const r = sshWithKey(key, ['web-1@127.0.0.1', 'echo offline-added'])
    assert.equal(r.stdout, 'offline-added\n', r.stderr)
  })

  test('host-key prints the gateway key as a known_hosts line that ssh accepts', () => {
    const r = gw.cli(['ssh', 'host-key'])
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, new RegExp(`^\\[127\\.0\\.0\\.1\\]:${sshPort} ssh-ed25519 AAAA`))
    const known = join(gw.dir, 'known_hosts')
    spawnSync('sh', ['-c', `cat > ${known}`], { input: r.stdout })
    const key = join(gw.dir, 'carol')
    const opts = keyOpts(key).map((o) =>
      o === 'StrictHostKeyChecking=no'
        ? 'StrictHostKeyChecking=yes'
        : o === 'UserKnownHostsFile=/dev/null'
          ? `UserKnownHostsFile=${known}`
          : o,
    )
    const s = spawnSync('ssh', [...opts, '-p', String(sshPort), 'web-1@127.0.0.1', 'echo pinned'], { encoding: 'utf8', timeout: 120_000 })
    assert.equal(s.stdout, 'pinned\n', s.stderr)
  })
})
