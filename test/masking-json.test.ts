// JSON paths and the streaming JSON masker (engine/masking/jsonpath.ts, json-stream.ts): the path
// grammar and its refusals, every strategy on every kind of value, and fast-check properties
// against a reference that masks the parsed document: random documents and paths, the input split
// at every offset, and broken documents (refused whenever JSON.parse refuses them; never passed
// through). masking.yaml's json_paths/connections and the decisions they make are at the end.

import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import fc from 'fast-check'
import { JsonMaskError, JsonMasker, JsonMaskPlan, type JsonMaskTarget, jsonMaskPlan, maskJson } from '../engine/masking/json-stream.js'
import { JsonPathError, type JsonPathStep, parseJsonPath } from '../engine/masking/jsonpath.js'
import { stricter } from '../engine/masking/plan.js'
import { compileOp, ValueMasker } from '../engine/masking/values.js'
import { loadPolicySource } from '../engine/policy/bundle.js'
import { FileProblems, parseMasking } from '../engine/policy/data.js'
import { PolicyEngine } from '../engine/policy/engine.js'
import type { ConnectionRef, Decision, MaskObligation, Principal } from '../engine/types.js'

const KEY = Buffer.alloc(32, 7)

function run(targets: readonly JsonMaskTarget[], doc: string | Buffer, opts = {}): string {
  return maskJson(new JsonMaskPlan(targets), KEY, Buffer.isBuffer(doc) ? doc : Buffer.from(doc), opts).body.toString()
}

