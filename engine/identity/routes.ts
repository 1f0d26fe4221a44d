// The identity routes of the HTTP API (a fastify plugin that engine/server/api.ts registers):
//
//   POST /oauth/token                          RFC 8693 token exchange (form or JSON body), public:
//        subject_token_type …:access_token      a Gatehouse token → a child for `agent` (delegation)
//        subject_token_type …:jwt               a CI job's OIDC token → a workload token (federation)
//        subject_token_type …gatehouse…api-key  a service-account key → a short-lived token
//   GET  /.well-known/openid-configuration     discovery for resources that check Gatehouse tokens
//   GET  /.well-known/jwks.json                the gateway's public signing key
//   GET  /v1/login/providers                   OIDC providers people can log in with
//   POST /v1/login/start, /v1/login/finish     browser login (authorization code + PKCE)
//   POST /v1/login/device, /v1/login/device/poll  device authorization grant
//   GET  /v1/whoami                            the caller's identity (any valid token or key)
//   POST /v1/service-keys, GET /v1/service-keys, POST /v1/service-keys/:id/rotate   (admin)
//
// Each route says in `config.auth` who may call it: `public` (the route authenticates the request
// itself, or needs nothing), or the API's default, an admin token. Token endpoint errors follow
// RFC 6749 §5.2 ({error, error_description}); the others the API's {error, code}.

import type { FastifyInstance, FastifyReply } from 'fastify'
import { audienceProblem, MAX_TOKEN_CHARS } from './tokens.js'
import type { Identity } from '../types.js'
import { parseDuration } from '../duration.js'
import { type IdentityError, isIdentityError, refused } from './errors.js'
import { splitScope } from './scope.js'
import type { IdentityService } from './service.js'
import { apiError, errorSchema, iso } from './http.js'
import { serviceKeyRoutes } from './service-key-routes.js'

export const TOKEN_TYPE_ACCESS = 'urn:ietf:params:oauth:token-type:access_token'
export const TOKEN_TYPE_JWT = 'urn:ietf:params:oauth:token-type:jwt'
export const TOKEN_TYPE_API_KEY = 'urn:gatehouse:params:oauth:token-type:api-key'
export const GRANT_TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Who may call the route: `public` routes authenticate the request themselves, if at all. */
    auth?: 'public' | 'admin'
  }
}

const principalSchema = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    kind: { type: 'string' },
    groups: { type: 'array', items: { type: 'string' } },
    scope: { type: 'array', items: { type: 'string' } },
  },
} as const

const issuedSchema = {
  type: 'object',
  properties: {
    token: { type: 'string' },
    id: { type: 'string' },
    expires_at: { type: 'string' },
    principal: { type: 'string' },
    groups: { type: 'array', items: { type: 'string' } },
  },
} as const

interface TokenRequest {
  grant_type?: string
  subject_token?: string
  subject_token_type?: string
  requested_token_type?: string
  scope?: string
  audience?: string
  resource?: string
  agent?: string
  ttl?: string
}

function ttlSeconds(text: string | undefined): number | undefined {
  if (text === undefined || text === '') return undefined
  const s = /^\d+$/.test(text) ? Number(text) : parseDuration(text)
  if (s === null || !Number.isSafeInteger(s) || s <= 0)
    throw refused('invalid_request', 'ttl must be a duration like 15m or 1h, or seconds')
  return s
}

function bearer(header: unknown): string | null {
  return typeof header === 'string' && header.startsWith('Bearer ') ? header.slice(7).trim() : null
}

function identityView(id: Identity): Record<string, unknown> {
  const me = id.chain[id.chain.length - 1]
  return {
    principal: me?.id ?? null,
    kind: me?.kind ?? null,
    groups: me?.groups ?? [],
    scope: me?.scope ?? [],
    expires_at: iso(id.expiresAt),
    chain: id.chain.map((p) => ({ id: p.id, kind: p.kind, groups: p.groups, scope: p.scope })),
    token_ids: id.tokenIds,
  }
}

