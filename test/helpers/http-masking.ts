// What the HTTP masking test files set up alike: an upstream of their own on a loopback port, and
// the shipped policies with a masking.yaml of the test's.

import { cpSync, rmSync, writeFileSync } from 'node:fs'
import type { Server } from 'node:net'
import { join } from 'node:path'
import { REPO } from './gateway.js'

/** Listens on a free loopback port and returns it. */
export async function listenLoopback(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const a = server.address()
  return a && typeof a === 'object' ? a.port : 0
}

/**
 * `<dir>/policies`: the shipped bundle with `masking` as its masking.yaml and `extra` files beside
 * it. The shipped policy cases are left out: they expect the shipped masking rules.
 */
export function policiesWithMasking(dir: string, masking: string, extra: Readonly<Record<string, string>> = {}): string {
  const policyDir = join(dir, 'policies')
  cpSync(join(REPO, 'policies'), policyDir, { recursive: true })
  rmSync(join(policyDir, 'default.cases.yaml'), { force: true })
  writeFileSync(join(policyDir, 'masking.yaml'), masking)
  for (const [name, text] of Object.entries(extra)) writeFileSync(join(policyDir, name), text)
  return policyDir
}
