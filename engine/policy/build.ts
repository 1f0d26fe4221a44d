// Policy directory → bundle. `opa build -t wasm` compiles the Rego modules against the WebAssembly
// capabilities (capabilities.ts), with masking.yaml and approvals.yaml as data.gatehouse.masking
// and data.gatehouse.approvals, plus a small generated module (`gatehouse_engine`) whose `hop`
// rule returns allow, deny, approval and mask together, so the engine evaluates one entrypoint per
// hop instead of four. The contract's own entrypoints (gatehouse/allow, …) are kept for other
// tools. The result is bundle.tar.gz with policy.wasm, data.json and .manifest, whose revision
// is the bundle version (content hash of the sources, sources.ts).

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { GatehouseError } from '../errors.js'
import type { ApprovalsData, MaskingData } from './data.js'
import { wasmCapabilities, WASM_BUILTINS } from './capabilities.js'
import { runOpa } from './opa.js'
import { type PolicySources, readPolicyDir } from './sources.js'
import { readTarGz, writeTarGz } from './tar.js'

export const ENGINE_PACKAGE = 'gatehouse_engine'
export const HOP_ENTRYPOINT = `${ENGINE_PACKAGE}/hop`
export const CONTRACT_RULES = ['allow', 'deny', 'approval', 'mask'] as const

/** Generated: the four contract rules of one hop in one evaluation. Defaults keep a missing rule
 * (a policy with no `mask`) from making the whole answer undefined; whatever a policy defines is
 * passed through as is and checked by the engine, so a malformed `deny` fails closed. */
export const ENGINE_MODULE = `package ${ENGINE_PACKAGE}

default allow := false

allow := data.gatehouse.allow

default deny := []

deny := data.gatehouse.deny

default approval := []

approval := data.gatehouse.approval

default mask := []

mask := data.gatehouse.mask

hop := {"allow": allow, "deny": deny, "approval": approval, "mask": mask}
`

export interface BundleData {
  readonly gatehouse: { readonly masking: MaskingData; readonly approvals: ApprovalsData }
}

export interface BuiltBundle {
  readonly version: string
  readonly sources: PolicySources
  /** bundle.tar.gz bytes. */
  readonly archive: Buffer
  readonly wasm: Buffer
  readonly data: BundleData
}

/** A staging directory holding the generated module, the data document and the capabilities. */
interface Stage {
  readonly dir: string
  readonly engine: string
  readonly data: string
  readonly caps: string
  cleanup(): void
}

async function stage(src: PolicySources): Promise<Stage> {
  const caps = await wasmCapabilities()
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-policy-'))
  const s: Stage = {
    dir,
    engine: join(dir, 'gatehouse_engine.rego'),
    data: join(dir, 'data.json'),
    caps: join(dir, 'capabilities.json'),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  }
  const data: BundleData = { gatehouse: { masking: src.masking, approvals: src.approvals } }
  writeFileSync(s.engine, ENGINE_MODULE)
  writeFileSync(s.data, JSON.stringify(data))
  writeFileSync(s.caps, caps.json)
  return s
}

const HINTS: readonly [RegExp, string][] = [
  [/^time\./, 'the clock is not available to policies: use input.time (UTC, pre-parsed: rfc3339, unix, weekday, hour, minute)'],
  [/^(http\.|net\.lookup)/, 'policies cannot reach the network'],
  [/^io\.jwt\./, 'the gateway verifies tokens itself; the verified principal is input.principal'],
  [/^(rand\.|uuid\.)/, 'decisions must be deterministic'],
  [/^(opa\.runtime|trace)$/, 'the runtime is not visible to policies'],
]

function hintFor(fn: string): string {
  for (const [re, h] of HINTS) if (re.test(fn)) return h
  return 'it is not implemented by the WebAssembly runtime that evaluates policies'
}

