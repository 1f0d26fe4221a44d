// Summarises a V8 .cpuprofile (written by `node --cpu-prof`) as the functions with the most self
// time, and the same aggregated by source file, so the gateway's per-statement CPU can be
// attributed (see BENCHMARKS.md). Usage:
//
//   node dist/bench/cpuprofile.js FILE.cpuprofile [--top N]

import { readFileSync } from 'node:fs'

interface CallFrame {
  readonly functionName: string
  readonly url: string
  readonly lineNumber: number
}

interface ProfileNode {
  readonly id: number
  readonly callFrame: CallFrame
  readonly hitCount?: number
}

interface CpuProfile {
  readonly nodes: readonly ProfileNode[]
  readonly startTime: number
  readonly endTime: number
  readonly samples?: readonly number[]
}

function shortUrl(url: string): string {
  if (url === '') return '(native)'
  const nm = url.lastIndexOf('/node_modules/')
  if (nm >= 0) return url.slice(nm + '/node_modules/'.length)
  const dist = url.lastIndexOf('/dist/')
  if (dist >= 0) return url.slice(dist + '/dist/'.length)
  return url.replace(/^file:\/\//, '')
}

function main(): void {
  const args = process.argv.slice(2)
  const file = args.find((a) => !a.startsWith('--'))
  if (!file) {
    process.stderr.write('usage: node dist/bench/cpuprofile.js FILE.cpuprofile [--top N]\n')
    process.exit(2)
  }
  const ti = args.indexOf('--top')
  const top = ti >= 0 ? Number(args[ti + 1]) || 30 : 30
  const prof = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile
  const total = prof.nodes.reduce((s, n) => s + (n.hitCount ?? 0), 0)
  const idle = prof.nodes.filter((n) => n.callFrame.functionName === '(idle)').reduce((s, n) => s + (n.hitCount ?? 0), 0)
  const busy = total - idle
  const byFn = new Map<string, number>()
  const byFile = new Map<string, number>()
  for (const n of prof.nodes) {
    const hits = n.hitCount ?? 0
    if (hits === 0 || n.callFrame.functionName === '(idle)') continue
    const f = n.callFrame
    const where = shortUrl(f.url)
    const key = `${f.functionName || '(anonymous)'}  ${where}${f.url ? `:${f.lineNumber + 1}` : ''}`
    byFn.set(key, (byFn.get(key) ?? 0) + hits)
    const fileKey = f.url ? where : f.functionName
    byFile.set(fileKey, (byFile.get(fileKey) ?? 0) + hits)
  }
  const pct = (h: number): string => `${((100 * h) / busy).toFixed(1).padStart(5)}%`
  const seconds = (prof.endTime - prof.startTime) / 1e6
  const lines = [`${file}: ${seconds.toFixed(1)} s profiled, ${total} samples, ${busy} not idle; shares are of non-idle samples`, '']
  lines.push(`top ${top} functions by self time`)
  for (const [k, h] of [...byFn].sort((a, b) => b[1] - a[1]).slice(0, top)) lines.push(`${pct(h)}  ${k}`)
  lines.push('', `top ${top} files by self time`)
  for (const [k, h] of [...byFile].sort((a, b) => b[1] - a[1]).slice(0, top)) lines.push(`${pct(h)}  ${k}`)
  // A closed pipe (`| head`) is not an error.
  process.stdout.on('error', () => process.exit(0))
  process.stdout.write(`${lines.join('\n')}\n`)
}

main()
