// A policy directory as files: what goes into the bundle (*.rego, masking.yaml, approvals.yaml),
// what only tests it (*_test.rego, *.cases.yaml), and the bundle version — the content hash of
// the files that go into the bundle, so a version names exactly what decided. Editing a test or a
// decision table changes no decision, so it does not change the version.

import { createHash } from 'node:crypto'
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import { GatehouseError } from '../errors.js'
import { type ApprovalsData, FileProblems, type MaskingData, parseApprovals, parseMasking, parseYaml } from './data.js'

export const MASKING_FILE = 'masking.yaml'
export const APPROVALS_FILE = 'approvals.yaml'

/** Subdirectories are read too (a `lib/` of helpers), except hidden ones and node_modules. */
const MAX_FILES = 2000
const MAX_FILE_BYTES = 4 * 1024 * 1024

export interface PolicySources {
  /** Absolute directory. */
  readonly dir: string
  /** How messages name the directory (as the user gave it). */
  readonly display: string
  /** Policy modules, relative to dir with / separators, sorted. */
  readonly rego: readonly string[]
  /** Their texts as read for the version hash, in the same order. */
  readonly regoText: readonly string[]
  /** opa unit tests (*_test.rego). */
  readonly tests: readonly string[]
  /** Decision tables (*.cases.yaml). */
  readonly cases: readonly string[]
  readonly masking: MaskingData
  readonly approvals: ApprovalsData
  /** `sha256:` and the first 12 hex digits of the content hash. */
  readonly version: string
  readonly digest: string
}

function walk(dir: string, base: string, out: string[]): void {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.name.startsWith('.') || e.name === 'node_modules') continue
    const full = join(dir, e.name)
    if (e.isDirectory()) walk(full, base, out)
    else if (e.isFile()) {
      out.push(relative(base, full).split(sep).join('/'))
      if (out.length > MAX_FILES) throw new GatehouseError('GH_ERR_POLICY', `${base}: more than ${MAX_FILES} files in the policy directory`)
    }
  }
}

export function isTestFile(rel: string): boolean {
  return rel.endsWith('_test.rego')
}
export function isCasesFile(rel: string): boolean {
  return rel.endsWith('.cases.yaml') || rel.endsWith('.cases.yml')
}

/** The short bundle version of a full hex digest. */
export function shortVersion(hex: string): string {
  return `sha256:${hex.slice(0, 12)}`
}

/** Reads and validates a policy directory; every problem of every data file is reported at once. */
export function readPolicyDir(dirArg: string): PolicySources {
  const dir = resolve(dirArg)
  const display = dirArg.replace(/\/+$/, '') || '.'
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new GatehouseError('GH_ERR_POLICY', `${display}: not a policy directory (no such directory)`)
  }
  const all: string[] = []
  walk(dir, dir, all)
  all.sort()
  const rego = all.filter((f) => f.endsWith('.rego') && !isTestFile(f))
  const tests = all.filter(isTestFile)
  const cases = all.filter(isCasesFile)
  if (rego.length === 0) throw new GatehouseError('GH_ERR_POLICY', `${display}: no .rego policy files`)

  const hash = createHash('sha256')
  const contents = new Map<string, string>()
  for (const f of [...rego, MASKING_FILE, APPROVALS_FILE].sort()) {
    const full = join(dir, f)
    if (!existsSync(full)) continue
    const size = statSync(full).size
    if (size > MAX_FILE_BYTES) throw new GatehouseError('GH_ERR_POLICY', `${display}/${f}: larger than ${MAX_FILE_BYTES} bytes`)
    const text = readFileSync(full, 'utf8')
    contents.set(f, text)
    // name, NUL, length, NUL, content: no two different file sets hash the same stream
    hash.update(`${f}\0${Buffer.byteLength(text)}\0`).update(text)
  }
  const digest = hash.digest('hex')

  const problems: string[] = []
  const mp = new FileProblems(`${display}/${MASKING_FILE}`)
  const maskingText = contents.get(MASKING_FILE)
  const masking = maskingText === undefined ? parseMasking(undefined, mp) : parseMasking(parseYaml(maskingText, mp), mp)
  problems.push(...mp.list)
  const ap = new FileProblems(`${display}/${APPROVALS_FILE}`)
  const approvalsText = contents.get(APPROVALS_FILE)
  const approvals = approvalsText === undefined ? parseApprovals(undefined, ap) : parseApprovals(parseYaml(approvalsText, ap), ap)
  problems.push(...ap.list)
  if (problems.length > 0) {
    throw new GatehouseError('GH_ERR_POLICY', `invalid policy data:\n  ${problems.join('\n  ')}`)
  }
  const regoText = rego.map((f) => contents.get(f) ?? '')
  return { dir, display, rego, regoText, tests, cases, masking, approvals, version: shortVersion(digest), digest }
}

/**
 * The default bundle as the gateway loads it: the copy compiled when the package was packed
 * (`dist/policies/default.tar.gz`, so an installed gateway runs without the opa compiler) while
 * its recorded version is that of `policies/` as it is now; otherwise the directory itself,
 * compiled with opa (a checkout where someone edits the default bundle).
 */
export function defaultPolicySource(): string {
  const dir = defaultPolicyDir()
  const prebuilt = join(dirname(dir), 'dist', 'policies')
  try {
    const bundle = join(prebuilt, 'default.tar.gz')
    if (existsSync(bundle) && readFileSync(join(prebuilt, 'default.version'), 'utf8').trim() === readPolicyDir(dir).version) return bundle
  } catch {
    // No usable prebuilt copy: compile the directory.
  }
  return dir
}

/** The default bundle shipped in the package's `policies/` directory. */
export function defaultPolicyDir(): string {
  let d = dirname(fileURLToPath(import.meta.url))
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(d, 'package.json')) && existsSync(join(d, 'policies'))) return join(d, 'policies')
    d = dirname(d)
  }
  throw new GatehouseError('GH_ERR_POLICY', 'the default policy bundle (policies/ of the gatehouse package) was not found')
}
