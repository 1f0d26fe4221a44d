// `gatehouse policy test DIR`: compile the bundle (an unsupported built-in or a broken data file
// fails here), run the Rego unit tests with `opa test`, then every decision table through the
// same WebAssembly engine the gateway uses. Every failure is printed with the decision it got.

import { isGatehouseError } from '../errors.js'
import { instantiate } from './bundle.js'
import { buildBundle, runRegoTests } from './build.js'
import { type CaseResult, readCases, runCase } from './cases.js'
import { PolicyEngine } from './engine.js'

export interface CheckOptions {
  /** Print passing cases and opa's verbose output too. */
  readonly verbose?: boolean
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`
}

export function formatFailure(r: CaseResult): string[] {
  const lines = [`FAIL ${r.case.where} ${JSON.stringify(r.case.name)}`]
  for (const d of r.diffs) lines.push(`  ${d}`)
  lines.push(`  got: ${JSON.stringify(r.explanation.decision)}`)
  if (r.explanation.error) lines.push(`  evaluation error: ${r.explanation.error}`)
  for (const h of r.explanation.hops) {
    const parts = [h.in_scope ? 'in scope' : 'OUTSIDE SCOPE']
    if (h.allow !== null) parts.push(`allow=${h.allow}`)
    if (h.deny.length) parts.push(`deny=${JSON.stringify(h.deny)}`)
    if (h.approval.length) parts.push(`approval=${JSON.stringify(h.approval)}`)
    if (h.mask.length) parts.push(`mask=${JSON.stringify(h.mask.map((m) => `${m.rule}:${m.column}`))}`)
    lines.push(`    hop ${h.hop}: ${parts.join(' ')}`)
  }
  return lines
}

/** Runs everything; returns true when all passed. `out` gets one line at a time. */
export async function checkPolicyDir(dir: string, out: (line: string) => void, opts: CheckOptions = {}): Promise<boolean> {
  let ok = true
  let engine: PolicyEngine
  let display: string
  let cases: readonly string[]
  let casesDir: string
  try {
    const built = await buildBundle(dir)
    const s = built.sources
    display = s.display
    cases = s.cases
    casesDir = s.dir
    out(
      `bundle ${built.version}: ${plural(s.rego.length, 'module')}, ${plural(s.masking.rules.length, 'masking rule')}, ` +
        `${plural(s.approvals.requirements.length, 'approval requirement')}`,
    )
    engine = new PolicyEngine(await instantiate(s.dir, built.version, built.wasm, built.data, built.sources.regoText))
  } catch (err) {
    out(`FAIL build: ${isGatehouseError(err) ? err.message : String(err)}`)
    return false
  }

  const rego = await runRegoTests(dir, opts.verbose ? { verbose: true } : {})
  if (!rego.ran) out('opa test: no *_test.rego files')
  else {
    for (const line of rego.output.trimEnd().split('\n')) out(`opa test: ${line}`)
    if (!rego.ok) ok = false
  }

  if (cases.length === 0) out('cases: no *.cases.yaml files')
  let passed = 0
  let failed = 0
  for (const rel of cases) {
    const { cases: list, problems } = readCases(casesDir, display, rel)
    for (const p of problems) {
      out(`FAIL ${p}`)
      failed++
    }
    let filePassed = 0
    for (const c of list) {
      const r = runCase(engine, c)
      if (r.diffs.length === 0) {
        passed++
        filePassed++
        if (opts.verbose) out(`ok   ${c.where} ${JSON.stringify(c.name)}`)
      } else {
        failed++
        for (const line of formatFailure(r)) out(line)
      }
    }
    out(`cases: ${display}/${rel}: ${filePassed} of ${list.length} passed`)
  }
  if (failed > 0) ok = false
  const failures = [...(failed > 0 ? [`${plural(failed, 'case')} failed`] : []), ...(rego.ok ? [] : ['opa test failed'])]
  out(ok ? `PASS: ${plural(passed, 'case')}${rego.ran ? ' and the opa tests' : ''}` : `FAILED: ${failures.join(', ')}`)
  return ok
}
