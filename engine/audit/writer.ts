// The audit log: a hash chain of JSON Lines in numbered segment files under <data_dir>/audit/
// (the line format and the chain are defined in engine/audit/format.ts).
//
// Durability contract (docs/architecture.md, promise 6): `append` returns only once the event is in the OS
// (one completed write(2) to the segment file), so it survives `kill -9` of the gateway; the proxy
// forwards work only after that. With `fsync: batched` (the default) the disk is synced on a timer;
// with `fsync: always`, `append` resolves only after an fdatasync that began after the event's
// write: concurrent sessions share one sync (group commit). An event that cannot be written
// rejects the promise and the caller refuses the work: the gateway fails closed.
//
// `appendGrouped` is `append` for the hot path of many sessions: the event is written at the end of
// the current I/O turn, together with every other session's events of that turn, in one write(2);
// its promise resolves after that write, and the caller forwards the work only then.
//
// `appendDeferred` is for events that follow work already recorded (a statement's result): they
// are written with the next append, or within 20 ms on an idle session, so a statement costs
// one write(2) on the hot path.
//
// The chain is signed: every segment starts with a signed header, and a signed checkpoint is
// written at least every second while events flow, when a segment is sealed and at shutdown.
// Opening the log after a crash seals the last segment with a signed `recovery` checkpoint, which
// also seals a torn partial last line, before a new segment is started. That checkpoint names the
// events written after the last signed record as `unattested`: anyone who could write the files
// while the gateway was down could have rewritten them (rehashing needs no key), so the seal says
// where they are instead of vouching for them, and `audit verify` reports them.

import { randomBytes } from 'node:crypto'
import { closeSync, fdatasyncSync, ftruncateSync, mkdirSync, openSync, statSync, unlinkSync, writeSync } from 'node:fs'
import { dirname, join } from 'node:path'
import type { Config } from '../config/config.js'
import type { FsyncMode } from './config.js'
import { GatehouseError } from '../errors.js'
import { encodeBatch, LargeScratch } from './batch.js'
import { isoNow } from './clock.js'
import { CHECKPOINT_TYPE, type CheckpointReason, eventId, GENESIS_HASH, PRUNE_TYPE, sha256Hex, type UnattestedRange } from './format.js'
import { errCode, GroupCommit } from './group-commit.js'
import { type AuditSigner, loadOrCreateAuditKey, resolveAuditSigner } from './keys.js'
import { checkpointRecord, internalEvent, type Pending, segmentRecord } from './records.js'
import { acquireWriterLock, prunableSegments, segmentName, syncDir } from './segments.js'
import { findChainEnd, type RecoveryReport } from './recovery.js'
import { SegmentTrust } from './trusted.js'
import type { AuditEvent } from '../types.js'
import type { Timing } from '../server/metrics.js'

export { isoNow } from './clock.js'
export { type AuditQuery, readAuditEvents } from './query.js'
export type { RecoveryReport } from './recovery.js'

/** Segments roll over past this size so no single file grows without bound. */
export const SEGMENT_MAX_BYTES = 64 * 1024 * 1024
/** No event stays unsigned longer than this while the gateway runs (a timer signs a checkpoint). */
export const CHECKPOINT_INTERVAL_MS = 1000
/** Result events waiting for a write while the disk refuses writes; beyond this they are counted, not kept. */
const MAX_DEFERRED = 100_000
/** How long a result event may wait to share the next statement event's write. */
const DEFERRED_FLUSH_MS = 20

export interface AuditLogOptions {
  /** Where the audit key lives (default: `<dir>/../keys`, i.e. `<data_dir>/keys`). */
  readonly keysDir?: string
  /** The audit key, already resolved (`audit.signing_key`); overrides `keysDir`. */
  readonly signer?: AuditSigner
  readonly checkpointIntervalMs?: number
  readonly segmentMaxBytes?: number
  /** Told about problems that do not fail an append (a missed checkpoint, a recovery). */
  readonly onProblem?: (message: string, err?: unknown) => void
}

