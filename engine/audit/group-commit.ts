// Disk syncs for the audit log with `fsync: always`: an append waits for an fdatasync that began
// after its write, and every append that arrives while one sync is running, or in the same I/O
// turn, shares the next one (group commit). The timer of `fsync: batched` starts the same sync.

import { closeSync, fdatasync, fdatasyncSync } from 'node:fs'
import { GatehouseError } from '../errors.js'
import type { Timing } from '../server/metrics.js'

interface Waiter {
  readonly resolve: () => void
  readonly reject: (err: Error) => void
}

export function errCode(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? 'error'
}

export class GroupCommit {
  private running = false
  private scheduled = false
  private waiters: Waiter[] = []
  /** Segment files closed by a roll-over while a sync on them ran: closed when it ends. */
  private retired: number[] = []
  /** Written since the last sync began. */
  private dirty = false

  /**
   * @param currentFd the segment being written (negative: none)
   * @param stats where each asynchronous fdatasync is counted
   * @param timing where its duration goes (null: not measured)
   */
  constructor(
    private readonly currentFd: () => number,
    private readonly stats: { syncs: number },
    private readonly timing: () => Timing | null,
  ) {}

  /** Appends waiting for their fdatasync. */
  get pending(): number {
    return this.waiters.length
  }

  /** Marks that bytes were written since the last sync began. */
  wrote(): void {
    this.dirty = true
  }

  /** Resolves once an fdatasync that began after this call completes; rejects with GH_ERR_AUDIT. */
  wait(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.waiters.push({ resolve, reject })
      this.schedule()
    })
  }

  private schedule(): void {
    if (this.scheduled || this.running) return
    this.scheduled = true
    // Start at the end of this I/O turn, so every session whose statement arrived in the same
    // turn rides on the same fdatasync.
    setImmediate(this.start)
  }

  /** Starts a sync when someone waits or bytes are unsynced (also the `batched` timer's tick). */
  readonly start = (): void => {
    this.scheduled = false
    const fd = this.currentFd()
    if (this.running || fd < 0) return
    if (this.waiters.length === 0 && !this.dirty) return
    const waiters = this.waiters
    this.waiters = []
    this.dirty = false
    this.running = true
    this.stats.syncs++
    const timing = this.timing()
    const started = timing === null ? 0 : performance.now()
    fdatasync(fd, (err) => {
      this.running = false
      timing?.since(started)
      for (const retired of this.retired.splice(0)) closeSync(retired)
      if (err) this.dirty = true
      settle(waiters, err)
      // Those who arrived during this sync have waited one sync already: start theirs at once.
      if (this.waiters.length > 0) this.start()
    })
  }

  /**
   * Syncs `fd` now and settles every waiter with the outcome, then closes it (after the running
   * sync, if one runs on it). For a segment that is sealed or a log that closes.
   */
  syncAndClose(fd: number): void {
    try {
      fdatasyncSync(fd)
      settle(this.waiters.splice(0), null)
    } catch (err) {
      settle(this.waiters.splice(0), err)
    }
    if (this.running) this.retired.push(fd)
    else closeSync(fd)
  }

  /** Syncs `fd` now; waiters resolve when it worked, and otherwise wait for the next sync. */
  syncNow(fd: number): void {
    try {
      fdatasyncSync(fd)
      settle(this.waiters.splice(0), null)
    } catch {
      /* reported by the next append */
    }
  }
}

function settle(waiters: readonly Waiter[], err: unknown): void {
  if (waiters.length === 0) return
  if (err) {
    const e = new GatehouseError('GH_ERR_AUDIT', `the audit segment could not be synced to disk (${errCode(err)})`, { cause: err })
    for (const w of waiters) w.reject(e)
  } else for (const w of waiters) w.resolve()
}
