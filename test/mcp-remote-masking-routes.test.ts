// Every upstream→agent message of a masked session is treated as a result: the routes past a
// JSON-path rule besides results are tried by a hostile upstream (helpers/mcphostile.ts) and must
// not carry a classified value to the agent (the official SDK client), checked raw on the wire:
// list answers (_meta, descriptions, titles, names), progress notifications (_meta), sampling and
// elicitation made outside any call (on the agent's GET stream), a resource link's name and title,
// and the server's instructions. Allowed work still works, and a connection no rule can reach keeps
// everything. The injected credential as an object key or a number gets a clear answer, not a hang.

import assert from 'node:assert/strict'
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { after, before, describe, test } from 'node:test'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { CreateMessageRequestSchema, ElicitRequestSchema } from '@modelcontextprotocol/sdk/types.js'
import { REPO, TestGateway } from './helpers/gateway.js'
import { OUT_OF_BAND, SSN, startHostile } from './helpers/mcphostile.js'
import type { McpUpstream } from './helpers/mcpupstream.js'

const UPSTREAM_AUTH = 'Bearer mcp-hostile-routes-5d2c'
/** A numeric API key, as some upstreams use. */
const NUMERIC_AUTH = '987654321012345'

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
  asked: string[]
}

async function agent(gw: TestGateway, token: string, connection: string): Promise<Agent> {
  const client = new Client({ name: 'routes-agent', version: '1.0.0' }, { capabilities: { sampling: {}, elicitation: {} } })
  const asked: string[] = []
  client.setRequestHandler(CreateMessageRequestSchema, async (r) => {
    asked.push(`sampling ${JSON.stringify(r.params)}`)
    return { model: 'test-model', role: 'assistant', content: { type: 'text', text: 'no' } }
  })
  client.setRequestHandler(ElicitRequestSchema, async (r) => {
    asked.push(`elicitation ${JSON.stringify(r.params)}`)
    return { action: 'decline' }
  })
  const wire: string[] = []
  const transport = new StreamableHTTPClientTransport(new URL(`${gw.apiUrl}/mcp-remote/${connection}`), {
    requestInit: { headers: { authorization: `Bearer ${token}` } },
  })
  // Wrapped before connecting: the initialize answer (server info, instructions) is on the wire too.
  const started = transport.start.bind(transport)
  transport.start = async () => {
    await started()
    const onmessage = transport.onmessage
    transport.onmessage = (...args: Parameters<NonNullable<typeof onmessage>>) => {
      wire.push(JSON.stringify(args[0]))
      onmessage?.(...args)
    }
  }
  await client.connect(transport)
  return { client, wire, asked }
}

function noSsn(wire: readonly string[]): void {
  assert.ok(wire.length > 0, 'the agent received something')
  for (const m of wire) for (const v of SSN) assert.ok(!m.includes(v), `a classified value reached the agent: ${m}`)
}

async function waitFor(cond: () => boolean, what: string): Promise<void> {
  const until = Date.now() + 90_000
  while (!cond()) {
    if (Date.now() > until) assert.fail(`timed out waiting for ${what}`)
    await sleep(50)
  }
}

