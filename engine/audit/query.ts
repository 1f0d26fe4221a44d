// Reading and searching the audit log from its files, with or without a running server: by time,
// principal anywhere in the chain, connection, decision, session, policy version, event type and
// text in the statement. Results come in log order (oldest first). Only segments with a header
// signed by the audit key are read (trusted.ts): a file planted in the directory is never shown.

import { readFileSync } from 'node:fs'
import type { StoredAuditEvent } from '../types.js'
import { seriesDirs } from './segments.js'
import type { SegmentTrust } from './trusted.js'

export interface AuditQuery {
  readonly session?: string
  readonly type?: string
  /** Only the last `limit` matches. */
  readonly limit?: number
  /** RFC 3339 times: events at or after `since`, before `until`. */
  readonly since?: string
  readonly until?: string
  /** A principal id anywhere in the chain (`user:alice`, `agent:summarizer`). */
  readonly principal?: string
  /**
   * A token id: what that token and every token delegated from it did (the sessions they opened
   * and everything in them), and the tokens' own issue and revocation records.
   */
  readonly token?: string
  readonly connection?: string
  readonly decision?: string
  /** A policy version, or a prefix of one. */
  readonly policy_version?: string
  /** Case-insensitive text in the statement's SQL (or any of a multi-statement query's), or an SSH command line. */
  readonly text?: string
  /** Include the log's own records (segment headers, checkpoints, prunes); a type of `audit.*` implies it. */
  readonly internal?: boolean
}

/** A time given as RFC 3339, or as a duration ago (`15m`, `2h`, `7d`). Null if neither. */
export function parseTimeArg(text: string, now = Date.now()): string | null {
  const m = /^(\d+)(s|m|h|d)$/.exec(text.trim())
  if (m) {
    const unit = m[2] === 's' ? 1 : m[2] === 'm' ? 60 : m[2] === 'h' ? 3600 : 86400
    return new Date(now - Number(m[1]) * unit * 1000).toISOString()
  }
  const t = Date.parse(text)
  return Number.isNaN(t) ? null : new Date(t).toISOString()
}

function sqlTexts(e: StoredAuditEvent): string[] {
  const out: string[] = []
  if (typeof e.sql === 'string') out.push(e.sql)
  // An SSH command line (or an SFTP operation's command) is searched as a statement's SQL is.
  if (typeof e.command === 'string') out.push(e.command)
  if (Array.isArray(e.statements)) {
    for (const s of e.statements as unknown[]) {
      if (typeof s === 'object' && s !== null && typeof (s as { sql?: unknown }).sql === 'string') out.push((s as { sql: string }).sql)
    }
  }
  return out
}

/** A predicate for one query; cheap checks first. */
export function matcher(q: AuditQuery): (e: StoredAuditEvent) => boolean {
  const internal = q.internal === true || (q.type?.startsWith('audit.') ?? false)
  const text = q.text?.toLowerCase()
  return (e) => {
    if (q.session !== undefined && e.session !== q.session) return false
    if (q.type !== undefined && e.type !== q.type) return false
    if (!internal && typeof e.type === 'string' && e.type.startsWith('audit.')) return false
    if (q.connection !== undefined && e.connection !== q.connection) return false
    if (q.decision !== undefined && e.decision !== q.decision) return false
    if (q.since !== undefined && !(e.time >= q.since)) return false
    if (q.until !== undefined && !(e.time < q.until)) return false
    if (q.principal !== undefined && !(Array.isArray(e.chain) && e.chain.includes(q.principal))) return false
    if (q.policy_version !== undefined && !(typeof e.policy_version === 'string' && e.policy_version.startsWith(q.policy_version)))
      return false
    if (text !== undefined && !sqlTexts(e).some((s) => s.toLowerCase().includes(text))) return false
    return true
  }
}

/**
 * Events of a token and its descendants, read in log order: a session whose start names the token
 * among its tokens (every ancestor's id is there) belongs, and so does every later event of it;
 * token records match their own id and, for a delegation, the parent's.
 */
function tokenFilter(token: string): (e: StoredAuditEvent) => boolean {
  const sessions = new Set<string>()
  const tokens = new Set<string>([token])
  return (e) => {
    if (e.type === 'session.start' && Array.isArray(e.tokens) && e.tokens.includes(token) && typeof e.session === 'string') {
      sessions.add(e.session)
      return true
    }
    if (typeof e.session === 'string' && sessions.has(e.session)) return true
    const t = e.token as { id?: unknown; parent?: unknown } | undefined
    if (t && typeof t === 'object' && typeof t.id === 'string') {
      if (tokens.has(t.id)) return true
      if (typeof t.parent === 'string' && tokens.has(t.parent)) {
        tokens.add(t.id)
        return true
      }
    }
    if (Array.isArray(e.tokens) && e.tokens.includes(token)) return true
    return false
  }
}

/** Segment stamps are to the second and events may be queued briefly before they are written. */
const STAMP_SLACK_MS = 5000

function stampTime(name: string): number {
  const m = /-(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z\.jsonl$/.exec(name)
  return m ? Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])) : 0
}

/**
 * Reads events from the segment files, oldest first. Works with or without a running server. The
 * segment series of every worker (`serve --workers N`: `w<N>/` under `dir`) are read too and
 * merged by time, each keeping its own order.
 */
