// The PostgreSQL benchmark's results (bench/pgbench.ts): medians per target and client count, the
// markdown table and comparisons printed and written to BENCHMARKS.md, and the machine they ran on.

import { existsSync, readFileSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { CLK_TCK, PG_DB, PG_HOST, PG_PORT, PG_USER, pgEnv, run, type Target } from './pgbench-servers.js'

/** Scale of the pgbench tables (`pgbench -i -s`). */
export const SCALE = 10

/** What the report says about how the runs were made. */
export interface RunShape {
  readonly modes: readonly ('simple' | 'prepared')[]
  readonly duration: number
  readonly runs: number
  readonly clients: readonly number[]
  readonly warmup: number
}

export interface Sample {
  readonly tps: number
  readonly latencyMs: number
  readonly transactions: number
  /** Proxy CPU per statement in microseconds; null for direct. */
  readonly cpuUsPerStmt: number | null
  /** The proxy's system calls and context switches per statement (`--syscalls`). */
  readonly syscallsPerStmt?: number
  readonly switchesPerStmt?: number
  /** A gateway's audit write(2)s per statement audited (its metrics). */
  readonly auditWritesPerStmt?: number
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  const hi = s[mid] ?? Number.NaN
  const lo = s[mid - 1] ?? hi
  return s.length % 2 === 1 ? hi : (lo + hi) / 2
}

export const fmtInt = (n: number): string => Math.round(n).toLocaleString('en-US')
export const fmt = (n: number, digits: number): string => (Number.isFinite(n) ? n.toFixed(digits) : '–')

export interface Summary {
  readonly mode: 'simple' | 'prepared'
  readonly target: Target
  readonly clients: number
  readonly samples: readonly Sample[]
  readonly tps: number
  readonly latencyMs: number
  readonly cpuUsPerStmt: number | null
}

export function summarise(target: Target, clients: number, samples: readonly Sample[], mode: 'simple' | 'prepared'): Summary {
  const cpu = samples.map((s) => s.cpuUsPerStmt).filter((c): c is number => c !== null)
  return {
    mode,
    target,
    clients,
    samples,
    tps: median(samples.map((s) => s.tps)),
    latencyMs: median(samples.map((s) => s.latencyMs)),
    cpuUsPerStmt: cpu.length > 0 ? median(cpu) : null,
  }
}

export function table(summaries: readonly Summary[]): string {
  const rows: string[] = [
    '| -M | clients | target | TPS (median) | vs direct | latency avg (ms) | added latency per query (µs) | proxy CPU per statement (µs) | TPS of each run |',
    '|---|---:|---|---:|---:|---:|---:|---:|---|',
  ]
  for (const s of summaries) {
    const d = summaries.find((x) => x.mode === s.mode && x.clients === s.clients && x.target.key === 'direct')
    const ratio = d ? s.tps / d.tps : Number.NaN
    const added = d && s.target.key !== 'direct' ? fmt((s.latencyMs - d.latencyMs) * 1000, 1) : '–'
    rows.push(
      `| ${s.mode} | ${s.clients} | ${s.target.label} | ${fmtInt(s.tps)} | ${fmt(ratio, 3)} | ${fmt(s.latencyMs, 3)} | ${added} | ${
        s.cpuUsPerStmt !== null ? fmt(s.cpuUsPerStmt, 1) : '–'
      } | ${s.samples.map((x) => fmtInt(x.tps)).join(', ')} |`,
    )
  }
  return rows.join('\n')
}

/** Ratios of two alternated targets, run by run (run r of each was next to the other in time). */
function paired(a: Summary, b: Summary, f: (x: Sample) => number | null): number[] {
  return a.samples
    .map((x, i) => {
      const y = b.samples[i]
      const fx = f(x)
      const fy = y ? f(y) : null
      return fx !== null && fy !== null ? fx / fy : Number.NaN
    })
    .filter(Number.isFinite)
}

const GATEWAYS: readonly Target['key'][] = ['gatehouse', 'gatehouse-mask', 'gatehouse-mask-base', 'gatehouse-off']

export function comparisons(
  summaries: readonly Summary[],
  clientCounts: readonly number[],
  modes: readonly ('simple' | 'prepared')[],
): string {
  const lines: string[] = []
  for (const mode of modes) {
    for (const c of clientCounts) {
      const get = (k: Target['key']): Summary | undefined => summaries.find((s) => s.mode === mode && s.clients === c && s.target.key === k)
      const d = get('direct')
      const p = get('pump')
      const b = get('pgbouncer')
      lines.push(`- **-M ${mode}, ${c} client${c === 1 ? '' : 's'}**:`)
      for (const k of GATEWAYS) {
        const g = get(k)
        if (!g) continue
        const parts: string[] = []
        if (p && g.cpuUsPerStmt !== null && p.cpuUsPerStmt !== null) {
          const cpu = paired(g, p, (x) => x.cpuUsPerStmt)
          parts.push(
            `CPU ${fmt(g.cpuUsPerStmt, 1)} µs/statement = **${fmt(g.cpuUsPerStmt / p.cpuUsPerStmt, 2)}× the pump's** ` +
              `(${fmt(p.cpuUsPerStmt, 1)} µs; run by run ${cpu.map((r) => fmt(r, 2)).join(', ')}, median ${fmt(median(cpu), 2)})`,
          )
        }
        if (p) {
          const tps = paired(g, p, (x) => x.tps)
          parts.push(
            `TPS ${fmt(g.tps / p.tps, 3)}× the pump's (run by run ${tps.map((r) => fmt(r, 3)).join(', ')}, median ${fmt(median(tps), 3)})`,
          )
        }
        const sys = (s: Summary): number[] => s.samples.flatMap((x) => (x.syscallsPerStmt !== undefined ? [x.syscallsPerStmt] : []))
        const sw = (s: Summary): number[] => s.samples.flatMap((x) => (x.switchesPerStmt !== undefined ? [x.switchesPerStmt] : []))
        if (p && sys(g).length > 0 && sys(p).length > 0)
          parts.push(
            `system calls ${fmt(median(sys(g)), 2)}/statement (pump ${fmt(median(sys(p)), 2)}), ` +
              `context switches ${fmt(median(sw(g)), 2)} (pump ${fmt(median(sw(p)), 2)})`,
          )
        const aw = g.samples.flatMap((x) => (x.auditWritesPerStmt !== undefined ? [x.auditWritesPerStmt] : []))
        if (aw.length > 0) parts.push(`audit writes ${fmt(median(aw), 2)}/statement (run by run ${aw.map((x) => fmt(x, 2)).join(', ')})`)
        if (b) parts.push(`${fmt(g.tps / b.tps, 3)}× PgBouncer's TPS`)
        if (d) parts.push(`added latency ${fmt((g.latencyMs - d.latencyMs) * 1000, 1)} µs/query`)
        lines.push(`  - ${g.target.label}: ${parts.join('; ')}.`)
      }
      if (p && d) lines.push(`  - pump: added latency ${fmt((p.latencyMs - d.latencyMs) * 1000, 1)} µs/query.`)
    }
  }
  return lines.join('\n')
}

interface Machine {
  readonly nproc: string
  readonly cpu: string
  readonly node: string
  readonly pgbench: string
  readonly pgbouncer: string
  readonly server: string
  readonly load: string
}

export async function machine(): Promise<Machine> {
  const cpuinfo = existsSync('/proc/cpuinfo') ? readFileSync('/proc/cpuinfo', 'utf8') : ''
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? 'unknown'
  const first = (cmd: string, args: string[]): string => spawnSync(cmd, args, { encoding: 'utf8' }).stdout?.split('\n')[0]?.trim() ?? '?'
  const bouncerBin = ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer'].find((p) => existsSync(p)) ?? 'pgbouncer'
  const server = await run(
    'psql',
    ['-X', '-At', '-h', PG_HOST, '-p', String(PG_PORT), '-U', PG_USER, '-d', PG_DB, '-c', 'show server_version'],
    pgEnv(),
    15_000,
  )
  return {
    nproc: first('nproc', []),
    cpu: model,
    node: process.version,
    pgbench: first('pgbench', ['--version']),
    pgbouncer: first(bouncerBin, ['--version']),
    server: server.code === 0 ? `PostgreSQL ${server.stdout.trim()}` : '?',
    load: existsSync('/proc/loadavg') ? readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ') : '?',
  }
}

export function report(opts: RunShape, m: Machine, summaries: readonly Summary[], command: string, elapsedS: number): string {
  const date = new Date().toISOString().replace(/\.\d+Z$/, 'Z')
  return `# Benchmarks

PostgreSQL through Gatehouse, side by side with a direct connection, a bare Node byte pump and
PgBouncer, measured in the same run. Generated by \`bench/pgbench.ts\`; rerun it to refresh this file.

- **Date**: ${date}
- **Machine**: ${m.nproc} CPUs, ${m.cpu}; ${m.server}, ${m.pgbench}, ${m.pgbouncer}, Node ${m.node}
  (load average ${m.load} when the run started)
- **Command**: \`${command}\` (${Math.round(elapsedS)} s)
- **Workload**: \`pgbench -n -S -M ${opts.modes.join('|')} -T ${opts.duration}\` (one primary-key SELECT per
  transaction; \`simple\`: the simple query protocol, \`prepared\`: Bind/Execute of a prepared statement, as drivers
  do) on \`pgbench -i -s ${SCALE}\` tables, ${opts.runs} runs per target and client count,
  alternated, medians; threads \`-j\` = min(clients, 2).

${table(summaries)}

${comparisons(summaries, opts.clients, opts.modes)}

## Method

- **Targets.** *direct*: PostgreSQL 15 on 127.0.0.1:5432. *Node byte pump* (\`bench/pump.ts\`): a
  separate Node process that accepts a socket, connects to the server and \`pipe\`s both ways with
  \`noDelay\`, nothing else — the floor cost of any proxy written in Node. *PgBouncer* in session mode
  (\`auth_type = trust\`), as \`postgres\`. *Gatehouse*: \`gatehouse serve\` with its own temporary data
  directory and one connection \`bench\` (→ 127.0.0.1:5432, database test, user postgres), the client
  authenticating with a token from \`gatehouse token create --subject user:bench\`, default settings
  otherwise (no \`policies:\` key, so the bundle shipped in \`policies/\`; default \`audit\`): every
  statement is classified, decided by the policy engine and audited durably before it is forwarded.
  *Gatehouse + one masking rule*: the same, with the shipped bundle plus one masking rule on
  \`pgbench_branches.filler\` (a table \`-S\` never reads), so every decision carries a mask obligation
  that cannot apply. *Gatehouse, decisions off*: the same gateway with classification and policy
  replaced by constants (\`bench/gateway-nodecide.ts\`), which prices the decisions.
- **Ratios.** What counts is the ratio of two targets measured in the same run: each run of a
  gateway is next in time to a run of the pump, and the run-by-run ratios are listed with their median.
- **Order.** The tables are initialised once, directly. Each target gets a ${opts.warmup} s warm-up
  (not counted, so the JIT has compiled the hot paths). Then for each client count the runs go
  direct, pump, PgBouncer, Gatehouse, direct, pump, … so that drift on the machine hits all targets
  alike; the table shows the median of the runs (and every run's TPS).
- **TPS and latency** are pgbench's own figures (\`tps … without initial connection time\`,
  \`latency average\`). *vs direct* is TPS divided by direct's median; *added latency per query* is
  the median average latency minus direct's, at the same client count (at 1 client this is the
  round-trip cost the proxy adds; at more clients it also includes queueing for the CPUs).
- **Proxy CPU per statement**: utime + stime of the proxy process (all its threads) from
  \`/proc/<pid>/stat\` just before and just after each pgbench run, in clock ticks
  (CLK_TCK = ${CLK_TCK}), divided by the transactions pgbench reports (each \`-S\` transaction is one
  statement). It includes each run's connection set-up (a few sessions per run, negligible next to
  tens of thousands of statements). It is the least machine-dependent number here: TPS ratios depend
  on how many CPUs pgbench, the server and the proxy share (${m.nproc} here), CPU per statement does not.
- **Where the gateway's time goes**: \`node dist/bench/pgbench.js --clients 1 --runs 1 --cpu-prof DIR\`
  runs the gateway under \`node --cpu-prof\` (those numbers are not written here), then
  \`node dist/bench/cpuprofile.js DIR/*.cpuprofile\` lists the functions and files with the most self
  time. The profile samples wall time while the main thread is busy, so on a machine with few CPUs a
  socket \`write\` that wakes the peer is charged for the time spent waiting to be scheduled again.
- Everything listens on loopback only; every process started is stopped at the end.
`
}
