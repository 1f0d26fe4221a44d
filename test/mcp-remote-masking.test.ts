// Masking of what a remote MCP server returns fails closed, whatever field the upstream puts a
// classified value in: under a JSON-path rule (masking.yaml or a Rego `mask` entry), the whole
// result is masked as JSON (`_meta` of results, content items and resource contents, annotations,
// unknown fields), free text the masker cannot read (a prompt's description, an upstream error's
// message and data, a progress message) is withheld, and the upstream's requests of the agent
// (sampling) are not relayed while a masked call is in flight. The upstream is hostile
// (helpers/mcphostile.ts); every message the agent receives is checked raw, on the wire.

import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import type { TestGateway } from './helpers/gateway.js'
import { MASKING_SSN, mcpRemoteGateway, noneOf, recordingAgent, REGO_SSN } from './helpers/mcpagent.js'
import { SSN, startHostile } from './helpers/mcphostile.js'
import { type McpUpstream, rpcError } from './helpers/mcpupstream.js'

const UPSTREAM_AUTH = 'Bearer mcp-hostile-4f1e8a2b9c7d'

describe('remote MCP: masking covers the whole result', () => {
  let up: McpUpstream
  let gw: TestGateway
  let cleanup = async (): Promise<void> => {}
  let alice = ''

  before(async () => {
    up = await startHostile(UPSTREAM_AUTH)
    const conn = (name: string) => ({ name, url: up.url, authEnv: 'GH_TEST_MCP_AUTH' })
    ;({ gw, cleanup } = await mcpRemoteGateway({
      connections: [conn('masked'), conn('rego'), conn('plain')],
      env: { GH_TEST_MCP_AUTH: UPSTREAM_AUTH },
      files: { 'masking.yaml': MASKING_SSN, 'mcp_masking_rules.rego': REGO_SSN },
    }))
    alice = gw.token('user:alice', ['--group', 'writers'])
  })

  after(async () => {
    await cleanup()
    await up?.stop()
  })

  test('tool results: _meta of the result and of a content item, annotations and unknown fields are masked', async () => {
    for (const connection of ['masked', 'rego']) {
      const a = await recordingAgent(gw, alice, connection, { sampling: true })
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
        noneOf(a.wire, SSN)
      } finally {
        await a.client.close()
      }
    }
  })

  test('without a rule the same fields pass (the masking is the rule, not a filter of its own)', async () => {
    const a = await recordingAgent(gw, alice, 'plain', { sampling: true })
    try {
      const meta = await a.client.callTool({ name: 'person', arguments: { mode: 'meta' } })
      assert.equal((meta._meta as { ssn: string }).ssn, SSN[0])
    } finally {
      await a.client.close()
    }
  })

  test('the injected credential echoed lower- or upper-cased reaches the agent masked', async () => {
    const a = await recordingAgent(gw, alice, 'plain', { sampling: true })
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
    const a = await recordingAgent(gw, alice, 'masked', { sampling: true })
    try {
      const r = await a.client.readResource({ uri: 'public://y' })
      assert.deepEqual(r._meta, { ssn: '****' })
      assert.deepEqual(r.contents[0]?._meta, { ssn: '****' })
      assert.deepEqual(JSON.parse(String((r.contents[0] as { text?: string }).text)), { ssn: '****', ok: 1 })
      noneOf(a.wire, SSN)
    } finally {
      await a.client.close()
    }
  })

  test("prompts/get: the description is withheld, _meta and the messages' JSON masked", async () => {
    const a = await recordingAgent(gw, alice, 'masked', { sampling: true })
    try {
      const p = await a.client.getPrompt({ name: 'p1', arguments: { a: 'x' } })
      assert.match(String(p.description), /^gatehouse: withheld .*masking rules/)
      assert.deepEqual(p._meta, { ssn: '****' })
      const content = p.messages[0]?.content as { text: string; _meta?: unknown }
      assert.deepEqual(JSON.parse(content.text), { ssn: '****', a: 1 })
      assert.deepEqual(content._meta, { ssn: '****' })
      noneOf(a.wire, SSN)
    } finally {
      await a.client.close()
    }
  })

  test("upstream errors: the message is withheld and the data dropped; the upstream's code stays", async () => {
    const a = await recordingAgent(gw, alice, 'masked', { sampling: true })
    try {
      const read = await rpcError(a.client.readResource({ uri: 'boom://x' }))
      assert.equal(read.code, -32050)
      assert.match(read.message, /gatehouse: withheld the upstream's error message: masking rules apply/)
      assert.equal(read.data, undefined)
      const prompt = await rpcError(a.client.getPrompt({ name: 'boomp' }))
      assert.equal(prompt.code, -32050)
      assert.match(prompt.message, /gatehouse: withheld/)
      noneOf(a.wire, SSN)
    } finally {
      await a.client.close()
    }
    // Without a rule, the upstream's own message reaches the agent.
    const b = await recordingAgent(gw, alice, 'plain', { sampling: true })
    try {
      const read = await rpcError(b.client.readResource({ uri: 'boom://x' }))
      assert.match(read.message, /record/)
    } finally {
      await b.client.close()
    }
  })

  test("a masked call's progress message is dropped and its sampling request is not relayed", async () => {
    const a = await recordingAgent(gw, alice, 'masked', { sampling: true })
    try {
      const progress: string[] = []
      await a.client.callTool({ name: 'person', arguments: { mode: 'progress' } }, undefined, {
        onprogress: (p) => progress.push(JSON.stringify(p)),
      })
      assert.equal(progress.length, 1, 'progress itself is relayed')
      assert.ok(!progress[0]?.includes('message'), progress[0])
      const s = await a.client.callTool({ name: 'person', arguments: { mode: 'sample' } })
      assert.equal(a.asked.length, 0, 'the sampling request did not reach the agent')
      assert.match(JSON.stringify(s.content), /sampling_failed/)
      noneOf(a.wire, SSN)
    } finally {
      await a.client.close()
    }
    // Without a rule, sampling is relayed as before.
    const b = await recordingAgent(gw, alice, 'plain', { sampling: true })
    try {
      await b.client.callTool({ name: 'person', arguments: { mode: 'sample' } })
      assert.equal(b.asked.length, 1)
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
