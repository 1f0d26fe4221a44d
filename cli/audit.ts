// The CLI's audit and recording commands, registered on cli/main.ts's program:
//
//   gatehouse audit list     [filters] [--json]
//   gatehouse audit verify   [--config F | --dir D --pubkey K…] [--checkpoints FILE] [--strict] [--json]
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
import type { Config } from '../engine/config/config.js'
import { GatehouseError } from '../engine/errors.js'
import {
  findRecording,
  formatTimeline,
  recordingMismatches,
  recordingsDir,
  timelineFromAudit,
  timelineFromRecording,
} from '../engine/audit/recording.js'
import type { StoredAuditEvent } from '../engine/types.js'
import { type AuditSigner, parsePublicKey, publicKeyPem, resolveAuditSigner } from '../engine/audit/keys.js'
import { type AuditQuery, parseTimeArg, readAuditEvents, unattestedSummary } from '../engine/audit/query.js'
import { listSegments, liveWriter, seriesDirs } from '../engine/audit/segments.js'
import { exportAllSeries, rejectedInAll, verifyAllSeries } from '../engine/audit/series.js'
import { describeRejected, SegmentTrust } from '../engine/audit/trusted.js'
import type { VerifyResult } from '../engine/audit/verify.js'

/** What the CLI needs from the running server: JSON calls and a streamed GET. */
export interface AuditApiClient {
  call<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T>
  stream(path: string): Promise<Response>
}

export interface AuditCliDeps {
  readonly configOption: () => Option
  readonly resolveConfig: (file: string | undefined) => Config
  readonly apiFor: (config: Config) => AuditApiClient | null
  /** The error for "no server runs for this configuration" (the CLI gives it its own exit code). */
  readonly noServer: (message: string) => Error
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

/** The command an event is about, whatever the protocol: SQL, an SSH command line, an MCP tool call. */
function eventText(e: StoredAuditEvent): string {
  if (e.type === 'result' && typeof e.tag === 'string') return `${JSON.stringify(e.tag)} rows=${String(e.rows ?? '')}`
  if (e.type === 'audit.checkpoint') return `${String(e.reason ?? '')} checkpoint`
  if (typeof e.sql === 'string') return e.sql
  if (typeof e.command === 'string') {
    // An SFTP operation is named by what it did and to which path; a command line by itself.
    if (typeof e.operation === 'string' && typeof e.path === 'string') return `${e.command}: ${e.operation} ${e.path}`
    return e.command
  }
  if (typeof e.tool === 'string') {
    const args = e.arguments
    return `${e.tool} ${typeof args === 'object' && args !== null ? JSON.stringify(args) : ''}`.trim()
  }
  if (e.type === 'token.issued' || e.type === 'token.revoked') {
    const t = e.token as { id?: unknown; subject?: unknown } | undefined
    return [t?.id, t?.subject].filter((x) => typeof x === 'string').join(' ')
  }
  return ''
}

const COLUMNS = ['TIME', 'TYPE', 'SESSION', 'CHAIN', 'CONNECTION', 'DECISION', 'COMMAND'] as const

export function printEvents(events: readonly StoredAuditEvent[], json: boolean): void {
  if (json) {
    for (const e of events) out(JSON.stringify(e))
    return
  }
  const rows = events.map((e) => [
    e.time,
    String(e.type),
    e.session ?? '-',
    (Array.isArray(e.chain) ? e.chain.join('>') : '') || '-',
    e.connection ?? '-',
    typeof e.decision === 'string' ? e.decision : '-',
    `${eventText(e).replace(/\s+/g, ' ').slice(0, 120)}${(e as { unattested?: unknown }).unattested === true ? '  UNATTESTED' : ''}`,
  ])
  // Aligned columns under a header, so the listing reads as a table; the last column runs free.
  const widths = COLUMNS.map((c, i) => Math.max(c.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd()
  out(line(COLUMNS))
  for (const r of rows) out(line(r))
}

/** Why `verify --strict` refuses a log that verified: events nothing vouches for. Null when none. */
export function strictProblem(r: VerifyResult, live: boolean): string | null {
  if (!r.ok) return null
  if (r.unattestedEvents > 0) return `--strict: ${r.unattestedEvents} unattested event(s) (see the warnings above)`
  if (r.unsigned > 0 && !live) return `--strict: ${r.unsigned} unsigned event(s) at the end of a log no gateway is writing`
  return null
}

function describeVerify(r: VerifyResult, dir: string, live: boolean): string[] {
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
  if (r.unsigned > 0) {
    lines.push(
      live
        ? `  ${r.unsigned} event(s) after the last checkpoint are not signed yet (the running gateway signs them within its checkpoint interval)`
        : `  warning: ${r.unsigned} event(s) after the last checkpoint are unsigned and no gateway is writing this log: nothing vouches for them (a restart marks them unattested)`,
    )
  }
  for (const rec of r.recoveries) {
    lines.push(
      `  a crash was sealed at ${rec.id} in ${rec.segment}` +
        (rec.tornBytes > 0 ? `; a torn partial line of ${rec.tornBytes} bytes is kept and sealed` : ''),
    )
  }
  for (const u of r.unattested) {
    const open = u.events - u.attestedBySink
    if (open === 0) {
      lines.push(`  ${u.events} event(s) ${u.from} … ${u.to} left unsigned by a crash are attested by the sink copy (byte for byte)`)
      continue
    }
    lines.push(
      `  warning: ${open} event(s) ${u.from} … ${u.to} are UNATTESTED: written after the last signed checkpoint before a crash, ` +
        `sealed by recovery checkpoint ${u.recovery} without being vouched for; they may have been altered while the gateway was down` +
        (u.attestedBySink > 0 ? ` (${u.attestedBySink} more in the range are attested by the sink copy)` : ''),
    )
  }
  if (r.sinkCheckpoints > 0) lines.push(`  agrees with ${r.sinkCheckpoints} signed checkpoint(s) a sink received`)
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
    .option('--token <id>', 'what this token and every token delegated from it did')
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
        token?: string
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
          ...(o.token ? { token: o.token } : {}),
          ...(o.connection ? { connection: o.connection } : {}),
          ...(o.decision ? { decision: o.decision } : {}),
          ...(o.policyVersion ? { policy_version: o.policyVersion } : {}),
          ...(o.text ? { text: o.text } : {}),
          ...(o.internal ? { internal: true } : {}),
          ...(o.limit ? { limit: o.limit } : {}),
        }
        const api = deps.apiFor(config)
        let events: StoredAuditEvent[]
        if (api) {
          const r = await api.call<{ events: StoredAuditEvent[]; skipped?: { name: string; why: string }[] }>(
            'GET',
            `/v1/audit?${new URLSearchParams(Object.entries(q).map(([k, v]): [string, string] => [k, String(v)]))}`,
          )
          const warning = describeRejected(r.skipped ?? [])
          if (warning !== null) process.stderr.write(`warning: ${warning}\n`)
          events = r.events
        } else events = await readLocal(config, (dir, trust) => readAuditEvents(dir, q as AuditQuery, trust))
        const marked = unattestedSummary(events)
        if (marked) {
          process.stderr.write(
            `warning: ${marked.count} event(s) listed (${marked.from} … ${marked.to}) are unattested: a crash left them unsigned and nothing vouches for them (marked UNATTESTED; see audit verify)\n`,
          )
        }
        printEvents(events, o.json === true)
      },
    )

