// The public-key routes of the API (admin), over the key store in public-keys.ts:
//
//   GET  /v1/public-keys[?principal=]       list (admin)
//   POST /v1/public-keys                    register {principal, key, groups?, scope?, ttl?}
//   POST /v1/public-keys/:id/remove         remove by id or fingerprint; ends its live sessions

import type { FastifyInstance } from 'fastify'
import type { AuditLog } from '../audit/writer.js'
import { parseDuration } from '../duration.js'
import type { SessionManager } from '../sessions.js'
import type { PublicKeyRecord, Store } from '../store.js'
import { MAX_KEY_CHARS, PublicKeys, publicKeyJson } from './public-keys.js'

export interface PublicKeyRouteDeps {
  readonly store: Store
  readonly sessions: SessionManager
  readonly audit: AuditLog
  readonly maxTtlSeconds: number
}

const keySchema = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    principal: { type: 'string' },
    fingerprint: { type: 'string' },
    key: { type: 'string' },
    comment: { type: ['string', 'null'] },
    groups: { type: 'array', items: { type: 'string' } },
    scope: { type: 'array', items: { type: 'string' } },
    created_at: { type: 'string' },
    expires_at: { type: ['string', 'null'] },
    revoked: { type: 'boolean' },
  },
} as const

const errorSchema = { type: 'object', properties: { error: { type: 'string' }, code: { type: 'string' } }, required: ['error'] } as const

/** The admin routes (the API's onRequest hook requires an admin token for them). */
export function publicKeyRoutes(deps: PublicKeyRouteDeps): (app: FastifyInstance) => Promise<void> {
  const keys = new PublicKeys(deps.store, deps.maxTtlSeconds)
  return async (app) => {
    app.get<{ Querystring: { principal?: string } }>(
      '/v1/public-keys',
      {
        schema: {
          summary: 'Public keys registered to principals, oldest first',
          querystring: { type: 'object', properties: { principal: { type: 'string', maxLength: 140 } }, additionalProperties: false },
          response: { 200: { type: 'object', properties: { keys: { type: 'array', items: keySchema } } } },
        },
      },
      async (req) => {
        const list = deps.store.listPublicKeys(req.query.principal)
        const revoked = deps.store.revokedAmong(list.map((k) => k.id))
        return { keys: list.map((k) => publicKeyJson(k, revoked.has(k.id))) }
      },
    )
    app.post<{ Body: { principal: string; key: string; groups?: string[]; scope?: string[]; ttl?: string } }>(
      '/v1/public-keys',
      {
        schema: {
          summary: 'Register a public key to a principal (with the groups and scope its logins get)',
          body: {
            type: 'object',
            properties: {
              principal: { type: 'string', maxLength: 140 },
              key: { type: 'string', maxLength: MAX_KEY_CHARS },
              groups: { type: 'array', items: { type: 'string', maxLength: 64 }, maxItems: 32 },
              scope: { type: 'array', items: { type: 'string', maxLength: 128 }, maxItems: 32 },
              ttl: { type: 'string', maxLength: 16 },
            },
            required: ['principal', 'key'],
            additionalProperties: false,
          },
          response: { 200: keySchema, 400: errorSchema },
        },
      },
      async (req, reply) => {
        const b = req.body
        const ttl = b.ttl === undefined ? undefined : parseDuration(b.ttl)
        if (ttl === null || (ttl !== undefined && ttl <= 0)) {
          return reply.status(400).send({ error: 'ttl must be a duration like 90d', code: 'GH_ERR_REQUEST' })
        }
        let rec: PublicKeyRecord
        try {
          rec = keys.register({
            principal: b.principal,
            key: b.key,
            groups: b.groups ?? [],
            scope: b.scope ?? [],
            ...(ttl !== undefined ? { ttlSeconds: ttl } : {}),
          })
        } catch (err) {
          return reply.status(400).send({ error: err instanceof Error ? err.message : String(err), code: 'GH_ERR_REQUEST' })
        }
        await deps.audit.append({
          type: 'token.issued',
          session: null,
          chain: req.admin?.chain.map((p) => p.id) ?? [],
          connection: null,
          token: {
            id: rec.id,
            source: 'public-key',
            action: 'registered',
            subject: rec.principal,
            fingerprint: rec.fingerprint,
            groups: rec.groups,
            scope: rec.scope,
          },
        })
        return publicKeyJson(rec, false)
      },
    )
    app.post<{ Params: { id: string } }>(
      '/v1/public-keys/:id/remove',
      {
        schema: {
          summary: 'Remove a public key (by id or fingerprint); the sessions it opened end at once',
          params: { type: 'object', properties: { id: { type: 'string', maxLength: 200 } }, required: ['id'] },
          response: {
            200: { type: 'object', properties: { removed: keySchema, sessions_ended: { type: 'integer' } } },
            404: errorSchema,
          },
        },
      },
      async (req, reply) => {
        const rec = deps.store.removePublicKey(req.params.id)
        if (!rec) return reply.status(404).send({ error: `no public key ${req.params.id}`, code: 'GH_ERR_NOT_FOUND' })
        await deps.audit.append({
          type: 'token.revoked',
          session: null,
          chain: req.admin?.chain.map((p) => p.id) ?? [],
          connection: null,
          token: { id: rec.id, source: 'public-key', action: 'removed', subject: rec.principal, fingerprint: rec.fingerprint },
        })
        const n = await deps.sessions.killByTokenEverywhere(rec.id, 'the public key that opened this session was removed')
        return { removed: publicKeyJson(rec, false), sessions_ended: n }
      },
    )
  }
}
