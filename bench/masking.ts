// Row rewriting throughput of the masking engine on one core (target: at least 300,000
// rows/s for rows of 10 columns with 2 masked). Rows look like an application table: an id, a few
// numbers and dates, short text, an e-mail address and a name. Every masked value is distinct, so
// the hash strategy pays one HMAC per value (its small cache of repeated values does not help).
// Prints rows/s per case, the median of five runs; writes nothing.
// Run: npx tsc -p . && node dist/bench/masking.js

import os from 'node:os'
import { type ColumnAction, type ColumnPlan, compileRowMasker, type RowMasker } from '../proxies/postgres/datarow-masker.js'
import { dataRow } from '../test/helpers/pgwire.js'

const KEY = Buffer.alloc(32, 1)
/** The keys a session passes: the masking key and its own `hash_session` key. */
const KEYS = { key: KEY, sessionKey: Buffer.alloc(32, 2) }
const ROWS = 20_000
const RUN_MS = 400

// id, email, name, city, amount, created, status, note, score, flag — oids as RowDescription says.
const TYPES = [23, 25, 1043, 1043, 1700, 1114, 1043, 25, 701, 16]
const rows: Buffer[] = []
for (let i = 0; i < ROWS; i++) {
  rows.push(
    dataRow([
      String(i),
      `user${i}@example.com`,
      `Firstname Lastname ${i}`,
      'Amsterdam',
      `${(i * 7.31).toFixed(2)}`,
      '2026-11-25 21:40:00',
      i % 3 === 0 ? 'active' : 'pending',
      `order note number ${i} for the customer`,
      `${i / 3}`,
      i % 2 === 0 ? 't' : 'f',
    ]),
  )
}

const keep: ColumnAction = { action: 'keep' }
function plans(masked: Record<number, ColumnAction>): ColumnPlan[] {
  return TYPES.map((typeOid, i) => ({ mask: masked[i] ?? keep, typeOid, format: 0 as const }))
}
const m = (strategy: 'redact' | 'partial' | 'hash' | 'hash_session' | 'null', keepN?: number): ColumnAction =>
  keepN === undefined
    ? { action: 'mask', rule: 'r', strategy, derived: false }
    : { action: 'mask', rule: 'r', strategy, keep: keepN, derived: false }
const detectors: ColumnAction = {
  action: 'detect',
  detectors: ['email', 'card', 'iban', 'ssn', 'phone', 'jwt', 'cloud_key', 'private_key'],
}

/** Rows per second of wall time and per second of this process's CPU time (the machine is shared:
 * under contention the wall-clock rate understates what one core does). */
function measure(masker: RowMasker): [number, number] {
  let n = 0
  let sink = 0
  const c0 = process.cpuUsage()
  const t0 = performance.now()
  let t = t0
  while (t - t0 < RUN_MS) {
    for (let i = 0; i < rows.length; i++) sink += masker.rewrite(rows[i] as Buffer).length
    n += rows.length
    t = performance.now()
  }
  if (sink === 0) throw new Error('unreachable')
  const c = process.cpuUsage(c0)
  return [n / ((t - t0) / 1000), n / ((c.user + c.system) / 1e6)]
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)] as number
}

const cases: [string, ColumnPlan[]][] = [
  ['10 cols, 2 masked, redact', plans({ 1: m('redact'), 2: m('redact') })],
  ['10 cols, 2 masked, hash (distinct values)', plans({ 1: m('hash'), 2: m('hash') })],
  ['10 cols, 2 masked, hash_session (distinct values)', plans({ 1: m('hash_session'), 2: m('hash_session') })],
  ['10 cols, 2 masked, partial keep 4', plans({ 1: m('partial', 4), 2: m('partial', 4) })],
  ['10 cols, 2 masked, null', plans({ 1: m('null'), 2: m('null') })],
  ['10 cols, all 8 detectors on 2 text cols (1 hit per row)', plans({ 1: detectors, 7: detectors })],
  ['10 cols, all 8 detectors on 2 text cols (no hit)', plans({ 2: detectors, 7: detectors })],
  ['10 cols, nothing masked (same Buffer back)', plans({})],
]

console.log(
  `load average ${os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')} on ${os.cpus().length} cores`,
)
console.log(`masking: ${ROWS} distinct rows of 10 columns (${rows[0]?.length ?? 0} bytes each), median of 5 runs of ${RUN_MS} ms, one core`)
for (const [name, p] of cases) {
  const masker = compileRowMasker(p, KEYS)
  measure(masker) // warm up
  const runs = [0, 1, 2, 3, 4].map(() => measure(masker))
  const wall = median(runs.map((r) => r[0]))
  const cpu = median(runs.map((r) => r[1]))
  const fmt = (x: number): string => Math.round(x).toLocaleString('en-US').padStart(12)
  console.log(`  ${name.padEnd(58)} ${fmt(wall)} rows/s wall ${fmt(cpu)} rows/CPU-s`)
}
