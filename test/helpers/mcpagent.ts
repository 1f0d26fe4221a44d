// What the remote-MCP tests share: a gateway whose policy directory is the default bundle plus the
// test's own masking rules and Rego, in front of remote MCP upstreams; and an agent (the official
// SDK client) that keeps every message it received, raw, from the initialize answer on, so a test
// can search all of it for a value that must not have arrived.

import assert from 'node:assert/strict'
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { CreateMessageRequestSchema, ElicitRequestSchema } from '@modelcontextprotocol/sdk/types.js'
import { REPO, TestGateway } from './gateway.js'

/** A `$..ssn` rule in masking.yaml, for the connection named `masked`. */
export const MASKING_SSN = `rules:
  - name: ssn
    json_paths: ["$..ssn"]
    connections: [masked]
    strategy: redact
detectors: []
`

/** A Rego mask entry for `$..ssn` in the results of the tool `person` on the connection `rego`. */
export const REGO_SSN = `package gatehouse

mask contains {"rule": "person-ssn", "json_path": "$..ssn", "strategy": "redact"} if {
	input.action == "mcp.call"
	input.connection.name == "rego"
	input.command.tool == "person"
}
`

/** One remote-MCP connection: its name, upstream URL and the variable its injected header comes from. */
export interface UpstreamConnection {
  name: string
  url: string
  /** Variable holding the `Authorization` the gateway injects; its value is in `env`. */
  authEnv: string
  /** More connection settings. */
  extra?: Record<string, unknown>
}

/** A gateway (API listener only) with the default bundle plus `files` in its policy directory. */
export async function mcpRemoteGateway(opts: {
  connections: readonly UpstreamConnection[]
  env: Record<string, string>
  files?: Record<string, string>
}): Promise<{ gw: TestGateway; dir: string; cleanup: () => Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'gh-mcpremote-'))
  try {
    const policyDir = join(dir, 'policies')
    cpSync(join(REPO, 'policies'), policyDir, { recursive: true })
    rmSync(join(policyDir, 'default.cases.yaml'), { force: true })
    for (const [name, text] of Object.entries(opts.files ?? {})) writeFileSync(join(policyDir, name), text)
    const gw = await TestGateway.start({
      connections: opts.connections.map((c) => ({
        name: c.name,
        protocol: 'mcp-remote',
        url: c.url,
        inject_headers: { Authorization: `env:${c.authEnv}` },
        ...c.extra,
      })),
      config: { listen: { api: '127.0.0.1:0', postgres: 'off', ssh: 'off' }, policies: policyDir },
      env: opts.env,
    })
    return {
      gw,
      dir,
      async cleanup() {
        await gw.cleanup()
        rmSync(dir, { recursive: true, force: true })
      },
    }
  } catch (err) {
    rmSync(dir, { recursive: true, force: true })
    throw err
  }
}

export interface RecordingAgent {
  client: Client
  /** Every message the agent received, raw, the initialize answer included. */
  wire: string[]
  /** The upstream's requests that reached the agent: `sampling <params>` or `elicitation <params>`. */
  asked: string[]
}

/** An SDK client on `/mcp-remote/<connection>` that records what it receives and declines what it is asked. */
export async function recordingAgent(
  gw: TestGateway,
  token: string,
  connection: string,
  capabilities: { sampling?: boolean; elicitation?: boolean } = {},
): Promise<RecordingAgent> {
  const client = new Client(
    { name: 'recording-agent', version: '1.0.0' },
    { capabilities: { ...(capabilities.sampling ? { sampling: {} } : {}), ...(capabilities.elicitation ? { elicitation: {} } : {}) } },
  )
  const asked: string[] = []
  if (capabilities.sampling) {
    client.setRequestHandler(CreateMessageRequestSchema, async (r) => {
      asked.push(`sampling ${JSON.stringify(r.params)}`)
      return { model: 'test-model', role: 'assistant', content: { type: 'text', text: 'no' } }
    })
  }
  if (capabilities.elicitation) {
    client.setRequestHandler(ElicitRequestSchema, async (r) => {
      asked.push(`elicitation ${JSON.stringify(r.params)}`)
      return { action: 'decline' }
    })
  }
  const wire: string[] = []
  const transport = new StreamableHTTPClientTransport(new URL(`${gw.apiUrl}/mcp-remote/${connection}`), {
    requestInit: { headers: { authorization: `Bearer ${token}` } },
  })
  // Wrapped before connecting: the initialize answer (server info, instructions) is on the wire too.
  const started = transport.start.bind(transport)
  transport.start = async () => {
    await started()
    const onmessage = transport.onmessage
    transport.onmessage = (...args: Parameters<NonNullable<typeof onmessage>>) => {
      wire.push(JSON.stringify(args[0]))
      onmessage?.(...args)
    }
  }
  await client.connect(transport)
  return { client, wire, asked }
}

/** Asserts the agent received something and none of it holds any of `values`. */
export function noneOf(wire: readonly string[], values: readonly string[]): void {
  assert.ok(wire.length > 0, 'the agent received something')
  for (const m of wire) for (const v of values) assert.ok(!m.includes(v), `a classified value reached the agent: ${m}`)
}
