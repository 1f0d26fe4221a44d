// The MCP server against a real `gatehouse serve` and the machine's PostgreSQL, driven by
// the official MCP SDK client over HTTP: authorization (RFC 9728 metadata, 401 with
// WWW-Authenticate, another resource's token refused), the alice → agent A → agent B story
// (delegate, denials naming the rule and the hop, no widening, revocation ending B's next call),
// the same denial through MCP and psql, tools/list filtered by policy, the audit of every call,
// the legacy HTTP+SSE transport and the `gatehouse mcp` stdio bridge.

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { SSEClientTransport } from '@modelcontextprotocol/sdk/client/sse.js'
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { BIN, direct, psql, REPO, TestGateway } from './helpers/gateway.js'

const SCHEMA = `mcp_t${process.pid}`

type Result = { isError: boolean; data: Record<string, unknown>; text: string }

async function connect(gw: TestGateway, token: string): Promise<Client> {
  const client = new Client({ name: 'gatehouse-test', version: '1.0.0' })
  const transport = new StreamableHTTPClientTransport(new URL(`${gw.apiUrl}/mcp`), {
    requestInit: { headers: { authorization: `Bearer ${token}` } },
  })
  await client.connect(transport)
  return client
}

async function call(client: Client, name: string, args: Record<string, unknown> = {}): Promise<Result> {
  const r = await client.callTool({ name, arguments: args })
  const content = Array.isArray(r.content) ? (r.content as { type: string; text?: string }[]) : []
  const text = content.map((c) => c.text ?? '').join('\n')
  const data = (r.structuredContent ?? {}) as Record<string, unknown>
  return { isError: r.isError === true, data, text }
}

function delegateCli(gw: TestGateway, parent: string, agent: string, scope: string, extra: string[] = []): string {
  const r = gw.cli(['token', 'delegate', '--token', parent, '--agent', agent, '--scope', scope, ...extra])
  assert.equal(r.code, 0, r.stderr)
  return r.stdout.trim()
}

function tokenId(token: string): string {
  const claims = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()) as { jti: string }
  return claims.jti
}

