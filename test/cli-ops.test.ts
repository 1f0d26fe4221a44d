// The operator's traps and the CLI's contract for scripts: listeners that stay on when another is
// added, a banner that names every listener, a data directory others could write refused, one
// admin credential across restarts (replaced only by `admin rotate`, which revokes the old one),
// unknown token ids and misspelt scopes refused by name, `--version`, `--json`, and the exit
// code table (0 ok, 1 failed, 2 usage/config, 3 server unreachable).

import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import yaml from 'js-yaml'
import { parseConfig } from '../engine/config/config.js'
import { BIN, type CliResult, LOCAL_PG, REPO, TestGateway } from './helpers/gateway.js'

let cwd: string
before(() => {
  cwd = mkdtempSync(join(tmpdir(), 'gh-cli-ops-'))
})
after(() => rmSync(cwd, { recursive: true, force: true }))

function gatehouse(args: readonly string[], opts: { cwd?: string } = {}): CliResult {
  const env = { ...process.env }
  delete env.GATEHOUSE_CONFIG
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: opts.cwd ?? cwd, env, encoding: 'utf8', timeout: 120_000 })
  if (r.error) throw r.error
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

describe('listeners', () => {
  test('listing one listener keeps the default ones; only off turns one off', () => {
    const c = parseConfig({ listen: { ssh: '127.0.0.1:2222' } }, null)
    assert.deepEqual(Object.keys(c.listen).sort(), ['api', 'postgres', 'ssh'])
    const off = parseConfig({ listen: { postgres: 'off', ssh: '127.0.0.1:2222' } }, null)
    assert.deepEqual(Object.keys(off.listen).sort(), ['api', 'ssh'])
    assert.throws(() => parseConfig({ listen: { postgres: 'of' } }, null), /listen\.postgres: must be host:port.*or off/)
  })

  test('the banner shows every listener, SSH included, and off for one turned off', async () => {
    const gw = await TestGateway.start({ config: { listen: { api: '127.0.0.1:0', postgres: 'off', ssh: '127.0.0.1:0' } } })
    try {
      await waitFor(() => gw.stdout.includes('data:'))
      assert.match(gw.stdout, /^ {2}API: +http:\/\/127\.0\.0\.1:\d+$/m)
      assert.match(gw.stdout, /^ {2}PostgreSQL: +off$/m)
      assert.match(gw.stdout, /^ {2}SSH: +127\.0\.0\.1:\d+$/m)
    } finally {
      await gw.cleanup()
    }
  })
})

async function waitFor(cond: () => boolean, ms = 30_000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out')
    await new Promise((r) => setTimeout(r, 50))
  }
}

describe('the data directory', () => {
  test('serve without a config says it created ./gatehouse-data, then that it uses it', async () => {
    const dir = mkdtempSync(join(cwd, 'noconf-'))
    // Free ports: serve without a config would take 8080/15432, which another test may hold.
    const run = async (): Promise<string> => {
      const env = { ...process.env }
      delete env.GATEHOUSE_CONFIG
      const proc = spawn(process.execPath, [BIN, 'serve'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] })
      let stdout = ''
      let stderr = ''
      proc.stdout.on('data', (d: Buffer) => {
        stdout += d.toString()
      })
      proc.stderr.on('data', (d: Buffer) => {
        stderr += d.toString()
      })
      const exited = new Promise((r) => proc.on('exit', r))
      try {
        await waitFor(() => stdout.includes('data:') || proc.exitCode !== null, 60_000)
      } finally {
        proc.kill('SIGTERM')
        await exited
      }
      assert.ok(stdout.includes('data:'), stderr)
      return stdout
    }
    // The default ports may be taken on a shared machine; then there is nothing to check here.
    const first = await run().catch((e: unknown) => String(e))
    if (!first.includes('data:')) return
    assert.match(first, new RegExp(`data: +${join(dir, 'gatehouse-data').replaceAll('/', '\\/')} \\(no configuration file: created it\\)`))
    const second = await run()
    assert.match(second, /\(no configuration file: using it\)/)
  })

  test('a data directory others may write is refused, with why', () => {
    const dir = mkdtempSync(join(cwd, 'open-'))
    const data = join(dir, 'data')
    mkdirSync(data)
    chmodSync(data, 0o777)
    const file = join(dir, 'gatehouse.yaml')
    writeFileSync(file, yaml.dump({ data_dir: data, listen: { api: '127.0.0.1:0', postgres: '127.0.0.1:0' } }))
    const r = gatehouse(['serve', '--config', file])
    assert.equal(r.code, 2, r.stderr)
    assert.match(r.stderr, /data_dir .*: mode 0777 lets other users write it/)
  })

  test('a data directory owned by another user is refused', { skip: process.getuid?.() !== 0 }, () => {
    const dir = mkdtempSync(join(cwd, 'owner-'))
    const data = join(dir, 'data')
    mkdirSync(data, { mode: 0o700 })
    spawnSync('chown', ['65534', data])
    const file = join(dir, 'gatehouse.yaml')
    writeFileSync(file, yaml.dump({ data_dir: data, listen: { api: '127.0.0.1:0', postgres: '127.0.0.1:0' } }))
    const r = gatehouse(['serve', '--config', file])
    assert.equal(r.code, 2, r.stderr)
    assert.match(r.stderr, /owned by uid 65534, but the gateway runs as uid 0/)
  })
})

