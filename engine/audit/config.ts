// The `audit:` section of gatehouse.yaml: durability, checkpoints, segments, retention, sinks and
// recordings. Everything arrives as `unknown`; every problem is returned as "key.path: what is
// wrong" so config.ts reports them with the rest, all at once.
//
//   audit:
//     fsync: batched            # batched (default): in the OS before forwarding, disk sync every
//                               #   fsync_interval_ms | always: on disk before forwarding (group commit)
//     fsync_interval_ms: 200
//     checkpoint_interval_ms: 1000   # no event stays unsigned longer than this (at most 1000)
//     signing_key: file:/run/secrets/gatehouse-audit.jwk   # default: <data_dir>/keys/audit.jwk
//     segment_max_bytes: 67108864
//     retention: 400d           # prune whole segments older than this (default: keep all)
//     sinks:
//       - { name: archive, type: file, path: /var/log/gatehouse/audit.jsonl, max_bytes: 104857600, keep: 10 }
//       - { name: siem, type: http, url: https://siem.example/ingest, secret: env:SIEM_HMAC_KEY }
//       - { name: syslog, type: syslog, address: "logs.example:6514", tls: true, ca: ./ca.pem }
//       - { name: witness, type: http, url: https://witness.example/gh, checkpoints_only: true }
//     recordings:
//       enabled: true
//       retention: 90d
//       connections: { app: { retention: 30d } }

import { isAbsolute, resolve } from 'node:path'
import type { FsyncMode } from '../config.js'

export interface FileSinkConfig {
  /** A witness: only the signed records (segment headers, checkpoints) are sent. */
  readonly checkpointsOnly: boolean
  readonly type: 'file'
  readonly name: string
  readonly path: string
  readonly maxBytes: number
  readonly keep: number
}

export interface HttpSinkConfig {
  /** A witness: only the signed records (segment headers, checkpoints) are sent. */
  readonly checkpointsOnly: boolean
  readonly type: 'http'
  readonly name: string
  readonly url: string
  /** A secret reference (`env:NAME`, `file:PATH`) for the HMAC key; null sends unsigned batches. */
  readonly secret: string | null
  readonly batchMax: number
  readonly timeoutMs: number
}

export interface SyslogSinkConfig {
  /** A witness: only the signed records (segment headers, checkpoints) are sent. */
  readonly checkpointsOnly: boolean
  readonly type: 'syslog'
  readonly name: string
  readonly host: string
  readonly port: number
  readonly tls: boolean
  readonly ca: string | null
  readonly facility: number
}

export type SinkConfig = FileSinkConfig | HttpSinkConfig | SyslogSinkConfig

/**
 * Whether a sink anchors the log outside this host: HTTP and syslog send it elsewhere; a file
 * sink counts only as a witness (`checkpoints_only`), which is meant for another mount.
 */
export function isExternalAnchor(sink: SinkConfig): boolean {
  return sink.type !== 'file' || sink.checkpointsOnly
}

export interface RecordingsConfig {
  readonly enabled: boolean
  /** Default retention of recordings in seconds; null keeps them. */
  readonly retentionSeconds: number | null
  /** Per-connection retention (seconds, null = keep), overriding the default. */
  readonly connections: Readonly<Record<string, { readonly retentionSeconds: number | null }>>
}

export interface AuditConfig {
  readonly fsync: FsyncMode
  readonly fsyncIntervalMs: number
  readonly checkpointIntervalMs: number
  /** A secret reference (`env:NAME`, `file:PATH`) to the audit key; null: `<data_dir>/keys/audit.jwk`. */
  readonly signingKey: string | null
  readonly segmentMaxBytes: number
  /** Whole segments older than this (seconds) are pruned; null keeps everything. */
  readonly retentionSeconds: number | null
  readonly sinks: readonly SinkConfig[]
  readonly recordings: RecordingsConfig
}

export const DEFAULT_AUDIT_CONFIG: AuditConfig = {
  fsync: 'batched',
  fsyncIntervalMs: 200,
  checkpointIntervalMs: 1000,
  signingKey: null,
  segmentMaxBytes: 64 * 1024 * 1024,
  retentionSeconds: null,
  sinks: [],
  recordings: { enabled: true, retentionSeconds: null, connections: {} },
}

