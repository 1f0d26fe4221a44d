// The `audit:` section of gatehouse.yaml: durability, checkpoints, segments, retention, sinks and
// recordings. `auditSchema` validates it as part of the configuration's one schema; every problem
// is reported as "key.path: what is wrong" with the rest, all at once.
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
import { z } from 'zod'
import {
  ADDRESS_RE,
  bool,
  int,
  issueLines,
  list,
  NAME_RE,
  retention,
  SECRET_REF_RE,
  secretRef,
  strict,
  text,
  uniqueNames,
} from '../config/zod.js'
import { parseDuration } from '../duration.js'

/** When an appended event counts as durable: in the OS (batched fsync) or on disk (fsync per write). */
export type FsyncMode = 'batched' | 'always'

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

const checkpointsOnly = bool().optional()
const sinkName = z
  .string({ error: (iss) => (iss.input === undefined ? 'is required' : `must be a non-empty string (got ${JSON.stringify(iss.input)})`) })
  .regex(NAME_RE, { error: 'must be letters, digits, _ . - (up to 63)' })
const fileSink = strict({
  name: sinkName,
  type: z.literal('file'),
  path: text(),
  max_bytes: int(4096, 2 ** 40).optional(),
  keep: int(0, 10_000).optional(),
  checkpoints_only: checkpointsOnly,
})
const httpSink = strict({
  name: sinkName,
  type: z.literal('http'),
  url: text().regex(/^https?:\/\/[^\s]+$/, { error: 'must be an http:// or https:// URL' }),
  secret: secretRef('must be a secret reference (env:NAME or file:PATH), never the secret itself').optional(),
  batch_max: int(1, 100_000).optional(),
  timeout_ms: int(100, 600_000).optional(),
  checkpoints_only: checkpointsOnly,
})
const syslogSink = strict({
  name: sinkName,
  type: z.literal('syslog'),
  address: z.string({ error: 'must be host:port' }).regex(ADDRESS_RE, { error: 'must be host:port' }),
  tls: bool().optional(),
  ca: text().optional(),
  facility: int(0, 23).optional(),
  checkpoints_only: checkpointsOnly,
})

/** The `audit:` section of the configuration schema (engine/config/config.ts composes it). */
export const auditSchema = strict({
  fsync: z.enum(['batched', 'always'], { error: (iss) => `must be batched or always (got ${JSON.stringify(iss.input)})` }).optional(),
  fsync_interval_ms: int(1, 60_000).optional(),
  checkpoint_interval_ms: int(10, 1000).optional(),
  signing_key: text()
    .regex(SECRET_REF_RE, { error: 'must be a secret reference (env:NAME or file:PATH), never the key itself' })
    .nullable()
    .optional(),
  segment_max_bytes: int(64 * 1024, 1024 * 1024 * 1024).optional(),
  retention: retention().optional(),
  sinks: uniqueNames(
    list(
      z.discriminatedUnion('type', [fileSink, httpSink, syslogSink], {
        error: (iss) =>
          typeof iss.input !== 'object' || iss.input === null || Array.isArray(iss.input)
            ? 'must be a mapping'
            : `must be file, http or syslog (got ${JSON.stringify((iss.input as { type?: unknown }).type)})`,
      }),
    ),
    'sink name',
  ).optional(),
  recordings: strict({
    enabled: bool().optional(),
    retention: retention().optional(),
    connections: z
      .record(z.string(), strict({ retention: retention().optional() }, 'must be a mapping like { retention: 30d }'), {
        error: 'must be a mapping of connection name to { retention }',
      })
      .optional(),
  }).optional(),
})
  .nullable()
  .optional()

export type AuditSection = z.output<typeof auditSchema>

function retentionSeconds(v: string | null | undefined, dflt: number | null): number | null {
  if (v === undefined) return dflt
  if (v === null || v === 'forever') return null
  return parseDuration(v)
}

/** The validated section as the engine uses it; relative paths against `baseDir`. */
export function auditFromSection(a: AuditSection, baseDir: string): AuditConfig {
  if (a === undefined || a === null) return DEFAULT_AUDIT_CONFIG
  const rel = (p: string): string => (isAbsolute(p) ? p : resolve(baseDir, p))
  const ref = (r: string): string => (r.startsWith('file:') ? `file:${rel(r.slice(5))}` : r)
  const sinks: SinkConfig[] = (a.sinks ?? []).map((s: NonNullable<NonNullable<AuditSection>['sinks']>[number]): SinkConfig => {
    const checkpointsOnly = s.checkpoints_only === true
    if (s.type === 'file') {
      return {
        type: 'file',
        name: s.name,
        checkpointsOnly,
        path: rel(s.path),
        maxBytes: s.max_bytes ?? 100 * 1024 * 1024,
        keep: s.keep ?? 10,
      }
    }
    if (s.type === 'http') {
      return {
        type: 'http',
        name: s.name,
        checkpointsOnly,
        url: s.url,
        secret: s.secret === undefined ? null : ref(s.secret),
        batchMax: s.batch_max ?? 500,
        timeoutMs: s.timeout_ms ?? 10_000,
      }
    }
    const m = ADDRESS_RE.exec(s.address)
    const host = m?.[1] ?? '127.0.0.1'
    return {
      type: 'syslog',
      name: s.name,
      checkpointsOnly,
      host: host.startsWith('[') ? host.slice(1, -1) : host,
      port: Number(m?.[2] ?? 514),
      tls: s.tls === true,
      ca: s.ca === undefined ? null : rel(s.ca),
      facility: s.facility ?? 13,
    }
  })
  let recordings: RecordingsConfig = DEFAULT_AUDIT_CONFIG.recordings
  if (a.recordings) {
    const def = retentionSeconds(a.recordings.retention, null)
    const connections: Record<string, { retentionSeconds: number | null }> = {}
    for (const [name, v] of Object.entries(a.recordings.connections ?? {}))
      connections[name] = { retentionSeconds: retentionSeconds(v.retention, def) }
    recordings = { enabled: a.recordings.enabled !== false, retentionSeconds: def, connections }
  }
  return {
    fsync: a.fsync === 'always' ? 'always' : 'batched',
    fsyncIntervalMs: a.fsync_interval_ms ?? 200,
    checkpointIntervalMs: a.checkpoint_interval_ms ?? 1000,
    signingKey: a.signing_key ? ref(a.signing_key) : null,
    segmentMaxBytes: a.segment_max_bytes ?? 64 * 1024 * 1024,
    retentionSeconds: retentionSeconds(a.retention, null),
    sinks,
    recordings,
  }
}

/** Validates and converts `audit:` alone; problems are "audit.key.path: what is wrong". */
export function parseAuditConfig(raw: unknown, baseDir: string): { config: AuditConfig; problems: string[] } {
  const r = auditSchema.safeParse(raw)
  if (!r.success) return { config: DEFAULT_AUDIT_CONFIG, problems: issueLines(r.error.issues, ['audit']).map((l) => l.line) }
  return { config: auditFromSection(r.data, baseDir), problems: [] }
}
