// Revoking a token or a service-account key by id, for `token revoke` and `service-account key
// revoke`: through the running server's API (so live sessions end at once), or straight into the
// data directory, with its audit record, when no server runs. An id this gateway never issued is
// an error, never a silent "revoked".

import { openLocalAuditLog } from '../engine/audit/writer.js'
import type { Config } from '../engine/config/config.js'
import { Store } from '../engine/store.js'
import { ApiClient } from './client.js'
import { FailedError } from './exit.js'

/** An id this gateway never issued (the CLI exits 1). */
export class UnknownCredentialError extends FailedError {}

export interface RevokeResult {
  readonly revoked: string
  /** Live sessions ended; null when no server ran (none could be live). */
  readonly sessions_ended: number | null
}

export async function revokeById(config: Config, id: string, reason: string | undefined): Promise<RevokeResult> {
  const api = ApiClient.forServer(config)
  if (api) {
    const r = await api.call<{ sessions_ended: number }>('POST', `/v1/tokens/${encodeURIComponent(id)}/revoke`, reason ? { reason } : {})
    return { revoked: id, sessions_ended: r.sessions_ended }
  }
  const store = new Store(config.dataDir)
  try {
    if (!store.isKnownCredential(id)) {
      throw new UnknownCredentialError(`no token or service-account key with id ${JSON.stringify(id)} was issued by this gateway`)
    }
    store.revoke(id, reason ?? null)
  } finally {
    store.close()
  }
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
  return { revoked: id, sessions_ended: null }
}

/** The line `token revoke` prints. */
export function revokedLine(r: RevokeResult): string {
  return r.sessions_ended === null ? `revoked ${r.revoked}` : `revoked ${r.revoked} (${r.sessions_ended} live session(s) ended)`
}
