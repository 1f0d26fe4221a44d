// The laundering corpus's fixture: the secrets, the schema and masking rules, attempts and how they run through a private cluster.

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before } from 'node:test'
import yaml from 'js-yaml'
import { REPO } from './gateway.js'
import { type CaseContext, Corpus, type CorpusCase, type Expectation } from './pgcorpus.js'

export const SECRETS = [
  'ann.q7x@example.com',
  'bob.z9k@example.org',
  'cy.w4m@example.net',
  '123-45-6789',
  '987-65-4321',
  '555-12-3456',
  '4111111111111111',
  '5500005555555559',
  '340000000000009',
  'tok-9f8e7d6c',
]

export const SCHEMA = `
CREATE SCHEMA gh_l;
CREATE TABLE gh_l.users (id int PRIMARY KEY, name text, email text, ssn text, card text, region text);
INSERT INTO gh_l.users VALUES
  (1, 'Ann', 'ann.q7x@example.com', '123-45-6789', '4111111111111111', 'north'),
  (2, 'Bob', 'bob.z9k@example.org', '987-65-4321', '5500005555555559', 'south'),
  (3, 'Cy', 'cy.w4m@example.net', '555-12-3456', '340000000000009', 'north');
CREATE TABLE gh_l.orders (id int PRIMARY KEY, user_id int, total numeric, placed date);
INSERT INTO gh_l.orders VALUES (1, 1, 10.50, '2026-01-02'), (2, 1, 4.00, '2026-02-03'), (3, 2, 99.99, '2026-02-03'), (4, 3, 1.25, '2026-03-04');
CREATE TABLE gh_l.notes (id serial PRIMARY KEY, body text);
CREATE TABLE gh_l.tokens (id int, token text);
INSERT INTO gh_l.tokens VALUES (1, 'tok-9f8e7d6c'), (2, 'tok-9f8e7d6c'), (3, 'tok-other-1');
CREATE SEQUENCE gh_l.seq;
CREATE VIEW gh_l.users_public AS SELECT id, name, email AS contact FROM gh_l.users;
CREATE VIEW gh_l.people AS SELECT id, name FROM gh_l.users;
CREATE VIEW gh_l.directory AS SELECT id, email AS contact FROM gh_l.users;
CREATE INDEX users_email_idx ON gh_l.users (email);
CREATE DOMAIN gh_l.mail AS text;
CREATE TABLE gh_l.contacts (id int, addr gh_l.mail);
INSERT INTO gh_l.contacts VALUES (1, 'ann.q7x@example.com');
CREATE FUNCTION gh_l.stash(v text) RETURNS text LANGUAGE sql AS $$ INSERT INTO gh_l.notes (body) VALUES (v) RETURNING body $$;
CREATE FUNCTION gh_l.leaky() RETURNS text LANGUAGE sql AS $$ SELECT email FROM gh_l.users ORDER BY id LIMIT 1 $$;
CREATE FUNCTION gh_l.ident(v text) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT v $$;
`

export const MASKING = {
  rules: [
    { name: 'emails', columns: ['gh_l.users.email', 'gh_l.contacts.addr'], strategy: 'partial', keep: 4, clear_for: ['pii-readers'] },
    { name: 'ssn', columns: ['gh_l.users.ssn'], strategy: 'hash', clear_for: ['pii-readers'] },
    { name: 'cards', columns: ['*.card'], strategy: 'redact', clear_for: ['pii-readers'] },
    { name: 'tokens', columns: ['gh_l.tokens.token'], strategy: 'hash_session', clear_for: ['pii-readers'] },
  ],
}

/** Every form a clear value could take on the way out. */
function forms(secret: string): string[] {
  const b = Buffer.from(secret, 'utf8')
  return [secret, secret.toUpperCase(), [...secret].reverse().join(''), b.toString('base64'), b.toString('hex')]
}

export function leaks(bytes: Buffer): string[] {
  const text = bytes.toString('latin1')
  return SECRETS.flatMap(forms).filter((f) => text.includes(f))
}

/** Nothing left behind on the server: stashed values, large objects, a moved sequence. */
const LEFT_BEHIND = `SELECT (SELECT count(*) FROM gh_l.notes WHERE body ~ 'example|[0-9]{3}-[0-9]{2}-[0-9]{4}|4111|5500|3400|tok-')
  + (SELECT count(*) FROM pg_largeobject_metadata) + (SELECT CASE WHEN is_called THEN 1 ELSE 0 END FROM gh_l.seq)`

/** Undoes what the held (allowed) cases changed, so that later attempts see the same schema. */
const CLEANUP =
  "DROP INDEX IF EXISTS gh_l.gh_ok; ALTER TABLE gh_l.orders DROP CONSTRAINT IF EXISTS gh_ok; DROP FUNCTION IF EXISTS public.gh_fresh(text); DROP FUNCTION IF EXISTS public.initcap(text); DROP FUNCTION IF EXISTS public.gh_x(text); DROP FUNCTION IF EXISTS public.btrim(text); TRUNCATE gh_l.notes; SELECT setval('gh_l.seq', 1, false)"

