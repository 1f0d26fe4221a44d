// A proxy's system calls and context switches during one benchmark run, counted by `perf stat` on
// kernel software events. They work in VMs without hardware counters, and unlike CPU time they do
// not grow when a loaded host evicts the process's caches between wake-ups: on a shared machine
// they show what a change does to the kernel work per statement when CPU time cannot.

import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'

export interface KernelCounts {
  readonly syscalls: number
  readonly switches: number
}

export interface KernelCounter {
  /** Stops counting; null when perf could not count (not installed, not permitted). */
  stop(): Promise<KernelCounts | null>
}

const EVENTS = ['raw_syscalls:sys_enter', 'context-switches']

export function perfAvailable(): boolean {
  return ['/usr/bin/perf', '/usr/local/bin/perf'].some((p) => existsSync(p))
}

/** Starts counting for `pids` (every thread of each); resolves once perf is attached. */
export async function countKernel(pids: readonly number[]): Promise<KernelCounter> {
  const child = spawn('perf', ['stat', '-x', ',', '-e', EVENTS.join(','), '-p', pids.join(',')], {
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  let err = ''
  child.stderr.on('data', (d: Buffer) => {
    err += d.toString()
  })
  const exited = new Promise<void>((resolve) => child.on('close', () => resolve()))
  child.on('error', () => undefined)
  // perf attaches within milliseconds; what it misses is the connection set-up, not the run.
  await new Promise((r) => setTimeout(r, 200))
  return {
    async stop(): Promise<KernelCounts | null> {
      child.kill('SIGINT')
      await exited
      const value = (event: string): number | null => {
        const line = err.split('\n').find((l) => l.split(',')[2] === event)
        const v = Number(line?.split(',')[0])
        return line !== undefined && Number.isFinite(v) ? v : null
      }
      const syscalls = value(EVENTS[0] as string)
      const switches = value(EVENTS[1] as string)
      return syscalls === null || switches === null ? null : { syscalls, switches }
    },
  }
}