describe('JSONPath', () => {
  test('the streamable subset parses', () => {
    const steps = (p: string): JsonPathStep[] => [...parseJsonPath(p).steps]
    assert.deepEqual(steps('$'), [])
    assert.deepEqual(steps('$..email'), [{ descendant: true, any: false, names: ['email'], indices: [] }])
    assert.deepEqual(steps('$.users[*].ssn'), [
      { descendant: false, any: false, names: ['users'], indices: [] },
      { descendant: false, any: true, names: [], indices: [] },
      { descendant: false, any: false, names: ['ssn'], indices: [] },
    ])
    assert.deepEqual(steps("$['a.b', \"c'd\"][0,2]..*"), [
      { descendant: false, any: false, names: ['a.b', "c'd"], indices: [] },
      { descendant: false, any: false, names: [], indices: [0, 2] },
      { descendant: true, any: true, names: [], indices: [] },
    ])
    assert.deepEqual(steps('$..[1]'), [{ descendant: true, any: false, names: [], indices: [1] }])
    assert.deepEqual(steps("$['\\u0065']"), [{ descendant: false, any: false, names: ['e'], indices: [] }])
  })

  test('what cannot be decided while streaming, and typos, are refused with the reason', () => {
    const cases: [string, RegExp][] = [
      ['', /non-empty/],
      ['users', /must start with \$/],
      ['$.', /ends after a dot/],
      ['$.a[?(@.x)]', /filter expressions/],
      ['$.a[(@.length-1)]', /script expressions/],
      ['$.a[-1]', /negative indices/],
      ['$.a[0:2]', /slices/],
      ['$.a[:2]', /slices/],
      ['$.a[01]', /not an array index/],
      ["$['a", /unterminated/],
      ['$.a[', /unterminated/],
      ['$.a b', /unexpected " "/],
      ['$.[a]', /\.\[ is not valid/],
      ["$['\\ud800']", /lone surrogate/],
    ]
    for (const [p, re] of cases)
      assert.throws(
        () => parseJsonPath(p),
        (e: Error) => e instanceof JsonPathError && re.test(e.message),
        p,
      )
  })
})

describe('JSON masker: values and strategies', () => {
  const doc = JSON.stringify({
    s: 'alice@example.com',
    n: 123456789,
    t: true,
    z: null,
    o: { a: 1 },
    arr: [1, 2],
    u: 'ünïcødé✓',
  })
  const all = (strategy: JsonMaskTarget['strategy'], keep?: number): JsonMaskTarget[] =>
    ['s', 'n', 't', 'z', 'o', 'arr', 'u'].map((k) => ({ path: `$.${k}`, rule: 'r', strategy, ...(keep === undefined ? {} : { keep }) }))

  test('redact, null, partial', () => {
    assert.deepEqual(JSON.parse(run(all('redact'), doc)), { s: '****', n: '****', t: '****', z: null, o: '****', arr: '****', u: '****' })
    assert.deepEqual(JSON.parse(run(all('null'), doc)), { s: null, n: null, t: null, z: null, o: null, arr: null, u: null })
    assert.deepEqual(JSON.parse(run(all('partial', 4), doc)), {
      s: '****.com',
      n: '****6789',
      t: '****',
      z: null,
      o: '****',
      arr: '****',
      u: '****ødé✓',
    })
  })

  test('hash is the SQL hash of the decoded value (escapes do not change it), hash_session differs per key', () => {
    const vm = new ValueMasker(KEY)
    const sqlHash = vm.apply(
      compileOp({ mask: { action: 'mask', rule: 'r', strategy: 'hash', derived: false }, typeOid: 25, format: 0 }),
      Buffer.from('é"x'),
    )
    const out = JSON.parse(run([{ path: '$.a', rule: 'r', strategy: 'hash' }], '{"a":"\\u00e9\\"x"}'))
    assert.equal(out.a, String(sqlHash))
    assert.match(out.a, /^[0-9a-f]{32}$/)
    const s1 = maskJson(
      new JsonMaskPlan([{ path: '$.a', rule: 'r', strategy: 'hash_session' }]),
      { key: KEY, sessionKey: Buffer.alloc(32, 1) },
      Buffer.from('{"a":"x"}'),
    )
    const s2 = maskJson(
      new JsonMaskPlan([{ path: '$.a', rule: 'r', strategy: 'hash_session' }]),
      { key: KEY, sessionKey: Buffer.alloc(32, 2) },
      Buffer.from('{"a":"x"}'),
    )
    assert.notEqual(s1.body.toString(), s2.body.toString())
    // Without a session key, hash_session redacts (never a hash that would match across sessions).
    assert.equal(run([{ path: '$.a', rule: 'r', strategy: 'hash_session' }], '{"a":"x"}'), '{"a":"****"}')
  })

  test('a masked string longer than maxCapture is redacted, not buffered', () => {
    const big = 'x'.repeat(5000)
    assert.equal(run([{ path: '$.a', rule: 'r', strategy: 'partial', keep: 2 }], `{"a":"${big}"}`, { maxCapture: 1000 }), '{"a":"****"}')
  })

  test('escaped member names match; names compare exactly; the strictest of several paths wins', () => {
    const t: JsonMaskTarget[] = [
      { path: '$..email', rule: 'e', strategy: 'partial', keep: 3 },
      { path: '$.users[*]', rule: 'u', strategy: 'partial' },
      { path: '$.users[1].email', rule: 'x', strategy: 'null' },
    ]
    const out = run(t, '{"em\\u0061il":"a@b.cd","Email":"keep","users":[{"email":"zz@y.org"},{"email":"q@r.st"}]}')
    assert.equal(out, '{"em\\u0061il":"****.cd","Email":"keep","users":["****","****"]}')
    assert.equal(run(t.slice(0, 1), '{"users":[{"email":"zz@y.org"}]}'), '{"users":[{"email":"****org"}]}')
    assert.equal(
      run([t[0] as JsonMaskTarget, t[2] as JsonMaskTarget], '{"users":[{},{"email":"q@r.st"}]}'),
      '{"users":[{},{"email":null}]}',
    )
  })

  test('$ masks the whole document; nothing to mask returns the same buffers', () => {
    assert.equal(run([{ path: '$', rule: 'r', strategy: 'redact' }], ' {"a":[1,{"b":2}]} '), ' "****" ')
    const m = new JsonMasker(new JsonMaskPlan([{ path: '$.zzz', rule: 'r', strategy: 'redact' }]), KEY)
    const chunk = Buffer.from('{"a":1}')
    const out = m.write(chunk)
    assert.equal(out.length, 1)
    assert.equal(out[0], chunk)
  })

  test('multiple mode: NDJSON and concatenated values, each from $', () => {
    const t: JsonMaskTarget[] = [{ path: '$.object.data.password', rule: 'r', strategy: 'redact' }]
    const body = '{"type":"ADDED","object":{"data":{"password":"p1"}}}\n{"type":"MODIFIED","object":{"data":{"password":"p2"}}}\n'
    assert.equal(
      run(t, body, { multiple: true }),
      '{"type":"ADDED","object":{"data":{"password":"****"}}}\n{"type":"MODIFIED","object":{"data":{"password":"****"}}}\n',
    )
    assert.throws(() => run(t, body), JsonMaskError)
    // RFC 7464 JSON text sequences: a record separator before each text.
    const seq = '\u001e{"object":{"data":{"password":"p1"}}}\n\u001e{"object":{"data":{"password":"p2"}}}\n'
    assert.equal(run(t, seq, { multiple: true }), seq.replaceAll('"p1"', '"****"').replaceAll('"p2"', '"****"'))
    assert.throws(() => run(t, seq), JsonMaskError)
  })

  test('an empty body is allowed (nothing to mask); depth beyond maxDepth is refused', () => {
    assert.equal(run([{ path: '$..a', rule: 'r', strategy: 'redact' }], '  '), '  ')
    assert.throws(
      () => run([{ path: '$..a', rule: 'r', strategy: 'redact' }], '['.repeat(20) + ']'.repeat(20), { maxDepth: 10 }),
      /deeper than 10/,
    )
  })

  test('refused: lone surrogate in a member name, invalid UTF-8, control characters, bad escapes, trailing data', () => {
    const t: JsonMaskTarget[] = [{ path: '$..email', rule: 'r', strategy: 'redact' }]
    const bad: (string | Buffer)[] = [
      '{"em\\ud800ail":"x"}',
      Buffer.from([0x7b, 0x22, 0x61, 0xff, 0x22, 0x3a, 0x31, 0x7d]),
      Buffer.from([0x22, 0xc0, 0xae, 0x22]), // overlong
      Buffer.from([0x22, 0xed, 0xa0, 0x80, 0x22]), // an encoded surrogate
      '"a\nb"',
      '"\\u12"',
      '{"a":1}{"b":2}',
      '\ufeff{}',
      '[1,]',
      '{"a":1,}',
      'NaN',
      '[.5]',
      '[1.]',
      '[1e]',
      '[+1]',
      '[0x10]',
      "{'a':1}",
      '{"a":1',
      '[',
      '{"a"}',
    ]
    for (const b of bad) assert.throws(() => run(t, b), JsonMaskError, String(b))
  })
})

// A reference: the parsed document walked with each value's concrete path.
type Seg = string | number
function stepMatches(s: JsonPathStep, seg: Seg): boolean {
  return s.any || (typeof seg === 'string' ? s.names.includes(seg) : s.indices.includes(seg))
}
function pathMatches(steps: readonly JsonPathStep[], segs: readonly Seg[], si = 0, pi = 0): boolean {
  if (si === steps.length) return pi === segs.length
  const s = steps[si] as JsonPathStep
  if (!s.descendant) return pi < segs.length && stepMatches(s, segs[pi] as Seg) && pathMatches(steps, segs, si + 1, pi + 1)
  for (let k = pi; k < segs.length; k++) if (stepMatches(s, segs[k] as Seg) && pathMatches(steps, segs, si + 1, k + 1)) return true
  return false
}
const vm = new ValueMasker(KEY)
function reference(targets: readonly JsonMaskTarget[], value: unknown, segs: Seg[] = []): unknown {
  let best: JsonMaskTarget | null = null
  const ob = (t: JsonMaskTarget): MaskObligation => ({
    rule: t.rule,
    column: '',
    strategy: t.strategy,
    ...(t.keep === undefined ? {} : { keep: t.keep }),
  })
  for (const t of targets) {
    if (pathMatches(parseJsonPath(t.path).steps, segs) && (best === null || stricter(ob(t), ob(best)))) best = t
  }
  if (best !== null) {
    if (best.strategy === 'null' || value === null) return null
    if (typeof value === 'string' || typeof value === 'number') {
      if (best.strategy === 'redact') return '****'
      const op = compileOp({
        mask: {
          action: 'mask',
          rule: best.rule,
          strategy: best.strategy,
          ...(best.keep === undefined ? {} : { keep: best.keep }),
          derived: false,
        },
        typeOid: 25,
        format: 0,
      })
      const r = vm.apply(op, Buffer.from(typeof value === 'number' ? JSON.stringify(value) : value, 'utf8'))
      return r === null ? null : r === undefined ? '****' : r.toString('utf8')
    }
    return '****'
  }
  if (Array.isArray(value)) return value.map((v, i) => reference(targets, v, [...segs, i]))
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {}
    // defineProperty: a member named __proto__ is a member, as JSON.parse makes it.
    for (const [k, v] of Object.entries(value))
      Object.defineProperty(out, k, { value: reference(targets, v, [...segs, k]), enumerable: true, writable: true, configurable: true })
    return out
  }
  return value
}