const AUDIT_KEYS = [
  'fsync',
  'fsync_interval_ms',
  'checkpoint_interval_ms',
  'signing_key',
  'segment_max_bytes',
  'retention',
  'sinks',
  'recordings',
]
const SINK_KEYS: Record<SinkConfig['type'], readonly string[]> = {
  file: ['name', 'type', 'path', 'max_bytes', 'keep', 'checkpoints_only'],
  http: ['name', 'type', 'url', 'secret', 'batch_max', 'timeout_ms', 'checkpoints_only'],
  syslog: ['name', 'type', 'address', 'tls', 'ca', 'facility', 'checkpoints_only'],
}
const SECRET_REF_RE = /^(env:[A-Za-z_][A-Za-z0-9_]*|file:.+)$/
const SINK_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function parseDurationText(text: string): number | null {
  const m = /^(\d+)(s|m|h|d)$/.exec(text.trim())
  if (!m) return null
  const unit = m[2] === 's' ? 1 : m[2] === 'm' ? 60 : m[2] === 'h' ? 3600 : 86400
  return Number(m[1]) * unit
}

class Collector {
  readonly problems: string[] = []
  add(path: string, what: string): void {
    this.problems.push(`${path}: ${what}`)
  }
  unknown(obj: Record<string, unknown>, path: string, allowed: readonly string[]): void {
    for (const k of Object.keys(obj)) if (!allowed.includes(k)) this.add(`${path}.${k}`, `unknown key (allowed: ${allowed.join(', ')})`)
  }
  int(obj: Record<string, unknown>, key: string, path: string, min: number, max: number, dflt: number): number {
    const v = obj[key]
    if (v === undefined) return dflt
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      this.add(`${path}.${key}`, `must be an integer between ${min} and ${max}`)
      return dflt
    }
    return v
  }
  text(obj: Record<string, unknown>, key: string, path: string): string | null {
    const v = obj[key]
    if (v === undefined || v === null) return null
    if (typeof v !== 'string' || v === '') {
      this.add(`${path}.${key}`, `must be a non-empty string (got ${JSON.stringify(v)})`)
      return null
    }
    return v
  }
  retention(obj: Record<string, unknown>, key: string, path: string, dflt: number | null): number | null {
    const v = obj[key]
    if (v === undefined) return dflt
    if (v === null || v === 'forever') return null
    const s = typeof v === 'string' ? parseDurationText(v) : null
    if (s === null || s <= 0) {
      this.add(`${path}.${key}`, `must be a duration like 30d or 12h, or "forever" (got ${JSON.stringify(v)})`)
      return dflt
    }
    return s
  }
}