/** Rewrites opa's messages: paths as the user gave the directory, unsupported built-ins named. */
async function explainOpaErrors(src: PolicySources, st: Stage, text: string): Promise<string[]> {
  const caps = await wasmCapabilities()
  const lines: string[] = []
  for (const raw of text.split('\n')) {
    const line = raw.replace(/^(error: )?(load error: )?\d+ errors? occurred( during loading)?:\s*/, '').trimEnd()
    if (!line.trim()) continue
    const m = /^(\s*)(\S+?\.rego):(\d+):\s*(.*)$/.exec(line)
    if (!m) {
      lines.push(line)
      continue
    }
    const [, indent = '', file = '', lineNo = '', rest = ''] = m
    const where = file === st.engine ? '(generated gatehouse_engine module)' : `${src.display}/${file}`
    const undef = /^rego_type_error: undefined function (\S+)$/.exec(rest)
    const fn = undef?.[1]
    if (fn && caps.known.has(fn) && !WASM_BUILTINS.has(fn)) {
      lines.push(`${indent}${where}:${lineNo}: built-in ${fn} is not supported in policies: ${hintFor(fn)}`)
    } else lines.push(`${indent}${where}:${lineNo}: ${rest}`)
  }
  return lines
}

function policyError(src: PolicySources, lines: readonly string[]): GatehouseError {
  return new GatehouseError('GH_ERR_POLICY', `${src.display}: the policy does not compile:\n  ${lines.join('\n  ')}`)
}

function checkReserved(src: PolicySources): void {
  for (const f of src.rego) {
    const text = readFileSync(join(src.dir, f), 'utf8')
    const m = new RegExp(`^\\s*package\\s+${ENGINE_PACKAGE}\\b`, 'm').exec(text)
    if (m) {
      const line = text.slice(0, m.index + m[0].indexOf('package')).split('\n').length
      throw policyError(src, [`${src.display}/${f}:${line}: package ${ENGINE_PACKAGE} is reserved for the engine`])
    }
  }
}

/** Compiles a policy directory. Throws GH_ERR_POLICY with `file:line: problem` lines. */
export async function buildBundle(dirArg: string): Promise<BuiltBundle> {
  const src = readPolicyDir(dirArg)
  checkReserved(src)
  const st = await stage(src)
  try {
    const out = join(st.dir, 'opa-bundle.tar.gz')
    // A policy need not define deny, approval or mask; opa refuses an entrypoint that names no
    // rule, so those are dropped and the build retried. allow is required.
    const entrypoints = new Set<string>(CONTRACT_RULES.map((r) => `gatehouse/${r}`))
    let built = false
    while (!built) {
      const args = ['build', '-t', 'wasm', '--capabilities', st.caps, '--revision', src.version, '-o', out]
      for (const e of [...entrypoints, HOP_ENTRYPOINT]) args.push('-e', e)
      args.push(...src.rego, st.engine, st.data)
      const r = await runOpa(args, { cwd: src.dir })
      built = r.code === 0
      if (built) break
      const text = `${r.stderr}\n${r.stdout}`
      const missing = /entrypoint "([^"]+)" does not refer to a rule/.exec(text)?.[1]
      if (missing === 'gatehouse/allow') {
        throw policyError(src, [
          'no rule allow in package gatehouse: every command would be denied (write `default allow := false` and the allow rules)',
        ])
      }
      if (missing && entrypoints.delete(missing)) continue
      throw policyError(src, await explainOpaErrors(src, st, text))
    }
    const files = readTarGz(readFileSync(out))
    const wasm = files.get('policy.wasm')
    const manifest = files.get('.manifest')
    if (!wasm || !manifest) throw policyError(src, ['opa produced a bundle without policy.wasm'])
    const data: BundleData = { gatehouse: { masking: src.masking, approvals: src.approvals } }
    const dataBytes = Buffer.from(JSON.stringify(data))
    // The texts hashed into the version are the ones opa compiled: a file saved during the build
    // fails it (the reloader builds again on that change).
    const modules = src.rego.map((f, i) => {
      const data = readFileSync(join(src.dir, f))
      if (data.toString('utf8') !== src.regoText[i])
        throw policyError(src, [`${src.display}/${f}: changed while the bundle was built; build again`])
      return { name: f, data }
    })
    const archive = writeTarGz([
      { name: '.manifest', data: manifest },
      { name: 'data.json', data: dataBytes },
      { name: 'policy.wasm', data: wasm },
      // Tar names are capped at 100 bytes here: with a longer path, none are stored, and the
      // archive's loader assumes the policy reads the statement text (slower, never wrong).
      ...(modules.every((m) => Buffer.byteLength(m.name) <= 100) ? modules : []),
    ])
    return { version: src.version, sources: src, archive, wasm, data }
  } finally {
    st.cleanup()
  }
}

