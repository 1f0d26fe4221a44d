// The streaming JSON masker (engine/masking/json-stream.ts) on one core: MB/s of masked JSON for a
// large response, in 64 KiB chunks as a socket delivers them, beside JSON.parse of the whole
// document (what a buffer-everything masker would at least pay) and, when installed, the npm
// streaming parsers (`@streamparser/json`, `stream-json`) tokenising the same bytes.
//
//   node dist/bench/json-mask.js [--mb 50] [--runs 3] [--parsers DIR]
//
// The document: {"users":[…]} of records with an e-mail, an SSN, a nested address, an array of
// orders (each with a card number) and tags: the shape of a typical list endpoint. Figures are
// CPU seconds of this process (user+system), so other work on the machine counts less; the best
// of --runs. --parsers DIR: a node_modules directory holding the npm parsers (they are not
// dependencies of Gatehouse; `npm install --prefix DIR @streamparser/json stream-json`).

import { createRequire } from 'node:module'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { JsonMasker, JsonMaskPlan, type JsonMaskTarget } from '../engine/masking/json-stream.js'
import { arg } from './common.js'

const MB = arg('--mb', 50)
const RUNS = arg('--runs', 3)
const pi = process.argv.indexOf('--parsers')
const PARSERS = pi >= 0 ? process.argv[pi + 1] : undefined
const CHUNK = 64 * 1024
const KEY = Buffer.alloc(32, 7)

// Best CPU seconds of RUNS passes of stream-json over the file DOC, in 64 KiB chunks.
const STREAM_JSON = `
import { readFileSync } from 'node:fs'
import { parserStream } from 'stream-json'
const doc = readFileSync(process.env.DOC)
let best = Infinity
for (let r = 0; r < Number(process.env.RUNS); r++) {
  const t0 = process.cpuUsage()
  await new Promise((done, fail) => {
    const p = parserStream()
    let tokens = 0
    p.on('data', () => { tokens++ })
    p.on('end', () => (tokens > 0 ? done() : fail(new Error('no tokens'))))
    p.on('error', fail)
    for (let i = 0; i < doc.length; i += 65536) p.write(doc.subarray(i, i + 65536))
    p.end()
  })
  const d = process.cpuUsage(t0)
  best = Math.min(best, (d.user + d.system) / 1e6)
}
console.log(best)
`

function document(bytes: number): Buffer {
  const parts: string[] = ['{"users":[']
  let size = parts[0]?.length ?? 0
  for (let i = 0; size < bytes; i++) {
    const u = {
      id: i,
      name: `User Number ${i}`,
      email: `user${i}@example.com`,
      ssn: `${100 + (i % 800)}-${10 + (i % 89)}-${1000 + (i % 8999)}`,
      active: i % 3 === 0,
      score: i * 1.25,
      address: { street: `${i} Main Street`, city: 'Springfield', zip: `${10000 + (i % 89999)}`, geo: { lat: 40.1 + i / 1e6, lng: -73.2 } },
      orders: [
        { id: i * 10, total: 12.5, card: '4111 1111 1111 1111', items: [{ sku: 'A-1', qty: 1 }] },
        {
          id: i * 10 + 1,
          total: 99.99,
          card: '5500 0000 0000 0004',
          items: [
            { sku: 'B-2', qty: 3 },
            { sku: 'C-3', qty: 1 },
          ],
        },
      ],
      tags: ['alpha', 'beta', 'gamma\u00e9'],
      note: null,
    }
    const s = (i === 0 ? '' : ',') + JSON.stringify(u)
    parts.push(s)
    size += Buffer.byteLength(s)
  }
  parts.push(']}')
  return Buffer.from(parts.join(''))
}

function cpuSeconds(f: () => void): number {
  const t0 = process.cpuUsage()
  f()
  const d = process.cpuUsage(t0)
  return (d.user + d.system) / 1e6
}

function best(f: () => void): number {
  let b = Number.POSITIVE_INFINITY
  for (let r = 0; r < RUNS; r++) b = Math.min(b, cpuSeconds(f))
  return b
}

function chunks(doc: Buffer): Buffer[] {
  const out: Buffer[] = []
  for (let p = 0; p < doc.length; p += CHUNK) out.push(doc.subarray(p, p + CHUNK))
  return out
}

