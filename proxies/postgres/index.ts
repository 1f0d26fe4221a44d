// The built-in PostgreSQL proxy plugin. It implements exactly the ProxyPlugin interface a third
// party would: a listener, the wire protocol (connection.ts), and the narrow context's openSession,
// decide and audit. See README.md in this folder for what it accepts and refuses.

import { createServer, type Server } from 'node:net'
import { GatehouseError } from '../../engine/errors.js'
import type { Address, ProxyContext, ProxyHandle, ProxyPlugin } from '../types.js'
import { createSqlAnalyzer } from '../../engine/sql/index.js'
import { loadMaskingKey } from '../../engine/masking/keys.js'
import { DETECTOR_NAMES } from '../../engine/masking/detectors.js'
import { CatalogCache } from './catalog.js'
import { type PgShared, PgConnection } from './connection.js'
import { UPSTREAM_AUTH_MODES } from './upstream.js'

const TLS_MODES = ['disable', 'require', 'verify-full']
const KNOWN_KEYS = ['database', 'user', 'password', 'tls', 'ca', 'auth', 'detectors']

export const postgresPlugin: ProxyPlugin = {
  name: 'postgres',
  secretKeys: ['password'],
  actions: ['sql.session', 'sql.read', 'sql.write', 'sql.ddl', 'sql.admin', 'sql.other'],

  validateConnection(settings) {
    const problems: string[] = []
    for (const k of Object.keys(settings)) {
      if (!KNOWN_KEYS.includes(k)) problems.push(`${k}: unknown key for a postgres connection (allowed: ${KNOWN_KEYS.join(', ')})`)
    }
    for (const k of ['database', 'user']) {
      const v = settings[k]
      if (v !== undefined && (typeof v !== 'string' || v === '')) problems.push(`${k}: must be a non-empty string`)
    }
    const tls = settings.tls ?? 'disable'
    if (typeof tls !== 'string' || !TLS_MODES.includes(tls)) {
      problems.push(`tls: must be one of ${TLS_MODES.join(', ')} (got ${JSON.stringify(tls)})`)
    }
    if (tls === 'verify-full' && typeof settings.ca !== 'string') problems.push('ca: verify-full needs ca: the path of the CA certificate')
    if (settings.ca !== undefined && typeof settings.ca !== 'string') problems.push('ca: must be a file path')
    const auth = settings.auth
    if (auth !== undefined && (typeof auth !== 'string' || !(UPSTREAM_AUTH_MODES as readonly string[]).includes(auth))) {
      problems.push(`auth: the weakest password exchange to accept, one of ${UPSTREAM_AUTH_MODES.join(', ')} (got ${JSON.stringify(auth)})`)
    }
    // Value detectors for this connection: a list replaces masking.yaml's `detectors` (empty: none).
    const det = settings.detectors
    if (det !== undefined) {
      if (!Array.isArray(det)) problems.push('detectors: must be a list of detector names')
      else
        for (const d of det as unknown[])
          if (typeof d !== 'string' || !DETECTOR_NAMES.includes(d)) {
            problems.push(`detectors: unknown detector ${JSON.stringify(d)} (known: ${DETECTOR_NAMES.join(', ')})`)
          }
    }
    return problems
  },

  async start(ctx: ProxyContext): Promise<ProxyHandle> {
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
