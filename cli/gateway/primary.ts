// `gatehouse serve --workers N`: the process the operator started is the primary. It holds the
// data directory (the writer lock of `audit/`, so no other gateway starts on it), starts N workers
// with Node's cluster module (round-robin: the primary accepts each connection and hands it to the
// next worker), writes run.json once every worker listens, relays what one worker tells the
// others (engine/peers.ts), restarts a worker that dies, and drains them all on SIGTERM.
//
// Worker 1 starts alone first: it creates what is created once (keys, TLS material, the admin
// token) and ends the sessions a stopped gateway left open; the others start after it.

import cluster, { type Worker } from 'node:cluster'
import { mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import type { Logger } from 'pino'
import { acquireWriterLock } from '../../engine/audit/segments.js'
import type { Config } from '../../engine/config/config.js'
import { GatehouseError } from '../../engine/errors.js'
import { isPeerEnvelope, type PeerMessage } from '../../engine/peers.js'
import { auditDirOf, checkDataDirOwnership, type RunInfo, runInfoPath } from './gateway.js'

/** What a worker tells the primary once it serves (and the primary reads nothing else from it). */
export interface WorkerReady {
  readonly gh: 'ready'
  readonly addresses: Record<string, string>
}

/** A worker that does not answer a relayed message in this time is stopped (it may miss a revocation). */
export const RELAY_TIMEOUT_MS = 5000
/** A worker gets this long to end its sessions and flush its audit log on SIGTERM. */
const DRAIN_MS = 30_000
/** Restarts of a worker that keeps dying wait longer each time, up to this. */
const MAX_RESTART_DELAY_MS = 30_000

export const WORKER_ID_ENV = 'GATEHOUSE_WORKER_ID'
export const WORKER_CLEAN_ENV = 'GATEHOUSE_WORKER_CLEAN_ALL'

interface Slot {
  readonly id: number
  worker: Worker | null
  ready: boolean
  restarts: number
  startedAt: number
}

interface Relay {
  readonly from: Worker
  readonly seq: number
  readonly kind: PeerMessage['kind']
  readonly waiting: Set<Worker>
  sum: number
  readonly timer: NodeJS.Timeout
}

export class Primary {
  private readonly slots: Slot[] = []
  private readonly relays = new Map<number, Relay>()
  private relaySeq = 0
  private stopping: Promise<void> | null = null
  private releaseLock: (() => void) | null = null
  addresses: Record<string, string> = {}
  private readonly started = new Date().toISOString()

  private constructor(
    readonly config: Config,
    readonly count: number,
    private readonly log: Logger,
  ) {}

  /** Starts the workers; resolves once each listens and run.json is written. */
  static async start(config: Config, count: number, log: Logger): Promise<Primary> {
    const p = new Primary(config, count, log)
    mkdirSync(config.dataDir, { recursive: true, mode: 0o700 })
    checkDataDirOwnership(config.dataDir)
    const auditDir = auditDirOf(config.dataDir, null)
    mkdirSync(auditDir, { recursive: true, mode: 0o700 })
    // The same lock a single-process gateway takes: one gateway per data directory, whatever its mode.
    p.releaseLock = acquireWriterLock(auditDir)
    // Round robin spreads connections evenly; the operating system's default would not on Linux.
    cluster.schedulingPolicy = cluster.SCHED_RR
    cluster.on('message', (w, m: unknown) => p.onMessage(w, m))
    cluster.on('exit', (w, code, signal) => p.onExit(w, code, signal))
    for (let id = 1; id <= count; id++) p.slots.push({ id, worker: null, ready: false, restarts: 0, startedAt: 0 })
    try {
      p.addresses = await p.fork(p.slots[0] as Slot, true)
      await Promise.all(p.slots.slice(1).map((s) => p.fork(s, false)))
    } catch (err) {
      await p.stop()
      throw err
    }
    p.writeRunInfo()
    log.info({ workers: count, listeners: p.addresses }, 'gatehouse ready')
    return p
  }

  /** Starts the worker of `slot`; resolves with its listeners once it serves. */
  private fork(slot: Slot, cleanAll: boolean): Promise<Record<string, string>> {
    const w = cluster.fork({ [WORKER_ID_ENV]: String(slot.id), [WORKER_CLEAN_ENV]: cleanAll ? '1' : '' })
    slot.worker = w
    slot.ready = false
    slot.startedAt = Date.now()
    return new Promise((resolve, reject) => {
      const onMessage = (m: unknown): void => {
        if (typeof m !== 'object' || m === null || (m as { gh?: unknown }).gh !== 'ready') return
        w.off('message', onMessage)
        w.off('exit', onExit)
        slot.ready = true
        resolve((m as WorkerReady).addresses)
      }
      const onExit = (code: number | null, signal: string | null): void => {
        w.off('message', onMessage)
        reject(
          new GatehouseError(
            'GH_ERR_CONFIG',
            `gateway worker ${slot.id} exited while starting (${signal ?? `exit code ${code ?? '?'}`}); its error is above`,
          ),
        )
      }
      w.on('message', onMessage)
      w.once('exit', onExit)
    })
  }

  private slotOf(w: Worker): Slot | undefined {
    return this.slots.find((s) => s.worker === w)
  }

  private onMessage(from: Worker, m: unknown): void {
    if (!isPeerEnvelope(m)) return
    if (m.gh === 'tell') this.relay(from, m.seq, m.message)
    else if (m.gh === 'peer-answer') {
      const r = this.relays.get(m.seq)
      if (!r?.waiting.delete(from)) return
      r.sum += m.answer
      if (r.waiting.size === 0) this.answer(m.seq)
    }
  }

  /** Sends `message` to every other worker; the sender gets the sum of their answers. */
  private relay(from: Worker, seq: number, message: PeerMessage): void {
    const id = ++this.relaySeq
    const waiting = new Set<Worker>()
    for (const s of this.slots) {
      const w = s.worker
      if (!w || w === from || !w.isConnected()) continue
      try {
        w.send({ gh: 'peer', seq: id, message })
        waiting.add(w)
      } catch {
        // Its channel just closed: the exit handler restarts it, and a new worker reads the store.
      }
    }
    const timer = setTimeout(() => this.expire(id), RELAY_TIMEOUT_MS)
    timer.unref()
    this.relays.set(id, { from, seq, kind: message.kind, waiting, sum: 0, timer })
    if (waiting.size === 0) this.answer(id)
  }

  private answer(id: number): void {
    const r = this.relays.get(id)
    if (!r) return
    this.relays.delete(id)
    clearTimeout(r.timer)
    if (r.from.isConnected()) {
      try {
        r.from.send({ gh: 'told', seq: r.seq, answer: r.sum })
      } catch {
        /* the sender is gone */
      }
    }
  }

  /**
   * Workers that did not answer in time may not have acted on it (a revocation, a kill): fail
   * closed, stop them (their sessions end; a replacement starts and reads the shared store).
   */
  private expire(id: number): void {
    const r = this.relays.get(id)
    if (!r) return
    for (const w of r.waiting) {
      const slot = this.slotOf(w)
      this.log.error(
        { worker: slot?.id, message: r.kind, ms: RELAY_TIMEOUT_MS },
        'a gateway worker did not acknowledge a notification from another worker in time; stopping it so it serves nothing it should not',
      )
      w.process.kill('SIGKILL')
    }
    r.waiting.clear()
    this.answer(id)
  }

  private onExit(w: Worker, code: number | null, signal: string | null): void {
    const slot = this.slotOf(w)
    // Whatever it was asked, it will not answer now.
    for (const [id, r] of this.relays) if (r.waiting.delete(w) && r.waiting.size === 0) this.answer(id)
    if (!slot || this.stopping) return
    slot.worker = null
    if (!slot.ready) return // it died starting: fork's promise reports it (or the restart below retries)
    slot.ready = false
    // A worker that lived a minute starts over at the shortest delay.
    if (Date.now() - slot.startedAt > 60_000) slot.restarts = 0
    this.log.error(
      { worker: slot.id, pid: w.process.pid, code, signal },
      'a gateway worker stopped unexpectedly; its sessions ended; starting a replacement',
    )
    this.scheduleRestart(slot)
  }

  /** Not unref'd: with every worker down, this timer is what keeps the primary alive. */
  private scheduleRestart(slot: Slot): void {
    const delay = Math.min(MAX_RESTART_DELAY_MS, 100 * 2 ** slot.restarts)
    slot.restarts++
    setTimeout(() => this.restart(slot), delay)
  }

  private restart(slot: Slot): void {
    if (this.stopping) return
    this.fork(slot, false).then(
      () => {
        this.log.info({ worker: slot.id, pid: slot.worker?.process.pid }, 'gateway worker restarted')
        this.writeRunInfo()
      },
      (err: unknown) => {
        this.log.error({ worker: slot.id, err: String(err) }, 'a replacement gateway worker failed to start; trying again')
        this.scheduleRestart(slot)
      },
    )
  }

  /** The workers now: for run.json and tests. */
  workers(): { id: number; pid: number | null }[] {
    return this.slots.map((s) => ({ id: s.id, pid: s.worker?.process.pid ?? null }))
  }

  private writeRunInfo(): void {
    const run: RunInfo & { workers: { id: number; pid: number | null }[] } = {
      pid: process.pid,
      api: this.addresses.api ? `http://${this.addresses.api}` : null,
      listeners: { ...this.addresses },
      started: this.started,
      workers: this.workers(),
    }
    const file = runInfoPath(this.config.dataDir)
    const tmp = `${file}.${process.pid}.tmp`
    writeFileSync(tmp, `${JSON.stringify(run, null, 2)}\n`, { mode: 0o600 })
    renameSync(tmp, file)
  }

  /** SIGTERM to every worker (each ends its sessions and closes its audit log), then run.json goes. */
  stop(): Promise<void> {
    this.stopping ??= this.doStop()
    return this.stopping
  }

  private async doStop(): Promise<void> {
    const live = this.slots.map((s) => s.worker).filter((w): w is Worker => w !== null && !w.isDead())
    await Promise.all(
      live.map(
        (w) =>
          new Promise<void>((resolve) => {
            const t = setTimeout(() => w.process.kill('SIGKILL'), DRAIN_MS)
            w.once('exit', () => {
              clearTimeout(t)
              resolve()
            })
            w.process.kill('SIGTERM')
          }),
      ),
    )
    rmSync(runInfoPath(this.config.dataDir), { force: true })
    this.releaseLock?.()
    this.log.info('gatehouse stopped')
  }
}
