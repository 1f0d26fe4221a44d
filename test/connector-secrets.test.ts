// Connector-held secrets: a PostgreSQL connection reached through a connector names its password
// `connector:env:NAME` (an SSH connection its key `connector:file:PATH`, which the connector signs
// the login with); the connector (started with `--secret connection=env:NAME` and the
// variable in its own environment only) answers the SCRAM-SHA-256 and md5 exchanges with proofs,
// and the gateway, which still identifies the caller and decides everything, never holds the
// password: not in its environment, memory, log, audit or data directory. A connector without the
// secret, or one asked for a connection it holds no secret for, fails the session closed with a
// clear error; a server asking for a cleartext password gets nothing.

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import pino from 'pino'
import { HeldSecrets, isUserauthRequestFor, parseHeldSecret, ProofRefused } from '../cli/connector-secrets.js'
import { ConnectorLab } from './helpers/connector.js'
import { psql } from './helpers/gateway.js'
import { sshClientSetup, TestSshd } from './helpers/sshd.js'

const lab = new ConnectorLab()
const SCRAM_PW = `scram-${randomBytes(12).toString('hex')}`
const MD5_PW = `md5pw-${randomBytes(12).toString('hex')}`
const PLAIN_PW = `plain-${randomBytes(12).toString('hex')}`
let alice = ''
let key = ''
let sshd: TestSshd | undefined
let policyDir = ''

const POLICY = `package gatehouse

default allow := false

allow if input.action in {"connect", "sql.session", "sql.read", "ssh.exec"}
`

const HBA = [
  'host all vault 0.0.0.0/0 scram-sha-256',
  'host all vaultmd5 0.0.0.0/0 md5',
  'host all vaultplain 0.0.0.0/0 password',
  '',
].join('\n')

function held(name: string, role: string, ref: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name,
    protocol: 'postgres',
    address: `${lab.net.privateAddress}:5432`,
    database: 'postgres',
    user: role,
    password: `connector:${ref}`,
    via: 'edge-1',
    ...extra,
  }
}

before(async () => {
  try {
    lab.setUpNetwork(HBA)
    lab.net.privateSql(`CREATE ROLE vault LOGIN PASSWORD '${SCRAM_PW}'`)
    lab.net.privateSql(`SET password_encryption = 'md5'; CREATE ROLE vaultmd5 LOGIN PASSWORD '${MD5_PW}'`)
    lab.net.privateSql(`CREATE ROLE vaultplain LOGIN PASSWORD '${PLAIN_PW}'`)
    sshd = await TestSshd.start({ netns: lab.net.privateNs, host: lab.net.privateAddress })
    policyDir = mkdtempSync(join(tmpdir(), 'gh-connector-secrets-policy-'))
    writeFileSync(join(policyDir, 'policy.rego'), POLICY)
    const keyRef = `file:${sshd.clientKeyPath}`
    await lab.startGateway(
      [
        held('billing', 'vault', 'env:BILLING_PW'),
        held('legacy', 'vaultmd5', 'env:LEGACY_PW', { auth: 'md5' }),
        held('plain', 'vaultplain', 'env:PLAIN_PW', { auth: 'password' }),
        // The connector keeps no secret for this one.
        held('unheld', 'vault', 'env:BILLING_PW'),
        // The connector keeps this connection's secret under another reference.
        held('renamed', 'vault', 'env:OTHER_PW'),
        // The connector keeps it, but its variable is not set there.
        held('unset', 'vault', 'env:UNSET_PW'),
        // SSH: the login key stays with the connector, which signs the login.
        sshd.connection('box', { via: 'edge-1', private_key: `connector:${keyRef}` }),
        sshd.connection('box-unheld', { via: 'edge-1', private_key: `connector:${keyRef}` }),
      ],
      { listen: { ssh: '127.0.0.1:0' }, policies: policyDir },
    )
    alice = lab.gateway.token('user:alice')
    ;({ key } = await lab.createKey('edge-1'))
    lab.startConnector(
      key,
      [
        '--secret',
        'billing=env:BILLING_PW',
        'legacy=env:LEGACY_PW,user=vaultmd5,md5',
        'plain=env:PLAIN_PW',
        'renamed=env:BILLING_PW',
        'unset=env:UNSET_PW',
        `box=${keyRef},user=${sshd?.user}`,
      ],
      '--token-file',
      { BILLING_PW: SCRAM_PW, LEGACY_PW: MD5_PW, PLAIN_PW },
    )
    await lab.attached(1)
  } catch (err) {
    await lab.cleanup()
    await sshd?.stop()
    throw err
  }
})

