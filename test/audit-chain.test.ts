// The hash-chained audit log on real files: an untouched log verifies; one changed byte, a deleted,
// inserted or swapped event, a missing segment, a forged key, a tail cut in the middle of an event
// and a clean cut checked against a sink's checkpoints are each detected, and verify names the
// place. A real `kill -9` of a process that appends loses no acknowledged event, and the restart
// seals the crash (and a torn partial line) with a signed checkpoint so the log verifies again.

import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { generateKeyPairSync } from 'node:crypto'
import {
  appendFileSync,
  closeSync,
  cpSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { AuditLog, readAuditEvents } from '../engine/audit/writer.js'
import { encodeLine, encodeLineInto, eventJsonText, lineBytesBound, sha256Hex } from '../engine/audit/format.js'
import { loadAuditKey } from '../engine/audit/keys.js'
import { listSegments } from '../engine/audit/segments.js'
import { SegmentTrust } from '../engine/audit/trusted.js'
import { type VerifyResult, verifyAuditLog } from '../engine/audit/verify.js'
import type { AuditEvent } from '../engine/types.js'

const AUDIT_JS = resolve(fileURLToPath(import.meta.url), '../../engine/audit/writer.js')

function stmt(i: number, session = 's-test'): AuditEvent {
  return {
    type: 'statement',
    session,
    chain: ['user:alice', 'agent:bot'],
    connection: 'app',
    seq: i,
    sql: `SELECT ${i}`,
    decision: 'allow',
  }
}

/** A data dir with an audit log of several segments, deferred results and checkpoints. */
async function buildLog(root: string, statements = 60): Promise<void> {
  const log = new AuditLog(join(root, 'audit'), 'batched', 50, { segmentMaxBytes: 4000, checkpointIntervalMs: 20 })
  log.open()
  for (let i = 1; i <= statements; i++) {
    await log.append(stmt(i))
    log.appendDeferred({ type: 'result', session: 's-test', chain: ['user:alice', 'agent:bot'], connection: 'app', seq: i, rows: 1 })
    if (i % 10 === 0) await new Promise((r) => setTimeout(r, 30))
  }
  log.close()
}

function verify(root: string, checkpoints?: Buffer): VerifyResult {
  const key = loadAuditKey(join(root, 'keys')).publicKey
  return verifyAuditLog(join(root, 'audit'), { publicKeys: [key], ...(checkpoints ? { checkpoints } : {}) })
}

function trustOf(root: string): SegmentTrust {
  return new SegmentTrust([loadAuditKey(join(root, 'keys')).publicKey])
}

function segmentLines(root: string, k: number): { path: string; name: string; lines: string[] } {
  const seg = listSegments(join(root, 'audit')).segments[k]
  assert.ok(seg, `segment #${k}`)
  const lines = readFileSync(seg.path, 'utf8').split('\n')
  assert.equal(lines.pop(), '')
  return { path: seg.path, name: seg.name, lines }
}

function writeLines(path: string, lines: readonly string[]): void {
  writeFileSync(path, `${lines.join('\n')}\n`)
}

/** Index of the first `statement` line in a segment. */
function firstStatement(lines: readonly string[]): number {
  const i = lines.findIndex((l) => l.includes('"type":"statement"'))
  assert.ok(i > 0)
  return i
}

describe('audit line bytes', () => {
  test('encoded straight into bytes, a line is the UTF-8 of encodeLine (escapes, astral and lone surrogates, huge, empty)', () => {
    const prev = sha256Hex('x')
    const events: Record<string, unknown>[] = [
      {},
      { type: 'statement', sql: `SELECT '${'x'.repeat(300_000)}'` },
      { type: 'statement', sql: 'SELECT \'é—😀\'\n\t"q" \\ \u0000 \ud800 \udfff', params: ['ü', null, 3] },
      { sql: '{', n: 1 },
    ]
    for (const e of events) {
      const json = JSON.stringify(e)
      const want = encodeLine(prev, 'abc-12', '2026-01-01T00:00:00.000Z', json)
      const buf = Buffer.alloc(7 + lineBytesBound('abc-12', '2026-01-01T00:00:00.000Z', json))
      const got = encodeLineInto(prev, 'abc-12', '2026-01-01T00:00:00.000Z', json, buf, 7)
      assert.equal(got.h, want.h)
      assert.ok(buf.subarray(7, got.end).equals(Buffer.from(want.line, 'utf8')))
    }
  })

  test('an event with long strings is written in pieces that make the same line as JSON.stringify', () => {
    const prev = sha256Hex('y')
    const long = 'x'.repeat(70_000)
    const events: Record<string, unknown>[] = [
      { type: 'statement', seq: 1, sql: `SELECT '${long}'`, params: null, decision: 'allow' },
      { sql: long, skipped: undefined, f: () => 1, other: long, n: 2, nested: { a: [1, 'é'] } },
      { sql: `${long}"quoted"\\n\u0000` },
      { sql: `${long}\n`, astral: `${long}😀`, lone: `${long}\ud800` },
      { 1: long, a: 'short', [`${long}k`]: 'long key' },
    ]
    for (const e of events) {
      const text = eventJsonText(e)
      const json = JSON.stringify(e)
      assert.equal(typeof text === 'string' ? text : text.join(''), json)
      const want = encodeLine(prev, 'abc-1', '2026-01-01T00:00:00.000Z', json)
      const buf = Buffer.alloc(lineBytesBound('abc-1', '2026-01-01T00:00:00.000Z', text))
      const got = encodeLineInto(prev, 'abc-1', '2026-01-01T00:00:00.000Z', text, buf, 0)
      assert.equal(got.h, want.h)
      assert.ok(buf.subarray(0, got.end).equals(Buffer.from(want.line, 'utf8')))
    }
    assert.ok(Array.isArray(eventJsonText({ sql: long })), 'a long plain string is a piece of its own')
  })
})

describe('audit hash chain and verify', () => {
  let template: string
  let work: string[] = []
  before(async () => {
    template = mkdtempSync(join(tmpdir(), 'gh-audit-tpl-'))
    await buildLog(template)
  })
  after(() => {
    rmSync(template, { recursive: true, force: true })
    for (const d of work) rmSync(d, { recursive: true, force: true })
    work = []
  })
  const copy = (): string => {
    const d = mkdtempSync(join(tmpdir(), 'gh-audit-'))
    work.push(d)
    cpSync(template, d, { recursive: true })
    return d
  }

  test('an untouched log verifies, across segments, with signed checkpoints', () => {
    const r = verify(template)
    assert.equal(r.problem, null)
    assert.ok(r.ok)
    assert.ok(r.segments >= 4, `${r.segments} segments`)
    assert.ok(r.checkpoints >= r.segments, 'every segment is sealed with a checkpoint')
    assert.equal(r.unsigned, 0, 'the shutdown checkpoint signs everything')
    assert.equal(r.recoveries.length, 0)
    const events = readAuditEvents(join(template, 'audit'), {}, trustOf(template))
    assert.equal(events.filter((e) => e.type === 'statement').length, 60)
    assert.equal(events.filter((e) => e.type === 'result').length, 60)
    assert.ok(events.every((e) => typeof e.h === 'string' && typeof e.prev === 'string'))
  })

  test('one changed byte names the edited event', () => {
    const d = copy()
    const s = segmentLines(d, 1)
    const i = firstStatement(s.lines)
    const line = s.lines[i] as string
    const id = (JSON.parse(line) as { id: string }).id
    s.lines[i] = line.replace(/"sql":"SELECT (\d)/, '"sql":"SELECT 9$1')
    assert.notEqual(s.lines[i], line)
    writeLines(s.path, s.lines)
    const r = verify(d)
    assert.equal(r.ok, false)
    assert.equal(r.problem?.segment, s.name)
    assert.equal(r.problem?.line, i + 1)
    assert.equal(r.problem?.id, id)
    assert.match(r.problem?.message ?? '', /altered/)
  })

  test('an edit whose hash was recomputed breaks the link to the next event', () => {
    const d = copy()
    const s = segmentLines(d, 1)
    const i = firstStatement(s.lines)
    const ev = JSON.parse(s.lines[i] as string) as Record<string, unknown>
    const { h: _h, prev, id, time, ...rest } = ev
    const forged = encodeLine(String(prev), String(id), String(time), JSON.stringify({ ...rest, sql: 'SELECT harmless' }))
    s.lines[i] = forged.line
    writeLines(s.path, s.lines)
    const r = verify(d)
    assert.equal(r.problem?.line, i + 2, 'the break shows at the next event')
    assert.match(r.problem?.message ?? '', new RegExp(`does not link to ${String(id)}`))
  })

  test('a deleted event is named as missing', () => {
    const d = copy()
    const s = segmentLines(d, 1)
    const i = firstStatement(s.lines)
    const gone = (JSON.parse(s.lines[i] as string) as { id: string }).id
    s.lines.splice(i, 1)
    writeLines(s.path, s.lines)
    const r = verify(d)
    assert.equal(r.problem?.segment, s.name)
    assert.equal(r.problem?.line, i + 1)
    assert.equal(r.problem?.expected, gone)
    assert.match(r.problem?.message ?? '', /missing \(deleted\)/)
  })

  test('two swapped events are named as out of order', () => {
    const d = copy()
    const s = segmentLines(d, 2)
    const i = firstStatement(s.lines)
    const a = s.lines[i] as string
    s.lines[i] = s.lines[i + 1] as string
    s.lines[i + 1] = a
    writeLines(s.path, s.lines)
    const r = verify(d)
    assert.equal(r.problem?.segment, s.name)
    assert.equal(r.problem?.line, i + 1)
    assert.match(r.problem?.message ?? '', /out of order/)
  })

  test('an inserted event is named', () => {
    const d = copy()
    const s = segmentLines(d, 2)
    const i = firstStatement(s.lines)
    s.lines.splice(i + 1, 0, s.lines[i] as string)
    writeLines(s.path, s.lines)
    const r = verify(d)
    assert.equal(r.problem?.line, i + 2)
    assert.match(r.problem?.message ?? '', /inserted/)
  })

  test('a tail cut in the middle of an event is a failure', () => {
    const d = copy()
    const segs = listSegments(join(d, 'audit')).segments
    const last = segs[segs.length - 1]
    assert.ok(last)
    const size = readFileSync(last.path).length
    truncateSync(last.path, size - 40)
    const r = verify(d)
    assert.equal(r.ok, false)
    assert.equal(r.problem?.segment, last.name)
    assert.match(r.problem?.message ?? '', /cut short/)
  })

  test('a deleted segment is named', () => {
    const d = copy()
    const segs = listSegments(join(d, 'audit')).segments
    unlinkSync((segs[2] as (typeof segs)[number]).path)
    const r = verify(d)
    assert.equal(r.problem?.segment, segs[3]?.name)
    assert.match(r.problem?.message ?? '', /segment 3 is missing/)
  })

  test('deleting the oldest segments without a prune record is a failure', () => {
    const d = copy()
    const segs = listSegments(join(d, 'audit')).segments
    unlinkSync((segs[0] as (typeof segs)[number]).path)
    const r = verify(d)
    assert.match(r.problem?.message ?? '', /no signed prune record/)
  })

  test('signatures are checked against the given key', () => {
    const d = copy()
    const other = generateKeyPairSync('ed25519').publicKey
    const r = verifyAuditLog(join(d, 'audit'), { publicKeys: [other] })
    assert.equal(r.ok, false)
    assert.equal(r.problem?.line, 1)
    assert.match(r.problem?.message ?? '', /unknown key/)
  })

  test("a clean cut after the last checkpoint passes the files alone but not a sink's checkpoints", () => {
    const d = copy()
    // What a sink received: every line, checkpoints included.
    const sink = Buffer.concat(listSegments(join(d, 'audit')).segments.map((s) => readFileSync(s.path)))
    const segs = listSegments(join(d, 'audit')).segments
    const lastSeg = segmentLines(d, segs.length - 1)
    const cutAfter = Math.max(1, lastSeg.lines.length - 4)
    const lastKept = (JSON.parse(lastSeg.lines[cutAfter - 1] as string) as { id: string }).id
    writeLines(lastSeg.path, lastSeg.lines.slice(0, cutAfter))
    const alone = verify(d)
    assert.equal(alone.problem, null, 'whole lines cut from the end leave no trace in the files')
    assert.ok(alone.unsigned > 0, 'verify reports the unsigned tail')
    const withSink = verify(d, sink)
    assert.equal(withSink.ok, false)
    assert.equal(withSink.problem?.id, lastKept)
    assert.match(withSink.problem?.message ?? '', /cut from the log/)
    // Checkpoints only (what a sink that keeps just those has) work as well.
    const onlyCheckpoints = Buffer.from(
      sink
        .toString('utf8')
        .split('\n')
        .filter((l) => l.includes('"type":"audit.checkpoint"'))
        .join('\n'),
    )
    assert.match(verify(d, onlyCheckpoints).problem?.message ?? '', /cut from the log/)
    // And the untouched log agrees with the sink.
    const clean = verify(template, sink)
    assert.equal(clean.problem, null)
    assert.ok(clean.sinkCheckpoints > 0)
  })
})

/** A child process that appends statements and prints each acknowledged one; killed with SIGKILL. */
async function appendUntilKilled(dir: string, mode: 'batched' | 'always', acks: number): Promise<number[]> {
  const code = `
    import { AuditLog } from ${JSON.stringify(AUDIT_JS)}
    const log = new AuditLog(${JSON.stringify(join(dir, 'audit'))}, ${JSON.stringify(mode)}, 200)
    log.open()
    const one = async (w) => {
      for (let i = w; ; i += 8) {
        await log.append({ type: 'statement', session: 's-' + w, chain: ['user:k9'], connection: 'app', sql: 'INSERT ' + i })
        process.stdout.write(i + '\\n')
        log.appendDeferred({ type: 'result', session: 's-' + w, chain: ['user:k9'], connection: 'app', rows: 1, pad: 'x'.repeat(i % 300) })
        // Like a proxy, which hears of the next statement from the socket: yield to I/O.
        await new Promise((r) => setImmediate(r))
      }
    }
    for (let w = 0; w < 8; w++) one(w)
  `
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] })
  const acked: number[] = []
  let buf = ''
  const exited = new Promise<void>((r) => child.on('exit', () => r()))
  await new Promise<void>((resolveAcks) => {
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString()
      const parts = buf.split('\n')
      buf = parts.pop() ?? ''
      for (const p of parts) acked.push(Number(p))
      if (acked.length >= acks) {
        child.kill('SIGKILL')
        resolveAcks()
      }
    })
    child.on('exit', () => resolveAcks())
  })
  await exited
  return acked
}

