// The MCP `exec` tool against a real sshd, through the gateway's own SSH listener (the token as the
// password, the gateway's host key checked): allowed commands run and return their output and exit
// status; a command the policy refuses comes back as a tool result saying why, and never runs.

import assert from 'node:assert/strict'
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { REPO, TestGateway } from './helpers/gateway.js'
import { TestSshd } from './helpers/sshd.js'

describe('MCP exec over SSH', () => {
  let sshd: TestSshd
  let gw: TestGateway
  let policyDir: string
  let client: Client

  before(async () => {
    sshd = await TestSshd.start()
    policyDir = mkdtempSync(join(tmpdir(), 'gh-mcp-ssh-policy-'))
    copyFileSync(join(REPO, 'test/data/ssh/policy.rego'), join(policyDir, 'policy.rego'))
    writeFileSync(join(policyDir, 'mcp.rego'), 'package gatehouse\n\nallow if input.action == "mcp.call"\n')
    gw = await TestGateway.start({
      connections: [sshd.connection('web-1', { labels: { env: 'test' } })],
      config: { listen: { api: '127.0.0.1:0', postgres: 'off', ssh: '127.0.0.1:0' }, policies: policyDir },
    })
    const token = gw.token('user:alice')
    client = new Client({ name: 'gatehouse-test', version: '1.0.0' })
    await client.connect(
      new StreamableHTTPClientTransport(new URL(`${gw.apiUrl}/mcp`), { requestInit: { headers: { authorization: `Bearer ${token}` } } }),
    )
  })

  after(async () => {
    await client?.close()
    await gw?.cleanup()
    await sshd?.stop()
    rmSync(policyDir, { recursive: true, force: true })
  })

  async function call(name: string, args: Record<string, unknown>) {
    const r = await client.callTool({ name, arguments: args })
    return { isError: r.isError === true, data: (r.structuredContent ?? {}) as Record<string, unknown> }
  }

  test('tools follow the listeners: exec, no query without a PostgreSQL listener', async () => {
    const tools = (await client.listTools()).tools.map((t) => t.name)
    assert.ok(tools.includes('exec'))
    assert.ok(!tools.includes('query'))
    const conns = await call('list_connections', {})
    assert.deepEqual(conns.data.connections, [{ name: 'web-1', protocol: 'ssh', labels: { env: 'test' } }])
  })

  test('an allowed command runs and returns its output and exit status', async () => {
    const r = await call('exec', { connection: 'web-1', command: 'echo hello; ls /nonexistent-gatehouse; exit 3' })
    assert.equal(r.isError, false)
    assert.equal(r.data.stdout, 'hello\n')
    assert.match(String(r.data.stderr), /nonexistent-gatehouse/)
    assert.equal(r.data.exit_code, 3)
  })

  test('a refused command is a tool result that says why, and does not run', async () => {
    const dir = join(sshd.dir, 'keep-me')
    mkdirSync(dir, { recursive: true })
    const r = await call('exec', { connection: 'web-1', command: `rm -rf ${dir}` })
    assert.equal(r.isError, true)
    assert.equal(r.data.status, 'denied')
    assert.match(String(r.data.reason), /recursive forced deletes are not allowed/)
    assert.ok(existsSync(dir), 'the command did not run')
    const events = gw.auditEvents().filter((e) => e.type === 'mcp.call' && e.tool === 'exec')
    assert.equal(events.length, 2)
    assert.deepEqual(events[1]?.chain, ['user:alice'])
    assert.equal(events[1]?.connection, 'web-1')
  })
})
