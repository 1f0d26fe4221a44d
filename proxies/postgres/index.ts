// The built-in PostgreSQL proxy plugin. It implements exactly the ProxyPlugin interface a third
// party would: a listener, the wire protocol (connection.ts), and the narrow context's openSession,
// decide and audit. See README.md in this folder for what it accepts and refuses.

import { createServer, type Server } from 'node:net'
import { z } from 'zod'
import { type Address, type PluginContext, PLUGIN_CONTRACT, type ProxyHandle, type ProxyPlugin } from '../types.js'
import { createSqlAnalyzer } from './sql/index.js'
import { DETECTOR_NAMES, GatehouseError, loadMaskingKey } from '../kit/index.js'
import { CatalogCache } from './catalog.js'
import { type PgShared, PgConnection } from './connection.js'
import { UPSTREAM_AUTH_MODES } from './upstream.js'

const TLS_MODES = ['disable', 'require', 'verify-full'] as const
const KNOWN_KEYS = ['database', 'user', 'password', 'tls', 'ca', 'auth', 'detectors']

/** The keys of a `protocol: postgres` connection, in the configuration's schema. */
export const postgresConnectionSchema = z
  .strictObject(
    {
      database: z.string({ error: 'must be a non-empty string' }).min(1, { error: 'must be a non-empty string' }).optional(),
      user: z.string({ error: 'must be a non-empty string' }).min(1, { error: 'must be a non-empty string' }).optional(),
      // A secret reference (env:NAME or file:PATH; connector:env:NAME through a connector that holds
      // it): the gateway checks it for every plugin's secretKeys.
      password: z.string({ error: 'must be a secret reference (env:NAME or file:PATH), never the secret itself' }).optional(),
      tls: z.enum(TLS_MODES, { error: (iss) => `must be one of ${TLS_MODES.join(', ')} (got ${JSON.stringify(iss.input)})` }).optional(),
      ca: z.string({ error: 'must be a file path' }).optional(),
      auth: z
        .enum(UPSTREAM_AUTH_MODES, {
          error: (iss) =>
            `the weakest password exchange to accept, one of ${UPSTREAM_AUTH_MODES.join(', ')} (got ${JSON.stringify(iss.input)})`,
        })
        .optional(),
      // Value detectors for this connection: a list replaces masking.yaml's `detectors` (empty: none).
      detectors: z
        .array(
          z.string().refine((d) => DETECTOR_NAMES.includes(d), {
            error: (iss) => `unknown detector ${JSON.stringify(iss.input)} (known: ${DETECTOR_NAMES.join(', ')})`,
          }),
          { error: 'must be a list of detector names' },
        )
        .optional(),
    },
    {
      error: (iss) =>
        iss.code === 'unrecognized_keys' ? `unknown key for a postgres connection (allowed: ${KNOWN_KEYS.join(', ')})` : undefined,
    },
  )
  .superRefine((c, ctx) => {
    if (c.tls === 'verify-full' && c.ca === undefined) {
      ctx.addIssue({ code: 'custom', path: ['ca'], message: 'verify-full needs ca: the path of the CA certificate' })
    }
  })

export const postgresPlugin: ProxyPlugin<Record<string, unknown>, 'fastPath'> = {
  name: 'postgres',
  contract: PLUGIN_CONTRACT,
  capabilities: ['fastPath'],
  secretKeys: ['password'],
  // Through a connector, the password may stay with it: SCRAM and md5 are answered by its proofs.
  provableSecretKeys: ['password'],
  actions: ['sql.session', 'sql.read', 'sql.write', 'sql.ddl', 'sql.admin', 'sql.other'],

  connectionSchema: postgresConnectionSchema,

  async start(ctx: PluginContext<'fastPath'>): Promise<ProxyHandle> {
    const shared: PgShared = {
      ctx,
      cancelKeys: new Map(),
      connections: new Set(),
      analyzer: await createSqlAnalyzer(),
      catalogs: new CatalogCache(),
      // The keyed-hash key of the `hash` strategy: stable across restarts, never leaves the data dir.
      maskKey: loadMaskingKey(ctx.stateDir),
    }
    const listen = ctx.listen
    if (!listen) return { address: null, stop: async () => undefined }
    const server: Server = createServer({ noDelay: true }, (socket) => {
      new PgConnection(socket, shared)
    })
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(
          new GatehouseError('GH_ERR_CONFIG', `listen.postgres ${listen.host}:${listen.port}: cannot listen (${err.code ?? err.message})`, {
            cause: err,
          }),
        ),
      )
      server.listen(listen.port, listen.host, () => resolve())
    })
    const a = server.address()
    const address: Address = a && typeof a === 'object' ? { host: a.address, port: a.port } : listen
    return {
      address,
      async stop(reason: string): Promise<void> {
        server.close()
        shared.catalogs.close()
        for (const c of [...shared.connections]) c.fatal('57P01', `terminating connection: ${reason}`)
        await new Promise<void>((r) => setTimeout(r, 50))
      },
    }
  },
}

export default postgresPlugin
