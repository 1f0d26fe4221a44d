// Password redaction (proxies/postgres/redact.ts) on the parse tree: a table of texts whose secrets
// must disappear (comments, odd casing, quoted option names, E'' / U&'' / dollar quoting,
// unparseable and unscannable texts), and the same secrets sent through a real gateway to a private
// cluster (statement log as ground truth): allowed, refused, failed and unparseable statements,
// simple and extended protocol. Afterwards no byte of any secret may be found in the gateway's data
// directory (audit log, recordings, everything else) or its logs, and every statement the server
// executed is audited as its redacted text.

import assert from 'node:assert/strict'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { loadSqlParser } from '../proxies/postgres/sql/index.js'
import { mentionsPassword, redactSql } from '../proxies/postgres/redact.js'
import { Corpus, executedStatements, serialize } from './helpers/pgcorpus.js'

/** [text, secret as it appears in the text, expected redaction (optional)] */
const TABLE: [string, string, string?][] = [
  [
    "ALTER ROLE bob WITH ENCRYPTED PASSWORD E'se\\'cret1' VALID UNTIL 'infinity'",
    'cret1',
    "ALTER ROLE bob WITH ENCRYPTED PASSWORD '[redacted]' VALID UNTIL 'infinity'",
  ],
  ['create user "Bob" /* c */ password $q$secret2$q$', 'secret2', 'create user "Bob" /* c */ password \'[redacted]\''],
  ["CREATE ROLE x LOGIN PASSWORD 'secret3' IN ROLE y", 'secret3', "CREATE ROLE x LOGIN PASSWORD '[redacted]' IN ROLE y"],
  ["ALTER USER x PASSWORD U&'s\\0065cret4'", 's\\0065cret4'],
  ["aLtEr RoLe x PaSsWoRd 'secret5' -- trailing", 'secret5'],
  ["ALTER ROLE x PASSWORD 'SCRAM-SHA-256$4096:c2VjcmV0Ng==$abc:def'", 'c2VjcmV0Ng=='],
  ["CREATE USER MAPPING FOR bob SERVER s OPTIONS (user 'bob', \"password\" 'secret7')", 'secret7'],
  ["ALTER USER MAPPING FOR bob SERVER s OPTIONS (SET password 'secret8')", 'secret8'],
  ["ALTER USER MAPPING FOR bob SERVER s OPTIONS (ADD password E'secret9')", 'secret9'],
  [
    "CREATE SUBSCRIPTION s CONNECTION 'host=x password=secret10' PUBLICATION p",
    'secret10',
    "CREATE SUBSCRIPTION s CONNECTION '[redacted]' PUBLICATION p",
  ],
  ["ALTER SUBSCRIPTION s CONNECTION U&'host=x p\\0061ssword=secret11'", 'secret11'],
  ['ALTER SUBSCRIPTION s CONNECTION $c$host=x password=secret12$c$', 'secret12'],
  [
    "CREATE SERVER s FOREIGN DATA WRAPPER w OPTIONS (host 'h', password 'secret13')",
    'secret13',
    "CREATE SERVER s FOREIGN DATA WRAPPER w OPTIONS (host 'h', password '[redacted]')",
  ],
  ["ALTER SERVER s OPTIONS (SET password 'secret14')", 'secret14'],
  ["SELECT dblink_connect('c', E'host=x \\x70assword=secret15')", 'secret15'],
  ["SELECT * FROM dblink('host=x password=secret16', 'select 1') AS t(a int)", 'secret16'],
  ["SELECT public.DBLINK_EXEC('hostaddr=1 password=secret17', 'select 1')", 'secret17'],
  ["SET my.password = 'secret18'", 'secret18', "SET my.password = '[redacted]'"],
  ['SET my.api_token TO 123456789', '123456789'],
  ["ALTER ROLE bob SET my.secret = 'secret20'", 'secret20'],
  ["ALTER DATABASE d SET my.passwd TO 'secret21'", 'secret21'],
  ["SELECT set_config('my.password', 'secret22', false)", 'secret22'],
  ['ALTER ROLE bob PASSWORD secret23', 'secret23'],
  ['ALTER ROLE bob PASSWORD "secret24"', 'secret24'],
  ["ALTER ROLE bob PASSWORD 'secret25", 'secret25'],
  ["DO $$ BEGIN EXECUTE 'ALTER ROLE bob PASSWORD ''secret26'''; END $$", 'secret26'],
  ["CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS 'BEGIN EXECUTE ''ALTER ROLE x PASSWORD ''''secret27''''''; END'", 'secret27'],
  ["ALTER ROLE bob PASSWORD 'secret28'; SELECT 'x'", 'secret28', "ALTER ROLE bob PASSWORD '[redacted]'; SELECT 'x'"],
  ["COMMENT ON ROLE bob IS 'password=secret29'", 'secret29'],
  ["SELECT 'postgres://bob:secret30@host/db'", 'secret30'],
  ["ALTER ROLE bob PASSWORD 'sec''ret31'", "sec''ret31"],
  ["ALTER ROLE bob WITH PASSWORD 'secret32' CREATEDB PASSWORD 'secret32b'", 'secret32'],
  ["ALTER ROLE bob PASSWORD ' secret33 '::text", 'secret33'],
  ["ALTER ROLE bob PASSWORD 'é-secret34-日本'", 'secret34'],
]

