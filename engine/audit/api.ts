// The audit routes of the admin API (a fastify plugin registered by api.ts, behind its admin-token
// hook): search, verify, the public key, a JSON Lines export that can follow the log, the sinks'
// state, and session recordings.

import { readFile } from 'node:fs/promises'
import { Readable } from 'node:stream'
import type { FastifyInstance, FastifyReply } from 'fastify'
import type { AuditLog } from './writer.js'
import { findRecording, recordingMismatches, timelineFromAudit, timelineFromRecording } from './recording.js'
import { publicKeyPem } from './keys.js'
import { type AuditQuery, parseTimeArg, readAuditEvents } from './query.js'
import type { AuditServices } from './service.js'
import { auditRootOf, exportAllSeries, rejectedInAll, verifyAllSeries } from './series.js'
import { describeRejected } from './trusted.js'

export interface AuditApiOptions {
  readonly audit: AuditLog
  readonly services: AuditServices | null
  readonly recordingsDir: string
}

const errorSchema = {
  type: 'object',
  properties: { error: { type: 'string' }, code: { type: 'string' } },
  required: ['error'],
} as const

const eventSchema = { type: 'object', additionalProperties: true } as const
const jsonLines = { description: 'JSON Lines: one audit event per line, verbatim as in the log', type: 'string' } as const

const str64 = { type: 'string', maxLength: 64 } as const
const str200 = { type: 'string', maxLength: 200 } as const

interface ListQuery {
  session?: string
  type?: string
  limit?: number
  since?: string
  until?: string
  principal?: string
  token?: string
  connection?: string
  decision?: string
  policy_version?: string
  text?: string
  internal?: boolean
}

function badRequest(reply: FastifyReply, error: string): FastifyReply {
  return reply.status(400).send({ error, code: 'GH_ERR_REQUEST' })
}

