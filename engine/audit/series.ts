// The audit directory as one log made of segment series: its own (a single-process gateway's) and,
// under `serve --workers N`, one per worker in `w<N>/`. Each series is a hash chain with its own
// log id, its own signed headers and checkpoints, verified on its own; readers show the series
// together, merged by event time (segments.ts `seriesDirs` lists them, query.ts merges searches).

import { basename, dirname, join, relative } from 'node:path'
import { mergeByTime } from './query.js'
import { listSegments, seriesDirs } from './segments.js'
import { AuditTail, type LogPosition, logEdge, positionAt } from './tail.js'
import type { SegmentTrust } from './trusted.js'
import { type VerifyOptions, type VerifyResult, verifyAuditLog } from './verify.js'

/** The audit directory a series belongs to: `audit/` for `audit/w2/`, itself otherwise. */
export function auditRootOf(dir: string): string {
  return /^w[1-9]\d*$/.test(basename(dir)) ? dirname(dir) : dir
}

/** Files readers left out, in every series, named relative to the audit directory (`w2/…`). */
export function rejectedInAll(root: string, trust: SegmentTrust): { name: string; why: string }[] {
  return seriesDirs(root).flatMap((d) =>
    trust.segments(d).rejected.map((r) => ({ name: d === root ? r.name : join(relative(root, d), r.name), why: r.why })),
  )
}

export interface SeriesVerifyResult {
  /** Every series verified. */
  readonly ok: boolean
  /** Events in all series. */
  readonly events: number
  /** One result per series, `name` relative to the audit directory (`.` for its own). */
  readonly series: readonly (VerifyResult & { readonly name: string; readonly dir: string })[]
}

/**
 * Verifies each series that holds anything (a segment, or a file that is not one) on its own; a
 * directory that holds nothing at all is verified as one empty log (which fails: no segments).
 */
export function verifyAllSeries(root: string, opts: VerifyOptions): SeriesVerifyResult {
  const held = seriesDirs(root).filter((d) => {
    const l = listSegments(d)
    return l.segments.length > 0 || l.foreign.length > 0
  })
  const seen = new Map<string, string>()
  const series = (held.length > 0 ? held : [root]).map((dir) => {
    const r = verifyAuditLog(dir, opts)
    const name = dir === root ? '.' : relative(root, dir)
    // Every series is a log of its own, begun with a log id of its own: a second series with an
    // id already seen is a copy of a log, and would show each of its events as having run twice.
    const first = r.log === null ? undefined : seen.get(r.log)
    if (r.log !== null && first === undefined) seen.set(r.log, name)
    if (first === undefined) return { ...r, name, dir }
    return {
      ...r,
      ok: false,
      problem: {
        segment: null,
        line: null,
        id: null,
        expected: null,
        message: `series ${name} has the log id of series ${first} (${r.log}): it is a copy of that series, not a log of its own`,
      },
      name,
      dir,
    }
  })
  return { ok: series.every((s) => s.ok), events: series.reduce((n, s) => n + s.events, 0), series }
}

const TIME_RE = /"time":"([^"]+)"/

function lineTime(line: Buffer): string {
  return TIME_RE.exec(line.toString('latin1', 0, Math.min(line.length, 300)))?.[1] ?? ''
}

/**
 * The log's lines verbatim, every series from `since` (or its start), merged by time; with
 * `follow`, then what is written next (each batch merged by time; a worker's series created
 * after the export began is not followed). `wake` returns a function that wakes the tails early.
 */
export async function* exportAllSeries(
  root: string,
  opts: { readonly since?: string; readonly follow: boolean; readonly trust: SegmentTrust; readonly signal?: AbortSignal },
  onTails?: (wake: () => void) => void,
): AsyncGenerator<Buffer[]> {
  const dirs = seriesDirs(root)
  const tails: AuditTail[] = []
  for (const d of dirs) {
    const from: LogPosition = opts.since ? await positionAt(d, opts.since, opts.trust) : await logEdge(d, 'start')
    tails.push(
      new AuditTail(d, from, { follow: opts.follow, trust: opts.trust, ...(opts.signal ? { signal: opts.signal } : {}), pollMs: 250 }),
    )
  }
  onTails?.(() => {
    for (const t of tails) t.wake()
  })
  try {
    if (tails.length === 1) {
      const t = tails[0] as AuditTail
      for (;;) {
        const b = await t.next(1000, 1024 * 1024)
        if (!b) return
        yield b.lines
      }
    }
    // Everything there is now, merged; then, when following, whatever each batch brings.
    const now = tails.map((t) => new AuditTail(t.dir, t.position, { follow: false, trust: opts.trust }))
    const lists: { time: string; line: Buffer }[][] = []
    for (let i = 0; i < now.length; i++) {
      const list: { time: string; line: Buffer }[] = []
      const t = now[i] as AuditTail
      for (;;) {
        const b = await t.next(1000, 1024 * 1024)
        if (!b) break
        for (const line of b.lines) list.push({ time: lineTime(line), line })
      }
      lists.push(list)
      await t.close()
      // The following tail goes on from where this one stopped.
      tails[i] = new AuditTail(t.dir, t.position, {
        follow: opts.follow,
        trust: opts.trust,
        ...(opts.signal ? { signal: opts.signal } : {}),
        pollMs: 250,
      })
    }
    const merged = mergeByTime(lists).map((x) => x.line)
    for (let i = 0; i < merged.length; i += 1000) yield merged.slice(i, i + 1000)
    if (!opts.follow) return
    // Each series' lines as they are written: whichever series has some first.
    type Next = { readonly i: number; readonly lines: Buffer[] | null }
    const read = (i: number): Promise<Next> => (tails[i] as AuditTail).next(1000, 1024 * 1024).then((b) => ({ i, lines: b?.lines ?? null }))
    const pending = new Map<number, Promise<Next>>(tails.map((_, i) => [i, read(i)]))
    while (pending.size > 0) {
      const got = await Promise.race(pending.values())
      pending.delete(got.i)
      if (got.lines === null) continue
      yield got.lines
      pending.set(got.i, read(got.i))
    }
  } finally {
    await Promise.allSettled(tails.map((t) => t.close()))
  }
}
