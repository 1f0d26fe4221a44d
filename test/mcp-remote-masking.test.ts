// Masking of what a remote MCP server returns fails closed, whatever field the upstream puts a
// classified value in: under a JSON-path rule (masking.yaml or a Rego `mask` entry), the whole
// result is masked as JSON (`_meta` of results, content items and resource contents, annotations,
// unknown fields), free text the masker cannot read (a prompt's description, an upstream error's
// message and data, a progress message) is withheld, and the upstream's requests of the agent
// (sampling) are not relayed while a masked call is in flight. The upstream is hostile
// (helpers/mcphostile.ts); every message the agent receives is checked raw, on the wire.

import assert from 'node:assert/strict'
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { CreateMessageRequestSchema } from '@modelcontextprotocol/sdk/types.js'
import { REPO, TestGateway } from './helpers/gateway.js'
import { SSN, startHostile } from './helpers/mcphostile.js'
import { type McpUpstream, rpcError } from './helpers/mcpupstream.js'

const UPSTREAM_AUTH = 'Bearer mcp-hostile-4f1e8a2b9c7d'

const MASKING = `rules:
  - name: ssn
    json_paths: ["$..ssn"]
    connections: [masked]
    strategy: redact
detectors: []
`

const POLICY = `package gatehouse

mask contains {"rule": "person-ssn", "json_path": "$..ssn", "strategy": "redact"} if {
	input.action == "mcp.call"
	input.connection.name == "rego"
	input.command.tool == "person"
}
`

interface Agent {
  client: Client
  /** Every message the agent received, raw. */
  wire: string[]
  sampled: string[]
}

async function agent(gw: TestGateway, token: string, connection: string): Promise<Agent> {
  const client = new Client({ name: 'masking-agent', version: '1.0.0' }, { capabilities: { sampling: {} } })
  const sampled: string[] = []
  client.setRequestHandler(CreateMessageRequestSchema, async (r) => {
    sampled.push(JSON.stringify(r.params))
    return { model: 'test-model', role: 'assistant', content: { type: 'text', text: 'no' } }
  })
  const transport = new StreamableHTTPClientTransport(new URL(`${gw.apiUrl}/mcp-remote/${connection}`), {
    requestInit: { headers: { authorization: `Bearer ${token}` } },
  })
  await client.connect(transport)
  const wire: string[] = []
  const onmessage = transport.onmessage
  transport.onmessage = (...args: Parameters<NonNullable<typeof onmessage>>) => {
    wire.push(JSON.stringify(args[0]))
    onmessage?.(...args)
  }
  return { client, wire, sampled }
}

function noSsn(wire: readonly string[]): void {
  assert.ok(wire.length > 0, 'the agent received something')
  for (const m of wire) for (const v of SSN) assert.ok(!m.includes(v), `a classified value reached the agent: ${m}`)
}

