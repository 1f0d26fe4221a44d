// Connector-held secrets: a PostgreSQL connection reached through a connector names its password
// `connector:env:NAME`; the connector (started with `--secret connection=env:NAME` and the
// variable in its own environment only) answers the SCRAM-SHA-256 and md5 exchanges with proofs,
// and the gateway, which still identifies the caller and decides everything, never holds the
// password: not in its environment, memory, log, audit or data directory. A connector without the
// secret, or one asked for a connection it holds no secret for, fails the session closed with a
// clear error; a server asking for a cleartext password gets nothing.

import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { closeSync, openSync, readdirSync, readFileSync, readSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import pino from 'pino'
import { HeldSecrets, ProofRefused } from '../cli/connector-secrets.js'
import { ConnectorLab } from './helpers/connector.js'
import { psql } from './helpers/gateway.js'

const lab = new ConnectorLab()
const SCRAM_PW = `scram-${randomBytes(12).toString('hex')}`
const MD5_PW = `md5pw-${randomBytes(12).toString('hex')}`
const PLAIN_PW = `plain-${randomBytes(12).toString('hex')}`
let alice = ''
let key = ''

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
    await lab.startGateway([
      held('billing', 'vault', 'env:BILLING_PW'),
      held('legacy', 'vaultmd5', 'env:LEGACY_PW', { auth: 'md5' }),
      held('plain', 'vaultplain', 'env:PLAIN_PW', { auth: 'password' }),
      // The connector keeps no secret for this one.
      held('unheld', 'vault', 'env:BILLING_PW'),
      // The connector keeps this connection's secret under another reference.
      held('renamed', 'vault', 'env:OTHER_PW'),
      // The connector keeps it, but its variable is not set there.
      held('unset', 'vault', 'env:UNSET_PW'),
    ])
    alice = lab.gateway.token('user:alice')
    ;({ key } = await lab.createKey('edge-1'))
    lab.startConnector(
      key,
      ['--secret', 'billing=env:BILLING_PW', 'legacy=env:LEGACY_PW', 'plain=env:PLAIN_PW', 'renamed=env:BILLING_PW', 'unset=env:UNSET_PW'],
      '--token-file',
      { BILLING_PW: SCRAM_PW, LEGACY_PW: MD5_PW, PLAIN_PW },
    )
    await lab.attached(1)
  } catch (err) {
    await lab.cleanup()
    throw err
  }
})

after(() => lab.cleanup())

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
  const secrets = new HeldSecrets(new Map([['billing', 'env:GH_TEST_HELD_PW']]), pino({ level: 'silent' }))
  const target = '10.0.0.6:5432'
  const ctx = (carries: boolean, targets: string[] = [target], allow: string[] = []) => ({
    targets: new Set(targets),
    allow,
    carries: () => carries,
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
  for (const [name, body, c, want] of refusals) {
    test(`refused: ${name}`, async () => {
      await assert.rejects(secrets.prove(body, c), (err: unknown) => err instanceof ProofRefused && want.test(err.message))
    })
  }
})