describe('MCP over streamable HTTP', () => {
  let gw: TestGateway
  let policyDir: string
  let alice: string
  let agentA: string

  before(async () => {
    policyDir = mkdtempSync(join(tmpdir(), 'gh-mcp-policy-'))
    cpSync(join(REPO, 'policies'), policyDir, { recursive: true })
    // A rule on the tool itself, to see tools/list follow policy.
    writeFileSync(
      join(policyDir, 'mcp_extra.rego'),
      `package gatehouse

deny contains {"rule": "no-describe-for-c", "reason": "agent C may not describe connections"} if {
  input.action == "mcp.call"
  input.command.tool == "describe_connection"
  input.principal.id == "agent:C"
}
`,
    )
    direct(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE; CREATE SCHEMA ${SCHEMA};
      CREATE TABLE ${SCHEMA}.users (id int PRIMARY KEY, name text, email text);
      INSERT INTO ${SCHEMA}.users VALUES (1, 'Ann', 'ann@example.com'), (2, 'Bob', 'bob@example.com'), (3, 'Cy', 'cy@example.com');`)
    gw = await TestGateway.start({
      connections: [
        { name: 'app', protocol: 'postgres', address: '127.0.0.1:5432', database: 'test', user: 'postgres', labels: { env: 'test' } },
      ],
      config: { policies: policyDir },
    })
    alice = gw.token('user:alice', ['--group', 'writers', '--group', 'dba'])
    agentA = delegateCli(gw, alice, 'A', 'connection:app sql.read sql.write sql.ddl')
  })

  after(async () => {
    await gw?.cleanup()
    rmSync(policyDir, { recursive: true, force: true })
    direct(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`)
  })

  test('protected-resource metadata, and 401 with WWW-Authenticate without a good token', async () => {
    for (const path of ['/.well-known/oauth-protected-resource', '/.well-known/oauth-protected-resource/mcp']) {
      const res = await fetch(`${gw.apiUrl}${path}`)
      assert.equal(res.status, 200, path)
      const m = (await res.json()) as { resource: string; authorization_servers: string[]; bearer_methods_supported: string[] }
      assert.equal(m.resource, gw.apiUrl)
      assert.deepEqual(m.authorization_servers, [gw.apiUrl])
      assert.deepEqual(m.bearer_methods_supported, ['header'])
    }
    const init = {
      jsonrpc: '2.0',
      id: 1,
      method: 'initialize',
      params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'x', version: '1' } },
    }
    const post = (headers: Record<string, string>) =>
      fetch(`${gw.apiUrl}/mcp`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
        body: JSON.stringify(init),
      })
    const none = await post({})
    assert.equal(none.status, 401)
    assert.equal(none.headers.get('www-authenticate'), `Bearer resource_metadata="${gw.apiUrl}/.well-known/oauth-protected-resource"`)
    const bad = await post({ authorization: 'Bearer not-a-token' })
    assert.equal(bad.status, 401)
    assert.match(
      bad.headers.get('www-authenticate') ?? '',
      /^Bearer resource_metadata="[^"]+", error="invalid_token", error_description="[^"]+"$/,
    )
    // A token our own key signed, for another resource, is refused.
    const other = delegateCli(gw, alice, 'elsewhere', 'connection:app sql.read', ['--audience', 'https://billing.example.com'])
    const wrongAud = await post({ authorization: `Bearer ${other}` })
    assert.equal(wrongAud.status, 401)
    assert.match(wrongAud.headers.get('www-authenticate') ?? '', /error="invalid_token".*another audience/)
    await assert.rejects(connect(gw, other), /401|another audience|Unauthorized/i)
  })

  test("alice → A → B: delegate, B reads, B's write is denied naming the rule and the hop, B cannot widen", async () => {
    const a = await connect(gw, agentA)
    const tools = (await a.listTools()).tools.map((t) => t.name).sort()
    assert.deepEqual(tools, ['approval_status', 'delegate', 'describe_connection', 'list_connections', 'query'])

    const conns = await call(a, 'list_connections')
    assert.equal(conns.isError, false, conns.text)
    assert.deepEqual(conns.data.connections, [{ name: 'app', protocol: 'postgres', labels: { env: 'test' } }])

    const d = await call(a, 'delegate', { agent: 'B', scope: 'connection:app sql.read', ttl: '10m' })
    assert.equal(d.isError, false, d.text)
    assert.deepEqual(d.data.chain, ['user:alice', 'agent:A', 'agent:B'])
    assert.ok(Number(d.data.expires_in) <= 600 && Number(d.data.expires_in) > 590, String(d.data.expires_in))
    const tokenB = String(d.data.token)

    const b = await connect(gw, tokenB)
    const sel = await call(b, 'query', { connection: 'app', sql: `SELECT id, name FROM ${SCHEMA}.users ORDER BY id`, max_rows: 2 })
    assert.equal(sel.isError, false, sel.text)
    assert.deepEqual(sel.data.columns, ['id', 'name'])
    assert.deepEqual(sel.data.rows, [
      [1, 'Ann'],
      [2, 'Bob'],
    ])
    assert.equal(sel.data.row_count, 3)
    assert.equal(sel.data.next_offset, 2)
    const page2 = await call(b, 'query', {
      connection: 'app',
      sql: `SELECT id, name FROM ${SCHEMA}.users ORDER BY id`,
      max_rows: 2,
      offset: 2,
    })
    assert.deepEqual(page2.data.rows, [[3, 'Cy']])
    assert.equal(page2.data.next_offset, null)

    const upd = await call(b, 'query', { connection: 'app', sql: `UPDATE ${SCHEMA}.users SET name = 'x' WHERE id = 1` })
    assert.equal(upd.isError, true)
    assert.equal(upd.data.status, 'denied')
    assert.equal(upd.data.rule, 'scope')
    assert.equal(upd.data.hop, 'agent:B')
    assert.match(String(upd.data.message), /^gatehouse: denied by scope \(agent:B\): outside the scope of agent:B/)
    assert.match(String(upd.data.what_you_can_do), /scope of agent:B/)
    assert.equal(direct(`SELECT name FROM ${SCHEMA}.users WHERE id = 1`), 'Ann', 'the denied UPDATE did not run')

    // The same denial, with the same rule, through psql for the same chain.
    const p = psql(gw.conninfo(tokenB), `UPDATE ${SCHEMA}.users SET name = 'x' WHERE id = 1`)
    assert.notEqual(p.code, 0)
    assert.ok(p.stderr.includes(String(upd.data.message)), `psql said: ${p.stderr}`)

    // B cannot widen its scope through delegate.
    const widen = await call(b, 'delegate', { agent: 'C2', scope: 'connection:app sql.write' })
    assert.equal(widen.isError, true)
    assert.match(String(widen.data.reason), /sql\.write is not within/)
    assert.equal(widen.data.oauth_error, 'invalid_scope')
    const narrower = await call(b, 'delegate', { agent: 'C3', scope: 'connection:app sql.read', ttl: '1h' })
    assert.ok(narrower.isError === false || /longer|lifetime|expire/i.test(String(narrower.data.reason)), narrower.text)

    // Every call is an audit event with the whole chain, the tool and the decision.
    const events = gw.auditEvents().filter((e) => e.type === 'mcp.call')
    const bCalls = events.filter((e) => JSON.stringify(e.chain) === JSON.stringify(['user:alice', 'agent:A', 'agent:B']))
    assert.ok(bCalls.some((e) => e.tool === 'query' && e.decision === 'allow'))
    const updEvent = bCalls.find((e) => e.tool === 'query' && String((e.arguments as { sql?: string }).sql).startsWith('update'))
    assert.ok(updEvent, 'the UPDATE call is recorded')
    assert.equal(
      (updEvent.arguments as { sql: string }).sql,
      `update ${SCHEMA}.users set name = ? where id = ?`,
      'literal values are not recorded',
    )
    const stmt = gw
      .auditEvents()
      .find(
        (e) =>
          e.type === 'statement' &&
          String(e.sql).startsWith('UPDATE') &&
          JSON.stringify(e.chain) === JSON.stringify(['user:alice', 'agent:A', 'agent:B']),
      )
    assert.ok(stmt, 'the PostgreSQL path recorded the statement with the chain')
    await a.close()
    await b.close()
  })

  test('tools/list shows only the tools the chain may call; a refused tool says why', async () => {
    const tokenC = delegateCli(gw, alice, 'C', 'connection:app sql.read')
    const c = await connect(gw, tokenC)
    const tools = (await c.listTools()).tools.map((t) => t.name)
    assert.ok(!tools.includes('describe_connection'), tools.join(','))
    assert.ok(tools.includes('query'))
    const r = await call(c, 'describe_connection', { connection: 'app' })
    assert.equal(r.isError, true)
    assert.equal(r.data.rule, 'no-describe-for-c')
    assert.equal(r.data.hop, 'agent:C')
    await c.close()
  })

  test('bad arguments and unknown connections are clear tool errors', async () => {
    const a = await connect(gw, agentA)
    const unknown = await call(a, 'query', { connection: 'nope', sql: 'SELECT 1' })
    assert.equal(unknown.isError, true)
    assert.match(unknown.text, /no postgres connection named "nope"/)
    const extra = await call(a, 'query', { connection: 'app', sql: 'SELECT 1', bogus: 1 })
    assert.match(extra.text, /unknown argument "bogus"/)
    const rows = await call(a, 'query', { connection: 'app', sql: 'SELECT 1', max_rows: 100000 })
    assert.match(rows.text, /max_rows must be an integer from 1 to 1000/)
    const sqlErr = await call(a, 'query', { connection: 'app', sql: 'SELECT * FROM no_such_table_here' })
    assert.equal(sqlErr.isError, true)
    assert.match(sqlErr.text, /does not exist/)
    await a.close()
  })

  test('describe_connection lists tables and columns', async () => {
    const a = await connect(gw, agentA)
    const r = await call(a, 'describe_connection', { connection: 'app' })
    assert.equal(r.isError, false, r.text)
    const tables = r.data.tables as { schema: string; table: string; columns: { name: string }[] }[]
    const users = tables.find((t) => t.schema === SCHEMA && t.table === 'users')
    assert.ok(users)
    assert.deepEqual(
      users.columns.map((c) => c.name),
      ['id', 'name', 'email'],
    )
    await a.close()
  })

  test("a session is bound to its token; revoking A fails B's next call", async () => {
    const d = delegateCli(gw, agentA, 'B2', 'connection:app sql.read')
    const b = await connect(gw, d)
    assert.equal((await call(b, 'query', { connection: 'app', sql: 'SELECT 1' })).isError, false)
    // Another token cannot ride on B's session.
    const sid = (b.transport as StreamableHTTPClientTransport).sessionId ?? ''
    const hijack = await fetch(`${gw.apiUrl}/mcp`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        authorization: `Bearer ${agentA}`,
        'mcp-session-id': sid,
        'mcp-protocol-version': '2025-06-18',
      },
      body: JSON.stringify({ jsonrpc: '2.0', id: 9, method: 'tools/list', params: {} }),
    })
    assert.equal(hijack.status, 403)
    const r = gw.cli(['token', 'revoke', tokenId(agentA), '--reason', 'test'])
    assert.equal(r.code, 0, r.stderr)
    await assert.rejects(call(b, 'query', { connection: 'app', sql: 'SELECT 1' }), /401|revoked|invalid_token|Unauthorized/i)
    const p = psql(gw.conninfo(d), 'SELECT 1')
    assert.notEqual(p.code, 0)
    agentA = delegateCli(gw, alice, 'A', 'connection:app sql.read sql.write sql.ddl')
  })

  test('one token keeps at most 32 sessions: the least recently used is closed', async () => {
    const t = delegateCli(gw, alice, 'many', 'connection:app sql.read')
    const first = await connect(gw, t)
    const rest: Client[] = []
    for (let i = 0; i < 32; i++) rest.push(await connect(gw, t))
    await assert.rejects(first.listTools(), /404|Session not found/)
    assert.ok((await rest[31]?.listTools())?.tools.length)
    for (const c of [first, ...rest]) await c.close().catch(() => undefined)
  })

  test('the legacy HTTP+SSE transport (protocol 2024-11-05)', async () => {
    const client = new Client({ name: 'legacy', version: '1.0.0' })
    const transport = new SSEClientTransport(new URL(`${gw.apiUrl}/mcp/sse`), {
      requestInit: { headers: { authorization: `Bearer ${agentA}` } },
      eventSourceInit: {
        fetch: (url, init) =>
          fetch(url, { ...init, headers: { ...(init?.headers as Record<string, string>), authorization: `Bearer ${agentA}` } }),
      },
    })
    await client.connect(transport)
    assert.ok((await client.listTools()).tools.some((t) => t.name === 'query'))
    const r = await call(client, 'query', { connection: 'app', sql: 'SELECT 41 + 1 AS answer' })
    assert.deepEqual(r.data.rows, [[42]])
    // Another token cannot post into this SSE session, nor can no token.
    const stream = new AbortController()
    const sse = await fetch(`${gw.apiUrl}/mcp/sse`, {
      headers: { authorization: `Bearer ${agentA}`, accept: 'text/event-stream' },
      signal: stream.signal,
    })
    const reader = sse.body?.getReader()
    const first = new TextDecoder().decode((await reader?.read())?.value)
    const sid = /sessionId=([\w-]+)/.exec(first)?.[1] ?? ''
    assert.ok(sid, first)
    const other = delegateCli(gw, alice, 'intruder', 'connection:app sql.read')
    const msg = JSON.stringify({ jsonrpc: '2.0', id: 5, method: 'tools/list', params: {} })
    const post = (auth: Record<string, string>) =>
      fetch(`${gw.apiUrl}/mcp/messages?sessionId=${encodeURIComponent(sid)}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...auth },
        body: msg,
      })
    assert.equal((await post({ authorization: `Bearer ${other}` })).status, 403)
    assert.equal((await post({})).status, 401)
    stream.abort()
    await client.close()
  })

  test('a real MCP client other than ours: the MCP Inspector CLI lists the tools and calls query', () => {
    const build = join(REPO, 'node_modules/@modelcontextprotocol/inspector-cli/build')
    const run = (args: string[]) => {
      const r = spawnSync(
        process.execPath,
        [join(build, 'index.js'), `${gw.apiUrl}/mcp`, '--transport', 'http', '--header', `Authorization: Bearer ${agentA}`, ...args],
        // inspector-cli 1.0.3 looks for its package.json relative to the working directory.
        { cwd: build, encoding: 'utf8', timeout: 60_000 },
      )
      assert.equal(r.status, 0, r.stderr)
      return JSON.parse(r.stdout) as Record<string, unknown>
    }
    const list = run(['--method', 'tools/list']) as { tools: { name: string }[] }
    assert.ok(list.tools.some((t) => t.name === 'query'))
    const q = run([
      '--method',
      'tools/call',
      '--tool-name',
      'query',
      '--tool-arg',
      'connection=app',
      `sql=SELECT name FROM ${SCHEMA}.users WHERE id = 2`,
    ]) as { structuredContent?: { rows?: unknown } }
    assert.deepEqual(q.structuredContent?.rows, [['Bob']])
  })

  test('gatehouse mcp: the stdio bridge', async () => {
    const client = new Client({ name: 'stdio', version: '1.0.0' })
    const transport = new StdioClientTransport({
      command: process.execPath,
      args: [BIN, 'mcp', '--server', gw.apiUrl],
      env: { ...(process.env as Record<string, string>), GATEHOUSE_TOKEN: agentA },
      stderr: 'pipe',
    })
    await client.connect(transport)
    assert.ok((await client.listTools()).tools.some((t) => t.name === 'query'))
    const r = await call(client, 'query', { connection: 'app', sql: `SELECT count(*)::int AS n FROM ${SCHEMA}.users` })
    assert.deepEqual(r.data.rows, [[3]])
    await client.close()
  })
})
