// The engine's combination of hops, as a table of {name, request, want} against one test policy
// compiled with the real opa and evaluated by the real WebAssembly engine: scope before any Rego,
// a hop that is not allowed or that denies, hold with approvers, the mask union and unmask scope,
// and every way an evaluation can fail ending in deny.

import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { buildInputs } from '../engine/decide.js'
import { loadPolicySource } from '../engine/policy/bundle.js'
import { PolicyEngine } from '../engine/policy/engine.js'
import type { Decision, DecisionRequest, Principal } from '../engine/types.js'

const POLICY = `package gatehouse

default allow := false

allow if input.action in {"connect", "sql.session", "sql.read"}

allow if {
	input.action in {"sql.write", "sql.ddl"}
	"writers" in input.principal.groups
}

# Agents may do anything but write by themselves: a chain through an agent never writes.
allow if {
	input.principal.kind == "agent"
	input.action != "sql.write"
}

deny contains "TRUNCATE is never allowed" if input.command.kind == "truncate"

deny contains {"rule": "no-unbounded-write", "reason": "DELETE without WHERE"} if {
	input.command.kind == "delete"
	not input.command.has_where
}

approval contains {"rule": "big-delete", "group": "leads", "reason": "deletes need a lead"} if input.command.kind == "delete"

mask contains {"rule": "ssn", "column": "people.ssn", "strategy": "hash"} if not "hr" in input.principal.groups

# Fails at evaluation (a complete rule with two values): the engine must deny.
allow := "maybe" if input.command.boom

mask contains {"rule": "bad", "column": "x.y", "strategy": "blur"} if input.command.bad_mask

deny contains json.marshal(input) if input.command.echo
`

const MASKING = `rules:
  - name: emails
    columns: ["*.email"]
    strategy: partial
    keep: 4
    clear_for: [pii-readers]
`

const APPROVALS = `requirements:
  - name: prod-ddl
    action: sql.ddl
    labels: { env: prod }
    approvers: { group: dba }
  - name: prod-deletes
    action: [sql.write]
    labels: { env: prod, tier: gold }
    approvers: { group: dba }
`

const user = (name: string, groups: string[] = [], scope: string[] = []): Principal => ({ id: `user:${name}`, kind: 'user', groups, scope })
const agent = (name: string, scope: string[] = []): Principal => ({ id: `agent:${name}`, kind: 'agent', groups: [], scope })

function req(
  chain: Principal[],
  action: string,
  command: Record<string, unknown> = {},
  extra: Partial<DecisionRequest> = {},
): DecisionRequest {
  return {
    identity: { chain, tokenIds: chain.map((p) => p.id), expiresAt: 0 },
    connection: { name: 'app', protocol: 'postgres', labels: { env: 'dev' } },
    action,
    command,
    ...extra,
  }
}

const prod = { connection: { name: 'app', protocol: 'postgres', labels: { env: 'prod', tier: 'gold' } } }

interface Want {
  effect: Decision['effect']
  rules?: string[]
  /** Every deny reason as "rule@hop", in order. */
  reasons?: string[]
  approvers?: string[]
  /** Mask obligations as "rule:column". */
  mask?: string[]
}

function check(d: Decision, want: Want): void {
  assert.equal(d.effect, want.effect, JSON.stringify(d))
  if (want.rules) assert.deepEqual([...d.rules].sort(), [...want.rules].sort(), JSON.stringify(d))
  if (want.reasons) assert.deepEqual(d.effect === 'deny' ? d.reasons.map((r) => `${r.rule}@${r.hop}`) : [], want.reasons)
  if (want.approvers) assert.deepEqual(d.effect === 'hold' ? [...d.approvers].sort() : [], [...want.approvers].sort())
  if (want.mask) assert.deepEqual(d.effect === 'allow' ? d.mask.map((m) => `${m.rule}:${m.column}`).sort() : [], [...want.mask].sort())
}

const writer = user('wendy', ['writers', 'hr', 'pii-readers'])

