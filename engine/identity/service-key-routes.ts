// The service-account key routes of the API (admin): POST /v1/service-keys creates a key (shown
// once, stored as a hash), GET lists them, POST /v1/service-keys/:id/rotate replaces one with a
// grace period for the old key. Added to the identity routes' fastify context.

import type { FastifyInstance } from 'fastify'
import type { Identity } from '../types.js'
import { parseDuration } from '../duration.js'
import { refused } from './errors.js'
import { splitScope } from './scope.js'
import type { IdentityService } from './service.js'
import { apiError, errorSchema, iso } from './http.js'

export function serviceKeyRoutes(app: FastifyInstance, svc: IdentityService): void {
  const keySchema = {
    type: 'object',
    properties: {
      id: { type: 'string' },
      principal: { type: 'string' },
      groups: { type: 'array', items: { type: 'string' } },
      scope: { type: 'array', items: { type: 'string' } },
      description: { type: ['string', 'null'] },
      created_at: { type: 'string' },
      expires_at: { type: 'string' },
      rotated_to: { type: ['string', 'null'] },
      revoked: { type: 'boolean' },
      expired: { type: 'boolean' },
    },
  } as const

  app.post<{ Body: { name: string; groups?: string[]; scope?: string[]; ttl?: string; description?: string } }>(
    '/v1/service-keys',
    {
      schema: {
        summary: 'Create a service-account API key; the key is in this answer only (stored as a hash)',
        body: {
          type: 'object',
          properties: {
            name: { type: 'string', maxLength: 72 },
            groups: { type: 'array', items: { type: 'string', maxLength: 64 }, maxItems: 32 },
            scope: { type: 'array', items: { type: 'string', maxLength: 128 }, maxItems: 32 },
            ttl: { type: 'string', maxLength: 16 },
            description: { type: 'string', maxLength: 200 },
          },
          required: ['name'],
          additionalProperties: false,
        },
        response: {
          200: {
            type: 'object',
            properties: {
              key: { type: 'string' },
              id: { type: 'string' },
              principal: { type: 'string' },
              expires_at: { type: 'string' },
            },
          },
          400: errorSchema,
        },
      },
    },
    async (req, reply) => {
      try {
        const ttl = keyTtl(svc, req.body.ttl)
        const k = svc.keys.create({
          name: req.body.name,
          groups: req.body.groups ?? [],
          scope: splitScope(req.body.scope ?? []),
          ttlSeconds: ttl,
          ...(req.body.description !== undefined ? { description: req.body.description } : {}),
        })
        await auditKey(svc, req.admin, k.record, 'created')
        return { key: k.key, id: k.record.id, principal: k.record.principal, expires_at: iso(k.record.expiresAt) }
      } catch (err) {
        return apiError(reply, err)
      }
    },
  )

  app.get(
    '/v1/service-keys',
    {
      schema: {
        summary: 'Service-account keys, oldest first (never the secrets)',
        response: { 200: { type: 'object', properties: { keys: { type: 'array', items: keySchema } } } },
      },
    },
    async () => {
      const now = Math.floor(Date.now() / 1000)
      return {
        keys: svc.keys.list().map((k) => ({
          id: k.id,
          principal: k.principal,
          groups: k.groups,
          scope: k.scope,
          description: k.description,
          created_at: iso(k.createdAt),
          expires_at: iso(k.expiresAt),
          rotated_to: k.rotatedTo,
          revoked: k.revoked,
          expired: k.expiresAt <= now,
        })),
      }
    },
  )

  app.post<{ Params: { id: string }; Body: { grace?: string; ttl?: string } | undefined }>(
    '/v1/service-keys/:id/rotate',
    {
      schema: {
        summary: 'Rotate a key: a successor with the same rights; the old key ends after the grace period (default now)',
        params: { type: 'object', properties: { id: { type: 'string', maxLength: 64 } }, required: ['id'] },
        body: {
          type: ['object', 'null'],
          properties: { grace: { type: 'string', maxLength: 16 }, ttl: { type: 'string', maxLength: 16 } },
          additionalProperties: false,
        },
        response: {
          200: {
            type: 'object',
            properties: {
              key: { type: 'string' },
              id: { type: 'string' },
              replaces: { type: 'string' },
              expires_at: { type: 'string' },
              old_expires_at: { type: 'string' },
            },
          },
          400: errorSchema,
        },
      },
    },
    async (req, reply) => {
      try {
        const graceText = req.body?.grace
        const grace = graceText === undefined || graceText === '0' ? 0 : parseDuration(graceText)
        if (grace === null) throw refused('invalid_request', 'grace must be a duration like 10m or 1h, or 0')
        const k = svc.keys.rotate(req.params.id, {
          graceSeconds: grace,
          ...(req.body?.ttl !== undefined ? { ttlSeconds: keyTtl(svc, req.body.ttl) } : {}),
        })
        await auditKey(svc, req.admin, k.record, 'rotated', req.params.id)
        const old = svc.store.getServiceKey(req.params.id)
        return {
          key: k.key,
          id: k.record.id,
          replaces: req.params.id,
          expires_at: iso(k.record.expiresAt),
          old_expires_at: iso(old?.expiresAt ?? 0),
        }
      } catch (err) {
        return apiError(reply, err)
      }
    },
  )
}

function keyTtl(svc: IdentityService, text: string | undefined): number {
  if (text === undefined) return svc.config.serviceKeys.defaultTtlSeconds
  const s = parseDuration(text)
  if (s === null || s <= 0) throw refused('invalid_request', 'ttl must be a duration like 30d or 90d')
  if (s > svc.config.serviceKeys.maxTtlSeconds) {
    throw refused('invalid_request', `ttl exceeds the maximum of ${svc.config.serviceKeys.maxTtlSeconds}s (identity.service_keys.max_ttl)`)
  }
  return s
}

async function auditKey(
  svc: IdentityService,
  admin: Identity | undefined,
  k: { id: string; principal: string; groups: readonly string[]; scope: readonly string[]; expiresAt: number },
  action: 'created' | 'rotated',
  replaces?: string,
): Promise<void> {
  await svc.audit.append({
    type: 'token.issued',
    session: null,
    chain: admin?.chain.map((p) => p.id) ?? [],
    connection: null,
    token: {
      id: k.id,
      source: 'service-key',
      action,
      ...(replaces ? { replaces } : {}),
      subject: k.principal,
      groups: k.groups,
      scope: k.scope,
      expires_at: iso(k.expiresAt),
    },
  })
}
