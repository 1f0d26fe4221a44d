// Prometheus metrics (prom-client), served at /metrics on the API listener. The data path only
// ever bumps a number in an object it already holds: counters are `Cell`s handed out once per
// label combination and kept by the caller (or found in a small map without building a key), and
// timings go into fixed buckets of a Float64Array. prom-client reads them when scraped; its own
// `inc`/`observe` build a label hash and an object per call, which a per-statement path avoids.
// Everything else (sessions open, audit backlog, approvals pending, sinks, policy) is read from the
// component that owns it at scrape time, so it costs nothing between scrapes.

import { createRequire } from 'node:module'
import type { Counter, Gauge, Histogram, Registry } from 'prom-client'

/** Loaded when a gateway starts, not by every CLI command that imports the engine (it costs
 * hundreds of milliseconds of start-up). */
const load = (): typeof import('prom-client') => createRequire(import.meta.url)('prom-client') as typeof import('prom-client')

/** Prometheus text format 0.0.4 (prom-client's `Registry.PROMETHEUS_CONTENT_TYPE`). */
export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'

/** One counter value for one label combination. */
export class Cell {
  n = 0
}

/** Seconds, from 50 µs (a cached decision) to 2.5 s (a stalled disk). */
export const TIMING_BUCKETS: readonly number[] = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
]

/** A histogram the data path observes into without allocating; prom-client formats it. */
export class Timing {
  /** Per bucket (not cumulative); the last slot is +Inf. */
  readonly counts: Float64Array
  sum = 0
  count = 0

  constructor(readonly bounds: readonly number[] = TIMING_BUCKETS) {
    this.counts = new Float64Array(bounds.length + 1)
  }

  observe(seconds: number): void {
    const b = this.bounds
    let i = 0
    while (i < b.length && seconds > (b[i] as number)) i++
    this.counts[i] = (this.counts[i] as number) + 1
    this.sum += seconds
    this.count++
  }

  /** Milliseconds between two `performance.now()` readings, observed as seconds. */
  since(startMs: number): void {
    this.observe((performance.now() - startMs) / 1000)
  }
}

interface BucketValue {
  readonly labels: Record<string, string | number>
  readonly value: number
  readonly metricName: string
}

/**
 * A prom-client Histogram whose values come from a `Timing`. prom-client's registry asks a
 * histogram for `getForPromString()` (and `get()` goes through it), so answering that from the
 * Timing's buckets is all it takes for the text format and the JSON form alike.
 */
function timingHistogram(prom: typeof import('prom-client'), name: string, help: string, timing: Timing, registry: Registry): Histogram {
  class TimingHistogram extends prom.Histogram {
    async getForPromString(): Promise<{ name: string; help: string; type: string; values: BucketValue[]; aggregator: string }> {
      const values: BucketValue[] = []
      let acc = 0
      timing.bounds.forEach((le, i) => {
        acc += timing.counts[i] as number
        values.push({ labels: { le }, value: acc, metricName: `${name}_bucket` })
      })
      values.push({ labels: { le: '+Inf' }, value: timing.count, metricName: `${name}_bucket` })
      values.push({ labels: {}, value: timing.sum, metricName: `${name}_sum` })
      values.push({ labels: {}, value: timing.count, metricName: `${name}_count` })
      return { name, help, type: 'histogram', values, aggregator: 'sum' }
    }
  }
  return new TimingHistogram({ name, help, buckets: [...timing.bounds], registers: [registry] })
}

/** Decisions as the audit log records them; anything else is counted as `other`. */
const DECISIONS = ['allow', 'deny', 'hold'] as const
/** Actions come from the classifiers' fixed vocabulary; a cap keeps a buggy plugin from growing it. */
const MAX_ACTIONS = 64