const UNTOUCHED = [
  'SELECT * FROM servers WHERE name = $1',
  "SELECT 'a password reset'",
  "UPDATE users SET note = 'x' WHERE id = 1",
  "SELECT passwd_hint FROM t WHERE id = 1 AND name = 'bob'",
]

describe('password redaction on the parse tree', () => {
  before(() => loadSqlParser())

  for (const [sql, secret, want] of TABLE) {
    test(`redacted: ${sql}`, () => {
      const out = redactSql(sql)
      assert.ok(!out.includes(secret), `${out} still holds ${secret}`)
      assert.ok(out.includes('[redacted]'))
      assert.ok(mentionsPassword(sql), 'bound parameters of this text are redacted too')
      if (want !== undefined) assert.equal(out, want)
    })
  }
  test('texts that hold no secret are left as they are (the statement stays readable)', () => {
    for (const sql of UNTOUCHED) assert.equal(redactSql(sql), sql)
    assert.equal(redactSql('SELECT 1'), 'SELECT 1')
  })
})

/** [principal, steps]: each step a simple query or raw wire messages; the secret is unique per case. */
interface Attempt {
  readonly as: 'admin' | 'reader' | 'bot'
  readonly secret: string
  readonly sql?: string
  readonly wire?: readonly Buffer[]
}

function attempts(): Attempt[] {
  const out: Attempt[] = []
  const add = (as: Attempt['as'], make: (s: string) => string): void => {
    const secret = `Zq${out.length}x${Math.random().toString(36).slice(2, 8)}Kw`
    out.push({ as, secret, sql: make(secret) })
  }
  add('admin', (s) => `CREATE ROLE fx_r1 LOGIN PASSWORD '${s}'`)
  add('admin', (s) => `ALTER ROLE fx_r1 WITH ENCRYPTED PASSWORD E'${s}\\'x'`)
  add('admin', (s) => `alter user fx_r1 /* c */ password $$${s}$$`)
  add('admin', (s) => `ALTER USER fx_r1 PASSWORD $tag$${s}$tag$ VALID UNTIL 'infinity'`)
  add('admin', (s) => `ALTER ROLE "fx_r1" password '${s}' -- trailing`)
  add('admin', (s) => `CREATE USER fx_r2 WITH CREATEDB PASSWORD '${s}'`)
  add('admin', (s) => `CREATE SERVER fx_srv FOREIGN DATA WRAPPER fx_fdw OPTIONS (host 'h', password '${s}')`)
  add('admin', (s) => `ALTER SERVER fx_srv OPTIONS (SET password '${s}')`)
  add('admin', (s) => `CREATE USER MAPPING FOR fx_r1 SERVER fx_srv OPTIONS (user 'fx_r1', password '${s}')`)
  add('admin', (s) => `ALTER USER MAPPING FOR fx_r1 SERVER fx_srv OPTIONS (SET "password" '${s}')`)
  add('admin', (s) => `CREATE SUBSCRIPTION fx_sub CONNECTION 'host=127.0.0.1 password=${s} dbname=x' PUBLICATION p WITH (connect = false)`)
  add('admin', (s) => `ALTER SUBSCRIPTION fx_sub CONNECTION 'host=127.0.0.1 password=${s}'`)
  add('admin', (s) => `SELECT dblink_connect('c', 'host=127.0.0.1 password=${s}')`)
  add('admin', (s) => `SELECT * FROM dblink('hostaddr=127.0.0.1 password=${s}', 'select 1') AS t(a int)`)
  add('admin', (s) => `SET fx.password = '${s}'`)
  add('admin', (s) => `SET SESSION fx.api_token TO '${s}'`)
  add('admin', (s) => `ALTER ROLE fx_r1 SET fx.secret = '${s}'`)
  add('admin', (s) => `SELECT set_config('fx.password', '${s}', false)`)
  add('admin', (s) => `ALTER ROLE fx_r1 PASSWORD '${s}`)
  add('admin', (s) => `ALTER ROLE fx_r1 PASSWORD ${s}`)
  add('admin', (s) => `ALTER ROLE fx_r1 PASSWORD "${s}"`)
  add('admin', (s) => `DO $$ BEGIN EXECUTE 'ALTER ROLE fx_r1 PASSWORD ''${s}'''; END $$`)
  add('admin', (s) => `BEGIN; ALTER ROLE fx_r1 PASSWORD '${s}'; COMMIT`)
  add('admin', (s) => `SELECT 1; ALTER ROLE fx_r1 PASSWORD '${s}'`)
  add('admin', (s) => `COMMENT ON ROLE fx_r1 IS 'password=${s}'`)
  add('admin', (s) => `ALTER ROLE fx_r1 PASSWORD 'SCRAM-SHA-256$4096:${s}$abc:def'`)
  // The server's error quotes the malformed connection string's tail: the result event must not.
  add('admin', (s) => `CREATE SUBSCRIPTION fx_sub2 CONNECTION 'host=127.0.0.1 password=x ${s}' PUBLICATION p WITH (connect = false)`)
  add('reader', (s) => `ALTER ROLE fx_r1 PASSWORD '${s}'`)
  add('reader', (s) => `CREATE USER MAPPING FOR fx_r1 SERVER fx_srv OPTIONS (password '${s}')`)
  add('bot', (s) => `SELECT dblink_connect('password=${s}')`)
  add('bot', (s) => `ALTER SUBSCRIPTION fx_sub CONNECTION 'password=${s}'`)
  add('reader', (s) => `ALTER ROLE fx_r1 PASSWORD '${s}`)
  // Extended protocol: the secret in a bound parameter, and in the text.
  const p1 = `Zq${out.length}xparamKw`
  out.push({
    as: 'admin',
    secret: p1,
    wire: [
      serialize.parse({ text: "SELECT set_config('fx.password', $1, false)" }),
      serialize.bind({ values: [p1] }),
      serialize.execute({}),
      serialize.sync(),
    ],
  })
  const p2 = `Zq${out.length}xparamKw`
  out.push({
    as: 'admin',
    secret: p2,
    wire: [serialize.parse({ text: `ALTER ROLE fx_r1 PASSWORD '${p2}'` }), serialize.bind({}), serialize.execute({}), serialize.sync()],
  })
  const p3 = `Zq${out.length}xparamKw`
  out.push({
    as: 'reader',
    secret: p3,
    wire: [
      serialize.parse({ text: 'ALTER ROLE fx_r1 PASSWORD $1' }),
      serialize.bind({ values: [p3] }),
      serialize.execute({}),
      serialize.sync(),
    ],
  })
  return out
}

