// The `opa` compiler: a build-time tool (Rego → WebAssembly, and `opa test`). It is found through
// GATEHOUSE_OPA, then PATH, then Go's bin directory (where `npm run setup` installs the pinned
// version). It always runs as a child process, asynchronously, so building a bundle never blocks
// the data path of a running gateway.

import { spawn, spawnSync } from 'node:child_process'
import { accessSync, constants, statSync } from 'node:fs'
import { homedir } from 'node:os'
import { delimiter, join } from 'node:path'
import { GatehouseError } from '../errors.js'

/** The version `npm run setup` installs and the one the capabilities were checked against. */
export const OPA_VERSION = '1.22.3'

const INSTALL_HINT =
  `install opa ${OPA_VERSION} (\`npm run setup\` runs \`go install github.com/open-policy-agent/opa@v${OPA_VERSION}\`), ` +
  'put it on PATH or point GATEHOUSE_OPA at it; a prebuilt bundle (policies: ./bundle.tar.gz, from `gatehouse policy build`) needs no opa'

function executable(file: string): boolean {
  try {
    if (!statSync(file).isFile()) return false
    accessSync(file, constants.X_OK)
    return true
  } catch {
    return false
  }
}

let found: string | null = null

/** The opa binary to run, or a GH_ERR_POLICY error that says how to install it. */
export function findOpa(): string {
  const env = process.env.GATEHOUSE_OPA
  if (env) {
    if (!executable(env)) throw new GatehouseError('GH_ERR_POLICY', `GATEHOUSE_OPA=${env} is not an executable file; ${INSTALL_HINT}`)
    return env
  }
  if (found && executable(found)) return found
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && executable(join(dir, 'opa'))) {
      found = join(dir, 'opa')
      return found
    }
  }
  const candidates: string[] = []
  const go = spawnSync('go', ['env', 'GOPATH'], { encoding: 'utf8', timeout: 10_000 })
  if (go.status === 0 && go.stdout.trim())
    candidates.push(
      ...go.stdout
        .trim()
        .split(delimiter)
        .map((d) => join(d, 'bin', 'opa')),
    )
  candidates.push(join(homedir(), 'go', 'bin', 'opa'))
  for (const c of candidates) {
    if (executable(c)) {
      found = c
      return c
    }
  }
  throw new GatehouseError('GH_ERR_POLICY', `the opa compiler was not found; ${INSTALL_HINT}`)
}

export interface OpaResult {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Cap on what we keep of opa's output: error listings are short, test output can be long. */
const MAX_OUTPUT = 4 * 1024 * 1024

/** Runs opa asynchronously; never throws for a non-zero exit (the caller reads the output). */
export function runOpa(args: readonly string[], opts: { cwd?: string; timeoutMs?: number } = {}): Promise<OpaResult> {
  const bin = findOpa()
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      if (stdout.length < MAX_OUTPUT) stdout += d
    })
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < MAX_OUTPUT) stderr += d
    })
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000)
    child.once('error', (err) => {
      clearTimeout(timer)
      reject(new GatehouseError('GH_ERR_POLICY', `cannot run ${bin}: ${err.message}; ${INSTALL_HINT}`, { cause: err }))
    })
    child.once('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
}
