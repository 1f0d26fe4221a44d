// Where a policy's Rego `mask` entries can come from (engine/policy/mask-scope.ts), read from its
// source: a rule's top-level `input.action` and `input.connection.name` conditions narrow it, and
// anything the scanner does not understand counts as "anywhere" (a false "not here" would let a
// masked session be treated as unmasked). The default policy masks Kubernetes Secrets only.

import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { maskMayApply, regoMaskScope } from '../engine/policy/mask-scope.js'
import { REPO } from './helpers/gateway.js'

const MCP = ['mcp.call', 'mcp.resource', 'mcp.prompt']

function may(src: string, actions: readonly string[], connection: string): boolean {
  return maskMayApply(regoMaskScope([src]), actions, connection)
}

const HEAD = 'package gatehouse\n\n'

describe('Rego mask scope', () => {
  test('the default policy masks Kubernetes Secrets only', () => {
    const dir = join(REPO, 'policies')
    const rego = readdirSync(dir)
      .filter((f) => f.endsWith('.rego') && !f.endsWith('_test.rego'))
      .map((f) => readFileSync(join(dir, f), 'utf8'))
    const scope = regoMaskScope(rego)
    assert.equal(maskMayApply(scope, MCP, 'anything'), false)
    assert.equal(maskMayApply(scope, ['kube.request'], 'cluster'), true)
  })

  test('action and connection conditions narrow a rule; both must hold', () => {
    const src = `${HEAD}mask contains {"rule": "r", "json_path": "$..ssn", "strategy": "redact"} if {
\tinput.action == "mcp.call"
\t"rego" == input.connection.name
\tinput.command.tool == "person"
}
`
    assert.equal(may(src, MCP, 'rego'), true)
    assert.equal(may(src, MCP, 'plain'), false)
    assert.equal(may(src, ['mcp.resource'], 'rego'), false)
    const set = `${HEAD}mask contains x if {\n  input.action in {"mcp.call", "http.request"}\n  x := {}\n}\n`
    assert.equal(may(set, ['mcp.call'], 'c'), true)
    assert.equal(may(set, ['mcp.prompt'], 'c'), false)
    // Rules of other packages are not gatehouse.mask.
    assert.equal(may('package other\n\nmask contains x if { x := 1 }\n', MCP, 'c'), false)
  })

  test('what the scanner does not understand can apply anywhere', () => {
    const anywhere = [
      `${HEAD}mask contains x if {\n  x := {}\n}\n`,
      `${HEAD}mask contains x if {\n  # input.action == "kube.request"\n  x := {}\n}\n`,
      `${HEAD}mask contains x if {\n  x := "input.action == \\"kube.request\\""\n}\n`,
      `${HEAD}mask contains x if input.action == "kube.request"\n`,
      `${HEAD}mask := [{"rule": "r"}]\n`,
      `${HEAD}default mask := []\n`,
      `${HEAD}mask[x] {\n  input.action == "kube.request"\n  x := 1\n} {\n  x := 2\n}\n`,
      `${HEAD}mask.x contains 1 if { input.action == "kube.request" }\n`,
      `${HEAD}mask contains x if {\n  input.action == "kube.request" with input as {}\n  x := 1\n}\n`,
      `${HEAD}mask contains x if {\n  not input.action == "kube.request"\n  x := 1\n}\n`,
      `${HEAD}mask contains x if {\n  input["action"] == "kube.request"\n  x := 1\n}\n`,
      `${HEAD}mask contains x if {\n  y := 1 +\n  input.action == "kube.request"\n  x := y\n}\n`,
      'package gatehouse.mask\n\nx := 1\n',
    ]
    for (const src of anywhere) assert.equal(may(src, MCP, 'c'), true, src)
    // One module not understood makes the whole policy "anywhere".
    const narrow = `${HEAD}mask contains x if {\n  input.action == "kube.request"\n  x := 1\n}\n`
    assert.equal(maskMayApply(regoMaskScope([narrow]), MCP, 'c'), false)
    assert.equal(maskMayApply(regoMaskScope([narrow, anywhere[0] as string]), MCP, 'c'), true)
  })
})
