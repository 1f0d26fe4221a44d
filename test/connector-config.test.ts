// The connector parts of the configuration: `via:` by name, by list and by label selector
// (resolved to connector names at load), each connector's credential lifetime, and secrets left
// with a connector (`connector:env:NAME`): only where the plugin can prove them, through a connector.

import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { parseConfig } from '../engine/config/config.js'
import { checkConfigAgainstPlugins } from '../cli/gateway/plugin-checks.js'
import { postgresPlugin } from '../proxies/postgres/index.js'
import { sshPlugin } from '../proxies/ssh/index.js'

function config(via: unknown, connectors: unknown[]): ReturnType<typeof parseConfig> {
  return parseConfig(
    {
      data_dir: '/tmp/gh-unused',
      listen: { connectors: '127.0.0.1:0' },
      connectors,
      connections: [{ name: 'db', protocol: 'postgres', address: '10.0.0.6:5432', via }],
    },
    null,
  )
}

const EDGES = [
  { name: 'edge-1', labels: { site: 'dc1', zone: 'a' } },
  { name: 'edge-2', labels: { site: 'dc1', zone: 'b' } },
  { name: 'edge-3', labels: { site: 'dc2' } },
]

describe('connector configuration', () => {
  test('via: a name, a list, or a label selector resolved to the connectors that carry every label', () => {
    assert.deepEqual(config('edge-3', EDGES).connections[0]?.via, ['edge-3'])
    assert.deepEqual(config(['edge-1', 'edge-3'], EDGES).connections[0]?.via, ['edge-1', 'edge-3'])
    assert.deepEqual(config({ labels: { site: 'dc1' } }, EDGES).connections[0]?.via, ['edge-1', 'edge-2'])
    assert.deepEqual(config({ labels: { site: 'dc1', zone: 'b' } }, EDGES).connections[0]?.via, ['edge-2'])
  })

  test('a selector that matches no connector, or an unknown name, is a configuration error', () => {
    assert.throws(() => config({ labels: { site: 'dc9' } }, EDGES), /no connector has the labels site=dc9/)
    assert.throws(() => config({ labels: {} }, EDGES), /no connector has the labels \(none given\)/)
    assert.throws(() => config('edge-9', EDGES), /no connector named "edge-9"/)
  })

  test('credential_ttl: default 1h, at least 5 s', () => {
    const c = config('edge-1', [{ name: 'edge-1' }, { name: 'edge-2', credential_ttl: '10m' }])
    assert.deepEqual(
      c.connectors.map((x) => [x.name, x.principal, x.credentialTtlSeconds]),
      [
        ['edge-1', 'service:edge-1', 3600],
        ['edge-2', 'service:edge-2', 600],
      ],
    )
    assert.throws(() => config('edge-1', [{ name: 'edge-1', credential_ttl: '2s' }]), /at least 5s/)
  })

  test('a secret left with a connector: a provable key, on a connection with via:, in a well-formed reference', () => {
    const check = (connection: Record<string, unknown>): void =>
      checkConfigAgainstPlugins(
        parseConfig(
          {
            data_dir: '/tmp/gh-unused',
            listen: { connectors: '127.0.0.1:0' },
            connectors: [{ name: 'edge-1' }],
            connections: [connection],
          },
          null,
        ),
        [postgresPlugin, sshPlugin].map((plugin) => ({ plugin, options: {}, source: `built-in ${plugin.name}` })),
      )
    const pg = { name: 'db', protocol: 'postgres', address: '10.0.0.6:5432', user: 'app' }
    check({ ...pg, via: 'edge-1', password: 'connector:env:BILLING_PW' })
    check({ ...pg, via: 'edge-1', password: 'connector:file:/etc/gh/billing.pw' })
    assert.throws(() => check({ ...pg, password: 'connector:env:BILLING_PW' }), /password: a secret held by a connector needs via:/)
    assert.throws(
      () => check({ ...pg, via: 'edge-1', password: 'connector:file:relative.pw' }),
      /must be connector:env:NAME or connector:file:\/absolute\/path/,
    )
    assert.throws(() => check({ ...pg, via: 'edge-1', password: 'connector:hunter2' }), /must be connector:env:NAME/)
    const ssh = { name: 'box', protocol: 'ssh', address: '10.0.0.5:22', user: 'deploy', host_key: 'trust-on-first-use' }
    check({ ...ssh, via: 'edge-1', private_key: 'connector:file:/etc/gh/id_ed25519' })
    // An SSH password cannot be proven without handing it over: it stays a gateway secret.
    assert.throws(
      () => check({ ...ssh, via: 'edge-1', password: 'connector:env:DEPLOY_PW' }),
      /password: a ssh connection cannot leave its password with a connector/,
    )
  })
})
