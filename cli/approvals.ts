// The approvals commands of `gatehouse`, acting as the identity of --token, GATEHOUSE_TOKEN or the
// stored login (never the admin credential: an approval is a person's decision):
//
//   approvals list [--status S] [--json]      requests you may read, oldest first (JSON Lines with --json)
//   approvals show ID [--json]                who asks, the chain, the statement, the connection, the rule, the reason
//   approvals approve ID [--comment C] [--json]
//   approvals deny ID [--comment C] [--json]
//   request --connection C --action A --for 30m [--reason R] [--json]
//                                             ask ahead of time for a window grant for your chain
//
// The server is --server, GATEHOUSE_SERVER, the server running for --config, or tokens.issuer.

import { type Command, Option } from 'commander'
import type { ApprovalView } from '../engine/approvals/service.js'
import { ApiClient, ApiError, resolveConfig } from './client.js'
import { actingToken, serverUrl } from './identity.js'

function out(line: string): void {
  process.stdout.write(`${line}\n`)
}

const configOpt = (): Option => new Option('-c, --config <file>', 'configuration file (default ./gatehouse.yaml or $GATEHOUSE_CONFIG)')
const serverOpt = (): Option =>
  new Option('--server <url>', 'the Gatehouse API (default $GATEHOUSE_SERVER, the server running for --config, or tokens.issuer)')
const tokenOpt = (): Option => new Option('--token <token>', 'act with this token (default $GATEHOUSE_TOKEN, then the stored login)')

interface Common {
  config?: string
  server?: string
  token?: string
  json?: boolean
}

function target(o: Common): { server: string; token: string } {
  const server = serverUrl(resolveConfig(o.config), o.server)
  return { server, token: actingToken(server, o.token) }
}

async function call<T>(o: Common, method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
  const { server, token } = target(o)
  return new ApiClient(server, token).call<T>(method, path, body)
}

function checkId(id: string): string {
  if (!/^R-[0-9a-f]{6}$/.test(id)) throw new ApiError(0, `${JSON.stringify(id)} is not a request id (like R-7f3a9c)`)
  return id
}

function printRequest(r: ApprovalView): void {
  out(`request:     ${r.id} (${r.status})`)
  out(`asked by:    ${r.requester}`)
  out(`chain:       ${r.chain.join(' → ')}`)
  out(`connection:  ${r.connection}${r.session ? ` (session ${r.session})` : ''}`)
  out(`action:      ${r.action}`)
  out(`statement:   ${r.statement.replaceAll('\n', '\n             ')}`)
  out(`rules:       ${r.requirements.map((q) => `${q.rule} (${q.count} of ${q.group}${q.reason ? `: ${q.reason}` : ''})`).join('; ')}`)
  out(`reason:      ${r.reason ?? '-'}`)
  out(`grant:       ${r.grant === 'window' ? `window of ${r.window_seconds}s` : 'once'}`)
  out(`created:     ${r.created_at}   expires: ${r.expires_at}`)
  if (r.grant_expires_at) out(`usable until: ${r.grant_expires_at}`)
  for (const v of r.votes) out(`vote:        ${v.verdict} by ${v.reviewer} at ${v.at}${v.comment ? `: ${v.comment}` : ''}`)
}

export function registerApprovalCommands(program: Command): void {
  const approvals = program.command('approvals').description('list, show, approve and deny approval requests (acting as your token)')
  approvals
    .command('list')
    .description('approval requests you may read (as reviewer, requester or admin), oldest first')
    .addOption(configOpt())
    .addOption(serverOpt())
    .addOption(tokenOpt())
    .addOption(
      new Option('--status <status>', 'only requests with this status').choices(['pending', 'approved', 'denied', 'expired', 'used']),
    )
    .option('--json', 'JSON Lines, one request per line')
    .action(async (o: Common & { status?: string }) => {
      const r = await call<{ approvals: ApprovalView[] }>(o, 'GET', '/v1/approvals')
      const list = o.status ? r.approvals.filter((a) => a.status === o.status) : r.approvals
      for (const a of list) {
        if (o.json) out(JSON.stringify(a))
        else
          out(
            `${a.id}  ${a.status.padEnd(8)} ${a.requester}  ${a.connection}  ${a.action}  ${a.statement.replace(/\s+/g, ' ').slice(0, 60)}`,
          )
      }
    })
  approvals
    .command('show <id>')
    .description('one request: who asks, the chain, the statement, the connection, the rule, the reason, the votes')
    .addOption(configOpt())
    .addOption(serverOpt())
    .addOption(tokenOpt())
    .option('--json', 'print JSON')
    .action(async (id: string, o: Common) => {
      const r = await call<ApprovalView>(o, 'GET', `/v1/approvals/${checkId(id)}`)
      if (o.json) out(JSON.stringify(r))
      else printRequest(r)
    })
  for (const verdict of ['approve', 'deny'] as const) {
    approvals
      .command(`${verdict} <id>`)
      .description(verdict === 'approve' ? 'approve a request' : 'deny a request; the waiting client reads your comment')
      .addOption(configOpt())
      .addOption(serverOpt())
      .addOption(tokenOpt())
      .option('--comment <text>', 'a comment the requester reads')
      .option('--json', 'print the request as JSON')
      .action(async (id: string, o: Common & { comment?: string }) => {
        const r = await call<ApprovalView>(o, 'POST', `/v1/approvals/${checkId(id)}/${verdict}`, o.comment ? { comment: o.comment } : {})
        if (o.json) out(JSON.stringify(r))
        else out(`${r.id} ${r.status}${r.status === 'pending' ? ' (more approvals needed)' : ''}`)
      })
  }
  program
    .command('request')
    .description('ask ahead of time for a window grant: an action on a connection for your chain, for a duration')
    .addOption(configOpt())
    .addOption(serverOpt())
    .addOption(tokenOpt())
    .requiredOption('--connection <name>', 'the connection')
    .requiredOption('--action <action>', 'the action, e.g. sql.write')
    .requiredOption('--for <duration>', 'how long the grant lasts once approved, e.g. 30m')
    .option('--reason <text>', 'a justification reviewers read')
    .option('--json', 'print the request as JSON')
    .action(async (o: Common & { connection: string; action: string; for: string; reason?: string }) => {
      const body = { connection: o.connection, action: o.action, for: o.for, ...(o.reason ? { reason: o.reason } : {}) }
      const r = await call<ApprovalView>(o, 'POST', '/v1/approvals/requests', body)
      if (o.json) out(JSON.stringify(r))
      else
        out(
          `${r.id} pending: waiting for ${[...new Set(r.requirements.map((q) => q.group))].join(', ')}; approve with: gatehouse approvals approve ${r.id}`,
        )
    })
}
