// The CLI's audit and recording commands, registered on cli/main.ts's program:
//
//   gatehouse audit list     [filters] [--json]
//   gatehouse audit verify   [--config F | --dir D --pubkey K] [--checkpoints FILE] [--json]
//   gatehouse audit pubkey   [--json]
//   gatehouse audit export   [--since T] [--format jsonl] [--follow]
//   gatehouse audit sinks    [--json]
//   gatehouse sessions replay ID [--speed N] [--json]
//   gatehouse sessions export ID [-o FILE]
//
// Like every command they talk to the running server's API when there is one, and read the data
// directory otherwise. `audit verify` always reads the files itself: it is the check that must not
// depend on trusting the process that wrote them.

import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Command, Option } from 'commander'
import type { Config } from '../config.js'
import { GatehouseError } from '../errors.js'
import { findRecording, formatTimeline, recordingsDir, timelineFromAudit, timelineFromRecording } from '../recording.js'
import type { StoredAuditEvent } from '../types.js'
import { loadAuditKey, loadOrCreateAuditKey, parsePublicKey, publicKeyPem } from './keys.js'
import { type AuditQuery, parseTimeArg, readAuditEvents } from './query.js'
import { AuditTail, logEdge, positionAt } from './tail.js'
import { type VerifyResult, verifyAuditLog } from './verify.js'

/** What the CLI needs from the running server: JSON calls and a streamed GET. */
export interface AuditApiClient {
  call<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T>
  stream(path: string): Promise<Response>
}

export interface AuditCliDeps {
  readonly configOption: () => Option
  readonly resolveConfig: (file: string | undefined) => Config
  readonly apiFor: (config: Config) => AuditApiClient | null
}

function out(line: string): void {
  process.stdout.write(`${line}\n`)
}

function usage(message: string): GatehouseError {
  return new GatehouseError('GH_ERR_CONFIG', message)
}

let epipeHandled = false

/** Writes to stdout, resolving when it drained; a closed pipe (`| head`) ends the command quietly. */
function write(chunk: Buffer | string): Promise<void> {
  if (!epipeHandled) {
    epipeHandled = true
    process.stdout.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(0)
    })
  }
  return new Promise((resolve) => {
    if (process.stdout.write(chunk)) resolve()
    else process.stdout.once('drain', resolve)
  })
}

export function printEvents(events: readonly StoredAuditEvent[], json: boolean): void {
  for (const e of events) {
    if (json) {
      out(JSON.stringify(e))
      continue
    }
    const decision = typeof e.decision === 'string' ? e.decision : ''
    const sql = typeof e.sql === 'string' ? e.sql.replace(/\s+/g, ' ').slice(0, 120) : ''
    const extra =
      e.type === 'result'
        ? `${JSON.stringify(e.tag ?? '')} rows=${String(e.rows ?? '')}`
        : e.type === 'audit.checkpoint'
          ? `${String(e.reason ?? '')} checkpoint`
          : sql
    out(
      [
        e.time,
        String(e.type).padEnd(15),
        (e.session ?? '-').padEnd(15),
        (Array.isArray(e.chain) ? e.chain.join('>') : '') || '-',
        e.connection ?? '-',
        decision,
        extra,
      ].join('  '),
    )
  }
}

function describeVerify(r: VerifyResult, dir: string): string[] {
  const lines: string[] = []
  if (r.problem) {
    const p = r.problem
    const where = p.segment ? `${join(dir, p.segment)}${p.line !== null ? `:${p.line}` : ''}` : dir
    lines.push(`audit log BROKEN at ${where}`)
    if (p.id) lines.push(`  event:    ${p.id}`)
    if (p.expected && p.expected !== p.id) lines.push(`  expected: ${p.expected}`)
    lines.push(`  ${p.message}`)
    if (r.last) lines.push(`  verified up to ${r.last} (${r.events} events) before this point`)
    return lines
  }
  lines.push(
    `audit log OK: ${r.events} events (${r.first} … ${r.last}) in ${r.segments} segment(s), ${r.checkpoints} signed checkpoint(s)` +
      (r.lastCheckpoint ? `, the last at ${r.lastCheckpoint.time}` : ''),
  )
  if (r.pruned > 0) lines.push(`  ${r.pruned} older segment(s) were pruned by retention (a signed prune record accounts for them)`)
  if (r.unsigned > 0) lines.push(`  ${r.unsigned} event(s) after the last checkpoint are not signed yet`)
  for (const rec of r.recoveries) {
    lines.push(
      `  a crash was sealed at ${rec.id} in ${rec.segment}` +
        (rec.unsignedFrom ? `: events from ${rec.unsignedFrom} were first signed by that recovery checkpoint` : '') +
        (rec.tornBytes > 0 ? `; a torn partial line of ${rec.tornBytes} bytes is kept and sealed` : ''),
    )
  }
  if (r.sinkCheckpoints > 0) lines.push(`  agrees with ${r.sinkCheckpoints} signed checkpoint(s) a sink received`)
  if (r.legacy.length > 0)
    lines.push(`  ${r.legacy.length} file(s) of the older unchained format were not verified: ${r.legacy.join(', ')}`)
  return lines
}