/** An event as written: its position, id, hash and the exact line (without the newline). */
export interface WrittenEvent {
  readonly n: number
  readonly id: string
  readonly h: string
  readonly time: string
  readonly event: AuditEvent
  /** The line's UTF-8 bytes as written: a view valid only during the listener's call (copy it to keep it). */
  readonly bytes: Buffer
}

export type AuditListener = (written: WrittenEvent) => void

const RESOLVED = Promise.resolve()

export class AuditLog {
  private fd = -1
  private segIndex = 0
  private segPath = ''
  private size = 0
  /** Position and hash of the last line written. */
  private n = 0
  private lastHash = GENESIS_HASH
  private logId = ''
  private lastCheckpointN = 0
  private signer: AuditSigner | null = null
  private segmentTrust: SegmentTrust | null = null
  private releaseLock: (() => void) | null = null
  /** Lines waiting for the next write: deferred events and grouped appends, in call order. */
  private deferred: Pending[] = []
  private deferredScheduled = false
  /** Grouped appends among `deferred` (each with its waiter). */
  private grouped = 0
  private groupScheduled = false
  private lostDeferred = 0
  private listeners: AuditListener[] = []
  private writeListeners: (() => void)[] = []
  private closed = false
  /** Set once open() has the lock and a segment: only then may anything be written. */
  private opened = false
  private syncTimer: NodeJS.Timeout | null = null
  private checkpointTimer: NodeJS.Timeout | null = null
  private readonly syncs: GroupCommit
  private readonly largeScratch = new LargeScratch()
  private readonly keysDir: string
  private readonly checkpointIntervalMs: number
  private readonly segmentMaxBytes: number
  private readonly onProblem: (message: string, err?: unknown) => void
  recovery: RecoveryReport | null = null
  /** Counters for tests and benchmarks: write(2) and fdatasync calls, events written. */
  readonly stats = { writes: 0, syncs: 0, events: 0 }
  /** Where write and fdatasync times go (engine/server/metrics.ts); null: not measured. */
  timings: { readonly append: Timing; readonly sync: Timing } | null = null

  constructor(
    readonly dir: string,
    readonly fsyncMode: FsyncMode,
    private readonly fsyncIntervalMs: number,
    opts: AuditLogOptions = {},
  ) {
    this.keysDir = opts.keysDir ?? join(dirname(dir), 'keys')
    this.signer = opts.signer ?? null
    this.checkpointIntervalMs = opts.checkpointIntervalMs ?? CHECKPOINT_INTERVAL_MS
    this.segmentMaxBytes = opts.segmentMaxBytes ?? SEGMENT_MAX_BYTES
    this.onProblem = opts.onProblem ?? (() => undefined)
    this.syncs = new GroupCommit(
      () => this.fd,
      this.stats,
      () => this.timings?.sync ?? null,
    )
  }

