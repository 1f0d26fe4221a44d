// The target credential never leaks. This test starts its own PostgreSQL cluster that accepts
// only SCRAM-SHA-256 passwords (initdb, a password-only pg_hba.conf, a free port), gives the
// gateway the password through a secret reference, and captures every byte the gateway sends to
// the client: the password is in none of them, nor in the data directory, the logs or the audit.
// md5 and TLS toward the server are covered with the same cluster.

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { chmodSync, chownSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { connect, createServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import pg from 'pg'
import { TestGateway } from './helpers/gateway.js'
import { asPostgres, freePort, PG_BIN } from './helpers/pgserver.js'

const PASSWORD = 'Sc4am-Pw-7f3a9c-never-leak'
const MD5_PASSWORD = 'Md5-Pw-19c0e2-never-leak'

class Cluster {
  port = 0
  constructor(readonly dir: string) {}

  static async start(): Promise<Cluster> {
    const dir = mkdtempSync(join(tmpdir(), 'gh-scram-'))
    chmodSync(dir, 0o755)
    const c = new Cluster(dir)
    const data = join(dir, 'data')
    const pwfile = join(dir, 'pw')
    writeFileSync(pwfile, `${PASSWORD}\n`)
    const uid = Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout.trim())
    const gid = Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim())
    chownSync(dir, uid, gid)
    chownSync(pwfile, uid, gid)
    const init = asPostgres([`${PG_BIN}/initdb`, '-D', data, '-U', 'postgres', '--auth=scram-sha-256', `--pwfile=${pwfile}`, '-E', 'UTF8'])
    assert.equal(init.status, 0, init.stderr)
    rmSync(pwfile)
    // Passwords only, over TCP: SCRAM for everyone but the md5 user.
    writeFileSync(
      join(data, 'pg_hba.conf'),
      'hostssl all md5user 127.0.0.1/32 md5\nhost all md5user 127.0.0.1/32 md5\nhost all all 127.0.0.1/32 scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\n',
    )
    // A self-signed certificate so `tls: require` can be exercised against this server too.
    const crt = spawnSync('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-days',
      '2',
      '-subj',
      '/CN=localhost',
      '-keyout',
      join(data, 'server.key'),
      '-out',
      join(data, 'server.crt'),
    ])
    assert.equal(crt.status, 0)
    chownSync(join(data, 'server.key'), uid, gid)
    chownSync(join(data, 'server.crt'), uid, gid)
    chmodSync(join(data, 'server.key'), 0o600)
    c.port = await freePort()
    const conf = `listen_addresses = '127.0.0.1'\nport = ${c.port}\nunix_socket_directories = '${dir}'\nssl = on\npassword_encryption = 'scram-sha-256'\n`
    writeFileSync(join(data, 'postgresql.auto.conf'), conf)
    chownSync(join(data, 'postgresql.auto.conf'), uid, gid)
    const st = asPostgres([`${PG_BIN}/pg_ctl`, '-D', data, '-l', join(dir, 'server.log'), '-w', 'start'])
    assert.equal(st.status, 0, st.stderr)
    return c
  }

  sql(sql: string): string {
    const r = spawnSync('psql', ['-X', '-At', '-h', '127.0.0.1', '-p', String(this.port), '-U', 'postgres', '-d', 'postgres', '-c', sql], {
      encoding: 'utf8',
      env: { ...process.env, PGPASSWORD: PASSWORD },
    })
    if (r.status !== 0) throw new Error(r.stderr)
    return r.stdout.trim()
  }

  stop(): void {
    asPostgres([`${PG_BIN}/pg_ctl`, '-D', join(this.dir, 'data'), '-m', 'immediate', 'stop'])
    rmSync(this.dir, { recursive: true, force: true })
  }
}

