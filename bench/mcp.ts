// Benchmark: `query` tool calls per second through /mcp for a one-row SELECT, against the
// same SELECT over the PostgreSQL wire protocol through the gateway (and directly), one client,
// calls in sequence; the added latency per call is MCP's mean minus the wire's.
//
//   node dist/bench/mcp.js [--seconds 5]
//
// Numbers go to stdout as markdown. It starts a real
// `gatehouse serve` (TestGateway) and stops it at the end.

import http from 'node:http'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import pg from 'pg'
import { TestGateway } from '../test/helpers/gateway.js'

const SQL = 'SELECT 1 AS one'

async function measure(
  name: string,
  seconds: number,
  once: () => Promise<void>,
): Promise<{ name: string; n: number; perSec: number; meanUs: number; p50Us: number; p99Us: number }> {
  for (let i = 0; i < 50; i++) await once() // warm-up: shapes cached, JIT warm
  const lat: number[] = []
  const end = performance.now() + seconds * 1000
  const t0 = performance.now()
  while (performance.now() < end) {
    const s = performance.now()
    await once()
    lat.push(performance.now() - s)
  }
  const total = performance.now() - t0
  lat.sort((a, b) => a - b)
  const q = (p: number) => (lat[Math.min(lat.length - 1, Math.floor(lat.length * p))] ?? 0) * 1000
  return { name, n: lat.length, perSec: (lat.length / total) * 1000, meanUs: (total / lat.length) * 1000, p50Us: q(0.5), p99Us: q(0.99) }
}

/** The same tool call as raw JSON-RPC over one keep-alive HTTP connection: the server's share, without the SDK client's. */
async function rawCalls(apiUrl: string, token: string, seconds: number) {
  const u = new URL(apiUrl)
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
  const post = (body: unknown, headers: Record<string, string>) =>
    new Promise<{ headers: http.IncomingHttpHeaders; body: string }>((resolve, reject) => {
      const req = http.request(
        {
          host: u.hostname,
          port: u.port,
          path: '/mcp',
          method: 'POST',
          agent,
          headers: {
            'content-type': 'application/json',
            accept: 'application/json, text/event-stream',
            authorization: `Bearer ${token}`,
            ...headers,
          },
        },
        (res) => {
          let data = ''
          res.setEncoding('utf8')
          res.on('data', (c: string) => {
            data += c
          })
          res.on('end', () => resolve({ headers: res.headers, body: data }))
        },
      )
      req.on('error', reject)
      req.end(JSON.stringify(body))
    })
  const init = await post(
    {
      jsonrpc: '2.0',
      id: 0,
      method: 'initialize',
      params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } },
    },
    {},
  )
  const h = { 'mcp-session-id': String(init.headers['mcp-session-id']), 'mcp-protocol-version': '2025-06-18' }
  await post({ jsonrpc: '2.0', method: 'notifications/initialized' }, h)
  let id = 1
  const r = await measure('gateway /mcp `query` tool, raw HTTP client', seconds, async () => {
    const res = await post(
      { jsonrpc: '2.0', id: id++, method: 'tools/call', params: { name: 'query', arguments: { connection: 'app', sql: SQL } } },
      h,
    )
    if (!res.body.includes('"rows"')) throw new Error(res.body)
  })
  agent.destroy()
  return r
}

async function main(): Promise<void> {
  const i = process.argv.indexOf('--seconds')
  const seconds = i > 0 ? Number(process.argv[i + 1]) : 5
  const gw = await TestGateway.start({ config: { log_level: 'warn' } })
  try {
    const token = gw.token('user:bench')
    const direct = new pg.Client({ host: '127.0.0.1', port: 5432, user: 'postgres', database: 'test' })
    await direct.connect()
    const wire = new pg.Client({ host: '127.0.0.1', port: gw.pgPort, user: 'bench', password: token, database: 'app', ssl: false })
    await wire.connect()
    const mcp = new Client({ name: 'bench', version: '1.0.0' })
    await mcp.connect(
      new StreamableHTTPClientTransport(new URL(`${gw.apiUrl}/mcp`), { requestInit: { headers: { authorization: `Bearer ${token}` } } }),
    )
    const results = [
      await measure('direct (pg)', seconds, async () => {
        await direct.query(SQL)
      }),
      await measure('gateway wire protocol (pg)', seconds, async () => {
        await wire.query(SQL)
      }),
      await measure('gateway /mcp `query` tool', seconds, async () => {
        const r = await mcp.callTool({ name: 'query', arguments: { connection: 'app', sql: SQL } })
        if (r.isError) throw new Error(JSON.stringify(r.content))
      }),
      await rawCalls(gw.apiUrl, token, seconds),
    ]
    await direct.end()
    await wire.end()
    await mcp.close()
    const wireMean = results[1]?.meanUs ?? 0
    console.log(`One client, calls in sequence, ${seconds} s each after 50 warm-up calls; node ${process.version}.\n`)
    console.log('| path | calls | calls/s | mean (µs) | p50 (µs) | p99 (µs) |')
    console.log('|---|---:|---:|---:|---:|---:|')
    for (const r of results) {
      console.log(
        `| ${r.name} | ${r.n} | ${r.perSec.toFixed(0)} | ${r.meanUs.toFixed(0)} | ${r.p50Us.toFixed(0)} | ${r.p99Us.toFixed(0)} |`,
      )
    }
    for (const m of results.slice(2)) {
      console.log(
        `\n${m.name}: ${(m.meanUs - wireMean).toFixed(0)} µs added per call over the wire protocol (${(wireMean > 0 ? m.meanUs / wireMean : 0).toFixed(1)}× its mean latency).`,
      )
    }
  } finally {
    await gw.cleanup()
  }
}

await main()
