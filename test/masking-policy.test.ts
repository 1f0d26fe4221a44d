// Masking in the decision engine, against a policy compiled with the real opa and evaluated by the
// real WebAssembly engine: detector obligations per hop (clear_for groups, unmask:detector:<name>
// scope), the strictest mask winning where hops disagree, maskOptions from masking.yaml, who may
// pass unmask:detector:<name> on, and masking.yaml validation with its normalized form re-parsed.

import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { narrowScope, scopeSyntaxProblem } from '../engine/identity/scope.js'
import { columnAction, strictestFor, strictestPerColumn } from '../engine/masking/plan.js'
import { loadPolicySource } from '../engine/policy/bundle.js'
import { FileProblems, parseMasking, parseYaml } from '../engine/policy/data.js'
import { PolicyEngine } from '../engine/policy/engine.js'
import type { Decision, DecisionRequest, MaskObligation, Principal } from '../engine/types.js'
import { TestGateway } from './helpers/gateway.js'

const POLICY = `package gatehouse

default allow := false

allow if input.action in {"connect", "sql.session", "sql.read"}

# Two hops asking for different strategies on the same column: the strictest must win.
mask contains {"rule": "phone-hash", "column": "people.phone", "strategy": "hash"} if {
	input.principal.kind == "user"
	not "hr" in input.principal.groups
}

mask contains {"rule": "phone-null", "column": "people.phone", "strategy": "null"} if input.principal.kind == "agent"

mask contains {"rule": "email-hash", "column": "*.email", "strategy": "hash"} if input.principal.kind == "agent"
`

const MASKING = `rules:
  - name: emails
    columns: ["*.email"]
    strategy: partial
    keep: 4
    clear_for: [pii-readers]
detectors:
  - email
  - { name: card, clear_for: [fraud] }
strict_predicates: true
unknown_lineage: mask
`

const user = (name: string, groups: string[] = [], scope: string[] = []): Principal => ({ id: `user:${name}`, kind: 'user', groups, scope })
const agent = (name: string, scope: string[] = []): Principal => ({ id: `agent:${name}`, kind: 'agent', groups: [], scope })

function req(chain: Principal[]): DecisionRequest {
  return {
    identity: { chain, tokenIds: chain.map((p) => p.id), expiresAt: 0 },
    connection: { name: 'app', protocol: 'postgres', labels: {} },
    action: 'sql.read',
    command: { kind: 'select' },
  }
}

function masks(d: Decision): string[] {
  assert.equal(d.effect, 'allow', JSON.stringify(d))
  if (d.effect !== 'allow') return []
  return d.mask.map((m) => `${m.rule}:${m.column}:${m.strategy}${m.detector ? `:${m.detector}` : ''}`).sort()
}

