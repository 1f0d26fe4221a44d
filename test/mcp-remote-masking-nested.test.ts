// What a masked session let through before, tried by a hostile upstream (a low-level SDK Server
// here, so it can answer anything) against the official SDK client as agent, checked raw on the
// wire: JSON documents inside strings (double-encoded JSON, an ordinary API's `"payload": "<json>"`),
// the injected credential JSON-escaped, split by a zero-width character or written as HTML
// character references, and a listed tool's schema carrying a value in its bounds, names,
// references or type. Allowed work still works: nested documents are masked, not lost, and a
// schema keeps the structure an agent needs.

import assert from 'node:assert/strict'
import { createServer, type Server as HttpServer } from 'node:http'
import { after, before, describe, test } from 'node:test'
import { Server } from '@modelcontextprotocol/sdk/server/index.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'
import { CallToolRequestSchema, ListToolsRequestSchema } from '@modelcontextprotocol/sdk/types.js'
import type { TestGateway } from './helpers/gateway.js'
import { MASKING_SSN, mcpRemoteGateway, recordingAgent } from './helpers/mcpagent.js'
import { readBody } from './helpers/mcphostile.js'

const SSN = '123-45-6789'
const SSN_NUM = 123456789
const CRED = 'sk-gh-ABCDEF0123456789'
const UPSTREAM_AUTH = `Bearer ${CRED}`

/** Two values that mask to the same key. */
const CLASH = ['111-22-3333', '444-55-6666']

type Obj = Record<string, unknown>
const person = (): Obj => ({ name: 'Alice', ssn: SSN })

/** Tool results by tool name. */
const RESULTS: Record<string, () => Obj> = {
  dblenc: () => ({ content: [{ type: 'text', text: JSON.stringify(JSON.stringify(person())) }] }),
  strinner: () => ({ content: [{ type: 'text', text: JSON.stringify({ data: JSON.stringify(person()) }) }] }),
  structinner: () => ({ content: [], structuredContent: { data: JSON.stringify(person()), list: [` ${JSON.stringify([person()])}`] } }),
  metainner: () => ({
    content: [{ type: 'text', text: '{"ok":1}', _meta: { data: JSON.stringify(person()) } }],
    _meta: { d: JSON.stringify(person()) },
  }),
  triple: () => ({ content: [{ type: 'text', text: JSON.stringify({ a: JSON.stringify({ b: JSON.stringify(person()) }) }) }] }),
  deep: () => {
    let v: unknown = person()
    for (let i = 0; i < 8; i++) v = { d: JSON.stringify(v) }
    return { content: [{ type: 'text', text: JSON.stringify(v) }] }
  },
  resinner: () => ({
    content: [
      { type: 'resource', resource: { uri: 'x://q', mimeType: 'application/json', text: JSON.stringify({ p: JSON.stringify(person()) }) } },
    ],
  }),
  prose: () => ({ content: [{ type: 'text', text: JSON.stringify({ note: '{not json', list: '[INFO] started' }) }] }),
  // A key that is a JSON document (a tool returning `{"<row as JSON>": 1}`).
  keyjson_sc: () => ({ content: [], structuredContent: { [JSON.stringify(person())]: 1 } }),
  keyjson_text: () => ({ content: [{ type: 'text', text: JSON.stringify({ [JSON.stringify(person())]: 1 }) }] }),
  keyjson_clash: () => ({
    content: [{ type: 'text', text: JSON.stringify({ [JSON.stringify({ ssn: CLASH[0] })]: 1, [JSON.stringify({ ssn: CLASH[1] })]: 2 }) }],
  }),
  cred_uesc: () => ({ content: [{ type: 'text', text: `{"a":"\\u0073${CRED.slice(1)}"}` }] }),
  cred_res: () => ({ content: [{ type: 'resource', resource: { uri: 'x://q', text: `{"a":"\\u0073${CRED.slice(1)}"}` } }] }),
  cred_zw: () => ({ content: [], structuredContent: { a: `${CRED.slice(0, 10)}\u200b${CRED.slice(10)}` } }),
  cred_html: () => ({ content: [], structuredContent: { a: CRED.replaceAll('-', '&#45;') } }),
  cred_key: () => ({ content: [], structuredContent: { [`${CRED.slice(0, 5)}\u200d${CRED.slice(5)}`]: 1 } }),
  fine: () => ({ content: [{ type: 'text', text: JSON.stringify({ ok: 'sk-&-fine', n: 1 }) }] }),
}