const TABLE: { name: string; req: DecisionRequest; want: Want }[] = [
  // scope, enforced before any Rego (the boom command would make the policy fail)
  {
    name: 'outside an agent’s connection scope: denied naming that hop, before any Rego',
    req: req([writer, agent('a', ['connection:reports'])], 'sql.read', { boom: true }),
    want: { effect: 'deny', rules: ['scope'], reasons: ['scope@agent:a'] },
  },
  {
    name: 'outside an agent’s action scope',
    req: req([writer, agent('a', ['sql.read'])], 'sql.ddl', { kind: 'create_table' }),
    want: { effect: 'deny', rules: ['scope'], reasons: ['scope@agent:a'] },
  },
  {
    name: 'every hop whose scope excludes the command is named',
    req: req([user('u', ['writers'], ['connection:app', 'sql.read']), agent('a', ['connection:app', 'sql.read'])], 'sql.ddl'),
    want: { effect: 'deny', reasons: ['scope@user:u', 'scope@agent:a'] },
  },
  {
    name: 'a family covers its actions',
    req: req([writer, agent('a', ['sql.*'])], 'sql.ddl', { kind: 'create_table' }),
    want: { effect: 'allow' },
  },
  {
    name: 'a sql.* entry implies sql.session',
    req: req([writer, agent('a', ['sql.read'])], 'sql.session', { kind: 'begin' }),
    want: { effect: 'allow' },
  },
  {
    name: 'connect is a front door: not subject to action scope',
    req: req([writer, agent('a', ['sql.read'])], 'connect'),
    want: { effect: 'allow' },
  },
  {
    name: 'but connection scope applies to connect',
    req: req([writer, agent('a', ['connection:other', 'sql.read'])], 'connect'),
    want: { effect: 'deny', reasons: ['scope@agent:a'] },
  },
  {
    name: 'an entry of no known form narrows (matches no action)',
    req: req([writer, agent('a', ['table:public.orders'])], 'sql.read'),
    want: { effect: 'deny', reasons: ['scope@agent:a'] },
  },
  // the hops
  {
    name: 'a three-hop chain where only the root may write: denied, naming each hop that is not allowed',
    req: req([writer, agent('planner'), agent('writer')], 'sql.write', { kind: 'insert' }),
    want: { effect: 'deny', rules: ['default-deny'], reasons: ['default-deny@agent:planner', 'default-deny@agent:writer'] },
  },
  {
    name: 'the root alone writes',
    req: req([writer], 'sql.write', { kind: 'insert' }),
    want: { effect: 'allow' },
  },
  {
    name: 'a root that may not write denies for its agents too',
    req: req([user('r'), agent('a')], 'sql.ddl'),
    want: { effect: 'deny', reasons: ['default-deny@user:r'] },
  },
  {
    name: 'a plain-string deny names the rule `deny`',
    req: req([writer], 'sql.write', { kind: 'truncate' }),
    want: { effect: 'deny', rules: ['deny'], reasons: ['deny@user:wendy'] },
  },
  {
    name: 'deny entries come before "not allowed" and are reported per hop',
    req: req([user('r'), agent('a')], 'sql.write', { kind: 'delete', has_where: false }),
    want: {
      effect: 'deny',
      reasons: ['no-unbounded-write@user:r', 'no-unbounded-write@agent:a', 'default-deny@user:r', 'default-deny@agent:a'],
    },
  },
  // approvals
  {
    name: 'hold: a Rego approval and a matching approvals.yaml requirement, approvers united',
    req: req([writer], 'sql.write', { kind: 'delete', has_where: true }, prod),
    want: { effect: 'hold', rules: ['big-delete', 'prod-deletes'], approvers: ['leads', 'dba'] },
  },
  {
    name: 'requirements match labels: none off prod',
    req: req([writer], 'sql.write', { kind: 'insert' }, prod),
    want: { effect: 'hold', rules: ['prod-deletes'], approvers: ['dba'] },
  },
  {
    name: 'labels must all match',
    req: req([writer], 'sql.write', { kind: 'insert' }, { connection: { name: 'app', protocol: 'postgres', labels: { env: 'prod' } } }),
    want: { effect: 'allow' },
  },
  {
    name: 'granted: allowed',
    req: req([writer], 'sql.write', { kind: 'delete', has_where: true }, { ...prod, approval: { granted: true } }),
    want: { effect: 'allow' },
  },
  {
    name: 'deny wins over hold',
    req: req([writer], 'sql.write', { kind: 'delete', has_where: false }, prod),
    want: { effect: 'deny', rules: ['no-unbounded-write'] },
  },
  // masks
  {
    name: 'a cleared user sees everything',
    req: req([writer], 'sql.read', { kind: 'select' }),
    want: { effect: 'allow', mask: [] },
  },
  {
    name: 'the mask union: the agent hop has no groups, so Rego and masking.yaml masks apply',
    req: req([writer, agent('a', ['sql.read'])], 'sql.read', { kind: 'select' }),
    want: { effect: 'allow', rules: ['ssn', 'emails'], mask: ['ssn:people.ssn', 'emails:*.email'] },
  },
  {
    name: 'unmask scope clears those rules for the agent',
    req: req([writer, agent('a', ['sql.read', 'unmask:ssn', 'unmask:emails'])], 'sql.read', { kind: 'select' }),
    want: { effect: 'allow', mask: [] },
  },
  {
    name: 'unmask only clears the agent’s own hop: the root’s masks stay',
    req: req([user('r'), agent('a', ['sql.read', 'unmask:ssn', 'unmask:emails'])], 'sql.read', { kind: 'select' }),
    want: { effect: 'allow', mask: ['ssn:people.ssn', 'emails:*.email'] },
  },
  // failures deny
  {
    name: 'an evaluation error denies (policy-error), never allows',
    req: req([writer], 'sql.read', { kind: 'select', boom: true }),
    want: { effect: 'deny', rules: ['policy-error'] },
  },
  {
    name: 'a malformed mask entry denies rather than dropping the mask',
    req: req([writer], 'sql.read', { kind: 'select', bad_mask: true }),
    want: { effect: 'deny', rules: ['policy-error'] },
  },
  {
    name: 'an empty chain is denied',
    req: req([], 'sql.read'),
    want: { effect: 'deny', rules: ['authenticated'] },
  },
]

