// The layering check (.ci/layers.mjs, run by `npm run check`): the repository passes it, and each
// kind of violation in a small fixture tree is caught, static and dynamic, type-only included, as
// are import cycles and source files over 600 lines.

import { strict as assert } from 'node:assert'
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { after, describe, it } from 'node:test'
import { REPO } from './helpers/gateway.js'

const CHECKER = join(REPO, '.ci/layers.mjs')

function check(root: string): { status: number | null; out: string } {
  const r = spawnSync(process.execPath, [CHECKER, root], { encoding: 'utf8' })
  return { status: r.status, out: `${r.stdout}${r.stderr}` }
}

/** A tree with the repository's folders, every file importing nothing unless given. */
function tree(files: Record<string, string>): string {
  const root = mkdtempSync(join(tmpdir(), 'gh-layers-'))
  const base: Record<string, string> = {
    'engine/errors.ts': 'export class GatehouseError extends Error {}\n',
    'engine/types.ts': 'export interface Identity { id: string }\n',
    'proxies/types.ts': "export type { Identity } from '../engine/types.js'\n",
    'proxies/kit/index.ts': "export { GatehouseError } from '../../engine/errors.js'\n",
    'proxies/a/index.ts':
      "import type { Identity } from '../types.js'\nimport { GatehouseError } from '../kit/index.js'\nexport const a = (i: Identity) => new GatehouseError(i.id)\n",
    'proxies/a/public.ts': "export { a } from './index.js'\n",
    'proxies/b/index.ts': "import { a } from '../a/public.js'\nexport const b = a\n",
    'cli/gateway/gateway.ts':
      "import type { Identity } from '../../engine/types.js'\nimport type {} from '../../proxies/types.js'\nexport type I = Identity\n",
    'cli/main.ts':
      "import { b } from '../proxies/b/index.js'\nimport type { I } from './gateway/gateway.js'\nexport const m: [typeof b, I | null] = [b, null]\n",
  }
  for (const [path, text] of Object.entries({ ...base, ...files })) {
    mkdirSync(join(root, dirname(path)), { recursive: true })
    writeFileSync(join(root, path), text)
  }
  return root
}

const roots: string[] = []
after(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true })
})
function fixture(files: Record<string, string>): { status: number | null; out: string } {
  const root = tree(files)
  roots.push(root)
  return check(root)
}