const prop = (p: Obj): Obj => ({ type: 'object', properties: { ssn: p } })
/** Listed tools whose schemas carry the value. */
const SCHEMAS: Record<string, Obj> = {
  s_bounds: prop({ type: 'integer', minimum: SSN_NUM, maximum: SSN_NUM, multipleOf: SSN_NUM, exclusiveMinimum: SSN_NUM }),
  s_len: prop({ type: 'string', minLength: SSN_NUM, maxLength: SSN_NUM }),
  s_props: prop({ type: 'object', properties: { [SSN]: { type: 'string' } }, required: [SSN] }),
  s_ref: prop({ $ref: `#/$defs/${SSN}` }),
  s_pattprop: prop({ type: 'object', patternProperties: { [SSN]: {} } }),
  s_type: prop({ type: SSN }),
  s_types: prop({ type: ['string', SSN] }),
  s_defs: { type: 'object', $defs: { [SSN]: { type: 'string' } }, properties: { ssn: { $ref: '#/$defs/x' } } },
  s_req: { type: 'object', properties: { a: { type: 'string' } }, required: ['a', SSN] },
  s_items: prop({ type: 'array', items: { type: 'string', minLength: SSN_NUM, format: SSN } }),
  s_addl: prop({ type: 'object', additionalProperties: { type: 'string', maxLength: SSN_NUM } }),
  ok: {
    type: 'object',
    properties: { q: { type: 'string' }, n: { type: ['integer', 'null'] }, tags: { type: 'array', items: { type: 'string' } } },
    required: ['q', 'missing'],
    additionalProperties: false,
  },
}

function upstreamServer(): Server {
  const s = new Server({ name: 'nested', version: '1' }, { capabilities: { tools: {} } })
  s.setRequestHandler(ListToolsRequestSchema, () => ({
    tools: [...Object.keys(RESULTS), ...Object.keys(SCHEMAS)].map((name) => ({ name, inputSchema: SCHEMAS[name] ?? { type: 'object' } })),
  }))
  s.setRequestHandler(CallToolRequestSchema, (r) => {
    const f = RESULTS[r.params.name]
    return (f ? f() : { content: [{ type: 'text', text: JSON.stringify({ called: r.params.name }) }] }) as never
  })
  return s
}

/** A stateless upstream: a fresh server and transport for every request. */
async function startUpstream(): Promise<{ url: string; stop: () => Promise<void> }> {
  const http: HttpServer = createServer((req, res) => {
    void (async () => {
      if (req.headers.authorization !== UPSTREAM_AUTH) {
        req.resume()
        res.writeHead(401).end()
        return
      }
      const body = await readBody(req)
      const t = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true })
      await upstreamServer().connect(t)
      await t.handleRequest(req, res, body)
    })().catch(() => {
      if (!res.headersSent) res.writeHead(500)
      res.end()
    })
  })
  http.keepAliveTimeout = 10 * 60_000
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r))
  const a = http.address()
  const port = a && typeof a === 'object' ? a.port : 0
  return {
    url: `http://127.0.0.1:${port}/mcp`,
    async stop() {
      http.closeAllConnections()
      await new Promise<void>((r) => http.close(() => r()))
    },
  }
}

/** Every string a reader could get at: each string value, and what it holds when it is JSON, recursively. */
function opened(v: unknown, out: string[] = []): string[] {
  if (typeof v === 'string') {
    out.push(v)
    try {
      const inner: unknown = JSON.parse(v)
      if (typeof inner === 'object' || inner !== v) opened(inner, out)
    } catch {
      // not JSON
    }
  } else if (typeof v === 'number') out.push(String(v))
  else if (Array.isArray(v)) for (const x of v) opened(x, out)
  else if (v !== null && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      opened(k, out)
      opened(x, out)
    }
  }
  return out
}

function noValue(wire: readonly string[], values: readonly string[]): void {
  assert.ok(wire.length > 0, 'the agent received something')
  for (const m of wire) {
    for (const s of [m, ...opened(JSON.parse(m))]) {
      for (const v of values) assert.ok(!s.includes(v), `${v} reached the agent: ${m}`)
    }
  }
}