/** Where scrape-time values come from (the gateway wires them after it has started its parts). */
export interface MetricSources {
  sessionsOpen(): ReadonlyMap<string, number>
  auditBacklog(): number
  sinks(): Promise<readonly { readonly name: string; readonly failures: number; readonly behindBytes: number }[]>
  approvalsPending(): number
  policy(): { readonly reloads: number; readonly reloadFailures: number; readonly lastReloadFailed: boolean }
}

export class Metrics {
  readonly registry: Registry
  /** Time of each policy evaluation (every hop of the chain), the decisions reused by shape aside. */
  readonly decisionTime = new Timing()
  /** Time of each write of audit events (serialize, hash-chain, write(2)). */
  readonly auditAppendTime = new Timing()
  /** Time of each fdatasync of the audit segment (`fsync: always` waits for it; `batched` does not). */
  readonly auditSyncTime = new Timing()
  private readonly commands = new Map<string, Cell[]>()
  private readonly opened = new Map<string, Cell>()
  private readonly refused = new Map<string, Cell>()
  private sources: MetricSources | null = null

  constructor() {
    const prom = load()
    this.registry = new prom.Registry()
    prom.collectDefaultMetrics({ register: this.registry, prefix: 'gatehouse_' })
    const self = this
    timingHistogram(
      prom,
      'gatehouse_decision_seconds',
      'Time to evaluate a decision (all hops of the chain).',
      this.decisionTime,
      this.registry,
    )
    timingHistogram(
      prom,
      'gatehouse_audit_append_seconds',
      'Time to write audit events before the work they record goes ahead (one write per batch).',
      this.auditAppendTime,
      this.registry,
    )
    timingHistogram(prom, 'gatehouse_audit_sync_seconds', 'Time of each fdatasync of the audit log.', this.auditSyncTime, this.registry)
    new prom.Counter({
      name: 'gatehouse_commands_total',
      help: 'Commands decided and audited (SQL statements, SSH execs and file operations, MCP calls), by action and decision.',
      labelNames: ['action', 'decision'],
      registers: [this.registry],
      collect(this: Counter<'action' | 'decision'>) {
        this.reset()
        for (const [action, cells] of self.commands) {
          cells.forEach((c, i) => {
            if (c.n > 0) this.inc({ action, decision: DECISIONS[i] ?? 'other' }, c.n)
          })
        }
      },
    })
    new prom.Counter({
      name: 'gatehouse_sessions_opened_total',
      help: 'Sessions admitted, by protocol.',
      labelNames: ['protocol'],
      registers: [this.registry],
      collect(this: Counter<'protocol'>) {
        this.reset()
        for (const [protocol, c] of self.opened) this.inc({ protocol }, c.n)
      },
    })
    new prom.Counter({
      name: 'gatehouse_sessions_refused_total',
      help: 'Sessions refused before they opened (authentication, unknown connection, connect denied), by protocol.',
      labelNames: ['protocol'],
      registers: [this.registry],
      collect(this: Counter<'protocol'>) {
        this.reset()
        for (const [protocol, c] of self.refused) this.inc({ protocol }, c.n)
      },
    })
    new prom.Gauge({
      name: 'gatehouse_sessions_open',
      help: 'Sessions open now, by protocol.',
      labelNames: ['protocol'],
      registers: [this.registry],
      collect(this: Gauge<'protocol'>) {
        this.reset()
        // Every protocol that has opened a session shows, at 0 once they have all ended.
        for (const protocol of self.opened.keys()) this.set({ protocol }, 0)
        for (const [protocol, n] of self.sources?.sessionsOpen() ?? []) this.set({ protocol }, n)
      },
    })
    new prom.Gauge({
      name: 'gatehouse_audit_backlog_events',
      help: 'Audit events accepted but not yet written, or written and waiting for their fdatasync.',
      registers: [this.registry],
      collect(this: Gauge) {
        this.set(self.sources?.auditBacklog() ?? 0)
      },
    })
    let sinkSnapshot: Promise<readonly { name: string; failures: number; behindBytes: number }[]> | null = null
    // Both sink metrics read one snapshot per scrape (bytesBehind stats the segment files).
    const sinks = (): Promise<readonly { name: string; failures: number; behindBytes: number }[]> => {
      if (!sinkSnapshot) {
        sinkSnapshot = self.sources?.sinks() ?? Promise.resolve([])
        setImmediate(() => {
          sinkSnapshot = null
        })
      }
      return sinkSnapshot
    }
    new prom.Counter({
      name: 'gatehouse_audit_sink_failures_total',
      help: 'Failed deliveries to an audit sink (each is retried), by sink.',
      labelNames: ['sink'],
      registers: [this.registry],
      async collect(this: Counter<'sink'>) {
        const list = await sinks()
        this.reset()
        for (const s of list) this.inc({ sink: s.name }, s.failures)
      },
    })
    new prom.Gauge({
      name: 'gatehouse_audit_sink_behind_bytes',
      help: 'Bytes of the audit log an audit sink has yet to deliver, by sink.',
      labelNames: ['sink'],
      registers: [this.registry],
      async collect(this: Gauge<'sink'>) {
        const list = await sinks()
        this.reset()
        for (const s of list) this.set({ sink: s.name }, s.behindBytes)
      },
    })
    new prom.Gauge({
      name: 'gatehouse_approvals_pending',
      help: 'Approval requests waiting for reviewers.',
      registers: [this.registry],
      collect(this: Gauge) {
        this.set(self.sources?.approvalsPending() ?? 0)
      },
    })
    new prom.Counter({
      name: 'gatehouse_policy_reloads_total',
      help: 'Policy reloads after a change to the source, by result (ok: the new bundle decides; failed: the last good one still does).',
      labelNames: ['result'],
      registers: [this.registry],
      collect(this: Counter<'result'>) {
        const p = self.sources?.policy()
        this.reset()
        this.inc({ result: 'ok' }, p?.reloads ?? 0)
        this.inc({ result: 'failed' }, p?.reloadFailures ?? 0)
      },
    })
    new prom.Gauge({
      name: 'gatehouse_policy_last_reload_failed',
      help: '1 while the last reload of the policy source failed (the previous bundle keeps deciding), else 0.',
      registers: [this.registry],
      collect(this: Gauge) {
        this.set(self.sources?.policy().lastReloadFailed ? 1 : 0)
      },
    })
  }

