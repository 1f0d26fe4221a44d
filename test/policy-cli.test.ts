// `gatehouse policy build|test|eval` as CI runs them: no config file and no server. The default
// bundle and the worked examples pass their own tests; a deliberately wrong case and a failing
// opa unit test exit 1 and show the decision that was got.

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { XMLParser, XMLValidator } from 'fast-xml-parser'
import { BIN, type CliResult, REPO } from './helpers/gateway.js'

let cwd: string
before(() => {
  cwd = mkdtempSync(join(tmpdir(), 'gh-policy-cli-'))
})
after(() => rmSync(cwd, { recursive: true, force: true }))

/** Runs the CLI in an empty directory: no gatehouse.yaml, no GATEHOUSE_CONFIG, no server. */
function gatehouse(args: readonly string[], input?: string): CliResult {
  const env = { ...process.env }
  delete env.GATEHOUSE_CONFIG
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd, env, encoding: 'utf8', timeout: 120_000, input })
  if (r.error) throw r.error
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

function copy(src: string): string {
  const dir = mkdtempSync(join(cwd, 'policies-'))
  cpSync(src, dir, { recursive: true })
  return dir
}

describe('gatehouse policy (CLI)', () => {
  test('policy test passes on the default bundle', () => {
    const r = gatehouse(['policy', 'test', join(REPO, 'policies')])
    assert.equal(r.code, 0, r.stdout + r.stderr)
    assert.match(r.stdout, /opa test: PASS: \d+\/\d+/)
    assert.match(r.stdout, /default\.cases\.yaml: (\d+) of \1 passed/)
    assert.match(r.stdout, /^PASS: \d+ cases and the opa tests$/m)
  })

  test('policy test passes on the worked examples', () => {
    const r = gatehouse(['policy', 'test', join(REPO, 'examples/policies'), '--verbose'])
    assert.equal(r.code, 0, r.stdout + r.stderr)
    assert.match(r.stdout, /examples\.cases\.yaml: (\d+) of \1 passed/)
    for (const name of [
      'analysts may not write prod, even when also writers',
      'DDL on prod is held for dba',
      'an agent may not run COPY … PROGRAM',
      'no writes to prod on Saturday',
    ]) {
      assert.ok(r.stdout.includes(`"${name}"`), `case ${name} ran`)
    }
  })

  test('a wrong case exits 1 and prints the decision it got', () => {
    const dir = copy(join(REPO, 'examples/policies'))
    const file = join(dir, 'examples.cases.yaml')
    writeFileSync(
      file,
      readFileSync(file, 'utf8').replace(
        'want: { effect: deny, rules: [hr-salaries], hop: user:wes }',
        'want: { effect: allow, rules: [hr-salaries], hop: user:wes }',
      ),
    )
    const r = gatehouse(['policy', 'test', dir])
    assert.equal(r.code, 1)
    assert.match(r.stdout, /FAIL .*examples\.cases\.yaml: cases\[\d+\] "others do not, even joined with another table"/)
    assert.match(r.stdout, /effect: want allow, got deny/)
    assert.match(r.stdout, /got: \{"effect":"deny","rules":\["hr-salaries"\],"reason":"only group hr may read hr\.salaries"/)
    assert.match(r.stdout, /hop user:wes: in scope allow=true deny=/)
    // Why: opa's trace of the same modules names the rules that fired and the inputs they read.
    assert.match(r.stdout, /why, hop user:wes \(opa eval --explain=debug/)
    assert.match(r.stdout, /fired: .*deny \(hr\.rego:\d+\)/)
    assert.match(r.stdout, /read: .*input\.command\.tables = \["public\.people","hr\.salaries"\]/)
    assert.match(r.stdout, /^FAILED: 1 case failed$/m)
  })

  test('--format junit: XML alone on stdout, one testcase per case and opa test, failures as children', () => {
    const dir = copy(join(REPO, 'examples/policies'))
    const file = join(dir, 'examples.cases.yaml')
    writeFileSync(
      file,
      readFileSync(file, 'utf8').replace(
        'want: { effect: deny, rules: [hr-salaries], hop: user:wes }',
        'want: { effect: allow, rules: [hr-salaries], hop: user:wes }',
      ),
    )
    writeFileSync(
      join(dir, 'extra_test.rego'),
      'package extra_test\n\nimport data.gatehouse\n\ntest_wrong if gatehouse.allow with input as {"action": "sql.other"}\n\ntest_right if not gatehouse.allow with input as {"action": "sql.other"}\n',
    )
    const r = gatehouse(['policy', 'test', dir, '--format', 'junit'])
    assert.equal(r.code, 1, r.stderr)
    assert.ok(XMLValidator.validate(r.stdout) === true, 'well-formed XML')
    assert.match(r.stdout, /^<\?xml /)
    type Testcase = { '@_name': string; '@_classname': string; failure?: { '@_message': string; '#text': string } }
    type Suite = { '@_name': string; testcase: Testcase[] }
    const doc = new XMLParser({ ignoreAttributes: false, isArray: (name) => name === 'testsuite' || name === 'testcase' }).parse(
      r.stdout,
    ) as {
      testsuites: { testsuite: Suite[]; '@_failures': string }
    }
    const all = doc.testsuites.testsuite.flatMap((s) => s.testcase)
    const failed = all.filter((c) => c.failure !== undefined).map((c) => c['@_name'])
    assert.deepEqual(failed.sort(), ['data.extra_test.test_wrong', 'others do not, even joined with another table'])
    assert.equal(doc.testsuites['@_failures'], '2')
    const cases = doc.testsuites.testsuite.find((s) => s['@_name'].endsWith('examples.cases.yaml'))
    assert.ok(cases)
    assert.ok(cases.testcase.some((c) => c['@_name'] === 'DDL on prod is held for dba' && c.failure === undefined))
    const wrong = cases.testcase.find((c) => c.failure)
    assert.equal(wrong?.failure?.['@_message'], 'effect: want allow, got deny')
    assert.match(wrong?.failure?.['#text'] ?? '', /fired: .*deny \(hr\.rego/)
    assert.ok(all.some((c) => c['@_name'] === 'data.extra_test.test_right' && c.failure === undefined))
  })

  test('--format json has the same facts; --run selects by name', () => {
    const dir = copy(join(REPO, 'examples/policies'))
    const r = gatehouse(['policy', 'test', dir, '--format', 'json', '--run', '^DDL on prod is held'])
    assert.equal(r.code, 0, r.stderr)
    const doc = JSON.parse(r.stdout) as { ok: boolean; tests: { kind: string; name: string; passed: boolean }[] }
    assert.equal(doc.ok, true)
    assert.deepEqual(
      doc.tests.map((t) => [t.kind, t.name, t.passed]),
      [['case', 'DDL on prod is held for dba', true]],
    )
    const none = gatehouse(['policy', 'test', dir, '--run', '('])
    assert.equal(none.code, 2)
  })

  test('a bundle that does not build exits 2, in every format', () => {
    const dir = copy(join(REPO, 'policies'))
    writeFileSync(join(dir, 'broken.rego'), 'package gatehouse\n\nallow if {\n')
    const text = gatehouse(['policy', 'test', dir])
    assert.equal(text.code, 2)
    assert.match(text.stdout, /^FAIL build: /m)
    const junit = gatehouse(['policy', 'test', dir, '--format', 'junit'])
    assert.equal(junit.code, 2)
    assert.ok(XMLValidator.validate(junit.stdout) === true)
    assert.match(junit.stdout, /<testcase name="bundle builds"/)
  })

  test('a failing opa unit test and a broken case file exit 1', () => {
    const dir = copy(join(REPO, 'policies'))
    writeFileSync(
      join(dir, 'extra_test.rego'),
      'package extra_test\n\nimport data.gatehouse\n\ntest_wrong if gatehouse.allow with input as {"action": "sql.other"}\n',
    )
    writeFileSync(join(dir, 'broken.cases.yaml'), '- name: x\n  input: { chain: [alice], action: sql.read }\n  want: { effect: maybe }\n')
    const r = gatehouse(['policy', 'test', dir])
    assert.equal(r.code, 1, r.stdout)
    assert.match(r.stdout, /^opa test: FAIL data\.extra_test\.test_wrong \(.*extra_test\.rego:5\)$/m)
    // opa's own account of the failure, for that test alone.
    assert.match(r.stdout, /opa test: .*Fail data\.gatehouse\.allow with input as \{"action": "sql\.other"\}/)
    assert.match(r.stdout, /broken\.cases\.yaml: cases\[0\]\.input\.chain\[0\]\.id: must be <kind>:<name>/)
    assert.match(r.stdout, /broken\.cases\.yaml: cases\[0\]\.want\.effect: must be allow, deny or hold/)
  })

  test('policy build prints the version alone and writes the bundle; eval reads it back', () => {
    const out = join(cwd, 'bundle.tar.gz')
    const r = gatehouse(['policy', 'build', join(REPO, 'policies'), '-o', out])
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /^sha256:[0-9a-f]{12}\n$/)
    assert.ok(existsSync(out))
    const version = r.stdout.trim()
    const input = JSON.stringify({
      chain: [
        { id: 'user:wendy', groups: ['writers'] },
        { id: 'agent:bot', scope: ['sql.read'] },
      ],
      connection: { name: 'app', labels: { env: 'prod' } },
      action: 'sql.write',
      command: { sql: 'UPDATE t SET x = 1', kind: 'update', has_where: false },
    })
    const e = gatehouse(['policy', 'eval', out, '--input', '-'], input)
    assert.equal(e.code, 0, e.stderr)
    const doc = JSON.parse(e.stdout) as {
      decision: { effect: string; reasons: { rule: string; hop: string }[]; policy: string }
      hops: { hop: string; in_scope: boolean }[]
      inputs: { principal: { id: string } }[]
    }
    assert.equal(doc.decision.effect, 'deny')
    assert.deepEqual(
      doc.decision.reasons.map((x) => `${x.rule}@${x.hop}`),
      ['scope@agent:bot'],
    )
    assert.equal(doc.decision.policy, version)
    assert.deepEqual(
      doc.hops.map((h) => [h.hop, h.in_scope]),
      [
        ['user:wendy', true],
        ['agent:bot', false],
      ],
    )
    assert.deepEqual(
      doc.inputs.map((i) => i.principal.id),
      ['user:wendy', 'agent:bot'],
    )
  })

  test('policy eval on a directory, with YAML input; a bad input is reported by key', () => {
    const file = join(cwd, 'input.yaml')
    writeFileSync(
      file,
      'chain: [{ id: user:dana, groups: [dba] }]\nconnection: { labels: { env: prod } }\naction: sql.ddl\ncommand: { kind: create_table }\n',
    )
    const r = gatehouse(['policy', 'eval', join(REPO, 'policies'), '--input', file])
    assert.equal(r.code, 0, r.stderr)
    const doc = JSON.parse(r.stdout) as { decision: { effect: string; approvers: string[] } }
    assert.deepEqual(doc.decision, { ...doc.decision, effect: 'hold', approvers: ['dba'] })
    writeFileSync(file, 'chain: []\naction: 3\n')
    const bad = gatehouse(['policy', 'eval', join(REPO, 'policies'), '--input', file])
    assert.equal(bad.code, 2)
    assert.match(bad.stderr, /input\.yaml: input\.chain: is required/)
    assert.match(bad.stderr, /input\.yaml: input\.action: is required/)
  })

  test('policy build fails with the built-in named, and exits 2', () => {
    const dir = copy(join(REPO, 'policies'))
    writeFileSync(join(dir, 'clock.rego'), 'package gatehouse\n\ndeny contains "night" if time.now_ns() > 0\n')
    const r = gatehouse(['policy', 'build', dir, '-o', join(cwd, 'x.tar.gz')])
    assert.equal(r.code, 2)
    assert.match(r.stderr, /clock\.rego:3: built-in time\.now_ns is not supported in policies/)
    assert.equal(r.stdout, '')
  })

  test('policy status needs a running gateway and says so (exit 3)', () => {
    const r = gatehouse(['policy', 'status'])
    assert.equal(r.code, 3)
    assert.match(r.stderr, /no Gatehouse server is running/)
  })
})
