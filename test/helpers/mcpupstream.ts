// A real remote MCP server for tests: `@modelcontextprotocol/server-everything` in its Streamable
// HTTP mode (its own process), behind a small front that requires the credential the gateway
// injects (as a hosted MCP server would) and records every JSON-RPC message that reaches it, so a
// test can prove what the upstream did and did not receive.

import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { createServer, request, type Server } from 'node:http'
import { createServer as createNetServer } from 'node:net'
import { join } from 'node:path'
import { McpError } from '@modelcontextprotocol/sdk/types.js'
import { REPO, readOutput } from './gateway.js'

export interface McpUpstream {
  /** The front's MCP endpoint (what a connection's `url:` names). */
  readonly url: string
  /** JSON-RPC messages that reached the upstream (parsed POST bodies, batches flattened). */
  readonly seen: Record<string, unknown>[]
  /** Requests the front refused for a missing or wrong credential. */
  readonly refused: () => number
  /** Mcp-Session-Id values the upstream saw. */
  readonly sessions: Set<string>
  /** DELETEs (session terminations) that reached the upstream. */
  readonly deletes: () => number
  stop(): Promise<void>
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createNetServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const a = s.address()
      const port = a && typeof a === 'object' ? a.port : 0
      s.close(() => resolve(port))
    })
  })
}

export interface UpstreamOptions {
  /**
   * Rewrites each line of what the upstream sends back (JSON bodies and SSE events alike): a test
   * makes the upstream hostile, e.g. one that echoes the credential it was sent into a message.
   */
  rewrite?: (line: string) => string
}

export async function startEverything(
  credential: string,
  env: Record<string, string> = {},
  options: UpstreamOptions = {},
): Promise<McpUpstream> {
  const port = await freePort()
  const bin = join(REPO, 'node_modules/@modelcontextprotocol/server-everything/dist/index.js')
  // Its output goes to a file, not a pipe: a Node process writes to a pipe synchronously, so a test
  // blocked in spawnSync would stall it.
  const logDir = mkdtempSync(join(tmpdir(), 'gh-mcp-upstream-'))
  const logFile = join(logDir, 'server.log')
  const logFd = openSync(logFile, 'a')
  const proc: ChildProcess = spawn(process.execPath, [bin, 'streamableHttp'], {
    env: { PATH: process.env.PATH ?? '', PORT: String(port), ...env },
    stdio: ['ignore', logFd, logFd],
  })
  closeSync(logFd)
  proc.once('exit', () => rmSync(logDir, { recursive: true, force: true }))
  const deadline = Date.now() + 60_000
  while (!readOutput(logFile).includes('listening on port')) {
    if (Date.now() > deadline || proc.exitCode !== null) throw new Error(`server-everything did not start:\n${readOutput(logFile)}`)
    await new Promise((r) => setTimeout(r, 50))
  }
  const seen: Record<string, unknown>[] = []
  const sessions = new Set<string>()
  let refused = 0
  let deletes = 0
  const front: Server = createServer((req, res) => {
    if (req.headers.authorization !== credential) {
      refused++
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":"unauthorized"}')
      req.resume()
      return
    }
    const sid = req.headers['mcp-session-id']
    if (typeof sid === 'string') sessions.add(sid)
    if (req.method === 'DELETE') deletes++
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      if (body.length > 0) {
        try {
          const parsed = JSON.parse(body.toString('utf8')) as unknown
          for (const m of Array.isArray(parsed) ? parsed : [parsed]) seen.push(m as Record<string, unknown>)
        } catch {
          seen.push({ unparsed: body.toString('utf8') })
        }
      }
      const headers = { ...req.headers }
      delete headers.authorization
      const up = request({ host: '127.0.0.1', port, method: req.method, path: req.url, headers }, (r) => {
        const rewrite = options.rewrite
        if (!rewrite) {
          res.writeHead(r.statusCode ?? 502, r.headers)
          r.pipe(res)
          return
        }
        const out = { ...r.headers }
        delete out['content-length']
        res.writeHead(r.statusCode ?? 502, out)
        let pending = ''
        r.setEncoding('utf8')
        r.on('data', (chunk: string) => {
          pending += chunk
          const cut = pending.lastIndexOf('\n')
          if (cut < 0) return
          res.write(
            pending
              .slice(0, cut + 1)
              .split('\n')
              .map(rewrite)
              .join('\n'),
          )
          pending = pending.slice(cut + 1)
        })
        r.on('end', () => res.end(pending === '' ? '' : rewrite(pending)))
      })
      up.on('error', () => res.destroy())
      res.on('close', () => up.destroy())
      up.end(body)
    })
  })
  await new Promise<void>((r) => front.listen(0, '127.0.0.1', r))
  const a = front.address()
  const frontPort = a && typeof a === 'object' ? a.port : 0
  return {
    url: `http://127.0.0.1:${frontPort}/mcp`,
    seen,
    sessions,
    refused: () => refused,
    deletes: () => deletes,
    async stop() {
      front.closeAllConnections()
      await new Promise<void>((r) => front.close(() => r()))
      proc.kill('SIGKILL')
    },
  }
}

/** The JSON-RPC error a call through the SDK client ended with (fails the test if it succeeded). */
export async function rpcError(p: Promise<unknown>): Promise<McpError> {
  try {
    await p
  } catch (err) {
    if (err instanceof McpError) return err
    throw err
  }
  assert.fail('expected a JSON-RPC error')
}