export async function auditRoutes(app: FastifyInstance, opts: AuditApiOptions): Promise<void> {
  const { audit } = opts
  // A worker of `serve --workers N` writes audit/w<N>/; its API reads every worker's series.
  const root = auditRootOf(audit.dir)
  // Following exports never end by themselves: end them when the API closes, or close would wait.
  const following = new Set<AbortController>()
  app.addHook('preClose', async () => {
    for (const ac of following) ac.abort()
  })

  app.get<{ Querystring: ListQuery }>(
    '/v1/audit',
    {
      schema: {
        summary: 'Audit events, oldest first, filtered',
        querystring: {
          type: 'object',
          properties: {
            session: str64,
            type: str64,
            limit: { type: 'integer', minimum: 1 },
            since: { ...str64, description: 'RFC 3339 time, or a duration ago such as 15m or 7d' },
            until: { ...str64, description: 'RFC 3339 time, or a duration ago' },
            principal: { ...str200, description: 'a principal anywhere in the chain' },
            token: { ...str200, description: 'a token id: what it and every token delegated from it did' },
            connection: str64,
            decision: { type: 'string', enum: ['allow', 'deny', 'hold'] },
            policy_version: { ...str200, description: 'a policy version or a prefix of one' },
            text: { ...str200, description: 'case-insensitive text in the statement' },
            internal: { type: 'boolean', description: "include the log's own records (headers, checkpoints)" },
          },
          additionalProperties: false,
        },
        response: {
          200: {
            type: 'object',
            properties: {
              events: { type: 'array', items: eventSchema },
              skipped: {
                type: 'array',
                description: 'files in the audit directory that are not segments of the log: never read (audit verify fails on them)',
                items: { type: 'object', properties: { name: { type: 'string' }, why: { type: 'string' } } },
              },
            },
          },
          400: errorSchema,
        },
      },
    },
    async (req, reply) => {
      const q = req.query
      const since = q.since === undefined ? undefined : parseTimeArg(q.since)
      const until = q.until === undefined ? undefined : parseTimeArg(q.until)
      if (since === null) return badRequest(reply, 'since must be an RFC 3339 time or a duration like 15m')
      if (until === null) return badRequest(reply, 'until must be an RFC 3339 time or a duration like 15m')
      const query: AuditQuery = { ...q, ...(since ? { since } : {}), ...(until ? { until } : {}) }
      audit.flush()
      return { events: readAuditEvents(root, query, audit.trust), skipped: rejectedInAll(root, audit.trust) }
    },
  )

  app.get(
    '/v1/audit/verify',
    {
      schema: {
        summary: "Verify the whole audit log from its files against the gateway's audit key",
        response: {
          200: {
            type: 'object',
            additionalProperties: true,
            properties: {
              ok: { type: 'boolean' },
              events: { type: 'integer' },
              problem: { type: ['object', 'null'], additionalProperties: true },
            },
          },
        },
      },
    },
    async () => {
      audit.flush()
      const all = verifyAllSeries(root, { publicKeys: [audit.identity.publicKey] })
      const only = all.series.length === 1 ? all.series[0] : undefined
      if (only) return only
      return { ok: all.ok, events: all.events, problem: all.series.find((x) => x.problem !== null)?.problem ?? null, series: all.series }
    },
  )

  app.get(
    '/v1/audit/pubkey',
    {
      schema: {
        summary: "The audit key's public half (Ed25519, SPKI PEM), its id and the log's id",
        response: {
          200: { type: 'object', properties: { pem: { type: 'string' }, kid: { type: 'string' }, log: { type: 'string' } } },
        },
      },
    },
    async () => {
      const id = audit.identity
      return { pem: publicKeyPem(id.publicKey), kid: id.kid, log: id.log }
    },
  )

  app.get<{ Querystring: { since?: string; follow?: boolean; format?: 'jsonl' } }>(
    '/v1/audit/export',
    {
      schema: {
        summary: 'Export the log as JSON Lines from a time (or the start), optionally following it',
        querystring: {
          type: 'object',
          properties: { since: str64, follow: { type: 'boolean' }, format: { type: 'string', enum: ['jsonl'] } },
          additionalProperties: false,
        },
        response: { 200: jsonLines, 400: errorSchema, 409: errorSchema },
      },
    },
    async (req, reply) => {
      const since = req.query.since === undefined ? undefined : parseTimeArg(req.query.since)
      if (since === null) return badRequest(reply, 'since must be an RFC 3339 time or a duration like 15m')
      audit.flush()
      // Refused before the stream starts: once it has, an error could only cut it short.
      const refused = describeRejected(rejectedInAll(root, audit.trust))
      if (refused !== null) return reply.status(409).send({ error: refused, code: 'GH_ERR_AUDIT' })
      const ac = new AbortController()
      following.add(ac)
      ac.signal.addEventListener('abort', () => following.delete(ac), { once: true })
      req.raw.on('close', () => ac.abort())
      let unsubscribe = (): void => undefined
      const batches = exportAllSeries(
        root,
        { ...(since ? { since } : {}), follow: req.query.follow === true, signal: ac.signal, trust: audit.trust },
        (wake) => {
          unsubscribe = audit.onWrite(wake)
        },
      )
      async function* lines(): AsyncGenerator<Buffer> {
        try {
          for await (const b of batches) yield Buffer.concat(b.flatMap((l) => [l, NL]))
        } finally {
          unsubscribe()
          following.delete(ac)
        }
      }
      return reply.type('application/x-ndjson').send(Readable.from(lines()))
    },
  )

  app.get(
    '/v1/audit/sinks',
    {
      schema: {
        summary: 'Each sink: its position in the log, what it sent, how far behind it is, its last error',
        response: {
          200: { type: 'object', properties: { sinks: { type: 'array', items: { type: 'object', additionalProperties: true } } } },
        },
      },
    },
    async () => ({ sinks: opts.services ? await opts.services.sinkStatus() : [] }),
  )

  app.get<{ Params: { id: string } }>(
    '/v1/sessions/:id/recording',
    {
      schema: {
        summary: "A session's recording: JSON Lines timeline (SQL) or asciicast v2 (terminal)",
        params: { type: 'object', properties: { id: str64 }, required: ['id'] },
        response: { 200: { description: 'the recording', type: 'string' }, 404: errorSchema, 409: errorSchema },
      },
    },
    async (req, reply) => {
      audit.flush()
      const found = findRecording(opts.recordingsDir, req.params.id)
      if (found) {
        const data = await readFile(found.path)
        if (found.kind === 'timeline') {
          const problems = recordingMismatches(data.toString('utf8'), root, req.params.id, audit.trust)
          if (problems.length > 0) {
            return reply.status(409).send({
              error: `the recording of session ${req.params.id} does not match the audit log: ${problems.join('; ')}`,
              code: 'GH_ERR_AUDIT',
            })
          }
        }
        return reply
          .type(found.kind === 'terminal' ? 'application/x-asciicast' : 'application/x-ndjson')
          .header('x-gatehouse-recording', found.kind)
          .send(found.kind === 'terminal' ? data : `${timelineFromRecording(data.toString('utf8')).join('\n')}\n`)
      }
      const lines = timelineFromAudit(root, req.params.id, audit.trust)
      if (lines.length === 0) return reply.status(404).send({ error: `no recording of session ${req.params.id}`, code: 'GH_ERR_NOT_FOUND' })
      return reply
        .type('application/x-ndjson')
        .header('x-gatehouse-recording', 'timeline')
        .send(`${lines.join('\n')}\n`)
    },
  )
}

const NL = Buffer.from('\n')