export interface RegoTestResult {
  readonly ran: boolean
  readonly ok: boolean
  readonly output: string
}

/** `opa test` over the policy modules and *_test.rego, with the same data document. */
export async function runRegoTests(dirArg: string, opts: { verbose?: boolean } = {}): Promise<RegoTestResult> {
  const src = readPolicyDir(dirArg)
  if (src.tests.length === 0) return { ran: false, ok: true, output: '' }
  const st = await stage(src)
  try {
    const args = ['test', ...(opts.verbose ? ['-v'] : []), ...src.rego, ...src.tests, st.engine, st.data]
    const r = await runOpa(args, { cwd: src.dir, timeoutMs: 120_000 })
    const text = `${r.stdout}${r.stderr}`.replaceAll(`${st.dir}/`, '(generated) ')
    // opa prints paths relative to the directory; name them as the user gave it.
    const output = text.replace(/^(\s*)(?!\/)(\S+?\.rego)(?=:)/gm, (_m, ind: string, f: string) => `${ind}${src.display}/${f}`)
    return { ran: true, ok: r.code === 0, output }
  } finally {
    st.cleanup()
  }
}

/** One `*_test.rego` test as `opa test --format json` reports it. */
export interface RegoTestCase {
  /** `data.<package>.<test name>`. */
  readonly name: string
  /** `<dir>/<file>:<row>`. */
  readonly where: string
  readonly file: string
  readonly passed: boolean
  readonly durationMs: number
  /** For a failure: opa's own account (`opa test -v --explain=fails` for that test alone). */
  readonly explanation: readonly string[]
}

/**
 * Runs the unit tests one by one as data: each test's name, place and outcome. A failing test is
 * run again alone with `--explain=fails`, so its report says which expression failed.
 */
export async function runRegoTestCases(dirArg: string): Promise<{ ran: boolean; tests: RegoTestCase[]; error: string | null }> {
  const src = readPolicyDir(dirArg)
  if (src.tests.length === 0) return { ran: false, tests: [], error: null }
  const st = await stage(src)
  try {
    const files = [...src.rego, ...src.tests, st.engine, st.data]
    const r = await runOpa(['test', '--format', 'json', ...files], { cwd: src.dir, timeoutMs: 120_000 })
    let raw: unknown
    try {
      raw = JSON.parse(r.stdout)
    } catch {
      const text = `${r.stdout}${r.stderr}`.replaceAll(`${st.dir}/`, '(generated) ').trim()
      return { ran: true, tests: [], error: text || `opa test exited ${r.code}` }
    }
    const tests: RegoTestCase[] = []
    for (const t of Array.isArray(raw) ? raw : []) {
      const e = t as {
        location?: { file?: string; row?: number }
        package?: string
        name?: string
        fail?: boolean
        error?: unknown
        duration?: number
      }
      const name = `${e.package ?? 'data'}.${e.name ?? '?'}`
      const file = e.location?.file ?? '?'
      const passed = e.fail !== true && e.error === undefined
      let explanation: string[] = []
      if (!passed) {
        const again = await runOpa(['test', '-v', '--explain=fails', '--run', `^${name.replaceAll('.', '\\.')}$`, ...files], {
          cwd: src.dir,
          timeoutMs: 60_000,
        })
        explanation = `${again.stdout}${again.stderr}`
          .replaceAll(`${st.dir}/`, '(generated) ')
          .split('\n')
          .filter((l) => l.trim() !== '' && !/^-{5,}|^(PASS|FAIL): \d+\/\d+$/.test(l.trim()))
          .slice(0, 60)
        if (e.error !== undefined) explanation.unshift(`error: ${JSON.stringify(e.error)}`)
      }
      tests.push({
        name,
        where: `${src.display}/${file}:${e.location?.row ?? 0}`,
        file,
        passed,
        durationMs: (e.duration ?? 0) / 1e6,
        explanation,
      })
    }
    return { ran: true, tests, error: null }
  } finally {
    st.cleanup()
  }
}