const KEYS = ['email', 'ssn', 'users', 'a', 'b', 'é', 'x y']
const jsonArb = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.oneof(
      fc.string(),
      fc.constantFrom('a@b.cd', 'é✓😀', '"\\'),
      fc.integer(),
      fc.double({ noNaN: true, noDefaultInfinity: true }),
      fc.boolean(),
      fc.constant(null),
    ),
    fc.array(tie('value'), { maxLength: 5 }),
    fc.dictionary(fc.oneof(fc.constantFrom(...KEYS), fc.string()), tie('value'), { maxKeys: 5 }),
  ),
})).value
const segArb = fc.oneof(
  fc.constantFrom(...KEYS).map((k) => (/^[a-z]+$/.test(k) ? `.${k}` : `[${JSON.stringify(k).replace(/^"|"$/g, "'")}]`)),
  fc.constantFrom('[0]', '[1]', '[*]', '.*', '[0,2]', "['a','email']"),
)
const pathArb = fc
  .array(fc.tuple(fc.boolean(), segArb), { maxLength: 3 })
  .map((ss) => `$${ss.map(([desc, s]) => (desc ? (s.startsWith('.') ? `.${s}` : `..${s}`) : s)).join('')}`)
const targetArb = fc.record({
  path: pathArb,
  rule: fc.constantFrom('r1', 'r2'),
  strategy: fc.constantFrom('redact', 'partial', 'hash', 'null') as fc.Arbitrary<JsonMaskTarget['strategy']>,
  keep: fc.integer({ min: 0, max: 6 }),
})
const targetsArb = fc
  .array(targetArb, { minLength: 1, maxLength: 4 })
  .map((ts) => ts.map((t) => (t.strategy === 'partial' ? t : { path: t.path, rule: t.rule, strategy: t.strategy })))

