// The audit log against someone who can write the gateway's data directory, tried the way they
// would on real gateway processes:
//   - after `kill -9` they edit the unsigned tail (a deny becomes an allow, a statement's text
//     changes) and rehash it, no key needed; the restart seals it as unattested, `audit verify`
//     names the range with a warning (exit 0) and `--strict` refuses it;
//   - sessions live at the kill get their `session.end` at the next start;
//   - a second `serve` on the same data directory is refused and leaves the running gateway's
//     sessions alone;
//   - with the key on another mount (`audit.signing_key`), a rewritten log re-signed with a key
//     of their own fails verification;
//   - dropping the newest segments passes the files alone but not a witness sink's checkpoints;
//   - files dropped into the audit directory fail verification and are never read.

import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { generateKeyPairSync, type KeyObject, sign } from 'node:crypto'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import yaml from 'js-yaml'
import pg from 'pg'
import { encodeLine, GENESIS_HASH, signedMessage } from '../engine/audit/format.js'
import { keyId, publicKeyPem } from '../engine/audit/keys.js'
import { listSegments } from '../engine/audit/segments.js'
import { BIN, type CliResult, LOCAL_PG, TestGateway } from './helpers/gateway.js'

type Ev = Record<string, unknown>

const ORPHAN_REASON = 'gateway stopped unexpectedly'

function parse(line: string): Ev {
  return JSON.parse(line) as Ev
}

/** The line for `ev` (its chain fields replaced) after `prev`, as the writer would build it. */
function rebuild(ev: Ev, prev: string): { line: string; h: string } {
  const { h: _h, prev: _prev, id, time, ...rest } = ev
  return encodeLine(prev, String(id), String(time), JSON.stringify(rest))
}

function segmentFiles(auditDir: string): { path: string; lines: string[] }[] {
  return listSegments(auditDir).segments.map((s) => {
    const lines = readFileSync(s.path, 'utf8').split('\n')
    assert.equal(lines.pop(), '', `${s.name} ends in a newline`)
    return { path: s.path, lines }
  })
}

function writeLines(path: string, lines: readonly string[]): void {
  writeFileSync(path, `${lines.join('\n')}\n`)
}