describe('masking in the policy engine', () => {
  let dir: string
  let engine: PolicyEngine
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gh-mask-policy-'))
    writeFileSync(join(dir, 'policy.rego'), POLICY)
    writeFileSync(join(dir, 'masking.yaml'), MASKING)
    engine = new PolicyEngine(await loadPolicySource(dir))
  })
  after(() => rmSync(dir, { recursive: true, force: true }))

  test('a user without groups: rules, detectors (with their names) and maskOptions', async () => {
    const d = await engine.decide(req([user('u')]))
    assert.deepEqual(masks(d), [
      'detector:card::redact:card',
      'detector:email::redact:email',
      'emails:*.email:partial',
      'phone-hash:people.phone:hash',
    ])
    assert.ok(d.effect === 'allow' && d.maskOptions)
    assert.deepEqual(d.effect === 'allow' ? d.maskOptions : null, { strictPredicates: true, unknownLineage: 'mask' })
  })

  test('a detector’s clear_for groups see its matches clear', async () => {
    const d = await engine.decide(req([user('f', ['fraud', 'hr', 'pii-readers'])]))
    assert.deepEqual(masks(d), ['detector:email::redact:email'])
  })

  test('no masks: no maskOptions either', async () => {
    const d = await engine.decide(req([user('all', ['fraud', 'hr', 'pii-readers'], ['unmask:detector:email'])]))
    assert.deepEqual(masks(d), [])
    assert.equal(d.effect === 'allow' ? d.maskOptions : 'x', undefined)
  })

  test('unmask:detector:<name> clears only the hop that holds it', async () => {
    const cleared = await engine.decide(req([user('f', ['fraud', 'hr', 'pii-readers']), agent('a', ['sql.read', 'unmask:detector:card'])]))
    assert.ok(!masks(cleared).some((m) => m.startsWith('detector:card')), 'root cleared by group, agent by scope')
    const rootMasked = await engine.decide(req([user('u', ['hr', 'pii-readers']), agent('a', ['sql.read', 'unmask:detector:card'])]))
    assert.ok(
      masks(rootMasked).some((m) => m.startsWith('detector:card')),
      'the root’s own hop still masks: a sub-agent never sees what its parent could not',
    )
    const agentMasked = await engine.decide(req([user('f', ['fraud', 'hr', 'pii-readers']), agent('a', ['sql.read'])]))
    assert.ok(
      masks(agentMasked).some((m) => m.startsWith('detector:card')),
      'an agent has no groups: masked unless its scope unmasks',
    )
  })

  test('for a chain the strictest hop wins: null over hash on the same column', async () => {
    const d = await engine.decide(req([user('u'), agent('a', ['sql.read'])]))
    const phone = d.effect === 'allow' ? d.mask.filter((m) => m.column === 'people.phone') : []
    assert.deepEqual(
      phone.map((m) => `${m.rule}:${m.strategy}`),
      ['phone-null:null'],
    )
    // hash (agent hop, Rego) beats partial (root hop, masking.yaml) on *.email.
    const email = d.effect === 'allow' ? d.mask.filter((m) => m.column === '*.email') : []
    assert.deepEqual(
      email.map((m) => `${m.rule}:${m.strategy}`),
      ['email-hash:hash'],
    )
    // Every rule that applied is still named in the decision.
    assert.ok(d.effect === 'allow' && ['phone-hash', 'phone-null', 'emails', 'email-hash'].every((r) => d.rules.includes(r)))
  })

  test('who may pass unmask:detector:<name> on', () => {
    assert.equal(scopeSyntaxProblem(['sql.read', 'unmask:detector:card']), null)
    const fraud = user('f', ['fraud'])
    const plain = user('p')
    const mayFor = (root: Principal) => (rule: string) => engine.rootMayUnmask(root, rule)
    assert.equal(narrowScope([], ['sql.read', 'unmask:detector:card'], mayFor(fraud)).ok, true, 'a root its clear_for clears')
    const refused = narrowScope([], ['sql.read', 'unmask:detector:card'], mayFor(plain))
    assert.equal(refused.ok, false, 'a root that sees cards masked cannot pass unmask on')
    assert.match(refused.ok ? '' : refused.problem, /unmask:detector:card is not within/)
    assert.equal(narrowScope([], ['unmask:detector:email'], mayFor(fraud)).ok, false, 'email has no clear_for: nobody may')
    assert.equal(narrowScope([], ['unmask:detector:iban'], mayFor(fraud)).ok, false, 'a detector that is not configured')
    // A non-root parent passes on only what it holds itself.
    assert.equal(narrowScope(['sql.read', 'unmask:detector:card'], ['unmask:detector:card']).ok, true)
    assert.equal(narrowScope(['sql.read'], ['unmask:detector:card']).ok, false)
    // The rules keep working as before.
    assert.equal(engine.rootMayUnmask(user('r', ['pii-readers']), 'emails'), true)
    assert.equal(engine.rootMayUnmask(plain, 'emails'), false)
  })
})

describe('masking.yaml parsing', () => {
  function parse(text: string): { data: ReturnType<typeof parseMasking>; problems: string[] } {
    const p = new FileProblems('masking.yaml')
    const data = parseMasking(parseYaml(text, p), p)
    return { data, problems: p.list }
  }

  test('detectors as names or {name, clear_for}, options, and the normalized form re-parses to itself', () => {
    const { data, problems } = parse(MASKING)
    assert.deepEqual(problems, [])
    assert.deepEqual(data.detectors, [
      { name: 'email', clear_for: [] },
      { name: 'card', clear_for: ['fraud'] },
    ])
    assert.equal(data.strict_predicates, true)
    assert.equal(data.unknown_lineage, 'mask')
    const p = new FileProblems('data.json')
    assert.deepEqual(parseMasking(JSON.parse(JSON.stringify(data)), p), data)
    assert.deepEqual(p.list, [])
  })

  test('defaults: strict_predicates false, unknown_lineage refuse; every detector name is known', () => {
    const { data, problems } = parse('detectors: [email, card, iban, ssn, phone, jwt, cloud_key, private_key]\n')
    assert.deepEqual(problems, [])
    assert.equal(data.strict_predicates, false)
    assert.equal(data.unknown_lineage, 'refuse')
    assert.equal(data.detectors.length, 8)
  })

  test('bad input gets clear errors', () => {
    const { problems } = parse(
      [
        'detectors:',
        '  - dna',
        '  - { name: card, clear_for: ["bad group"], extra: 1 }',
        '  - email',
        '  - email',
        'strict_predicates: "yes"',
        'unknown_lineage: allow',
        'rules:',
        '  - { name: pw, columns: ["*.password*", "a.b.c.d"], strategy: redact }',
      ].join('\n'),
    )
    for (const want of [
      'masking.yaml: detectors[0]: unknown detector "dna" (known: email, card, iban, ssn, phone, jwt, cloud_key, private_key)',
      'masking.yaml: detectors[1].extra: unknown key',
      'masking.yaml: detectors[1].clear_for[0]: is not a valid group name',
      'masking.yaml: detectors[3]: duplicate detector "email"',
      'masking.yaml: strict_predicates: must be true or false (got "yes")',
      'masking.yaml: unknown_lineage: must be one of refuse, mask (got "allow")',
      'masking.yaml: rules[0].columns[1]: must be column, table.column or schema.table.column',
    ]) {
      assert.ok(
        problems.some((p) => p.startsWith(want)),
        `${want}\n in \n${problems.join('\n')}`,
      )
    }
    assert.ok(!problems.some((p) => p.includes('columns[0]')), 'a glob inside a segment (*.password*) is a valid pattern')
  })
})