/** Serialised with random white space and, sometimes, \u escapes in strings. */
function serialise(v: unknown, rnd: () => number): string {
  const ws = (): string => [' ', '', '\n', '\t', ''][Math.floor(rnd() * 5)] as string
  const str = (s: string): string => {
    const j = JSON.stringify(s)
    return rnd() < 0.3 ? j.replace(/[a-z]/g, (c) => (rnd() < 0.5 ? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}` : c)) : j
  }
  if (Array.isArray(v)) return `[${ws()}${v.map((x) => ws() + serialise(x, rnd) + ws()).join(',')}]`
  if (v !== null && typeof v === 'object') {
    return `{${ws()}${Object.entries(v)
      .map(([k, x]) => `${ws()}${str(k)}${ws()}:${ws()}${serialise(x, rnd)}${ws()}`)
      .join(',')}}`
  }
  if (typeof v === 'string') return str(v)
  return JSON.stringify(v)
}

function chunked(plan: JsonMaskPlan, doc: Buffer, cuts: number[]): Buffer {
  const m = new JsonMasker(plan, KEY)
  const out: Buffer[] = []
  let p = 0
  for (const c of [...cuts.filter((x) => x > 0 && x < doc.length).sort((a, b) => a - b), doc.length]) {
    out.push(...m.write(doc.subarray(p, c)))
    p = c
  }
  out.push(...m.end())
  return Buffer.concat(out)
}

describe('JSON masker: properties (fast-check)', () => {
  test('random documents and paths mask like the reference, whatever the white space and escapes', () => {
    fc.assert(
      fc.property(jsonArb, targetsArb, fc.integer(), (value, targets, seed) => {
        let s = seed
        const rnd = (): number => {
          s = (s * 1103515245 + 12345) & 0x7fffffff
          return s / 0x80000000
        }
        const doc = serialise(value, rnd)
        const out = run(targets, doc)
        assert.deepEqual(JSON.parse(out), reference(targets, JSON.parse(doc)))
      }),
      { numRuns: 3000 },
    )
  })

  test('split at every offset: the same output as one write', () => {
    fc.assert(
      fc.property(jsonArb, targetsArb, (value, targets) => {
        const doc = Buffer.from(JSON.stringify(value) ?? 'null')
        const plan = new JsonMaskPlan(targets)
        const whole = chunked(plan, doc, [])
        for (let k = 0; k <= doc.length; k++) assert.ok(chunked(plan, doc, [k]).equals(whole), `split at ${k}`)
        // and into single bytes
        assert.ok(chunked(plan, doc, [...doc.keys()]).equals(whole))
      }),
      { numRuns: 300 },
    )
  })

  test('broken documents are refused whenever JSON.parse refuses them, and never pass a masked value', () => {
    const mutation = fc.record({
      at: fc.nat(),
      kind: fc.constantFrom('insert', 'delete', 'replace', 'truncate'),
      byte: fc.constantFrom(...'{}[]",:\\ 0-e.tnfu\x01'.split('').map((c) => c.charCodeAt(0)), 0xff, 0xc3),
    })
    fc.assert(
      fc.property(jsonArb, targetsArb, fc.array(mutation, { minLength: 1, maxLength: 3 }), (value, anyTargets, muts) => {
        // partial and hash of a number work on its literal text, which the reference cannot see.
        const targets = anyTargets.map((t) => (t.strategy === 'null' ? t : { path: t.path, rule: t.rule, strategy: 'redact' as const }))
        let doc = Buffer.from(JSON.stringify(value) ?? 'null')
        for (const m of muts) {
          const at = doc.length === 0 ? 0 : m.at % doc.length
          if (m.kind === 'insert') doc = Buffer.concat([doc.subarray(0, at), Buffer.from([m.byte]), doc.subarray(at)])
          else if (m.kind === 'delete') doc = Buffer.concat([doc.subarray(0, at), doc.subarray(at + 1)])
          else if (m.kind === 'replace') doc = Buffer.concat([doc.subarray(0, at), Buffer.from([m.byte]), doc.subarray(at + 1)])
          else doc = doc.subarray(0, at)
        }
        let parsed: unknown
        let parses = true
        try {
          parsed = JSON.parse(doc.toString('utf8'))
        } catch {
          parses = false
        }
        let out: string | null = null
        let refusal: Error | null = null
        try {
          out = run(targets, doc)
        } catch (e) {
          refusal = e as Error
        }
        if (!parses) {
          // Only an empty document (nothing to mask) is accepted where JSON.parse refuses.
          if (out !== null) assert.equal(doc.toString().trim(), '', `accepted ${JSON.stringify(doc.toString())}`)
          else assert.ok(refusal instanceof JsonMaskError)
          return
        }
        if (out === null) {
          // Stricter than JSON.parse only about UTF-8 (which it replaces) and lone surrogates in names.
          assert.ok(
            refusal instanceof JsonMaskError && /UTF-8|surrogate/.test(refusal.message),
            `${refusal?.message} for ${JSON.stringify(doc.toString())}`,
          )
          return
        }
        assert.deepEqual(JSON.parse(out), reference(targets, parsed))
      }),
      { numRuns: 5000 },
    )
  })

  test('a cut stream has emitted only a masked prefix', () => {
    // The value after the error point never appears; what came before is masked.
    const plan = new JsonMaskPlan([{ path: '$..secret', rule: 'r', strategy: 'redact' }])
    const m = new JsonMasker(plan, KEY)
    const first = Buffer.concat(m.write(Buffer.from('[{"secret":"s1"},{"secret":"s')))
    assert.equal(first.toString(), '[{"secret":"****"},{"secret":')
    assert.throws(() => m.write(Buffer.from('2\u0001"}]')), JsonMaskError)
    assert.throws(() => m.write(Buffer.from(']')), JsonMaskError)
  })
})

describe('masking.yaml: json_paths and connections', () => {
  test('parsed, normalised and validated with the path problem', () => {
    const p = new FileProblems('masking.yaml')
    const d = parseMasking(
      {
        rules: [
          { name: 'emails', json_paths: ['$..email'], columns: ['*.email'], strategy: 'partial', clear_for: ['hr'] },
          { name: 'ssn', json_paths: '$.users[*].ssn', connections: ['api', { labels: { env: 'prod' } }], strategy: 'redact' },
        ],
      },
      p,
    )
    assert.deepEqual(p.list, [])
    assert.deepEqual(d.rules[1], {
      name: 'ssn',
      columns: [],
      json_paths: ['$.users[*].ssn'],
      connections: ['api', { labels: { env: 'prod' } }],
      strategy: 'redact',
      clear_for: [],
    })
    // The normalised form is valid input again.
    const again = new FileProblems('data.json')
    assert.deepEqual(parseMasking(JSON.parse(JSON.stringify(d)), again), d)
    assert.deepEqual(again.list, [])

    const bad = new FileProblems('masking.yaml')
    parseMasking(
      {
        rules: [
          { name: 'a', json_paths: ['$.x[?(@.y)]'], strategy: 'redact' },
          { name: 'b', strategy: 'redact' },
          { name: 'c', json_paths: ['$.x'], connections: [], strategy: 'redact' },
          { name: 'd', json_paths: ['x'], connections: ['bad name', { labels: {} }], strategy: 'redact' },
        ],
      },
      bad,
    )
    assert.equal(bad.list.length, 6, bad.list.join('\n'))
    assert.match(bad.list[0] as string, /rules\[0\]\.json_paths\[0\]: JSONPath "\$\.x\[\?\(@\.y\)\]": filter expressions/)
    assert.match(bad.list[1] as string, /rules\[1\]\.columns: is required.*json_paths/)
    assert.match(bad.list.join('\n'), /rules\[2\]\.connections: must be a non-empty list/)
    assert.match(bad.list.join('\n'), /rules\[3\]\.json_paths\[0\]: JSONPath "x": must start with \$/)
    assert.match(bad.list.join('\n'), /rules\[3\]\.connections\[0\]: is not a connection name/)
    assert.match(bad.list.join('\n'), /rules\[3\]\.connections\[1\]: must be a connection name or \{labels/)
  })

  test('jsonMaskPlan takes the obligations with json_path only', () => {
    assert.equal(jsonMaskPlan([{ rule: 'r', column: 'email', strategy: 'redact' }]), null)
    const p = jsonMaskPlan([
      { rule: 'r', column: 'email', strategy: 'redact' },
      { rule: 'j', column: '', json_path: '$..email', strategy: 'partial', keep: 2 },
    ])
    assert.deepEqual(p?.targets, [{ path: '$..email', rule: 'j', strategy: 'partial', keep: 2 }])
  })
})

describe('decisions: JSON-path obligations per connection and hop', () => {
  const POLICY = `package gatehouse

default allow := false

allow if input.action in {"http.request", "sql.read"}

mask contains {"rule": "rego-token", "json_path": "$..token", "strategy": "null"} if input.connection.name == "api"

mask contains {"rule": "rego-bad", "json_path": "$.a[?(@.b)]", "strategy": "null"} if input.connection.name == "broken"
`
  const MASKING = `rules:
  - name: emails
    columns: ["*.email"]
    json_paths: ["$..email"]
    strategy: partial
    clear_for: [hr]
  - name: ssn
    json_paths: ["$.users[*].ssn"]
    connections: [api, { labels: { env: prod } }]
    strategy: redact
`
  let dir: string
  let engine: PolicyEngine
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gh-mask-json-'))
    writeFileSync(join(dir, 'policy.rego'), POLICY)
    writeFileSync(join(dir, 'masking.yaml'), MASKING)
    engine = new PolicyEngine(await loadPolicySource(dir))
  })
  after(() => rmSync(dir, { recursive: true, force: true }))

  const principal = (groups: string[], scope: string[] = []): Principal => ({ id: 'user:u', kind: 'user', groups, scope })
  const decide = async (p: Principal[], connection: ConnectionRef, action = 'http.request'): Promise<Decision> =>
    engine.decide({
      identity: { chain: p, tokenIds: p.map((x) => x.id), expiresAt: 0 },
      connection,
      action,
      command: { method: 'GET', path: '/users' },
    })
  const paths = (d: Decision): string[] => {
    assert.equal(d.effect, 'allow', JSON.stringify(d))
    return d.effect === 'allow'
      ? d.mask
          .filter((m) => m.json_path !== undefined)
          .map((m) => `${m.rule}:${m.json_path}:${m.strategy}`)
          .sort()
      : []
  }
  const api: ConnectionRef = { name: 'api', protocol: 'http', labels: {} }
  const other: ConnectionRef = { name: 'other', protocol: 'http', labels: {} }
  const prod: ConnectionRef = { name: 'billing', protocol: 'http', labels: { env: 'prod' } }
  const pg: ConnectionRef = { name: 'app', protocol: 'postgres', labels: { env: 'prod' } }

  test('connections: by name and by labels; every connection without it; none for PostgreSQL', async () => {
    assert.deepEqual(paths(await decide([principal([])], api)), [
      'emails:$..email:partial',
      'rego-token:$..token:null',
      'ssn:$.users[*].ssn:redact',
    ])
    assert.deepEqual(paths(await decide([principal([])], other)), ['emails:$..email:partial'])
    assert.deepEqual(paths(await decide([principal([])], prod)), ['emails:$..email:partial', 'ssn:$.users[*].ssn:redact'])
    const d = await decide([principal([])], pg, 'sql.read')
    assert.deepEqual(paths(d), [])
    assert.ok(d.effect === 'allow' && d.mask.some((m) => m.column === '*.email'))
  })

  test('clear_for and unmask:<rule> clear a hop; every hop must be cleared', async () => {
    assert.deepEqual(paths(await decide([principal(['hr'])], other)), [])
    const agent: Principal = { id: 'agent:a', kind: 'agent', groups: [], scope: ['unmask:emails'] }
    assert.deepEqual(paths(await decide([principal(['hr']), agent], other)), [])
    const plain: Principal = { id: 'agent:b', kind: 'agent', groups: [], scope: [] }
    assert.deepEqual(paths(await decide([principal(['hr']), plain], other)), ['emails:$..email:partial'])
  })

  test('a Rego mask entry with a path that does not parse denies (fail closed)', async () => {
    const d = await decide([principal([])], { name: 'broken', protocol: 'http', labels: {} })
    assert.equal(d.effect, 'deny')
  })
})
