// What the server executes is exactly what was judged: the corpus for server-side names, lexical
// settings, code that runs before a decision, other sessions' text and effective actions behind
// EXECUTE/FETCH/MOVE, run through a real gateway against a private cluster whose own statement log
// is the ground truth (helpers/pgcorpus.ts). Cases live in test/corpus/, one file per class.

import { after, before, describe, test } from 'node:test'
import { BEFORE_DECISION_CASES, BEFORE_DECISION_SCHEMA } from './corpus/before-decision.js'
import { LEXICAL_CASES, LEXICAL_SCHEMA } from './corpus/lexical.js'
import { SESSION_TEXT_CASES, SESSION_TEXT_CONF, SESSION_TEXT_SCHEMA } from './corpus/session-text.js'
import { NAMES_CASES, NAMES_SCHEMA } from './corpus/names.js'
import { Corpus, type CorpusCase } from './helpers/pgcorpus.js'

const CASES: CorpusCase[] = [...NAMES_CASES, ...BEFORE_DECISION_CASES, ...LEXICAL_CASES, ...SESSION_TEXT_CASES]

describe('PostgreSQL fidelity corpus', () => {
  let corpus: Corpus
  before(async () => {
    corpus = await Corpus.start({
      principals: { reader: [], writer: ['writers'], admin: ['gatehouse-admins'] },
      scopes: { bot: 'sql.read' },
      schema: NAMES_SCHEMA + BEFORE_DECISION_SCHEMA + LEXICAL_SCHEMA + SESSION_TEXT_SCHEMA,
      cluster: { conf: SESSION_TEXT_CONF },
    })
  })
  after(async () => {
    if (corpus) process.stderr.write(`corpus cases per class: ${JSON.stringify(Object.fromEntries(corpus.counts))}\n`)
    await corpus?.stop()
  })
  for (const c of CASES) test(c.name, async () => void (await corpus.run(c)))
})
