// Loading a bundle: a policy directory (compiled with opa, build.ts) or a prebuilt bundle.tar.gz
// (from `gatehouse policy build` in CI, or any `opa build -t wasm` bundle with the gatehouse/allow
// entrypoint). The data document is checked with the same code as the YAML files, so a bundle
// built elsewhere cannot smuggle in a masking rule the engine would misread.

import { createHash } from 'node:crypto'
import { existsSync, readFileSync, statSync } from 'node:fs'
import { resolve } from 'node:path'
import { GatehouseError } from '../errors.js'
import { buildBundle, HOP_ENTRYPOINT } from './build.js'
import { type ApprovalsData, FileProblems, type MaskingData, parseApprovals, parseMasking } from './data.js'
import { shortVersion } from './sources.js'
import { MAX_BUNDLE_BYTES, readTarGz } from './tar.js'
import { regoMayReadSqlText } from './reads.js'
import { type MaskScope, regoMaskScope } from './mask-scope.js'
import { PolicyModule } from './wasm.js'
import { isRecord } from '../record.js'

export interface LoadedBundle {
  readonly version: string
  /** The directory or archive it came from (absolute). */
  readonly source: string
  readonly module: PolicyModule
  /** gatehouse_engine/hop, or null for a plain opa bundle (then the contract entrypoints). */
  readonly hop: number | null
  readonly contract: {
    readonly allow: number
    readonly deny: number | null
    readonly approval: number | null
    readonly mask: number | null
  }
  readonly masking: MaskingData
  readonly approvals: ApprovalsData
  /** Whether the policy may read `input.command.sql` (reads.ts); true when its source is unknown. */
  readonly readsSqlText: boolean
  /** Where the policy's Rego `mask` entries may come from (mask-scope.ts); anywhere when its source is unknown. */
  readonly maskScope: MaskScope
  /** What it was instantiated from: another worker loads exactly this (engine/peers.ts). */
  readonly compiled: { readonly wasm: Uint8Array; readonly data: unknown; readonly rego: readonly string[] }
}

export function isArchivePath(p: string): boolean {
  return p.endsWith('.tar.gz') || p.endsWith('.tgz')
}

/** Instantiates a compiled module with its data; checks the data's gatehouse part. */
export async function instantiate(
  source: string,
  version: string,
  wasm: Uint8Array,
  data: unknown,
  /** The bundle's Rego modules (not its tests); none when they are not known. */
  rego: readonly string[],
): Promise<LoadedBundle> {
  const doc = isRecord(data) ? data : {}
  const gh = isRecord(doc.gatehouse) ? doc.gatehouse : {}
  const mp = new FileProblems(`${source}: data.json gatehouse.masking`)
  const masking = parseMasking(gh.masking, mp)
  const ap = new FileProblems(`${source}: data.json gatehouse.approvals`)
  const approvals = parseApprovals(gh.approvals, ap)
  const problems = [...mp.list, ...ap.list]
  if (problems.length > 0) throw new GatehouseError('GH_ERR_POLICY', `invalid bundle data:\n  ${problems.join('\n  ')}`)
  let module: PolicyModule
  try {
    module = await PolicyModule.load(wasm, doc)
  } catch (err) {
    throw new GatehouseError('GH_ERR_POLICY', `${source}: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
  }
  const ep = module.entrypoints
  const allow = ep.get('gatehouse/allow')
  const hop = ep.get(HOP_ENTRYPOINT) ?? null
  if (allow === undefined && hop === null) {
    throw new GatehouseError(
      'GH_ERR_POLICY',
      `${source}: the bundle has no gatehouse/allow entrypoint (build it with gatehouse policy build)`,
    )
  }
  return {
    version,
    source,
    module,
    hop,
    contract: {
      allow: allow ?? -1,
      deny: ep.get('gatehouse/deny') ?? null,
      approval: ep.get('gatehouse/approval') ?? null,
      mask: ep.get('gatehouse/mask') ?? null,
    },
    masking,
    approvals,
    readsSqlText: rego.length === 0 || regoMayReadSqlText(rego),
    maskScope: rego.length === 0 ? [{ actions: null, connections: null }] : regoMaskScope(rego),
    compiled: { wasm, data, rego },
  }
}

/** Reads a bundle.tar.gz: policy.wasm, data.json, and the version from .manifest's revision. */
export async function loadArchive(file: string): Promise<LoadedBundle> {
  const abs = resolve(file)
  let files: Map<string, Buffer>
  try {
    if (statSync(abs).size > MAX_BUNDLE_BYTES) throw new Error(`larger than ${MAX_BUNDLE_BYTES} bytes`)
    files = readTarGz(readFileSync(abs))
  } catch (err) {
    throw new GatehouseError(
      'GH_ERR_POLICY',
      `${file}: not a readable bundle.tar.gz (${err instanceof Error ? err.message : String(err)})`,
      {
        cause: err,
      },
    )
  }
  const wasm = files.get('policy.wasm')
  if (!wasm) throw new GatehouseError('GH_ERR_POLICY', `${file}: the bundle has no policy.wasm (build it with opa build -t wasm)`)
  const dataBytes = files.get('data.json')
  let data: unknown = {}
  let revision = ''
  try {
    if (dataBytes) data = JSON.parse(dataBytes.toString('utf8'))
    const m = files.get('.manifest')
    const manifest: unknown = m ? JSON.parse(m.toString('utf8')) : {}
    if (isRecord(manifest) && typeof manifest.revision === 'string') revision = manifest.revision
  } catch (err) {
    throw new GatehouseError('GH_ERR_POLICY', `${file}: data.json or .manifest is not valid JSON`, { cause: err })
  }
  // A bundle built without a revision is named by the hash of what decides: module and data.
  const version =
    revision ||
    shortVersion(
      createHash('sha256')
        .update(wasm)
        .update(dataBytes ?? Buffer.alloc(0))
        .digest('hex'),
    )
  // `gatehouse policy build` puts the Rego modules in the archive (as opa's own bundles do); without
  // them the engine cannot tell whether the policy reads the statement text, and assumes it does.
  const rego = [...files].filter(([name]) => name.endsWith('.rego') && !name.endsWith('_test.rego')).map(([, b]) => b.toString('utf8'))
  return instantiate(abs, version, wasm, data, rego)
}

/** A policy directory (compiled now) or a bundle archive. */
export async function loadPolicySource(path: string): Promise<LoadedBundle> {
  const abs = resolve(path)
  if (!existsSync(abs)) throw new GatehouseError('GH_ERR_POLICY', `${path}: no such policy directory or bundle`)
  if (statSync(abs).isDirectory()) {
    const built = await buildBundle(path)
    return instantiate(abs, built.version, built.wasm, built.data, built.sources.regoText)
  }
  if (!isArchivePath(abs)) throw new GatehouseError('GH_ERR_POLICY', `${path}: a policy source is a directory or a .tar.gz bundle`)
  return loadArchive(path)
}
