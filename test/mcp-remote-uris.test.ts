// A resource URI is judged in the form the upstream reads it. The upstream's SDK parses a URI as a
// WHATWG URL (scheme lower-cased, leading and trailing spaces and controls trimmed, tabs and
// newlines removed anywhere), so a rule on the string as sent could be passed by another spelling
// of a denied URI. The gateway judges the canonical form, sends exactly that, refuses a URI that
// does not parse, and decides contents the upstream returns under another URI than the one read.

import assert from 'node:assert/strict'
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { REPO, TestGateway } from './helpers/gateway.js'
import { SECRET_TEXT, startHostile } from './helpers/mcphostile.js'
import { type McpUpstream, rpcError } from './helpers/mcpupstream.js'

const UPSTREAM_AUTH = 'Bearer mcp-uris-9d3c6b1a0e2f'

const POLICY = `package gatehouse

deny contains {"rule": "no-secret-res", "reason": "secret resources are closed"} if {
	input.action == "mcp.resource"
	startswith(input.command.uri, "secret:")
}
`

describe('remote MCP: resource URIs are judged as the upstream reads them', () => {
  let dir = ''
  let up: McpUpstream
  let gw: TestGateway
  let client: Client

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gh-mcpuri-'))
    up = await startHostile(UPSTREAM_AUTH)
    const policyDir = join(dir, 'policies')
    cpSync(join(REPO, 'policies'), policyDir, { recursive: true })
    rmSync(join(policyDir, 'default.cases.yaml'), { force: true })
    writeFileSync(join(policyDir, 'mcp_uri_rules.rego'), POLICY)
    gw = await TestGateway.start({
      connections: [{ name: 'hostile', protocol: 'mcp-remote', url: up.url, inject_headers: { Authorization: 'env:GH_TEST_MCP_AUTH' } }],
      config: { listen: { api: '127.0.0.1:0', postgres: 'off', ssh: 'off' }, policies: policyDir },
      env: { GH_TEST_MCP_AUTH: UPSTREAM_AUTH },
    })
    const alice = gw.token('user:alice', ['--group', 'writers'])
    client = new Client({ name: 'uri-agent', version: '1.0.0' })
    await client.connect(
      new StreamableHTTPClientTransport(new URL(`${gw.apiUrl}/mcp-remote/hostile`), {
        requestInit: { headers: { authorization: `Bearer ${alice}` } },
      }),
    )
  })

  after(async () => {
    await client?.close()
    await gw?.cleanup()
    await up?.stop()
    rmSync(dir, { recursive: true, force: true })
  })

  const reads = (): string[] =>
    up.seen.filter((m) => m.method === 'resources/read').map((m) => String((m.params as { uri?: unknown } | undefined)?.uri))

  test('every spelling of a denied URI is denied, audited in its canonical form, and never read', async () => {
    const { resources } = await client.listResources()
    assert.ok(!resources.some((r) => r.uri === 'secret://x'), 'the denied resource is not listed')
    for (const uri of ['secret://x', 'SECRET://x', ' secret://x', 'sec\tret://x', 's\necret://\rx', 'Secret://x\u0000']) {
      const err = await rpcError(client.readResource({ uri }))
      assert.equal(err.code, -32010, JSON.stringify(uri))
      assert.equal((err.data as { rule: string }).rule, 'no-secret-res')
    }
    assert.deepEqual(reads(), [], 'no read reached the upstream')
    const statements = gw.auditEvents().filter((e) => e.type === 'statement' && e.action === 'mcp.resource')
    assert.equal(statements.length, 6)
    for (const e of statements) {
      assert.equal(e.uri, 'secret://x')
      assert.equal(e.decision, 'deny')
    }
  })

  test('a URI that does not parse is refused before any decision; nothing reaches the upstream', async () => {
    for (const uri of ['not a uri', '', '://x', 'secret']) {
      const err = await rpcError(client.readResource({ uri }))
      assert.equal(err.code, -32602, JSON.stringify(uri))
      assert.match(err.message, /does not parse/)
    }
    assert.deepEqual(reads(), [])
  })

  test('an allowed URI is sent upstream exactly as judged: its canonical form', async () => {
    const r = await client.readResource({ uri: ' PUBLIC://y\t' })
    assert.equal(r.contents[0]?.uri, 'public://y')
    assert.deepEqual(reads(), ['public://y'])
    const e = gw.auditEvents().filter((x) => x.type === 'statement' && x.action === 'mcp.resource' && x.decision === 'allow')
    assert.equal(e.at(-1)?.uri, 'public://y')
  })

  test('contents returned under another URI than the one read are decided: a denied one is withheld', async () => {
    const r = await client.readResource({ uri: 'alias://z' })
    assert.ok(!JSON.stringify(r).includes(SECRET_TEXT), JSON.stringify(r))
    assert.equal(r.contents.length, 1)
    assert.equal(r.contents[0]?.uri, 'alias://z')
    assert.match(
      String((r.contents[0] as { text?: string }).text),
      /^gatehouse: withheld contents of another resource: secret resources are closed/,
    )
  })
})
