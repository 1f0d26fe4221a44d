// Every upstream→agent message of a masked session is treated as a result: the routes past a
// JSON-path rule besides results are tried by a hostile upstream (helpers/mcphostile.ts) and must
// not carry a classified value to the agent (the official SDK client), checked raw on the wire:
// list answers (_meta, descriptions, titles, names), progress notifications (_meta), sampling and
// elicitation made outside any call (on the agent's GET stream), a resource link's name and title,
// and the server's instructions. Allowed work still works, and a connection no rule can reach keeps
// everything. The injected credential as an object key or a number gets a clear answer, not a hang.

import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import { after, before, describe, test } from 'node:test'
import type { TestGateway } from './helpers/gateway.js'
import { MASKING_SSN, mcpRemoteGateway, noneOf, recordingAgent, REGO_SSN } from './helpers/mcpagent.js'
import { OUT_OF_BAND, SSN, startHostile } from './helpers/mcphostile.js'
import type { McpUpstream } from './helpers/mcpupstream.js'

const UPSTREAM_AUTH = 'Bearer mcp-hostile-routes-5d2c'
/** A numeric API key, as some upstreams use. */
const NUMERIC_AUTH = '987654321012345'

async function waitFor(cond: () => boolean, what: string): Promise<void> {
  const until = Date.now() + 90_000
  while (!cond()) {
    if (Date.now() > until) assert.fail(`timed out waiting for ${what}`)
    await sleep(50)
  }
}

describe('remote MCP: every message of a masked session is masked like a result', () => {
  let up: McpUpstream
  let numeric: McpUpstream
  let gw: TestGateway
  let cleanup = async (): Promise<void> => {}
  let alice = ''

  before(async () => {
    up = await startHostile(UPSTREAM_AUTH)
    numeric = await startHostile(NUMERIC_AUTH)
    const conn = (name: string) => ({ name, url: up.url, authEnv: 'GH_TEST_MCP_AUTH' })
    ;({ gw, cleanup } = await mcpRemoteGateway({
      connections: [conn('masked'), conn('rego'), conn('plain'), { name: 'numeric', url: numeric.url, authEnv: 'GH_TEST_MCP_NUM' }],
      env: { GH_TEST_MCP_AUTH: UPSTREAM_AUTH, GH_TEST_MCP_NUM: NUMERIC_AUTH },
      files: { 'masking.yaml': MASKING_SSN, 'mcp_masking_rules.rego': REGO_SSN },
    }))
    alice = gw.token('user:alice', ['--group', 'writers'])
  })

  after(async () => {
    await cleanup()
    await up?.stop()
    await numeric?.stop()
  })

  test('lists: _meta is masked, descriptions and display names withheld; what is listed still works', async () => {
    for (const connection of ['masked', 'rego']) {
      const a = await recordingAgent(gw, alice, connection, { sampling: true, elicitation: true })
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
        noneOf(a.wire, SSN)
      } finally {
        await a.client.close()
      }
    }
    // No rule can reach this connection: the lists pass as the upstream wrote them.
    const b = await recordingAgent(gw, alice, 'plain', { sampling: true, elicitation: true })
    try {
      const lister = (await b.client.listTools()).tools.find((t) => t.name === 'lister')
      assert.equal(lister?.description, `returns the ssn ${SSN[1]}`)
      assert.equal(b.client.getInstructions(), `use the record of ssn ${SSN[0]}`)
    } finally {
      await b.client.close()
    }
  })

  test('progress: only the numbers are relayed (no message, no _meta)', async () => {
    const a = await recordingAgent(gw, alice, 'masked', { sampling: true, elicitation: true })
    try {
      const progress: string[] = []
      await a.client.callTool({ name: 'person', arguments: { mode: 'progress' } }, undefined, {
        onprogress: (p) => progress.push(JSON.stringify(p)),
      })
      assert.deepEqual(
        progress.map((p) => JSON.parse(p) as unknown),
        [{ progress: 1, total: 2 }],
      )
      noneOf(a.wire, SSN)
    } finally {
      await a.client.close()
    }
  })

  test('sampling and elicitation made outside any call are refused on a masked session, relayed on another', async () => {
    for (const connection of ['masked', 'rego']) {
      const a = await recordingAgent(gw, alice, connection, { sampling: true, elicitation: true })
      try {
        OUT_OF_BAND.length = 0
        await a.client.callTool({ name: 'person', arguments: { mode: 'later' } })
        await waitFor(() => OUT_OF_BAND.length === 2, 'the upstream to learn how its requests ended')
        assert.ok(
          OUT_OF_BAND.every((o) => o.includes('failed') && o.includes('masking rules apply')),
          JSON.stringify(OUT_OF_BAND),
        )
        assert.deepEqual(a.asked, [], 'nothing reached the agent')
        noneOf(a.wire, SSN)
      } finally {
        await a.client.close()
      }
    }
    const b = await recordingAgent(gw, alice, 'plain', { sampling: true, elicitation: true })
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
      const a = await recordingAgent(gw, alice, connection, { sampling: true, elicitation: true })
      try {
        const r = await a.client.callTool({ name: 'person', arguments: { mode: 'link' } })
        const link = (r.content as Record<string, unknown>[])[1] ?? {}
        assert.equal(link.type, 'resource_link')
        assert.equal(link.uri, 'public://y')
        assert.match(String(link.name), /^gatehouse: withheld/)
        assert.equal(link.title, undefined)
        noneOf(a.wire, SSN)
      } finally {
        await a.client.close()
      }
    }
  })

  test('the injected credential as an object key or a number: a clear answer, never a hang', async () => {
    const keyed = await recordingAgent(gw, alice, 'plain', { sampling: true, elicitation: true })
    try {
      const secret = UPSTREAM_AUTH.replace(/^Bearer /, '')
      const r = await keyed.client.callTool({ name: 'person', arguments: { mode: 'credkey' } }, undefined, { timeout: 20_000 })
      assert.deepEqual(r.structuredContent, { [secret.replace(/./g, '*')]: 1 })
      for (const m of keyed.wire) assert.ok(!m.includes(secret), m)
    } finally {
      await keyed.client.close()
    }
    const a = await recordingAgent(gw, alice, 'numeric', { sampling: true, elicitation: true })
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