describe('layering check', () => {
  it('passes on the repository', () => {
    const r = check(REPO)
    assert.equal(r.status, 0, r.out)
    assert.match(r.out, /no layering violation, no cycle/)
  })

  it('passes on a fixture that keeps the rule', () => {
    const r = fixture({})
    assert.equal(r.status, 0, r.out)
  })

  it('refuses the engine importing a plugin, the gateway or the CLI (static, type-only, dynamic)', () => {
    const r = fixture({
      'engine/x.ts': "import { a } from '../proxies/a/index.js'\nexport const x = a\n",
      'engine/y.ts': "import type { I } from '../cli/gateway/gateway.js'\nexport type Y = I\n",
      'engine/z.ts': "export const z = () => import('../cli/main.js')\n",
      'engine/w.ts': "export type W = import('../proxies/types.js').Identity\n",
    })
    assert.equal(r.status, 1)
    assert.match(r.out, /engine\/x\.ts: imports proxies\/a\/index\.ts: the engine imports only engine\//)
    assert.match(r.out, /engine\/y\.ts: imports cli\/gateway\/gateway\.ts/)
    assert.match(r.out, /engine\/z\.ts: imports cli\/main\.ts \(dynamic\)/)
    assert.match(r.out, /engine\/w\.ts: imports proxies\/types\.ts \(dynamic\)/)
  })

  it('refuses a plugin reaching into the engine, the kit\u2019s inside or another plugin\u2019s inside', () => {
    const r = fixture({
      'proxies/a/deep.ts': "import { GatehouseError } from '../../engine/errors.js'\nexport const d = GatehouseError\n",
      'proxies/kit/more.ts': 'export const more = 1\n',
      'proxies/a/kit.ts': "import { more } from '../kit/more.js'\nexport const k = more\n",
      'proxies/b/deep.ts': "export { a } from '../a/index.js'\n",
      'proxies/b/gw.ts': "import type { I } from '../../cli/gateway/gateway.js'\nexport type G = I\n",
    })
    assert.equal(r.status, 1)
    assert.match(r.out, /proxies\/a\/deep\.ts: imports engine\/errors\.ts: a plugin reaches the engine only through proxies\/kit/)
    assert.match(r.out, /proxies\/a\/kit\.ts: imports proxies\/kit\/more\.ts/)
    assert.match(r.out, /proxies\/b\/deep\.ts: imports proxies\/a\/index\.ts: a plugin imports another plugin only through its public\.ts/)
    assert.match(r.out, /proxies\/b\/gw\.ts: imports cli\/gateway\/gateway\.ts/)
  })

  it('refuses the gateway importing a plugin, and an example importing the package\u2019s inside', () => {
    const r = fixture({
      'cli/gateway/builtin.ts': "export { a } from '../../proxies/a/index.js'\n",
      'examples/plugins/p.js': "import { x } from 'gatehouse/engine/errors'\nexport default x\n",
    })
    assert.equal(r.status, 1)
    assert.match(r.out, /cli\/gateway\/builtin\.ts: imports proxies\/a\/index\.ts/)
    assert.match(
      r.out,
      /examples\/plugins\/p\.js: imports gatehouse\/engine\/errors: only gatehouse\/proxies\/types and gatehouse\/proxies\/kit are published/,
    )
  })

  it('refuses a cycle, a type-only one too, naming its files', () => {
    const r = fixture({
      'engine/p.ts': "import type { Q } from './q.js'\nexport type P = Q | 1\n",
      'engine/q.ts': "import { r } from './r.js'\nexport type Q = typeof r\n",
      'engine/r.ts': "import type { P } from './p.js'\nexport const r: P | null = null\n",
    })
    assert.equal(r.status, 1)
    assert.match(r.out, /import cycle: engine\/(p|q|r)\.ts → engine\/(p|q|r)\.ts → engine\/(p|q|r)\.ts → engine\/\1\.ts/)
  })

  it('refuses what it cannot check: a computed import(), a path that resolves to no file', () => {
    const r = fixture({
      'proxies/a/load.ts': 'export const load = (m: string) => import(m)\n',
      'engine/gone.ts': "export { x } from './missing.js'\n",
    })
    assert.equal(r.status, 1)
    assert.match(r.out, /proxies\/a\/load\.ts: a computed import\(\) cannot be checked/)
    assert.match(r.out, /engine\/gone\.ts: \.\/missing\.js resolves to no file/)
  })

  it('refuses a source file over 600 lines, a test too, naming it and its count; lineage.ts alone may be longer', () => {
    const lines = (n: number): string => 'export const x = 1\n'.repeat(n)
    const r = fixture({
      'engine/long.ts': lines(601),
      'test/long.test.ts': lines(900),
      'engine/full.ts': lines(600),
      'proxies/postgres/sql/lineage.ts': lines(1800),
    })
    assert.equal(r.status, 1)
    assert.match(r.out, /engine\/long\.ts: 601 lines, over the 600-line limit/)
    assert.match(r.out, /test\/long\.test\.ts: 900 lines, over the 600-line limit/)
    assert.doesNotMatch(r.out, /engine\/full\.ts/)
    assert.doesNotMatch(r.out, /lineage\.ts/)
    assert.match(r.out, /layers: 2 problem\(s\)/)
  })

  it('reads imports, not comments, strings or regular expressions that look like them', () => {
    const r = fixture({
      'engine/quiet.ts': [
        "// import { a } from '../proxies/a/index.js'",
        "/* export * from '../cli/main.js' */",
        'export const s = "import(\'../proxies/a/index.js\')"',
        "export const t = `from '../gateway/gateway.js' ${1 + 1} import('../cli/main.js')`",
        "export const re = /from '..\\/proxies\\/a\\/index.js'/",
        'export const half = 4 / 2',
        '',
      ].join('\n'),
    })
    assert.equal(r.status, 0, r.out)
  })
})
