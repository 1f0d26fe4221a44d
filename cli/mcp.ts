// `gatehouse mcp`: a stdio bridge for MCP clients that start their servers as a subprocess (desktop
// assistants, IDEs). It relays JSON-RPC messages between stdin/stdout and the gateway's /mcp
// endpoint, adding the caller's bearer token; every decision stays on the gateway. stdout carries
// the protocol only: anything this command has to say goes to stderr.

import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js'
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js'
import { type Command, Option } from 'commander'
import { resolveConfig, runningServer } from './client.js'
import { storedLoginToken } from './identity.js'

function say(line: string): void {
  process.stderr.write(`gatehouse mcp: ${line}\n`)
}

function isRequest(m: JSONRPCMessage): m is JSONRPCMessage & { id: string | number; method: string } {
  return 'method' in m && 'id' in m
}

/** The protocol version the server chose, from an initialize result (the transport sends it as a header). */
function negotiatedVersion(m: JSONRPCMessage): string | null {
  if (!('result' in m)) return null
  const r: unknown = m.result
  if (typeof r !== 'object' || r === null) return null
  const v: unknown = (r as Record<string, unknown>).protocolVersion
  return typeof v === 'string' ? v : null
}

export async function runMcpBridge(server: string, token: string): Promise<void> {
  const endpoint = new URL(`${server.replace(/\/+$/, '')}/mcp`)
  const upstream = new StreamableHTTPClientTransport(endpoint, { requestInit: { headers: { authorization: `Bearer ${token}` } } })
  const local = new StdioServerTransport()
  let closing = false
  const shutdown = (code: number): void => {
    if (closing) return
    closing = true
    void upstream.terminateSession().catch(() => undefined)
    void upstream.close().catch(() => undefined)
    void local.close().catch(() => undefined)
    process.exitCode = code
  }
  local.onmessage = (m) => {
    upstream.send(m).catch((err: unknown) => {
      const message = err instanceof Error ? err.message : String(err)
      say(message)
      // A request that could not be delivered still gets an answer, so the client does not hang.
      if (isRequest(m)) void local.send({ jsonrpc: '2.0', id: m.id, error: { code: -32000, message: `gatehouse: ${message}` } })
    })
  }
  upstream.onmessage = (m) => {
    const v = negotiatedVersion(m)
    if (v) upstream.setProtocolVersion(v)
    void local.send(m)
  }
  upstream.onerror = (err) => say(err.message)
  local.onclose = () => shutdown(0)
  process.stdin.on('end', () => shutdown(0))
  await upstream.start()
  await local.start()
}

export function registerMcpCommand(program: Command): void {
  program
    .command('mcp')
    .description("serve MCP on stdin/stdout for a client that starts its servers as a subprocess, relaying to the gateway's /mcp")
    .addOption(new Option('-c, --config <file>', 'configuration file (default ./gatehouse.yaml or $GATEHOUSE_CONFIG)'))
    .addOption(
      new Option('--server <url>', 'the Gatehouse API (default $GATEHOUSE_SERVER, the server running for --config, or tokens.issuer)'),
    )
    .addOption(new Option('--token <token>', 'act with this token (default $GATEHOUSE_TOKEN, then the stored login)'))
    .action(async (o: { config?: string; server?: string; token?: string }) => {
      let server = o.server ?? process.env.GATEHOUSE_SERVER
      if (!server) {
        const config = resolveConfig(o.config)
        server = runningServer(config)?.api ?? (config.tokens.issuer || undefined)
      }
      if (!server) {
        say('no Gatehouse server: give --server URL, set GATEHOUSE_SERVER, or run this where the server for --config runs')
        process.exitCode = 3 // the exit code table (cli/exit.ts): server unreachable
        return
      }
      server = server.replace(/\/+$/, '')
      const token = o.token ?? process.env.GATEHOUSE_TOKEN ?? storedLoginToken(server)
      if (!token) {
        say(`no token: give --token, set GATEHOUSE_TOKEN, or run gatehouse login (server ${server})`)
        process.exitCode = 2
        return
      }
      await runMcpBridge(server, token)
    })
}
