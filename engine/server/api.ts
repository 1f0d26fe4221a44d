// The gateway's JSON HTTP API (fastify). Every route has a JSON schema; the OpenAPI document is
// generated from them at /v1/openapi.json. Every route except /v1/health and the routes that say
// `config: { auth: 'public' }` (the identity routes of identity/routes.ts: token exchange, login,
// discovery, whoami, which authenticate their callers themselves) needs an admin token:
// a Gatehouse token whose principal is in the `gatehouse-admins` group. The CLI uses this API
// while a server runs, so a revocation or a kill takes effect at once.

import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import swagger from '@fastify/swagger'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { auditRoutes } from '../audit/api.js'
import type { AuditServices } from '../audit/service.js'
import { recordingsDir } from '../audit/recording.js'
import { isGatehouseError } from '../errors.js'
import type { SessionManager } from '../sessions.js'
import type { Store } from '../store.js'
import { validateGroup, validateSubject, type TokenIssuer } from '../identity/tokens.js'
import { parseDuration } from '../duration.js'
import type { AuditLog } from '../audit/writer.js'
import type { Identity } from '../types.js'
import type { PolicyStatus } from '../policy/engine.js'
import { policyFiles } from '../policy/files.js'
import { defaultPolicyDir } from '../policy/sources.js'
import { identityRoutes } from '../identity/routes.js'
import { publicKeyRoutes } from '../identity/public-key-routes.js'
import type { IdentityService } from '../identity/service.js'
import { type ApprovalService, approvalRoutes } from '../approvals/index.js'
import { METRICS_CONTENT_TYPE, type Metrics } from './metrics.js'
import type { MetricsAuth } from '../config/config.js'

/** A plugin's HTTP handler on the API listener; `body` is the parsed JSON body (undefined if none). */
export type HttpHandler = (req: IncomingMessage, res: ServerResponse, body: unknown) => void | Promise<void>

export interface HttpMount {
  readonly path: string
  readonly handler: HttpHandler
}

/** What /readyz reports: each check passed or why not. */
export interface ReadinessCheck {
  readonly ok: boolean
  readonly detail: string
}

export interface Readiness {
  readonly ready: boolean
  readonly checks: { readonly listeners: ReadinessCheck; readonly audit: ReadinessCheck; readonly policy: ReadinessCheck }
}
import type { ConnectorInfo } from '../connector/hub.js'
import { Console } from '../console/routes.js'

export const ADMIN_GROUP = 'gatehouse-admins'

export interface ApiDeps {
  readonly issuer: TokenIssuer
  readonly store: Store
  readonly sessions: SessionManager
  readonly audit: AuditLog
  readonly maxTtlSeconds: number
  readonly defaultTtlSeconds: number
  readonly log: Logger
  readonly version: () => { policy: string }
  readonly policy: () => PolicyStatus
  /** Token exchange (delegation, federation, API keys), OIDC login, discovery, whoami, service keys. */
  readonly identity?: IdentityService
  /** Sinks and recordings beside the audit log (engine/audit/service.ts). */
  readonly auditServices?: AuditServices | null
  /** Approval requests, votes and access requests (engine/approvals/routes.ts). */
  readonly approvals?: ApprovalService | null
  /** HTTP handlers mounted by proxy plugins (ProxyContext.mountHttp); public, they authenticate. */
  readonly mounts?: readonly HttpMount[]
  /** Live connector links (engine/connector); absent: no connector is configured. */
  readonly connectors?: () => readonly ConnectorInfo[]
  /** A one-time join token for connector `name` (engine/connector/join.ts); throws GatehouseError. */
  readonly joinToken?: (
    name: string,
    ttl: string | undefined,
    chain: readonly string[],
  ) => Promise<{ token: string; id: string; connector: string; expires_at: string }>
  /** Replaces the admin token and revokes the previous one (`gatehouse admin rotate`). */
  readonly rotateAdmin?: (chain: readonly string[]) => Promise<{ id: string; revoked: string | null }>
  /** /metrics (Prometheus text format), open or for admin tokens (`metrics.auth`). */
  readonly metrics?: Metrics
  readonly metricsAuth?: MetricsAuth
  /** /readyz: listeners bound, audit writable, policy source loaded. */
  readonly readiness?: () => Readiness
  /** The web console at / (engine/console): its public URL and whether its login takes a token. */
  readonly console?: { readonly url: string | null; readonly tokenLogin: boolean }
}

declare module 'fastify' {
  interface FastifyRequest {
    admin?: Identity
  }
}