/** A relay between the test client and the gateway that records every byte sent to the client. */
async function capturingRelay(target: number): Promise<{ port: number; captured: () => Buffer; close: () => void }> {
  const chunks: Buffer[] = []
  const server: Server = createServer((client) => {
    const up = connect({ host: '127.0.0.1', port: target })
    client.pipe(up)
    up.on('data', (d: Buffer) => {
      chunks.push(Buffer.from(d))
      client.write(d)
    })
    const end = (): void => {
      client.destroy()
      up.destroy()
    }
    client.on('close', end).on('error', end)
    up.on('close', end).on('error', end)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const a = server.address()
  return { port: a && typeof a === 'object' ? a.port : 0, captured: () => Buffer.concat(chunks), close: () => server.close() }
}

function filesUnder(dir: string): string[] {
  const out: string[] = []
  for (const name of readdirSync(dir)) {
    const p = join(dir, name)
    if (statSync(p).isDirectory()) out.push(...filesUnder(p))
    else out.push(p)
  }
  return out
}

describe('SCRAM-SHA-256 server, credentials that never leak', () => {
  let cluster: Cluster
  let gw: TestGateway

  before(async () => {
    cluster = await Cluster.start()
    cluster.sql(`SET password_encryption = 'md5'; CREATE ROLE md5user LOGIN PASSWORD '${MD5_PASSWORD}'`)
    cluster.sql('CREATE TABLE secrets_demo (id int); INSERT INTO secrets_demo VALUES (1), (2); GRANT SELECT ON secrets_demo TO md5user')
    const secretFile = join(mkdtempSync(join(tmpdir(), 'gh-secret-')), 'md5pw')
    writeFileSync(secretFile, `${MD5_PASSWORD}\n`, { mode: 0o600 })
    const base = { protocol: 'postgres', address: `127.0.0.1:${cluster.port}`, database: 'postgres', labels: {} }
    gw = await TestGateway.start({
      connections: [
        { ...base, name: 'scram', user: 'postgres', password: 'env:GH_SCRAM_PASSWORD' },
        { ...base, name: 'scram_tls', user: 'postgres', password: 'env:GH_SCRAM_PASSWORD', tls: 'require' },
        { ...base, name: 'md5', user: 'md5user', password: `file:${secretFile}`, auth: 'md5' },
        { ...base, name: 'wrongpw', user: 'postgres', password: 'env:GH_WRONG_PASSWORD' },
        { ...base, name: 'nopw', user: 'postgres' },
      ],
      env: { GH_SCRAM_PASSWORD: PASSWORD, GH_WRONG_PASSWORD: 'not-the-password' },
    })
  })
  after(async () => {
    await gw?.cleanup()
    cluster?.stop()
  })

  test('SCRAM, SCRAM over TLS and md5 toward the server; no byte to the client contains a password', async () => {
    const relay = await capturingRelay(gw.pgPort)
    try {
      const token = gw.token('user:alice')
      for (const db of ['scram', 'scram_tls', 'md5']) {
        const c = new pg.Client({ host: '127.0.0.1', port: relay.port, database: db, user: 'alice', password: token })
        c.on('error', () => undefined)
        await c.connect()
        const r = await c.query('SELECT count(*)::int AS n, current_user AS u FROM secrets_demo')
        assert.equal(r.rows[0].n, 2)
        assert.equal(r.rows[0].u, db === 'md5' ? 'md5user' : 'postgres')
        if (db === 'scram_tls') {
          const ssl = await c.query('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()')
          assert.equal(ssl.rows[0].ssl, true)
        }
        // Errors, notices and settings the server sends pass through the same path.
        await assert.rejects(c.query('SELECT * FROM nope'), /does not exist/)
        await c.query('SHOW ALL')
        await c.end()
      }
      const bytes = relay.captured()
      assert.ok(bytes.length > 1000)
      for (const pw of [PASSWORD, MD5_PASSWORD]) {
        assert.equal(bytes.indexOf(pw), -1, 'password bytes reached the client')
        assert.equal(bytes.indexOf(Buffer.from(pw).toString('base64')), -1)
      }
    } finally {
      relay.close()
    }
  })

  test('a wrong or missing server password is 08006 for the client, without details', async () => {
    const token = gw.token('user:alice')
    for (const db of ['wrongpw', 'nopw']) {
      const c = new pg.Client({ host: '127.0.0.1', port: gw.pgPort, database: db, user: 'alice', password: token })
      c.on('error', () => undefined)
      await assert.rejects(c.connect(), (e: { code?: string; message: string }) => {
        assert.equal(e.code, '08006')
        assert.doesNotMatch(e.message, /password authentication failed|not-the-password/)
        return true
      })
    }
  })

  test('the password is nowhere on disk, in the logs or in the audit', async () => {
    await gw.stop()
    const needles = [PASSWORD, MD5_PASSWORD]
    for (const f of filesUnder(gw.dir)) {
      const content = readFileSync(f)
      for (const n of needles) assert.equal(content.indexOf(n), -1, `${f} contains a password`)
    }
    for (const n of needles) {
      assert.ok(!gw.stderr.includes(n), 'the log contains a password')
      assert.ok(!gw.stdout.includes(n))
    }
    const audit = JSON.stringify(gw.auditEvents())
    for (const n of needles) assert.ok(!audit.includes(n))
    assert.match(audit, /session\.start/)
  })
})
