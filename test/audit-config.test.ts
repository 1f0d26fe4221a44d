// The `audit:` config section: a full section normalizes as documented; every wrong key is
// reported with its path, all at once; secrets are references, never values.

import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { DEFAULT_AUDIT_CONFIG, parseAuditConfig } from '../engine/audit/config.js'
import { parseConfig } from '../engine/config/config.js'

describe('audit config', () => {
  test('defaults, and a full section normalized', () => {
    assert.deepEqual(parseAuditConfig(undefined, '/etc/gh').config, DEFAULT_AUDIT_CONFIG)
    const { config, problems } = parseAuditConfig(
      {
        fsync: 'always',
        fsync_interval_ms: 50,
        checkpoint_interval_ms: 500,
        signing_key: 'file:keys/audit.jwk',
        segment_max_bytes: 1048576,
        retention: '400d',
        sinks: [
          { name: 'archive', type: 'file', path: 'audit.jsonl', max_bytes: 65536, keep: 3 },
          { name: 'siem', type: 'http', url: 'https://siem.example/in', secret: 'file:hmac.key', batch_max: 100 },
          { name: 'syslog', type: 'syslog', address: 'logs.example:6514', tls: true, ca: 'ca.pem', checkpoints_only: true },
        ],
        recordings: { retention: '90d', connections: { app: { retention: '30d' }, forever: { retention: 'forever' } } },
      },
      '/etc/gh',
    )
    assert.deepEqual(problems, [])
    assert.deepEqual(config, {
      fsync: 'always',
      fsyncIntervalMs: 50,
      checkpointIntervalMs: 500,
      signingKey: 'file:/etc/gh/keys/audit.jwk',
      segmentMaxBytes: 1048576,
      retentionSeconds: 400 * 86400,
      sinks: [
        { type: 'file', name: 'archive', checkpointsOnly: false, path: '/etc/gh/audit.jsonl', maxBytes: 65536, keep: 3 },
        {
          type: 'http',
          name: 'siem',
          checkpointsOnly: false,
          url: 'https://siem.example/in',
          secret: 'file:/etc/gh/hmac.key',
          batchMax: 100,
          timeoutMs: 10000,
        },
        {
          type: 'syslog',
          name: 'syslog',
          checkpointsOnly: true,
          host: 'logs.example',
          port: 6514,
          tls: true,
          ca: '/etc/gh/ca.pem',
          facility: 13,
        },
      ],
      recordings: {
        enabled: true,
        retentionSeconds: 90 * 86400,
        connections: { app: { retentionSeconds: 30 * 86400 }, forever: { retentionSeconds: null } },
      },
    })
  })

  test('every problem is reported with its key path', () => {
    const { problems } = parseAuditConfig(
      {
        fsync: 'sometimes',
        checkpoint_interval_ms: 5000,
        retention: 'a while',
        colour: 'blue',
        signing_key: '{"kty":"OKP","d":"hunter3"}',
        sinks: [
          { name: 'a', type: 'http', url: 'ftp://x', secret: 'hunter2', checkpoints_only: 'yes' },
          { name: 'a', type: 'file' },
          { type: 'carrier-pigeon' },
        ],
        recordings: { connections: { app: { retention: 3 } } },
      },
      '/',
    )
    for (const want of [
      /^audit\.fsync: must be batched or always/,
      /^audit\.checkpoint_interval_ms: must be an integer between 10 and 1000/,
      /^audit\.retention: must be a duration/,
      /^audit\.colour: unknown key/,
      /^audit\.sinks\[0\]\.url: must be an http/,
      /^audit\.sinks\[0\]\.secret: must be a secret reference/,
      /^audit\.sinks\[0\]\.checkpoints_only: must be true or false/,
      /^audit\.signing_key: must be a secret reference/,
      /^audit\.sinks\[1\]\.name: duplicate sink name/,
      /^audit\.sinks\[1\]\.path: is required/,
      /^audit\.sinks\[2\]\.type: must be file, http or syslog/,
      /^audit\.recordings\.connections\.app\.retention: must be a duration/,
    ]) {
      assert.ok(
        problems.some((p) => want.test(p)),
        `${want} in:\n${problems.join('\n')}`,
      )
    }
    assert.ok(!problems.some((p) => p.includes('hunter2') || p.includes('hunter3')), 'a secret written in place is never echoed')
  })

  test('gatehouse.yaml reports audit problems with the rest', () => {
    assert.throws(
      () => parseConfig({ audit: { fsync: 'never', sinks: 'all' } }, null),
      (err: Error) => /audit\.fsync/.test(err.message) && /audit\.sinks: must be a list/.test(err.message),
    )
  })
})