  audit
    .command('verify')
    .description('check the whole log from its files: names the first edited, deleted, inserted, reordered or cut event')
    .addOption(deps.configOption())
    .option('--dir <dir>', 'an audit directory copied from a gateway (with --pubkey)')
    .option(
      '--pubkey <key>',
      'an audit public key: a file, or the key itself (PEM, JWK or base64), as `audit pubkey` prints it (repeatable, for a log signed by a key and its successor)',
      (v: string, acc: string[]) => [...acc, v],
      [] as string[],
    )
    .option(
      '--checkpoints <file>',
      'lines a sink received (a witness, a file sink, an HTTP receiver): finds a clean cut, attests unsigned events',
    )
    .option(
      '--strict',
      'also fail (exit 2) on events nothing vouches for: unattested after a crash, or unsigned in a log no gateway writes',
    )
    .option('--json', 'print the report as JSON')
    .action(async (o: { config?: string; dir?: string; pubkey: string[]; checkpoints?: string; strict?: boolean; json?: boolean }) => {
      let dir: string
      const keys = o.pubkey.map((k) => {
        let text = k
        try {
          text = readFileSync(k, 'utf8')
        } catch {
          /* the key itself */
        }
        return parsePublicKey(text)
      })
      if (o.dir !== undefined) {
        if (keys.length === 0) throw usage('--dir needs --pubkey: the key must come from somewhere you trust, not from the same copy')
        dir = o.dir
      } else {
        const config = deps.resolveConfig(o.config)
        dir = join(config.dataDir, 'audit')
        if (keys.length === 0) keys.push((await configuredSigner(config)).publicKey)
      }
      let checkpoints: Buffer | undefined
      if (o.checkpoints !== undefined) {
        try {
          checkpoints = readFileSync(o.checkpoints)
        } catch (err) {
          throw usage(`--checkpoints ${o.checkpoints}: cannot read (${(err as NodeJS.ErrnoException).code ?? String(err)})`)
        }
      }
      // Each segment series (the directory's own, and each worker's under `serve --workers N`) is
      // a chain of its own: each is verified whole.
      const all = verifyAllSeries(dir, { publicKeys: keys, ...(checkpoints ? { checkpoints } : {}) })
      let failed = !all.ok
      const reports: Record<string, unknown>[] = []
      for (const r of all.series) {
        // A copy (--dir) has no writer; the live log's unsigned tail is signed within a second.
        const live = o.dir === undefined && liveWriter(r.dir) !== null
        const strict = o.strict ? strictProblem(r, live) : null
        if (strict) failed = true
        const { dir: _dir, name, ...result } = r
        reports.push({ ...(all.series.length > 1 ? { series: name } : {}), ...result, ...(o.strict ? { strict: strict === null } : {}) })
        if (o.json) continue
        const lines = describeVerify(r, r.dir, live)
        if (strict) lines.push(strict)
        if (all.series.length === 1) for (const l of lines) out(l)
        else {
          out(`series ${name === '.' ? '. (a single-process gateway)' : `${name} (worker ${name.slice(1)})`}:`)
          for (const l of lines) out(`  ${l}`)
        }
      }
      if (o.json) out(JSON.stringify(all.series.length === 1 ? reports[0] : { ok: !failed, events: all.events, series: reports }))
      else if (all.series.length > 1)
        out(
          `${failed ? 'audit log NOT OK' : 'audit log OK'}: ${all.events} events in ${all.series.length} segment series, each verified on its own`,
        )
      // A strict check that finds the log intact but not fully signed failed what was asked: 1.
      if (failed) process.exitCode = 1
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
        const k = await configuredSigner(config, true)
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
      const trust = await readerTrust(config)
      const rejected = describeRejected(rejectedInAll(dir, trust))
      if (rejected !== null) process.stderr.write(`warning: ${rejected}\n`)
      for await (const lines of exportAllSeries(dir, { ...(since ? { since } : {}), follow: o.follow === true, trust })) {
        await write(Buffer.concat(lines.flatMap((l) => [l, NL])))
      }
    })