describe('one admin credential', () => {
  let gw: TestGateway
  before(async () => {
    gw = await TestGateway.start({ connections: [LOCAL_PG] })
  })
  after(() => gw.cleanup())

  const adminFile = (): string => join(gw.dataDir, 'admin.token')

  test('kept in admin.token (0600) and reused across restarts', async () => {
    const first = readFileSync(adminFile(), 'utf8')
    assert.equal(statSync(adminFile()).mode & 0o777, 0o600)
    await gw.stop()
    await gw.launch()
    assert.equal(readFileSync(adminFile(), 'utf8'), first)
    assert.equal(gw.cli(['sessions', 'list']).code, 0)
  })

  test('admin rotate replaces it and revokes the old one, through the server', async () => {
    const old = readFileSync(adminFile(), 'utf8').trim()
    const r = gw.cli(['admin', 'rotate', '--json'])
    assert.equal(r.code, 0, r.stderr)
    const out = JSON.parse(r.stdout) as { id: string; revoked: string; file: string }
    assert.equal(out.file, adminFile())
    const now = readFileSync(adminFile(), 'utf8').trim()
    assert.notEqual(now, old)
    // The old token is refused by the API; the new one works (the CLI reads it from the file).
    const res = await fetch(`${gw.apiUrl}/v1/sessions`, { headers: { authorization: `Bearer ${old}` } })
    assert.equal(res.status, 401)
    assert.equal(gw.cli(['sessions', 'list']).code, 0)
    const revoked = gw.auditEvents(['--type', 'token.revoked']).map((e) => (e.token as { id: string }).id)
    assert.ok(revoked.includes(out.revoked), 'the rotation is in the audit log')
  })

  test('admin rotate without a server rotates in the data directory', async () => {
    await gw.stop()
    const old = readFileSync(adminFile(), 'utf8').trim()
    const r = gw.cli(['admin', 'rotate'])
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /^new admin token \S+ in .*admin\.token; \S+ revoked$/m)
    const now = readFileSync(adminFile(), 'utf8').trim()
    assert.notEqual(now, old)
    await gw.launch()
    // The restart keeps the rotated token.
    assert.equal(readFileSync(adminFile(), 'utf8').trim(), now)
    const res = await fetch(`${gw.apiUrl}/v1/sessions`, { headers: { authorization: `Bearer ${old}` } })
    assert.equal(res.status, 401)
  })
})

