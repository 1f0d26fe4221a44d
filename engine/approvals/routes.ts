// The approvals routes of the HTTP API (a fastify plugin that engine/server/api.ts registers). Each
// route authenticates its caller itself (`config.auth: 'public'` in the API's sense): reviewers and
// requesters act as the identity of their own token, not the admin credential.
//
//   GET  /v1/approvals                 requests the caller may read, oldest first
//   GET  /v1/approvals/:id             one request: who asks, the chain, the statement, the
//                                      connection, the rules, the reason, the votes
//   POST /v1/approvals/:id/approve     {comment?}   a vote; the grant exists once every requirement has its count
//   POST /v1/approvals/:id/deny        {comment?}   ends the request; the waiting client gets the comment
//   POST /v1/approvals/requests        {connection, action, for, reason?}   an access request ahead of time

import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { parseDuration } from '../duration.js'
import type { Identity } from '../types.js'
import { isApprovalError } from './errors.js'
import type { ApprovalService } from './service.js'

const errorSchema = {
  type: 'object',
  properties: { error: { type: 'string' }, code: { type: 'string' } },
  required: ['error'],
} as const

const requirementSchema = {
  type: 'object',
  properties: { rule: { type: 'string' }, group: { type: 'string' }, count: { type: 'integer' }, reason: { type: 'string' } },
} as const

const nullableString = { type: ['string', 'null'] } as const

export const approvalSchema = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    status: { type: 'string', enum: ['pending', 'approved', 'denied', 'expired', 'used'] },
    kind: { type: 'string', enum: ['statement', 'access'] },
    requester: { type: 'string' },
    chain: { type: 'array', items: { type: 'string' } },
    token_ids: { type: 'array', items: { type: 'string' } },
    connection: { type: 'string' },
    connection_labels: { type: 'object', additionalProperties: { type: 'string' } },
    session: nullableString,
    action: { type: 'string' },
    statement: { type: 'string' },
    fingerprint: nullableString,
    rules: { type: 'array', items: { type: 'string' } },
    requirements: { type: 'array', items: requirementSchema },
    reason: nullableString,
    grant: { type: 'string', enum: ['once', 'window'] },
    window_seconds: { type: ['integer', 'null'] },
    created_at: { type: 'string' },
    expires_at: { type: 'string' },
    decided_at: nullableString,
    grant_expires_at: nullableString,
    used_at: nullableString,
    policy_version: { type: 'string' },
    votes: {
      type: 'array',
      items: {
        type: 'object',
        properties: { reviewer: { type: 'string' }, verdict: { type: 'string' }, comment: nullableString, at: { type: 'string' } },
      },
    },
  },
} as const

const idParams = {
  type: 'object',
  properties: { id: { type: 'string', pattern: '^R-[0-9a-f]{6}$' } },
  required: ['id'],
} as const

const commentBody = {
  type: ['object', 'null'],
  properties: { comment: { type: 'string', maxLength: 2000 } },
  additionalProperties: false,
} as const

export function approvalRoutes(svc: ApprovalService, identify: (token: string) => Promise<Identity>) {
  return async function routes(app: FastifyInstance): Promise<void> {
    /** The caller's identity, or a 401 already sent. */
    const caller = async (req: FastifyRequest, reply: FastifyReply): Promise<Identity | null> => {
      const h = req.headers.authorization
      if (typeof h !== 'string' || !h.startsWith('Bearer ')) {
        await reply.status(401).send({ error: 'a token is required (Authorization: Bearer …)', code: 'GH_ERR_AUTH' })
        return null
      }
      try {
        return await identify(h.slice(7).trim())
      } catch {
        await reply.status(401).send({ error: 'the token is invalid, expired or revoked', code: 'GH_ERR_AUTH' })
        return null
      }
    }
    const fail = (reply: FastifyReply, err: unknown): FastifyReply => {
      if (isApprovalError(err)) return reply.status(err.status).send({ error: err.message, code: err.code })
      throw err
    }

    app.get(
      '/v1/approvals',
      {
        config: { auth: 'public' },
        schema: {
          summary: 'Approval requests the caller may read (as reviewer, requester or admin), oldest first',
          response: { 200: { type: 'object', properties: { approvals: { type: 'array', items: approvalSchema } } }, 401: errorSchema },
        },
      },
      async (req, reply) => {
        const who = await caller(req, reply)
        if (!who) return reply
        return { approvals: svc.list(who) }
      },
    )

    app.get<{ Params: { id: string } }>(
      '/v1/approvals/:id',
      {
        config: { auth: 'public' },
        schema: {
          summary: 'One approval request',
          params: idParams,
          response: { 200: approvalSchema, 401: errorSchema, 404: errorSchema },
        },
      },
      async (req, reply) => {
        const who = await caller(req, reply)
        if (!who) return reply
        try {
          return svc.show(who, req.params.id)
        } catch (err) {
          return fail(reply, err)
        }
      },
    )

    for (const verdict of ['approve', 'deny'] as const) {
      app.post<{ Params: { id: string }; Body: { comment?: string } | null | undefined }>(
        `/v1/approvals/:id/${verdict}`,
        {
          config: { auth: 'public' },
          schema: {
            summary:
              verdict === 'approve'
                ? 'Approve a request (a member of a required group, not in its chain)'
                : 'Deny a request; the waiting client gets the comment',
            params: idParams,
            body: commentBody,
            response: { 200: approvalSchema, 401: errorSchema, 403: errorSchema, 404: errorSchema, 409: errorSchema },
          },
        },
        async (req, reply) => {
          const who = await caller(req, reply)
          if (!who) return reply
          const comment = req.body?.comment ?? null
          try {
            return verdict === 'approve' ? await svc.approve(who, req.params.id, comment) : await svc.deny(who, req.params.id, comment)
          } catch (err) {
            return fail(reply, err)
          }
        },
      )
    }

    app.post<{ Body: { connection: string; action: string; for: string; reason?: string } }>(
      '/v1/approvals/requests',
      {
        config: { auth: 'public' },
        schema: {
          summary: 'Ask ahead of time for a window grant: the action on the connection, for this chain, for a duration',
          body: {
            type: 'object',
            properties: {
              connection: { type: 'string', maxLength: 63 },
              action: { type: 'string', maxLength: 64 },
              for: { type: 'string', maxLength: 16 },
              reason: { type: 'string', maxLength: 2000 },
            },
            required: ['connection', 'action', 'for'],
            additionalProperties: false,
          },
          response: { 200: approvalSchema, 400: errorSchema, 401: errorSchema },
        },
      },
      async (req, reply) => {
        const who = await caller(req, reply)
        if (!who) return reply
        const seconds = parseDuration(req.body.for)
        if (seconds === null || seconds <= 0) {
          return reply.status(400).send({ error: 'for must be a duration like 30m or 2h', code: 'GH_ERR_APPROVAL_REQUEST' })
        }
        try {
          return await svc.requestAccess(who, {
            connection: req.body.connection,
            action: req.body.action,
            forSeconds: seconds,
            reason: req.body.reason ?? null,
          })
        } catch (err) {
          return fail(reply, err)
        }
      },
    )
  }
}