export function registerAuditCommands(program: Command, sessions: Command, deps: AuditCliDeps): void {
  const audit = program.command('audit').description('search, verify and export the tamper-evident audit log')

  audit
    .command('list')
    .description('audit events, oldest first')
    .addOption(deps.configOption())
    .option('--session <id>', 'only this session')
    .option('--type <type>', 'only this event type (statement, result, session.start, audit.checkpoint, …)')
    .option('--since <time>', 'from this RFC 3339 time, or a duration ago (15m, 2h, 7d)')
    .option('--until <time>', 'before this time (same forms)')
    .option('--principal <id>', 'a principal anywhere in the chain (user:alice, agent:bot)')
    .option('--connection <name>', 'only this connection')
    .option('--decision <effect>', 'allow, deny or hold')
    .option('--policy-version <version>', 'a policy version, or a prefix of one')
    .option('--text <text>', 'case-insensitive text in the statement')
    .option('--internal', "include the log's own records (segment headers, checkpoints)")
    .option('--limit <n>', 'only the last n events', (v: string) => Number.parseInt(v, 10))
    .option('--json', 'JSON Lines')
    .action(
      async (o: {
        config?: string
        session?: string
        type?: string
        since?: string
        until?: string
        principal?: string
        connection?: string
        decision?: string
        policyVersion?: string
        text?: string
        internal?: boolean
        limit?: number
        json?: boolean
      }) => {
        const config = deps.resolveConfig(o.config)
        if (o.decision !== undefined && !['allow', 'deny', 'hold'].includes(o.decision))
          throw usage('--decision must be allow, deny or hold')
        if (o.limit !== undefined && (!Number.isInteger(o.limit) || o.limit < 1)) throw usage('--limit must be a positive integer')
        const since = o.since === undefined ? undefined : parseTimeArg(o.since)
        const until = o.until === undefined ? undefined : parseTimeArg(o.until)
        if (since === null || until === null) throw usage('--since and --until take an RFC 3339 time or a duration like 15m, 2h, 7d')
        const q: Record<string, string | number | boolean> = {
          ...(o.session ? { session: o.session } : {}),
          ...(o.type ? { type: o.type } : {}),
          ...(since ? { since } : {}),
          ...(until ? { until } : {}),
          ...(o.principal ? { principal: o.principal } : {}),
          ...(o.connection ? { connection: o.connection } : {}),
          ...(o.decision ? { decision: o.decision } : {}),
          ...(o.policyVersion ? { policy_version: o.policyVersion } : {}),
          ...(o.text ? { text: o.text } : {}),
          ...(o.internal ? { internal: true } : {}),
          ...(o.limit ? { limit: o.limit } : {}),
        }
        const api = deps.apiFor(config)
        const events = api
          ? (
              await api.call<{ events: StoredAuditEvent[] }>(
                'GET',
                `/v1/audit?${new URLSearchParams(Object.entries(q).map(([k, v]): [string, string] => [k, String(v)]))}`,
              )
            ).events
          : readAuditEvents(join(config.dataDir, 'audit'), q as AuditQuery)
        printEvents(events, o.json === true)
      },
    )

  audit
    .command('verify')
    .description('check the whole log from its files: names the first edited, deleted, inserted, reordered or cut event')
    .addOption(deps.configOption())
    .option('--dir <dir>', 'an audit directory copied from a gateway (with --pubkey)')
    .option('--pubkey <key>', 'the audit public key: a file, or the key itself (PEM, JWK or base64), as `audit pubkey` prints it')
    .option('--checkpoints <file>', 'lines a sink received (a file sink, an HTTP receiver): also finds a clean cut of the log')
    .option('--json', 'print the report as JSON')
    .action(async (o: { config?: string; dir?: string; pubkey?: string; checkpoints?: string; json?: boolean }) => {
      let dir: string
      let keyText: string
      if (o.dir !== undefined) {
        if (o.pubkey === undefined) throw usage('--dir needs --pubkey: the key must come from somewhere you trust, not from the same copy')
        dir = o.dir
      } else dir = join(deps.resolveConfig(o.config).dataDir, 'audit')
      if (o.pubkey !== undefined) {
        let text = o.pubkey
        try {
          text = readFileSync(o.pubkey, 'utf8')
        } catch {
          /* the key itself */
        }
        keyText = text
      } else {
        keyText = publicKeyPem(loadAuditKey(join(deps.resolveConfig(o.config).dataDir, 'keys')).publicKey)
      }
      const key = parsePublicKey(keyText)
      let checkpoints: Buffer | undefined
      if (o.checkpoints !== undefined) {
        try {
          checkpoints = readFileSync(o.checkpoints)
        } catch (err) {
          throw usage(`--checkpoints ${o.checkpoints}: cannot read (${(err as NodeJS.ErrnoException).code ?? String(err)})`)
        }
      }
      const r = verifyAuditLog(dir, { publicKeys: [key], ...(checkpoints ? { checkpoints } : {}) })
      if (o.json) out(JSON.stringify(r))
      else for (const l of describeVerify(r, dir)) out(l)
      if (!r.ok) process.exitCode = 1
    })

  audit
    .command('pubkey')
    .description("print the audit key's public half (Ed25519 PEM) for `audit verify --pubkey` elsewhere")
    .addOption(deps.configOption())
    .option('--json', 'print {pem, kid, log}')
    .action(async (o: { config?: string; json?: boolean }) => {
      const config = deps.resolveConfig(o.config)
      const api = deps.apiFor(config)
      let r: { pem: string; kid: string; log?: string }
      if (api) r = await api.call<{ pem: string; kid: string; log: string }>('GET', '/v1/audit/pubkey')
      else {
        const k = loadOrCreateAuditKey(join(config.dataDir, 'keys'))
        r = { pem: publicKeyPem(k.publicKey), kid: k.kid }
      }
      if (o.json) out(JSON.stringify(r))
      else process.stdout.write(r.pem)
    })

  audit
    .command('export')
    .description('the log as JSON Lines, verbatim (verifiable), from a time or the start; --follow keeps tailing it')
    .addOption(deps.configOption())
    .option('--since <time>', 'from this RFC 3339 time, or a duration ago (15m, 2h, 7d)')
    .option('--format <format>', 'jsonl (the only format: one event per line, as in the log)', 'jsonl')
    .option('--follow', 'keep writing new events as they are written (for a SIEM)')
    .action(async (o: { config?: string; since?: string; format: string; follow?: boolean }) => {
      if (o.format !== 'jsonl') throw usage(`--format ${o.format}: only jsonl is supported`)
      const since = o.since === undefined ? undefined : parseTimeArg(o.since)
      if (since === null) throw usage('--since takes an RFC 3339 time or a duration like 15m, 2h, 7d')
      const config = deps.resolveConfig(o.config)
      const api = deps.apiFor(config)
      if (api) {
        const qs = new URLSearchParams({ ...(since ? { since } : {}), ...(o.follow ? { follow: 'true' } : {}) })
        const res = await api.stream(`/v1/audit/export?${qs}`)
        if (!res.body) return
        for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) await write(Buffer.from(chunk))
        return
      }
      const dir = join(config.dataDir, 'audit')
      const from = since ? await positionAt(dir, since) : await logEdge(dir, 'start')
      const tail = new AuditTail(dir, from, { follow: o.follow === true })
      for (;;) {
        const b = await tail.next(1000, 1024 * 1024)
        if (!b) break
        await write(Buffer.concat(b.lines.flatMap((l) => [l, NL])))
      }
      await tail.close()
    })

  audit
    .command('sinks')
    .description("each sink's position, what it sent, how far behind it is and its last error")
    .addOption(deps.configOption())
    .option('--json', 'JSON Lines')
    .action(async (o: { config?: string; json?: boolean }) => {
      const api = deps.apiFor(deps.resolveConfig(o.config))
      if (!api) throw usage('no Gatehouse server is running for this configuration; sinks run inside it')
      const r = await api.call<{ sinks: Record<string, unknown>[] }>('GET', '/v1/audit/sinks')
      for (const s of r.sinks) {
        if (o.json) out(JSON.stringify(s))
        else
          out(
            [
              s.name,
              s.type,
              `sent=${String(s.sent)}`,
              `behind=${String(s.behind_bytes)}B`,
              `last=${String(s.lastId ?? '-')}`,
              s.lastError ? `error: ${String(s.lastError)}` : '',
            ].join('  '),
          )
      }
    })

  const fetchRecording = async (config: Config, id: string): Promise<{ kind: string; data: Buffer }> => {
    const api = deps.apiFor(config)
    if (api) {
      const res = await api.stream(`/v1/sessions/${encodeURIComponent(id)}/recording`)
      return { kind: res.headers.get('x-gatehouse-recording') ?? 'timeline', data: Buffer.from(await res.arrayBuffer()) }
    }
    const found = findRecording(recordingsDir(config.dataDir), id)
    if (found) {
      const data = readFileSync(found.path)
      return {
        kind: found.kind,
        data: found.kind === 'terminal' ? data : Buffer.from(`${timelineFromRecording(data.toString('utf8')).join('\n')}\n`),
      }
    }
    const lines = timelineFromAudit(join(config.dataDir, 'audit'), id)
    if (lines.length === 0) throw usage(`no recording of session ${id}`)
    return { kind: 'timeline', data: Buffer.from(`${lines.join('\n')}\n`) }
  }

  sessions
    .command('replay')
    .description("replay a session: a SQL session's timeline, or a terminal session played at real speed (or --speed)")
    .addOption(deps.configOption())
    .argument('<id>', 'session id')
    .option('--speed <factor>', 'terminal playback speed (2 = twice as fast)', (v: string) => Number(v), 1)
    .option('--max-idle <seconds>', 'terminal playback: cap pauses at this many seconds', (v: string) => Number(v), 2)
    .option('--json', 'SQL timeline: print the entries as JSON Lines')
    .action(async (id: string, o: { config?: string; speed: number; maxIdle: number; json?: boolean }) => {
      if (!(o.speed > 0)) throw usage('--speed must be a positive number')
      const rec = await fetchRecording(deps.resolveConfig(o.config), id)
      const lines = rec.data.toString('utf8').split('\n').filter(Boolean)
      if (rec.kind === 'terminal') {
        await playAsciicast(lines, o.speed, o.maxIdle)
        return
      }
      if (o.json) for (const l of lines) out(l)
      else for (const l of formatTimeline(lines)) out(l)
    })

  sessions
    .command('export')
    .description('write a recording in its own format: JSON Lines (SQL timeline) or asciicast v2 (terminal)')
    .addOption(deps.configOption())
    .argument('<id>', 'session id')
    .option('-o, --output <file>', 'write to this file instead of stdout')
    .action(async (id: string, o: { config?: string; output?: string }) => {
      const rec = await fetchRecording(deps.resolveConfig(o.config), id)
      if (o.output) writeFileSync(o.output, rec.data, { mode: 0o600 })
      else await write(rec.data)
    })
}

const NL = Buffer.from('\n')

/** Plays asciicast v2 output events on stdout with their timing. */
async function playAsciicast(lines: readonly string[], speed: number, maxIdle: number): Promise<void> {
  let last = 0
  for (const l of lines.slice(1)) {
    let ev: unknown
    try {
      ev = JSON.parse(l)
    } catch {
      continue
    }
    if (!Array.isArray(ev) || typeof ev[0] !== 'number' || ev[1] !== 'o' || typeof ev[2] !== 'string') continue
    const wait = Math.min(ev[0] - last, maxIdle) / speed
    last = ev[0]
    if (wait > 0) await new Promise((r) => setTimeout(r, wait * 1000))
    await write(ev[2])
  }
}
