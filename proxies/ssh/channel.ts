// One session channel of an admitted caller: its pty, env and status-tag requests, then one exec,
// shell or sftp subsystem decided (judge.ts) and bridged to an upstream channel — stdin, stdout,
// stderr, exit status, signals and window changes, with backpressure — and its `result` audit and
// asciicast recording. Agent and X11 forwarding requests are refused and recorded.

import type { ClientChannel, PseudoTtyInfo, ServerChannel, Session } from 'ssh2'
import type { GatewayStatus, TerminalRecording } from '../types.js'
import { type Admitted, once } from './admitted.js'
import { analyzeExec, type ExecCommand } from './command.js'
import { EnvRequests, TERM_NAME } from './env.js'
import { judge, refusedFeature, refuse } from './judge.js'
import { classifyTransferExec } from './scp.js'
import { ShellCommandDetector } from './shell-detect.js'
import { isStatusTag, STATUS_ENV, statusLine } from './status.js'
import { gateSftp, transferExec } from './transfer.js'
import { channelOf, exitOf, type SshClient, type Upstream } from './upstream.js'

/** What a session channel asks to run: how it is judged, and how it is opened on the target once allowed. */
interface ChannelRequest {
  readonly kind: 'exec' | 'shell' | 'sftp'
  readonly action: string
  readonly command: Record<string, unknown>
  readonly open: (c: SshClient) => Promise<ClientChannel>
}

export function handleSession(a: Admitted, s: Session): void {
  const session = a.session
  let pty: PseudoTtyInfo | null = null
  const envRequests = EnvRequests.fromSetting(session.settings.env)
  const env = envRequests.accepted
  let statusTag: string | null = null
  let used = false
  let up: ClientChannel | null = null
  let recording: TerminalRecording | null = null
  s.on('pty', (accept, reject, info) => {
    // The terminal type reaches the target's programs (terminfo lookups): a terminal name only.
    if (used || !accept || !TERM_NAME.test(info.term)) return reject?.()
    pty = { ...info, cols: Math.min(info.cols, 1000), rows: Math.min(info.rows, 1000) }
    accept()
  })
  s.on('env', (accept, reject, info) => {
    if (info.key === STATUS_ENV) {
      // The caller's status tag (status.ts): the gateway's own, never policy's, the target's or the audit's.
      if (!used && statusTag === null && isStatusTag(info.val)) {
        statusTag = info.val
        accept?.()
      } else reject?.()
    } else if (!used && envRequests.offer(info.key, info.val)) accept?.()
    else reject?.()
  })
  s.on('window-change', (accept, _reject, info) => {
    accept?.()
    const cols = Math.min(info.cols, 1000)
    const rows = Math.min(info.rows, 1000)
    up?.setWindow(rows, cols, info.height, info.width)
    recording?.resize(cols, rows)
  })
  // Agent and X11 forwarding would hand the target a way back into the caller's machine:
  // refused, and the refusal recorded.
  s.on('auth-agent', (_accept, reject) => {
    once(reject)
    refusedFeature(session, 'agent', 'agent forwarding is not allowed through the gateway')
  })
  s.on('x11', (_accept, reject) => {
    once(reject)
    refusedFeature(session, 'x11', 'X11 forwarding is not allowed through the gateway')
  })
  s.on('signal', (accept, _reject, info) => {
    accept?.()
    up?.signal(info.name)
  })
  const start = (accept: () => ServerChannel, req: ChannelRequest): void => {
    used = true
    run(accept, req).catch((err: unknown) => {
      a.ctx.log.warn({ session: session.id, err: String(err) }, 'ssh channel failed')
      a.close('internal error')
    })
  }
  const run = async (accept: () => ServerChannel, { kind, action, command, open }: ChannelRequest): Promise<void> => {
    const stream = accept()
    a.track(stream)
    stream.on('close', () => {
      a.untrack(stream)
      up?.close()
    })
    stream.on('error', () => undefined)
    const text = typeof command.command === 'string' ? command.command : kind
    // While a held exec or shell waits, the caller reads why on stderr (sftp has no such channel).
    const tell =
      kind === 'sftp'
        ? undefined
        : (line: string): void => {
            if (!stream.destroyed) stream.stderr.write(`${line}\r\n`)
          }
    // A caller that sent a status tag (status.ts) gets the verdict as data and is never kept waiting.
    const tagged = (s: GatewayStatus): string => (statusTag !== null ? statusLine(statusTag, s) : '')
    const verdict = await judge(session, a.ctx.log, action, command, text, tell, statusTag === null)
    if (!verdict.ok) {
      refuse(stream, verdict.message, 126, tagged(verdict.status))
      return
    }
    const u: Upstream = await a.target.ready
    if (!u.ok) {
      refuse(stream, u.message, 255, tagged({ status: 'error', message: `gatehouse: ${u.message}` }))
      // Closed once the message is out: a disconnect sent now could overtake it.
      stream.once('close', () => a.close('target unavailable'))
      return
    }
    if (stream.destroyed || a.closed) return
    try {
      up = await open(u.client)
    } catch (err) {
      refuse(stream, `the target refused the ${kind}: ${err instanceof Error ? err.message : String(err)}`, 255)
      return
    }
    const t0 = process.hrtime.bigint()
    // Terminals (a PTY) are recorded as asciicast; a plain exec or a file transfer is recorded
    // as its command, exit status and byte counts (the `result` event), never its bytes.
    if ((kind === 'shell' || pty !== null) && action !== 'ssh.sftp' && session.settings.record !== false) {
      const p = pty as PseudoTtyInfo | null
      recording = a.ctx.recordings.terminal(session, {
        cols: p?.cols || 80,
        rows: p?.rows || 24,
        title: `${session.connection.name}: ${text}`,
        env: { TERM: p?.term ?? env.TERM ?? 'dumb', SHELL: kind },
        recordInput: session.settings.record_input === true,
      })
      if (kind === 'exec') recording?.marker(text)
    }
    bridge(a, stream, up, action, text, t0, recording, kind === 'sftp')
  }
  s.on('exec', (accept, reject, info) => {
    if (used || !accept) return reject?.()
    // What policy judges is what is sent: the re-quoted argv of a plain line (command.ts).
    const cmd: ExecCommand = analyzeExec(info.command)
    // File-transfer programs never run as execs (scp.ts): the SFTP server becomes the SFTP gate,
    // legacy scp is carried out by the gateway, anything else is refused.
    const transfer = classifyTransferExec(cmd)
    if (transfer?.kind === 'sftp-server') {
      start(accept, {
        kind: 'sftp',
        action: 'ssh.sftp',
        command: { command: info.command, operation: 'session', subsystem: 'sftp' },
        open: (c) => channelOf((cb) => c.subsys('sftp', cb)),
      })
      return
    }
    if (transfer) {
      used = true
      void transferExec(a, accept(), cmd, transfer).catch((err: unknown) => {
        a.ctx.log.warn({ session: session.id, err: String(err) }, 'scp failed')
        a.close('internal error')
      })
      return
    }
    const p = pty
    const input = { ...cmd, ...envRequests.forPolicy(), pty: p !== null, ...(p ? { term: p.term } : {}) }
    start(accept, {
      kind: 'exec',
      action: 'ssh.exec',
      command: input,
      open: (c) => channelOf((cb) => c.exec(cmd.sent, { env, ...(p ? { pty: p } : {}) }, cb)),
    })
  })
  s.on('shell', (accept, reject) => {
    if (used || !accept) return reject?.()
    const p = pty
    start(accept, {
      kind: 'shell',
      action: 'ssh.shell',
      command: { pty: p !== null, term: p?.term ?? null, ...envRequests.forPolicy() },
      open: (c) => channelOf((cb) => (p ? c.shell(p, { env }, cb) : c.shell(false, { env }, cb))),
    })
  })
  s.on('subsystem', (accept, reject, info) => {
    if (used || !accept || info.name !== 'sftp') return reject?.()
    start(accept, {
      kind: 'sftp',
      action: 'ssh.sftp',
      command: { operation: 'session', subsystem: 'sftp' },
      open: (c) => channelOf((cb) => c.subsys('sftp', cb)),
    })
  })
}