describe('remote MCP: masking covers the whole result', () => {
  let dir = ''
  let up: McpUpstream
  let gw: TestGateway
  let alice = ''

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gh-mcpmask-'))
    up = await startHostile(UPSTREAM_AUTH)
    const policyDir = join(dir, 'policies')
    cpSync(join(REPO, 'policies'), policyDir, { recursive: true })
    rmSync(join(policyDir, 'default.cases.yaml'), { force: true })
    writeFileSync(join(policyDir, 'masking.yaml'), MASKING)
    writeFileSync(join(policyDir, 'mcp_masking_rules.rego'), POLICY)
    const conn = { protocol: 'mcp-remote', url: up.url, inject_headers: { Authorization: 'env:GH_TEST_MCP_AUTH' } }
    gw = await TestGateway.start({
      connections: [
        { name: 'masked', ...conn },
        { name: 'rego', ...conn },
        { name: 'plain', ...conn },
      ],
      config: { listen: { api: '127.0.0.1:0', postgres: 'off', ssh: 'off' }, policies: policyDir },
      env: { GH_TEST_MCP_AUTH: UPSTREAM_AUTH },
    })
    alice = gw.token('user:alice', ['--group', 'writers'])
  })

  after(async () => {
    await gw?.cleanup()
    await up?.stop()
    rmSync(dir, { recursive: true, force: true })
  })

  test('tool results: _meta of the result and of a content item, annotations and unknown fields are masked', async () => {
    for (const connection of ['masked', 'rego']) {
      const a = await agent(gw, alice, connection)
      try {
        const meta = await a.client.callTool({ name: 'person', arguments: { mode: 'meta' } })
        assert.deepEqual(meta._meta, { name: 'Alice', ssn: '****', nested: { ssn: '****' } }, connection)
        assert.deepEqual(JSON.parse((meta.content as { text: string }[])[0]?.text ?? ''), {
          name: 'Alice',
          ssn: '****',
          nested: { ssn: '****' },
        })
        const item = await a.client.callTool({ name: 'person', arguments: { mode: 'item' } })
        const first = (item.content as Record<string, unknown>[])[0] ?? {}
        assert.deepEqual(first._meta, { ssn: '****' }, connection)
        // The SDKs may drop an annotation MCP does not define; if it arrives, it is masked.
        assert.notEqual((first.annotations as { ssn?: string } | undefined)?.ssn, SSN[3])
        await a.client.callTool({ name: 'person', arguments: { mode: 'unknown' } })
        noSsn(a.wire)
      } finally {
        await a.client.close()
      }
    }
  })

  test('without a rule the same fields pass (the masking is the rule, not a filter of its own)', async () => {
    const a = await agent(gw, alice, 'plain')
    try {
      const meta = await a.client.callTool({ name: 'person', arguments: { mode: 'meta' } })
      assert.equal((meta._meta as { ssn: string }).ssn, SSN[0])
    } finally {
      await a.client.close()
    }
  })

  test('the injected credential echoed lower- or upper-cased reaches the agent masked', async () => {
    const a = await agent(gw, alice, 'plain')
    try {
      const r = await a.client.callTool({ name: 'person', arguments: { mode: 'leak' } })
      const secret = UPSTREAM_AUTH.replace(/^Bearer /, '')
      for (const m of a.wire) {
        assert.ok(!m.toLowerCase().includes(secret.toLowerCase()), m)
      }
      assert.match(JSON.stringify(r.content), /lower.*\*{10,}.*upper.*\*{10,}/)
    } finally {
      await a.client.close()
    }
  })

  test('resources/read: _meta of the result and of each contents entry are masked', async () => {
    const a = await agent(gw, alice, 'masked')
    try {
      const r = await a.client.readResource({ uri: 'public://y' })
      assert.deepEqual(r._meta, { ssn: '****' })
      assert.deepEqual(r.contents[0]?._meta, { ssn: '****' })
      assert.deepEqual(JSON.parse(String((r.contents[0] as { text?: string }).text)), { ssn: '****', ok: 1 })
      noSsn(a.wire)
    } finally {
      await a.client.close()
    }
  })

  test("prompts/get: the description is withheld, _meta and the messages' JSON masked", async () => {
    const a = await agent(gw, alice, 'masked')
    try {
      const p = await a.client.getPrompt({ name: 'p1', arguments: { a: 'x' } })
      assert.match(String(p.description), /^gatehouse: withheld .*masking rules/)
      assert.deepEqual(p._meta, { ssn: '****' })
      const content = p.messages[0]?.content as { text: string; _meta?: unknown }
      assert.deepEqual(JSON.parse(content.text), { ssn: '****', a: 1 })
      assert.deepEqual(content._meta, { ssn: '****' })
      noSsn(a.wire)
    } finally {
      await a.client.close()
    }
  })

  test("upstream errors: the message is withheld and the data dropped; the upstream's code stays", async () => {
    const a = await agent(gw, alice, 'masked')
    try {
      const read = await rpcError(a.client.readResource({ uri: 'boom://x' }))
      assert.equal(read.code, -32050)
      assert.match(read.message, /gatehouse: withheld the upstream's error message: masking rules apply/)
      assert.equal(read.data, undefined)
      const prompt = await rpcError(a.client.getPrompt({ name: 'boomp' }))
      assert.equal(prompt.code, -32050)
      assert.match(prompt.message, /gatehouse: withheld/)
      noSsn(a.wire)
    } finally {
      await a.client.close()
    }
    // Without a rule, the upstream's own message reaches the agent.
    const b = await agent(gw, alice, 'plain')
    try {
      const read = await rpcError(b.client.readResource({ uri: 'boom://x' }))
      assert.match(read.message, /record/)
    } finally {
      await b.client.close()
    }
  })

  test("a masked call's progress message is dropped and its sampling request is not relayed", async () => {
    const a = await agent(gw, alice, 'masked')
    try {
      const progress: string[] = []
      await a.client.callTool({ name: 'person', arguments: { mode: 'progress' } }, undefined, {
        onprogress: (p) => progress.push(JSON.stringify(p)),
      })
      assert.equal(progress.length, 1, 'progress itself is relayed')
      assert.ok(!progress[0]?.includes('message'), progress[0])
      const s = await a.client.callTool({ name: 'person', arguments: { mode: 'sample' } })
      assert.equal(a.sampled.length, 0, 'the sampling request did not reach the agent')
      assert.match(JSON.stringify(s.content), /sampling_failed/)
      noSsn(a.wire)
    } finally {
      await a.client.close()
    }
    // Without a rule, sampling is relayed as before.
    const b = await agent(gw, alice, 'plain')
    try {
      await b.client.callTool({ name: 'person', arguments: { mode: 'sample' } })
      assert.equal(b.sampled.length, 1)
    } finally {
      await b.client.close()
    }
  })

  test('the result events count what was masked and withheld', () => {
    const events = gw.auditEvents().filter((e) => e.type === 'result' && Array.isArray(e.masked))
    assert.ok(events.length > 0)
    assert.ok(!JSON.stringify(gw.auditEvents()).includes(SSN[0]))
  })
})
