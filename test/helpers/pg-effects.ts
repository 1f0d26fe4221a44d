// The effects corpus's fixture: the schema, the state every case must leave as it found it, a listener, and step builders.

import assert from 'node:assert/strict'
import { after, before } from 'node:test'
import pg from 'pg'
import { type CaseContext, Corpus, type CorpusStep } from './pgcorpus.js'

export const SCHEMA = `
CREATE TABLE fx_t (id int PRIMARY KEY, v text);
INSERT INTO fx_t SELECT g, 'v' || g FROM generate_series(1, 5) g;
CREATE TABLE fx_u (id int, v text);
CREATE TABLE fx_w (n int);
CREATE SEQUENCE fx_seq;
CREATE VIEW fx_view AS SELECT id, v FROM fx_t;
CREATE FUNCTION fx_bump() RETURNS int LANGUAGE sql AS 'UPDATE fx_t SET v = ''bumped'' WHERE id = 1 RETURNING id';
CREATE FUNCTION fx_pure(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 + 1';
CREATE FUNCTION fx_lock(int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN PERFORM pg_advisory_lock($1); RETURN $1; END $$;
CREATE FUNCTION public.abs(text) RETURNS text LANGUAGE sql AS $$ UPDATE fx_t SET v = 'shadow' WHERE id = 2; SELECT 'x' $$;
CREATE FUNCTION fx_eq(int, int) RETURNS bool LANGUAGE plpgsql AS $$ BEGIN PERFORM nextval('fx_seq'); RETURN $1 = $2; END $$;
CREATE OPERATOR public.=== (function = fx_eq, leftarg = int, rightarg = int);
CREATE SCHEMA fx_s;
CREATE FUNCTION fx_s.timeofday() RETURNS text LANGUAGE sql AS $$ SELECT nextval('public.fx_seq')::text $$;
GRANT USAGE ON SCHEMA fx_s TO PUBLIC;
CREATE FUNCTION fx_chk(text) RETURNS bool LANGUAGE plpgsql AS $$ BEGIN PERFORM nextval('fx_seq'); RETURN true; END $$;
CREATE DOMAIN fx_dom AS text CHECK (fx_chk(VALUE));
CREATE TYPE fx_ty AS (a int);
CREATE FUNCTION fx_cast(int) RETURNS fx_ty LANGUAGE plpgsql AS $$ BEGIN PERFORM nextval('fx_seq'); RETURN ROW($1)::fx_ty; END $$;
CREATE CAST (int AS fx_ty) WITH FUNCTION fx_cast(int);
CREATE VIEW fx_vseq AS SELECT nextval('fx_seq') AS n;
CREATE VIEW fx_vv AS SELECT * FROM fx_vseq;
CREATE VIEW fx_vfn AS SELECT fx_bump() AS b;
CREATE VIEW fx_vok AS SELECT id, lower(v) AS v FROM fx_view;
`

/** Rows, the sequence, large objects and advisory locks, as one comparable string. */
const STATE_SQL = `SELECT (SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM fx_t) || '|' ||
  (SELECT count(*) FROM fx_u) || '|' || (SELECT last_value || ':' || is_called FROM fx_seq) || '|' ||
  (SELECT count(*) FROM pg_largeobject_metadata) || '|' || (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory')`

// Every case leaves this state as it found it (the writers' allowed cases touch only fx_w): checked
// after each case over one direct connection (a psql process per case would cost more than the case).
export let baseline = ''

export const refused = (sql: string): CorpusStep => ({ sql, expect: 'refused' })
export const ok = (sql: string, rows?: (string | null)[][]): CorpusStep => (rows ? { sql, expect: 'ok', rows } : { sql, expect: 'ok' })

/** The audited statement (the first one the case refused), for checking what policy saw. */
export function deniedEvent(ctx: CaseContext): Record<string, unknown> {
  const e = ctx.audit.find((x) => x.type === 'statement' && x.decision === 'deny')
  assert.ok(e, 'a denied statement is audited')
  return e
}

// Live bindings: set by the before() that useEffectsCorpus() registers, read by the tests after it ran.
export let corpus: Corpus
export let listener: pg.Client
let direct: pg.Client
export const notifications: string[] = []
export const state = async (): Promise<string> =>
  (await direct.query<{ s: string }>(`SELECT ${STATE_SQL.replace(/^SELECT /, '')} AS s`)).rows[0]?.s ?? ''

/** Starts the cluster, the gateway, a direct connection and a listener on fx_chan before the calling describe's tests. */
export function useEffectsCorpus(): void {
  before(async () => {
    corpus = await Corpus.start({
      principals: { reader: [], writer: ['writers'] },
      scopes: { bot: 'sql.read' },
      schema: SCHEMA,
    })
    direct = new pg.Client({ host: '127.0.0.1', port: corpus.cluster.port, user: 'postgres', database: 'corpus' })
    await direct.connect()
    baseline = await state()
    listener = new pg.Client({ host: '127.0.0.1', port: corpus.cluster.port, user: 'postgres', database: 'corpus' })
    await listener.connect()
    listener.on('notification', (n) => notifications.push(`${n.channel}:${n.payload ?? ''}`))
    await listener.query('LISTEN fx_chan')
  })

  after(async () => {
    await listener?.end().catch(() => undefined)
    await direct?.end().catch(() => undefined)
    await corpus?.stop()
  })
}
