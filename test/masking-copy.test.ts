// The COPY … TO STDOUT masker (proxies/postgres/copy-masker.ts) on rows produced by the real PostgreSQL:
// text and CSV formats with custom delimiters, quotes, escapes and NULL strings, values holding
// tabs, newlines, backslashes, delimiters, quotes, the NULL marker and multi-byte characters. The
// masked rows are fed back to PostgreSQL with COPY … FROM STDIN, so they are proven valid COPY,
// and random rows round-trip through a reference encoder (fast-check).

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { createHmac } from 'node:crypto'
import { connect, type Socket } from 'node:net'
import { after, before, describe, test } from 'node:test'
import fc from 'fast-check'
import { type CopyFormat, compileCopyMasker } from '../proxies/postgres/copy-masker.js'
import { MaskingError } from '../engine/masking/errors.js'
import type { ColumnAction, ColumnPlan } from '../proxies/postgres/datarow-masker.js'
import { cstr, int32, msg } from './helpers/wire.js'

const KEY = Buffer.alloc(32, 3)
const SCHEMA = `gh_copy_${process.pid}_${Date.now()}`

/** A plain protocol-3 session to the local PostgreSQL (trust): one simple query → its CopyData payloads. */
class RawPg {
  private buf: Buffer = Buffer.alloc(0)
  private waiting: (() => void) | null = null
  private constructor(private readonly s: Socket) {
    s.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d])
      this.waiting?.()
    })
  }

  static async open(): Promise<RawPg> {
    const s = connect({ host: '127.0.0.1', port: 5432 })
    await new Promise<void>((resolve, reject) => {
      s.once('connect', resolve)
      s.once('error', reject)
    })
    const pg = new RawPg(s)
    const body = Buffer.concat([int32(196608), cstr('user'), cstr('postgres'), cstr('database'), cstr('test'), Buffer.from([0])])
    s.write(Buffer.concat([int32(body.length + 4), body]))
    await pg.until('Z')
    return pg
  }

  private async next(): Promise<[string, Buffer]> {
    for (;;) {
      if (this.buf.length >= 5) {
        const len = this.buf.readInt32BE(1)
        if (this.buf.length >= len + 1) {
          const t = String.fromCharCode(this.buf[0] as number)
          const body = this.buf.subarray(5, len + 1)
          this.buf = this.buf.subarray(len + 1)
          return [t, body]
        }
      }
      await new Promise<void>((r) => {
        this.waiting = r
      })
      this.waiting = null
    }
  }

  private async until(type: string): Promise<[string, Buffer][]> {
    const seen: [string, Buffer][] = []
    for (;;) {
      const m = await this.next()
      seen.push(m)
      if (m[0] === type) return seen
    }
  }

  async query(sql: string): Promise<Buffer[]> {
    this.s.write(msg('Q', cstr(sql)))
    const ms = await this.until('Z')
    const err = ms.find((m) => m[0] === 'E')
    if (err) throw new Error(`PostgreSQL: ${err[1].toString('utf8').replace(/\0/g, ' ')}`)
    return ms.filter((m) => m[0] === 'd').map((m) => Buffer.from(m[1]))
  }

  close(): void {
    this.s.end()
  }
}

function psql(sql: string, input?: string): string {
  const r = spawnSync('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1', '-U', 'postgres', '-d', 'test', '-At', '-c', sql], {
    input,
    encoding: 'utf8',
  })
  if (r.status !== 0) throw new Error(`psql: ${r.stderr}`)
  return r.stdout
}

const VALUES: (string | null)[] = [
  'plain',
  'tab\there',
  'new\nline',
  'carriage\rreturn',
  'back\\slash',
  'com,ma',
  'semi;colon',
  'quote"inside',
  "single'quote",
  '\\N',
  '',
  null,
  'ünïcødé ✓ 😀',
  '"',
  '\\',
  'NULL',
  '****',
  'end with space ',
]

const mask = (strategy: 'redact' | 'partial' | 'hash' | 'null', keep?: number): ColumnAction =>
  keep === undefined
    ? { action: 'mask', rule: 'r', strategy, derived: false }
    : { action: 'mask', rule: 'r', strategy, keep, derived: false }
