// `gatehouse policy test DIR`: compile the bundle (an unsupported built-in or a broken data file
// fails here), run the Rego unit tests with `opa test`, then every decision table through the
// same WebAssembly engine the gateway uses. The run is collected as a report (every case and unit
// test by name, with why it failed), then written as text, JSON or JUnit XML for CI.

import { buildInputs } from '../decide.js'
import { isGatehouseError } from '../errors.js'
import { instantiate } from './bundle.js'
import { buildBundle, type HopTrace, runRegoTestCases, traceHops } from './build.js'
import { type CaseResult, readCases, runCase } from './cases.js'
import { PolicyEngine } from './engine.js'

export interface CheckOptions {
  /** Only cases and unit tests whose name matches (a regular expression). */
  readonly run?: RegExp
  /** Trace failing cases with opa (`--explain=debug`): rules that fired and inputs they read. */
  readonly explain?: boolean
}

/** One decision-table case or one Rego unit test. */
export interface TestResult {
  readonly kind: 'case' | 'rego'
  /** The case's `name`, or `data.<package>.<test>` for a unit test. */
  readonly name: string
  /** The file it is in, relative to the policy directory. */
  readonly file: string
  /** `file: cases[i]` or `file:line`. */
  readonly where: string
  readonly passed: boolean
  readonly durationMs: number
  /** Why it failed, one line each: the differences, the decision got, each hop, the trace. */
  readonly failure: readonly string[] | null
  /** The first difference (or opa's verdict), short enough for a JUnit `message`. */
  readonly message: string | null
}

export interface PolicyTestReport {
  readonly dir: string
  readonly bundle: { readonly version: string; readonly summary: string } | null
  /** Why the bundle did not build (then nothing else ran). */
  readonly buildError: string | null
  readonly regoRan: boolean
  /** opa itself failed (not a test): its output. */
  readonly regoError: string | null
  /** Case files that could not be read, per file: "file: problem". */
  readonly problems: readonly { readonly file: string; readonly problem: string }[]
  readonly results: readonly TestResult[]
  readonly casesFiles: readonly { readonly file: string; readonly passed: number; readonly total: number }[]
}

export function reportOk(r: PolicyTestReport): boolean {
  return r.buildError === null && r.regoError === null && r.problems.length === 0 && r.results.every((t) => t.passed)
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`
}

function hopLines(r: CaseResult): string[] {
  const lines: string[] = []
  for (const h of r.explanation.hops) {
    const parts = [h.in_scope ? 'in scope' : 'OUTSIDE SCOPE']
    if (h.allow !== null) parts.push(`allow=${h.allow}`)
    if (h.deny.length) parts.push(`deny=${JSON.stringify(h.deny)}`)
    if (h.approval.length) parts.push(`approval=${JSON.stringify(h.approval)}`)
    if (h.mask.length) parts.push(`mask=${JSON.stringify(h.mask.map((m) => `${m.rule}:${m.column}`))}`)
    lines.push(`  hop ${h.hop}: ${parts.join(' ')}`)
  }
  return lines
}

function traceLines(hop: string, t: HopTrace): string[] {
  return [
    `  why, hop ${hop} (opa eval --explain=debug on the same modules):`,
    `    fired: ${t.fired.join(', ') || 'none'}`,
    ...(t.notFired.length > 0 ? [`    tried, did not fire: ${t.notFired.join(', ')}`] : []),
    `    read: ${t.read.join(', ') || 'nothing from input'}`,
  ]
}

/** Runs everything and returns the report; nothing is printed. */
export async function runPolicyTests(dir: string, opts: CheckOptions = {}): Promise<PolicyTestReport> {
  const selected = (name: string): boolean => opts.run === undefined || opts.run.test(name)
  let engine: PolicyEngine
  let display: string
  let cases: readonly string[]
  let casesDir: string
  let bundle: PolicyTestReport['bundle']
  try {
    const built = await buildBundle(dir)
    const s = built.sources
    display = s.display
    cases = s.cases
    casesDir = s.dir
    bundle = {
      version: built.version,
      summary:
        `${plural(s.rego.length, 'module')}, ${plural(s.masking.rules.length, 'masking rule')}, ` +
        `${plural(s.approvals.requirements.length, 'approval requirement')}`,
    }
    engine = new PolicyEngine(await instantiate(s.dir, built.version, built.wasm, built.data, built.sources.regoText))
  } catch (err) {
    return {
      dir,
      bundle: null,
      buildError: isGatehouseError(err) ? err.message : String(err),
      regoRan: false,
      regoError: null,
      problems: [],
      results: [],
      casesFiles: [],
    }
  }

  const results: TestResult[] = []
  const rego = await runRegoTestCases(dir)
  for (const t of rego.tests) {
    if (!selected(t.name)) continue
    results.push({
      kind: 'rego',
      name: t.name,
      file: t.file,
      where: t.where,
      passed: t.passed,
      durationMs: t.durationMs,
      failure: t.passed ? null : [...t.explanation],
      message: t.passed ? null : `opa test: ${t.name} failed`,
    })
  }

  const problems: { file: string; problem: string }[] = []
  const casesFiles: { file: string; passed: number; total: number }[] = []
  for (const rel of cases) {
    const { cases: list, problems: bad } = readCases(casesDir, display, rel)
    for (const p of bad) problems.push({ file: rel, problem: p })
    let passed = 0
    let total = 0
    for (const c of list) {
      if (!selected(c.name)) continue
      total++
      const t0 = process.hrtime.bigint()
      const r = runCase(engine, c)
      const durationMs = Number(process.hrtime.bigint() - t0) / 1e6
      if (r.diffs.length === 0) {
        passed++
        results.push({ kind: 'case', name: c.name, file: rel, where: c.where, passed: true, durationMs, failure: null, message: null })
        continue
      }
      const failure = [...r.diffs.map((d) => `  ${d}`), `  got: ${JSON.stringify(r.explanation.decision)}`]
      if (r.explanation.error) failure.push(`  evaluation error: ${r.explanation.error}`)
      failure.push(...hopLines(r))
      if (opts.explain !== false) {
        try {
          const inputs = buildInputs(c.request, c.now)
          const traces = await traceHops(dir, inputs)
          traces.forEach((t, i) => {
            failure.push(...traceLines(c.request.identity.chain[i]?.id ?? `#${i}`, t))
          })
        } catch (err) {
          failure.push(`  (no opa trace: ${err instanceof Error ? err.message : String(err)})`)
        }
      }
      results.push({
        kind: 'case',
        name: c.name,
        file: rel,
        where: c.where,
        passed: false,
        durationMs,
        failure,
        message: r.diffs[0] ?? 'failed',
      })
    }
    casesFiles.push({ file: rel, passed, total })
  }
  return { dir: display, bundle, buildError: null, regoRan: rego.ran, regoError: rego.error, problems, results, casesFiles }
}

