// Crash recovery on real files, in process: the events a crash left after the last signed record
// are sealed as unattested (named in the signed recovery checkpoint, reported by verify), a sink's
// byte-identical copy attests them and shows a rewrite, the mark cannot be moved; files that are
// not segments fail verify, and readers open only segments the audit key signed.

import assert from 'node:assert/strict'
import { generateKeyPairSync, sign } from 'node:crypto'
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, test } from 'node:test'
import pino from 'pino'
import { AuditLog } from '../engine/audit/writer.js'
import { encodeLine, signedMessage } from '../engine/audit/format.js'
import { loadAuditKey } from '../engine/audit/keys.js'
import { readAuditEvents, unattestedSummary } from '../engine/audit/query.js'
import { LOCK_NAME, listSegments } from '../engine/audit/segments.js'
import { startSinks } from '../engine/audit/sinks.js'
import { SegmentTrust } from '../engine/audit/trusted.js'
import { verifyAuditLog } from '../engine/audit/verify.js'
import type { AuditEvent } from '../engine/types.js'

type Ev = Record<string, unknown>

function stmt(i: number): AuditEvent {
  return { type: 'statement', session: 's-test', chain: ['user:alice'], connection: 'app', seq: i, sql: `SELECT ${i}`, decision: 'allow' }
}

const roots: string[] = []
function newRoot(): string {
  const r = mkdtempSync(join(tmpdir(), 'gh-unattested-'))
  roots.push(r)
  return r
}

/**
 * A log whose writer "crashed" after 5 unsigned events: a copy of its files taken while it was
 * open (the checkpoint timer has not fired: the interval is a second and the appends are
 * synchronous). Returns the copy's root and the lines as a sink would have received them.
 */
function crashedCopy(): { root: string; received: Buffer } {
  const live = newRoot()
  const log = new AuditLog(join(live, 'audit'), 'batched', 50)
  log.open()
  for (let i = 1; i <= 3; i++) log.appendSync(stmt(i))
  log.checkpoint('interval')
  for (let i = 4; i <= 8; i++) log.appendSync(stmt(i))
  const root = newRoot()
  cpSync(live, root, { recursive: true })
  unlinkSync(join(root, 'audit', LOCK_NAME))
  log.close()
  const received = Buffer.concat(listSegments(join(root, 'audit')).segments.map((s) => readFileSync(s.path)))
  return { root, received }
}

function reopen(root: string): AuditLog {
  const log = new AuditLog(join(root, 'audit'), 'batched', 50)
  log.open()
  log.close()
  return log
}

function verify(root: string, checkpoints?: Buffer) {
  const key = loadAuditKey(join(root, 'keys')).publicKey
  return verifyAuditLog(join(root, 'audit'), { publicKeys: [key], ...(checkpoints ? { checkpoints } : {}) })
}

function lastSegment(root: string): { path: string; lines: string[] } {
  const seg = listSegments(join(root, 'audit')).segments.at(-1)
  assert.ok(seg)
  const lines = readFileSync(seg.path, 'utf8').split('\n')
  assert.equal(lines.pop(), '')
  return { path: seg.path, lines }
}

function rebuild(ev: Ev, prev: string): { line: string; h: string } {
  const { h: _h, prev: _p, id, time, ...rest } = ev
  return encodeLine(prev, String(id), String(time), JSON.stringify(rest))
}

