// File transfer on a session channel: an SFTP session bridged through the SFTP gate (sftp.ts), and
// a legacy scp exec carried out by the gateway over its own SFTP channel (scp.ts). Every file
// operation is decided like a command.

import type { ClientChannel, ServerChannel, SFTPWrapper } from 'ssh2'
import type { Admitted } from './admitted.js'
import type { ExecCommand } from './command.js'
import { judge, refuse } from './judge.js'
import { resolveScpPaths, runScp, type TransferExec } from './scp.js'
import { SftpReplyInjector, SftpRequestFilter, type SftpVerdict } from './sftp.js'
import type { SftpOperation } from './sftp-wire.js'
import { PathRefused, type TargetFs } from './sftp-paths.js'

/** One SFTP file operation: decided and recorded like a command, refused as permission denied. */
async function judgeSftp(a: Admitted, op: SftpOperation): Promise<SftpVerdict> {
  const text = `sftp ${op.operation} ${op.path}${op.target !== undefined ? ` ${op.target}` : ''}`
  const v = await judge(a.session, a.ctx.log, 'ssh.sftp', { ...op }, text)
  return v.ok ? { allow: true } : { allow: false, message: v.message }
}

/** Bridges an sftp channel through the SFTP gate (sftp.ts), with backpressure both ways. */
export function gateSftp(a: Admitted, stream: ServerChannel, up: ClientChannel): void {
  const session = a.session
  const filter: SftpRequestFilter = new SftpRequestFilter({
    forward: (b) => up.write(b),
    reply: (p) => injector.inject(p),
    fs: () => a.target.fs(),
    decide: (op) => judgeSftp(a, op),
    refused: (what) => session.auditLater({ type: 'result', action: 'ssh.sftp', operation: 'refused', reason: what }),
    resume: () => stream.resume(),
    fail: (why) => {
      a.ctx.log.warn({ session: session.id, why }, 'sftp channel closed: protocol violation')
      stream.close()
      up.close()
    },
  })
  const injector = new SftpReplyInjector(
    (b) => stream.write(b),
    (id, h) => filter.handleReply(id, h),
    (id) => filter.statusReply(id),
  )
  stream.on('data', (d: Buffer) => {
    if (!filter.push(d)) stream.pause()
  })
  up.on('drain', () => filter.drained())
  // The client's EOF goes upstream once every request before it has been decided and sent.
  stream.on('end', () => filter.finish(() => up.end()))
  stream.on('close', () => filter.stop())
  up.on('data', (d: Buffer) => {
    if (!injector.write(d)) {
      up.pause()
      stream.once('drain', () => up.resume())
    }
  })
}

/**
 * A legacy scp exec, carried out by the gateway over its own SFTP channel (scp.ts), or a transfer
 * program refused. The exec is decided as `ssh.sftp` with every named path canonical, then each
 * file and directory the transfer touches is decided on its own.
 */
export async function transferExec(
  a: Admitted,
  stream: ServerChannel,
  cmd: ExecCommand,
  transfer: Exclude<TransferExec, { kind: 'sftp-server' }>,
): Promise<void> {
  const session = a.session
  a.track(stream)
  stream.on('close', () => a.untrack(stream))
  stream.on('error', () => undefined)
  if (transfer.kind === 'refused') {
    await session
      .audit({
        type: 'statement',
        action: 'ssh.exec',
        command: cmd.command,
        argv: cmd.argv,
        decision: 'deny',
        rules: ['gateway-file-transfer'],
        reason: transfer.reason,
      })
      .catch(() => undefined)
    refuse(stream, `refused: ${transfer.reason}`)
    return
  }
  const t = transfer.transfer
  let canonical: string[]
  let sftp: SFTPWrapper
  let fs: TargetFs
  try {
    ;[fs, sftp] = await Promise.all([a.target.fs(), a.target.sftp()])
    canonical = await resolveScpPaths(t, fs)
  } catch (err) {
    const reason = err instanceof PathRefused ? err.message : 'the target could not resolve the path'
    session.auditLater({ type: 'result', action: 'ssh.sftp', command: cmd.command, operation: 'refused', reason })
    refuse(stream, `refused: ${reason}`, 1)
    return
  }
  const command = {
    command: cmd.command,
    argv: cmd.argv,
    operation: t.direction,
    path: canonical[0],
    paths: canonical,
    requested_paths: t.paths,
    recursive: t.recursive,
  }
  const verdict = await judge(session, a.ctx.log, 'ssh.sftp', command, cmd.command)
  if (!verdict.ok) {
    refuse(stream, verdict.message)
    return
  }
  const t0 = process.hrtime.bigint()
  const status = await runScp(t, canonical, stream, { fs, sftp, decide: (op) => judgeSftp(a, op) })
  session.auditLater({
    type: 'result',
    action: 'ssh.sftp',
    command: cmd.command,
    exit_status: status,
    duration_ms: Number(process.hrtime.bigint() - t0) / 1e6,
  })
  if (!stream.destroyed) {
    stream.exit(status)
    stream.end()
  }
}