/** The report as the text `policy test` prints by default. */
export function formatText(r: PolicyTestReport, verbose: boolean): string[] {
  if (r.buildError !== null) return [`FAIL build: ${r.buildError}`]
  const lines: string[] = []
  if (r.bundle) lines.push(`bundle ${r.bundle.version}: ${r.bundle.summary}`)
  const rego = r.results.filter((t) => t.kind === 'rego')
  if (!r.regoRan) lines.push('opa test: no *_test.rego files')
  else if (r.regoError !== null) for (const l of r.regoError.split('\n')) lines.push(`opa test: ${l}`)
  else {
    for (const t of rego) {
      if (t.passed) {
        if (verbose) lines.push(`opa test: ok   ${t.name} (${t.where})`)
        continue
      }
      lines.push(`opa test: FAIL ${t.name} (${t.where})`)
      for (const l of t.failure ?? []) lines.push(`opa test:   ${l}`)
    }
    const failed = rego.filter((t) => !t.passed).length
    lines.push(`opa test: ${failed === 0 ? 'PASS' : 'FAIL'}: ${rego.length - failed}/${rego.length}`)
  }
  if (r.casesFiles.length === 0 && r.problems.length === 0) lines.push('cases: no *.cases.yaml files')
  for (const p of r.problems) lines.push(`FAIL ${p.problem}`)
  for (const f of r.casesFiles) {
    for (const t of r.results) {
      if (t.kind !== 'case' || t.file !== f.file) continue
      if (t.passed) {
        if (verbose) lines.push(`ok   ${t.where} ${JSON.stringify(t.name)}`)
      } else {
        lines.push(`FAIL ${t.where} ${JSON.stringify(t.name)}`)
        lines.push(...(t.failure ?? []))
      }
    }
    lines.push(`cases: ${r.dir}/${f.file}: ${f.passed} of ${f.total} passed`)
  }
  const casesPassed = r.results.filter((t) => t.kind === 'case' && t.passed).length
  const casesFailed = r.results.filter((t) => t.kind === 'case' && !t.passed).length + r.problems.length
  const regoFailed = r.regoError !== null || rego.some((t) => !t.passed)
  const failures = [...(casesFailed > 0 ? [`${plural(casesFailed, 'case')} failed`] : []), ...(regoFailed ? ['opa test failed'] : [])]
  lines.push(
    failures.length === 0
      ? `PASS: ${plural(casesPassed, 'case')}${r.regoRan ? ' and the opa tests' : ''}`
      : `FAILED: ${failures.join(', ')}`,
  )
  return lines
}