describe('unattested events after a crash', () => {
  after(() => {
    for (const r of roots) rmSync(r, { recursive: true, force: true })
  })

  test('the recovery checkpoint names the unsigned events and verify reports them', () => {
    const { root } = crashedCopy()
    const log = reopen(root)
    assert.ok(log.recovery)
    // Header (1), three statements, the checkpoint (5): events 6 … 10 were never signed.
    assert.deepEqual(log.recovery.unattested, { from: 6, to: 10 })
    const r = verify(root)
    assert.equal(r.problem, null)
    assert.equal(r.unattested.length, 1)
    assert.equal(r.unattested[0]?.events, 5)
    assert.match(String(r.unattested[0]?.from), /-6$/)
    assert.match(String(r.unattested[0]?.to), /-10$/)
    assert.equal(r.unattestedEvents, 5)
  })

  test("a sink's byte-identical copy attests them; a rewrite shows against it", () => {
    const { root, received } = crashedCopy()
    // The intruder rewrites a statement of the unsigned tail and rehashes what follows it.
    const seg = lastSegment(root)
    const at = seg.lines.findIndex((l) => l.includes('"sql":"SELECT 6"'))
    let prev = String((JSON.parse(seg.lines[at - 1] as string) as Ev).h)
    for (let i = at; i < seg.lines.length; i++) {
      const ev = JSON.parse(seg.lines[i] as string) as Ev
      if (i === at) ev.sql = 'SELECT 666'
      const r = rebuild(ev, prev)
      seg.lines[i] = r.line
      prev = r.h
    }
    writeFileSync(seg.path, `${seg.lines.join('\n')}\n`)
    const clean = crashedCopy()
    reopen(root)
    reopen(clean.root)

    const alone = verify(root)
    assert.equal(alone.problem, null, 'the files alone cannot tell')
    assert.equal(alone.unattestedEvents, 5)
    const against = verify(root, received)
    assert.match(String(against.problem?.message), /differs from the copy a sink received: the log was rewritten there/)

    const attested = verify(clean.root, clean.received)
    assert.equal(attested.problem, null)
    assert.equal(attested.unattested[0]?.attestedBySink, 5)
    assert.equal(attested.unattestedEvents, 0)
    // A copy that goes on past the restart holds the recovery checkpoint itself: its mark is signed.
    const later = Buffer.concat(listSegments(join(clean.root, 'audit')).segments.map((x) => readFileSync(x.path)))
    assert.ok(later.includes('"reason":"recovery"'))
    const withSeal = verify(clean.root, later)
    assert.equal(withSeal.problem, null)
    assert.ok(withSeal.sinkCheckpoints >= 2)
    assert.equal(withSeal.unattestedEvents, 0)
  })

  test("an unsigned tail deleted before the restart passes the files alone but not a sink's copy", () => {
    const { root, received } = crashedCopy()
    const seg = lastSegment(root)
    const at = seg.lines.findIndex((l) => l.includes('"sql":"SELECT 4"'))
    writeFileSync(seg.path, `${seg.lines.slice(0, at).join('\n')}\n`)
    const log = reopen(root)
    assert.equal(log.recovery, null, 'the log ends in a checkpoint: nothing to seal')
    const alone = verify(root)
    assert.equal(alone.problem, null)
    assert.equal(alone.unattestedEvents, 0)
    // The next start writes on from the checkpoint; a sink had the deleted events.
    const again = new AuditLog(join(root, 'audit'), 'batched', 50)
    again.open()
    again.appendSync(stmt(100))
    again.close()
    const against = verify(root, received)
    assert.ok(against.problem)
    assert.match(against.problem.message, /holds a signed record there: events were removed before a restart/)
  })

  test('the mark is signed: moving its range breaks the recovery checkpoint', () => {
    const { root } = crashedCopy()
    reopen(root)
    const seg = listSegments(join(root, 'audit')).segments.find((s) => readFileSync(s.path, 'utf8').includes('"reason":"recovery"'))
    assert.ok(seg)
    const lines = readFileSync(seg.path, 'utf8').split('\n')
    lines.pop()
    const at = lines.findIndex((l) => l.includes('"reason":"recovery"'))
    const ev = JSON.parse(lines[at] as string) as Ev
    const u = ev.unattested as { from: string; to: string; events: number }
    ev.unattested = { ...u, from: u.to.replace(/-\d+$/, '-9'), events: 2 }
    lines[at] = rebuild(ev, String(ev.prev)).line
    writeFileSync(seg.path, `${lines.join('\n')}\n`)
    const r = verify(root)
    assert.ok(r.problem)
    assert.match(r.problem.message, /names 2 event\(s\) .* as unattested, but the events after the last signed record are 5 event\(s\)/)
  })

  test('a clean close leaves nothing unattested', () => {
    const root = newRoot()
    const log = new AuditLog(join(root, 'audit'), 'batched', 50)
    log.open()
    for (let i = 1; i <= 5; i++) log.appendSync(stmt(i))
    log.close()
    const again = reopen(root)
    assert.equal(again.recovery, null)
    const r = verify(root)
    assert.equal(r.problem, null)
    assert.deepEqual(r.unattested, [])
    assert.equal(r.unsigned, 0)
  })
})