export interface Attempt {
  readonly cls: string
  readonly name: string
  /** One statement; or `prep` steps that must succeed, then the attempt. */
  readonly sql: string
  readonly prep?: readonly string[]
  /** More forms of the same attempt (other columns), run as further steps of the same session. */
  readonly variants?: readonly string[]
  /** What the last step must do (earlier steps must succeed). */
  readonly expect: Expectation
  /** A pattern the refusal's message must match (the reason, not just any denial). */
  readonly reason?: RegExp
  readonly as?: string
}

const COLS = ['email', 'ssn', 'card'] as const

/** One attempt per masked column (partial, hash, redact), as the steps of one session. */
export function perColumn(cls: string, name: string, f: (c: string) => string, expect: Expectation): Attempt {
  const [first, ...rest] = COLS.map(f)
  return { cls, name, sql: first as string, variants: rest, expect }
}

/**
 * Attempts of one class with the same expectation and no preparation share a session, three at a
 * time (a session through the gateway is the expensive part of a case); each is still its own step,
 * judged on its own, and the server log must show that a refused group ran nothing.
 */
export function grouped(list: readonly Attempt[]): Attempt[] {
  const out: Attempt[] = []
  for (const a of list) {
    const last = out[out.length - 1]
    const joinable = (x: Attempt): boolean => x.prep === undefined && x.reason === undefined && x.as === undefined
    if (last && joinable(last) && joinable(a) && last.cls === a.cls && last.expect === a.expect && size(last) < 9) {
      out[out.length - 1] = { ...last, name: `${last.name}; ${a.name}`, variants: [...(last.variants ?? []), a.sql, ...(a.variants ?? [])] }
    } else out.push(a)
  }
  return out
}

/** How many attempts (steps judged) an Attempt holds. */
function size(a: Attempt): number {
  return 1 + (a.variants?.length ?? 0)
}

// Live bindings: set by the before() that useLaunderingCorpus() registers, read by the tests after it ran.
export let corpus: Corpus
let policyDir: string
export const counts = new Map<string, number>()

const writeMasking = (strict: boolean): void => {
  writeFileSync(join(policyDir, 'masking.yaml'), yaml.dump({ ...MASKING, strict_predicates: strict }))
}
const version = (): string => (JSON.parse(corpus.gw.cli(['policy', 'status', '--json']).stdout) as { version: string }).version
export const reload = async (strict: boolean): Promise<void> => {
  const before = version()
  writeMasking(strict)
  for (let i = 0; i < 100 && version() === before; i++) await new Promise((r) => setTimeout(r, 100))
  assert.notEqual(version(), before, 'masking.yaml was reloaded')
}

/** Starts the cluster and the gateway (a masking.yaml of its own) before the calling describe's tests; stops them after. */
export function useLaunderingCorpus(): void {
  before(async () => {
    policyDir = mkdtempSync(join(tmpdir(), 'gh-launder-policy-'))
    for (const f of ['gatehouse.rego', 'guardrails.rego', 'approvals.yaml']) copyFileSync(join(REPO, 'policies', f), join(policyDir, f))
    writeMasking(false)
    corpus = await Corpus.start({
      principals: { mallory: ['writers', 'dba'], cleared: ['pii-readers', 'writers', 'dba'] },
      schema: SCHEMA,
      config: { policies: policyDir },
    })
  })

  after(async () => {
    await corpus?.stop()
    rmSync(policyDir, { recursive: true, force: true })
    const lines = [...counts].sort().map(([k, v]) => `class ${k}: ${v}`)
    console.log(`laundering attempts: ${[...counts.values()].reduce((a, b) => a + b, 0)} (${lines.join(', ')})`)
  })
}

const attempt = (a: Attempt): CorpusCase => {
  const tried = [a.sql, ...(a.variants ?? [])]
  return {
    name: a.name,
    cls: a.cls,
    as: a.as ?? 'mallory',
    steps: [...(a.prep ?? []).map((sql) => ({ sql, expect: 'ok' as const })), ...tried.map((sql) => ({ sql, expect: a.expect }))],
    check: (ctx: CaseContext) => {
      assert.deepEqual(leaks(ctx.received), [], `${a.name}: clear values reached the client`)
      for (const o of ctx.outcomes.slice(a.prep?.length ?? 0)) {
        if (a.reason) assert.match(o.errors.map((e) => e.message).join('\n'), a.reason)
        // A server error of a statement reading masked columns keeps its SQLSTATE, not its text.
        for (const e of o.errors) if (e.code !== '42501') assert.match(e.message, /withheld because the statement reads masked columns/)
      }
      // Nothing left behind on the server; then undo what the held cases changed.
      assert.equal(admin(LEFT_BEHIND, CLEANUP), '0', `${a.name}: something was left behind on the server`)
    },
  }
}

/** The first command's output; every command runs (psql -c … -c …), in one process. */
const admin = (...sql: string[]): string => {
  const r = spawnSync(
    'psql',
    ['-X', '-At', '-h', '127.0.0.1', '-p', String(corpus.cluster.port), '-U', 'postgres', '-d', 'corpus', ...sql.flatMap((q) => ['-c', q])],
    {
      encoding: 'utf8',
      timeout: 30_000,
    },
  )
  if (r.status !== 0) throw new Error(`psql failed: ${r.stderr}`)
  return r.stdout.trim().split('\n')[0] ?? ''
}

export const run = async (a: Attempt): Promise<void> => {
  counts.set(a.cls, (counts.get(a.cls) ?? 0) + size(a))
  await corpus.run(attempt(a))
}
