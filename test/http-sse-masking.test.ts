// Server-sent events under a JSON-path rule, fed to the masker at every split of the stream: each
// event's data is masked, and every line that is not a data, event, id, retry or comment line
// cuts the stream instead of passing. A JSON document sent as `text/event-stream` (what a caller
// gets by asking for that type from an upstream that labels its answer with whatever was asked),
// `Data:` or `data :` fields, and a byte order mark before the first field never carry a value out.

import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, test } from 'node:test'
import { JsonMaskError, jsonMaskPlan } from '../engine/masking/json-stream.js'
import { MAX_EVENT_BYTES, MaskTally, SseMasker } from '../proxies/http/masking.js'

const SECRET = 'SSN-S3CR3T-6789'
const plan = jsonMaskPlan([{ rule: 'ssn', column: '', strategy: 'redact', json_path: '$..ssn' }])
const keys = { key: randomBytes(32), sessionKey: randomBytes(32) }

/** The stream through a fresh masker in the given pieces: what reached the caller, and whether it was cut. */
function through(pieces: readonly Buffer[]): { out: Buffer; cut: boolean } {
  assert.ok(plan)
  const m = new SseMasker(plan, keys, new MaskTally())
  const out: Buffer[] = []
  try {
    for (const p of pieces) out.push(...m.write(p))
    out.push(...m.end())
    return { out: Buffer.concat(out), cut: false }
  } catch (err) {
    assert.ok(err instanceof JsonMaskError, String(err))
    return { out: Buffer.concat(out), cut: true }
  }
}

/** Every way of cutting `body` in two, and byte by byte. */
function splits(body: Buffer): Buffer[][] {
  const all: Buffer[][] = [[body], [...body].map((b) => Buffer.from([b]))]
  for (let i = 1; i < body.length; i++) all.push([body.subarray(0, i), body.subarray(i)])
  return all
}

describe('server-sent events under a masking rule', () => {
  test('data is masked at every split; event types, retry and keep-alive comments pass, ids are dropped', () => {
    const body = Buffer.from(`: keep-alive\nevent: user\nid: 7\nretry: 1000\ndata: {"ssn":"${SECRET}",\ndata: "n":1}\n\n`)
    for (const pieces of splits(body)) {
      const r = through(pieces)
      assert.equal(r.cut, false)
      assert.equal(r.out.toString(), ':\nevent: user\nretry: 1000\ndata: {"ssn":"****",\ndata: "n":1}\n\n')
    }
  })

  test('a byte order mark at the start is dropped and the stream masked, however it is split', () => {
    const body = Buffer.from(`\ufeffdata: {"ssn":"${SECRET}"}\n\n`)
    for (const pieces of splits(body)) {
      const r = through(pieces)
      assert.equal(r.cut, false)
      assert.equal(r.out.toString(), 'data: {"ssn":"****"}\n\n')
    }
  })

  test('lines that are not fields of the allow-list cut the stream before they pass', () => {
    const bodies = [
      `{"ssn":"${SECRET}"}`,
      `{\n  "ssn": "${SECRET}"\n}\n`,
      `{"ssn":"${SECRET}"}\n{"ssn":"${SECRET}"}\n`,
      `Data: {"ssn":"${SECRET}"}\n\n`,
      `data : {"ssn":"${SECRET}"}\n\n`,
      `data\t: {"ssn":"${SECRET}"}\n\n`,
      `\u0000data: {"ssn":"${SECRET}"}\n\n`,
      `data: {}\n\n\ufeffdata: {"ssn":"${SECRET}"}\n\n`,
      `\ufeff\ufeffdata: {"ssn":"${SECRET}"}\n\n`,
      `retry: {"ssn":"${SECRET}"}\n\n`,
      // A path cannot reach an event's type: one that could carry a value is not passed.
      `event: ${SECRET}\ndata: {}\n\n`,
      `event: user ${SECRET}\ndata: {}\n\n`,
      `event: user@example.com\ndata: {}\n\n`,
      `event:\ndata: {}\n\n`,
      `data: {"ssn":"${SECRET}"`,
    ]
    for (const text of bodies) {
      for (const pieces of splits(Buffer.from(text))) {
        const r = through(pieces)
        assert.equal(r.cut, true, JSON.stringify(text))
        assert.equal(r.out.indexOf(SECRET), -1, `${JSON.stringify(text)} leaked`)
      }
    }
  })

  test("an id line (the upstream's free text) never reaches the caller", () => {
    const body = Buffer.from(`id: ${SECRET}\ndata: {"n":1}\n\nid\ndata: {"n":2}\n\n`)
    for (const pieces of splits(body)) {
      const r = through(pieces)
      assert.equal(r.cut, false)
      assert.equal(r.out.toString(), 'data: {"n":1}\n\ndata: {"n":2}\n\n')
    }
  })

  test('an event over the cap is cut, however many lines it has', () => {
    const lines = [`data: {"ssn":\n`, ...Array.from({ length: 2000 }, () => `data: ${' '.repeat(600)}\n`), `data: "${SECRET}"}\n\n`]
    const r = through(lines.map((l) => Buffer.from(l)))
    assert.equal(r.cut, true)
    assert.equal(r.out.indexOf(SECRET), -1)
    assert.ok(2000 * 601 > MAX_EVENT_BYTES)
  })
})