function filesUnder(dir: string): string[] {
  const out: string[] = []
  for (const name of readdirSync(dir)) {
    const p = join(dir, name)
    const st = statSync(p)
    if (st.isDirectory()) out.push(...filesUnder(p))
    else if (st.isFile()) out.push(p)
  }
  return out
}

describe('no secret reaches the audit log, recordings or logs (server log as ground truth)', () => {
  let corpus: Corpus
  const tried = attempts()

  before(async () => {
    await loadSqlParser()
    corpus = await Corpus.start({
      principals: { admin: ['gatehouse-admins'], reader: [] },
      scopes: { bot: 'sql.read' },
      schema: 'CREATE FOREIGN DATA WRAPPER fx_fdw; CREATE ROLE fx_r0;',
    })
  })
  after(() => corpus?.stop())

  test(`${tried.length} attempts: every executed statement is audited, redacted; no secret is stored or logged`, async () => {
    const apps: string[] = []
    for (const a of tried) {
      const { s, app } = await corpus.session(a.as)
      apps.push(app)
      try {
        if (a.sql !== undefined) await s.query(a.sql)
        else await s.send(a.wire ?? [], 1)
      } finally {
        await s.close()
      }
    }
    let executedCount = 0
    for (const [i, app] of apps.entries()) {
      const a = tried[i] as Attempt
      const executed = executedStatements(await corpus.cluster.settled(app))
      const audit = await corpus.auditOf(app)
      const statements = audit.filter((e) => e.type === 'statement')
      assert.ok(statements.length > 0, `attempt ${i} is audited`)
      for (const ex of executed) {
        executedCount++
        assert.ok(
          statements.some((e) => e.decision === 'allow' && e.sql === redactSql(ex.sql)),
          `attempt ${i}: the server ran ${JSON.stringify(redactSql(ex.sql))}, audited as ${JSON.stringify(statements.map((e) => e.sql))}`,
        )
      }
      if (a.as !== 'admin') assert.deepEqual(executed, [], `attempt ${i} (${a.as}) is refused and runs nothing`)
    }
    assert.ok(executedCount >= 15, `the server ran ${executedCount} of the attempts`)

    // Byte search of everything the gateway wrote, and of its logs.
    const haystacks: [string, Buffer][] = filesUnder(corpus.gw.dataDir).map((f) => [f, readFileSync(f)])
    haystacks.push(['gateway stdout', Buffer.from(corpus.gw.stdout)], ['gateway stderr', Buffer.from(corpus.gw.stderr)])
    assert.ok(
      haystacks.some(([f]) => f.includes('recordings')),
      'the sessions were recorded',
    )
    for (const a of tried) {
      for (const [where, bytes] of haystacks)
        assert.equal(bytes.indexOf(a.secret), -1, `${a.secret} (${a.sql ?? 'wire'}) found in ${where}`)
    }
    // The secrets did reach the server (so the search above is not vacuous).
    const serverLog = JSON.stringify(corpus.cluster.serverLog())
    assert.ok(tried.filter((a) => a.as === 'admin' && serverLog.includes(a.secret)).length >= 15)
  })
})