export function identityRoutes(svc: IdentityService) {
  return async function routes(app: FastifyInstance): Promise<void> {
    // RFC 8693 requests are application/x-www-form-urlencoded; capped like every other body.
    app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 64 * 1024 }, (_req, body, done) => {
      const out: Record<string, string> = {}
      for (const [k, v] of new URLSearchParams(String(body))) if (!(k in out)) out[k] = v
      done(null, out)
    })

    const oauthError = (reply: FastifyReply, err: IdentityError) => {
      const status = err.oauth === 'server_error' ? 503 : err.oauth === 'invalid_client' ? 401 : 400
      svc.log.info({ oauth: err.oauth, why: err.message }, 'token exchange refused')
      return reply.status(status).header('cache-control', 'no-store').send({ error: err.oauth, error_description: err.publicMessage })
    }

    app.post<{ Body: TokenRequest }>(
      '/oauth/token',
      {
        config: { auth: 'public' },
        attachValidation: true,
        schema: {
          summary: 'RFC 8693 token exchange: delegate to an agent, federate a workload token, or exchange a service-account key',
          security: [],
          consumes: ['application/x-www-form-urlencoded', 'application/json'],
          body: {
            type: 'object',
            properties: {
              grant_type: { type: 'string', maxLength: 100 },
              subject_token: { type: 'string', maxLength: 16384 },
              subject_token_type: { type: 'string', maxLength: 100 },
              requested_token_type: { type: 'string', maxLength: 100 },
              scope: { type: 'string', maxLength: 2048 },
              audience: { type: 'string', maxLength: 200 },
              resource: { type: 'string', maxLength: 200 },
              agent: { type: 'string', maxLength: 80 },
              ttl: { type: 'string', maxLength: 16 },
            },
            required: ['grant_type', 'subject_token', 'subject_token_type'],
            // RFC 6749 §3.2: unrecognized parameters are ignored, not an error.
            additionalProperties: true,
          },
          response: {
            200: {
              type: 'object',
              properties: {
                access_token: { type: 'string' },
                issued_token_type: { type: 'string' },
                token_type: { type: 'string' },
                expires_in: { type: 'integer' },
                scope: { type: 'string' },
                token_id: { type: 'string' },
                chain: { type: 'array', items: { type: 'string' } },
                audience: { type: 'string' },
              },
            },
            400: errorSchema,
            401: errorSchema,
            503: errorSchema,
          },
        },
      },
      async (req, reply) => {
        try {
          if (req.validationError) throw refused('invalid_request', req.validationError.message)
          const b = req.body
          if (b.grant_type !== GRANT_TOKEN_EXCHANGE) {
            throw refused('unsupported_grant_type', `grant_type must be ${GRANT_TOKEN_EXCHANGE}`)
          }
          if (
            b.requested_token_type !== undefined &&
            b.requested_token_type !== TOKEN_TYPE_ACCESS &&
            b.requested_token_type !== TOKEN_TYPE_JWT
          ) {
            throw refused('invalid_request', `requested_token_type must be ${TOKEN_TYPE_ACCESS}`)
          }
          const subject = b.subject_token ?? ''
          const issued = await exchange(svc, b, subject)
          return reply.header('cache-control', 'no-store').send({
            access_token: issued.token,
            issued_token_type: TOKEN_TYPE_ACCESS,
            token_type: 'Bearer',
            expires_in: Math.max(0, issued.expiresAt - Math.floor(Date.now() / 1000)),
            scope: issued.scope.join(' '),
            token_id: issued.id,
            chain: issued.chain,
            audience: issued.audience,
          })
        } catch (err) {
          if (isIdentityError(err)) return oauthError(reply, err)
          throw err
        }
      },
    )

    const metadata = () => ({
      issuer: svc.issuer.issuer,
      jwks_uri: `${svc.issuer.issuer}/.well-known/jwks.json`,
      token_endpoint: `${svc.issuer.issuer}/oauth/token`,
      grant_types_supported: [GRANT_TOKEN_EXCHANGE],
      token_endpoint_auth_methods_supported: ['none'],
      response_types_supported: [],
      subject_types_supported: ['public'],
      id_token_signing_alg_values_supported: ['EdDSA'],
      token_endpoint_auth_signing_alg_values_supported: ['EdDSA'],
      scopes_supported: [],
    })
    for (const path of ['/.well-known/openid-configuration', '/.well-known/oauth-authorization-server']) {
      app.get(path, { config: { auth: 'public' }, schema: { summary: 'Discovery document (RFC 8414)', security: [] } }, async () =>
        metadata(),
      )
    }
    app.get(
      '/.well-known/jwks.json',
      { config: { auth: 'public' }, schema: { summary: "The gateway's public signing keys (JWKS)", security: [] } },
      async () => ({ keys: [svc.issuer.publicJwk()] }),
    )

    app.get(
      '/v1/login/providers',
      {
        config: { auth: 'public' },
        schema: {
          summary: 'OIDC providers people can log in with',
          security: [],
          response: { 200: { type: 'object', properties: { providers: { type: 'array', items: { type: 'string' } } } } },
        },
      },
      async () => ({ providers: svc.oidc.names() }),
    )

    app.post<{ Body: { provider?: string; redirect_uri: string } }>(
      '/v1/login/start',
      {
        config: { auth: 'public' },
        schema: {
          summary: 'Start a browser login (authorization code + PKCE) that redirects to a loopback callback',
          security: [],
          body: {
            type: 'object',
            properties: { provider: { type: 'string', maxLength: 63 }, redirect_uri: { type: 'string', maxLength: 200 } },
            required: ['redirect_uri'],
            additionalProperties: false,
          },
          response: {
            200: { type: 'object', properties: { login_id: { type: 'string' }, authorization_url: { type: 'string' } } },
            400: errorSchema,
            503: errorSchema,
          },
        },
      },
      async (req, reply) => {
        try {
          const r = await svc.oidc.startBrowser(req.body.provider, req.body.redirect_uri)
          return { login_id: r.loginId, authorization_url: r.authorizationUrl }
        } catch (err) {
          return apiError(reply, err)
        }
      },
    )

    const issueLogin = async (login: Awaited<ReturnType<typeof svc.oidc.finishBrowser>>) => {
      const ttl = Math.min(login.ttlSeconds ?? svc.defaultTtlSeconds, svc.maxTtlSeconds)
      const t = await svc.issuer.issue({ subject: login.principal, groups: login.groups, ttlSeconds: ttl })
      await svc.audit.append({
        type: 'token.issued',
        session: null,
        chain: [login.principal],
        connection: null,
        token: {
          id: t.id,
          source: 'oidc',
          provider: login.provider,
          provider_subject: login.subject,
          subject: login.principal,
          groups: login.groups,
          expires_at: iso(t.expiresAt),
        },
      })
      return { token: t.token, id: t.id, expires_at: iso(t.expiresAt), principal: login.principal, groups: login.groups }
    }

    app.post<{ Body: { login_id: string; callback_url: string } }>(
      '/v1/login/finish',
      {
        config: { auth: 'public' },
        schema: {
          summary: 'Finish a browser login with the URL the provider redirected to; returns a Gatehouse token',
          security: [],
          body: {
            type: 'object',
            properties: { login_id: { type: 'string', maxLength: 64 }, callback_url: { type: 'string', maxLength: 4096 } },
            required: ['login_id', 'callback_url'],
            additionalProperties: false,
          },
          response: { 200: issuedSchema, 400: errorSchema, 503: errorSchema },
        },
      },
      async (req, reply) => {
        try {
          return await issueLogin(await svc.oidc.finishBrowser(req.body.login_id, req.body.callback_url))
        } catch (err) {
          return apiError(reply, err)
        }
      },
    )

    app.post<{ Body: { provider?: string } | undefined }>(
      '/v1/login/device',
      {
        config: { auth: 'public' },
        schema: {
          summary: 'Start a device authorization grant; poll /v1/login/device/poll for the token',
          security: [],
          body: { type: ['object', 'null'], properties: { provider: { type: 'string', maxLength: 63 } }, additionalProperties: false },
          response: {
            200: {
              type: 'object',
              properties: {
                login_id: { type: 'string' },
                user_code: { type: 'string' },
                verification_uri: { type: 'string' },
                verification_uri_complete: { type: ['string', 'null'] },
                expires_in: { type: 'integer' },
                interval: { type: 'integer' },
              },
            },
            400: errorSchema,
            503: errorSchema,
          },
        },
      },
      async (req, reply) => {
        try {
          const d = await svc.oidc.startDevice(req.body?.provider)
          return {
            login_id: d.loginId,
            user_code: d.userCode,
            verification_uri: d.verificationUri,
            verification_uri_complete: d.verificationUriComplete,
            expires_in: d.expiresIn,
            interval: d.interval,
          }
        } catch (err) {
          return apiError(reply, err)
        }
      },
    )

    app.post<{ Body: { login_id: string } }>(
      '/v1/login/device/poll',
      {
        config: { auth: 'public' },
        schema: {
          summary: 'Where a device login stands: 202 while pending, the Gatehouse token once confirmed',
          security: [],
          body: {
            type: 'object',
            properties: { login_id: { type: 'string', maxLength: 64 } },
            required: ['login_id'],
            additionalProperties: false,
          },
          response: {
            200: issuedSchema,
            202: { type: 'object', properties: { status: { type: 'string' } } },
            400: errorSchema,
            401: errorSchema,
          },
        },
      },
      async (req, reply) => {
        const s = svc.oidc.pollDevice(req.body.login_id)
        if (s.status === 'pending') return reply.status(202).send({ status: 'authorization_pending' })
        if (s.status === 'failed') return apiError(reply, s.error)
        return issueLogin(s.login)
      },
    )

    app.get(
      '/v1/whoami',
      {
        config: { auth: 'public' },
        schema: {
          summary: 'The identity of the presented token or service-account key: principal, groups, scope, expiry, chain',
          response: {
            200: {
              type: 'object',
              properties: {
                principal: { type: 'string' },
                kind: { type: 'string' },
                groups: { type: 'array', items: { type: 'string' } },
                scope: { type: 'array', items: { type: 'string' } },
                expires_at: { type: 'string' },
                chain: { type: 'array', items: principalSchema },
                token_ids: { type: 'array', items: { type: 'string' } },
              },
            },
            401: errorSchema,
          },
        },
      },
      async (req, reply) => {
        const token = bearer(req.headers.authorization)
        if (!token) return reply.status(401).send({ error: 'a token is required (Authorization: Bearer …)', code: 'GH_ERR_AUTH' })
        try {
          return identityView(await svc.identify(token))
        } catch (err) {
          if (isIdentityError(err)) return reply.status(401).send({ error: err.publicMessage, code: err.code })
          throw err
        }
      },
    )

    serviceKeyRoutes(app, svc)
  }
}

