// Bench-only: the same gateway with decisions off, to price them. It starts Gatehouse in this
// process from a config file, then replaces SQL classification with a constant "a SELECT" and the
// policy engine's decide() with a constant allow — everything else (framing, audit before
// forwarding, result tracking) runs as in `gatehouse serve`. Never part of the product: nothing
// in the CLI, the config or the environment can switch decisions off.
//
//   node dist/bench/gateway-nodecide.js CONFIG.yaml

import { loadConfigFile } from '../engine/config/config.js'
import { Gateway } from '../cli/gateway/gateway.js'
import { createLogger } from '../engine/server/log.js'
import { type Analysis, otherFacts, SqlAnalyzer } from '../proxies/postgres/sql/index.js'
import type { Decision } from '../engine/types.js'
import { postgresPlugin } from '../proxies/postgres/index.js'
import { sshPlugin } from '../proxies/ssh/index.js'

const ALLOW: Decision = { effect: 'allow', rules: [], mask: [], policy: 'bench:decisions-off' }

// Every text is one plain SELECT: the facts of an unclassified statement, made a harmless read.
SqlAnalyzer.prototype.analyze = (sql: string): Analysis => ({
  error: null,
  statements: [{ ...otherFacts(sql, ''), kind: 'select', action: 'sql.read', note: null, literalSensitive: false }],
})

const file = process.argv[2]
if (!file) throw new Error('usage: gateway-nodecide.js CONFIG.yaml')
const gw = await Gateway.start(loadConfigFile(file), [postgresPlugin, sshPlugin], createLogger('warn'))
;(gw.engine as unknown as { decide: () => Promise<Decision> }).decide = () => Promise.resolve(ALLOW)
;(gw.engine as unknown as { decideNow: () => Decision }).decideNow = () => ALLOW
const stop = (): void => {
  gw.stop('benchmark over').then(
    () => process.exit(0),
    () => process.exit(1),
  )
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
