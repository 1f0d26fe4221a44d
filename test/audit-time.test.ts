// The audit log's clock (engine/audit/writer.ts isoNow): the hot path formats the part up to the second
// once per second; every timestamp must still be exactly what Date#toISOString gives.

import assert from 'node:assert/strict'
import { test } from 'node:test'
import { isoNow } from '../engine/audit/writer.js'

test('isoNow equals toISOString at every millisecond of a second, across second, day and year edges', () => {
  const starts = [Date.UTC(2026, 10, 26, 3, 59, 59), Date.UTC(2026, 11, 31, 23, 59, 59), 0, Date.now() - (Date.now() % 1000)]
  for (const start of starts) {
    // Two seconds in order (the cached prefix is reused, then replaced), then out of order.
    for (let ms = start; ms < start + 2000; ms++) assert.equal(isoNow(ms), new Date(ms).toISOString())
    for (const ms of [start + 1999, start, start + 1000, start + 7]) assert.equal(isoNow(ms), new Date(ms).toISOString())
  }
  // Outside four-digit years the format changes (±YYYYYY); the slow path keeps it exact.
  for (const ms of [Date.UTC(10000, 0, 1, 0, 0, 0, 5), Date.UTC(-1, 0, 1)]) assert.equal(isoNow(ms), new Date(ms).toISOString())
  assert.match(isoNow(), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
})