describe('strictest mask per output column', () => {
  const ob = (rule: string, column: string, strategy: MaskObligation['strategy'], keep?: number): MaskObligation =>
    keep === undefined ? { rule, column, strategy } : { rule, column, strategy, keep }

  test('per pattern: null > redact > hash > partial; fewer kept characters win between partials', () => {
    const out = strictestPerColumn([
      ob('p4', 'x.c', 'partial', 4),
      ob('h', 'x.c', 'hash'),
      ob('p2', 'y.c', 'partial', 2),
      ob('p4', 'y.c', 'partial', 4),
      ob('r', 'z.c', 'redact'),
      ob('n', 'z.c', 'null'),
      ob('h2', 'z.c', 'hash'),
    ])
    assert.deepEqual(
      out.map((m) => `${m.rule}:${m.column}`),
      ['h:x.c', 'p2:y.c', 'n:z.c'],
    )
  })

  test('different patterns matching the same column resolve per column', () => {
    const ms = [ob('any-email', '*.email', 'partial', 4), ob('users-email', 'public.users.email', 'hash')]
    assert.equal(strictestFor(ms, 'public.users.email')?.rule, 'users-email')
    assert.equal(strictestFor(ms, 'public.orders.email')?.rule, 'any-email')
    assert.equal(strictestFor(ms, 'public.users.name'), null)
  })

  test('columnAction: direct vs derived, several sources, detectors for the unclassified', () => {
    const ms = [
      ob('emails', '*.email', 'partial', 4),
      ob('ssn', '*.ssn', 'null'),
      { ...ob('detector:card', '', 'redact'), detector: 'card' },
    ]
    assert.deepEqual(columnAction(ms, ['public.users.email'], true), {
      action: 'mask',
      rule: 'emails',
      strategy: 'partial',
      keep: 4,
      derived: false,
    })
    assert.equal((columnAction(ms, ['public.users.email'], false) as { derived: boolean }).derived, true)
    const both = columnAction(ms, ['public.users.email', 'public.users.ssn'], false)
    assert.equal(both.action === 'mask' ? both.strategy : '', 'null')
    assert.deepEqual(columnAction(ms, ['public.users.name'], true), { action: 'detect', detectors: ['card'] })
    assert.deepEqual(columnAction([], ['public.users.name'], true), { action: 'keep' })
  })
})

describe('a running gateway: who may pass unmask:detector:<name> on', () => {
  let dir: string
  let gw: TestGateway | undefined
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gh-mask-gw-'))
    writeFileSync(
      join(dir, 'policy.rego'),
      'package gatehouse\n\ndefault allow := false\n\nallow if input.action in {"connect", "sql.session", "sql.read"}\n',
    )
    writeFileSync(join(dir, 'masking.yaml'), MASKING)
    gw = await TestGateway.start({ config: { policies: dir } })
  })
  after(async () => {
    await gw?.cleanup()
    rmSync(dir, { recursive: true, force: true })
  })

  test('a root its clear_for clears may; a root that sees the detector masked may not', () => {
    const g = gw as TestGateway
    const delegate = (token: string, scope: string) =>
      g.cli(['token', 'delegate', '--agent', 'A', '--token', token, '--scope', scope, '--json'])
    const fraud = g.token('user:fiona', ['--group', 'fraud'])
    const ok = delegate(fraud, 'sql.read unmask:detector:card')
    assert.equal(ok.code, 0, ok.stderr)
    const agentToken = (JSON.parse(ok.stdout) as { access_token: string }).access_token
    // The agent holds it, so it may pass it on again; one that does not hold it may not.
    assert.equal(g.cli(['token', 'delegate', '--agent', 'B', '--token', agentToken, '--scope', 'unmask:detector:card', '--json']).code, 0)
    const plain = g.token('user:pat')
    const refused = delegate(plain, 'sql.read unmask:detector:card')
    assert.equal(refused.code, 1)
    assert.match(refused.stderr, /unmask:detector:card is not within/)
    const noClear = delegate(fraud, 'sql.read unmask:detector:email')
    assert.equal(noClear.code, 1, `email has no clear_for: nobody may pass it on ${noClear.stdout} ${noClear.stderr}`)
  })
})