after(async () => {
  await lab.cleanup()
  await sshd?.stop()
  if (policyDir) rmSync(policyDir, { recursive: true, force: true })
})

function ssh(connection: string, command: string): { status: number | null; stdout: string; stderr: string } {
  const c = sshClientSetup(lab.gateway.dir, alice)
  return spawnSync('ssh', [...c.opts, '-p', String(lab.gateway.port('ssh')), `${connection}@127.0.0.1`, command], {
    encoding: 'utf8',
    env: { ...process.env, ...c.env },
    input: '',
    timeout: 120_000,
  })
}

/** Every file under `dir`, read whole. */
function filesUnder(dir: string): { path: string; data: Buffer }[] {
  const out: { path: string; data: Buffer }[] = []
  for (const name of readdirSync(dir)) {
    const p = join(dir, name)
    const st = statSync(p)
    if (st.isDirectory()) out.push(...filesUnder(p))
    else if (st.isFile()) out.push({ path: p, data: readFileSync(p) })
  }
  return out
}

/** Whether any readable mapping of process `pid` holds `needle` (read through /proc/PID/mem). */
function memoryHolds(pid: number, needle: Buffer): boolean {
  const maps = readFileSync(`/proc/${pid}/maps`, 'utf8')
  const fd = openSync(`/proc/${pid}/mem`, 'r')
  const CHUNK = 8 * 1024 * 1024
  const buf = Buffer.allocUnsafe(CHUNK + needle.length)
  try {
    for (const line of maps.split('\n')) {
      const m = /^([0-9a-f]+)-([0-9a-f]+) r/.exec(line)
      if (!m || line.endsWith('[vvar]') || line.endsWith('[vsyscall]')) continue
      const start = Number.parseInt(m[1] as string, 16)
      const end = Number.parseInt(m[2] as string, 16)
      for (let at = start; at < end; at += CHUNK) {
        const len = Math.min(CHUNK + needle.length, end - at)
        let n = 0
        try {
          n = readSync(fd, buf, 0, len, at)
        } catch {
          break // a mapping that cannot be read (guard pages)
        }
        if (buf.subarray(0, n).includes(needle)) return true
      }
    }
  } finally {
    closeSync(fd)
  }
  return false
}

