// Code that runs when a relation is read, seen by the decision and by masking: row-level security
// policies that call functions (for a role RLS applies to), foreign tables (postgres_fdw to another
// database, file_fdw running a program), and views another client created or redefined moments
// before (the decision is taken on a catalog confirmed current, not on the 30 s shared snapshot).
// A real gateway in front of the machine's PostgreSQL, psql as the client; every attack is tried
// and must fail, and the server's own state (a sequence, a log table, a file) says nothing ran.

import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import yaml from 'js-yaml'
import pg from 'pg'
import { LOCAL_PG, REPO, TestGateway } from './helpers/gateway.js'

const DB = 'gh_pgcat_e2e'
// A cluster-wide name: unique to this test, dropped at the end.
const ROLE = 'gh_pgcat_app'
const MARKER = join(tmpdir(), `gh-pgcat-program-ran-${process.pid}`)

function admin(sql: string, db = DB): string {
  const r = spawnSync('psql', ['-X', '-At', '-h', '127.0.0.1', '-U', 'postgres', '-d', db, '-v', 'ON_ERROR_STOP=1', '-c', sql], {
    encoding: 'utf8',
  })
  if (r.status !== 0) throw new Error(`admin psql failed: ${r.stderr}`)
  return r.stdout.trim()
}

/** psql through the gateway, asynchronously (the gateway is another process; nothing to drain here,
 *  but a failing statement must not block the test's event loop). */