describe('remote MCP: masked sessions, values inside strings and schemas', () => {
  let up: { url: string; stop: () => Promise<void> }
  let gw: TestGateway
  let cleanup = async (): Promise<void> => {}
  let alice = ''

  before(async () => {
    up = await startUpstream()
    const conn = (name: string) => ({ name, url: up.url, authEnv: 'GH_TEST_MCP_AUTH' })
    ;({ gw, cleanup } = await mcpRemoteGateway({
      connections: [conn('masked'), conn('plain')],
      env: { GH_TEST_MCP_AUTH: UPSTREAM_AUTH },
      files: { 'masking.yaml': MASKING_SSN },
    }))
    alice = gw.token('user:alice', ['--group', 'writers'])
  })

  after(async () => {
    await cleanup()
    await up?.stop()
  })

  test('JSON documents inside strings are masked as their own; too deep is withheld', async () => {
    const a = await recordingAgent(gw, alice, 'masked')
    try {
      const text = async (name: string): Promise<string> => {
        const r = await a.client.callTool({ name })
        const c = (r.content as { type: string; text?: string; resource?: { text?: string } }[])[0]
        return String(c?.text ?? c?.resource?.text ?? '')
      }
      assert.deepEqual(JSON.parse(JSON.parse(await text('dblenc')) as string), { name: 'Alice', ssn: '****' })
      assert.deepEqual(JSON.parse((JSON.parse(await text('strinner')) as { data: string }).data), { name: 'Alice', ssn: '****' })
      const s = await a.client.callTool({ name: 'structinner' })
      const sc = s.structuredContent as { data: string; list: string[] }
      assert.deepEqual(JSON.parse(sc.data), { name: 'Alice', ssn: '****' })
      assert.deepEqual(JSON.parse(String(sc.list[0])), [{ name: 'Alice', ssn: '****' }])
      await a.client.callTool({ name: 'metainner' })
      const t3 = JSON.parse(await text('triple')) as { a: string }
      assert.equal((JSON.parse((JSON.parse(t3.a) as { b: string }).b) as Obj).ssn, '****')
      assert.match(await text('deep'), /gatehouse: withheld a JSON document nested in a string too deep/)
      assert.deepEqual(JSON.parse((JSON.parse(await text('resinner')) as { p: string }).p), { name: 'Alice', ssn: '****' })
      // Strings that only look like JSON are left as they are.
      assert.deepEqual(JSON.parse(await text('prose')), { note: '{not json', list: '[INFO] started' })
      // Keys that are JSON documents are masked like values; two that become one are withheld.
      const k = await a.client.callTool({ name: 'keyjson_sc' })
      assert.deepEqual(
        Object.keys(k.structuredContent as Obj).map((x) => JSON.parse(x) as unknown),
        [{ name: 'Alice', ssn: '****' }],
      )
      const kt = JSON.parse(await text('keyjson_text')) as Obj
      assert.deepEqual(
        Object.keys(kt).map((x) => JSON.parse(x) as unknown),
        [{ name: 'Alice', ssn: '****' }],
      )
      assert.match(await text('keyjson_clash'), /gatehouse: withheld/)
      noValue(a.wire, [SSN, ...CLASH])
    } finally {
      await a.client.close()
    }
    // A connection no rule reaches is untouched.
    const p = await recordingAgent(gw, alice, 'plain')
    try {
      const r = await p.client.callTool({ name: 'strinner' })
      assert.ok(JSON.stringify(r).includes(SSN))
    } finally {
      await p.client.close()
    }
  })

  test('the injected credential JSON-escaped, split by a format character or as HTML references is refused', async () => {
    for (const connection of ['plain', 'masked']) {
      const a = await recordingAgent(gw, alice, connection)
      try {
        for (const name of ['cred_uesc', 'cred_res', 'cred_zw', 'cred_html', 'cred_key']) {
          await assert.rejects(a.client.callTool({ name }), (err: unknown) => {
            assert.equal((err as { code?: number }).code, -32012, `${connection} ${name}: ${String(err)}`)
            return true
          })
        }
        // Text with an ampersand and escapes that spell nothing passes.
        const r = await a.client.callTool({ name: 'fine' })
        assert.deepEqual(JSON.parse(String((r.content as { text: string }[])[0]?.text)), { ok: 'sk-&-fine', n: 1 })
        noValue(a.wire, [CRED, CRED.slice(1), CRED.slice(10)])
      } finally {
        await a.client.close()
      }
    }
  })

  test("a listed tool's schema keeps types, properties, items and required names only", async () => {
    const a = await recordingAgent(gw, alice, 'masked')
    try {
      const { tools } = await a.client.listTools()
      for (const name of Object.keys(SCHEMAS))
        assert.ok(
          tools.find((t) => t.name === name),
          name,
        )
      const ok = tools.find((t) => t.name === 'ok')
      assert.deepEqual(ok?.inputSchema, {
        type: 'object',
        properties: { q: { type: 'string' }, n: { type: ['integer', 'null'] }, tags: { type: 'array', items: { type: 'string' } } },
        required: ['q'],
        additionalProperties: false,
      })
      assert.deepEqual(tools.find((t) => t.name === 's_bounds')?.inputSchema, { type: 'object', properties: { ssn: { type: 'integer' } } })
      assert.deepEqual(tools.find((t) => t.name === 's_props')?.inputSchema, { type: 'object', properties: { ssn: { type: 'object' } } })
      const r = await a.client.callTool({ name: 'ok', arguments: { q: 'x' } })
      assert.deepEqual(JSON.parse(String((r.content as { text: string }[])[0]?.text)), { called: 'ok' })
      noValue(a.wire, [SSN, String(SSN_NUM)])
    } finally {
      await a.client.close()
    }
  })
})
