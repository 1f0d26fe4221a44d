// Table tests for the MCP plugin's pure parts: reading the gateway's refusal texts (the PostgreSQL
// proxy's denials, the approvals' holds and reviewer denials) into results an agent can act on,
// the column patterns used to mark classified columns, and what a call's arguments look like in
// the audit log (no literal value of the SQL is recorded).

import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { advice, parseRefusal } from '../proxies/mcp/results.js'
import { auditArguments, columnMatches } from '../proxies/mcp/tools.js'

describe('parseRefusal', () => {
  const cases: { name: string; message: string; want: Record<string, unknown> | null }[] = [
    { name: 'not a gateway message', message: 'relation "x" does not exist', want: null },
    {
      name: 'scope denial with rule and hop',
      message: 'gatehouse: denied by scope (agent:B): outside the scope of agent:B',
      want: { status: 'denied', rule: 'scope', hop: 'agent:B', reason: 'outside the scope of agent:B' },
    },
    {
      name: 'policy rule on the root hop',
      message: 'gatehouse: denied by no-unbounded-write (user:alice): UPDATE or DELETE without WHERE',
      want: { status: 'denied', rule: 'no-unbounded-write', hop: 'user:alice', reason: 'UPDATE or DELETE without WHERE' },
    },
    {
      name: 'denial without a named rule',
      message: 'gatehouse: denied: the FunctionCall protocol message is not allowed',
      want: { status: 'denied', rule: null, hop: null, reason: 'the FunctionCall protocol message is not allowed' },
    },
    {
      name: 'non-waiting hold with its request id',
      message:
        'gatehouse: approval required (request R-1a2b3c) from group dba; once it is approved, send the identical statement again and it runs once',
      want: { status: 'held', request_id: 'R-1a2b3c', approvers: ['dba'] },
    },
    {
      name: 'hold without a request id (older gateways)',
      message: 'gatehouse: approval required from dba, sre (prod-ddl)',
      want: { status: 'held', request_id: null, approvers: ['dba', 'sre'], rules: ['prod-ddl'] },
    },
    {
      name: 'a reviewer denied the request',
      message: 'gatehouse: request R-9f9f9f was denied by user:dana: not during the freeze',
      want: { status: 'denied', rule: 'approval', reason: 'request R-9f9f9f was denied by user:dana: not during the freeze' },
    },
  ]
  for (const c of cases) {
    test(c.name, () => {
      const r = parseRefusal(c.message)
      if (c.want === null) return assert.equal(r, null)
      assert.ok(r)
      for (const [k, v] of Object.entries(c.want)) assert.deepEqual((r as unknown as Record<string, unknown>)[k], v, k)
      assert.equal(r.message, c.message)
      assert.match(advice(r), /^Nothing ran\./)
    })
  }
  test('the advice for a hold names the request and approval_status', () => {
    const r = parseRefusal('gatehouse: approval required (request R-1a2b3c) from group dba; …')
    assert.ok(r)
    assert.match(advice(r), /request R-1a2b3c.*approval_status.*"R-1a2b3c"/)
  })
})

describe('columnMatches', () => {
  const cases: [string, string, boolean][] = [
    ['email', 'public.users.email', true],
    ['*.email', 'crm.contacts.email', true],
    ['users.email', 'public.users.email', true],
    ['users.email', 'public.admins.email', false],
    ['public.users.email', 'public.users.email', true],
    ['public.users.email', 'crm.users.email', false],
    ['*.*.ssn', 'hr.people.ssn', true],
    ['ssn', 'hr.people.ssn_hash', false],
    ['a.b.c.d', 'a.b.c', false],
  ]
  for (const [pattern, column, want] of cases) {
    test(`${pattern} ~ ${column}: ${want}`, () => {
      const [s = '', t = '', c = ''] = column.split('.')
      assert.equal(columnMatches(pattern, s, t, c), want)
    })
  }
})

describe('auditArguments', () => {
  test('SQL keeps its shape, never its literal values', () => {
    const a = auditArguments({ connection: 'app', sql: "SELECT * FROM users WHERE email = 'ann@example.com' AND id = 42" })
    assert.equal(a.sql, 'select * from users where email = ? and id = ?')
    assert.equal(a.connection, 'app')
  })
  test('a password literal never reaches the event', () => {
    const a = auditArguments({ sql: "ALTER ROLE app PASSWORD 'hunter2'", reason: "rotate; old password 'hunter2'" })
    assert.ok(!JSON.stringify(a).includes('hunter2'), JSON.stringify(a))
  })
  test('text that cannot be tokenized is not recorded at all', () => {
    const a = auditArguments({ sql: "SELECT 'unterminated" })
    assert.ok(!String(a.sql).includes('unterminated'))
  })
})
