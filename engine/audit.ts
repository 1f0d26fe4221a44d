// The audit log: append-only JSON Lines segment files under <data_dir>/audit/.
//
// Durability contract (DESIGN.md promise 6): `append` returns only once the event is in the OS
// (a completed write(2) to the segment file), so it survives `kill -9` of the gateway; the proxy
// forwards work only after that. Disk syncs are batched on a timer (`fsync: batched`) or done per
// append (`fsync: always`). An event that cannot be written rejects the promise, and the caller
// refuses the work: the gateway fails closed.
//
// `appendDeferred` is for events that follow work already recorded (a statement's result): they
// are written with the next append or at the end of the current I/O turn, saving one write(2)
// per statement on the hot path.

import {
  closeSync,
  fdatasync,
  fdatasyncSync,
  fstatSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  writeSync,
} from 'node:fs'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { GatehouseError } from './errors.js'
import type { AuditEvent, StoredAuditEvent } from './types.js'
import type { FsyncMode } from './config.js'

/** Segments roll over past this size so no single file grows without bound. */
const SEGMENT_MAX_BYTES = 64 * 1024 * 1024

export interface AuditQuery {
  readonly session?: string
  readonly type?: string
  readonly limit?: number
}

export type AuditListener = (event: StoredAuditEvent) => void

export class AuditLog {
  private fd = -1
  private size = 0
  private seq = 0
  private readonly idPrefix = randomBytes(4).toString('hex')
  private dirty = false
  private syncing = false
  private timer: NodeJS.Timeout | null = null
  private deferred: string[] = []
  private deferredScheduled = false
  private listeners: AuditListener[] = []
  private closed = false

  constructor(
    readonly dir: string,
    private readonly fsyncMode: FsyncMode,
    private readonly fsyncIntervalMs: number,
  ) {}

  open(): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 })
    this.openSegment()
    if (this.fsyncMode === 'batched') {
      this.timer = setInterval(() => this.syncSoon(), this.fsyncIntervalMs)
      this.timer.unref()
    }
  }

  onEvent(listener: AuditListener): void {
    this.listeners.push(listener)
  }

  private openSegment(): void {
    const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*$/, '')
    const name = `${stamp}-${process.pid}-${randomBytes(3).toString('hex')}.jsonl`
    const file = join(this.dir, name)
    try {
      this.fd = openSync(file, 'a', 0o600)
      this.size = fstatSync(this.fd).size
    } catch (err) {
      throw new GatehouseError('GH_ERR_AUDIT', `${file}: cannot open the audit segment`, { cause: err })
    }
  }

  private stamp(event: AuditEvent): string {
    const stored = {
      id: `${this.idPrefix}-${(++this.seq).toString(36)}`,
      time: new Date().toISOString(),
      ...event,
    } as StoredAuditEvent
    for (const l of this.listeners) l(stored)
    return `${JSON.stringify(stored)}\n`
  }

  /** Resolves when the event is in the OS (and on disk with `fsync: always`); rejects otherwise. */
  append(event: AuditEvent): Promise<void> {
    try {
      this.appendSync(event)
      return Promise.resolve()
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /** Synchronous form of `append` for the hot path: throws GH_ERR_AUDIT when not durable. */
  appendSync(event: AuditEvent): void {
    if (this.closed) throw new GatehouseError('GH_ERR_AUDIT', 'the audit log is closed')
    let text = this.stamp(event)
    if (this.deferred.length > 0) {
      text = this.deferred.join('') + text
      this.deferred = []
    }
    this.writeText(text)
    if (this.fsyncMode === 'always') {
      try {
        fdatasyncSync(this.fd)
      } catch (err) {
        throw new GatehouseError('GH_ERR_AUDIT', 'the audit segment could not be synced to disk', { cause: err })
      }
    }
  }

  /** Queues an event that needs no durability before work proceeds (it describes finished work). */
  appendDeferred(event: AuditEvent): void {
    if (this.closed) return
    this.deferred.push(this.stamp(event))
    if (!this.deferredScheduled) {
      this.deferredScheduled = true
      setImmediate(this.flushDeferred)
    }
  }

  private readonly flushDeferred = (): void => {
    this.deferredScheduled = false
    if (this.deferred.length === 0 || this.closed) return
    const text = this.deferred.join('')
    this.deferred = []
    try {
      this.writeText(text)
    } catch {
      // The work these events describe already ran and was recorded by its `statement` event;
      // the next durable append will fail the same way and refuse new work.
    }
  }

  private writeText(text: string): void {
    const buf = Buffer.from(text, 'utf8')
    if (this.size + buf.length > SEGMENT_MAX_BYTES && this.size > 0) {
      this.sealSegment()
      this.openSegment()
    }
    let written = 0
    try {
      written = writeSync(this.fd, buf, 0, buf.length)
    } catch (err) {
      throw new GatehouseError('GH_ERR_AUDIT', `audit write failed (${(err as NodeJS.ErrnoException).code ?? 'error'})`, { cause: err })
    } finally {
      if (written !== buf.length) {
        // A short write leaves a torn line; cut it off so the file stays whole lines.
        try {
          ftruncateSync(this.fd, this.size)
        } catch {
          /* the write error below is what matters */
        }
      }
    }
    if (written !== buf.length) throw new GatehouseError('GH_ERR_AUDIT', 'audit write was cut short (disk full?)')
    this.size += written
    this.dirty = true
  }

  private sealSegment(): void {
    try {
      fdatasyncSync(this.fd)
      closeSync(this.fd)
    } catch {
      /* a failing disk shows up on the next write */
    }
  }

  private syncSoon(): void {
    if (!this.dirty || this.syncing || this.fd < 0) return
    this.dirty = false
    this.syncing = true
    fdatasync(this.fd, () => {
      this.syncing = false
    })
  }

  /** Writes what is queued and syncs to disk. Used at shutdown. */
  flush(): void {
    this.flushDeferred()
    if (this.fd >= 0) {
      try {
        fdatasyncSync(this.fd)
      } catch {
        /* reported by the caller's last append */
      }
    }
  }

  close(): void {
    if (this.closed) return
    this.flush()
    this.closed = true
    if (this.timer) clearInterval(this.timer)
    if (this.fd >= 0) closeSync(this.fd)
    this.fd = -1
  }
}

/** Reads events from the segment files, oldest first. Works with or without a running server. */
export function readAuditEvents(dir: string, query: AuditQuery = {}): StoredAuditEvent[] {
  let files: string[]
  try {
    files = readdirSync(dir)
      .filter((f) => f.endsWith('.jsonl'))
      .sort()
  } catch {
    return []
  }
  const out: StoredAuditEvent[] = []
  for (const f of files) {
    const text = readFileSync(join(dir, f), 'utf8')
    for (const line of text.split('\n')) {
      if (line === '') continue
      let ev: StoredAuditEvent
      try {
        ev = JSON.parse(line) as StoredAuditEvent
      } catch {
        continue // a torn tail after a crash; `audit verify` (issue 7) reports it
      }
      if (query.session !== undefined && ev.session !== query.session) continue
      if (query.type !== undefined && ev.type !== query.type) continue
      out.push(ev)
    }
  }
  // Segments from different processes can interleave by name only to the second: sort by time.
  out.sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : 0))
  return query.limit !== undefined ? out.slice(-query.limit) : out
}
