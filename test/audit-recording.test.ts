// Session recordings and retention: a PostgreSQL session's recording replays the same statements
// (with their parameters, decisions and results) in the same order, with the same chain, as the
// audit log holds; per-connection retention removes old recordings (the log can still rebuild the
// timeline); audit retention prunes whole segments and what remains still verifies.

import assert from 'node:assert/strict'
import { mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, test } from 'node:test'
import pg from 'pg'
import pino from 'pino'
import { AuditLog, readAuditEvents } from '../engine/audit/writer.js'
import { DEFAULT_AUDIT_CONFIG, parseAuditConfig } from '../engine/audit/config.js'
import { loadAuditKey } from '../engine/audit/keys.js'
import { AuditServices } from '../engine/audit/service.js'
import { SegmentTrust } from '../engine/audit/trusted.js'
import { verifyAuditLog } from '../engine/audit/verify.js'
import { findRecording, PendingLines, Recorder, recordingsDir } from '../engine/audit/recording.js'
import { LOCAL_PG, TestGateway } from './helpers/gateway.js'

type Entry = Record<string, unknown>

function parseLines(text: string): Entry[] {
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Entry)
}

async function session(gw: TestGateway, token: string, db: string, work: (c: pg.Client) => Promise<void>): Promise<void> {
  const c = new pg.Client({ host: '127.0.0.1', port: gw.pgPort, database: db, user: 'alice', password: token })
  await c.connect()
  try {
    await work(c)
  } finally {
    await c.end()
  }
}