function maskRun(targets: JsonMaskTarget[], cs: Buffer[]): () => void {
  const plan = new JsonMaskPlan(targets)
  return () => {
    const m = new JsonMasker(plan, KEY)
    let n = 0
    for (const c of cs) for (const o of m.write(c)) n += o.length
    for (const o of m.end()) n += o.length
    if (n === 0) throw new Error('no output')
  }
}

const doc = document(MB * 1024 * 1024)
const cs = chunks(doc)
const mb = doc.length / (1024 * 1024)
const rows: [string, number][] = []
const report = (name: string, secs: number): void => {
  rows.push([name, mb / secs])
  process.stdout.write(`${name.padEnd(64)} ${(mb / secs).toFixed(1).padStart(7)} MB/s\n`)
}

process.stdout.write(`document: ${mb.toFixed(1)} MB, ${cs.length} chunks of 64 KiB; best of ${RUNS} runs, CPU time\n`)
report(
  'JSON.parse (whole document, no masking)',
  best(() => JSON.parse(doc.toString('utf8'))),
)
report('masker, a rule that matches nothing ($.nothing)', best(maskRun([{ path: '$.nothing', rule: 'r', strategy: 'redact' }], cs)))
report('masker, $.users[*].ssn redact', best(maskRun([{ path: '$.users[*].ssn', rule: 'r', strategy: 'redact' }], cs)))
report(
  'masker, $..email partial (every member name compared)',
  best(maskRun([{ path: '$..email', rule: 'r', strategy: 'partial', keep: 4 }], cs)),
)
report(
  'masker, $..email hash + $.users[*].ssn redact + $..card partial',
  best(
    maskRun(
      [
        { path: '$..email', rule: 'e', strategy: 'hash' },
        { path: '$.users[*].ssn', rule: 's', strategy: 'redact' },
        { path: '$..card', rule: 'c', strategy: 'partial', keep: 4 },
      ],
      cs,
    ),
  ),
)
report(
  'masker, $.users[*].address (whole objects dropped)',
  best(maskRun([{ path: '$.users[*].address', rule: 'r', strategy: 'redact' }], cs)),
)

if (PARSERS !== undefined) {
  const req = createRequire(join(PARSERS, 'node_modules', 'x.js'))
  try {
    const { Tokenizer, JSONParser } = req('@streamparser/json') as {
      Tokenizer: new () => { write(b: Uint8Array): void; onToken: (t: unknown) => void; end(): void }
      JSONParser: new (o: {
        paths: string[]
        keepStack: boolean
      }) => { write(b: Uint8Array): void; onValue: (v: unknown) => void; end(): void }
    }
    report(
      '@streamparser/json Tokenizer (tokens only)',
      best(() => {
        const t = new Tokenizer()
        t.onToken = () => {}
        for (const c of cs) t.write(c)
        t.end()
      }),
    )
    report(
      '@streamparser/json JSONParser paths [$.users.*] (values, no rewriting)',
      best(() => {
        const p = new JSONParser({ paths: ['$.users.*'], keepStack: false })
        p.onValue = () => {}
        for (const c of cs) p.write(c)
        // It ends itself after the top-level value; end() would then complain.
      }),
    )
  } catch (err) {
    process.stdout.write(`@streamparser/json: ${(err as Error).message}\n`)
  }
  // stream-json 3 is an ES module: measured in a child process started in DIR, on the same bytes.
  const file = join(mkdtempSync(join(tmpdir(), 'gh-json-bench-')), 'doc.json')
  writeFileSync(file, doc)
  const child = spawnSync(process.execPath, ['--input-type=module', '-e', STREAM_JSON], {
    cwd: PARSERS,
    env: { ...process.env, DOC: file, RUNS: String(RUNS) },
    encoding: 'utf8',
  })
  rmSync(dirname(file), { recursive: true, force: true })
  const secs = Number(child.stdout.trim())
  if (child.status === 0 && secs > 0) report('stream-json parser (tokens)', secs)
  else process.stdout.write(`stream-json: ${child.stderr.trim().split('\n')[0]}\n`)
}
