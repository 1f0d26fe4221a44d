// Limits that keep one agent from taking the gateway's remote MCP capacity from everyone else:
// sessions per delegation chain's root (an agent mints sub-agent tokens at will, so a per-token
// limit alone is not one), with server-everything as the upstream.

import assert from 'node:assert/strict'
import { cpSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { REPO, TestGateway } from './helpers/gateway.js'
import { type McpUpstream, startEverything } from './helpers/mcpupstream.js'

const UPSTREAM_AUTH = 'Bearer mcp-limits-2b7e9f0c4d1a'
const PER_ROOT = 3

describe('remote MCP: limits', () => {
  let dir = ''
  let up: McpUpstream
  let gw: TestGateway
  let alice = ''
  let bob = ''

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gh-mcplim-'))
    up = await startEverything(UPSTREAM_AUTH)
    const policyDir = join(dir, 'policies')
    cpSync(join(REPO, 'policies'), policyDir, { recursive: true })
    rmSync(join(policyDir, 'default.cases.yaml'), { force: true })
    gw = await TestGateway.start({
      connections: [
        {
          name: 'everything',
          protocol: 'mcp-remote',
          url: up.url,
          inject_headers: { Authorization: 'env:GH_TEST_MCP_AUTH' },
          max_sessions_per_root: PER_ROOT,
        },
      ],
      config: { listen: { api: '127.0.0.1:0', postgres: 'off', ssh: 'off' }, policies: policyDir },
      env: { GH_TEST_MCP_AUTH: UPSTREAM_AUTH },
    })
    alice = gw.token('user:alice', ['--group', 'writers'])
    bob = gw.token('user:bob', ['--group', 'writers'])
  })

  after(async () => {
    await gw?.cleanup()
    await up?.stop()
    rmSync(dir, { recursive: true, force: true })
  })

  function delegate(parent: string, agent: string): string {
    const d = gw.cli(['token', 'delegate', '--agent', agent, '--token', parent, '--json'])
    assert.equal(d.code, 0, d.stderr)
    return (JSON.parse(d.stdout) as { access_token: string }).access_token
  }

  async function open(token: string): Promise<Client> {
    const client = new Client({ name: 'limits-agent', version: '1.0.0' })
    await client.connect(
      new StreamableHTTPClientTransport(new URL(`${gw.apiUrl}/mcp-remote/everything`), {
        requestInit: { headers: { authorization: `Bearer ${token}` } },
      }),
    )
    return client
  }

  async function initialize(token: string): Promise<{ status: number; body: string }> {
    const r = await fetch(`${gw.apiUrl}/mcp-remote/everything`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 1,
        method: 'initialize',
        params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } },
      }),
    })
    return { status: r.status, body: await r.text() }
  }

  test('one chain cannot take more than max_sessions_per_root sessions, however many sub-agents it mints', async () => {
    const agent = delegate(alice, 'flooder')
    const open1 = [await open(agent), await open(delegate(agent, 'flood1')), await open(delegate(agent, 'flood2'))]
    try {
      const before = up.seen.filter((m) => m.method === 'initialize').length
      // A fresh sub-agent token, the agent itself and the root: all the same chain, all refused.
      for (const t of [delegate(agent, 'flood3'), agent, alice]) {
        const r = await initialize(t)
        assert.equal(r.status, 429, r.body)
        assert.match(r.body, /too many open MCP sessions for user:alice and the agents it delegated to \(at most 3\)/)
      }
      assert.equal(up.seen.filter((m) => m.method === 'initialize').length, before, 'a refused session never reached the upstream')
      // Another root is not affected.
      const other = await open(bob)
      const { tools } = await other.listTools()
      assert.ok(tools.length > 0)
      await other.close()
      // The chain's sessions still work; closing one makes room for it again.
      await open1[0]?.listTools()
      // Ending a session (DELETE) frees its slot at once.
      const last = open1[2]
      assert.ok(last?.transport instanceof StreamableHTTPClientTransport)
      await last.transport.terminateSession()
      await last.close()
      const again = await open(delegate(agent, 'flood4'))
      await again.close()
    } finally {
      for (const c of open1) await c.close().catch(() => undefined)
    }
  })
})
