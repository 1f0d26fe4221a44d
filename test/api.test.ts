// The admin API over a real socket: only admin tokens get in, schemas reject bad bodies, the
// OpenAPI document lists every route, and every error code is documented in docs/errors.md (and every
// documented one still exists).

import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { API_ERROR_CODES, ERROR_CODES } from '../engine/errors.js'
import { REPO, TestGateway } from './helpers/gateway.js'

describe('admin API', () => {
  let gw: TestGateway
  let admin: string
  before(async () => {
    gw = await TestGateway.start()
    admin = readFileSync(join(gw.dataDir, 'admin.token'), 'utf8').trim()
  })
  after(() => gw.cleanup())

  const call = (path: string, token: string | null, init: RequestInit = {}): Promise<Response> =>
    fetch(gw.apiUrl + path, {
      ...init,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(init.body ? { 'content-type': 'application/json' } : {}) },
    })

  test('health is open; everything else needs an admin token', async () => {
    assert.equal((await call('/v1/health', null)).status, 200)
    assert.equal((await call('/v1/sessions', null)).status, 401)
    assert.equal((await call('/v1/sessions', 'garbage')).status, 401)
    const user = gw.token('user:alice', ['--group', 'analysts'])
    assert.equal((await call('/v1/sessions', user)).status, 403)
    const issued = await call('/v1/tokens', user, {
      method: 'POST',
      body: JSON.stringify({ subject: 'user:root', groups: ['gatehouse-admins'] }),
    })
    assert.equal(issued.status, 403, 'a non-admin cannot mint an admin token')
    assert.equal((await call('/v1/sessions', admin)).status, 200)
  })

  test('bad bodies are rejected by schema with a clear message', async () => {
    const r = await call('/v1/tokens', admin, { method: 'POST', body: JSON.stringify({ subject: 'alice' }) })
    assert.equal(r.status, 400)
    assert.match(((await r.json()) as { error: string }).error, /subject must be <kind>:<name>/)
    const r2 = await call('/v1/tokens', admin, { method: 'POST', body: JSON.stringify({ subject: 'user:a', ttl: '100d' }) })
    assert.equal(r2.status, 400)
    assert.match(((await r2.json()) as { error: string }).error, /max_ttl/)
    const r3 = await call('/v1/tokens', admin, { method: 'POST', body: JSON.stringify({ subject: 'user:a', extra: 1 }) })
    assert.equal(r3.status, 400)
  })

  test('the OpenAPI document lists every route', async () => {
    const doc = (await (await call('/v1/openapi.json', null)).json()) as { openapi: string; paths: Record<string, unknown> }
    assert.match(doc.openapi, /^3\./)
    for (const p of ['/v1/health', '/v1/sessions', '/v1/sessions/{id}/kill', '/v1/audit', '/v1/tokens', '/v1/tokens/{id}/revoke']) {
      assert.ok(doc.paths[p], `${p} documented`)
    }
  })

  test('every GH_ERR code is documented in docs/errors.md and every documented one exists', () => {
    const errorsPage = readFileSync(join(REPO, 'docs', 'errors.md'), 'utf8')
    const documented = new Set([...errorsPage.matchAll(/`(GH_ERR_[A-Z_]+)`/g)].map((m) => m[1]))
    assert.deepEqual([...documented].sort(), [...Object.keys(ERROR_CODES), ...Object.keys(API_ERROR_CODES)].sort())
  })
})