describe('connector-held PostgreSQL passwords', () => {
  test('psql logs in with SCRAM-SHA-256 through the connector, which holds the password', () => {
    const r = psql(lab.gateway.conninfo(alice, 'billing'), 'select current_user')
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stdout.trim(), 'vault')
    // The server did check a password: the same role without one is refused directly.
    const direct = lab.net.privateSql("select rolpassword like 'SCRAM-SHA-256$%' from pg_authid where rolname = 'vault'")
    assert.equal(direct, 't')
  })

  test('md5 is answered by the connector too', () => {
    const r = psql(lab.gateway.conninfo(alice, 'legacy'), 'select current_user')
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stdout.trim(), 'vaultmd5')
  })

  test("the gateway still requires the caller's token and decides", () => {
    const r = psql(lab.gateway.conninfo(`${alice.slice(0, -4)}AAAA`, 'billing'), 'select 1')
    assert.notEqual(r.code, 0)
    assert.doesNotMatch(r.stdout, /^1$/m)
  })

  test('a server asking for a cleartext password gets nothing: the session fails closed', () => {
    const r = psql(lab.gateway.conninfo(alice, 'plain'), 'select 1')
    assert.notEqual(r.code, 0)
    assert.match(r.stderr, /cleartext password, which a connector-held password never answers/)
  })

  test('a connector that keeps no secret for the connection fails it closed, saying so', () => {
    const r = psql(lab.gateway.conninfo(alice, 'unheld'), 'select 1')
    assert.notEqual(r.code, 0)
    assert.match(r.stderr, /connector edge-1 cannot authenticate connection unheld: this connector holds no secret for connection unheld/)
  })

  test('a connector refuses a reference other than the one it keeps for the connection', () => {
    const r = psql(lab.gateway.conninfo(alice, 'renamed'), 'select 1')
    assert.notEqual(r.code, 0)
    assert.match(r.stderr, /holds connection renamed's secret as env:BILLING_PW, not env:OTHER_PW/)
  })

  test('a connector whose variable is not set fails closed, naming the reference only', () => {
    const r = psql(lab.gateway.conninfo(alice, 'unset'), 'select 1')
    assert.notEqual(r.code, 0)
    assert.match(r.stderr, /secret env:UNSET_PW is not set/)
  })

  test('ssh logs in to the private host with the key the connector keeps, which signs the login', () => {
    const r = ssh('box', 'echo signed-by-the-connector')
    assert.equal(r.status, 0, r.stderr)
    assert.equal(r.stdout, 'signed-by-the-connector\n')
  })

  test('an SSH connection whose key the connector does not keep fails closed, saying so', () => {
    const r = ssh('box-unheld', 'echo should-not-run')
    assert.equal(r.status, 255)
    assert.doesNotMatch(r.stdout, /should-not-run/)
    assert.match(
      r.stderr,
      /cannot log in to box-unheld: connector edge-1 cannot authenticate connection box-unheld: this connector holds no secret for connection box-unheld/,
    )
  })

  test('the gateway never holds the private key: not in its memory, log or data', () => {
    const pid = lab.gateway.proc?.pid
    assert.ok(pid !== undefined && sshd !== undefined)
    const body = readFileSync(sshd.clientKeyPath, 'utf8')
      .split('\n')
      .filter((l) => l.length > 0 && !l.startsWith('-----'))
      .join('')
    // A stretch of the encoded private part (past the public key the blob starts with).
    const chunk = body.slice(Math.floor(body.length / 2), Math.floor(body.length / 2) + 48)
    assert.ok(!lab.gateway.stderr.includes(chunk), 'in the log')
    for (const f of filesUnder(lab.gateway.dataDir)) assert.ok(!f.data.includes(Buffer.from(chunk)), `in ${f.path}`)
    assert.equal(memoryHolds(pid, Buffer.from(chunk)), false, 'in the memory of the gateway process')
  })

  test('the gateway never holds the password: not in its environment, memory, log, audit or data', async () => {
    const pid = lab.gateway.proc?.pid
    assert.ok(pid !== undefined)
    for (const pw of [SCRAM_PW, MD5_PW, PLAIN_PW]) {
      const needle = Buffer.from(pw)
      assert.ok(!readFileSync(`/proc/${pid}/environ`).includes(needle), 'in the environment')
      assert.ok(!lab.gateway.stderr.includes(pw) && !lab.gateway.stdout.includes(pw), 'in the log')
      for (const f of filesUnder(lab.gateway.dataDir)) assert.ok(!f.data.includes(needle), `in ${f.path}`)
      const audit = JSON.stringify(await lab.api('GET', '/v1/audit?limit=1000'))
      assert.ok(!audit.includes(pw), 'in the audit')
      assert.equal(memoryHolds(pid, needle), false, 'in the memory of the gateway process')
    }
    // The scan finds what is there: the caller's token, which the gateway did receive.
    assert.equal(memoryHolds(pid, Buffer.from(alice.slice(-40))), true)
  })

  test('the audit records the sessions with the connector, and the refusals with their reason', async () => {
    const starts = (await lab.auditEvents('session.start')).filter((e) => e.connection === 'billing' || e.connection === 'legacy')
    assert.ok(starts.length >= 2)
    for (const e of starts) assert.equal(e.via, 'edge-1')
  })
})