export function readAuditEvents(dir: string, query: AuditQuery, trust: SegmentTrust): StoredAuditEvent[] {
  const match = matcher(query)
  const recovered: Recovered = new Map()
  // Without a token filter (which must see every event in order) only matches are kept.
  const keep = query.token === undefined ? match : () => true
  const series = seriesDirs(dir).map((d) => readSeries(d, query, trust, recovered, keep))
  const all = series.length === 1 ? (series[0] as StoredAuditEvent[]) : mergeByTime(series)
  const byToken = query.token !== undefined ? tokenFilter(query.token) : null
  const out: StoredAuditEvent[] = []
  for (const ev of all) {
    // The token filter sees every event (a session's start makes its later events match), even
    // ones the other filters leave out.
    const ofToken = byToken === null || byToken(ev)
    if (ofToken && match(ev)) out.push(ev)
  }
  const marked = recovered.size === 0 ? out : out.map((e) => (isUnattested(e.id, recovered) ? { ...e, unattested: true } : e))
  return query.limit !== undefined ? marked.slice(-query.limit) : marked
}

/**
 * Lists merged by `time`, each list's own order kept (a list is one log, in the order written: a
 * result queued before a later statement's write stays after its statement).
 */
export function mergeByTime<T extends { readonly time: string }>(lists: readonly (readonly T[])[]): T[] {
  const at = lists.map(() => 0)
  const out: T[] = []
  for (;;) {
    let best = -1
    for (let i = 0; i < lists.length; i++) {
      const e = (lists[i] as readonly T[])[at[i] as number]
      if (e === undefined) continue
      if (best < 0 || e.time < ((lists[best] as readonly T[])[at[best] as number] as T).time) best = i
    }
    if (best < 0) return out
    out.push((lists[best] as readonly T[])[at[best] as number] as T)
    at[best] = (at[best] as number) + 1
  }
}

/** One series' events that may match (the cheap filters: time window of segments, raw text). */
function readSeries(
  dir: string,
  query: AuditQuery,
  trust: SegmentTrust,
  recovered: Recovered,
  keep: (e: StoredAuditEvent) => boolean,
): StoredAuditEvent[] {
  const { segments } = trust.segments(dir)
  const out: StoredAuditEvent[] = []
  const since = query.since !== undefined ? Date.parse(query.since) : Number.NaN
  const until = query.until !== undefined ? Date.parse(query.until) : Number.NaN
  const files: string[] = []
  for (let i = 0; i < segments.length; i++) {
    const seg = segments[i] as (typeof segments)[number]
    // Skip segments that cannot hold a match: written wholly before `since` or begun after `until`.
    const next = segments[i + 1]
    // (Not with a token: its sessions may have started before `since`.)
    if (!Number.isNaN(since) && query.token === undefined && next && stampTime(next.name) + STAMP_SLACK_MS < since) continue
    if (!Number.isNaN(until) && stampTime(seg.name) - STAMP_SLACK_MS > until) break
    files.push(seg.path)
  }
  // A raw-text pre-filter before JSON.parse, for values JSON writes unescaped.
  const candidate = query.session ?? query.principal
  const needle = candidate !== undefined && /^[\w:.@+/-]+$/.test(candidate) ? candidate : undefined
  for (const f of files) {
    let text: string
    try {
      text = readFileSync(f, 'utf8')
    } catch {
      continue // pruned while we listed
    }
    for (const line of text.split('\n')) {
      if (line.includes('"reason":"recovery"') && line.includes('"unattested":{')) noteRecovery(line, recovered)
      if (line === '' || (needle !== undefined && !line.includes(needle))) continue
      let ev: StoredAuditEvent
      try {
        ev = JSON.parse(line) as StoredAuditEvent
      } catch {
        continue // a torn line; `audit verify` reports it
      }
      if (keep(ev)) out.push(ev)
    }
  }
  return out
}

/** Ranges of events a crash left unsigned, by log id: what recovery checkpoints name. */
type Recovered = Map<string, { from: number; to: number }[]>

function splitId(id: unknown): { log: string; n: number } | null {
  if (typeof id !== 'string') return null
  const dash = id.lastIndexOf('-')
  const n = Number(id.slice(dash + 1))
  return dash > 0 && Number.isInteger(n) ? { log: id.slice(0, dash), n } : null
}

function noteRecovery(line: string, recovered: Recovered): void {
  try {
    const ev = JSON.parse(line) as { unattested?: { from?: unknown; to?: unknown } }
    const from = splitId(ev.unattested?.from)
    const to = splitId(ev.unattested?.to)
    if (!from || !to || from.log !== to.log) return
    const list = recovered.get(from.log) ?? []
    list.push({ from: from.n, to: to.n })
    recovered.set(from.log, list)
  } catch {
    /* a torn line; `audit verify` reports it */
  }
}

function isUnattested(id: string, recovered: Recovered): boolean {
  const p = splitId(id)
  return p !== null && (recovered.get(p.log) ?? []).some((r) => p.n >= r.from && p.n <= r.to)
}

/**
 * The events among `events` that a crash left unattested (marked by the reader): their count and
 * the first and last id, for a warning; null if there are none.
 */
export function unattestedSummary(events: readonly StoredAuditEvent[]): { count: number; from: string; to: string } | null {
  const marked = events.filter((e) => (e as { unattested?: unknown }).unattested === true)
  const first = marked[0]
  const last = marked.at(-1)
  return first && last ? { count: marked.length, from: first.id, to: last.id } : null
}