const plan = (m: ColumnAction, typeOid: number): ColumnPlan => ({ mask: m, typeOid, format: 0 })
const KEEP: ColumnAction = { action: 'keep' }

// id int, secret text (partial 3), token text (hash), note text (kept), n int (redact → NULL)
const PLANS: ColumnPlan[] = [plan(KEEP, 23), plan(mask('partial', 3), 25), plan(mask('hash'), 25), plan(KEEP, 25), plan(mask('redact'), 23)]

function partialOf(v: string, keep: number): string {
  const cps = [...v]
  return cps.length <= keep ? '****' : `****${cps.slice(-keep).join('')}`
}
const hashOf = (v: string): string => createHmac('sha256', KEY).update(v).digest('hex').slice(0, 32)

const FORMATS: { name: string; options: string; fmt: CopyFormat }[] = [
  { name: 'text', options: '', fmt: { format: 'text', delimiter: '\t', null: '\\N', quote: '"', escape: '"', header: false } },
  {
    name: 'text, delimiter | and NULL ****',
    options: "(DELIMITER '|', NULL '****')",
    fmt: { format: 'text', delimiter: '|', null: '****', quote: '"', escape: '"', header: false },
  },
  { name: 'csv', options: '(FORMAT csv)', fmt: { format: 'csv', delimiter: ',', null: '', quote: '"', escape: '"', header: false } },
  {
    name: "csv with header, delimiter ;, quote ', escape \\, NULL NULL",
    options: "(FORMAT csv, HEADER, DELIMITER ';', QUOTE '''', ESCAPE '\\', NULL 'NULL')",
    fmt: { format: 'csv', delimiter: ';', null: 'NULL', quote: "'", escape: '\\', header: true },
  },
  {
    name: 'csv, FORCE_QUOTE *',
    options: '(FORMAT csv, FORCE_QUOTE *)',
    fmt: { format: 'csv', delimiter: ',', null: '', quote: '"', escape: '"', header: false },
  },
]