/** Runs the CLI with a config file of its own (a copy of a data directory, no server). */
function cliWith(configFile: string, args: readonly string[]): CliResult {
  const r = spawnSync(process.execPath, [BIN, ...args, '--config', configFile], { encoding: 'utf8', timeout: 60_000 })
  if (r.error) throw r.error
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

function pgClient(gw: TestGateway, token: string, app: string): pg.Client {
  const c = new pg.Client({ host: '127.0.0.1', port: gw.pgPort, database: 'app', user: 'alice', password: token, application_name: app })
  c.on('error', () => undefined) // the gateway is killed under it
  return c
}

describe('audit against an intruder on the gateway host', () => {
  const gateways: TestGateway[] = []
  after(async () => {
    for (const g of gateways) await g.cleanup()
  })

  test('kill -9, a forged and rehashed tail, restart: the tail is unattested, named by verify, refused by --strict; live sessions are ended', async () => {
    const gw = await TestGateway.start()
    gateways.push(gw)
    assert.match(gw.stderr, /no external anchor for the audit log/, 'outside --dev, a log with no witness is warned about')
    const reader = gw.token('user:alice') // not a writer: CREATE is denied under the default policy
    const auditDir = join(gw.dataDir, 'audit')
    const idle: string[] = []

    // Killed between two checkpoints, the files end in events no signature covers yet. Where
    // the kill lands is chance (a checkpoint follows every event within a second): try again
    // until the unsigned tail holds both an allowed and a denied statement.
    let tail: { seg: { path: string; lines: string[] }; from: number } | null = null
    for (let attempt = 0; attempt < 5 && !tail; attempt++) {
      if (attempt > 0) await gw.launch()
      const holder = pgClient(gw, reader, 'gh-intruder-idle')
      await holder.connect()
      await holder.query('SELECT 1')
      const busy = pgClient(gw, reader, 'gh-intruder-busy')
      await busy.connect()
      let running = true
      const loop = (async () => {
        for (let i = 0; running; i++) {
          await busy.query(`SELECT 'original-${i}'`).catch(() => undefined)
          await busy.query(`CREATE TABLE gh_intruder_${i} (x int)`).catch(() => undefined)
          // A dead connection rejects at once: let the kill's exit event through.
          await new Promise((r) => setImmediate(r))
        }
      })()
      await new Promise((r) => setTimeout(r, 1500))
      gw.signal('SIGKILL')
      await gw.waitExit()
      running = false
      await loop
      await holder.end().catch(() => undefined)
      await busy.end().catch(() => undefined)
      idle.push('gh-intruder-idle')
      const seg = segmentFiles(auditDir).at(-1)
      assert.ok(seg)
      let lastSigned = -1
      seg.lines.forEach((l, i) => {
        if (/"type":"audit\.(checkpoint|segment)"/.test(l)) lastSigned = i
      })
      const after = seg.lines.slice(lastSigned + 1).map(parse)
      const hasAllow = after.some((e) => e.type === 'statement' && e.decision === 'allow' && String(e.sql).startsWith("SELECT 'original-"))
      const hasDeny = after.some((e) => e.type === 'statement' && e.decision === 'deny')
      if (hasAllow && hasDeny) tail = { seg, from: lastSigned + 1 }
    }
    assert.ok(tail, 'a kill landed with allowed and denied statements unsigned')

    // The intruder: the deny becomes an allow, a statement says something else, every hash after
    // the first edit is recomputed. No key is needed for any of it.
    const { seg, from } = tail
    const lines = seg.lines
    const deny = lines.findIndex((l, i) => i >= from && l.includes('"type":"statement"') && l.includes('"decision":"deny"'))
    const allow = lines.findIndex((l, i) => i >= from && l.includes('"type":"statement"') && l.includes("SELECT 'original-"))
    const denyEv = parse(lines[deny] as string)
    const allowEv = parse(lines[allow] as string)
    denyEv.decision = 'allow'
    denyEv.rules = []
    allowEv.sql = "SELECT 'nothing to see here'"
    lines[deny] = JSON.stringify(denyEv)
    lines[allow] = JSON.stringify(allowEv)
    const first = Math.min(deny, allow)
    let prev = String(parse(lines[first - 1] as string).h)
    for (let i = first; i < lines.length; i++) {
      const r = rebuild(parse(lines[i] as string), prev)
      lines[i] = r.line
      prev = r.h
    }
    writeLines(seg.path, lines)
    const forgedIds = [String(denyEv.id), String(allowEv.id)]

    // The restart seals the crash; the sessions the kill left open are ended in the log.
    await gw.launch()
    const ends = gw.auditEvents(['--type', 'session.end'])
    const starts = gw.auditEvents(['--type', 'session.start'])
    assert.ok(starts.length >= 2)
    for (const s of starts) {
      const end = ends.find((e) => e.session === s.session)
      assert.ok(end, `session ${String(s.session)} has its session.end`)
      assert.equal(end.reason, ORPHAN_REASON)
      assert.deepEqual(end.chain, s.chain)
      assert.equal(end.connection, s.connection)
    }
    const active = gw.cli(['sessions', 'list', '--active', '--json'])
    assert.equal(active.code, 0, active.stderr)
    assert.equal(active.stdout.trim(), '', 'no session of the killed gateway is listed as live')
    const listed = gw
      .cli(['sessions', 'list', '--json'])
      .stdout.split('\n')
      .filter(Boolean)
      .map((l) => parse(l))
    assert.ok(listed.length >= 2 && listed.every((s) => s.active === false && s.end_reason === ORPHAN_REASON), JSON.stringify(listed))

    // Through the running server too, a planted file is never read: list names it, export refuses.
    const fake = encodeLine(GENESIS_HASH, 'feedfacecafe-1', new Date().toISOString(), JSON.stringify({ type: 'statement', sql: 'FAKE' }))
    writeLines(join(auditDir, 'planted.jsonl'), [fake.line])
    const viaApi = gw.cli(['audit', 'list', '--json'])
    assert.equal(viaApi.code, 0, viaApi.stderr)
    assert.doesNotMatch(viaApi.stdout, /FAKE/)
    assert.match(viaApi.stderr, /planted\.jsonl/)
    const exported = gw.cli(['audit', 'export'])
    assert.notEqual(exported.code, 0)
    assert.match(exported.stderr, /not segments of the log/)
    unlinkSync(join(auditDir, 'planted.jsonl'))
    await gw.stop()

    // verify: OK (the chain holds), but the forged events are named as unattested.
    const v = gw.cli(['audit', 'verify'])
    assert.equal(v.code, 0, v.stdout + v.stderr)
    const warning = /warning: (\d+) event\(s\) (\S+) … (\S+) are UNATTESTED/.exec(v.stdout)
    assert.ok(warning, v.stdout)
    const pos = (id: string): number => Number(id.slice(id.lastIndexOf('-') + 1))
    for (const id of forgedIds) {
      assert.ok(pos(id) >= pos(warning[2] as string) && pos(id) <= pos(warning[3] as string), `${id} lies in the unattested range`)
    }
    const json = gw.cli(['audit', 'verify', '--json'])
    const report = parse(json.stdout) as { ok: boolean; unattestedEvents: number; unattested: { events: number; recovery: string }[] }
    assert.equal(report.ok, true)
    assert.equal(report.unattestedEvents, Number(warning[1]))
    const strict = gw.cli(['audit', 'verify', '--strict'])
    assert.equal(strict.code, 1, strict.stdout + strict.stderr)
    assert.match(strict.stdout, /--strict: \d+ unattested event\(s\)/)

    // The seal names the range itself, signed: taking the mark out breaks the signature.
    const recoveryId = report.unattested[0]?.recovery
    const segs = segmentFiles(auditDir)
    const holder = segs.find((s) => s.lines.some((l) => l.includes(`"id":"${recoveryId}"`)))
    assert.ok(holder)
    const at = holder.lines.findIndex((l) => l.includes(`"id":"${recoveryId}"`))
    const seal = parse(holder.lines[at] as string)
    assert.equal(seal.reason, 'recovery')
    assert.equal((seal.unattested as { events: number }).events, report.unattested[0]?.events)
    delete seal.unattested
    holder.lines[at] = rebuild(seal, String(seal.prev)).line
    const saved = readFileSync(holder.path)
    writeLines(holder.path, holder.lines)
    const unmarked = gw.cli(['audit', 'verify'])
    assert.equal(unmarked.code, 1)
    assert.match(unmarked.stdout, /BROKEN/)
    writeFileSync(holder.path, saved)
  })

  describe('key on another mount, a witness sink, a second serve', () => {
    let gw: TestGateway
    let keyFile: string
    let pubFile: string
    let witness: string
    let liveSession = ''
    before(async () => {
      const { privateKey, publicKey } = generateKeyPairSync('ed25519')
      const mount = mkdtempSync(join(tmpdir(), 'gh-intruder-keys-'))
      keyFile = join(mount, 'audit.jwk')
      writeFileSync(keyFile, JSON.stringify(privateKey.export({ format: 'jwk' })), { mode: 0o600 })
      pubFile = join(mount, 'audit.pub')
      writeFileSync(pubFile, publicKeyPem(publicKey))
      witness = join(mount, 'witness.jsonl')
      gw = await TestGateway.start({
        config: {
          audit: {
            signing_key: `file:${keyFile}`,
            segment_max_bytes: 65536,
            sinks: [{ name: 'witness', type: 'file', path: witness, checkpoints_only: true }],
          },
        },
      })
      gateways.push(gw)
    })
    after(() => {
      rmSync(join(keyFile, '..'), { recursive: true, force: true })
    })

    test('with a witness configured there is no anchor warning; a key given by reference is never written beside the log', () => {
      assert.doesNotMatch(gw.stderr, /no external anchor/)
      assert.ok(!existsSync(join(gw.dataDir, 'keys', 'audit.jwk')), 'no audit key in the data directory')
      const pub = gw.cli(['audit', 'pubkey'])
      assert.equal(pub.stdout, readFileSync(pubFile, 'utf8'), 'the configured key signs')
    })

    test('a second serve on the same data directory is refused and leaves the running sessions alone', async () => {
      const writer = gw.token('user:alice', ['--group', 'writers'])
      const live = pgClient(gw, writer, 'gh-intruder-live')
      await live.connect()
      await live.query("SELECT 'before the second serve'")
      const before = gw.cli(['sessions', 'list', '--active', '--json']).stdout.split('\n').filter(Boolean).map(parse)
      assert.equal(before.length, 1)
      liveSession = String(before[0]?.id)

      const second = spawn(process.execPath, [BIN, 'serve', '--config', gw.configFile], { stdio: ['ignore', 'pipe', 'pipe'] })
      let err = ''
      second.stderr.on('data', (d: Buffer) => {
        err += d.toString()
      })
      const code = await new Promise<number | null>((r) => second.on('exit', (c) => r(c)))
      assert.notEqual(code, 0)
      assert.match(err, /another process \(pid \d+\) is writing the audit log/)

      const afterIt = gw.cli(['sessions', 'list', '--active', '--json']).stdout.split('\n').filter(Boolean).map(parse)
      assert.deepEqual(
        afterIt.map((s) => s.id),
        [liveSession],
        'the live session is still listed',
      )
      const r = await live.query("SELECT 'after the second serve' AS v")
      assert.equal(r.rows[0]?.v, 'after the second serve', 'and still works')
      assert.equal(gw.auditEvents(['--session', liveSession, '--type', 'session.end']).length, 0)

      // Enough work to roll over a few segments (64 KiB each) before the cuts below.
      for (let i = 0; i < 250; i++) await live.query(`SELECT 'filler ${i} ${'x'.repeat(200)}'`)
      await live.end()
      await gw.stop()
      assert.ok(listSegments(join(gw.dataDir, 'audit')).segments.length >= 3)
    })

    test('the witness holds only signed records; a clean cut passes the files alone but not the witness', () => {
      const held = readFileSync(witness, 'utf8').split('\n').filter(Boolean)
      assert.ok(held.length >= 3)
      assert.ok(
        held.every((l) => /"type":"audit\.(checkpoint|segment)"/.test(l.slice(0, 300))),
        'nothing but segment headers and checkpoints',
      )
      const whole = gw.cli(['audit', 'verify', '--strict', '--checkpoints', witness])
      assert.equal(whole.code, 0, whole.stdout + whole.stderr)
      assert.match(whole.stdout, /agrees with \d+ signed checkpoint\(s\) a sink received/)

      const copy = join(gw.dir, 'cut')
      cpSync(join(gw.dataDir, 'audit'), copy, { recursive: true })
      const segs = listSegments(copy).segments
      unlinkSync((segs.at(-1) as { path: string }).path)
      const alone = cliWith(gw.configFile, ['audit', 'verify', '--dir', copy, '--pubkey', pubFile])
      assert.equal(alone.code, 0, 'the files alone cannot show a clean cut')
      const anchored = cliWith(gw.configFile, ['audit', 'verify', '--dir', copy, '--pubkey', pubFile, '--checkpoints', witness])
      assert.equal(anchored.code, 1, anchored.stdout)
      assert.match(anchored.stdout, /were cut from the log/)
    })

    test('a rewritten log re-signed with a key of the intruder fails against the configured key', () => {
      const data = join(gw.dir, 'resigned')
      cpSync(gw.dataDir, data, { recursive: true })
      const config = join(gw.dir, 'resigned.yaml')
      writeFileSync(config, yaml.dump({ data_dir: data, connections: [LOCAL_PG], audit: { signing_key: `file:${keyFile}` } }))
      const before = cliWith(config, ['audit', 'verify', '--strict'])
      assert.equal(before.code, 0, before.stdout + before.stderr)

      // The intruder rewrites a statement, rehashes everything and re-signs every header and
      // checkpoint with a key of their own, left where the default key would be.
      const { privateKey, publicKey } = generateKeyPairSync('ed25519')
      mkdirSync(join(data, 'keys'), { recursive: true })
      writeFileSync(join(data, 'keys', 'audit.jwk'), JSON.stringify(privateKey.export({ format: 'jwk' })))
      resign(join(data, 'audit'), privateKey, publicKey, (ev) => {
        if (ev.type === 'statement' && String(ev.sql).includes('after the second serve')) ev.sql = "SELECT 'rewritten'"
      })
      const forged = cliWith(config, ['audit', 'verify'])
      assert.equal(forged.code, 1, forged.stdout)
      assert.match(forged.stdout, /signed by an unknown key/)
      // The same log trusted by the key beside it would have passed: what the setting is for.
      const beside = join(gw.dir, 'beside.pub')
      writeFileSync(beside, publicKeyPem(publicKey))
      assert.equal(cliWith(config, ['audit', 'verify', '--dir', join(data, 'audit'), '--pubkey', beside]).code, 0)
      // And readers only open segments the configured key signed.
      const list = cliWith(config, ['audit', 'list', '--json'])
      assert.doesNotMatch(list.stdout, /rewritten/)
      assert.match(list.stderr, /not segments of the log/)
    })

    test('files dropped into the audit directory fail verification and are never read', () => {
      const data = join(gw.dir, 'planted')
      cpSync(gw.dataDir, data, { recursive: true })
      const config = join(gw.dir, 'planted.yaml')
      writeFileSync(config, yaml.dump({ data_dir: data, connections: [LOCAL_PG], audit: { signing_key: `file:${keyFile}` } }))
      const auditDir = join(data, 'audit')
      const segs = segmentFiles(auditDir)
      const logId = String(parse(segs[0]?.lines[0] as string).log)
      const base = { session: 's-000000f00d00', chain: ['user:mallory'], connection: 'app' }
      const fake = [
        { type: 'session.start', ...base, decision: 'allow' },
        { type: 'statement', ...base, sql: "SELECT 'FAKE statement'", decision: 'allow' },
        { type: 'approval.decided', ...base, reviewer: 'user:boss', verdict: 'approve', request: 'R-fake' },
      ]
      let prev = GENESIS_HASH
      const planted = fake.map((e, i) => {
        const r = encodeLine(prev, `${logId}-${900000 + i}`, new Date().toISOString(), JSON.stringify(e))
        prev = r.h
        return r.line
      })
      writeLines(join(auditDir, 'forged.jsonl'), planted)

      const v = cliWith(config, ['audit', 'verify'])
      assert.equal(v.code, 1, v.stdout)
      assert.match(v.stdout, /forged\.jsonl/)
      assert.match(v.stdout, /not a segment file of this log/)
      const list = cliWith(config, ['audit', 'list', '--json'])
      assert.equal(list.code, 0, list.stderr)
      assert.doesNotMatch(list.stdout, /FAKE|mallory|R-fake/)
      assert.match(list.stderr, /forged\.jsonl/)
      assert.doesNotMatch(cliWith(config, ['audit', 'export']).stdout, /FAKE|mallory/)
      const replay = cliWith(config, ['sessions', 'replay', base.session])
      assert.notEqual(replay.code, 0)
      assert.match(replay.stderr, /no recording/)

      // Named like the next segment, with a header of a key that is not the audit key.
      const { privateKey } = generateKeyPairSync('ed25519')
      const next = segs.length + 1
      const name = `${String(next).padStart(8, '0')}-20990101T000000Z.jsonl`
      const lastLine = parse(segs.at(-1)?.lines.at(-1) as string)
      const n = Number(String(lastLine.id).slice(logId.length + 1)) + 1
      const time = new Date().toISOString()
      const header = {
        type: 'audit.segment',
        session: null,
        chain: [],
        connection: null,
        log: logId,
        segment: next,
        key: 'f00d',
        sig: sign(null, signedMessage('segment', logId, n, String(lastLine.h), time, String(next)), privateKey).toString('base64url'),
      }
      const h1 = encodeLine(String(lastLine.h), `${logId}-${n}`, time, JSON.stringify(header))
      const h2 = encodeLine(h1.h, `${logId}-${n + 1}`, time, JSON.stringify(fake[1]))
      unlinkSync(join(auditDir, 'forged.jsonl'))
      writeLines(join(auditDir, name), [h1.line, h2.line])
      const v2 = cliWith(config, ['audit', 'verify'])
      assert.equal(v2.code, 1, v2.stdout)
      const list2 = cliWith(config, ['audit', 'list', '--json'])
      assert.doesNotMatch(list2.stdout, /FAKE/)
      assert.match(list2.stderr, new RegExp(name))
      assert.doesNotMatch(cliWith(config, ['audit', 'export']).stdout, /FAKE/)
    })
  })
})

/** Rewrites every line of the log through `edit`, rehashes the chain and re-signs its signed records. */
function resign(auditDir: string, priv: KeyObject, pub: KeyObject, edit: (ev: Ev) => void): void {
  const kid = keyId(pub)
  let prev = GENESIS_HASH
  for (const seg of segmentFiles(auditDir)) {
    const out: string[] = []
    for (const line of seg.lines) {
      const ev = parse(line)
      edit(ev)
      const log = String(ev.log ?? '')
      const id = String(ev.id)
      const n = Number(id.slice(id.lastIndexOf('-') + 1))
      if (ev.type === 'audit.segment') {
        ev.key = kid
        ev.sig = sign(null, signedMessage('segment', log, n, prev, String(ev.time), String(ev.segment)), priv).toString('base64url')
      } else if (ev.type === 'audit.checkpoint') {
        assert.ok(!('torn' in ev) && !('unattested' in ev), 'a clean log')
        ev.key = kid
        ev.sig = sign(null, signedMessage('checkpoint', log, n - 1, prev, String(ev.time), '-'), priv).toString('base64url')
      }
      const r = rebuild(ev, prev)
      out.push(r.line)
      prev = r.h
    }
    writeLines(seg.path, out)
  }
}