function run(conninfo: string, ...sql: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn('psql', ['-X', '-At', '-v', 'ON_ERROR_STOP=1', '-d', conninfo, ...sql.flatMap((s) => ['-c', s])], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    p.stdout.on('data', (d: Buffer) => {
      stdout += d.toString('utf8')
    })
    p.stderr.on('data', (d: Buffer) => {
      stderr += d.toString('utf8')
    })
    const timer = setTimeout(() => p.kill('SIGKILL'), 90_000)
    p.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
}

const MASKING_YAML = {
  rules: [{ name: 'emails', columns: ['*.email'], strategy: 'partial', keep: 4, clear_for: ['pii-readers'] }],
}

const SETUP = `
CREATE SEQUENCE pc_seq;
CREATE TABLE pc_log (x text);
CREATE TABLE pc_users (id int, name text, email text);
INSERT INTO pc_users VALUES (1, 'Ann', 'ann.secret@example.com'), (2, 'Bob', 'bob.hidden@example.org');
CREATE TABLE pc_rls (id int, note text);
INSERT INTO pc_rls VALUES (1, 'a'), (2, 'b');
CREATE TABLE pc_rls_plain (id int, note text);
INSERT INTO pc_rls_plain VALUES (1, 'a');
CREATE FUNCTION pc_side(i int) RETURNS boolean LANGUAGE plpgsql VOLATILE SECURITY DEFINER AS
  $$ BEGIN INSERT INTO pc_log VALUES ('rls-side-effect ' || i); PERFORM nextval('pc_seq'); RETURN true; END $$;
CREATE FUNCTION pc_leak(e text) RETURNS boolean LANGUAGE plpgsql VOLATILE SECURITY DEFINER AS
  $$ BEGIN INSERT INTO pc_log VALUES ('leak:' || e); RETURN true; END $$;
ALTER TABLE pc_rls ENABLE ROW LEVEL SECURITY;
CREATE POLICY pc_p ON pc_rls FOR SELECT USING (pc_side(id));
ALTER TABLE pc_users ENABLE ROW LEVEL SECURITY;
CREATE POLICY pc_pu ON pc_users FOR SELECT USING (pc_leak(email));
ALTER TABLE pc_rls_plain ENABLE ROW LEVEL SECURITY;
CREATE POLICY pc_pp ON pc_rls_plain FOR SELECT USING (id > 0 AND note IS NOT NULL);
GRANT SELECT ON ALL TABLES IN SCHEMA public TO ${ROLE};
GRANT USAGE, SELECT ON SEQUENCE pc_seq TO ${ROLE};
CREATE EXTENSION postgres_fdw;
CREATE SERVER pc_loop FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', port '5432', dbname '${DB}');
CREATE USER MAPPING FOR PUBLIC SERVER pc_loop OPTIONS (user 'postgres');
CREATE FOREIGN TABLE pc_ft_users (id int, name text, contact text OPTIONS (column_name 'email'))
  SERVER pc_loop OPTIONS (schema_name 'public', table_name 'pc_users');
CREATE VIEW pc_sideview AS SELECT nextval('pc_seq') AS n;
CREATE FOREIGN TABLE pc_ft_side (n bigint) SERVER pc_loop OPTIONS (schema_name 'public', table_name 'pc_sideview');
CREATE EXTENSION file_fdw;
CREATE SERVER pc_files FOREIGN DATA WRAPPER file_fdw;
CREATE FOREIGN TABLE pc_ft_prog (line text) SERVER pc_files OPTIONS (program 'date >> ${MARKER}; echo hi');
CREATE VIEW pc_v3 AS SELECT 2::bigint AS n;
`

describe('code behind reading a relation: RLS policies, foreign tables, fresh views', () => {
  let gw: TestGateway
  let policyDir: string
  let agent = '' // delegated, scope `connection:app sql.read`
  let agent2 = '' // the same on app2 (upstream role subject to RLS)
  let reader = '' // no groups: sql.read and sql.session, not cleared
  let writer = '' // group writers, not cleared: the policy allows writes, masking must refuse

  const seq = (): string => admin('SELECT last_value FROM pc_seq')
  const log = (): string => admin('SELECT count(*) FROM pc_log')
  const refused = (r: { code: number | null; stdout: string; stderr: string }, why: RegExp = /gatehouse: denied by /): void => {
    assert.notEqual(r.code, 0, `must be refused: ${r.stdout}`)
    assert.match(r.stderr, why, r.stderr)
  }

  before(async () => {
    admin(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`, 'test')
    admin(`DROP ROLE IF EXISTS ${ROLE}`, 'test')
    admin(`CREATE ROLE ${ROLE} LOGIN`, 'test')
    admin(`CREATE DATABASE ${DB}`, 'test')
    admin(SETUP)
    policyDir = mkdtempSync(join(tmpdir(), 'gh-pgcat-policy-'))
    for (const f of ['gatehouse.rego', 'guardrails.rego', 'approvals.yaml']) copyFileSync(join(REPO, 'policies', f), join(policyDir, f))
    writeFileSync(join(policyDir, 'masking.yaml'), yaml.dump(MASKING_YAML))
    gw = await TestGateway.start({
      connections: [
        { ...LOCAL_PG, database: DB },
        { ...LOCAL_PG, name: 'app2', database: DB, user: ROLE },
      ],
      config: { policies: policyDir },
    })
    reader = gw.token('user:rita')
    writer = gw.token('user:eve', ['--group', 'writers'])
    const delegate = (conn: string): string => {
      const r = gw.cli(['token', 'delegate', '--agent', 'ro', '--scope', `connection:${conn} sql.read`, '--token', writer])
      if (r.code !== 0) throw new Error(`token delegate failed: ${r.stderr}`)
      return r.stdout.trim()
    }
    agent = delegate('app')
    agent2 = delegate('app2')
  })

  after(async () => {
    await gw?.cleanup()
    rmSync(policyDir, { recursive: true, force: true })
    rmSync(MARKER, { force: true })
    admin(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`, 'test')
    admin(`DROP ROLE IF EXISTS ${ROLE}`, 'test')
  })

  test('RLS: a read-only agent reading a table whose policy calls a function is refused, and nothing ran', async () => {
    const before = seq()
    const r = await run(gw.conninfo(agent2, 'app2'), 'SELECT * FROM pc_rls')
    refused(r)
    assert.equal(seq(), before)
    assert.equal(log(), '0')
    const ev = gw.auditEvents(['--type', 'statement']).filter((e) => e.sql === 'SELECT * FROM pc_rls')
    const last = ev[ev.length - 1] as { action?: string; side_effect_functions?: string[]; decision?: string }
    assert.equal(last.decision, 'deny')
    assert.equal(last.action, 'sql.write')
    assert.ok(last.side_effect_functions?.includes('public.pc_side'), JSON.stringify(last))
  })

  test('RLS: a masked column passed to a policy function is refused for a writer who sees it masked', async () => {
    const r = await run(gw.conninfo(writer, 'app2'), 'SELECT id, email FROM pc_users')
    refused(r)
    assert.ok(!r.stdout.includes('secret'), r.stdout)
    assert.equal(log(), '0')
    // And the reader (read only, not cleared) is refused as well: the policy's call is a write.
    refused(await run(gw.conninfo(reader, 'app2'), 'SELECT id FROM pc_users'))
    assert.equal(log(), '0')
  })

  test('RLS: a policy of harmless built-ins keeps a read a read; a superuser upstream bypasses RLS', async () => {
    const r = await run(gw.conninfo(agent2, 'app2'), 'SELECT id FROM pc_rls_plain')
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stdout.trim(), '1')
    // The upstream `postgres` bypasses RLS: the policy never runs, and the read is a read.
    const s = await run(gw.conninfo(agent, 'app'), 'SELECT count(*) FROM pc_rls')
    assert.equal(s.code, 0, s.stderr)
    assert.equal(s.stdout.trim(), '2')
    assert.equal(log(), '0')
  })

  test('foreign tables: a read-only agent cannot run a program or a remote nextval through one', async () => {
    const before = seq()
    refused(await run(gw.conninfo(agent, 'app'), 'SELECT * FROM pc_ft_prog'))
    assert.equal(existsSync(MARKER), false, 'the program ran')
    refused(await run(gw.conninfo(agent, 'app'), 'SELECT * FROM pc_ft_side'))
    assert.equal(seq(), before)
    const ev = gw.auditEvents(['--type', 'statement']).filter((e) => e.sql === 'SELECT * FROM pc_ft_side')
    const last = ev[ev.length - 1] as { side_effect_functions?: string[] }
    assert.ok(last.side_effect_functions?.includes('FOREIGN TABLE(public.pc_ft_side)'), JSON.stringify(last))
  })

  test('foreign tables: masked data behind a foreign table is refused (unknown lineage), not sent clear', async () => {
    const w = await run(gw.conninfo(writer, 'app'), 'SELECT * FROM pc_ft_users')
    refused(w)
    assert.ok(!w.stdout.includes('secret') && !w.stdout.includes('hidden'), w.stdout)
    refused(await run(gw.conninfo(reader, 'app'), 'SELECT contact FROM pc_ft_users'))
    // Through a view too.
    admin('CREATE VIEW pc_ft_view AS SELECT contact AS c FROM pc_ft_users')
    const v = await run(gw.conninfo(writer, 'app'), 'SELECT c FROM pc_ft_view')
    refused(v)
    assert.ok(!v.stdout.includes('secret'), v.stdout)
  })

  test('fresh views: a view redefined by another client moments ago is judged on its new definition', async () => {
    // Warm the connection's shared snapshot with the harmless definition.
    const warm = await run(gw.conninfo(agent, 'app'), 'SELECT * FROM pc_v3')
    assert.equal(warm.code, 0, warm.stderr)
    assert.equal(warm.stdout.trim(), '2')
    admin("CREATE OR REPLACE VIEW pc_v3 AS SELECT nextval('pc_seq') AS n")
    const before = seq()
    refused(await run(gw.conninfo(agent, 'app'), 'SELECT * FROM pc_v3'))
    assert.equal(seq(), before)
    // A view created just now, in the same window.
    admin("CREATE VIEW pc_nv AS SELECT nextval('pc_seq') AS n")
    refused(await run(gw.conninfo(agent, 'app'), 'SELECT * FROM pc_nv'))
    assert.equal(seq(), before)
    // And the same through the session that warmed nothing: a long-lived session sees it too.
    admin('CREATE OR REPLACE VIEW pc_v3 AS SELECT 3::bigint AS n')
    const ok = await run(gw.conninfo(agent, 'app'), 'SELECT * FROM pc_v3')
    assert.equal(ok.code, 0, ok.stderr)
    assert.equal(ok.stdout.trim(), '3')
  })

  test('fresh views: a long-lived session is judged on the current definition too', async () => {
    admin('CREATE OR REPLACE VIEW pc_v3 AS SELECT 4::bigint AS n')
    const before = seq()
    const c = new pg.Client({ host: '127.0.0.1', port: gw.pgPort, database: 'app', user: 'alice', password: agent })
    await c.connect()
    try {
      assert.equal((await c.query('SELECT * FROM pc_v3')).rows[0]?.n, '4')
      // Another client redefines the view while this session is open.
      admin("CREATE OR REPLACE VIEW pc_v3 AS SELECT nextval('pc_seq') AS n")
      await assert.rejects(c.query('SELECT * FROM pc_v3'), /gatehouse: denied by /)
      assert.equal(seq(), before)
    } finally {
      await c.end()
    }
  })

  test('fresh views: a view that changes search_path behind the gateway is refused (set_config)', async () => {
    admin(
      "CREATE SCHEMA pc_s; CREATE TABLE pc_s.pc_users (id int, name text, email text); CREATE VIEW pc_sp AS SELECT set_config('search_path', 'public', false) AS s",
    )
    const r = await run(gw.conninfo(reader, 'app'), 'SET search_path = pc_s, public', 'SELECT * FROM pc_sp')
    refused(r)
    assert.ok(!r.stdout.includes('public'), r.stdout)
  })
})