describe('files that are not segments of the log', () => {
  test('a foreign file or a doubled segment number fails verify; readers skip files the key did not sign', () => {
    const root = newRoot()
    const dir = join(root, 'audit')
    const log = new AuditLog(dir, 'batched', 50)
    log.open()
    log.appendSync(stmt(1))
    log.close()
    const key = loadAuditKey(join(root, 'keys')).publicKey
    assert.equal(verify(root).problem, null)

    writeFileSync(join(dir, 'notes.txt'), 'hello\n')
    const r = verify(root)
    assert.match(String(r.problem?.message), /not a segment file of this log: notes\.txt/)
    unlinkSync(join(dir, 'notes.txt'))

    // The next segment number, with a header signed by another key and a statement after it.
    const seg = listSegments(dir).segments.at(-1)
    assert.ok(seg)
    const last = JSON.parse(readFileSync(seg.path, 'utf8').trim().split('\n').at(-1) as string) as Ev
    const logId = String(last.log)
    const n = Number(String(last.id).slice(logId.length + 1)) + 1
    const time = new Date().toISOString()
    const { privateKey } = generateKeyPairSync('ed25519')
    const header = {
      type: 'audit.segment',
      session: null,
      chain: [],
      connection: null,
      log: logId,
      segment: seg.index + 1,
      key: '0123456789abcdef',
      sig: sign(null, signedMessage('segment', logId, n, String(last.h), time, String(seg.index + 1)), privateKey).toString('base64url'),
    }
    const h1 = encodeLine(String(last.h), `${logId}-${n}`, time, JSON.stringify(header))
    const h2 = encodeLine(h1.h, `${logId}-${n + 1}`, time, JSON.stringify({ ...stmt(99), sql: 'SELECT forged' }))
    const forged = `${String(seg.index + 1).padStart(8, '0')}-20990101T000000Z.jsonl`
    writeFileSync(join(dir, forged), `${h1.line}\n${h2.line}\n`)
    assert.match(String(verify(root).problem?.message), /unknown key/)
    const trust = new SegmentTrust([key])
    const { rejected } = trust.segments(dir)
    assert.deepEqual(
      rejected.map((x) => x.name),
      [forged],
    )
    const events = readAuditEvents(dir, { type: 'statement' }, trust)
    assert.deepEqual(
      events.map((e) => e.sql),
      ['SELECT 1'],
    )

    // Two files claiming the genuine segment's number: neither is read, verify names both.
    unlinkSync(join(dir, forged))
    const twin = seg.name.replace(/-\d{8}T\d{6}Z/, '-20990101T000000Z')
    cpSync(seg.path, join(dir, twin))
    const v = verify(root)
    assert.ok(v.problem)
    assert.deepEqual([...v.foreign].sort(), [seg.name, twin].sort())
    assert.deepEqual(readAuditEvents(dir, { type: 'statement' }, trust), [])
  })

  test('a directory named like a segment, or a lone segment number claimed twice, fails verify naming the entry', () => {
    const root = newRoot()
    const dir = join(root, 'audit')
    const log = new AuditLog(dir, 'batched', 50)
    log.open()
    log.appendSync(stmt(1))
    log.close()
    const seg = listSegments(dir).segments.at(-1)
    assert.ok(seg)
    const next = `${String(seg.index + 1).padStart(8, '0')}-20990101T000000Z.jsonl`
    mkdirSync(join(dir, next))
    const r = verify(root)
    assert.ok(r.problem)
    assert.match(
      r.problem.message,
      new RegExp(`${next.replace(/\./g, '\\.')}.*not a segment file|not a segment file.*${next.replace(/\./g, '\\.')}`),
    )
    rmSync(join(dir, next), { recursive: true })
    assert.equal(verify(root).problem, null)

    // The only segment doubled by a 9-digit name for the same number: both names are given.
    const twin = `0${seg.name}`
    cpSync(seg.path, join(dir, twin))
    const v = verify(root)
    assert.ok(v.problem)
    assert.doesNotMatch(v.problem.message, /no audit segments/)
    assert.match(v.problem.message, new RegExp(twin.replace(/\./g, '\\.')))
  })

  test('after the restart a full-copy sink does not ship the unattested events, so its copy attests none of them', async () => {
    const { root } = crashedCopy()
    const dir = join(root, 'audit')
    const log = new AuditLog(dir, 'batched', 50)
    log.open()
    assert.ok(log.recovery?.unattested)
    const copy = join(root, 'full.jsonl')
    const config = { type: 'file' as const, name: 'full', path: copy, maxBytes: 1 << 30, keep: 1, checkpointsOnly: false }
    const sinks = startSinks([config], dir, root, root, pino({ level: 'silent' }), log.trust, log.recovery.unattested)
    log.appendSync(stmt(9))
    log.close()
    await Promise.all(sinks.map((s) => s.stop(3000)))
    const held = readFileSync(copy, 'utf8')
    assert.doesNotMatch(held, /"sql":"SELECT [45678]"/, 'the sealed unsigned events are not shipped')
    assert.match(held, /"sql":"SELECT 9"/, 'what the live writer wrote after the restart is shipped')
    const r = verify(root, readFileSync(copy))
    assert.equal(r.problem, null)
    assert.equal(r.unattestedEvents, 5)
  })

  test('readers mark the unattested events (audit list, export and the API read through them)', () => {
    const { root } = crashedCopy()
    const log = reopen(root)
    const key = loadAuditKey(join(root, 'keys')).publicKey
    const events = readAuditEvents(join(root, 'audit'), { type: 'statement' }, new SegmentTrust([key]))
    assert.ok(log.recovery?.unattested)
    assert.deepEqual(
      events.map((e) => [e.sql, (e as { unattested?: unknown }).unattested === true]),
      [1, 2, 3, 4, 5, 6, 7, 8].map((i) => [`SELECT ${i}`, i >= 4]),
    )
    assert.deepEqual(unattestedSummary(events)?.count, 5)
  })
})