  /** The scrape-time readers; set once the gateway's parts exist. */
  attach(sources: MetricSources): void {
    this.sources = sources
  }

  /** Counts one command. No allocation once the action has been seen. */
  command(action: string, decision: string): void {
    let cells = this.commands.get(action)
    if (cells === undefined) {
      if (this.commands.size >= MAX_ACTIONS) {
        cells = this.commands.get('other')
        if (cells === undefined) {
          cells = newCells()
          this.commands.set('other', cells)
        }
      } else {
        cells = newCells()
        this.commands.set(action, cells)
      }
    }
    const i = decision === 'allow' ? 0 : decision === 'deny' ? 1 : decision === 'hold' ? 2 : 3
    ;(cells[i] as Cell).n++
  }

  /** The counter cell of sessions opened over `protocol` (kept by the caller). */
  sessionOpened(protocol: string): Cell {
    return cellFor(this.opened, protocol)
  }

  sessionRefused(protocol: string): Cell {
    return cellFor(this.refused, protocol)
  }

  /** The exposition text (Prometheus text format 0.0.4). */
  text(): Promise<string> {
    return this.registry.metrics()
  }
}

function newCells(): Cell[] {
  return [new Cell(), new Cell(), new Cell(), new Cell()]
}

function cellFor(map: Map<string, Cell>, key: string): Cell {
  let c = map.get(key)
  if (c === undefined) {
    c = new Cell()
    map.set(key, c)
  }
  return c
}
