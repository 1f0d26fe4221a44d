// A third-party proxy plugin loaded from a path in `plugins:` works through the same narrow
// context as the built-in PostgreSQL proxy (identity, decision, audit, dialer); broken plugin lists
// and broken configurations are refused at start with the file, the key and what is wrong.

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { connect, createServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import yaml from 'js-yaml'
import { pluginMayWrite } from '../engine/sessions.js'
import { BIN, LOCAL_PG, REPO, TestGateway } from './helpers/gateway.js'

async function lineClient(
  port: number,
  first: string,
): Promise<{
  send: (l: string) => Promise<string>
  next: () => Promise<string>
  raw: (s: string) => void
  close: () => void
  greeting: string
}> {
  const sock = connect({ host: '127.0.0.1', port })
  let buf = ''
  const waiters: ((l: string) => void)[] = []
  sock.on('data', (d: Buffer) => {
    buf += d.toString()
    let i = buf.indexOf('\n')
    while (i >= 0) {
      const line = buf.slice(0, i)
      buf = buf.slice(i + 1)
      waiters.shift()?.(line)
      i = buf.indexOf('\n')
    }
  })
  const next = (): Promise<string> =>
    Promise.race([
      new Promise<string>((r) => waiters.push(r)),
      new Promise<string>((_, rej) => setTimeout(() => rej(new Error('no answer')), 5000)),
    ])
  await new Promise<void>((r) => sock.once('connect', () => r()))
  const g = next()
  sock.write(`${first}\n`)
  const greeting = await g
  return {
    greeting,
    send: (l: string) => {
      const p = next()
      sock.write(`${l}\n`)
      return p
    },
    next,
    raw: (s: string) => sock.write(s),
    close: () => sock.destroy(),
  }
}

describe('third-party proxy plugins', () => {
  let echo: Server
  let echoPort = 0
  let gw: TestGateway

  before(async () => {
    // The target: an echo server that upper-cases what it receives.
    echo = createServer((s) => s.on('data', (d: Buffer) => s.write(d.toString().toUpperCase())))
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r))
    const a = echo.address()
    echoPort = a && typeof a === 'object' ? a.port : 0
    // A policy for the plugin's own action: the default bundle denies actions it does not know.
    const policyDir = mkdtempSync(join(tmpdir(), 'gh-line-policy-'))
    writeFileSync(
      join(policyDir, 'line.rego'),
      'package gatehouse\n\ndefault allow := false\n\nallow if input.action == "connect"\n\nallow if input.action == "line.send"\n\ndeny contains {"rule": "no-shouting-secrets", "reason": "no secrets on the line"} if contains(input.command.text, "secret")\n',
    )
    gw = await TestGateway.start({
      connections: [LOCAL_PG, { name: 'shout', protocol: 'line', address: `127.0.0.1:${echoPort}`, labels: { env: 'test' } }],
      config: {
        plugins: [join(REPO, 'examples/plugins/line-proxy.js')],
        listen: { api: '127.0.0.1:0', postgres: '127.0.0.1:0', line: '127.0.0.1:0' },
        policies: policyDir,
      },
    })
  })
  after(async () => {
    await gw.cleanup()
    echo.close()
  })

  test('the plugin from examples/ authenticates, decides, audits and dials through the narrow context', async () => {
    const run = JSON.parse(spawnSync('cat', [join(gw.dataDir, 'run.json')], { encoding: 'utf8' }).stdout) as {
      listeners: Record<string, string>
    }
    const port = Number(run.listeners.line?.split(':').pop())
    assert.ok(port > 0)
    const token = gw.token('user:carol')
    const c = await lineClient(port, `${token} shout`)
    assert.match(c.greeting, /^OK s-[0-9a-f]{12}$/)
    assert.equal(await c.send('hello plugin'), 'HELLO PLUGIN')
    // The engine's decision reaches the plugin, which refuses in its own protocol.
    assert.equal(await c.send('my secret'), 'DENIED no secrets on the line')
    c.close()
    const events = gw.auditEvents()
    const st = events.find((e) => e.type === 'statement' && e.command === 'hello plugin')
    assert.ok(st)
    assert.deepEqual(st.chain, ['user:carol'])
    assert.equal(st.connection, 'shout')
    assert.ok(events.some((e) => e.type === 'session.start' && e.protocol === 'line' && e.session === st.session))
    // Identity checks are the engine's, not the plugin's: a bad token is refused the same way.
    const bad = await lineClient(port, 'forged-token shout')
    assert.match(bad.greeting, /^ERR authentication failed/)
    bad.close()
    // Pipelined lines are decided and forwarded one at a time, in order (one write, many lines).
    const p = await lineClient(port, `${token} shout`)
    const sent = Array.from({ length: 12 }, (_, i) => (i === 5 ? `line ${i} secret` : `line ${i}`))
    const answers = Promise.all(sent.map(() => p.next()))
    p.raw(`${sent.join('\n')}\n`)
    const got = await answers
    assert.ok(got.includes('DENIED no secrets on the line'), got.join('|'))
    assert.deepEqual(
      got.filter((l) => !l.startsWith('DENIED')),
      sent.filter((l) => !l.includes('secret')).map((l) => l.toUpperCase()),
    )
    p.close()
    const order = gw
      .auditEvents()
      .filter((e) => e.type === 'statement' && typeof e.command === 'string' && e.command.startsWith('line '))
      .map((e) => e.command)
    assert.deepEqual(order, sent)
    // A line longer than the cap ends the connection, recorded in the plugin's own event type.
    const long = await lineClient(port, `${token} shout`)
    long.raw(`${'x'.repeat(5000)}\n`)
    assert.equal(await long.next(), 'ERR line too long')
    long.close()
    await new Promise((r) => setTimeout(r, 200))
    assert.ok(gw.auditEvents().some((e) => e.type === 'line.too_long' && e.connection === 'shout'))
    // A postgres connection name is not reachable through the line plugin.
    const wrong = await lineClient(port, `${token} app`)
    assert.match(wrong.greeting, /^ERR no line connection named "app"/)
    wrong.close()
  })
})

