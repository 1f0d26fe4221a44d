// Policy directory → bundle with the real opa compiler: the bundle's contents and its version (the
// content hash of what decides), prebuilt bundles (ours and plain `opa build` ones), built-ins the
// WebAssembly runtime lacks failing the build with file:line, and broken data files reported as
// `file: key: problem`.

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, test } from 'node:test'
import { buildBundle } from '../engine/policy/build.js'
import { loadPolicySource } from '../engine/policy/bundle.js'
import { PolicyEngine } from '../engine/policy/engine.js'
import { findOpa } from '../engine/policy/opa.js'
import { readTarGz } from '../engine/policy/tar.js'
import type { DecisionRequest } from '../engine/types.js'
import { REPO } from './helpers/gateway.js'

const dirs: string[] = []
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
})

function policyDir(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'gh-policy-'))
  dirs.push(dir)
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(join(dir, name, '..'), { recursive: true })
    writeFileSync(join(dir, name), text)
  }
  return dir
}

function copyOf(src: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'gh-policy-'))
  dirs.push(dir)
  cpSync(src, dir, { recursive: true })
  return dir
}

const MINIMAL = 'package gatehouse\n\ndefault allow := false\n\nallow if input.action == "sql.read"\n'

function read(chain = [{ id: 'user:alice', kind: 'user' as const, groups: [], scope: [] }]): DecisionRequest {
  return {
    identity: { chain, tokenIds: [], expiresAt: 0 },
    connection: { name: 'app', protocol: 'postgres', labels: {} },
    action: 'sql.read',
    command: { kind: 'select' },
  }
}

async function buildError(dir: string): Promise<string> {
  try {
    await buildBundle(dir)
  } catch (err) {
    return err instanceof Error ? err.message : String(err)
  }
  throw new Error('the build was expected to fail')
}