/** The same facts as JSON: one document. */
export function formatJson(r: PolicyTestReport): string {
  return JSON.stringify({
    ok: reportOk(r),
    dir: r.dir,
    bundle: r.bundle,
    build_error: r.buildError,
    opa_error: r.regoError,
    problems: r.problems,
    tests: r.results.map((t) => ({
      kind: t.kind,
      name: t.name,
      file: t.file,
      where: t.where,
      passed: t.passed,
      duration_ms: Math.round(t.durationMs * 1000) / 1000,
      ...(t.passed ? {} : { message: t.message, failure: t.failure?.map((l) => l.trim()) }),
    })),
  })
}

function xml(text: string): string {
  return (
    text
      .replaceAll('&', '&amp;')
      .replaceAll('<', '&lt;')
      .replaceAll('>', '&gt;')
      .replaceAll('"', '&quot;')
      // Characters XML 1.0 cannot carry at all.
      // biome-ignore lint/suspicious/noControlCharactersInRegex: stripping them is the point
      .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/g, '')
  )
}

/**
 * JUnit XML, as CI systems read it: one `testsuite` per cases file (and one for the opa unit
 * tests), one `testcase` per case or test named by its name, a `failure` child when it failed.
 */
export function formatJunit(r: PolicyTestReport): string {
  const suites: {
    name: string
    cases: { name: string; classname: string; time: number; failure: { message: string; body: string } | null }[]
  }[] = []
  if (r.buildError !== null) {
    suites.push({
      name: `${r.dir}: bundle`,
      cases: [{ name: 'bundle builds', classname: r.dir, time: 0, failure: { message: 'the bundle does not build', body: r.buildError } }],
    })
  }
  if (r.regoError !== null) {
    suites.push({
      name: `${r.dir}: opa test`,
      cases: [{ name: 'opa test runs', classname: r.dir, time: 0, failure: { message: 'opa test failed to run', body: r.regoError } }],
    })
  }
  const rego = r.results.filter((t) => t.kind === 'rego')
  if (rego.length > 0) {
    suites.push({
      name: `${r.dir}: opa test`,
      cases: rego.map((t) => ({
        name: t.name,
        classname: t.file,
        time: t.durationMs / 1000,
        failure: t.passed ? null : { message: t.message ?? 'failed', body: (t.failure ?? []).join('\n') },
      })),
    })
  }
  const files = [...new Set([...r.casesFiles.map((f) => f.file), ...r.problems.map((p) => p.file)])]
  for (const f of files) {
    const cases = r.results
      .filter((t) => t.kind === 'case' && t.file === f)
      .map((t) => ({
        name: t.name,
        classname: f,
        time: t.durationMs / 1000,
        failure: t.passed ? null : { message: t.message ?? 'failed', body: [t.where, ...(t.failure ?? [])].join('\n') },
      }))
    const problems = r.problems.filter((p) => p.file === f)
    if (problems.length > 0) {
      cases.push({
        name: `${f} is readable`,
        classname: f,
        time: 0,
        failure: { message: `${plural(problems.length, 'problem')} in ${f}`, body: problems.map((p) => p.problem).join('\n') },
      })
    }
    suites.push({ name: `${r.dir}/${f}`, cases })
  }
  const total = suites.reduce((n, s) => n + s.cases.length, 0)
  const failures = suites.reduce((n, s) => n + s.cases.filter((c) => c.failure).length, 0)
  const out = [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<testsuites name="gatehouse policy test" tests="${total}" failures="${failures}">`,
  ]
  for (const s of suites) {
    const f = s.cases.filter((c) => c.failure).length
    const time = s.cases.reduce((n, c) => n + c.time, 0)
    out.push(`  <testsuite name="${xml(s.name)}" tests="${s.cases.length}" failures="${f}" errors="0" time="${time.toFixed(3)}">`)
    for (const c of s.cases) {
      const open = `    <testcase name="${xml(c.name)}" classname="${xml(c.classname)}" time="${c.time.toFixed(3)}"`
      if (!c.failure) out.push(`${open}/>`)
      else {
        out.push(`${open}>`)
        out.push(`      <failure message="${xml(c.failure.message)}" type="failure">${xml(c.failure.body)}</failure>`)
        out.push('    </testcase>')
      }
    }
    out.push('  </testsuite>')
  }
  out.push('</testsuites>')
  return `${out.join('\n')}\n`
}