describe('tokens: unknown ids and scopes', () => {
  let gw: TestGateway
  before(async () => {
    gw = await TestGateway.start({ connections: [LOCAL_PG] })
  })
  after(() => gw.cleanup())

  test('token revoke of an unknown id exits 1 and says so; a known one prints JSON', () => {
    const bad = gw.cli(['token', 'revoke', 'nosuchtokenid'])
    assert.equal(bad.code, 1, bad.stdout + bad.stderr)
    assert.match(bad.stderr, /no token or service-account key with id "nosuchtokenid" was issued by this gateway/)
    assert.doesNotMatch(bad.stdout, /revoked/)
    const t = gw.tokenJson('user:alice')
    const ok = gw.cli(['token', 'revoke', t.id, '--json'])
    assert.equal(ok.code, 0, ok.stderr)
    assert.deepEqual(JSON.parse(ok.stdout), { revoked: t.id, sessions_ended: 0 })
  })

  test('a misspelt action and an unknown connection are refused at issue, each named', () => {
    const r = gw.cli(['token', 'create', '--subject', 'user:alice', '--scope', 'connection:nosuch sql.raed'])
    assert.equal(r.code, 2, r.stderr)
    assert.match(r.stderr, /"connection:nosuch": no connection named "nosuch" \(configured: app\)/)
    assert.match(r.stderr, /"sql\.raed": no such action/)
    const fam = gw.cli(['token', 'create', '--subject', 'user:alice', '--scope', 'sqll.*'])
    assert.equal(fam.code, 2)
    assert.match(fam.stderr, /"sqll\.\*": no action in this family/)
    assert.equal(gw.cli(['token', 'create', '--subject', 'user:alice', '--scope', 'connection:app sql.read ssh.*']).code, 0)
  })

  test('and at delegation', () => {
    const parent = gw.token('user:alice')
    const r = gw.cli(['token', 'delegate', '--token', parent, '--agent', 'helper', '--scope', 'sql.raed'])
    assert.notEqual(r.code, 0)
    assert.match(r.stderr, /"sql\.raed": no such action/)
  })

  test('without a server: unknown id exits 1, a misspelt scope exits 2', async () => {
    await gw.stop()
    const bad = gw.cli(['token', 'revoke', 'nosuchtokenid'])
    assert.equal(bad.code, 1, bad.stderr)
    const sc = gw.cli(['token', 'create', '--subject', 'user:alice', '--scope', 'sql.raed'])
    assert.equal(sc.code, 2, sc.stderr)
    assert.match(sc.stderr, /"sql\.raed": no such action/)
    const t = JSON.parse(gw.cli(['token', 'create', '--subject', 'user:bob', '--json']).stdout) as { id: string }
    const ok = gw.cli(['token', 'revoke', t.id, '--json'])
    assert.equal(ok.code, 0, ok.stderr)
    assert.deepEqual(JSON.parse(ok.stdout), { revoked: t.id, sessions_ended: null })
    await gw.launch()
  })
})

describe('exit codes and --version', () => {
  test('--version prints the package version', () => {
    const r = gatehouse(['--version'])
    assert.equal(r.code, 0)
    const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }
    assert.equal(r.stdout.trim(), pkg.version)
  })

  test('--json where a command printed only text: policy build, ssh host-key', () => {
    const out = join(cwd, 'b.tar.gz')
    const b = gatehouse(['policy', 'build', join(REPO, 'policies'), '-o', out, '--json'])
    assert.equal(b.code, 0, b.stderr)
    const doc = JSON.parse(b.stdout) as { version: string; file: string; bytes: number }
    assert.match(doc.version, /^sha256:[0-9a-f]{12}$/)
    assert.equal(doc.file, out)
    const dir = mkdtempSync(join(cwd, 'hostkey-'))
    mkdirSync(join(dir, 'data', 'plugins', 'ssh'), { recursive: true, mode: 0o700 })
    writeFileSync(join(dir, 'data', 'plugins', 'ssh', 'ssh_host_ed25519_key.pub'), 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample\n')
    const file = join(dir, 'gatehouse.yaml')
    writeFileSync(file, yaml.dump({ data_dir: join(dir, 'data'), listen: { ssh: '127.0.0.1:2222' } }))
    const h = gatehouse(['ssh', 'host-key', '--config', file, '--json'])
    assert.equal(h.code, 0, h.stderr)
    assert.deepEqual(JSON.parse(h.stdout), {
      key: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample',
      address: '127.0.0.1:2222',
      known_hosts: '[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample',
    })
  })

  test('2: an unknown option, a missing argument, an invalid configuration', () => {
    assert.equal(gatehouse(['token', 'create', '--nope']).code, 2)
    assert.equal(gatehouse(['token', 'revoke']).code, 2)
    const file = join(cwd, 'bad.yaml')
    writeFileSync(file, 'listen: { api: nowhere }\n')
    const r = gatehouse(['sessions', 'list', '--config', file])
    assert.equal(r.code, 2)
    assert.match(r.stderr, /listen\.api/)
  })

  test('3: no server for commands that need one', () => {
    const dir = mkdtempSync(join(cwd, 'nosrv-'))
    const file = join(dir, 'gatehouse.yaml')
    writeFileSync(file, yaml.dump({ data_dir: join(dir, 'data') }))
    for (const args of [
      ['sessions', 'kill', 'S-1'],
      ['policy', 'status'],
      ['audit', 'sinks'],
    ]) {
      const r = gatehouse([...args, '--config', file])
      assert.equal(r.code, 3, `${args.join(' ')}: ${r.stderr}`)
    }
    assert.ok(!existsSync(join(dir, 'data', 'run.json')))
  })

  test('3: a run.json whose server does not answer', () => {
    const dir = mkdtempSync(join(cwd, 'dead-'))
    const data = join(dir, 'data')
    mkdirSync(data, { mode: 0o700 })
    // A live pid (this test's) with an API address nobody listens on.
    writeFileSync(
      join(data, 'run.json'),
      JSON.stringify({ pid: process.pid, api: 'http://127.0.0.1:9', listeners: {}, started: new Date().toISOString() }),
    )
    writeFileSync(join(data, 'admin.token'), 'x\n')
    const file = join(dir, 'gatehouse.yaml')
    writeFileSync(file, yaml.dump({ data_dir: data }))
    const r = gatehouse(['sessions', 'list', '--config', file])
    assert.equal(r.code, 3, r.stderr)
  })
})