describe('the connector gives proofs only to a session it carries, for a connection it keeps', () => {
  const secrets = new HeldSecrets(new Map([['billing', { ref: 'env:GH_TEST_HELD_PW', user: 'app', md5: true }]]), pino({ level: 'silent' }))
  const target = '10.0.0.6:5432'
  const ctx = (carries: boolean, targets: string[] = [target], allow: string[] = []) => ({
    targets: new Set(targets),
    allow,
    carries: () => carries,
    hostSigned: () => false,
  })
  const ask = {
    session: 's-1',
    connection: 'billing',
    target,
    ref: 'env:GH_TEST_HELD_PW',
    mechanism: 'md5',
    user: 'app',
    salt: Buffer.from([1, 2, 3, 4]).toString('base64'),
  }

  before(() => {
    process.env.GH_TEST_HELD_PW = 'held-in-the-connector'
  })
  after(() => {
    delete process.env.GH_TEST_HELD_PW
  })

  test('answered for a carried session of a kept connection, without the secret', async () => {
    const a = await secrets.prove(ask, ctx(true))
    assert.match(JSON.stringify(a), /^\{"md5":"md5[0-9a-f]{32}"\}$/)
    assert.ok(!JSON.stringify(a).includes('held-in-the-connector'))
  })

  const refusals: [string, Record<string, unknown>, ReturnType<typeof ctx>, RegExp][] = [
    ['no stream of that session to the target', ask, ctx(false), /has no stream to 10\.0\.0\.6:5432/],
    ['a target the gateway did not list', ask, ctx(true, []), /not a target of this connector/],
    ['a target --allow leaves out', ask, ctx(true, [target], ['10.0.0.7:5432']), /not allowed by this connector's --allow/],
    ['a connection it keeps nothing for', { ...ask, connection: 'payroll' }, ctx(true), /holds no secret for connection payroll/],
    ['another reference', { ...ask, ref: 'env:PATH' }, ctx(true), /not env:PATH/],
    ['an unknown mechanism', { ...ask, mechanism: 'password' }, ctx(true), /unsupported mechanism/],
    [
      'a SCRAM nonce that is not the client nonce extended',
      { ...ask, mechanism: 'scram-sha-256', client_first_bare: 'n=,r=abc', server_first: 'r=xyz1,s=c2FsdA==,i=4096' },
      ctx(true),
      /does not extend the client nonce/,
    ],
  ]
  // A compromised gateway (or a hostile target it relays) chooses the SCRAM iteration count: one
  // iteration makes offline guessing from the proof cheap, a million holds the connector's thread
  // pool (and every other connection's proofs) for seconds per session.
  const scram = (i: number): Record<string, unknown> => ({
    ...ask,
    mechanism: 'scram-sha-256',
    client_first_bare: 'n=,r=clientnonce',
    server_first: `r=clientnonceserver,s=${Buffer.from('sixteen byte salt').toString('base64')},i=${i}`,
  })
  test('psql logs in again: the SCRAM proof comes from the salt and count the first one pinned', () => {
    for (let i = 0; i < 2; i++) {
      const r = psql(lab.gateway.conninfo(alice, 'billing'), 'select current_user')
      assert.equal(r.code, 0, r.stderr)
      assert.equal(r.stdout.trim(), 'vault')
    }
  })

  test("SCRAM is answered at PostgreSQL's default iteration count", async () => {
    const a = await secrets.prove(scram(4096), ctx(true))
    assert.match(JSON.stringify(a), /"client_final":"c=biws,r=clientnonceserver,p=/)
  })
  for (const i of [1, 4095, 100_001, 1_000_000]) {
    test(`refused: a SCRAM iteration count of ${i}`, async () => {
      await assert.rejects(
        secrets.prove(scram(i), ctx(true)),
        (err: unknown) => err instanceof ProofRefused && new RegExp(`iteration count ${i} is outside 4096\\.\\.100000`).test(err.message),
      )
    })
  }

  test('the SSH signing it gives is for a login with its key only', () => {
    const blob = Buffer.from('AAAAC3NzaC1lZDI1NTE5AAAAIHk2', 'base64')
    const str = (b: Buffer | string): Buffer => {
      const v = Buffer.from(b)
      const n = Buffer.alloc(4)
      n.writeUInt32BE(v.length)
      return Buffer.concat([n, v])
    }
    const login = (key: Buffer, method = 'publickey', service = 'ssh-connection'): Buffer =>
      Buffer.concat([
        str(randomBytes(32)),
        Buffer.from([50]),
        str('deploy'),
        str(service),
        str(method),
        Buffer.from([1]),
        str('ssh-ed25519'),
        str(key),
      ])
    assert.equal(isUserauthRequestFor(login(blob), blob), true)
    assert.equal(isUserauthRequestFor(login(Buffer.from('other')), blob), false)
    assert.equal(isUserauthRequestFor(login(blob, 'password'), blob), false)
    assert.equal(isUserauthRequestFor(login(blob, 'publickey', 'ssh-userauth'), blob), false)
    assert.equal(isUserauthRequestFor(Buffer.concat([login(blob), Buffer.from([0])]), blob), false)
    assert.equal(isUserauthRequestFor(Buffer.from('any data a gateway would like signed'), blob), false)
  })

  for (const [name, body, c, want] of refusals) {
    test(`refused: ${name}`, async () => {
      await assert.rejects(secrets.prove(body, c), (err: unknown) => err instanceof ProofRefused && want.test(err.message))
    })
  }
})

describe('a compromised gateway gets proofs only for what the connector operator pinned', () => {
  // The requests here are what a compromised gateway (or one whose key was stolen) sends over the
  // link: it chooses the role, the salt, the count, the mechanism and the target it names, so each
  // is played against the connector's prover directly.
  const log = pino({ level: 'silent' })
  const target = '10.0.0.6:5432'
  const ctx = { targets: new Set([target, '10.0.0.5:22']), allow: [], carries: () => true, hostSigned: () => false }
  const base = { session: 's-1', connection: 'billing', target, ref: 'env:GH_TEST_PIN_PW' }
  const md5 = (user: string): Record<string, unknown> => ({ ...base, mechanism: 'md5', user, salt: 'AQIDBA==' })
  const scram = (salt: string, i = 4096): Record<string, unknown> => ({
    ...base,
    mechanism: 'scram-sha-256',
    client_first_bare: 'n=,r=clientnonce',
    server_first: `r=clientnonceserver,s=${Buffer.from(salt).toString('base64')},i=${i}`,
  })
  const refused = (p: Promise<unknown>, want: RegExp): Promise<void> =>
    assert.rejects(p, (err: unknown) => err instanceof ProofRefused && want.test(err.message))

  before(() => {
    process.env.GH_TEST_PIN_PW = 'pinned-in-the-connector'
  })
  after(() => {
    delete process.env.GH_TEST_PIN_PW
  })

  test('--secret states the user, the target and md5; anything else is a usage error', () => {
    assert.deepEqual(parseHeldSecret('billing=env:PW,user=app,target=10.0.0.6:5432,md5'), {
      connection: 'billing',
      secret: { ref: 'env:PW', user: 'app', target: '10.0.0.6:5432', md5: true },
    })
    assert.deepEqual(parseHeldSecret('web-1=file:/etc/gh/key'), { connection: 'web-1', secret: { ref: 'file:/etc/gh/key', md5: false } })
    for (const bad of ['billing=env:PW,user=', 'billing=env:PW,target=nohost', 'billing=env:PW,md4', 'billing=env:PW,user=a,user=b'])
      assert.equal(parseHeldSecret(bad), null, bad)
  })

  test('no md5 answer unless the operator allows md5 for that secret (SCRAM only by default)', async () => {
    const held = new HeldSecrets(new Map([['billing', { ref: base.ref, user: 'app', md5: false }]]), log)
    await refused(held.prove(md5('app'), ctx), /gives md5 answers for connection billing only with md5 in its --secret/)
  })

  test('no md5 answer for a role other than the one the secret names, nor without one', async () => {
    const held = new HeldSecrets(new Map([['billing', { ref: base.ref, user: 'app', md5: true }]]), log)
    assert.match(JSON.stringify(await held.prove(md5('app'), ctx)), /"md5":"md5[0-9a-f]{32}"/)
    await refused(held.prove(md5('postgres'), ctx), /answers md5 for connection billing as app only/)
    const anyone = new HeldSecrets(new Map([['billing', { ref: base.ref, md5: true }]]), log)
    await refused(anyone.prove(md5('app'), ctx), /names no user=, which md5 answers need/)
  })

  test('no proof for a target other than the one the secret names, even on a carried stream', async () => {
    const held = new HeldSecrets(new Map([['billing', { ref: base.ref, target, md5: false }]]), log)
    await refused(held.prove({ ...scram('salt-one'), target: '10.0.0.5:22' }, ctx), /for 10\.0\.0\.6:5432 only, not 10\.0\.0\.5:22/)
    assert.ok(await held.prove(scram('salt-one'), ctx))
  })

  test('the first SCRAM salt and count are pinned: a gateway cannot ask under its own, until the secret changes', async () => {
    const held = new HeldSecrets(new Map([['billing', { ref: base.ref, md5: false }]]), log)
    const first = await held.prove(scram('the-servers-salt'), ctx)
    assert.deepEqual(await held.prove(scram('the-servers-salt'), ctx), first)
    await refused(held.prove(scram('a-chosen-salt'), ctx), /salt or iteration count differs from the first proof for connection billing/)
    await refused(held.prove(scram('the-servers-salt', 8192), ctx), /differs from the first proof/)
    // A new password (the variable or file changed) may come with the server's new salt.
    process.env.GH_TEST_PIN_PW = 'rotated-in-the-connector'
    assert.ok(await held.prove(scram('a-new-servers-salt'), ctx))
    process.env.GH_TEST_PIN_PW = 'pinned-in-the-connector'
  })

  test('an SSH private key is never used as a password', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gh-pin-key-'))
    try {
      const keyFile = join(dir, 'id')
      spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', keyFile])
      const held = new HeldSecrets(new Map([['billing', { ref: `file:${keyFile}`, user: 'app', md5: true }]]), log)
      const asKey = { ...base, ref: `file:${keyFile}` }
      await refused(held.prove({ ...scram('salt'), ...asKey }, ctx), /is a private key, not a password/)
      await refused(held.prove({ ...md5('app'), ...asKey }, ctx), /is a private key, not a password/)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