describe('session recordings and retention', () => {
  const cleanups: (() => Promise<void> | void)[] = []
  after(async () => {
    for (const c of cleanups) await c()
  })

  test('a recording replays the same statements, in the same order, with the same chain', async () => {
    const gw = await TestGateway.start()
    cleanups.push(() => gw.cleanup())
    const alice = gw.token('user:alice', ['--group', 'writers'])
    const d = gw.cli(['token', 'delegate', '--agent', 'summarizer', '--token', alice])
    assert.equal(d.code, 0, d.stderr)
    const agent = d.stdout.trim()
    await session(gw, agent, 'app', async (c) => {
      await c.query('SELECT 1 AS one')
      await c.query({ text: 'SELECT $1::int + $2::int AS sum', values: [2, 3] })
      await c.query("SELECT 'third', pg_sleep(0.05)")
      await assert.rejects(c.query('CREATE TEMP TABLE nope (x int)'))
      await c.query('SELECT generate_series(1, 5)')
    })
    await new Promise((r) => setTimeout(r, 300))
    const starts = gw.auditEvents(['--type', 'session.start', '--principal', 'agent:summarizer'])
    assert.equal(starts.length, 1)
    const id = String(starts[0]?.session)
    const fromLog = gw.auditEvents(['--session', id])

    const exp = gw.cli(['sessions', 'export', id])
    assert.equal(exp.code, 0, exp.stderr)
    const [header, ...entries] = parseLines(exp.stdout)
    assert.equal(header?.kind, 'timeline')
    assert.deepEqual(header?.chain, ['user:alice', 'agent:summarizer'])
    assert.deepEqual(header?.chain, fromLog[0]?.chain)
    assert.deepEqual(
      entries.map((e) => [e.type, e.audit, e.h]),
      fromLog.map((e) => [e.type, e.id, e.h]),
      'the recording follows the audit log event for event, with ids and hashes to check it by',
    )
    const statements = entries.filter((e) => e.type === 'statement')
    assert.deepEqual(
      statements.map((e) => e.sql),
      [
        'SELECT 1 AS one',
        'SELECT $1::int + $2::int AS sum',
        "SELECT 'third', pg_sleep(0.05)",
        'CREATE TEMP TABLE nope (x int)',
        'SELECT generate_series(1, 5)',
      ],
    )
    assert.deepEqual(statements[1]?.params, ['2', '3'])
    assert.deepEqual(
      statements.map((e) => e.decision),
      ['allow', 'allow', 'allow', 'deny', 'allow'],
    )
    const results = entries.filter((e) => e.type === 'result')
    assert.deepEqual(
      results.map((e) => e.rows),
      [1, 1, 1, 5],
    )
    assert.ok(results.every((e) => typeof e.duration_ms === 'number'))
    const third = entries.find((e) => e.type === 'result' && e.seq === 3)
    assert.ok(Number(third?.duration_ms) >= 50)
    const times = entries.map((e) => Number(e.t))
    assert.ok(times.every((t, i) => i === 0 || t >= (times[i - 1] as number)))

    const replay = gw.cli(['sessions', 'replay', id])
    assert.equal(replay.code, 0, replay.stderr)
    const lines = replay.stdout.split('\n')
    assert.match(lines[0] as string, /user:alice > agent:summarizer/)
    const order = ['SELECT 1 AS one', 'SELECT $1::int + $2::int AS sum', "SELECT 'third'", 'CREATE TEMP TABLE nope', 'generate_series']
    const at = order.map((s) => lines.findIndex((l) => l.includes(s)))
    assert.ok(
      at.every((x, i) => x > 0 && (i === 0 || x > (at[i - 1] as number))),
      replay.stdout,
    )
    assert.match(replay.stdout, /params \["2","3"\]/)
    assert.match(replay.stdout, /deny/)

    // Someone who can write the data directory edits the recording: the deny becomes an allow of
    // another statement. Replay checks every line against the audit event it claims and refuses.
    const found = findRecording(recordingsDir(gw.dataDir), id)
    assert.ok(found)
    const original = readFileSync(found.path, 'utf8')
    writeFileSync(
      found.path,
      original.replace('"decision":"deny"', '"decision":"allow"').replace('CREATE TEMP TABLE nope (x int)', 'SELECT 42'),
    )
    const tampered = gw.cli(['sessions', 'replay', id])
    assert.notEqual(tampered.code, 0)
    assert.match(tampered.stderr, /does not match the audit log: recording line \d+ \([0-9a-f]+-\d+\): differs from the audit event/)
    assert.doesNotMatch(tampered.stdout, /SELECT 42/)
    // A line whose event the log does not hold.
    const last = original.trimEnd().split('\n').at(-1) as string
    const extra = last.replace(/"id":"([0-9a-f]+)-\d+"/, '"id":"$1-999999"')
    writeFileSync(found.path, `${original}${extra}\n`)
    const invented = gw.cli(['sessions', 'replay', id])
    assert.notEqual(invented.code, 0)
    assert.match(invented.stderr, /recording line \d+ \([0-9a-f]+-999999\): no such event/)
    writeFileSync(found.path, original)
    assert.equal(gw.cli(['sessions', 'replay', id]).code, 0)
  })

  test('per-connection retention removes old recordings; the audit log still rebuilds their timeline', async () => {
    const gw = await TestGateway.start({
      connections: [LOCAL_PG, { ...LOCAL_PG, name: 'longer' }],
      config: { audit: { recordings: { retention: '30d', connections: { app: { retention: '1d' } } } } },
    })
    cleanups.push(() => gw.cleanup())
    const token = gw.token('user:alice')
    await session(gw, token, 'app', (c) => c.query("SELECT 'short-lived'").then(() => undefined))
    await session(gw, token, 'longer', (c) => c.query("SELECT 'kept'").then(() => undefined))
    await gw.stop()
    const rec = join(gw.dataDir, 'recordings')
    const twoDaysAgo = new Date(Date.now() - 2 * 86400_000)
    for (const conn of ['app', 'longer']) {
      const files = readdirSync(join(rec, conn))
      assert.equal(files.length, 1)
      utimesSync(join(rec, conn, files[0] as string), twoDaysAgo, twoDaysAgo)
    }
    const appSession = (readdirSync(join(rec, 'app'))[0] as string).replace('.jsonl', '')
    await gw.launch() // retention runs at start (and hourly)
    await new Promise((r) => setTimeout(r, 500))
    assert.deepEqual(readdirSync(join(rec, 'app')), [], 'app keeps recordings one day')
    assert.equal(readdirSync(join(rec, 'longer')).length, 1, 'longer keeps them 30 days')
    const rebuilt = gw.cli(['sessions', 'export', appSession])
    assert.equal(rebuilt.code, 0, rebuilt.stderr)
    assert.ok(parseLines(rebuilt.stdout).some((e) => e.sql === "SELECT 'short-lived'"))
    await gw.stop()
    assert.equal(gw.cli(['audit', 'verify']).code, 0)
  })

  test('audit retention prunes whole segments; what remains verifies, anchored by signed records', async () => {
    const root = mkdtempSync(join(tmpdir(), 'gh-retention-'))
    cleanups.push(() => rmSync(root, { recursive: true, force: true }))
    const dir = join(root, 'audit')
    for (let run = 0; run < 2; run++) {
      const log = new AuditLog(dir, 'batched', 200, { segmentMaxBytes: 2048 })
      log.open()
      for (let i = 0; i < 30; i++) {
        await log.append({ type: 'statement', session: `s-${run}`, chain: ['user:alice'], connection: 'app', sql: `SELECT ${i}` })
      }
      log.close()
    }
    const before = readdirSync(dir).filter((f) => f.endsWith('.jsonl')).length
    assert.ok(before >= 6)
    const log = new AuditLog(dir, 'batched', 200)
    log.open()
    const { config } = parseAuditConfig({ retention: '1d' }, root)
    assert.equal(config.retentionSeconds, 86400)
    const svc = AuditServices.start({
      audit: log,
      config: { ...config, recordings: { ...DEFAULT_AUDIT_CONFIG.recordings, enabled: false } },
      dataDir: root,
      baseDir: root,
      log: pino({ level: 'silent' }),
    })
    assert.deepEqual(svc.applyRetention(), [], 'nothing is a day old yet')
    const removed = svc.applyRetention(Date.now() + 2 * 86400_000)
    assert.equal(removed.length, before, 'every sealed segment is older than a day two days from now')
    await log.append({ type: 'statement', session: 's-after', chain: ['user:alice'], connection: 'app', sql: 'SELECT after' })
    log.close()
    await svc.stop()
    const key = loadAuditKey(join(root, 'keys')).publicKey
    const r = verifyAuditLog(dir, { publicKeys: [key] })
    assert.equal(r.problem, null)
    assert.equal(r.pruned, before)
    const prune = readAuditEvents(dir, { type: 'audit.prune' }, new SegmentTrust([key]))
    assert.equal(prune.length, 1)
    assert.equal(prune[0]?.first_kept, before + 1)
  })
})