describe('audit list', () => {
  test('a header row, and the command and chain of SSH and MCP events as of SQL ones', async () => {
    const dir = mkdtempSync(join(cwd, 'audit-'))
    const file = join(dir, 'gatehouse.yaml')
    writeFileSync(file, yaml.dump({ data_dir: join(dir, 'data') }))
    const { openLocalAuditLog } = await import('../engine/audit/writer.js')
    const log = await openLocalAuditLog(parseConfig({ data_dir: join(dir, 'data') }, file))
    const chain = ['user:alice', 'agent:helper']
    await log.append({ type: 'statement', session: 'S-sql', chain, connection: 'app', sql: 'SELECT 1', decision: 'allow' })
    await log.append({ type: 'statement', session: 'S-ssh', chain, connection: 'web-1', command: 'uptime', decision: 'allow' })
    await log.append({
      type: 'mcp.call',
      session: 'S-mcp',
      chain,
      connection: 'app',
      tool: 'query',
      arguments: { sql: 'SELECT ?' },
      decision: 'deny',
    })
    log.close()
    const r = gatehouse(['audit', 'list', '--config', file])
    assert.equal(r.code, 0, r.stderr)
    const lines = r.stdout.trimEnd().split('\n')
    assert.match(lines[0] ?? '', /^TIME +TYPE +SESSION +CHAIN +CONNECTION +DECISION +COMMAND$/)
    const row = (session: string): string => lines.find((l) => l.includes(session)) ?? ''
    assert.match(row('S-sql'), /user:alice>agent:helper +app +allow +SELECT 1$/)
    assert.match(row('S-ssh'), /user:alice>agent:helper +web-1 +allow +uptime$/)
    assert.match(row('S-mcp'), /user:alice>agent:helper +app +deny +query \{"sql":"SELECT \?"\}$/)
    // The columns line up under the header.
    const at = (lines[0] ?? '').indexOf('COMMAND')
    assert.equal(row('S-ssh').indexOf('uptime'), at)
    const text = gatehouse(['audit', 'list', '--config', file, '--text', 'UPTIME'])
    assert.equal(text.stdout.trimEnd().split('\n').length, 2, text.stdout)
  })
})

describe('policy eval --sql', () => {
  test('a real statement, classified as the gateway does, decided for a principal or a token', () => {
    const dir = mkdtempSync(join(cwd, 'eval-'))
    const file = join(dir, 'gatehouse.yaml')
    writeFileSync(file, yaml.dump({ data_dir: join(dir, 'data'), connections: [{ ...LOCAL_PG, labels: { env: 'prod' } }] }))
    type Out = {
      chain: string[]
      connection: { labels: Record<string, string> }
      statements: { sql: string; action: string; command: { kind: string }; decision: { effect: string; rules: string[] } }[]
    }
    const r = gatehouse([
      'policy',
      'eval',
      '--config',
      file,
      '--sql',
      'DELETE FROM orders; SELECT 1',
      '--connection',
      'app',
      '--subject',
      'user:wendy',
      '--group',
      'writers',
    ])
    assert.equal(r.code, 0, r.stderr)
    const doc = JSON.parse(r.stdout) as Out
    assert.deepEqual(doc.chain, ['user:wendy'])
    assert.equal(doc.connection.labels.env, 'prod')
    assert.deepEqual(
      doc.statements.map((s) => [s.sql, s.action, s.command.kind, s.decision.effect]),
      [
        ['DELETE FROM orders', 'sql.write', 'delete', 'deny'],
        ['SELECT 1', 'sql.read', 'select', 'allow'],
      ],
    )
    assert.deepEqual(doc.statements[0]?.decision.rules, ['no-unbounded-write'])
    // A token's chain, verified with the data directory's key: a writer whose token is scoped to sql.read.
    const root = gatehouse(['token', 'create', '--config', file, '--subject', 'user:wendy', '--group', 'writers', '--scope', 'sql.read'])
    assert.equal(root.code, 0, root.stderr)
    const t = gatehouse([
      'policy',
      'eval',
      '--config',
      file,
      '--sql',
      'UPDATE t SET x = 1 WHERE id = 2',
      '--connection',
      'app',
      '--as',
      root.stdout.trim(),
    ])
    assert.equal(t.code, 0, t.stderr)
    const td = JSON.parse(t.stdout) as Out
    assert.deepEqual(td.chain, ['user:wendy'])
    assert.equal(td.statements[0]?.decision.effect, 'deny')
    assert.deepEqual(td.statements[0]?.decision.rules, ['scope'])
    // Mistakes are usage errors, each named.
    const nosuch = gatehouse(['policy', 'eval', '--config', file, '--sql', 'SELECT 1', '--connection', 'nosuch', '--subject', 'user:a'])
    assert.equal(nosuch.code, 2)
    assert.match(nosuch.stderr, /no connection named "nosuch" \(configured: app\)/)
    const forged = gatehouse(['policy', 'eval', '--config', file, '--sql', 'SELECT 1', '--connection', 'app', '--as', 'not.a.token'])
    assert.equal(forged.code, 1)
  })
})

