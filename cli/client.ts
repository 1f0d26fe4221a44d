// How the CLI reaches Gatehouse: through the running server's API when one runs (found through
// <data_dir>/run.json, authenticated with the admin token the server keeps in <data_dir>), so a
// revocation or a kill takes effect at once; straight from the data directory only when none runs.

import { existsSync, readFileSync } from 'node:fs'
import { type Config, loadConfigFile, parseConfig } from '../engine/config/config.js'
import { adminTokenPath, type RunInfo, runInfoPath } from './gateway/gateway.js'

export function resolveConfig(file: string | undefined): Config {
  const f = file ?? process.env.GATEHOUSE_CONFIG
  if (f) return loadConfigFile(f)
  if (existsSync('gatehouse.yaml')) return loadConfigFile('gatehouse.yaml')
  // No file: the built-in defaults, as `serve --dev` uses them.
  return parseConfig({}, null)
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

export function runningServer(config: Config): RunInfo | null {
  const f = runInfoPath(config.dataDir)
  if (!existsSync(f)) return null
  try {
    const info = JSON.parse(readFileSync(f, 'utf8')) as RunInfo
    return alive(info.pid) && info.api ? info : null
  } catch {
    return null
  }
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message)
  }
}

/** No gateway runs for this configuration, or its API did not answer (the CLI exits 3). */
export class ServerUnreachableError extends ApiError {
  constructor(message: string) {
    super(0, message)
  }
}

export class ApiClient {
  constructor(
    private readonly base: string,
    private readonly token: string,
  ) {}

  static forServer(config: Config): ApiClient | null {
    const run = runningServer(config)
    if (!run?.api) return null
    const tokenFile = adminTokenPath(config.dataDir)
    if (!existsSync(tokenFile)) return null
    return new ApiClient(run.api, readFileSync(tokenFile, 'utf8').trim())
  }

  /** A GET whose body is read as it arrives (exports, recordings); errors are thrown like `call`'s. */
  async stream(path: string): Promise<Response> {
    let res: Response
    try {
      res = await fetch(this.base + path, { headers: { authorization: `Bearer ${this.token}` } })
    } catch (err) {
      throw new ServerUnreachableError(`the server did not answer at ${this.base} (${(err as Error).message})`)
    }
    if (!res.ok) {
      const text = await res.text()
      let msg = res.statusText
      try {
        const j = JSON.parse(text) as { error?: unknown }
        if (j.error !== undefined) msg = String(j.error)
      } catch {
        /* not JSON */
      }
      throw new ApiError(res.status, msg)
    }
    return res
  }

  async call<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
    let res: Response
    try {
      res = await fetch(this.base + path, {
        method,
        headers: {
          authorization: `Bearer ${this.token}`,
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      })
    } catch (err) {
      throw new ServerUnreachableError(`the server did not answer at ${this.base} (${(err as Error).message})`)
    }
    const text = await res.text()
    let json: unknown
    try {
      json = JSON.parse(text)
    } catch {
      json = { error: text }
    }
    if (!res.ok) {
      const msg = typeof json === 'object' && json !== null && 'error' in json ? String((json as { error: unknown }).error) : res.statusText
      throw new ApiError(res.status, msg)
    }
    return json as T
  }
}