  /** Takes the writer lock, seals what a crash left, and starts a new segment. */
  open(): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 })
    this.signer ??= loadOrCreateAuditKey(this.keysDir)
    this.releaseLock = acquireWriterLock(this.dir)
    try {
      this.recover()
      this.openSegment(this.segIndex + 1)
    } catch (err) {
      this.releaseLock()
      throw err instanceof GatehouseError
        ? err
        : new GatehouseError('GH_ERR_AUDIT', `${this.dir}: cannot open the audit log`, { cause: err })
    }
    this.opened = true
    this.syncTimer = setInterval(() => this.syncs.start(), this.fsyncIntervalMs)
    this.syncTimer.unref()
    this.checkpointTimer = setInterval(() => this.checkpointIfNeeded(), this.checkpointIntervalMs)
    this.checkpointTimer.unref()
  }

  /** The log's id (fixed when the log was created) and the key that signs it. */
  get identity(): { log: string; kid: string; publicKey: import('node:crypto').KeyObject } {
    const s = this.signer as AuditSigner
    return { log: this.logId, kid: s.kid, publicKey: s.publicKey }
  }

  /** Which segment files readers may open: those with a header signed by this log's key. */
  get trust(): SegmentTrust {
    this.segmentTrust ??= new SegmentTrust([(this.signer as AuditSigner).publicKey])
    return this.segmentTrust
  }

  /** Position and hash of the last line written, and the segment being written. */
  get head(): { n: number; h: string; segment: number; file: string } {
    return { n: this.n, h: this.lastHash, segment: this.segIndex, file: this.segPath }
  }

  /** Called synchronously after each write for every event in it; keep it cheap (queue, return). */
  onEvent(listener: AuditListener): void {
    this.listeners.push(listener)
  }

  /** Called once after each successful write(2): a wake-up for readers that follow the log. */
  onWrite(listener: () => void): () => void {
    this.writeListeners.push(listener)
    return () => {
      this.writeListeners = this.writeListeners.filter((l) => l !== listener)
    }
  }

  // ---- appending ------------------------------------------------------------------------------

  /**
   * Resolves when the event is in the OS (`batched`) or on disk (`always`, group commit);
   * rejects with GH_ERR_AUDIT otherwise, and then the work must not go ahead.
   */
  append(event: AuditEvent): Promise<void> {
    try {
      this.writeNow(event)
    } catch (err) {
      return Promise.reject(err)
    }
    if (this.fsyncMode !== 'always') return RESOLVED
    return this.syncs.wait()
  }

  /** Synchronous `append`: with `always` it syncs alone (no group commit). Throws GH_ERR_AUDIT. */
  appendSync(event: AuditEvent): void {
    this.writeNow(event)
    if (this.fsyncMode === 'always') {
      try {
        this.stats.syncs++
        fdatasyncSync(this.fd)
      } catch (err) {
        throw new GatehouseError('GH_ERR_AUDIT', 'the audit segment could not be synced to disk', { cause: err })
      }
    }
  }

  /**
   * `append`, written at the end of this I/O turn with every other append of the turn in one
   * write(2) (after the deferred events queued before it, in call order). Resolves once that write
   * completed (with `always`, once an fdatasync that began after it did); rejects with GH_ERR_AUDIT
   * otherwise, and then the work must not go ahead. One write per turn instead of one per session's
   * statement, the same promise as `append`: nothing resolves before its line is in the OS.
   */
  appendGrouped(event: AuditEvent): Promise<void> {
    if (this.closed || !this.opened) return Promise.reject(new GatehouseError('GH_ERR_AUDIT', 'the audit log is closed'))
    return new Promise<void>((resolve, reject) => {
      this.deferred.push({ time: isoNow(), event, json: null, make: null, waiter: { resolve, reject } })
      this.grouped++
      if (!this.groupScheduled) {
        this.groupScheduled = true
        // The check phase follows the poll phase: every session whose data arrived in this turn
        // has queued its statement by then.
        setImmediate(this.flushGrouped)
      }
    })
  }

  private readonly flushGrouped = (): void => {
    this.groupScheduled = false
    if (this.grouped === 0) return
    try {
      this.writeBatch(null)
    } catch {
      // writeBatch rejected the grouped appends: their work is refused.
    }
  }

  /** Queues an event that needs no durability before work proceeds (it describes finished work). */
  appendDeferred(event: AuditEvent): void {
    if (this.closed) return
    if (this.deferred.length >= MAX_DEFERRED) {
      this.lostDeferred++
      return
    }
    this.deferred.push({ time: isoNow(), event, json: null, make: null })
    if (!this.deferredScheduled) {
      this.deferredScheduled = true
      // A short wait lets the next statement's durable append carry these in the same write(2)
      // (one write per statement instead of two on a busy session); an idle one still gets them
      // on disk within DEFERRED_FLUSH_MS. They describe work whose `statement` event is already durable.
      setTimeout(this.flushDeferred, DEFERRED_FLUSH_MS).unref()
    }
  }

  private writeNow(event: AuditEvent): void {
    if (this.closed || !this.opened) throw new GatehouseError('GH_ERR_AUDIT', 'the audit log is closed')
    this.writeBatch({ time: isoNow(), event, json: null, make: null })
  }

  private readonly flushDeferred = (): void => {
    this.deferredScheduled = false
    if (this.deferred.length === 0 || this.closed || !this.opened) return
    try {
      this.writeBatch(null)
    } catch {
      // The work these events describe already ran and was recorded by its `statement` event;
      // they stay queued, and the next durable append fails the same way and refuses new work.
    }
  }

  /**
   * Writes the queued deferred events and then `last` (if any) in one write(2). The chain
   * advances only when the write succeeded; on failure nothing changes and the queue is kept.
   */
  private writeBatch(last: Pending | null): void {
    try {
      this.writeQueued(last)
    } catch (err) {
      if (this.grouped > 0) this.failGrouped(err)
      throw err
    }
  }

  private writeQueued(last: Pending | null): void {
    if (this.fd < 0 || this.size >= this.segmentMaxBytes) this.rollOver()
    let items = this.deferred
    if (this.lostDeferred > 0) {
      const lost = this.lostDeferred
      items = [{ time: new Date().toISOString(), event: internalEvent('audit.lost', { events: lost }), json: null, make: null }, ...items]
    }
    if (last) items = items.length === 0 ? [last] : [...items, last]
    if (items.length === 0) return
    const t = this.timings
    if (t === null) this.writeItems(items)
    else {
      const started = performance.now()
      this.writeItems(items)
      t.append.since(started)
    }
    this.deferred = []
    this.lostDeferred = 0
    if (this.grouped > 0) this.settleGrouped(items)
  }

  /** The grouped appends among `items` were written: they resolve (with `always`, after the sync). */
  private settleGrouped(items: readonly Pending[]): void {
    this.grouped = 0
    if (this.fsyncMode === 'always') {
      const synced = this.syncs.wait()
      for (const p of items) if (p.waiter) synced.then(p.waiter.resolve, p.waiter.reject)
    } else for (const p of items) p.waiter?.resolve()
  }

  /** The write failed: grouped appends leave the queue (their work is refused) and reject. */
  private failGrouped(err: unknown): void {
    const e = err instanceof Error ? err : new GatehouseError('GH_ERR_AUDIT', 'audit write failed')
    this.deferred = this.deferred.filter((p) => {
      if (p.waiter === undefined) return true
      p.waiter.reject(e)
      return false
    })
    this.grouped = 0
  }

  /** Serializes, chains and writes `items`; throws (and changes nothing) when the write fails. */
  private writeItems(items: readonly Pending[]): void {
    const { buf, length, ends, hashes, n, prev, checkpointN } = encodeBatch(items, this.logId, this.n, this.lastHash, this.largeScratch)
    this.writeBytes(buf, length)
    const first = this.n
    this.stats.events += n - this.n
    this.n = n
    this.lastHash = prev
    if (checkpointN > 0) this.lastCheckpointN = checkpointN
    if (this.listeners.length > 0) {
      let start = 0
      for (let i = 0; i < items.length; i++) {
        const p = items[i] as Pending
        const end = ends[i] as number
        const w: WrittenEvent = {
          n: first + i + 1,
          id: eventId(this.logId, first + i + 1),
          h: hashes[i] as string,
          time: p.time,
          event: p.event,
          bytes: buf.subarray(start, end),
        }
        for (const l of this.listeners) l(w)
        start = end + 1
      }
    }
    for (const l of this.writeListeners) l()
  }

  /** Writes `lines`, each followed by a newline, in one write(2). */
  private writeLines(lines: readonly string[]): void {
    const buf = Buffer.from(lines.length === 0 ? '' : `${lines.join('\n')}\n`, 'utf8')
    this.writeBytes(buf, buf.length)
  }

  /** Writes `buf[0, length)` in one write(2); a short or failed write is cut off and throws. */
  private writeBytes(buf: Buffer, length: number): void {
    let written = 0
    try {
      written = writeSync(this.fd, buf, 0, length)
    } catch (err) {
      throw new GatehouseError('GH_ERR_AUDIT', `audit write failed (${errCode(err)})`, { cause: err })
    } finally {
      if (written !== length) {
        // A short write leaves a torn line; cut it off so the file stays whole lines.
        try {
          ftruncateSync(this.fd, this.size)
        } catch {
          /* the write error is what matters */
        }
      }
    }
    if (written !== length) throw new GatehouseError('GH_ERR_AUDIT', 'audit write was cut short (disk full?)')
    this.size += written
    this.syncs.wrote()
    this.stats.writes++
  }

  // ---- checkpoints and segments -----------------------------------------------------------------

  private checkpointItem(
    reason: CheckpointReason,
    torn: { bytes: number; sha256: string } | null,
    unattested?: UnattestedRange | null,
  ): Pending {
    return checkpointRecord(this.signer as AuditSigner, this.logId, reason, torn, unattested)
  }

  /** Writes a signed checkpoint now (after any queued events). Throws GH_ERR_AUDIT on failure. */
  checkpoint(reason: CheckpointReason = 'interval'): void {
    if (this.closed || !this.opened) throw new GatehouseError('GH_ERR_AUDIT', 'the audit log is closed')
    this.writeBatch(this.checkpointItem(reason, null))
  }

  private checkpointIfNeeded(): void {
    if (this.closed || (this.n <= this.lastCheckpointN && this.deferred.length === 0)) return
    try {
      this.checkpoint('interval')
    } catch (err) {
      this.onProblem('cannot write an audit checkpoint', err)
    }
  }

  /** Seals the current segment (checkpoint, sync, close) and starts the next one. */
  private rollOver(): void {
    if (this.fd >= 0) {
      this.writeItems([this.checkpointItem('seal', null)])
      this.retireSegment()
    }
    this.openSegment(this.segIndex + 1)
  }

  private openSegment(index: number): void {
    const file = join(this.dir, segmentName(index))
    let fd: number
    try {
      fd = openSync(file, 'ax', 0o600)
    } catch (err) {
      throw new GatehouseError('GH_ERR_AUDIT', `${file}: cannot create the audit segment (${errCode(err)})`, { cause: err })
    }
    this.fd = fd
    this.segIndex = index
    this.segPath = file
    this.size = 0
    syncDir(this.dir)
    try {
      this.writeItems([segmentRecord(this.signer as AuditSigner, this.logId, index)])
    } catch (err) {
      // Leave no empty segment behind: the next attempt creates it again.
      this.fd = -1
      closeSync(fd)
      try {
        unlinkSync(file)
      } catch {
        /* nothing to remove */
      }
      throw err
    }
  }

  /** Syncs and closes the current segment; waiters for the next sync are durable now. */
  private retireSegment(): void {
    const fd = this.fd
    this.fd = -1
    this.syncs.syncAndClose(fd)
  }

  /** Events accepted but not yet written (deferred), plus appends waiting for their fdatasync. */
  get backlog(): number {
    return this.deferred.length + this.syncs.pending
  }

  /** Open for appends: opened, not closed. */
  get isOpen(): boolean {
    return this.opened && !this.closed
  }

  /** Writes what is queued and syncs to disk. */
  flush(): void {
    this.flushDeferred()
    if (this.fd >= 0) this.syncs.syncNow(this.fd)
  }

  /** Writes queued events and a signed `shutdown` checkpoint, syncs, closes, releases the lock. */
  close(): void {
    if (this.closed) return
    if (this.checkpointTimer) clearInterval(this.checkpointTimer)
    if (this.syncTimer) clearInterval(this.syncTimer)
    this.largeScratch.dispose()
    if (this.opened) {
      try {
        this.writeBatch(this.checkpointItem('shutdown', null))
      } catch (err) {
        this.onProblem('cannot write the shutdown checkpoint', err)
      }
    }
    if (this.fd >= 0) {
      this.syncs.syncAndClose(this.fd)
      this.fd = -1
    }
    this.closed = true
    this.releaseLock?.()
  }

  // ---- retention --------------------------------------------------------------------------------

  /**
   * Removes whole sealed segments whose last event is older than `before` (RFC 3339), oldest
   * first and without gaps. A signed-into-the-chain `audit.prune` record naming them is made
   * durable first, so verify can tell retention from deletion; the segment headers that remain
   * are signed, so what is left verifies on its own. Returns the removed file names.
   */
  prune(before: string): string[] {
    if (this.closed || !this.opened) throw new GatehouseError('GH_ERR_AUDIT', 'the audit log is closed')
    const removable = prunableSegments(this.dir, this.segIndex, before)
    const lastRemoved = removable[removable.length - 1]
    if (!lastRemoved) return []
    this.appendSync(
      internalEvent(PRUNE_TYPE, {
        log: this.logId,
        before,
        segments: removable.map((s) => s.name),
        first_kept: lastRemoved.index + 1,
      }),
    )
    this.flush()
    const removed: string[] = []
    for (const seg of removable) {
      try {
        unlinkSync(seg.path)
        removed.push(seg.name)
      } catch (err) {
        this.onProblem(`cannot remove pruned audit segment ${seg.name}`, err)
      }
    }
    syncDir(this.dir)
    return removed
  }

  // ---- recovery ---------------------------------------------------------------------------------

  /** Finds the end of the chain; seals a crash's leftovers in the last segment with a signed record. */
  private recover(): void {
    const end = findChainEnd(this.dir)
    if (!end) {
      this.logId = randomBytes(6).toString('hex')
      return
    }
    const { last, tail, torn, newline, damaged, unattested } = end
    this.logId = tail.log
    this.n = tail.n
    this.lastHash = tail.h
    this.segIndex = last.index
    if (damaged > 0)
      this.onProblem(`${damaged} damaged line(s) at the end of the audit log before ${last.name}; audit verify will report them`)
    if (!newline && damaged === 0 && tail.type === CHECKPOINT_TYPE) return
    // A crash: seal the last segment with a signed record (and the torn partial line with it).
    const fd = openSync(last.path, 'a', 0o600)
    try {
      this.fd = fd
      this.size = statSync(last.path).size
      if (newline) this.writeLines([''])
      const tornInfo = torn ? { bytes: torn.length, sha256: sha256Hex(torn) } : null
      this.writeItems([this.checkpointItem('recovery', tornInfo, unattested)])
      fdatasyncSync(fd)
    } finally {
      this.fd = -1
      closeSync(fd)
    }
    this.recovery = { segment: last.name, tornBytes: torn?.length ?? 0, damagedLines: damaged, unattested }
    this.onProblem(
      `the audit log was not closed cleanly; sealed ${last.name} with a signed recovery checkpoint` +
        (torn ? ` (and a torn partial line of ${torn.length} bytes)` : '') +
        (unattested
          ? `; ${unattested.to - unattested.from + 1} event(s) written after the last signed checkpoint (${eventId(tail.log, unattested.from)} … ${eventId(tail.log, unattested.to)}) are marked unattested`
          : ''),
    )
  }
}

/**
 * Opens the log with the configured audit key for a short write where no server runs (the CLI
 * issuing or revoking a token); the caller closes it.
 */
export async function openLocalAuditLog(config: Config): Promise<AuditLog> {
  const signer = await resolveAuditSigner(config.audit.signingKey, config.dataDir, process.cwd())
  const log = new AuditLog(join(config.dataDir, 'audit'), 'always', 1000, { signer })
  log.open()
  return log
}
