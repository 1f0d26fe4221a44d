// Hot reload: the policy source (a directory, or a bundle.tar.gz that CI drops in place) is
// watched with chokidar; a change is rebuilt and loaded off the data path (opa runs as a child
// process, the module compiles asynchronously) and then swapped in with one assignment, so
// sessions carry on and every decision runs wholly on one bundle. A broken edit keeps the last
// good bundle deciding, logs why, and shows in `gatehouse policy status` (GET /v1/policy).

import { statSync } from 'node:fs'
import { basename } from 'node:path'
import { type FSWatcher, watch } from 'chokidar'
import type { Logger } from 'pino'
import { type LoadedBundle, loadPolicySource } from './bundle.js'
import type { PolicyEngine } from './engine.js'

/** Editors save in bursts (write, rename, chmod): one rebuild per burst. */
export const RELOAD_DEBOUNCE_MS = 150

export class PolicyReloader {
  private watcher: FSWatcher | null = null
  private timer: NodeJS.Timeout | null = null
  private running: Promise<void> | null = null
  private again = false
  private closed = false
  /**
   * Awaited with each new bundle before this process swaps it in: under `serve --workers N` the
   * other workers load it first (engine/peers.ts), so once the worker that watches the source
   * reports the new version, every worker decides with it.
   */
  beforeSwap: ((bundle: LoadedBundle) => Promise<void>) | null = null

  constructor(
    private readonly source: string,
    private readonly engine: PolicyEngine,
    private readonly log: Logger,
    private readonly debounceMs = RELOAD_DEBOUNCE_MS,
  ) {}

  /**
   * Starts watching; resolves once the watcher has scanned the source. Without `watch` (a worker
   * other than the first), nothing is watched: the watching worker sends what it loaded.
   */
  async start(watch_ = true): Promise<void> {
    if (!watch_) return
    const isDir = statSync(this.source).isDirectory()
    const w = watch(this.source, {
      ignoreInitial: true,
      // Hidden files (editor swap files, .git) never change a bundle.
      ignored: (path: string) => path !== this.source && basename(path).startsWith('.'),
      ...(isDir ? {} : { atomic: true }),
    })
    this.watcher = w
    w.on('all', () => this.schedule())
    w.on('error', (err: unknown) => this.log.warn({ err: String(err), source: this.source }, 'policy watcher error'))
    await new Promise<void>((resolve) => w.once('ready', () => resolve()))
  }

  private schedule(): void {
    if (this.closed) return
    if (this.timer) clearTimeout(this.timer)
    this.timer = setTimeout(() => {
      this.timer = null
      void this.reload()
    }, this.debounceMs)
  }

  /** Rebuilds and swaps; a change arriving meanwhile triggers one more round afterwards. */
  reload(): Promise<void> {
    if (this.running) {
      this.again = true
      return this.running
    }
    this.running = this.once().finally(() => {
      this.running = null
      if (this.again && !this.closed) {
        this.again = false
        void this.reload()
      }
    })
    return this.running
  }

  private async once(): Promise<void> {
    const before = this.engine.version
    const started = Date.now()
    try {
      const bundle = await loadPolicySource(this.source)
      if (this.closed) return
      if (bundle.version === before) {
        // A test or case file changed, or the edit was undone: nothing that decides changed.
        this.engine.reloadSucceeded()
        return
      }
      if (this.beforeSwap) {
        await this.beforeSwap(bundle)
        if (this.closed) return
      }
      this.engine.swap(bundle)
      this.log.info({ version: bundle.version, previous: before, ms: Date.now() - started, source: this.source }, 'policy reloaded')
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err)
      this.engine.reloadFailed(why)
      this.log.error({ why, version: before, source: this.source }, 'policy reload failed; the loaded bundle keeps deciding')
    }
  }

  async close(): Promise<void> {
    this.closed = true
    if (this.timer) clearTimeout(this.timer)
    await this.watcher?.close()
    await this.running?.catch(() => undefined)
  }
}
