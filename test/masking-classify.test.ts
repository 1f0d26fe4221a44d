// `gatehouse classify` against the real PostgreSQL, through the real CLI: a schema of fake PII under a
// unique name, the suggestions asserted (by column name, by sampled values, detectors for free
// text, a column whose name no pattern can hold), the YAML valid masking.yaml, --json, and no
// sampled value anywhere in what the command prints. The schema is dropped afterwards.

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import yaml from 'js-yaml'
import { FileProblems, parseMasking } from '../engine/policy/data.js'
import { BIN, LOCAL_PG } from './helpers/gateway.js'

const SCHEMA = `gh_classify_${process.pid}_${Date.now()}`
const N = 30

function psql(sql: string): void {
  const r = spawnSync('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1', '-U', 'postgres', '-d', 'test', '-c', sql], {
    encoding: 'utf8',
  })
  if (r.status !== 0) throw new Error(`psql: ${r.stderr}`)
}

// Valid (Luhn / mod-97) test numbers, made unique per row where the checksum allows.
const CARDS = ['4111111111111111', '5555555555554444', '378282246310005', '6011111111111117', '4012888888881881']
const IBANS = ['DE89370400440532013000', 'GB82WEST12345698765432', 'FR1420041010050500013M02606', 'NL91ABNA0417164300']

/** Every value inserted, so the test can look for any of them in the output. */
const inserted: string[] = []
function v(s: string): string {
  inserted.push(s)
  return `'${s.replaceAll("'", "''")}'`
}

function cli(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 120_000 })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