/**
 * Carries one channel's bytes between caller and target, counts them, feeds the recording and
 * the shell-command detector, and on the target's close records the `result` and passes on the
 * exit status or signal. An sftp channel's bytes go through the SFTP gate (gateSftp) instead.
 */
function bridge(
  a: Admitted,
  stream: ServerChannel,
  up: ClientChannel,
  action: string,
  command: string,
  t0: bigint,
  recording: TerminalRecording | null,
  sftp: boolean,
): void {
  const session = a.session
  let bytesIn = 0
  let bytesOut = 0
  let bytesErr = 0
  // Shells cannot be judged command by command; what is typed is recorded by best-effort
  // detection (shell-detect.ts), flagged `detected: true`, and marked in the recording.
  const detector =
    action === 'ssh.shell'
      ? new ShellCommandDetector((c) => {
          recording?.marker(c.line)
          session.auditLater({
            type: 'result',
            action: 'ssh.shell.command',
            command: c.line,
            detected: true,
            ...(c.uncertain ? { uncertain: true } : {}),
            ...(c.truncated ? { truncated: true } : {}),
          })
        })
      : null
  stream.on('data', (d: Buffer) => {
    bytesIn += d.length
    recording?.input(d)
    detector?.input(d)
  })
  up.on('data', (d: Buffer) => {
    bytesOut += d.length
    recording?.output(d)
    detector?.output(d)
  })
  up.stderr.on('data', (d: Buffer) => {
    bytesErr += d.length
    recording?.output(d)
  })
  // pipe() carries backpressure both ways: neither side's window is buffered without bound.
  // The caller's EOF goes upstream; the target's end is sent after its exit status (below),
  // since ending a channel whose peer already sent EOF closes it.
  if (sftp) gateSftp(a, stream, up)
  else {
    stream.pipe(up)
    up.pipe(stream, { end: false })
  }
  up.stderr.pipe(stream.stderr, { end: false })
  up.on('close', () => {
    const { status, signal } = exitOf(up)
    recording?.close()
    session.auditLater({
      type: 'result',
      action,
      command,
      exit_status: status,
      ...(signal ? { signal } : {}),
      bytes_in: bytesIn,
      bytes_out: bytesOut,
      bytes_err: bytesErr,
      duration_ms: Number(process.hrtime.bigint() - t0) / 1e6,
    })
    if (!stream.destroyed) {
      if (status !== null) stream.exit(status)
      else if (signal !== null) stream.exit(signal, false, '')
      stream.end()
    }
  })
  up.on('error', () => undefined)
}
