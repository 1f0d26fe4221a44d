// Lineage of relations that run code when read: a foreign table (unknown lineage: its rows come from
// outside the database) and a table whose row-level security policies apply (their expressions are
// analysed as part of the statement, so a masked column passed to a policy's function is a call
// with that source, and a user-defined function there is opaque code).

import assert from 'node:assert/strict'
import { before, describe, test } from 'node:test'
import { analyzeLineage, type LineageCatalog, loadSqlParser, type RelationInfo } from '../proxies/postgres/sql/lineage.js'

function catalogOf(relations: readonly RelationInfo[]): LineageCatalog {
  const byKey = new Map(relations.map((r) => [`${r.schema}.${r.name}`, r]))
  return {
    relation: (schema, name) => byKey.get(`${schema ?? 'public'}.${name}`) ?? null,
    isUserFunction: (name) => name.startsWith('u_'),
  }
}

const users: RelationInfo = { schema: 'public', name: 'users', kind: 'table', columns: ['id', 'email'], definition: null }

describe('lineage through relations that run code', () => {
  before(() => loadSqlParser())

  test('a foreign table: its columns are opaque and reading it is opaque code', () => {
    const cat = catalogOf([{ schema: 'public', name: 'ft', kind: 'table', columns: ['id', 'contact'], definition: null, foreign: true }])
    const [l] = analyzeLineage('SELECT contact FROM ft', cat)
    assert.ok(l)
    assert.ok(
      l.opaqueCalls.some((c) => c.includes('public.ft is a foreign table')),
      l.opaqueCalls.join(';'),
    )
    assert.notEqual(l.outputs?.[0]?.opaque ?? null, null)
  })

  test('a foreign table behind a view is still opaque', () => {
    const cat = catalogOf([
      { schema: 'public', name: 'ft', kind: 'table', columns: ['id', 'contact'], definition: null, foreign: true },
      { schema: 'public', name: 'v', kind: 'view', columns: ['c'], definition: 'SELECT ft.contact AS c FROM public.ft' },
    ])
    const [l] = analyzeLineage('SELECT c FROM v', cat)
    assert.ok(l)
    assert.ok(l.opaqueCalls.length > 0)
  })

  test('an RLS policy passing a column to a function is a call with that source', () => {
    const cat = catalogOf([{ ...users, policies: ['public.u_leak(email)'] }])
    const [l] = analyzeLineage('SELECT id FROM users', cat)
    assert.ok(l)
    const call = l.calls?.find((c) => c.name === 'u_leak')
    assert.ok(call, JSON.stringify(l.calls))
    assert.deepEqual(call.sources, ['public.users.email'])
    assert.ok(l.opaqueCalls.length > 0)
  })

  test('an RLS policy of built-ins adds no opaque code; an unparseable one is opaque', () => {
    const plain = analyzeLineage('SELECT id FROM users', catalogOf([{ ...users, policies: ['(id > 0)'] }]))[0]
    assert.ok(plain)
    assert.deepEqual(plain.opaqueCalls, [])
    const bad = analyzeLineage('SELECT id FROM users', catalogOf([{ ...users, policies: ['id > ) x'] }]))[0]
    assert.ok(bad)
    assert.ok(
      bad.opaqueCalls.some((c) => c.includes('row-level security')),
      bad.opaqueCalls.join(';'),
    )
  })
})
