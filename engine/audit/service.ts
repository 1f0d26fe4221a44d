// What runs beside the audit log in a gateway: the sinks, the session recorder and retention.
// The gateway opens the log, starts these, and stops them after the log's shutdown checkpoint is
// written (so the sinks get it too).

import type { Logger } from 'pino'
import type { AuditLog } from './writer.js'
import { Recorder, recordingsDir } from './recording.js'
import type { AuditConfig } from './config.js'
import { bytesBehind, type SinkRunner, type SinkStatus, startSinks } from './sinks.js'

const RETENTION_EVERY_MS = 3600_000
/** At shutdown, sinks get this long to send what is left (the shutdown checkpoint included). */
const SINK_DRAIN_MS = 2000

export interface AuditServicesOptions {
  readonly audit: AuditLog
  readonly config: AuditConfig
  readonly dataDir: string
  /** The folder relative secret-reference paths are resolved against (the config file's). */
  readonly baseDir: string
  readonly log: Logger
  /** The worker of `serve --workers N` whose segment series this follows; null: a single process. */
  readonly worker?: number | null
}

export class AuditServices {
  private retentionTimer: NodeJS.Timeout | null = null
  private stopped = false

  private constructor(
    readonly audit: AuditLog,
    readonly sinks: readonly SinkRunner[],
    readonly recorder: Recorder | null,
    private readonly config: AuditConfig,
    private readonly log: Logger,
  ) {}

  static start(o: AuditServicesOptions): AuditServices {
    const recorder = o.config.recordings.enabled ? new Recorder(recordingsDir(o.dataDir), o.config.recordings, o.log) : null
    recorder?.attach(o.audit)
    const sinks = startSinks(
      o.config.sinks,
      o.audit.dir,
      o.dataDir,
      o.baseDir,
      o.log,
      o.audit.trust,
      o.audit.recovery?.unattested ?? null,
      o.worker ?? null,
    )
    if (sinks.length > 0) {
      o.audit.onWrite(() => {
        for (const s of sinks) s.wake()
      })
    }
    const svc = new AuditServices(o.audit, sinks, recorder, o.config, o.log)
    if (o.config.retentionSeconds !== null) {
      svc.applyRetention()
      svc.retentionTimer = setInterval(() => svc.applyRetention(), RETENTION_EVERY_MS)
      svc.retentionTimer.unref()
    }
    return svc
  }

  /** Prunes whole audit segments older than `audit.retention`. */
  applyRetention(now = Date.now()): string[] {
    if (this.config.retentionSeconds === null || this.stopped) return []
    const before = new Date(now - this.config.retentionSeconds * 1000).toISOString()
    try {
      const removed = this.audit.prune(before)
      if (removed.length > 0) this.log.info({ segments: removed.length, before }, 'audit segments removed by retention')
      return removed
    } catch (err) {
      this.log.error({ err: String(err) }, 'audit retention failed')
      return []
    }
  }

  async sinkStatus(): Promise<(SinkStatus & { behind_bytes: number })[]> {
    return Promise.all(this.sinks.map(async (s) => ({ ...s.state, behind_bytes: await bytesBehind(this.audit.dir, s.state.position) })))
  }

  /** Call after `audit.close()`: sinks get a moment to send the shutdown checkpoint. */
  async stop(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    if (this.retentionTimer) clearInterval(this.retentionTimer)
    await Promise.allSettled(this.sinks.map((s) => s.stop(SINK_DRAIN_MS)))
    await this.recorder?.close()
  }
}
