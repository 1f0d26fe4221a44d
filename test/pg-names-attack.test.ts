// The names/Bind attack corpus (corpus/names-attack.ts) through a real gateway with masking, against
// a private cluster whose statement log is the ground truth.

import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import yaml from 'js-yaml'
import { NAMES_ATTACK_CASES, NAMES_ATTACK_MASKING, NAMES_ATTACK_SCHEMA } from './corpus/names-attack.js'
import { REPO } from './helpers/gateway.js'
import { Corpus } from './helpers/pgcorpus.js'

describe('PostgreSQL names and Bind attack corpus', () => {
  let corpus: Corpus
  let policyDir = ''
  before(async () => {
    policyDir = mkdtempSync(join(tmpdir(), 'gh-names-policy-'))
    for (const f of ['gatehouse.rego', 'guardrails.rego', 'approvals.yaml']) copyFileSync(join(REPO, 'policies', f), join(policyDir, f))
    writeFileSync(join(policyDir, 'masking.yaml'), yaml.dump(NAMES_ATTACK_MASKING))
    corpus = await Corpus.start({
      principals: { reader: [] },
      scopes: { bot: 'sql.read' },
      schema: NAMES_ATTACK_SCHEMA,
      config: { policies: policyDir },
    })
  })
  after(async () => {
    await corpus?.stop()
    if (policyDir) rmSync(policyDir, { recursive: true, force: true })
  })
  for (const c of NAMES_ATTACK_CASES) test(c.name, async () => void (await corpus.run(c)))
})
