// The parts of the MCP story (docs/mcp.md) that rest on masking and approvals, through MCP:
// sub-agent B reads e-mail addresses masked (and describe_connection marks the column), and agent
// A's DROP TABLE on a prod connection is held, reported with its request id, and runs once a DBA
// approves — all through the same PostgreSQL path as psql, by the SDK's MCP client over HTTP.

import assert from 'node:assert/strict'
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { direct, REPO, TestGateway } from './helpers/gateway.js'

const SCHEMA = `mcp_e${process.pid}`
const B_CHAIN = JSON.stringify(['user:alice', 'agent:A', 'agent:B'])

type Result = { isError: boolean; data: Record<string, unknown>; text: string }

async function connect(gw: TestGateway, token: string): Promise<Client> {
  const client = new Client({ name: 'gatehouse-test', version: '1.0.0' })
  await client.connect(
    new StreamableHTTPClientTransport(new URL(`${gw.apiUrl}/mcp`), { requestInit: { headers: { authorization: `Bearer ${token}` } } }),
  )
  return client
}

async function call(client: Client, name: string, args: Record<string, unknown> = {}): Promise<Result> {
  const r = await client.callTool({ name, arguments: args })
  const content = Array.isArray(r.content) ? (r.content as { type: string; text?: string }[]) : []
  return {
    isError: r.isError === true,
    data: (r.structuredContent ?? {}) as Record<string, unknown>,
    text: content.map((c) => c.text ?? '').join('\n'),
  }
}

describe('MCP with masking and approvals', () => {
  let gw: TestGateway
  let policyDir: string
  let agentA: string
  let tokenB: string
  let dana: string

  before(async () => {
    policyDir = mkdtempSync(join(tmpdir(), 'gh-mcp-policy-'))
    cpSync(join(REPO, 'policies'), policyDir, { recursive: true })
    writeFileSync(
      join(policyDir, 'masking.yaml'),
      'rules:\n  - name: emails\n    columns: ["*.email"]\n    strategy: partial\n    keep: 4\n    clear_for: [pii-readers]\ndetectors: []\n',
    )
    direct(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE; CREATE SCHEMA ${SCHEMA};
      CREATE TABLE ${SCHEMA}.users (id int PRIMARY KEY, email text);
      INSERT INTO ${SCHEMA}.users VALUES (1, 'ann@example.com'), (2, 'bob@example.com');
      CREATE TABLE ${SCHEMA}.scratch (x int);`)
    gw = await TestGateway.start({
      connections: [
        { name: 'app', protocol: 'postgres', address: '127.0.0.1:5432', database: 'test', user: 'postgres', labels: { env: 'prod' } },
      ],
      config: { policies: policyDir },
    })
    const alice = gw.token('user:alice', ['--group', 'writers', '--group', 'dba'])
    dana = gw.token('user:dana', ['--group', 'dba'])
    const r = gw.cli(['token', 'delegate', '--token', alice, '--agent', 'A', '--scope', 'connection:app sql.read sql.write sql.ddl'])
    assert.equal(r.code, 0, r.stderr)
    agentA = r.stdout.trim()
    const a = await connect(gw, agentA)
    const d = await call(a, 'delegate', { agent: 'B', scope: 'connection:app sql.read', ttl: '10m' })
    assert.equal(d.isError, false, d.text)
    tokenB = String(d.data.token)
    await a.close()
  })

  after(async () => {
    await gw?.cleanup()
    rmSync(policyDir, { recursive: true, force: true })
    direct(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`)
  })

  test('B reads e-mail addresses masked; describe_connection marks the column classified', async () => {
    const b = await connect(gw, tokenB)
    const r = await call(b, 'query', { connection: 'app', sql: `SELECT id, email FROM ${SCHEMA}.users ORDER BY id` })
    assert.equal(r.isError, false, r.text)
    const emails = (r.data.rows as unknown[][]).map((row) => String(row[1]))
    assert.equal(emails.length, 2)
    for (const e of emails) {
      assert.ok(!e.includes('@example'), `masked: ${e}`)
      assert.ok(e.endsWith('.com'), `partial keeps the last 4 characters: ${e}`)
    }
    assert.ok(!r.text.includes('ann@example.com'))
    const desc = await call(b, 'describe_connection', { connection: 'app' })
    const users = (desc.data.tables as { schema: string; table: string; columns: Record<string, unknown>[] }[]).find(
      (t) => t.schema === SCHEMA && t.table === 'users',
    )
    const email = users?.columns.find((c) => c.name === 'email')
    assert.equal(email?.classified, true)
    assert.deepEqual(email?.masked_by, ['emails'])
    assert.equal(users?.columns.find((c) => c.name === 'id')?.classified, undefined)
    // No classified value reaches the audit log through the call's arguments.
    const lookup = await call(b, 'query', { connection: 'app', sql: `SELECT id FROM ${SCHEMA}.users WHERE email = 'ann@example.com'` })
    assert.equal(lookup.isError, false, lookup.text)
    const calls = gw.auditEvents().filter((e) => e.type === 'mcp.call' && JSON.stringify(e.chain) === B_CHAIN)
    assert.ok(calls.length >= 3)
    assert.ok(!JSON.stringify(calls).includes('ann@example.com'))
    await b.close()
  })

  test("A's DROP TABLE is held with a request id, and runs after a DBA approves", async () => {
    const a = await connect(gw, agentA)
    const drop = `DROP TABLE ${SCHEMA}.scratch`
    const held = await call(a, 'query', { connection: 'app', sql: drop, reason: 'cleanup after the migration' })
    assert.equal(held.isError, true)
    assert.equal(held.data.status, 'held', held.text)
    const id = String(held.data.request_id)
    assert.match(id, /^R-/)
    assert.deepEqual(held.data.approvers, ['dba'])
    assert.match(String(held.data.what_you_can_do), /approval_status/)
    assert.equal(direct(`SELECT count(*) FROM pg_tables WHERE schemaname = '${SCHEMA}' AND tablename = 'scratch'`), '1')

    const pending = await call(a, 'approval_status', { request_id: id })
    assert.equal(pending.isError, false, pending.text)
    assert.equal((pending.data.request as { status: string }).status, 'pending')
    assert.equal((pending.data.request as { reason: string }).reason, 'cleanup after the migration', 'the reason reaches the approvers')

    const ok = gw.cli(['approvals', 'approve', id, '--token', dana, '--comment', 'fine'])
    assert.equal(ok.code, 0, ok.stderr)
    const approved = await call(a, 'approval_status', { request_id: id })
    assert.equal((approved.data.request as { status: string }).status, 'approved')
    assert.match(String(approved.data.what_you_can_do), /call the same tool again/)

    const ran = await call(a, 'query', { connection: 'app', sql: drop })
    assert.equal(ran.isError, false, ran.text)
    assert.equal(direct(`SELECT count(*) FROM pg_tables WHERE schemaname = '${SCHEMA}' AND tablename = 'scratch'`), '0')
    const requested = gw.auditEvents().find((e) => e.type === 'approval.requested')
    assert.deepEqual(requested?.chain, ['user:alice', 'agent:A'])
    await a.close()
  })
})
