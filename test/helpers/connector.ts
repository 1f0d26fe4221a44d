// The connector tests' shared lab: a private network (netns.ts) with PostgreSQL in it, a gateway
// whose connector listener is on the link to the connector namespace, `gatehouse connector`
// processes (the real CLI) started inside that namespace, and the admin API the tests read
// links and audit events from. `cleanup` removes everything, also after a failed setup.

import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { BIN, readOutput, TestGateway } from './gateway.js'
import { PrivateNetwork } from './netns.js'

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}

/** Polls `f` until it returns something truthy; throws naming `what` after `ms`. */
export async function until<T>(
  what: string,
  f: () => T | null | undefined | false | Promise<T | null | undefined | false>,
  ms = 15_000,
): Promise<T> {
  const deadline = Date.now() + ms
  for (;;) {
    const v = await f()
    if (v) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(50)
  }
}

export interface LinkRow {
  readonly name: string
  readonly link: string
  readonly principal: string
  readonly address: string
  readonly version: string
  readonly streams: number
  readonly sessions: number
}

export interface RunningConnector {
  readonly proc: ChildProcess
  /** What the connector logged so far (stderr: pino's JSON lines). */
  readonly log: () => string
  /** The credential file it was started with (a joined connector keeps its credential there). */
  readonly file: string
}

export class ConnectorLab {
  readonly net = new PrivateNetwork()
  gw: TestGateway | null = null
  connectorPort = 0
  fingerprint = ''
  private readonly procs: ChildProcess[] = []

  get gateway(): TestGateway {
    if (!this.gw) throw new Error('the lab has no gateway')
    return this.gw
  }

  /** The namespaces and the private cluster (`hba`: lines before its trust ones); then `startGateway`. */
  setUpNetwork(hba = ''): void {
    this.net.setUp()
    this.net.startPostgres(hba)
  }

  /** A gateway whose connector listener faces the connector namespace; `config` adds top-level keys. */
  async startGateway(connections: readonly Record<string, unknown>[], config: Record<string, unknown> = {}): Promise<TestGateway> {
    const listen = (config.listen ?? {}) as Record<string, unknown>
    this.gw = await TestGateway.start({
      connections,
      config: {
        connectors: [{ name: 'edge-1' }],
        ...config,
        listen: { api: '127.0.0.1:0', postgres: '127.0.0.1:0', connectors: `${this.net.gatewayAddress}:0`, ...listen },
      },
    })
    this.connectorPort = this.gw.port('connectors')
    this.fingerprint = new X509Certificate(readFileSync(join(this.gw.dataDir, 'tls/cert.pem'))).fingerprint256
    return this.gw
  }

  /** `gatehouse connector` inside the connector namespace, with `credential` in a file; `env` is its own (not the gateway's). */
  startConnector(
    credential: string,
    extra: readonly string[] = [],
    credentialFlag = '--token-file',
    env: Readonly<Record<string, string>> = {},
  ): RunningConnector {
    const gw = this.gateway
    const file = join(gw.dir, `credential-${this.procs.length}`)
    writeFileSync(file, credential, { mode: 0o600 })
    // The connector logs to a file, not a pipe, so a test blocked in spawnSync cannot stall it.
    const logFile = `${file}.log`
    const logFd = openSync(logFile, 'a')
    const proc = spawn(
      'ip',
      [
        'netns',
        'exec',
        this.net.connectorNs,
        process.execPath,
        BIN,
        'connector',
        '--gateway',
        `https://${this.net.gatewayAddress}:${this.connectorPort}`,
        '--fingerprint',
        this.fingerprint,
        credentialFlag,
        file,
        ...extra,
      ],
      { stdio: ['ignore', 'ignore', logFd], env: { ...process.env, ...env } },
    )
    closeSync(logFd)
    if (process.env.GH_TEST_DEBUG) proc.once('exit', () => process.stderr.write(`connector:\n${readOutput(logFile)}`))
    this.procs.push(proc)
    return { proc, log: () => readOutput(logFile), file }
  }

  stopConnector(proc: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve()
    return new Promise((r) => {
      proc.once('exit', () => r())
      proc.kill(signal)
    })
  }

  /** Every connector process this lab started that still runs. */
  running(): ChildProcess[] {
    return this.procs.filter((p) => p.exitCode === null && p.signalCode === null)
  }

  /** The admin API (what the CLI calls; the CLI's start-up is slow on a loaded machine). */
  async api<T>(method: string, path: string, body?: unknown, status = 200): Promise<T> {
    const gw = this.gateway
    const admin = readFileSync(join(gw.dataDir, 'admin.token'), 'utf8').trim()
    const res = await fetch(`${gw.apiUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${admin}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    })
    assert.equal(res.status, status, `${method} ${path}: ${await res.clone().text()}`)
    return (await res.json()) as T
  }

  links(): Promise<LinkRow[]> {
    return this.api<LinkRow[]>('GET', '/v1/connectors')
  }

  /** Waits until `n` links are attached; returns them. */
  attached(n = 1, ms = 30_000): Promise<LinkRow[]> {
    return until(
      `${n} connector link(s)`,
      async () => {
        const l = await this.links()
        return l.length === n ? l : null
      },
      ms,
    )
  }

  async auditEvents(type: string): Promise<Record<string, unknown>[]> {
    return (await this.api<{ events: Record<string, unknown>[] }>('GET', `/v1/audit?type=${encodeURIComponent(type)}`)).events
  }

  createKey(name: string): Promise<{ key: string; id: string }> {
    return this.api<{ key: string; id: string }>('POST', '/v1/service-keys', { name })
  }

  async cleanup(): Promise<void> {
    if (process.env.GH_TEST_DEBUG && this.gw) process.stderr.write(`gateway:\n${this.gw.stderr}`)
    await Promise.all(this.procs.map((p) => this.stopConnector(p, 'SIGKILL')))
    await this.gw?.cleanup()
    this.net.teardown()
  }
}