describe('audit durability across kill -9', () => {
  const dirs: string[] = []
  after(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true })
  })

  for (const mode of ['batched', 'always'] as const) {
    test(`fsync ${mode}: every acknowledged append survives; the restart seals the crash and the log verifies`, async () => {
      // The scenario is a kill between checkpoints, so that the files end in unsigned events (or a
      // partial line). A checkpoint follows every event within a fraction of a second, so on a
      // loaded machine the kill can land just after one: then the run is tried again.
      let d = ''
      let acked: number[] = []
      let before: ReturnType<typeof verify> | null = null
      for (let attempt = 0; attempt < 5; attempt++) {
        d = mkdtempSync(join(tmpdir(), `gh-audit-k9-${mode}-`))
        dirs.push(d)
        acked = await appendUntilKilled(d, mode, mode === 'always' ? 1500 : 5000)
        assert.ok(acked.length > 0)
        before = verify(d)
        if (before.unsigned > 0 || before.problem !== null) break
      }
      assert.ok(before !== null && (before.unsigned > 0 || before.problem !== null), 'five kills all landed just after a checkpoint')
      const log = new AuditLog(join(d, 'audit'), mode, 200)
      log.open()
      assert.ok(log.recovery, 'the restart noticed the crash')
      await log.append(stmt(1, 's-after'))
      log.close()
      const r = verify(d)
      assert.equal(r.problem, null)
      assert.equal(r.recoveries.length, 1)
      const seen = new Set(
        readAuditEvents(join(d, 'audit'), { type: 'statement' }, trustOf(d)).map((e) => Number(String(e.sql).replace('INSERT ', ''))),
      )
      const lost = acked.filter((i) => !seen.has(i))
      assert.deepEqual(lost, [], `${lost.length} acknowledged events are missing`)
    })
  }

  test('a torn partial last line is a failure until the restart seals it with a signed record', async () => {
    const d = mkdtempSync(join(tmpdir(), 'gh-audit-torn-'))
    dirs.push(d)
    await appendUntilKilled(d, 'batched', 500)
    const segs = listSegments(join(d, 'audit')).segments
    const last = segs[segs.length - 1]
    assert.ok(last)
    // What a write(2) cut short by a crash leaves: the start of a line, no newline.
    const torn = '{"h":"3f2a","prev":"00","id":"x","time":"2026-11-25T00:00:00Z","type":"statement","sql":"INSE'
    appendFileSync(last.path, torn)
    const broken = verify(d)
    assert.match(broken.problem?.message ?? '', /cut short/)
    const log = new AuditLog(join(d, 'audit'), 'batched', 200)
    log.open()
    assert.equal(log.recovery?.tornBytes, torn.length)
    log.close()
    const r = verify(d)
    assert.equal(r.problem, null)
    assert.equal(r.recoveries[0]?.tornBytes, torn.length)
    assert.ok(r.recoveries[0]?.unsignedFrom, 'verify says which events only the recovery signed')
    const sealed = readFileSync(last.path, 'utf8').split('\n')
    assert.ok(sealed.includes(torn), 'the torn bytes stay in place as evidence')
    assert.ok(sealed.some((l) => l.includes('"reason":"recovery"') && l.includes(sha256Hex(torn))))
  })

  test('a write cut just before its newline is completed by the restart, not sealed away', async () => {
    const d = mkdtempSync(join(tmpdir(), 'gh-audit-nl-'))
    dirs.push(d)
    await appendUntilKilled(d, 'batched', 300)
    const segs = listSegments(join(d, 'audit')).segments
    const last = segs[segs.length - 1]
    assert.ok(last)
    const whole = readFileSync(last.path)
    truncateSync(last.path, whole.length - 1)
    const lastId = (JSON.parse(whole.subarray(whole.lastIndexOf(0x0a, whole.length - 2) + 1).toString()) as { id: string }).id
    assert.match(verify(d).problem?.message ?? '', /cut short/)
    const log = new AuditLog(join(d, 'audit'), 'batched', 200)
    log.open()
    assert.equal(log.recovery?.tornBytes, 0)
    log.close()
    const r = verify(d)
    assert.equal(r.problem, null)
    assert.ok(
      readAuditEvents(join(d, 'audit'), { internal: true }, trustOf(d)).some((e) => e.id === lastId),
      'the event was kept',
    )
  })

  test('fsync always: concurrent sessions share fdatasync calls (group commit)', async () => {
    const d = mkdtempSync(join(tmpdir(), 'gh-audit-gc-'))
    dirs.push(d)
    const log = new AuditLog(join(d, 'audit'), 'always', 200)
    log.open()
    const before = log.stats.syncs
    const per = 100
    await Promise.all(
      Array.from({ length: 8 }, async (_, w) => {
        for (let i = 0; i < per; i++) await log.append(stmt(i, `s-${w}`))
      }),
    )
    const syncs = log.stats.syncs - before
    log.close()
    assert.ok(syncs > 0)
    assert.ok(syncs <= (8 * per) / 2, `${syncs} syncs for ${8 * per} appends: not shared`)
    assert.equal(verify(d).problem, null)
  })

  test('grouped appends of one turn share one write(2); each resolves only once its line is in the file, in call order', async () => {
    const d = mkdtempSync(join(tmpdir(), 'gh-audit-grouped-'))
    dirs.push(d)
    const log = new AuditLog(join(d, 'audit'), 'batched', 200)
    log.open()
    const file = log.head.file
    const writes = log.stats.writes
    const order: number[] = []
    const grouped = Array.from({ length: 8 }, (_, w) =>
      log.appendGrouped(stmt(w, `s-${w}`)).then(() => {
        assert.ok(readFileSync(file, 'utf8').includes(`"session":"s-${w}"`), `session ${w} resolved before its line was written`)
        order.push(w)
      }),
    )
    await Promise.resolve()
    assert.equal(log.stats.writes, writes, 'nothing is written before the end of the turn')
    assert.equal(order.length, 0)
    await Promise.all(grouped)
    assert.equal(log.stats.writes - writes, 1, 'the turn took one write')
    assert.deepEqual(order, [0, 1, 2, 3, 4, 5, 6, 7])
    const lines = readFileSync(file, 'utf8').split('\n')
    const at = (w: number): number => lines.findIndex((l) => l.includes(`"session":"s-${w}"`))
    for (let w = 1; w < 8; w++) assert.ok(at(w - 1) < at(w), 'the chain holds them in call order')
    log.close()
    assert.equal(verify(d).problem, null)
  })

  test('fsync always: a grouped append resolves only after an fdatasync that began after its write', async () => {
    const d = mkdtempSync(join(tmpdir(), 'gh-audit-grouped-sync-'))
    dirs.push(d)
    const log = new AuditLog(join(d, 'audit'), 'always', 60_000)
    log.open()
    const syncs = log.stats.syncs
    const seen: number[] = []
    await Promise.all(
      Array.from({ length: 4 }, (_, w) => log.appendGrouped(stmt(w, `s-${w}`)).then(() => seen.push(log.stats.syncs - syncs))),
    )
    assert.deepEqual(seen, [1, 1, 1, 1], 'one shared sync, completed before any resolved')
    log.close()
    assert.equal(verify(d).problem, null)
  })

  test('a failed grouped write rejects every append of the turn, and none of them is written later', async () => {
    const d = mkdtempSync(join(tmpdir(), 'gh-audit-grouped-fail-'))
    dirs.push(d)
    const log = new AuditLog(join(d, 'audit'), 'batched', 200)
    log.open()
    // The segment's descriptor swapped for a read-only one: write(2) fails with EBADF.
    const internals = log as unknown as { fd: number }
    const real = internals.fd
    const readOnly = openSync(log.head.file, 'r')
    internals.fd = readOnly
    const settled = await Promise.allSettled([log.appendGrouped(stmt(1, 's-refused')), log.appendGrouped(stmt(2, 's-refused'))])
    internals.fd = real
    closeSync(readOnly)
    for (const r of settled) {
      assert.equal(r.status, 'rejected')
      assert.equal(((r as PromiseRejectedResult).reason as { code?: string }).code, 'GH_ERR_AUDIT')
    }
    await log.appendGrouped(stmt(3, 's-after'))
    log.appendDeferred({ type: 'result', session: 's-after', chain: ['user:alice', 'agent:bot'], connection: 'app', seq: 3, rows: 1 })
    log.close()
    assert.equal(verify(d).problem, null)
    const sessions = readAuditEvents(join(d, 'audit'), {}, trustOf(d)).map((e) => e.session)
    assert.ok(!sessions.includes('s-refused'), "a refused statement's event was written after all")
    assert.equal(sessions.filter((s) => s === 's-after').length, 2)
  })
})
