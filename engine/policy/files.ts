// The files of the policy in force, read-only, for the console's policy page: a directory's files
// as they are on disk now (with that content's version, to compare with the loaded one), or a
// bundle archive's entries. The WebAssembly module is listed without its bytes.

import { readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { isArchivePath } from './bundle.js'
import { APPROVALS_FILE, MASKING_FILE, readPolicyDir } from './sources.js'
import { readTarGz } from './tar.js'

export interface PolicyFile {
  readonly path: string
  readonly bytes: number
  /** The text, or null for a binary file (policy.wasm). */
  readonly text: string | null
}

export interface PolicyFiles {
  readonly source: string | null
  /** The version of the directory's content as it is now (null for an archive). */
  readonly version: string | null
  readonly files: readonly PolicyFile[]
}

const MAX_SHOWN = 256 * 1024

function shown(path: string, b: Buffer): PolicyFile {
  const binary = path.endsWith('.wasm') || b.subarray(0, 4096).includes(0)
  return { path, bytes: b.length, text: binary ? null : b.subarray(0, MAX_SHOWN).toString('utf8') }
}

export function policyFiles(source: string | null, defaultDir: () => string): PolicyFiles {
  if (source === null) return { source, version: null, files: [] }
  // The default bundle's prebuilt archive was compiled from the package's policies/ directory.
  const dir = isArchivePath(source) && source.includes(join('dist', 'policies', 'default.')) ? defaultDir() : source
  if (isArchivePath(dir)) {
    if (statSync(dir).size > 64 * 1024 * 1024) return { source, version: null, files: [] }
    const files = [...readTarGz(readFileSync(dir))].sort(([a], [b]) => a.localeCompare(b)).map(([p, b]) => shown(p, b))
    return { source, version: null, files }
  }
  const s = readPolicyDir(dir)
  const names = [...s.rego, ...s.tests, ...s.cases, MASKING_FILE, APPROVALS_FILE]
  const files: PolicyFile[] = []
  for (const f of [...new Set(names)].sort()) {
    try {
      files.push(shown(f, readFileSync(join(s.dir, f))))
    } catch {
      // masking.yaml and approvals.yaml are optional
    }
  }
  return { source, version: s.version, files }
}
