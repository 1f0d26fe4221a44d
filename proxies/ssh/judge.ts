// The per-command decision: every exec, shell, SFTP operation and forward is decided and its
// decision recorded durably before anything reaches the target; a held one waits for approval
// (proxies/approval.ts). Also how a refusal reaches the caller on a channel.

import type { ServerChannel } from 'ssh2'
import { awaitApproval } from '../kit/index.js'
import type { Decision, GatewayStatus, ProxyContext, ProxySession } from '../types.js'
import { auditEnv } from './env.js'
import { deniedStatus, heldStatus } from './status.js'

export type Verdict = { ok: true } | { ok: false; message: string; status: GatewayStatus }

/**
 * Decides one command and records the decision durably before anything is forwarded. Not
 * allowed (denied, held, no decision, audit unavailable) comes back with the message to show.
 */
export async function judge(
  session: ProxySession,
  log: ProxyContext['log'],
  action: string,
  command: Record<string, unknown>,
  text: string,
  /** Where the caller can be told at once that the command waits for an approval (exec, shell). */
  tell?: (line: string) => void,
  /** false: a held command is filed and refused at once (the caller polls for the approval). */
  wait = true,
): Promise<Verdict> {
  const error = (message: string) => ({
    ok: false as const,
    message,
    status: { status: 'error' as const, message: `gatehouse: ${message}` },
  })
  let decision: Decision
  try {
    decision = await session.decide(action, command)
  } catch (err) {
    log.warn({ session: session.id, err: String(err) }, 'ssh command refused: no decision')
    return error('refused: the gateway could not decide this command')
  }
  const {
    command: _text,
    commands: _commands,
    operators: _operators,
    programs: _programs,
    redirects: _redirects,
    opaque,
    opaque_reason,
    ...fields
  } = command
  try {
    await session.audit({
      type: 'statement',
      action,
      command: text,
      ...auditEnv(fields, decision.effect === 'allow'),
      ...(opaque === true ? { opaque: true, opaque_reason } : {}),
      decision: decision.effect,
      rules: decision.rules,
      policy_version: decision.policy,
      ...(decision.effect === 'deny' ? { reason: decision.reason } : {}),
    })
  } catch {
    return error('refused: the gateway could not record this command')
  }
  if (decision.effect === 'deny') return { ok: false, message: `denied: ${decision.reason}`, status: deniedStatus(decision) }
  if (decision.effect === 'hold') {
    // A held command waits for reviewers (engine/approvals), then is decided again with the grant.
    const held = await awaitApproval(
      session,
      action,
      command,
      decision,
      text,
      tell
        ? (request, approvers) =>
            tell(
              `gatehouse: approval required (request ${request}), waiting for group ${approvers.join(', ')}; approve with: gatehouse approvals approve ${request}`,
            )
        : undefined,
      wait,
    )
    return held.ok ? { ok: true } : { ok: false, message: held.message, status: heldStatus(decision, held) }
  }
  return { ok: true }
}

/** Records a feature refused without asking policy (agent and X11 forwarding). */
export function refusedFeature(session: ProxySession, direction: string, reason: string): void {
  session.auditLater({
    type: 'statement',
    action: 'ssh.forward',
    command: `forward ${direction}`,
    direction,
    decision: 'deny',
    rules: [`no-${direction}-forwarding`],
    reason,
  })
}

/** Ends a channel with a message on stderr and an exit status, the way a refused command would. */
export function refuse(stream: ServerChannel, message: string, status = 126, structured = ''): void {
  if (stream.destroyed) return
  stream.stderr.write(`gatehouse: ${message}\r\n${structured}`)
  stream.exit(status)
  stream.end()
}