/** Why one hop got its answer, from opa's own evaluation of the same modules and data. */
export interface HopTrace {
  /** Contract rule bodies whose conditions all held: `deny (guardrails.rego:50)`. */
  readonly fired: readonly string[]
  /** Contract rule bodies that were tried and did not hold. */
  readonly notFired: readonly string[]
  /** Every `input.…` path the evaluation read, with the value it found (or `(absent)`). */
  readonly read: readonly string[]
}

const TRACE_LINE = /^(\S+)\s+((?:\| )*)(Enter|Exit|Eval|Unify|Fail|Redo|Index|Note)\s(.*)$/
const CONTRACT_RULE = new RegExp(`^data\\.gatehouse\\.(${CONTRACT_RULES.join('|')})\\b`)
const INPUT_PATH = /\binput((?:\.[A-Za-z_][A-Za-z0-9_]*)+)/g

function lookup(doc: unknown, path: readonly string[]): unknown {
  let v = doc
  for (const k of path) {
    if (typeof v !== 'object' || v === null || !(k in v)) return undefined
    v = (v as Record<string, unknown>)[k]
  }
  return v
}

/**
 * `opa eval --explain=debug` of the engine's `hop` rule for each input, reduced to what a policy
 * author needs: the contract rules that fired, those that were tried and did not, and the
 * inputs read. The same modules and data as the bundle, evaluated by opa rather than WebAssembly.
 */
export async function traceHops(dirArg: string, inputs: readonly unknown[]): Promise<HopTrace[]> {
  const src = readPolicyDir(dirArg)
  const st = await stage(src)
  try {
    const traces: HopTrace[] = []
    for (const [i, input] of inputs.entries()) {
      const inputFile = join(st.dir, `input-${i}.json`)
      writeFileSync(inputFile, JSON.stringify(input))
      const args = ['eval', '--explain=debug', '--format', 'pretty', '--input', inputFile]
      for (const f of [...src.rego, st.engine, st.data]) args.push('-d', f)
      args.push(`data.${ENGINE_PACKAGE}.hop`)
      const r = await runOpa(args, { cwd: src.dir, timeoutMs: 60_000 })
      const entered = new Map<string, string>()
      const fired = new Set<string>()
      const read = new Map<string, string>()
      for (const line of r.stdout.split('\n')) {
        const m = TRACE_LINE.exec(line)
        if (!m) continue
        const [, loc = '', , op = '', rest = ''] = m
        const rule = CONTRACT_RULE.exec(rest)?.[1]
        // A contract rule's body is entered at its own line and exits there when it holds.
        if (rule && loc !== 'query:1' && op === 'Enter') entered.set(`${rule}@${loc}`, `${rule} (${loc.replace(`${st.dir}/`, '')})`)
        if (rule && loc !== 'query:1' && op === 'Exit') fired.add(`${rule}@${loc}`)
        if (op === 'Eval' || op === 'Unify') {
          for (const p of rest.matchAll(INPUT_PATH)) {
            const path = (p[1] ?? '').slice(1).split('.')
            const key = `input.${path.join('.')}`
            if (read.has(key)) continue
            const v = lookup(input, path)
            const text = v === undefined ? '(absent)' : JSON.stringify(v)
            read.set(key, text.length > 120 ? `${text.slice(0, 117)}...` : text)
          }
        }
      }
      traces.push({
        fired: [...entered].filter(([k]) => fired.has(k)).map(([, v]) => v),
        notFired: [...entered].filter(([k]) => !fired.has(k)).map(([, v]) => v),
        read: [...read].map(([k, v]) => `${k} = ${v}`),
      })
    }
    return traces
  } finally {
    st.cleanup()
  }
}