describe('policy build', () => {
  test('the default bundle: policy.wasm, data.json and a manifest whose revision is the version', async () => {
    const b = await buildBundle(join(REPO, 'policies'))
    assert.match(b.version, /^sha256:[0-9a-f]{12}$/)
    const files = readTarGz(b.archive)
    // The Rego modules travel with the bundle (not the tests): the loader reads them to tell
    // whether the policy can see the statement text (engine/policy/reads.ts).
    assert.deepEqual([...files.keys()].sort(), [
      '.manifest',
      'data.json',
      'gatehouse.rego',
      'guardrails.rego',
      'http.rego',
      'kube.rego',
      'mcp.rego',
      'policy.wasm',
    ])
    assert.equal(files.get('guardrails.rego')?.toString(), readFileSync(join(REPO, 'policies', 'guardrails.rego'), 'utf8'))
    const manifest = JSON.parse(files.get('.manifest')?.toString() ?? '{}') as { revision: string; wasm: { entrypoint: string }[] }
    assert.equal(manifest.revision, b.version)
    const eps = manifest.wasm.map((w) => w.entrypoint)
    for (const e of ['gatehouse/allow', 'gatehouse/deny', 'gatehouse_engine/hop']) assert.ok(eps.includes(e), `${e} is an entrypoint`)
    const data = JSON.parse(files.get('data.json')?.toString() ?? '{}') as {
      gatehouse: { approvals: { requirements: { name: string; approvers: { group: string } }[] }; masking: unknown }
    }
    assert.equal(data.gatehouse.approvals.requirements[0]?.name, 'prod-ddl')
    assert.equal(data.gatehouse.approvals.requirements[0]?.approvers.group, 'dba')
    assert.deepEqual(data.gatehouse.masking, { rules: [], detectors: [], strict_predicates: false, unknown_lineage: 'refuse' })
    assert.equal(files.get('policy.wasm')?.subarray(0, 4).toString('hex'), '0061736d', 'a WebAssembly module')
  })

  test('the version is the sha256 of the sorted bundle sources; tests and cases do not change it', async () => {
    const dir = policyDir({
      'b.rego': MINIMAL,
      'lib/a.rego': 'package gatehouse.lib\n\nx := 1\n',
      'masking.yaml': 'rules: []\n',
      'a_test.rego': 'package t\n\ntest_x if true\n',
      'x.cases.yaml': '[]\n',
    })
    const h = createHash('sha256')
    for (const f of ['b.rego', 'lib/a.rego', 'masking.yaml']) {
      const text = readFileSync(join(dir, f), 'utf8')
      h.update(`${f}\0${Buffer.byteLength(text)}\0`).update(text)
    }
    const expected = `sha256:${h.digest('hex').slice(0, 12)}`
    const v1 = (await buildBundle(dir)).version
    assert.equal(v1, expected)
    assert.equal((await buildBundle(dir)).version, v1, 'stable')
    writeFileSync(join(dir, 'a_test.rego'), 'package t\n\ntest_y if true\n')
    writeFileSync(join(dir, 'x.cases.yaml'), '# nothing\n[]\n')
    assert.equal((await buildBundle(dir)).version, v1, 'tests and cases are not part of the version')
    writeFileSync(join(dir, 'masking.yaml'), 'rules: []\ndetectors: [email]\n')
    const v2 = (await buildBundle(dir)).version
    assert.notEqual(v2, v1, 'masking.yaml is')
    writeFileSync(join(dir, 'b.rego'), `${MINIMAL}\n# a comment\n`)
    assert.notEqual((await buildBundle(dir)).version, v2, 'every byte of a module is')
  })

  test('a prebuilt bundle.tar.gz loads with the same version and decides the same', async () => {
    const b = await buildBundle(join(REPO, 'policies'))
    const dir = policyDir({})
    const file = join(dir, 'bundle.tar.gz')
    writeFileSync(file, b.archive)
    const loaded = await loadPolicySource(file)
    assert.equal(loaded.version, b.version)
    assert.equal(loaded.source, file)
    const d = await new PolicyEngine(loaded).decide(read())
    assert.equal(d.effect, 'allow')
    assert.equal(d.policy, b.version)
  })

  test('a plain `opa build -t wasm` bundle loads too, named by the hash of its module and data', async () => {
    const dir = policyDir({ 'p.rego': MINIMAL })
    const out = join(dir, 'plain.tar.gz')
    const r = spawnSync(findOpa(), ['build', '-t', 'wasm', '-e', 'gatehouse/allow', '-o', out, 'p.rego'], { cwd: dir, encoding: 'utf8' })
    assert.equal(r.status, 0, r.stderr)
    const loaded = await loadPolicySource(out)
    const files = readTarGz(readFileSync(out))
    const h = createHash('sha256')
      .update(files.get('policy.wasm') ?? '')
      .update(files.get('data.json') ?? '')
      .digest('hex')
    assert.equal(loaded.version, `sha256:${h.slice(0, 12)}`)
    assert.equal(loaded.hop, null, 'no gatehouse_engine/hop: the contract entrypoints are used')
    const engine = new PolicyEngine(loaded)
    assert.equal((await engine.decide(read())).effect, 'allow')
    assert.equal((await engine.decide({ ...read(), action: 'sql.write' })).effect, 'deny')
  })

  test('built-ins the WebAssembly runtime lacks fail the build, named with file and line', async () => {
    const dir = policyDir({
      'ok.rego': MINIMAL,
      'net.rego': 'package gatehouse\n\n# calls out\nallow if http.send({"method": "get", "url": "http://x"}).status_code == 200\n',
      'clock.rego': 'package gatehouse\n\ndeny contains "late" if {\n\ttime.now_ns() > 0\n}\n',
    })
    const msg = await buildError(dir)
    assert.match(msg, /the policy does not compile/)
    assert.match(msg, /net\.rego:4: built-in http\.send is not supported in policies: policies cannot reach the network/)
    assert.match(msg, /clock\.rego:4: built-in time\.now_ns is not supported in policies: .*input\.time/)
    const jwt = policyDir({ 'p.rego': `${MINIMAL}\ndeny contains "x" if io.jwt.decode(input.command.token)\n` })
    assert.match(await buildError(jwt), /p\.rego:7: built-in io\.jwt\.decode is not supported/)
    const rand = policyDir({ 'p.rego': `${MINIMAL}\ndeny contains "x" if rand.intn("k", 10) == 1\n` })
    assert.match(await buildError(rand), /p\.rego:7: built-in rand\.intn is not supported in policies: decisions must be deterministic/)
  })

  test('a function that does not exist at all keeps opa’s own message; syntax errors point at the line', async () => {
    const typo = policyDir({ 'p.rego': `${MINIMAL}\ndeny contains "x" if lowercase(input.action) == "x"\n` })
    assert.match(await buildError(typo), /p\.rego:7: rego_type_error: undefined function lowercase/)
    const broken = policyDir({ 'p.rego': `${MINIMAL}\nallow if input.action == == "x"\n\ndefault deny := set()\n` })
    assert.match(await buildError(broken), /p\.rego:7: rego_parse_error/)
  })

  test('a policy without allow, a reserved package and an empty directory are refused clearly', async () => {
    assert.match(
      await buildError(policyDir({ 'p.rego': 'package gatehouse\n\ndeny contains "x" if true\n' })),
      /no rule allow in package gatehouse/,
    )
    assert.match(
      await buildError(policyDir({ 'p.rego': MINIMAL, 'q.rego': '# hi\npackage gatehouse_engine\n\nx := 1\n' })),
      /q\.rego:2: package gatehouse_engine is reserved/,
    )
    assert.match(await buildError(policyDir({ 'README.md': 'hi' })), /no \.rego policy files/)
  })

  test('broken masking.yaml and approvals.yaml: every problem as file: key: problem', async () => {
    const dir = policyDir({
      'p.rego': MINIMAL,
      'masking.yaml': [
        'rules:',
        '  - name: emails',
        '    columns: ["a.b.c.d"]',
        '    strategy: blur',
        '  - name: emails',
        '    columns: [ssn]',
        '    strategy: hash',
        '    keep: 2',
        'detectors: [email, dna]',
        'extra: 1',
        '',
      ].join('\n'),
      'approvals.yaml': [
        'requirements:',
        '  - name: prod-ddl',
        '    action: SQL DDL',
        '    approvers: { count: 0 }',
        '    grant: window',
        '',
      ].join('\n'),
    })
    const msg = await buildError(dir)
    const m = (s: string): string => `${dir}/masking.yaml: ${s}`
    const a = (s: string): string => `${dir}/approvals.yaml: ${s}`
    for (const line of [
      m('rules[0].columns[0]: must be column, table.column or schema.table.column'),
      m('rules[0].strategy: must be one of redact, partial, hash, hash_session, null (got "blur")'),
      m('rules[1].name: duplicate rule name "emails"'),
      m('rules[1].keep: only applies to strategy: partial'),
      m('detectors[1]: unknown detector "dna" (known: email, card, iban, ssn, phone, jwt, cloud_key, private_key)'),
      m('extra: unknown key'),
      a('requirements[0].action[0]: must be an action like sql.ddl'),
      a('requirements[0].approvers.group: is required'),
      a('requirements[0].approvers.count: must be an integer from 1 to 10 (got 0)'),
      a('requirements[0].window: is required with grant: window'),
    ]) {
      assert.ok(msg.includes(line), `reported: ${line}\n--- got:\n${msg}`)
    }
    writeFileSync(join(dir, 'masking.yaml'), 'rules: [\n')
    writeFileSync(join(dir, 'approvals.yaml'), 'requirements: []\n')
    assert.match(await buildError(dir), /masking\.yaml: not valid YAML: .*\(2:1\)/)
  })

  test('a policy may read its own data files as data.gatehouse.masking and data.gatehouse.approvals', async () => {
    const dir = copyOf(join(REPO, 'policies'))
    writeFileSync(
      join(dir, 'data_use.rego'),
      'package gatehouse\n\ndeny contains "approvals present" if {\n\tsome r in data.gatehouse.approvals.requirements\n\tr.name == input.command.probe\n}\n',
    )
    const engine = new PolicyEngine(await loadPolicySource(dir))
    const d = await engine.decide({ ...read(), command: { kind: 'select', probe: 'prod-ddl' } })
    assert.equal(d.effect, 'deny')
    assert.deepEqual(d.effect === 'deny' ? d.reasons.map((r) => r.reason) : [], ['approvals present'])
  })

  test('without opa, the message says how to install it', async () => {
    const saved = process.env.GATEHOUSE_OPA
    process.env.GATEHOUSE_OPA = '/nonexistent/opa'
    try {
      const msg = await buildError(policyDir({ 'p.rego': MINIMAL }))
      assert.match(msg, /GATEHOUSE_OPA=\/nonexistent\/opa is not an executable file; install opa 1\.22\.3 .*npm run setup/)
    } finally {
      if (saved === undefined) delete process.env.GATEHOUSE_OPA
      else process.env.GATEHOUSE_OPA = saved
    }
  })
})