describe('configuration and plugin errors are refused at start', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gh-badconf-'))
  after(() => rmSync(dir, { recursive: true, force: true }))

  const cases: { name: string; doc: Record<string, unknown>; want: RegExp[] }[] = [
    {
      name: 'a bad tls mode',
      doc: { connections: [{ ...LOCAL_PG, tls: 'yes' }] },
      want: [/connections\[0\]\.tls: must be one of disable, require, verify-full \(got "yes"\)/],
    },
    {
      name: 'a literal password instead of a secret reference',
      doc: { connections: [{ ...LOCAL_PG, password: 'hunter2' }] },
      want: [/connections\[0\]\.password: must be a secret reference \(env:NAME or file:PATH\)/],
    },
    {
      name: 'an unknown key, a bad address and a duplicate name, all at once',
      doc: { colour: 'blue', connections: [LOCAL_PG, { ...LOCAL_PG, address: 'nowhere' }] },
      want: [
        /colour: unknown key/,
        /connections\[1\]\.name: duplicate connection name "app"/,
        /connections\[1\]\.address: is required as host:port/,
      ],
    },
    {
      name: 'a protocol no plugin serves',
      doc: { connections: [{ ...LOCAL_PG, protocol: 'gopher' }] },
      want: [/connections\[0\]\.protocol: no plugin serves "gopher" \(loaded: postgres, ssh, mcp, http, mcp-remote, kubernetes\)/],
    },
    {
      name: 'a missing plugin module',
      doc: { plugins: ['./no-such-plugin.js'] },
      want: [/plugin .*no-such-plugin\.js: cannot be loaded/],
    },
    {
      name: 'a plugin whose name is taken',
      doc: { plugins: ['./dup-plugin.js'] },
      want: [/plugin .*dup-plugin\.js: name "postgres" is already used by built-in postgres/],
    },
    {
      name: 'a plugin that declares no contract version',
      doc: { plugins: ['./no-contract.js'] },
      want: [/no-contract\.js: declares no contract version \(this gateway speaks plugin contract 1: add contract: 1\)/],
    },
    {
      name: 'a plugin written for another contract version',
      doc: { plugins: ['./old-contract.js'] },
      want: [/old-contract\.js: written for plugin contract 0, this gateway speaks contract 1/],
    },
    {
      name: 'a plugin asking for an unknown capability',
      doc: { plugins: ['./greedy.js'] },
      want: [/greedy\.js: asks for unknown capability "engine" \(known: fastPath, httpMounts, gateway, recordings\)/],
    },
    {
      name: 'a plugin whose dependency is not loaded',
      doc: { plugins: ['./needs-mysql.js'] },
      want: [/needs-mysql\.js: needs plugin "mysql", which is not loaded/],
    },
    {
      name: 'a module that is not a plugin',
      doc: { plugins: ['./not-a-plugin.js'] },
      want: [/not-a-plugin\.js: its default export .* must be an object with a name and a start/],
    },
  ]

  before(() => {
    writeFileSync(
      join(dir, 'dup-plugin.js'),
      "export default { name: 'postgres', async start() { return { address: null, async stop() {} } } }\n",
    )
    writeFileSync(join(dir, 'not-a-plugin.js'), 'export default 42\n')
    const stub = (fields: string): string => `export default { ${fields}, async start() { return { address: null, async stop() {} } } }\n`
    writeFileSync(join(dir, 'no-contract.js'), stub("name: 'nocontract'"))
    writeFileSync(join(dir, 'old-contract.js'), stub("name: 'oldcontract', contract: 0"))
    writeFileSync(join(dir, 'greedy.js'), stub("name: 'greedy', contract: 1, capabilities: ['engine']"))
    writeFileSync(join(dir, 'needs-mysql.js'), stub("name: 'needsmysql', contract: 1, requires: ['postgres', 'mysql']"))
  })

  for (const c of cases) {
    test(c.name, () => {
      const file = join(dir, `${c.name.replace(/\W+/g, '-')}.yaml`)
      writeFileSync(file, yaml.dump({ data_dir: join(dir, 'data'), listen: { api: '127.0.0.1:0', postgres: '127.0.0.1:0' }, ...c.doc }))
      const r = spawnSync(process.execPath, [BIN, 'serve', '--config', file], { encoding: 'utf8', timeout: 20_000 })
      assert.equal(r.status, 2, `should refuse to start (exit 2: configuration): ${r.stdout}`)
      assert.ok(r.stderr.includes(file) || /plugin/.test(r.stderr), `names the file: ${r.stderr}`)
      for (const w of c.want) assert.match(r.stderr, w)
      assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace for a configuration error')
    })
  }

  test('unparseable YAML names the file and the line', () => {
    const file = join(dir, 'broken.yaml')
    writeFileSync(file, 'connections:\n  - name: app\n   protocol: postgres\n')
    const r = spawnSync(process.execPath, [BIN, 'serve', '--config', file], { encoding: 'utf8', timeout: 20_000 })
    assert.equal(r.status, 2)
    assert.match(r.stderr, new RegExp(`${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: not valid YAML`))
    assert.match(r.stderr, /\(3:4\)/) // line 3, column 4
  })
})

describe('a plugin writes audit events only in its own namespace', () => {
  test('statement, result and <plugin>.<event> are its own; engine records are not', () => {
    assert.equal(pluginMayWrite('line', 'statement'), true)
    assert.equal(pluginMayWrite('line', 'result'), true)
    assert.equal(pluginMayWrite('line', 'line.too_long'), true)
    for (const t of [
      'session.start',
      'session.end',
      'approval.granted',
      'token.revoked',
      'audit.checkpoint',
      'mcp.call',
      'line.',
      'line',
      'liner.x',
    ]) {
      assert.equal(pluginMayWrite('line', t), false, t)
    }
  })
})