describe("a recording's pending lines", () => {
  test('hold exactly the lines pushed, as UTF-8, across growth, takes and reuse', () => {
    const p = new PendingLines()
    assert.equal(p.empty, true)
    // Multi-byte text (2-, 3- and 4-byte UTF-8, and a lone surrogate, which encodes as U+FFFD),
    // long enough to make the buffer grow several times within one interval.
    const samples = ['plain ascii', 'café — ünïcode', '東京の表', '🔑 key 🔒', 'x'.repeat(20_000), 'lone \ud800 half', '']
    let expected = ''
    for (let i = 0; i < 300; i++) {
      const line = `${i}:${samples[i % samples.length]}`
      p.push(line)
      expected += `${line}\n`
    }
    assert.equal(p.empty, false)
    assert.ok(p.take().equals(Buffer.from(expected, 'utf8')), 'the bytes are the UTF-8 of the lines, each ended by a newline')
    assert.equal(p.empty, true)
    // Reused after a take: only what came since.
    p.push('after')
    assert.equal(p.take().toString('utf8'), 'after\n')
    p.push('dropped')
    p.clear()
    assert.equal(p.empty, true)
    assert.equal(p.take().length, 0)
  })
})

describe("a plugin's timeline entries", () => {
  test('carry the fields as given, then t, time and type, which the fields cannot overwrite', async () => {
    const root = mkdtempSync(join(tmpdir(), 'gh-rec-entry-'))
    const log = new AuditLog(join(root, 'audit'), 'batched', 200)
    log.open()
    const rec = new Recorder(join(root, 'recordings'), DEFAULT_AUDIT_CONFIG.recordings, pino({ level: 'silent' }))
    rec.attach(log)
    try {
      await log.append({ type: 'session.start', session: 's-entry', connection: 'web', chain: ['user:alice'] })
      rec.entry('s-entry', 'http.exchange', { seq: 1, request: { method: 'GET', headers: { 'x-a': 'é"\n' } }, gone: undefined })
      rec.entry('s-entry', 'http.exchange', {})
      rec.entry('s-entry', 'http.exchange', { seq: 3, t: -5, time: 'then', type: 'forged' })
      await rec.close()
      const lines = parseLines(readFileSync(join(root, 'recordings', 'web', 's-entry.jsonl'), 'utf8')).filter(
        (l) => l.type === 'http.exchange',
      )
      assert.equal(lines.length, 3)
      const [a, b, c] = lines as [Entry, Entry, Entry]
      assert.deepEqual(Object.keys(a), ['seq', 'request', 't', 'time', 'type'])
      assert.deepEqual(a.request, { method: 'GET', headers: { 'x-a': 'é"\n' } })
      assert.deepEqual(Object.keys(b), ['t', 'time', 'type'])
      for (const l of lines) {
        assert.equal(typeof l.t, 'number')
        assert.ok((l.t as number) >= 0)
        assert.match(String(l.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
      }
      assert.equal(c.seq, 3)
      assert.equal(c.type, 'http.exchange')
      assert.notEqual(c.time, 'then')
      assert.ok((c.t as number) >= 0)
    } finally {
      log.close()
      rmSync(root, { recursive: true, force: true })
    }
  })
})
