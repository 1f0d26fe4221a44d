// A delegated agent whose scope names two tools of a remote MCP server cannot call a third by any
// route: directly, in a batch, under a reused JSON-RPC id, as a notification, with the method name
// spelt differently, with duplicate JSON keys, on another token's session, with the upstream's own
// session id, through methods the gateway does not serve, or by delegating itself a wider scope.
// The upstream's own log of what reached it is the proof. Also: both Streamable HTTP protocol
// versions clients speak today, raw on the wire, and revocation ending an open session within a
// second.

import assert from 'node:assert/strict'
import { cpSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { REPO, TestGateway } from './helpers/gateway.js'
import { type McpUpstream, startEverything } from './helpers/mcpupstream.js'

const UPSTREAM_AUTH = 'Bearer mcp-upstream-scope-5e8d1a7c'
const THIRD = 'get-env'

interface Rpc {
  readonly status: number
  readonly sid: string | null
  readonly messages: Record<string, unknown>[]
  readonly text: string
}

/** Messages of a JSON or SSE answer. */
function parseAnswer(contentType: string, text: string): Record<string, unknown>[] {
  if (contentType.includes('text/event-stream')) {
    const out: Record<string, unknown>[] = []
    for (const line of text.split('\n')) if (line.startsWith('data: ')) out.push(JSON.parse(line.slice(6)) as Record<string, unknown>)
    return out
  }
  if (!text) return []
  const v = JSON.parse(text) as unknown
  return (Array.isArray(v) ? v : [v]) as Record<string, unknown>[]
}

/** The first message of an answer (an empty object when there is none). */
function msg(r: Rpc): Record<string, unknown> {
  return r.messages[0] ?? {}
}

describe('remote MCP: a delegated agent scoped to two tools', () => {
  let dir = ''
  let up: McpUpstream
  let gw: TestGateway
  let alice = ''
  let agent = ''
  let agentId = ''
  let url = ''

  /** A raw Streamable HTTP POST; the body is sent exactly as given. */
  const post = async (token: string, sid: string | null, body: string, version = '2025-06-18'): Promise<Rpc> => {
    const r = await fetch(url, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${token}`,
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        'mcp-protocol-version': version,
        ...(sid ? { 'mcp-session-id': sid } : {}),
      },
      body,
    })
    const text = await r.text()
    return {
      status: r.status,
      sid: r.headers.get('mcp-session-id'),
      messages: parseAnswer(r.headers.get('content-type') ?? '', text),
      text,
    }
  }

  const open = async (token: string, version: string): Promise<{ sid: string; init: Record<string, unknown> }> => {
    const r = await post(
      token,
      null,
      JSON.stringify({
        jsonrpc: '2.0',
        id: 0,
        method: 'initialize',
        params: { protocolVersion: version, capabilities: {}, clientInfo: { name: 'raw', version: '1' } },
      }),
      version,
    )
    assert.equal(r.status, 200, r.text)
    assert.ok(r.sid, 'a session id')
    const n = await post(token, r.sid, JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }), version)
    assert.equal(n.status, 202, n.text)
    return { sid: r.sid, init: (msg(r).result ?? {}) as Record<string, unknown> }
  }

  const call = (id: number | string, name: string, args: Record<string, unknown> = {}): Record<string, unknown> => ({
    jsonrpc: '2.0',
    id,
    method: 'tools/call',
    params: { name, arguments: args },
  })

  const thirdReachedUpstream = (): boolean =>
    up.seen.some((m) => m.method === 'tools/call' && JSON.stringify(m.params ?? {}).includes(THIRD))

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gh-mcprs-'))
    up = await startEverything(UPSTREAM_AUTH)
    const policyDir = join(dir, 'policies')
    cpSync(join(REPO, 'policies'), policyDir, { recursive: true })
    rmSync(join(policyDir, 'default.cases.yaml'), { force: true })
    gw = await TestGateway.start({
      connections: [{ name: 'everything', protocol: 'mcp-remote', url: up.url, inject_headers: { Authorization: 'env:GH_TEST_MCP_AUTH' } }],
      config: { listen: { api: '127.0.0.1:0', postgres: 'off', ssh: 'off' }, policies: policyDir },
      env: { GH_TEST_MCP_AUTH: UPSTREAM_AUTH },
    })
    url = `${gw.apiUrl}/mcp-remote/everything`
    alice = gw.token('user:alice')
    const d = gw.cli([
      'token',
      'delegate',
      '--agent',
      'helper',
      '--token',
      alice,
      '--scope',
      'connection:everything tool:everything/echo tool:everything/get-sum',
      '--json',
    ])
    assert.equal(d.code, 0, d.stderr)
    const parsed = JSON.parse(d.stdout) as { access_token: string; token_id: string }
    agent = parsed.access_token
    agentId = parsed.token_id
  })

  after(async () => {
    await gw?.cleanup()
    await up?.stop()
    rmSync(dir, { recursive: true, force: true })
  })

  test('both protocol versions clients speak today: 2025-03-26 and 2025-06-18, raw on the wire', async () => {
    for (const version of ['2025-03-26', '2025-06-18']) {
      const { sid, init } = await open(alice, version)
      assert.equal(init.protocolVersion, version)
      const r = await post(alice, sid, JSON.stringify(call(1, 'echo', { message: `v${version}` })), version)
      assert.equal(r.status, 200, r.text)
      assert.deepEqual((msg(r).result as { content: unknown }).content, [{ type: 'text', text: `Echo: v${version}` }])
    }
    // The upstream session the gateway opened speaks the SDK's own latest version, one per agent session.
    assert.ok(up.sessions.size >= 2)
  })

  test('the agent lists only its two tools and calls them', async () => {
    const { sid } = await open(agent, '2025-06-18')
    const list = await post(agent, sid, JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }))
    const names = ((msg(list).result as { tools: { name: string }[] }).tools ?? []).map((t) => t.name).sort()
    assert.deepEqual(names, ['echo', 'get-sum'])
    const ok = await post(agent, sid, JSON.stringify(call(2, 'get-sum', { a: 1, b: 2 })))
    assert.match(JSON.stringify(msg(ok).result), /3/)
    // Alice herself (no tool entries) sees the third tool.
    const a = await open(alice, '2025-06-18')
    const all = await post(alice, a.sid, JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }))
    assert.ok(JSON.stringify(all.messages).includes(THIRD))
  })

  test('a third tool: not directly, not in a batch, not under a reused id, not as a notification', async () => {
    const { sid } = await open(agent, '2025-03-26')
    const direct = await post(agent, sid, JSON.stringify(call(1, THIRD)), '2025-03-26')
    const err = msg(direct).error as { code: number; data: { rule: string; hop: string } }
    assert.equal(err.code, -32010)
    assert.equal(err.data.rule, 'scope')
    assert.equal(err.data.hop, 'agent:helper')
    // A batch (2025-03-26 allows them): the allowed call runs, the third is refused on its own.
    const batch = await post(agent, sid, JSON.stringify([call(2, 'echo', { message: 'in a batch' }), call(3, THIRD)]), '2025-03-26')
    assert.ok(batch.status === 200 || batch.status === 400, batch.text)
    for (const m of batch.messages) if (m.id === 3) assert.equal((m.error as { code: number }).code, -32010)
    // Two requests of one batch under one id: the whole batch is refused, nothing runs.
    const dup = await post(
      agent,
      sid,
      JSON.stringify([call(8, 'echo', { message: 'dup-id' }), call(8, 'get-sum', { a: 1, b: 2 })]),
      '2025-03-26',
    )
    assert.equal(dup.status, 400, dup.text)
    assert.equal((msg(dup).error as { code: number }).code, -32600)
    assert.ok(!JSON.stringify(up.seen).includes('dup-id'), 'no request of the refused batch reached the upstream')
    // The same id for an allowed call and then the third.
    await post(agent, sid, JSON.stringify(call(7, 'echo', { message: 'seven' })), '2025-03-26')
    const reused = await post(agent, sid, JSON.stringify(call(7, THIRD)), '2025-03-26')
    assert.equal((msg(reused).error as { code: number }).code, -32010)
    // String ids, null ids, and a notification (no id) carrying a tools/call.
    await post(agent, sid, JSON.stringify(call('x', THIRD)), '2025-03-26')
    await post(agent, sid, JSON.stringify({ jsonrpc: '2.0', id: null, method: 'tools/call', params: { name: THIRD } }), '2025-03-26')
    const note = await post(agent, sid, JSON.stringify({ jsonrpc: '2.0', method: 'tools/call', params: { name: THIRD } }), '2025-03-26')
    assert.ok(note.status === 202 || note.status === 400, note.text)
    assert.equal(thirdReachedUpstream(), false)
  })

  test('a third tool: not with the method name spelt differently, nor through methods the gateway does not serve', async () => {
    const { sid } = await open(agent, '2025-06-18')
    for (const method of [
      'Tools/Call',
      'TOOLS/CALL',
      'tools/call ',
      ' tools/call',
      'tools/call\u0000',
      'tools//call',
      'tools/call/',
      'tools\\call',
    ]) {
      const r = await post(agent, sid, JSON.stringify({ jsonrpc: '2.0', id: 1, method, params: { name: THIRD, arguments: {} } }))
      const e = msg(r).error as { code: number } | undefined
      assert.ok(r.status >= 400 || e !== undefined, `${JSON.stringify(method)}: ${r.text}`)
    }
    // Methods an upstream may serve but the gateway does not: tasks (a tool call run later),
    // completions, subscriptions, logging. None is relayed.
    for (const [method, params] of [
      ['tasks/get', { taskId: 'x' }],
      ['tasks/result', { taskId: 'x' }],
      ['tasks/list', {}],
      ['completion/complete', { ref: { type: 'ref/prompt', name: 'simple-prompt' }, argument: { name: 'a', value: '' } }],
      ['resources/subscribe', { uri: 'demo://resource/static/document/README.md' }],
      ['logging/setLevel', { level: 'debug' }],
    ] as const) {
      const r = await post(agent, sid, JSON.stringify({ jsonrpc: '2.0', id: 2, method, params }))
      assert.equal((msg(r).error as { code: number } | undefined)?.code, -32601, `${method}: ${r.text}`)
      assert.ok(!up.seen.some((m) => m.method === method), `${method} reached the upstream`)
    }
    // A tools/call asking to run as a task (the upstream could run it later, out of the gateway's
    // sight) is refused by the gateway, which offers no tasks, or relayed as a plain call.
    const t = await post(
      agent,
      sid,
      JSON.stringify({
        jsonrpc: '2.0',
        id: 3,
        method: 'tools/call',
        params: { name: 'echo', arguments: { message: 'task?' }, task: { ttl: 1000 } },
      }),
    )
    assert.ok(t.messages.length > 0, t.text)
    for (const m of up.seen.filter((x) => x.method === 'tools/call' && JSON.stringify(x.params).includes('task?'))) {
      assert.equal((m.params as Record<string, unknown>).task, undefined)
    }
    assert.equal(thirdReachedUpstream(), false)
  })

  test('duplicate JSON keys: the value judged is the value sent', async () => {
    const { sid } = await open(agent, '2025-06-18')
    // The last of duplicate keys wins in the one parse the gateway makes; what it judged is what it sends.
    const a = await post(
      agent,
      sid,
      `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"${THIRD}","arguments":{}}}`,
    )
    assert.equal((msg(a).error as { code: number } | undefined)?.code, -32010, a.text)
    const b = await post(
      agent,
      sid,
      `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"${THIRD}","name":"echo","arguments":{"message":"dup"}}}`,
    )
    assert.deepEqual((msg(b).result as { content: unknown }).content, [{ type: 'text', text: 'Echo: dup' }])
    const c = await post(agent, sid, `{"jsonrpc":"2.0","id":3,"method":"tools/list","method":"tools/call","params":{"name":"${THIRD}"}}`)
    assert.ok(c.status >= 400 || c.messages.some((m) => m.error !== undefined), c.text)
    assert.equal(thirdReachedUpstream(), false)
  })

  test("another token's session, the upstream's session id, and a wider delegation are all refused", async () => {
    const mine = await open(alice, '2025-06-18')
    const onAlices = await post(agent, mine.sid, JSON.stringify(call(1, THIRD)))
    assert.equal(onAlices.status, 403, onAlices.text)
    // The upstream's session ids never reach the agent; sent as if they were the gateway's, they name nothing.
    for (const upstreamSid of up.sessions) {
      const r = await post(agent, upstreamSid, JSON.stringify(call(1, THIRD)))
      assert.equal(r.status, 404, r.text)
    }
    // A GET stream carries only what the gateway sends; a POST with a body on it is refused the same way.
    const { sid } = await open(agent, '2025-06-18')
    const ctl = new AbortController()
    const stream = await fetch(url, {
      headers: {
        authorization: `Bearer ${agent}`,
        accept: 'text/event-stream',
        'mcp-session-id': sid,
        'mcp-protocol-version': '2025-06-18',
      },
      signal: ctl.signal,
    })
    assert.equal(stream.status, 200)
    const again = await post(agent, sid, JSON.stringify(call(2, THIRD)))
    assert.equal((msg(again).error as { code: number }).code, -32010)
    ctl.abort()
    // The agent cannot give a sub-agent more than it has.
    const wider = gw.cli(['token', 'delegate', '--agent', 'sub', '--token', agent, '--scope', `tool:everything/${THIRD}`])
    assert.notEqual(wider.code, 0)
    assert.match(wider.stderr, /not within/)
    assert.equal(thirdReachedUpstream(), false)
  })

  test('the refusals are audited with the whole chain', () => {
    const events = gw.auditEvents()
    const refused = events.filter((e) => e.type === 'statement' && e.action === 'mcp.call' && e.tool === THIRD && e.decision === 'deny')
    assert.ok(refused.length >= 5, `${refused.length} refusals audited`)
    for (const e of refused) {
      assert.deepEqual(e.chain, ['user:alice', 'agent:helper'])
      assert.deepEqual(e.rules, ['scope'])
      assert.equal(e.connection, 'everything')
    }
  })

  test('revoking the agent ends its open session within a second, on both sides', async () => {
    const { sid } = await open(agent, '2025-06-18')
    const deletesBefore = up.deletes()
    const stream = await fetch(url, {
      headers: {
        authorization: `Bearer ${agent}`,
        accept: 'text/event-stream',
        'mcp-session-id': sid,
        'mcp-protocol-version': '2025-06-18',
      },
    })
    assert.equal(stream.status, 200)
    const reader = stream.body?.getReader()
    assert.ok(reader)
    const ended = (async () => {
      try {
        for (;;) {
          const { done } = await reader.read()
          if (done) break
        }
      } catch {
        // an aborted stream ends too
      }
      return Date.now()
    })()
    const rv = gw.cli(['token', 'revoke', agentId])
    assert.equal(rv.code, 0, rv.stderr)
    const revokedAt = Date.now()
    const at = await Promise.race([ended, new Promise<number>((r) => setTimeout(() => r(-1), 5000))])
    assert.ok(at > 0, 'the stream did not end')
    assert.ok(at - revokedAt < 1000, `ended ${at - revokedAt} ms after the revocation answered`)
    const after = await post(agent, sid, JSON.stringify(call(9, 'echo', { message: 'after' })))
    assert.ok(after.status === 401 || after.status === 404, after.text)
    for (let i = 0; i < 50 && up.deletes() === deletesBefore; i++) await new Promise((r) => setTimeout(r, 100))
    assert.ok(up.deletes() > deletesBefore, 'the upstream session was ended too')
  })
})