describe('configuration: one schema', () => {
  test('problems name file:line, the key path and what is wrong, all at once; secrets are not echoed', () => {
    const dir = mkdtempSync(join(cwd, 'conf-'))
    const file = join(dir, 'gatehouse.yaml')
    writeFileSync(
      file,
      [
        `data_dir: ${join(dir, 'data')}`,
        'listen:',
        '  api: nowhere',
        'audit:',
        '  fsync: never',
        '  colour: blue',
        'connections:',
        '  - name: app',
        '    protocol: postgres',
        '    address: 127.0.0.1:5432',
        '    password: hunter2',
        '    tls: maybe',
        '  - name: app',
        '    protocol: postgres',
        '    address: nope',
        '',
      ].join('\n'),
    )
    const r = gatehouse(['config', 'check', '--config', file])
    assert.equal(r.code, 2, r.stderr)
    assert.match(r.stderr, new RegExp(`${file}:3: listen\\.api: must be host:port`))
    assert.match(r.stderr, new RegExp(`${file}:5: audit\\.fsync: must be batched or always \\(got "never"\\)`))
    assert.match(r.stderr, new RegExp(`${file}:6: audit\\.colour: unknown key \\(allowed: fsync, `))
    assert.match(r.stderr, new RegExp(`${file}:13: connections\\[1\\]\\.name: duplicate connection name "app"`))
    assert.match(r.stderr, new RegExp(`${file}:15: connections\\[1\\]\\.address: is required as host:port`))
    // The plugins' part is checked once the schema holds.
    writeFileSync(
      file,
      yaml.dump({ data_dir: join(dir, 'data'), connections: [{ ...LOCAL_PG, password: 'hunter2', tls: 'maybe', colour: 1 }] }),
    )
    const p = gatehouse(['config', 'check', '--config', file])
    assert.equal(p.code, 2)
    assert.match(p.stderr, /connections\[0\]\.password: must be a secret reference/)
    assert.match(p.stderr, /connections\[0\]\.tls: must be one of disable, require, verify-full \(got "maybe"\)/)
    assert.match(p.stderr, /connections\[0\]\.colour: unknown key for a postgres connection/)
    assert.doesNotMatch(p.stderr, /hunter2/)
    writeFileSync(file, yaml.dump({ data_dir: join(dir, 'data'), connections: [LOCAL_PG] }))
    const ok = gatehouse(['config', 'check', '--config', file, '--json'])
    assert.equal(ok.code, 0, ok.stderr)
    assert.deepEqual(JSON.parse(ok.stdout), { ok: true, file })
  })

  test("config schema prints the JSON Schema, with each protocol plugin's connection keys", () => {
    const r = gatehouse(['config', 'schema'])
    assert.equal(r.code, 0, r.stderr)
    type Schema = {
      $schema: string
      properties: Record<
        string,
        { items?: { allOf: { if: { properties: { protocol: { const: string } } }; then: { properties: Record<string, unknown> } }[] } }
      >
      additionalProperties: boolean
    }
    const s = JSON.parse(r.stdout) as Schema
    assert.match(s.$schema, /json-schema\.org/)
    assert.equal(s.additionalProperties, false)
    for (const k of ['data_dir', 'listen', 'tls', 'audit', 'tokens', 'connections', 'plugins', 'policies', 'identity', 'approvals']) {
      assert.ok(k in s.properties, k)
    }
    const branches = s.properties.connections?.items?.allOf ?? []
    const pg = branches.find((b) => b.if.properties.protocol.const === 'postgres')
    const ssh = branches.find((b) => b.if.properties.protocol.const === 'ssh')
    assert.ok(pg && 'tls' in pg.then.properties && 'address' in pg.then.properties)
    assert.ok(ssh && 'host_key' in ssh.then.properties)
  })
})