  audit
    .command('sinks')
    .description("each sink's position, what it sent, how far behind it is and its last error")
    .addOption(deps.configOption())
    .option('--json', 'JSON Lines')
    .action(async (o: { config?: string; json?: boolean }) => {
      const api = deps.apiFor(deps.resolveConfig(o.config))
      if (!api) throw deps.noServer('no Gatehouse server is running for this configuration; sinks run inside it')
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
      if (found.kind === 'timeline') {
        const problems = await readLocal(config, (dir, trust) => recordingMismatches(data.toString('utf8'), dir, id, trust))
        if (problems.length > 0) {
          throw new GatehouseError('GH_ERR_AUDIT', `the recording of session ${id} does not match the audit log: ${problems.join('; ')}`)
        }
      }
      return {
        kind: found.kind,
        data: found.kind === 'terminal' ? data : Buffer.from(`${timelineFromRecording(data.toString('utf8')).join('\n')}\n`),
      }
    }
    const lines = await readLocal(config, (dir, trust) => timelineFromAudit(dir, id, trust))
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

/** The configured audit key (`audit.signing_key`, or `<data_dir>/keys/audit.jwk`). */
function configuredSigner(config: Config, create = false): Promise<AuditSigner> {
  return resolveAuditSigner(config.audit.signingKey, config.dataDir, process.cwd(), create)
}

/** Which segments the CLI may read without a server: those signed by the configured key. */
async function readerTrust(config: Config): Promise<SegmentTrust> {
  const dir = join(config.dataDir, 'audit')
  // No log yet, no key needed (and none is created by reading).
  if (seriesDirs(dir).every((d) => listSegments(d).segments.length === 0)) return new SegmentTrust([])
  return new SegmentTrust([(await configuredSigner(config)).publicKey])
}

/** Reads the log without a server; files that are not segments of it are named on stderr. */
async function readLocal<T>(config: Config, read: (dir: string, trust: SegmentTrust) => T): Promise<T> {
  const dir = join(config.dataDir, 'audit')
  const trust = await readerTrust(config)
  const warning = describeRejected(rejectedInAll(dir, trust))
  if (warning !== null) process.stderr.write(`warning: ${warning}\n`)
  return read(dir, trust)
}

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