describe('gatehouse classify', () => {
  let dir: string
  let config: string
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'gh-classify-'))
    config = join(dir, 'gatehouse.yaml')
    writeFileSync(
      config,
      yaml.dump({
        data_dir: join(dir, 'data'),
        connections: [LOCAL_PG, { ...LOCAL_PG, name: 'withsecret', password: 'env:GH_CLASSIFY_MISSING_SECRET' }],
      }),
    )
    psql(`CREATE SCHEMA ${SCHEMA}`)
    psql(
      `CREATE TABLE ${SCHEMA}.customers (id int, email text, full_name text, password_hash text, phone text, contact text, notes text, score int, dob date, "odd.name" text)`,
    )
    psql(`CREATE TABLE ${SCHEMA}.payments (id int, card_number text, ref text, memo text, amount numeric)`)
    const rows: string[] = []
    const pays: string[] = []
    for (let i = 0; i < N; i++) {
      rows.push(
        `(${i}, ${v(`zq${i}x@example.com`)}, ${v(`Person Number${i}`)}, ${v(`$2b$12$hashhashhash${i}`)}, ${v(`+44 20 7946 ${String(1000 + i)}`)}, ` +
          `${v(`contact-${i}-kq@mail-${i}.example.org`)}, ${v(i % 10 === 0 ? `write to nb${i}q@example.net please` : `plain note ${i}`)}, ${i}, '1980-01-01', ${v(`odd${i}z@example.com`)})`,
      )
      pays.push(
        `(${i}, ${v(CARDS[i % CARDS.length] as string)}, ${v(IBANS[i % IBANS.length] as string)}, ${v(i % 15 === 0 ? `refund to card 4242 4242 4242 4242 ref ${i}` : `memo ${i}`)}, ${i * 3})`,
      )
    }
    psql(`INSERT INTO ${SCHEMA}.customers VALUES ${rows.join(', ')}`)
    psql(`INSERT INTO ${SCHEMA}.payments VALUES ${pays.join(', ')}`)
  })
  after(() => {
    psql(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`)
    rmSync(dir, { recursive: true, force: true })
  })

  test('suggests rules by name and by sampled values, detectors for free text, and prints no value', () => {
    const r = cli(['classify', 'app', '--config', config, '--sample', '50'])
    assert.equal(r.code, 0, r.stderr)
    const doc = yaml.load(r.stdout) as {
      rules: { name: string; columns: string[]; strategy: string; keep?: number }[]
      detectors: string[]
    }
    // It is valid masking.yaml, as it stands.
    const p = new FileProblems('suggested')
    parseMasking(doc, p)
    assert.deepEqual(p.list, [])

    const ours = new Map(
      doc.rules.filter((x) => x.columns[0]?.startsWith(`${SCHEMA}.`)).map((x) => [x.columns[0]?.slice(SCHEMA.length + 1), x]),
    )
    const strategy = (c: string): string => {
      const rule = ours.get(c)
      return rule ? `${rule.strategy}${rule.keep !== undefined ? `:${rule.keep}` : ''}` : 'none'
    }
    assert.equal(strategy('customers.email'), 'hash')
    assert.equal(strategy('customers.full_name'), 'redact')
    assert.equal(strategy('customers.password_hash'), 'null')
    assert.equal(strategy('customers.phone'), 'partial:4')
    assert.equal(strategy('customers.dob'), 'null')
    assert.equal(strategy('customers.contact'), 'hash', 'no telling name: found by its values')
    assert.equal(strategy('payments.card_number'), 'partial:4')
    assert.equal(strategy('payments.ref'), 'partial:4', 'IBANs by their values')
    for (const c of ['customers.id', 'customers.score', 'customers.notes', 'payments.memo', 'payments.amount']) {
      assert.equal(strategy(c), 'none', c)
    }

    // Why, in counts.
    assert.match(r.stdout, new RegExp(`# ${N}/${N} sampled values are e-mail addresses\\n  - name: customers-contact`))
    assert.match(
      r.stdout,
      /# the column name suggests e-mail addresses\n {2}# 30\/30 sampled values are e-mail addresses\n {2}- name: customers-email/,
    )
    assert.match(r.stdout, new RegExp(`# ${SCHEMA}\\.customers\\.notes: 3/${N} sampled values contain e-mail addresses`))
    assert.match(r.stdout, new RegExp(`# ${SCHEMA}\\.payments\\.memo: 2/${N} sampled values contain payment card numbers`))
    assert.ok(doc.detectors.includes('email') && doc.detectors.includes('card'))
    assert.match(r.stdout, new RegExp(`# not suggested: ${SCHEMA}\\.customers\\.odd\\.name: ${N}/${N} sampled values are e-mail addresses`))

    // Not one sampled value, nor a piece of one, in anything printed.
    for (const s of inserted) {
      assert.ok(!r.stdout.includes(s) && !r.stderr.includes(s), `sampled value ${JSON.stringify(s)} was printed`)
    }
    for (const piece of ['zq1x', 'kq@', 'nb10q', '4242 4242', 'hashhash', '7946']) assert.ok(!r.stdout.includes(piece), piece)
  })

  test('--json', () => {
    const r = cli(['classify', 'app', '--config', config, '--json'])
    assert.equal(r.code, 0, r.stderr)
    const j = JSON.parse(r.stdout) as {
      connection: string
      tables: number
      rules: { name: string; columns: string[]; strategy: string; why: string[] }[]
      detectors: { name: string; why: string[] }[]
    }
    assert.equal(j.connection, 'app')
    assert.ok(j.tables >= 2)
    const contact = j.rules.find((x) => x.columns[0] === `${SCHEMA}.customers.contact`)
    assert.deepEqual(contact?.why, [`${N}/${N} sampled values are e-mail addresses`])
    for (const s of inserted) assert.ok(!r.stdout.includes(s))
  })

  test('--sample bounds what is read', () => {
    const r = cli(['classify', 'app', '--config', config, '--sample', '5'])
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /# 5\/5 sampled values are e-mail addresses\n {2}- name: customers-contact/)
  })

  test('bad input gets clear errors', () => {
    const missing = cli(['classify', 'nope', '--config', config])
    assert.equal(missing.code, 2)
    assert.match(missing.stderr, /gatehouse: no connection named "nope" in \S*gatehouse\.yaml/)
    const sample = cli(['classify', 'app', '--config', config, '--sample', '0'])
    assert.equal(sample.code, 2)
    assert.match(sample.stderr, /--sample must be a whole number from 1 to 10000/)
    const secret = cli(['classify', 'withsecret', '--config', config])
    assert.equal(secret.code, 1)
    assert.match(secret.stderr, /secret env:GH_CLASSIFY_MISSING_SECRET is not set/)
  })
})