describe('COPY masker against real PostgreSQL output', () => {
  let pg: RawPg
  before(async () => {
    psql(`CREATE SCHEMA ${SCHEMA}; CREATE TABLE ${SCHEMA}.t (id int, secret text, token text, note text, n int)`)
    const rows = VALUES.map((v, i) => {
      const lit = v === null ? 'NULL' : `'${v.replace(/'/g, "''")}'`
      return `(${i}, ${lit}, ${lit}, ${lit}, ${i})`
    })
    psql(`INSERT INTO ${SCHEMA}.t VALUES ${rows.join(', ')}`)
    pg = await RawPg.open()
  })
  after(() => {
    pg?.close()
    psql(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`)
  })

  for (const f of FORMATS) {
    test(`${f.name}: masked rows are valid COPY holding exactly the masked values`, async () => {
      const payloads = await pg.query(`COPY (SELECT * FROM ${SCHEMA}.t ORDER BY id) TO STDOUT ${f.options}`)
      const m = compileCopyMasker(PLANS, f.fmt, KEY)
      const out = payloads.map((p) => m.rewrite(p))
      if (f.fmt.header) assert.equal(out[0], payloads[0], 'the header line passes untouched')
      // Load the masked output back through PostgreSQL's own COPY parser.
      psql(`DROP TABLE IF EXISTS ${SCHEMA}.back; CREATE TABLE ${SCHEMA}.back (LIKE ${SCHEMA}.t)`)
      const fromOpts = f.options.replace(/,? ?FORCE_QUOTE \*/, '')
      psql(`COPY ${SCHEMA}.back FROM STDIN ${fromOpts}`, Buffer.concat(out).toString('utf8'))
      const back = JSON.parse(
        psql(`SELECT coalesce(json_agg(json_build_array(id, secret, token, note, n) ORDER BY id), '[]') FROM ${SCHEMA}.back`),
      ) as [number, string | null, string | null, string | null, number | null][]
      assert.equal(back.length, VALUES.length)
      for (const [id, secret, token, note, n] of back) {
        const v = VALUES[id] as string | null
        // PostgreSQL's text format writes a value equal to the NULL string unescaped (its documented
        // ambiguity): that row reads back as NULL whatever the masker does.
        if (f.fmt.format === 'text' && v === f.fmt.null) continue
        assert.equal(secret, v === null ? null : partialOf(v, 3), `secret of ${JSON.stringify(v)}`)
        assert.equal(token, v === null ? null : hashOf(v), `token of ${JSON.stringify(v)}`)
        assert.equal(note, v, `the kept column of ${JSON.stringify(v)}`)
        assert.equal(n, null, 'a masked int column is NULL')
      }
    })
  }

  test('a row with nothing to change is the same Buffer', async () => {
    const payloads = await pg.query(`COPY (SELECT id, secret FROM ${SCHEMA}.t WHERE secret IS NULL) TO STDOUT`)
    const m = compileCopyMasker([plan(KEEP, 23), plan(mask('redact'), 25)], FORMATS[0]?.fmt as CopyFormat, KEY)
    assert.equal(payloads.length, 1)
    assert.equal(m.rewrite(payloads[0] as Buffer), payloads[0])
    const none = compileCopyMasker([plan(KEEP, 23), plan(KEEP, 25)], FORMATS[0]?.fmt as CopyFormat, KEY)
    for (const p of await pg.query(`COPY (SELECT id, secret FROM ${SCHEMA}.t) TO STDOUT`)) assert.equal(none.rewrite(p), p)
  })
})

describe('COPY masker: malformed rows and formats', () => {
  const text = FORMATS[0]?.fmt as CopyFormat
  const csv = FORMATS[2]?.fmt as CopyFormat
  const two = [plan(KEEP, 23), plan(mask('redact'), 25)]

  test('bad rows throw MaskingError', () => {
    for (const [fmt, row] of [
      [text, '1\tx'], // no newline
      [text, '1\n'], // too few fields
      [text, '1\tx\ty\n'], // too many
      [text, '1\tx\\\n'.slice(0, -1)], // ends inside an escape
      [csv, '1,"x\n'], // ends inside quotes
      [csv, '1,x,y\n'],
    ] as const) {
      assert.throws(
        () => compileCopyMasker(two, fmt, KEY).rewrite(Buffer.from(row)),
        (e: unknown) => e instanceof MaskingError,
        JSON.stringify(row),
      )
    }
  })

  test('delimiters must be one single-byte character', () => {
    assert.throws(() => compileCopyMasker(two, { ...csv, delimiter: '||' }, KEY), MaskingError)
    assert.throws(() => compileCopyMasker(two, { ...csv, quote: '§' }, KEY), MaskingError)
  })
})

// ---- random rows through a reference encoder ---------------------------------------------------

function encodeText(vals: (string | null)[], fmt: CopyFormat): Buffer {
  const esc = (v: string): string =>
    v
      .replace(
        /[\\\b\f\n\r\t\v]/g,
        (c) => ({ '\\': '\\\\', '\b': '\\b', '\f': '\\f', '\n': '\\n', '\r': '\\r', '\t': '\\t', '\v': '\\v' })[c] ?? c,
      )
      .split(fmt.delimiter)
      .join(`\\${fmt.delimiter}`)
  return Buffer.from(`${vals.map((v) => (v === null ? fmt.null : esc(v))).join(fmt.delimiter)}\n`)
}

function encodeCsv(vals: (string | null)[], fmt: CopyFormat, forceQuote: boolean): Buffer {
  const q = (v: string): string => {
    const needs =
      forceQuote ||
      v === fmt.null ||
      v.includes(fmt.delimiter) ||
      v.includes(fmt.quote) ||
      v.includes('\n') ||
      v.includes('\r') ||
      v.includes(fmt.escape)
    if (!needs) return v
    let s = ''
    for (const c of v) s += c === fmt.quote || c === fmt.escape ? fmt.escape + c : c
    return fmt.quote + s + fmt.quote
  }
  return Buffer.from(`${vals.map((v) => (v === null ? fmt.null : q(v))).join(fmt.delimiter)}\n`)
}

function decodeText(line: Buffer, fmt: CopyFormat): (string | null)[] {
  const s = line.toString('utf8').slice(0, -1)
  const out: (string | null)[] = []
  let cur = ''
  let raw = ''
  for (let i = 0; i <= s.length; i++) {
    const c = s[i]
    if (c === undefined || c === fmt.delimiter) {
      out.push(raw === fmt.null ? null : cur)
      cur = ''
      raw = ''
      continue
    }
    if (c === '\\') {
      const d = s[++i] as string
      raw += c + d
      cur += ({ b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v' } as Record<string, string>)[d] ?? d
    } else {
      raw += c
      cur += c
    }
  }
  return out
}

function decodeCsv(line: Buffer, fmt: CopyFormat): (string | null)[] {
  const s = line.toString('utf8').slice(0, -1)
  const out: (string | null)[] = []
  let i = 0
  for (;;) {
    let v = ''
    let quoted = false
    if (s[i] === fmt.quote) {
      quoted = true
      i++
      for (;;) {
        const c = s[i] as string
        if (
          c === fmt.escape &&
          (s[i + 1] === fmt.quote || s[i + 1] === fmt.escape) &&
          !(fmt.escape === fmt.quote && s[i + 1] !== fmt.quote)
        ) {
          v += s[i + 1]
          i += 2
        } else if (c === fmt.quote) {
          i++
          break
        } else {
          v += c
          i++
        }
      }
    }
    while (i < s.length && s[i] !== fmt.delimiter) v += s[i++]
    out.push(!quoted && v === fmt.null ? null : v)
    if (i >= s.length) return out
    i++
  }
}

describe('COPY masker: random rows round-trip (fast-check)', () => {
  const value = fc.option(
    fc.string({ unit: fc.constantFrom('a', 'ü', '😀', ',', ';', '|', '\t', '\n', '\r', '\\', '"', "'", 'N', ' ', '*'), maxLength: 8 }),
    {
      nil: null,
    },
  )
  const action = fc.constantFrom<ColumnAction>(KEEP, mask('redact'), mask('partial', 2), mask('hash'), mask('null'))
  const fmts = [FORMATS[0], FORMATS[1], FORMATS[2], FORMATS[3]].map((f) => (f as { fmt: CopyFormat }).fmt)

  test('kept fields survive byte for byte, masked ones decode to the masked value', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(value, action), { minLength: 1, maxLength: 6 }),
        fc.constantFrom(...fmts),
        fc.boolean(),
        (cols, fmt, force) => {
          const vals = cols.map((c) => c[0])
          const line = fmt.format === 'csv' ? encodeCsv(vals, fmt, force) : encodeText(vals, fmt)
          // The text format's NULL marker may collide with a value only when PostgreSQL would have escaped it.
          if (fmt.format === 'text' && vals.some((v) => v !== null && encodeText([v], fmt).toString().slice(0, -1) === fmt.null)) return
          const m = compileCopyMasker(
            cols.map((c) => plan(c[1], 25)),
            { ...fmt, header: false },
            KEY,
          )
          const out = m.rewrite(line)
          const got = fmt.format === 'csv' ? decodeCsv(out, fmt) : decodeText(out, fmt)
          assert.equal(got.length, vals.length)
          cols.forEach(([v, a], i) => {
            let want: string | null = v
            if (v !== null && a.action === 'mask') {
              want = a.strategy === 'null' ? null : a.strategy === 'redact' ? '****' : a.strategy === 'hash' ? hashOf(v) : partialOf(v, 2)
            }
            assert.equal(
              got[i],
              want,
              `${JSON.stringify(v)} ${JSON.stringify(a)} in ${JSON.stringify(line.toString())} → ${JSON.stringify(out.toString())}`,
            )
          })
          if (cols.every(([v, a]) => v === null || a.action === 'keep')) assert.equal(out, line)
        },
      ),
      { numRuns: 1500 },
    )
  })
})
