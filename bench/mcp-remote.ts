// Benchmark: `echo` tool calls through /mcp-remote/<connection> against the same calls straight to
// the upstream (@modelcontextprotocol/server-everything over Streamable HTTP behind the test front
// that checks the injected credential), one SDK client, calls in sequence. The added latency per
// call is the gateway's mean minus the direct mean.
//
//   node dist/bench/mcp-remote.js [--seconds 5]
//
// Numbers go to stdout as markdown. It starts a real `gatehouse serve` (TestGateway) and stops it.

import { cpSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { REPO, TestGateway } from '../test/helpers/gateway.js'
import { startEverything } from '../test/helpers/mcpupstream.js'
import { arg } from './common.js'

const AUTH = 'Bearer bench-upstream-credential-0123'

async function measure(seconds: number, once: () => Promise<void>): Promise<{ n: number; meanUs: number; p50Us: number; p99Us: number }> {
  for (let i = 0; i < 50; i++) await once()
  const lat: number[] = []
  const t0 = performance.now()
  const end = t0 + seconds * 1000
  while (performance.now() < end) {
    const s = performance.now()
    await once()
    lat.push(performance.now() - s)
  }
  const total = performance.now() - t0
  lat.sort((a, b) => a - b)
  const q = (p: number): number => (lat[Math.min(lat.length - 1, Math.floor(lat.length * p))] ?? 0) * 1000
  return { n: lat.length, meanUs: (total / lat.length) * 1000, p50Us: q(0.5), p99Us: q(0.99) }
}

async function client(url: string, authorization: string): Promise<Client> {
  const c = new Client({ name: 'bench', version: '1' })
  await c.connect(new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: { authorization } } }))
  return c
}

async function main(): Promise<void> {
  const seconds = arg('--seconds', 5)
  const dir = mkdtempSync(join(tmpdir(), 'gh-bench-mcpr-'))
  const up = await startEverything(AUTH)
  const policyDir = join(dir, 'policies')
  cpSync(join(REPO, 'policies'), policyDir, { recursive: true })
  const gw = await TestGateway.start({
    connections: [{ name: 'everything', protocol: 'mcp-remote', url: up.url, inject_headers: { Authorization: 'env:GH_BENCH_MCP_AUTH' } }],
    config: { listen: { api: '127.0.0.1:0', postgres: 'off', ssh: 'off' }, policies: policyDir, log_level: 'warn' },
    env: { GH_BENCH_MCP_AUTH: AUTH },
  })
  try {
    const token = gw.token('user:alice')
    const direct = await client(up.url, AUTH)
    const via = await client(`${gw.apiUrl}/mcp-remote/everything`, `Bearer ${token}`)
    const call = (c: Client) => async (): Promise<void> => {
      await c.callTool({ name: 'echo', arguments: { message: 'bench' } })
    }
    const d = await measure(seconds, call(direct))
    const g = await measure(seconds, call(via))
    const row = (name: string, r: typeof d): string =>
      `| ${name} | ${r.n} | ${(1e6 / r.meanUs).toFixed(0)} | ${(r.meanUs / 1000).toFixed(2)} | ${(r.p50Us / 1000).toFixed(2)} | ${(r.p99Us / 1000).toFixed(2)} |`
    console.log('| echo tool call, one SDK client | calls | calls/s | mean ms | p50 ms | p99 ms |')
    console.log('|---|---|---|---|---|---|')
    console.log(row('direct to server-everything', d))
    console.log(row('through Gatehouse (/mcp-remote)', g))
    console.log(`\nadded per call: ${((g.meanUs - d.meanUs) / 1000).toFixed(2)} ms mean`)
    await direct.close()
    await via.close()
  } finally {
    await gw.cleanup()
    await up.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}

await main()