const errorSchema = {
  type: 'object',
  properties: { error: { type: 'string' }, code: { type: 'string' } },
  required: ['error'],
} as const

const sessionSchema = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    connection: { type: 'string' },
    protocol: { type: 'string' },
    chain: { type: 'array', items: { type: 'string' } },
    client: { type: 'string' },
    started_at: { type: 'string' },
    ended_at: { type: ['string', 'null'] },
    end_reason: { type: ['string', 'null'] },
    active: { type: 'boolean' },
    worker: { type: ['integer', 'null'] },
  },
} as const

export async function buildApi(deps: ApiDeps): Promise<FastifyInstance> {
  const app = Fastify({
    // Request lines are noise at info level; the API's warnings and errors still get through.
    loggerInstance: deps.log.child({ component: 'api' }, { level: 'warn' }) as FastifyBaseLogger,
    bodyLimit: 64 * 1024,
    // Unknown properties are an error, not silently dropped.
    ajv: { customOptions: { removeAdditional: false } },
  })
  await app.register(swagger, {
    openapi: {
      info: { title: 'Gatehouse API', version: '1' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  })

  app.setErrorHandler((err: unknown, _req: FastifyRequest, reply: FastifyReply) => {
    if (isGatehouseError(err)) {
      const status = err.code === 'GH_ERR_AUTH' ? 400 : 500
      return reply.status(status).send({ error: err.publicMessage, code: err.code })
    }
    const e = err as { statusCode?: number; message?: string; validation?: unknown }
    if (e.validation) return reply.status(400).send({ error: e.message ?? 'invalid request', code: 'GH_ERR_REQUEST' })
    deps.log.error({ err }, 'api error')
    return reply
      .status(e.statusCode && e.statusCode < 500 ? e.statusCode : 500)
      .send({ error: e.statusCode && e.statusCode < 500 ? (e.message ?? 'bad request') : 'internal error' })
  })

  const identify = (t: string): Promise<Identity> => deps.identity?.identify(t) ?? deps.issuer.verify(t, (j) => deps.store.isRevoked(j))
  const web = deps.console
    ? new Console({
        identify,
        identity: deps.identity ?? null,
        audit: deps.audit,
        store: deps.store,
        url: deps.console.url,
        tokenLogin: deps.console.tokenLogin,
      })
    : null

  app.addHook('onRequest', async (req, reply) => {
    // No answer of this listener is meant to be sniffed into HTML (exports, recordings, JSON).
    reply.header('x-content-type-options', 'nosniff')
    // Under `serve --workers N`: which worker answered (each connection is served by one).
    const worker = deps.sessions.peers?.worker
    if (worker !== undefined) reply.header('x-gatehouse-worker', String(worker))
    // A console session (cookie + CSRF token) stands for its token on /v1 routes.
    if (web && !(await web.authenticate(req, reply))) return reply
    if (req.url === '/v1/health' || req.url.startsWith('/v1/openapi.json')) return
    if (req.routeOptions.config?.auth === 'public') return
    const h = req.headers.authorization
    if (typeof h !== 'string' || !h.startsWith('Bearer ')) {
      return reply.status(401).send({ error: 'an admin token is required (Authorization: Bearer …)', code: 'GH_ERR_AUTH' })
    }
    let id: Identity
    try {
      id = await deps.issuer.verify(h.slice(7).trim(), (jti) => deps.store.isRevoked(jti))
    } catch {
      return reply.status(401).send({ error: 'the token is invalid, expired or revoked', code: 'GH_ERR_AUTH' })
    }
    const root = id.chain[0]
    if (id.chain.length !== 1 || !root || !root.groups.includes(ADMIN_GROUP)) {
      return reply.status(403).send({ error: `the token's principal is not in the ${ADMIN_GROUP} group`, code: 'GH_ERR_DENIED' })
    }
    req.admin = id
    return undefined
  })

  app.get('/v1/openapi.json', { schema: { hide: true } }, async () => app.swagger())

  // Probes and metrics for orchestrators and Prometheus, outside /v1: liveness says the process
  // answers; readiness says it can do its work (every listener bound, the audit log writable, the
  // policy source loaded as it is now), so a gateway that would refuse everything is taken out of
  // rotation. Neither says more than ok or which check failed.
  app.get(
    '/healthz',
    {
      config: { auth: 'public' },
      schema: {
        summary: 'Liveness: the process is up and answering',
        security: [],
        response: { 200: { type: 'object', properties: { status: { type: 'string' } } } },
      },
    },
    async () => ({ status: 'ok' }),
  )

  const readinessSchema = {
    type: 'object',
    properties: {
      status: { type: 'string' },
      checks: {
        type: 'object',
        additionalProperties: { type: 'object', properties: { ok: { type: 'boolean' }, detail: { type: 'string' } } },
      },
    },
  } as const
  app.get(
    '/readyz',
    {
      config: { auth: 'public' },
      schema: {
        summary: 'Readiness: every listener bound, the audit log writable, the policy source loaded (200 or 503)',
        security: [],
        response: { 200: readinessSchema, 503: readinessSchema },
      },
    },
    async (_req, reply) => {
      const r = deps.readiness?.() ?? null
      if (!r) return { status: 'ready', checks: {} }
      return reply.status(r.ready ? 200 : 503).send({ status: r.ready ? 'ready' : 'not ready', checks: r.checks })
    },
  )

  const metrics = deps.metrics
  if (metrics) {
    app.get(
      '/metrics',
      {
        config: { auth: deps.metricsAuth === 'admin' ? 'admin' : 'public' },
        schema: {
          summary: 'Prometheus metrics (text format 0.0.4); open unless metrics.auth is admin',
          ...(deps.metricsAuth === 'admin' ? {} : { security: [] }),
          response: { 200: { type: 'string' } },
        },
      },
      async (_req, reply) => reply.type(METRICS_CONTENT_TYPE).send(await metrics.text()),
    )
  }

  app.get(
    '/v1/health',
    {
      schema: {
        summary: 'Liveness and the policy version in force',
        security: [],
        response: { 200: { type: 'object', properties: { status: { type: 'string' }, policy_version: { type: 'string' } } } },
      },
    },
    async () => ({ status: 'ok', policy_version: deps.version().policy }),
  )

  app.get(
    '/v1/policy',
    {
      schema: {
        summary: 'The policy bundle deciding now, when it was loaded, and why the last reload failed (if it did)',
        response: {
          200: {
            type: 'object',
            properties: {
              version: { type: 'string' },
              loaded_at: { type: ['string', 'null'] },
              last_error: { type: ['string', 'null'] },
              source: { type: ['string', 'null'] },
            },
            required: ['version', 'loaded_at', 'last_error', 'source'],
          },
        },
      },
    },
    async () => deps.policy(),
  )

  app.get(
    '/v1/policy/files',
    {
      schema: {
        summary: "The policy's files, read-only: a directory's as on disk now (and that content's version), or a bundle's entries",
        response: {
          200: {
            type: 'object',
            properties: {
              source: { type: ['string', 'null'] },
              version: { type: ['string', 'null'] },
              files: {
                type: 'array',
                items: {
                  type: 'object',
                  properties: { path: { type: 'string' }, bytes: { type: 'integer' }, text: { type: ['string', 'null'] } },
                },
              },
            },
          },
          409: errorSchema,
        },
      },
    },
    async (_req, reply) => {
      try {
        return policyFiles(deps.policy().source, defaultPolicyDir)
      } catch (err) {
        return reply.status(409).send({ error: `the policy files cannot be read: ${(err as Error).message}`, code: 'GH_ERR_POLICY' })
      }
    },
  )

  app.get(
    '/v1/connectors',
    {
      schema: {
        summary: 'Connector links attached now: name, principal, address, version, last seen, open streams and sessions',
        response: {
          200: {
            type: 'array',
            items: {
              type: 'object',
              properties: {
                name: { type: 'string' },
                link: { type: 'string' },
                principal: { type: 'string' },
                address: { type: 'string' },
                version: { type: 'string' },
                hostname: { type: 'string' },
                attached_at: { type: 'string' },
                last_seen: { type: 'string' },
                streams: { type: 'integer' },
                sessions: { type: 'integer' },
              },
            },
          },
        },
      },
    },
    async () => deps.connectors?.() ?? [],
  )

  app.post<{ Body: { name: string; ttl?: string } }>(
    '/v1/connectors/join-tokens',
    {
      schema: {
        summary: 'A one-time join token for a configured connector (in this answer only; stored as a hash)',
        body: {
          type: 'object',
          properties: { name: { type: 'string', maxLength: 63 }, ttl: { type: 'string', maxLength: 16 } },
          required: ['name'],
          additionalProperties: false,
        },
        response: {
          200: {
            type: 'object',
            properties: {
              token: { type: 'string' },
              id: { type: 'string' },
              connector: { type: 'string' },
              expires_at: { type: 'string' },
            },
          },
          400: errorSchema,
        },
      },
    },
    async (req, reply) => {
      if (!deps.joinToken) return reply.status(400).send({ error: 'no connector is configured (connectors:)', code: 'GH_ERR_CONFIG' })
      try {
        return await deps.joinToken(req.body.name, req.body.ttl, req.admin?.chain.map((p) => p.id) ?? [])
      } catch (err) {
        return reply.status(400).send({ error: err instanceof Error ? err.message : String(err), code: 'GH_ERR_CONFIG' })
      }
    },
  )

  app.get<{ Querystring: { active?: boolean; limit?: number } }>(
    '/v1/sessions',
    {
      schema: {
        summary: 'Sessions, oldest first, ended ones included unless active=true',
        querystring: {
          type: 'object',
          properties: { active: { type: 'boolean' }, limit: { type: 'integer', minimum: 1 } },
          additionalProperties: false,
        },
        response: { 200: { type: 'object', properties: { sessions: { type: 'array', items: sessionSchema } } } },
      },
    },
    async (req) => {
      const list = deps.store.listSessions({
        activeOnly: req.query.active === true,
        ...(req.query.limit !== undefined ? { limit: req.query.limit } : {}),
      })
      return {
        sessions: list.map((s) => ({
          id: s.id,
          connection: s.connection,
          protocol: s.protocol,
          chain: s.chain,
          client: s.client,
          started_at: s.startedAt,
          ended_at: s.endedAt,
          end_reason: s.endReason,
          // With several workers another one may serve it: the index says whether it ended.
          active: deps.sessions.live.has(s.id) || (deps.sessions.peers !== null && s.endedAt === null),
          worker: s.worker,
        })),
      }
    },
  )

  app.post<{ Params: { id: string }; Body: { reason?: string } | undefined }>(
    '/v1/sessions/:id/kill',
    {
      schema: {
        summary: 'End a live session: the client and the server side are closed',
        params: { type: 'object', properties: { id: { type: 'string', maxLength: 64 } }, required: ['id'] },
        body: { type: ['object', 'null'], properties: { reason: { type: 'string', maxLength: 500 } }, additionalProperties: false },
        response: { 200: { type: 'object', properties: { killed: { type: 'string' } } }, 404: errorSchema },
      },
    },
    async (req, reply) => {
      const reason = req.body?.reason ?? 'terminated by an administrator'
      if (!(await deps.sessions.killAnywhere(req.params.id, reason))) {
        return reply.status(404).send({ error: `no live session ${req.params.id}`, code: 'GH_ERR_NOT_FOUND' })
      }
      deps.audit.appendDeferred({
        type: 'session.end',
        session: req.params.id,
        chain: req.admin?.chain.map((p) => p.id) ?? [],
        connection: null,
        action: 'kill',
        reason,
      })
      return { killed: req.params.id }
    },
  )

  app.post<{ Body: { subject: string; groups?: string[]; scope?: string[]; ttl?: string } }>(
    '/v1/tokens',
    {
      schema: {
        summary: 'Issue a token for a principal',
        body: {
          type: 'object',
          properties: {
            subject: { type: 'string', maxLength: 140 },
            groups: { type: 'array', items: { type: 'string', maxLength: 64 }, maxItems: 32 },
            scope: { type: 'array', items: { type: 'string', maxLength: 128 }, maxItems: 32 },
            ttl: { type: 'string', maxLength: 16 },
          },
          required: ['subject'],
          additionalProperties: false,
        },
        response: {
          200: { type: 'object', properties: { token: { type: 'string' }, id: { type: 'string' }, expires_at: { type: 'string' } } },
          400: errorSchema,
        },
      },
    },
    async (req, reply) => {
      const b = req.body
      const bad = validateSubject(b.subject) ?? (b.groups ?? []).map(validateGroup).find((x) => x !== null) ?? null
      if (bad) return reply.status(400).send({ error: bad, code: 'GH_ERR_REQUEST' })
      const ttl = b.ttl === undefined ? deps.defaultTtlSeconds : parseDuration(b.ttl)
      if (ttl === null || ttl <= 0)
        return reply.status(400).send({ error: 'ttl must be a duration like 15m or 1h', code: 'GH_ERR_REQUEST' })
      if (ttl > deps.maxTtlSeconds) {
        return reply
          .status(400)
          .send({ error: `ttl exceeds the maximum of ${deps.maxTtlSeconds}s (tokens.max_ttl)`, code: 'GH_ERR_REQUEST' })
      }
      const t = await deps.issuer.issue({ subject: b.subject, groups: b.groups ?? [], scope: b.scope ?? [], ttlSeconds: ttl })
      await deps.audit.append({
        type: 'token.issued',
        session: null,
        chain: req.admin?.chain.map((p) => p.id) ?? [],
        connection: null,
        token: {
          id: t.id,
          subject: b.subject,
          groups: b.groups ?? [],
          scope: b.scope ?? [],
          expires_at: new Date(t.expiresAt * 1000).toISOString(),
        },
      })
      return { token: t.token, id: t.id, expires_at: new Date(t.expiresAt * 1000).toISOString() }
    },
  )

  app.post<{ Params: { id: string }; Body: { reason?: string } | undefined }>(
    '/v1/tokens/:id/revoke',
    {
      schema: {
        summary:
          'Revoke a token (its jti) or a service-account key (its id): it and every token delegated from it are refused, and their live sessions end at once',
        // Delegated token ids grow 9 characters a hop (tokens.ts), up to the hard depth limit of 16.
        params: { type: 'object', properties: { id: { type: 'string', maxLength: 200 } }, required: ['id'] },
        body: { type: ['object', 'null'], properties: { reason: { type: 'string', maxLength: 500 } }, additionalProperties: false },
        response: {
          200: { type: 'object', properties: { revoked: { type: 'string' }, sessions_ended: { type: 'integer' } } },
          404: errorSchema,
        },
      },
    },
    async (req, reply) => {
      // A typo must not look like a revocation: the id has to name something this gateway issued.
      if (!deps.store.isKnownCredential(req.params.id)) {
        return reply.status(404).send({
          error: `no token or service-account key with id ${JSON.stringify(req.params.id)} was issued by this gateway`,
          code: 'GH_ERR_NOT_FOUND',
        })
      }
      deps.store.revoke(req.params.id, req.body?.reason ?? null)
      await deps.audit.append({
        type: 'token.revoked',
        session: null,
        chain: req.admin?.chain.map((p) => p.id) ?? [],
        connection: null,
        token: { id: req.params.id },
        reason: req.body?.reason ?? null,
      })
      // Sessions carry every ancestor's id (Identity.tokenIds), so this reaches every descendant too.
      const n = await deps.sessions.killByTokenEverywhere(
        req.params.id,
        'the token of this session, or one it was delegated from, was revoked',
      )
      return { revoked: req.params.id, sessions_ended: n }
    },
  )

  const rotateAdmin = deps.rotateAdmin
  if (rotateAdmin) {
    app.post(
      '/v1/admin/rotate',
      {
        schema: {
          summary: 'Replace the admin token (kept in <data_dir>/admin.token) and revoke the previous one',
          response: { 200: { type: 'object', properties: { id: { type: 'string' }, revoked: { type: ['string', 'null'] } } } },
        },
      },
      async (req) => rotateAdmin(req.admin?.chain.map((p) => p.id) ?? []),
    )
  }

  if (deps.identity) await app.register(identityRoutes(deps.identity))
  // Public keys registered to principals (engine/public-keys.ts).
  await app.register(publicKeyRoutes({ store: deps.store, sessions: deps.sessions, audit: deps.audit, maxTtlSeconds: deps.maxTtlSeconds }))
  if (deps.approvals) await app.register(approvalRoutes(deps.approvals, identify))
  if (web) await app.register(web.routes())
  for (const m of deps.mounts ?? []) mountPluginRoute(app, m, deps.log)
  // Audit search, verify, export, sinks and session recordings (engine/audit/api.ts).
  await app.register(auditRoutes, {
    audit: deps.audit,
    services: deps.auditServices ?? null,
    recordingsDir: recordingsDir(join(deps.audit.dir, '..')),
  })

  return app
}

/**
 * A plugin's handler at `path` and under it (ProxyContext.mountHttp). The raw request and response
 * are handed over (fastify has parsed a JSON body and capped it at bodyLimit); the route is public
 * because the plugin authenticates its own callers (an MCP client is not an admin).
 */
function mountPluginRoute(app: FastifyInstance, m: HttpMount, log: Logger): void {
  for (const url of [m.path, `${m.path}/*`]) {
    app.route({
      method: ['GET', 'POST', 'DELETE', 'OPTIONS'],
      url,
      config: { auth: 'public' },
      schema: { hide: true },
      handler: (req, reply) => {
        reply.hijack()
        Promise.resolve()
          .then(() => m.handler(req.raw, reply.raw, req.body))
          .catch((err: unknown) => {
            log.error({ err, path: m.path }, 'plugin http handler failed')
            if (!reply.raw.headersSent) reply.raw.writeHead(500, { 'content-type': 'application/json' })
            reply.raw.end(JSON.stringify({ error: 'internal error' }))
          })
      },
    })
  }
}