describe('remote MCP: every message of a masked session is masked like a result', () => {
  let dir = ''
  let up: McpUpstream
  let numeric: McpUpstream
  let gw: TestGateway
  let alice = ''

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gh-mcproutes-'))
    up = await startHostile(UPSTREAM_AUTH)
    numeric = await startHostile(NUMERIC_AUTH)
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
        { name: 'numeric', protocol: 'mcp-remote', url: numeric.url, inject_headers: { Authorization: 'env:GH_TEST_MCP_NUM' } },
      ],
      config: { listen: { api: '127.0.0.1:0', postgres: 'off', ssh: 'off' }, policies: policyDir },
      env: { GH_TEST_MCP_AUTH: UPSTREAM_AUTH, GH_TEST_MCP_NUM: NUMERIC_AUTH },
    })
    alice = gw.token('user:alice', ['--group', 'writers'])
  })

  after(async () => {
    await gw?.cleanup()
    await up?.stop()
    await numeric?.stop()
    rmSync(dir, { recursive: true, force: true })
  })

  test('lists: _meta is masked, descriptions and display names withheld; what is listed still works', async () => {
    for (const connection of ['masked', 'rego']) {
      const a = await agent(gw, alice, connection)
      try {
        const tools = await a.client.listTools()
        const lister = tools.tools.find((t) => t.name === 'lister')
        assert.ok(lister, connection)
        assert.match(String(lister.description), /^gatehouse: withheld/)
        assert.equal(lister.title, undefined)
        assert.equal(lister.annotations?.readOnlyHint, true)
        assert.ok(lister.inputSchema.properties?.q, 'the schema keeps its structure')
        const resources = await a.client.listResources()
        const listed = resources.resources.find((r) => r.uri === 'listed://a')
        assert.ok(listed, connection)
        assert.match(listed.name, /^gatehouse: withheld/)
        const templates = await a.client.listResourceTemplates()
        assert.equal(templates.resourceTemplates[0]?.uriTemplate, 'tmpl://{id}')
        const prompts = await a.client.listPrompts()
        const p1 = prompts.prompts.find((p) => p.name === 'p1')
        assert.deepEqual(
          p1?.arguments?.map((x) => x.name),
          ['a'],
        )
        assert.match(String(a.client.getInstructions()), /^gatehouse: withheld/)
        // Allowed work still works.
        const r = await a.client.callTool({ name: 'lister', arguments: { q: 'x' } })
        assert.deepEqual(r.content, [{ type: 'text', text: '{"listed":true}' }])
        assert.equal((await a.client.readResource({ uri: 'listed://a' })).contents.length, 1)
        noSsn(a.wire)
      } finally {
        await a.client.close()
      }
    }
    // No rule can reach this connection: the lists pass as the upstream wrote them.
    const b = await agent(gw, alice, 'plain')
    try {
      const lister = (await b.client.listTools()).tools.find((t) => t.name === 'lister')
      assert.equal(lister?.description, `returns the ssn ${SSN[1]}`)
      assert.equal(b.client.getInstructions(), `use the record of ssn ${SSN[0]}`)
    } finally {
      await b.client.close()
    }
  })

  test('progress: only the numbers are relayed (no message, no _meta)', async () => {
    const a = await agent(gw, alice, 'masked')
    try {
      const progress: string[] = []
      await a.client.callTool({ name: 'person', arguments: { mode: 'progress' } }, undefined, {
        onprogress: (p) => progress.push(JSON.stringify(p)),
      })
      assert.deepEqual(
        progress.map((p) => JSON.parse(p) as unknown),
        [{ progress: 1, total: 2 }],
      )
      noSsn(a.wire)
    } finally {
      await a.client.close()
    }
  })

  test('sampling and elicitation made outside any call are refused on a masked session, relayed on another', async () => {
    for (const connection of ['masked', 'rego']) {
      const a = await agent(gw, alice, connection)
      try {
        OUT_OF_BAND.length = 0
        await a.client.callTool({ name: 'person', arguments: { mode: 'later' } })
        await waitFor(() => OUT_OF_BAND.length === 2, 'the upstream to learn how its requests ended')
        assert.ok(
          OUT_OF_BAND.every((o) => o.includes('failed') && o.includes('masking rules apply')),
          JSON.stringify(OUT_OF_BAND),
        )
        assert.deepEqual(a.asked, [], 'nothing reached the agent')
        noSsn(a.wire)
      } finally {
        await a.client.close()
      }
    }
    const b = await agent(gw, alice, 'plain')
    try {
      OUT_OF_BAND.length = 0
      await b.client.callTool({ name: 'person', arguments: { mode: 'later' } })
      await waitFor(() => OUT_OF_BAND.length === 2, 'the upstream to learn how its requests ended')
      assert.deepEqual(OUT_OF_BAND.sort(), ['elicitation ok', 'sampling ok'])
      assert.equal(b.asked.length, 2)
    } finally {
      await b.client.close()
    }
  })

  test("a resource link's name and title are withheld; its URI stays readable", async () => {
    for (const connection of ['masked', 'rego']) {
      const a = await agent(gw, alice, connection)
      try {
        const r = await a.client.callTool({ name: 'person', arguments: { mode: 'link' } })
        const link = (r.content as Record<string, unknown>[])[1] ?? {}
        assert.equal(link.type, 'resource_link')
        assert.equal(link.uri, 'public://y')
        assert.match(String(link.name), /^gatehouse: withheld/)
        assert.equal(link.title, undefined)
        noSsn(a.wire)
      } finally {
        await a.client.close()
      }
    }
  })

  test('the injected credential as an object key or a number: a clear answer, never a hang', async () => {
    const keyed = await agent(gw, alice, 'plain')
    try {
      const secret = UPSTREAM_AUTH.replace(/^Bearer /, '')
      const r = await keyed.client.callTool({ name: 'person', arguments: { mode: 'credkey' } }, undefined, { timeout: 20_000 })
      assert.deepEqual(r.structuredContent, { [secret.replace(/./g, '*')]: 1 })
      for (const m of keyed.wire) assert.ok(!m.includes(secret), m)
    } finally {
      await keyed.client.close()
    }
    const a = await agent(gw, alice, 'numeric')
    try {
      for (const mode of ['credkey', 'crednum']) {
        let answered: unknown
        try {
          answered = await a.client.callTool({ name: 'person', arguments: { mode } }, undefined, { timeout: 20_000 })
        } catch (err) {
          const e = err as { code?: number; message?: string }
          assert.equal(e.code, -32012, `${mode}: ${String(err)}`)
          assert.match(String(e.message), /credential the gateway injects/)
          answered = err
        }
        assert.ok(answered !== undefined, mode)
        for (const m of a.wire) assert.ok(!m.includes(NUMERIC_AUTH), m)
      }
      // The session goes on.
      const r = await a.client.callTool({ name: 'lister', arguments: {} })
      assert.deepEqual(r.content, [{ type: 'text', text: '{"listed":true}' }])
    } finally {
      await a.client.close()
    }
  })
})