interface Exchanged {
  readonly token: string
  readonly id: string
  readonly expiresAt: number
  readonly scope: readonly string[]
  readonly chain: readonly string[]
  readonly audience: string
}

/** The three exchanges of /oauth/token; every refusal is an IdentityError. */
async function exchange(svc: IdentityService, b: TokenRequest, subject: string): Promise<Exchanged> {
  const audience = b.audience ?? b.resource
  if (audience !== undefined) {
    const bad = audienceProblem(audience)
    if (bad) throw refused('invalid_target', bad)
  }
  const requestedScope = splitScope(b.scope ?? '')
  const ttl = ttlSeconds(b.ttl)
  switch (b.subject_token_type) {
    case TOKEN_TYPE_ACCESS: {
      if (!b.agent) throw refused('invalid_request', 'delegation needs agent: the name of the agent the child token is for')
      if (subject.length > MAX_TOKEN_CHARS * 2) throw refused('invalid_grant', 'the subject token is not a Gatehouse token')
      const d = await svc.issuer.delegate(
        subject,
        {
          agent: b.agent,
          scope: requestedScope,
          ...(ttl !== undefined ? { ttlSeconds: ttl } : {}),
          defaultTtlSeconds: svc.config.delegation.defaultTtlSeconds,
          ...(audience !== undefined ? { audience } : {}),
        },
        svc.isRevoked,
      )
      const chain = d.identity.chain.map((p) => p.id)
      await svc.audit.append({
        type: 'token.issued',
        session: null,
        chain: chain.slice(0, -1),
        connection: null,
        token: {
          id: d.id,
          source: 'delegation',
          parent: d.parentId,
          subject: chain[chain.length - 1],
          chain,
          scope: d.scope,
          audience: d.audience,
          expires_at: iso(d.expiresAt),
        },
      })
      return { token: d.token, id: d.id, expiresAt: d.expiresAt, scope: d.scope, chain, audience: d.audience }
    }
    case TOKEN_TYPE_JWT: {
      if (b.agent)
        throw refused('invalid_request', 'agent applies to delegation (subject_token_type access_token), not to a workload token')
      const f = await svc.federation.exchange(subject)
      if (requestedScope.length > 0) throw refused('invalid_scope', 'a workload token gets the scope of its rule; ask for none')
      const life = Math.min(ttl ?? f.ttlSeconds, f.ttlSeconds, svc.maxTtlSeconds)
      const t = await svc.issuer.issue({
        subject: f.principal,
        groups: f.groups,
        scope: f.scope,
        ttlSeconds: life,
        ...(audience !== undefined ? { audience } : {}),
      })
      await svc.audit.append({
        type: 'token.issued',
        session: null,
        chain: [f.principal],
        connection: null,
        token: {
          id: t.id,
          source: 'federation',
          issuer: f.issuer,
          issuer_name: f.issuerName,
          rule: f.rule,
          workload_subject: f.subject,
          subject: f.principal,
          groups: f.groups,
          scope: f.scope,
          expires_at: iso(t.expiresAt),
        },
      })
      return {
        token: t.token,
        id: t.id,
        expiresAt: t.expiresAt,
        scope: f.scope,
        chain: [f.principal],
        audience: audience ?? svc.issuer.issuer,
      }
    }
    case TOKEN_TYPE_API_KEY: {
      if (b.agent) throw refused('invalid_request', 'agent applies to delegation, not to a service-account key')
      const id = svc.keys.verify(subject)
      const who = id.chain[0]
      const keyId = id.tokenIds[0]
      if (!who || !keyId) throw refused('invalid_grant', 'the key names no principal')
      if (requestedScope.length > 0) throw refused('invalid_scope', "a key's token gets the key's scope; delegate to narrow it")
      const now = Math.floor(Date.now() / 1000)
      const life = Math.min(ttl ?? svc.defaultTtlSeconds, svc.defaultTtlSeconds, id.expiresAt - now)
      const t = await svc.issuer.issue({
        subject: who.id,
        groups: who.groups,
        scope: who.scope,
        ttlSeconds: life,
        source: keyId,
        ...(audience !== undefined ? { audience } : {}),
      })
      await svc.audit.append({
        type: 'token.issued',
        session: null,
        chain: [who.id],
        connection: null,
        token: {
          id: t.id,
          source: 'service-key',
          key: keyId,
          subject: who.id,
          groups: who.groups,
          scope: who.scope,
          expires_at: iso(t.expiresAt),
        },
      })
      return {
        token: t.token,
        id: t.id,
        expiresAt: t.expiresAt,
        scope: who.scope,
        chain: [who.id],
        audience: audience ?? svc.issuer.issuer,
      }
    }
    default:
      throw refused(
        'invalid_request',
        `subject_token_type must be ${TOKEN_TYPE_ACCESS} (delegation), ${TOKEN_TYPE_JWT} (a workload token) or ${TOKEN_TYPE_API_KEY}`,
      )
  }
}
