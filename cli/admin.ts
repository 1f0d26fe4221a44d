// `gatehouse admin rotate`: replaces the one admin credential (<data_dir>/admin.token) and revokes
// the previous one. Through the running server when one runs (its sessions opened with the old
// token end at once), else straight in the data directory.

import type { Command, Option } from 'commander'
import { rotateAdminToken } from '../engine/server/admin-token.js'
import { openLocalAuditLog } from '../engine/audit/writer.js'
import { issuerFor } from './gateway/gateway.js'
import { Store } from '../engine/store.js'
import { loadOrCreateSigningKey, TokenIssuer } from '../engine/identity/tokens.js'
import { ApiClient, resolveConfig } from './client.js'
import { adminTokenPath } from '../engine/server/admin-token.js'

export function registerAdminCommands(program: Command, configOpt: () => Option): void {
  const admin = program.command('admin').description('the admin credential the CLI uses (<data_dir>/admin.token)')
  admin
    .command('rotate')
    .description('replace the admin token and revoke the previous one (the only way it changes)')
    .addOption(configOpt())
    .option('--json', 'print {id, revoked, file}')
    .action(async (o: { config?: string; json?: boolean }) => {
      const config = resolveConfig(o.config)
      const file = adminTokenPath(config.dataDir)
      const api = ApiClient.forServer(config)
      let r: { id: string; revoked: string | null }
      if (api) r = await api.call<{ id: string; revoked: string | null }>('POST', '/v1/admin/rotate', {})
      else {
        const store = new Store(config.dataDir)
        const audit = await openLocalAuditLog(config)
        try {
          const issuer = new TokenIssuer(await loadOrCreateSigningKey(config.dataDir), issuerFor(config), {
            onIssued: (t) => store.recordIssued(t.id, t.subject, t.expiresAt),
          })
          const x = await rotateAdminToken(config.dataDir, issuer, store, audit, ['local:cli'])
          r = { id: x.id, revoked: x.replaced }
        } finally {
          audit.close()
          store.close()
        }
      }
      const line = { id: r.id, revoked: r.revoked, file }
      process.stdout.write(
        o.json ? `${JSON.stringify(line)}\n` : `new admin token ${r.id} in ${file}${r.revoked ? `; ${r.revoked} revoked` : ''}\n`,
      )
    })
}
