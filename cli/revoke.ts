// Revoking a token or a service-account key by id, for `token revoke` and `service-account key
// revoke`: through the running server's API (so live sessions end at once), or straight into the
// data directory, with its audit record, when no server runs.

import { openLocalAuditLog } from '../engine/audit.js'
import type { Config } from '../engine/config.js'
import { Store } from '../engine/store.js'
import { ApiClient } from './client.js'

/** Returns the line to print. */
export async function revokeById(config: Config, id: string, reason: string | undefined): Promise<string> {
  const api = ApiClient.forServer(config)
  if (api) {
    const r = await api.call<{ sessions_ended: number }>('POST', `/v1/tokens/${encodeURIComponent(id)}/revoke`, reason ? { reason } : {})
    return `revoked ${id} (${r.sessions_ended} live session(s) ended)`
  }
  const store = new Store(config.dataDir)
  store.revoke(id, reason ?? null)
  store.close()
  const audit = await openLocalAuditLog(config)
  await audit.append({
    type: 'token.revoked',
    session: null,
    chain: ['local:cli'],
    connection: null,
    token: { id },
    reason: reason ?? null,
  })
  audit.close()
  return `revoked ${id}`
}