/** Parses `audit:`; relative paths are resolved against `baseDir` (the config file's folder). */
export function parseAuditConfig(raw: unknown, baseDir: string): { config: AuditConfig; problems: string[] } {
  const c = new Collector()
  if (raw === undefined || raw === null) return { config: DEFAULT_AUDIT_CONFIG, problems: [] }
  if (!isRecord(raw)) return { config: DEFAULT_AUDIT_CONFIG, problems: ['audit: must be a mapping'] }
  const rel = (p: string): string => (isAbsolute(p) ? p : resolve(baseDir, p))
  c.unknown(raw, 'audit', AUDIT_KEYS)
  const f = raw.fsync ?? 'batched'
  if (f !== 'batched' && f !== 'always') c.add('audit.fsync', `must be batched or always (got ${JSON.stringify(f)})`)
  const fsync: FsyncMode = f === 'always' ? 'always' : 'batched'
  const fsyncIntervalMs = c.int(raw, 'fsync_interval_ms', 'audit', 1, 60_000, 200)
  const checkpointIntervalMs = c.int(raw, 'checkpoint_interval_ms', 'audit', 10, 1000, 1000)
  const segmentMaxBytes = c.int(raw, 'segment_max_bytes', 'audit', 64 * 1024, 1024 * 1024 * 1024, 64 * 1024 * 1024)
  const retentionSeconds = c.retention(raw, 'retention', 'audit', null)
  const signingKeyText = c.text(raw, 'signing_key', 'audit')
  let signingKey: string | null = null
  if (signingKeyText !== null) {
    if (!SECRET_REF_RE.test(signingKeyText)) {
      c.add('audit.signing_key', 'must be a secret reference (env:NAME or file:PATH), never the key itself')
    } else signingKey = signingKeyText.startsWith('file:') ? `file:${rel(signingKeyText.slice(5))}` : signingKeyText
  }

  const sinks: SinkConfig[] = []
  const sinksRaw = raw.sinks ?? []
  if (!Array.isArray(sinksRaw)) c.add('audit.sinks', 'must be a list')
  else {
    const names = new Set<string>()
    sinksRaw.forEach((s: unknown, i) => {
      const path = `audit.sinks[${i}]`
      if (!isRecord(s)) {
        c.add(path, 'must be a mapping')
        return
      }
      const name = c.text(s, 'name', path)
      if (name === null) c.add(`${path}.name`, 'is required')
      else if (!SINK_NAME_RE.test(name)) c.add(`${path}.name`, 'must be letters, digits, _ . - (up to 63)')
      else if (names.has(name)) c.add(`${path}.name`, `duplicate sink name ${JSON.stringify(name)}`)
      else names.add(name)
      const type = s.type
      if (type !== 'file' && type !== 'http' && type !== 'syslog') {
        c.add(`${path}.type`, `must be file, http or syslog (got ${JSON.stringify(type)})`)
        return
      }
      c.unknown(s, path, SINK_KEYS[type])
      const n = name ?? `sink${i}`
      const checkpointsOnly = s.checkpoints_only ?? false
      if (typeof checkpointsOnly !== 'boolean') c.add(`${path}.checkpoints_only`, 'must be true or false')
      if (type === 'file') {
        const p = c.text(s, 'path', path)
        if (p === null) c.add(`${path}.path`, 'is required')
        sinks.push({
          type,
          name: n,
          checkpointsOnly: checkpointsOnly === true,
          path: rel(p ?? 'audit-sink.jsonl'),
          maxBytes: c.int(s, 'max_bytes', path, 4096, 2 ** 40, 100 * 1024 * 1024),
          keep: c.int(s, 'keep', path, 0, 10_000, 10),
        })
      } else if (type === 'http') {
        const url = c.text(s, 'url', path)
        if (url === null) c.add(`${path}.url`, 'is required')
        else if (!/^https?:\/\/[^\s]+$/.test(url)) c.add(`${path}.url`, 'must be an http:// or https:// URL')
        const secret = c.text(s, 'secret', path)
        if (secret !== null && !SECRET_REF_RE.test(secret)) {
          c.add(`${path}.secret`, 'must be a secret reference (env:NAME or file:PATH), never the secret itself')
        }
        sinks.push({
          type,
          name: n,
          checkpointsOnly: checkpointsOnly === true,
          url: url ?? '',
          secret: secret === null ? null : secret.startsWith('file:') ? `file:${rel(secret.slice(5))}` : secret,
          batchMax: c.int(s, 'batch_max', path, 1, 100_000, 500),
          timeoutMs: c.int(s, 'timeout_ms', path, 100, 600_000, 10_000),
        })
      } else {
        const addr = c.text(s, 'address', path)
        const m = addr === null ? null : /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(addr)
        if (!m) c.add(`${path}.address`, 'must be host:port')
        const tls = s.tls ?? false
        if (typeof tls !== 'boolean') c.add(`${path}.tls`, 'must be true or false')
        const ca = c.text(s, 'ca', path)
        const host = m?.[1] ?? '127.0.0.1'
        sinks.push({
          type,
          name: n,
          checkpointsOnly: checkpointsOnly === true,
          host: host.startsWith('[') ? host.slice(1, -1) : host,
          port: Number(m?.[2] ?? 514),
          tls: tls === true,
          ca: ca === null ? null : rel(ca),
          facility: c.int(s, 'facility', path, 0, 23, 13),
        })
      }
    })
  }

  let recordings: RecordingsConfig = DEFAULT_AUDIT_CONFIG.recordings
  const recRaw = raw.recordings
  if (recRaw !== undefined) {
    if (!isRecord(recRaw)) c.add('audit.recordings', 'must be a mapping')
    else {
      c.unknown(recRaw, 'audit.recordings', ['enabled', 'retention', 'connections'])
      const enabled = recRaw.enabled ?? true
      if (typeof enabled !== 'boolean') c.add('audit.recordings.enabled', 'must be true or false')
      const retention = c.retention(recRaw, 'retention', 'audit.recordings', null)
      const connections: Record<string, { retentionSeconds: number | null }> = {}
      const connRaw = recRaw.connections ?? {}
      if (!isRecord(connRaw)) c.add('audit.recordings.connections', 'must be a mapping of connection name to { retention }')
      else {
        for (const [name, v] of Object.entries(connRaw)) {
          const path = `audit.recordings.connections.${name}`
          if (!isRecord(v)) {
            c.add(path, 'must be a mapping like { retention: 30d }')
            continue
          }
          c.unknown(v, path, ['retention'])
          connections[name] = { retentionSeconds: c.retention(v, 'retention', path, retention) }
        }
      }
      recordings = { enabled: enabled !== false, retentionSeconds: retention, connections }
    }
  }
  return {
    config: { fsync, fsyncIntervalMs, checkpointIntervalMs, signingKey, segmentMaxBytes, retentionSeconds, sinks, recordings },
    problems: c.problems,
  }
}
