// SSH and MCP through a connector, in network namespaces made here: OpenSSH's sshd and PostgreSQL
// in a private namespace the gateway cannot route to, `gatehouse connector` in one that reaches
// both. The real ssh and scp clients, and the MCP SDK's client calling `query` and `exec`, work
// through the gateway while the connector is attached, and fail with an error naming it while it
// is not; policy sees the connector, and the audit of every session it carries names it.

import assert from 'node:assert/strict'
import { type SpawnSyncReturns, spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { ConnectorLab, until } from './helpers/connector.js'
import { psql } from './helpers/gateway.js'
import { sshClientSetup, TestSshd } from './helpers/sshd.js'

const lab = new ConnectorLab()
let sshd: TestSshd
let policyDir = ''
let alice = ''
let key = ''

const POLICY = `package gatehouse

default allow := false

allow if input.action in {"connect", "sql.session", "sql.read", "ssh.exec", "ssh.sftp", "mcp.call"}

deny contains {"rule": "edge-1-not-for-bob", "reason": "bob may not reach the private network"} if {
  input.action == "connect"
  input.connection.via == "edge-1"
  input.principal.id == "user:bob"
}
`

before(async () => {
  try {
    lab.setUpNetwork()
    sshd = await TestSshd.start({ netns: lab.net.privateNs, host: lab.net.privateAddress })
    policyDir = mkdtempSync(join(tmpdir(), 'gh-connector-policy-'))
    writeFileSync(join(policyDir, 'policy.rego'), POLICY)
    await lab.startGateway(
      [
        {
          name: 'pg',
          protocol: 'postgres',
          address: `${lab.net.privateAddress}:5432`,
          database: 'postgres',
          user: 'postgres',
          via: 'edge-1',
        },
        sshd.connection('box', { via: 'edge-1' }),
      ],
      { listen: { ssh: '127.0.0.1:0' }, policies: policyDir },
    )
    alice = lab.gateway.token('user:alice')
    ;({ key } = await lab.createKey('edge-1'))
  } catch (err) {
    await cleanup()
    throw err
  }
})

async function cleanup(): Promise<void> {
  await lab.cleanup()
  await sshd?.stop()
  if (policyDir) rmSync(policyDir, { recursive: true, force: true })
}

after(cleanup)

function ssh(args: readonly string[], token = alice): SpawnSyncReturns<string> {
  const c = sshClientSetup(lab.gateway.dir, token)
  return spawnSync('ssh', [...c.opts, '-p', String(lab.gateway.port('ssh')), ...args], {
    encoding: 'utf8',
    env: { ...process.env, ...c.env },
    input: '',
    timeout: 120_000,
  })
}

function scp(args: readonly string[]): SpawnSyncReturns<string> {
  const c = sshClientSetup(lab.gateway.dir, alice)
  return spawnSync('scp', [...c.opts, '-P', String(lab.gateway.port('ssh')), ...args], {
    encoding: 'utf8',
    env: { ...process.env, ...c.env },
    timeout: 120_000,
  })
}

async function mcpClient(token: string): Promise<Client> {
  const client = new Client({ name: 'gatehouse-connector-test', version: '1.0.0' })
  await client.connect(
    new StreamableHTTPClientTransport(new URL(`${lab.gateway.apiUrl}/mcp`), {
      requestInit: { headers: { authorization: `Bearer ${token}` } },
    }),
  )
  return client
}

async function call(
  client: Client,
  name: string,
  args: Record<string, unknown>,
): Promise<{ isError: boolean; data: Record<string, unknown>; text: string }> {
  const r = await client.callTool({ name, arguments: args })
  const content = Array.isArray(r.content) ? (r.content as { text?: string }[]) : []
  return {
    isError: r.isError === true,
    data: (r.structuredContent ?? {}) as Record<string, unknown>,
    text: content.map((c) => c.text ?? '').join('\n'),
  }
}

describe('connector: ssh, scp and MCP', () => {
  test('the gateway cannot reach sshd itself', () => {
    const r = spawnSync('ssh', ['-o', 'ConnectTimeout=2', '-o', 'BatchMode=yes', '-p', '22', `root@${lab.net.privateAddress}`, 'true'], {
      encoding: 'utf8',
      timeout: 30_000,
    })
    assert.notEqual(r.status, 0)
  })

  test('without the connector, ssh and an MCP query fail with an error naming it', async () => {
    const r = ssh(['box@127.0.0.1', 'echo should-not-run'])
    assert.notEqual(r.status, 0)
    assert.doesNotMatch(r.stdout, /should-not-run/)
    // The login ends with the gateway's reason, which OpenSSH prints (at its default LogLevel and
    // at ERROR, which these tests use); the audit has it too.
    assert.equal(r.status, 255)
    assert.match(r.stderr, /gatehouse: connection box is reached through connector edge-1, which is not connected/)
    assert.doesNotMatch(r.stderr, /Permission denied/)
    assert.ok(!r.stderr.includes(alice), 'the token is not echoed back')
    const refused = (await lab.auditEvents('session.refused')).filter((e) => e.connection === 'box')
    assert.ok(refused.length > 0)
    assert.match(String(refused[0]?.reason), /connection box is reached through connector edge-1, which is not connected/)
    const client = await mcpClient(alice)
    try {
      const q = await call(client, 'query', { connection: 'pg', sql: 'select 1' })
      assert.equal(q.isError, true)
      assert.match(q.text, /connection pg is reached through connector edge-1, which is not connected/)
      // exec logs in to the gateway's SSH listener, which ends the login with the same reason.
      const x = await call(client, 'exec', { connection: 'box', command: 'echo should-not-run' })
      assert.equal(x.isError, true)
      assert.doesNotMatch(x.text, /should-not-run/)
      assert.match(x.text, /connection box is reached through connector edge-1, which is not connected/)
    } finally {
      await client.close()
    }
  })

  test('with the connector attached, ssh runs a command on the private host', async () => {
    lab.startConnector(key)
    await lab.attached(1)
    // The command runs inside the private namespace: its addresses are the private network's.
    const r = ssh(['box@127.0.0.1', 'ip -o -4 addr show'])
    assert.equal(r.status, 0, r.stderr)
    assert.ok(r.stdout.includes(`${lab.net.privateAddress}/30`), r.stdout)
  })

  test('scp uploads and downloads through the connector, over sftp and the legacy protocol', () => {
    const data = Buffer.alloc(2_000_000)
    for (let i = 0; i < data.length; i++) data[i] = (i * 7919) & 0xff
    const src = join(lab.gateway.dir, 'upload.bin')
    writeFileSync(src, data)
    for (const legacy of [false, true]) {
      const remote = join(sshd.dir, `remote-${legacy ? 'legacy' : 'sftp'}.bin`)
      const back = join(lab.gateway.dir, `back-${legacy ? 'legacy' : 'sftp'}.bin`)
      const flags = legacy ? ['-O'] : []
      const up = scp([...flags, src, `box@127.0.0.1:${remote}`])
      assert.equal(up.status, 0, up.stderr)
      assert.deepEqual(readFileSync(remote), data)
      const down = scp([...flags, `box@127.0.0.1:${remote}`, back])
      assert.equal(down.status, 0, down.stderr)
      assert.deepEqual(readFileSync(back), data)
    }
  })

  test('MCP query and exec reach the private network through the connector', async () => {
    const client = await mcpClient(alice)
    try {
      const q = await call(client, 'query', { connection: 'pg', sql: 'select host(inet_server_addr()) as addr' })
      assert.equal(q.isError, false, q.text)
      assert.deepEqual(q.data.rows, [[lab.net.privateAddress]])
      const x = await call(client, 'exec', { connection: 'box', command: 'echo exec-inside' })
      assert.equal(x.isError, false, x.text)
      assert.equal(x.data.stdout, 'exec-inside\n')
    } finally {
      await client.close()
    }
  })

  test('policy decides with the connector in its input', async () => {
    const bob = lab.gateway.token('user:bob')
    const r = psql(lab.gateway.conninfo(bob, 'pg'), 'select 1')
    assert.notEqual(r.code, 0)
    assert.match(r.stderr, /bob may not reach the private network/)
    const s = ssh(['box@127.0.0.1', 'echo should-not-run'], bob)
    assert.equal(s.status, 255)
    assert.doesNotMatch(s.stdout, /should-not-run/)
    assert.match(s.stderr, /gatehouse: access denied: bob may not reach the private network/)
    assert.ok(!s.stderr.includes(bob), 'the token is not echoed back')
    // A credential that fails is told only that, and nothing about the connection or its connector.
    const forged = ssh(['box@127.0.0.1', 'echo should-not-run'], `${bob.slice(0, -4)}AAAA`)
    assert.equal(forged.status, 255)
    assert.match(forged.stderr, /Permission denied/)
    assert.doesNotMatch(forged.stderr, /gatehouse:|edge-1|private network/)
    const refused = (await lab.auditEvents('session.refused')).filter((e) => e.connection === 'box' && e.chain?.toString() === 'user:bob')
    assert.match(String(refused[0]?.reason), /bob may not reach the private network/)
  })

  test('the audit names the connector on every session it carried', async () => {
    const starts = await lab.auditEvents('session.start')
    const carried = starts.filter((e) => e.connection === 'pg' || e.connection === 'box')
    // ssh (one command, scp up and down twice), the MCP PostgreSQL and SSH sessions.
    assert.ok(carried.length >= 6, `${carried.length} sessions`)
    const [attached] = await lab.auditEvents('connector.attached')
    assert.equal(attached?.connector, 'edge-1')
    assert.deepEqual(attached?.chain, ['service:edge-1'])
    // The connector by name, by the link it attached (which connector.attached ties to its
    // credential) and by principal.
    for (const e of carried) {
      assert.equal(e.via, 'edge-1', JSON.stringify(e))
      assert.equal(e.via_link, attached?.link, JSON.stringify(e))
      assert.equal(e.via_principal, 'service:edge-1', JSON.stringify(e))
    }
  })

  test('killing the connector under a live ssh session ends it with the connector named, every time', async () => {
    // Several rounds: which of the link's close and its streams' ends the gateway sees first
    // varies from run to run, and the client must be told the connector's name either way.
    for (let round = 0; round < 3; round++) {
      if (lab.running().length === 0) {
        lab.startConnector(key)
        await lab.attached(1)
      }
      const c = sshClientSetup(lab.gateway.dir, alice)
      const live = spawn('ssh', [...c.opts, '-p', String(lab.gateway.port('ssh')), 'box@127.0.0.1', 'echo started; sleep 60'], {
        env: { ...process.env, ...c.env },
        stdio: ['ignore', 'pipe', 'pipe'],
      })
      let out = ''
      let err = ''
      live.stdout.on('data', (d: Buffer) => {
        out += d.toString()
      })
      live.stderr.on('data', (d: Buffer) => {
        err += d.toString()
      })
      const closed = new Promise<number | null>((r) => live.once('close', (code) => r(code)))
      await until('the remote command running', () => out.includes('started'), 60_000)
      for (const p of lab.running()) await lab.stopConnector(p, 'SIGKILL')
      const code = await closed
      assert.notEqual(code, 0)
      assert.doesNotMatch(out, /\n.+/, 'nothing ran on after the connector was gone')
      assert.match(err, /gatehouse: session ended: connector edge-1 disconnected/, `round ${round}: ${err}`)
      await until('the link gone', async () => (await lab.links()).length === 0)
    }
  })
})