describe('policy engine: combination of hops', () => {
  let dir: string
  let engine: PolicyEngine
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gh-policy-'))
    writeFileSync(join(dir, 'policy.rego'), POLICY)
    writeFileSync(join(dir, 'masking.yaml'), MASKING)
    writeFileSync(join(dir, 'approvals.yaml'), APPROVALS)
    engine = new PolicyEngine(await loadPolicySource(dir))
  })
  after(() => rmSync(dir, { recursive: true, force: true }))

  for (const row of TABLE) {
    test(row.name, async () => {
      const d = await engine.decide(row.req)
      check(d, row.want)
      assert.equal(d.policy, engine.version)
      // The same request again (served from the hop cache) decides the same.
      assert.deepEqual(await engine.decide(row.req), d)
    })
  }

  test('deny reasons read as rule, hop and reason', async () => {
    const d = await engine.decide(req([writer, agent('a', ['sql.read'])], 'sql.write', { kind: 'insert' }))
    assert.equal(d.effect, 'deny')
    if (d.effect !== 'deny') return
    assert.equal(d.reason, 'outside the scope of agent:a')
    assert.deepEqual(d.reasons, [{ rule: 'scope', reason: 'outside the scope of agent:a', hop: 'agent:a' }])
  })

  test('explain reports every hop', () => {
    const e = engine.explain(req([writer, agent('a')], 'sql.write', { kind: 'insert' }))
    assert.deepEqual(
      e.hops.map((h) => [h.hop, h.in_scope, h.allow]),
      [
        ['user:wendy', true, true],
        ['agent:a', true, false],
      ],
    )
    const failed = engine.explain(req([writer], 'sql.read', { boom: true }))
    assert.match(failed.error ?? '', /var assignment conflict|conflict/)
  })

  test('the input each hop sees is buildInputs’ document, key for key', () => {
    const now = new Date('2026-11-25T21:40:05Z')
    const r = req([user('alice', ['analysts']), agent('summarizer', ['connection:app', 'sql.read'])], 'sql.read', {
      echo: true,
      sql: 'SELECT "ünïcode", \'quote\'',
      kind: 'select',
      tables: ['public.orders'],
    })
    const e = engine.explain(r, now)
    assert.equal(e.decision.effect, 'deny')
    const seen =
      e.decision.effect === 'deny' ? e.decision.reasons.filter((x) => x.rule === 'deny').map((x) => JSON.parse(x.reason) as unknown) : []
    assert.deepEqual(seen, buildInputs(r, now) as unknown[])
    const first = buildInputs(r, now)[0]
    assert.deepEqual(first?.time, { rfc3339: '2026-11-25T21:40:05Z', unix: 1795642805, weekday: 'Wed', hour: 21, minute: 40 })
    assert.deepEqual(Object.keys(first ?? {}), ['principal', 'chain', 'connection', 'action', 'command', 'approval', 'time'])
  })

  test('a large command (memory growth, past the cache) is decided like a small one', async () => {
    const sql = `SELECT ${'x, '.repeat(700_000)}1`
    for (let i = 0; i < 3; i++) {
      check(await engine.decide(req([writer], 'sql.read', { kind: 'select', sql })), { effect: 'allow' })
      check(await engine.decide(req([writer], 'sql.write', { kind: 'truncate', sql })), { effect: 'deny', rules: ['deny'] })
    }
    check(await engine.decide(req([writer], 'sql.read', { kind: 'select' })), { effect: 'allow' })
  })

  test('a missing bundle denies', async () => {
    const none = new PolicyEngine(null)
    const d = await none.decide(req([writer], 'sql.read'))
    check(d, { effect: 'deny', rules: ['policy-error'] })
    assert.equal(d.effect === 'deny' ? d.reason : '', 'policy evaluation failed')
    assert.equal(none.version, 'none')
    assert.equal(none.status().loaded_at, null)
  })

  test('an abandoned request denies', async () => {
    const ac = new AbortController()
    ac.abort()
    check(await engine.decide(req([writer], 'sql.read'), ac.signal), { effect: 'deny', rules: ['policy-error'] })
  })

  test('a swap is atomic and the new bundle decides at once; a failed reload is only reported', async () => {
    const other = mkdtempSync(join(tmpdir(), 'gh-policy-'))
    try {
      writeFileSync(join(other, 'p.rego'), 'package gatehouse\n\ndefault allow := false\n')
      const e = new PolicyEngine(await loadPolicySource(dir))
      const before = e.version
      assert.equal((await e.decide(req([writer], 'sql.read'))).effect, 'allow')
      e.swap(await loadPolicySource(other))
      assert.notEqual(e.version, before)
      const d = await e.decide(req([writer], 'sql.read'))
      check(d, { effect: 'deny', rules: ['default-deny'] })
      assert.equal(d.policy, e.version)
      e.reloadFailed('p.rego:3: broken')
      assert.equal(e.status().last_error, 'p.rego:3: broken')
      assert.equal((await e.decide(req([writer], 'sql.read'))).policy, e.version)
    } finally {
      rmSync(other, { recursive: true, force: true })
    }
  })
})
