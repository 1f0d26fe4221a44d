// `gatehouse classify CONNECTION [--sample N] [--json]`: connects straight to a PostgreSQL
// connection of the config with its own settings and secret (no running gateway needed), reads
// every user table's columns from the catalog, samples up to N rows per table, and prints suggested
// masking.yaml rules with a comment saying why, for the operator to review and commit.
//
// The session is read-only (default_transaction_read_only) with a statement timeout, values are
// cut to 4 KiB on the server before they are sent, and sampled values are only counted: they are
// never printed, logged or written anywhere.

import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { type Command, Option } from 'commander'
import { GatehouseError } from '../engine/errors.js'
import { type CatalogColumn, type ColumnSample, suggest, suggestionsYaml } from '../engine/masking/classify.js'
import { parseSecretRef, resolveSecret } from '../engine/secrets.js'
import { directDialer } from './gateway/dialer.js'
import { query } from '../proxies/postgres/catalog.js'
import { connectUpstream, type UpstreamTls } from '../proxies/postgres/upstream.js'
import { resolveConfig } from './client.js'
import { readFileSync } from 'node:fs'

const DEFAULT_SAMPLE = 100
const MAX_SAMPLE = 10_000
/** Longer values are cut on the server: detectors find what they look for in the first 4 KiB. */
const MAX_VALUE_CHARS = 4096
const STATEMENT_TIMEOUT = '30s'

const COLUMNS_SQL = `SELECT n.nspname, c.relname, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
WHERE c.relkind IN ('r', 'p', 'm', 'f') AND NOT c.relispartition AND a.attnum > 0 AND NOT a.attisdropped
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND pg_catalog.has_table_privilege(c.oid, 'SELECT')
ORDER BY n.nspname, c.relname, a.attnum`

function ident(s: string): string {
  return `"${s.replaceAll('"', '""')}"`
}

export interface ClassifyResult {
  readonly connection: string
  readonly tables: number
  readonly columns: number
  readonly yaml: string
  readonly suggestions: ReturnType<typeof suggest>
}

export async function classify(configFile: string | undefined, connectionName: string, sample: number): Promise<ClassifyResult> {
  const config = resolveConfig(configFile)
  const conn = config.connections.find((c) => c.name === connectionName)
  if (!conn) {
    const where = configFile ?? process.env.GATEHOUSE_CONFIG ?? (existsSync('gatehouse.yaml') ? 'gatehouse.yaml' : null)
    throw new GatehouseError(
      'GH_ERR_CONFIG',
      where
        ? `no connection named ${JSON.stringify(connectionName)} in ${where}`
        : `no connection named ${JSON.stringify(connectionName)}: no configuration file (give --config FILE or run where gatehouse.yaml is); the demo connection of \`serve --dev\` lives only in that process, so put it in a gatehouse.yaml to classify it`,
    )
  }
  if (conn.protocol !== 'postgres') {
    throw new GatehouseError('GH_ERR_CONFIG', `connection ${connectionName} is ${conn.protocol}; classify reads PostgreSQL connections`)
  }
  const s = conn.settings
  const base = config.file ? join(config.file, '..') : process.cwd()
  let password: string | undefined
  if (s.password !== undefined) {
    const ref = parseSecretRef(s.password, base)
    if (!ref) throw new GatehouseError('GH_ERR_CONFIG', `connection ${connectionName}: password must be an env: or file: reference`)
    password = await resolveSecret(ref)
  }
  const upstream = await connectUpstream({
    target: { host: conn.host, port: conn.port },
    database: typeof s.database === 'string' ? s.database : conn.name,
    user: typeof s.user === 'string' ? s.user : 'postgres',
    password,
    tls: (typeof s.tls === 'string' ? s.tls : 'disable') as UpstreamTls,
    ca: typeof s.ca === 'string' ? readFileSync(s.ca) : undefined,
    params: new Map([
      ['client_encoding', 'UTF8'],
      ['application_name', 'gatehouse classify'],
    ]),
    dial: directDialer,
  })
  const sock = upstream.socket
  try {
    // Read-only and bounded: classify must never change or hold up the database it looks at.
    await query(sock, `SET default_transaction_read_only = on; SET statement_timeout = '${STATEMENT_TIMEOUT}'`)
    const [rows] = await query(sock, COLUMNS_SQL, 60_000)
    const byTable = new Map<string, CatalogColumn[]>()
    for (const r of rows ?? []) {
      const col: CatalogColumn = { schema: r[0] ?? '', table: r[1] ?? '', column: r[2] ?? '', type: r[3] ?? '' }
      const key = `${ident(col.schema)}.${ident(col.table)}`
      const list = byTable.get(key) ?? []
      list.push(col)
      byTable.set(key, list)
    }
    const samples: ColumnSample[] = []
    for (const [table, cols] of byTable) {
      const select = cols.map((c) => `left(${ident(c.column)}::text, ${MAX_VALUE_CHARS})`).join(', ')
      let data: (string | null)[][] = []
      try {
        ;[data = []] = await query(sock, `SELECT ${select} FROM ${table} LIMIT ${sample}`, 60_000)
      } catch (err) {
        // One unreadable table (a foreign table whose server is down) does not end the run; its
        // columns are judged by name alone. The error names the table, never a value.
        process.stderr.write(`gatehouse: classify: ${table} could not be sampled (${err instanceof Error ? err.message : String(err)})\n`)
      }
      cols.forEach((c, i) => {
        const values: string[] = []
        for (const row of data) {
          const v = row[i]
          if (v !== null && v !== undefined) values.push(v)
        }
        samples.push({ column: c, values })
      })
    }
    const suggestions = suggest(samples)
    const yaml = suggestionsYaml(suggestions, [
      `Suggested by \`gatehouse classify ${connectionName}\` on ${new Date().toISOString()}: review every rule before committing it.`,
      `Sampled up to ${sample} rows from each of ${byTable.size} tables (${samples.length} columns). No sampled value is shown here.`,
      'clear_for lists the groups that may see a column clear; strategies: redact | partial (keep N) | hash | null.',
    ])
    return { connection: connectionName, tables: byTable.size, columns: samples.length, yaml, suggestions }
  } finally {
    sock.destroy()
  }
}

/** Registers `classify` on the program (one line in cli/main.ts). */
export function registerClassifyCommand(program: Command): void {
  program
    .command('classify')
    .description('suggest masking.yaml rules for a PostgreSQL connection from its catalog and sampled values (prints YAML to review)')
    .argument('<connection>', 'the connection name in the configuration')
    .addOption(new Option('-c, --config <file>', 'configuration file (default ./gatehouse.yaml or $GATEHOUSE_CONFIG)'))
    .option('--sample <n>', `rows sampled per table (default ${DEFAULT_SAMPLE}, at most ${MAX_SAMPLE})`)
    .option('--json', 'print the suggestions as JSON')
    .action(async (name: string, o: { config?: string; sample?: string; json?: boolean }) => {
      const sample = o.sample === undefined ? DEFAULT_SAMPLE : Number(o.sample)
      if (!Number.isInteger(sample) || sample < 1 || sample > MAX_SAMPLE) {
        throw new GatehouseError(
          'GH_ERR_CONFIG',
          `--sample must be a whole number from 1 to ${MAX_SAMPLE} (got ${JSON.stringify(o.sample)})`,
        )
      }
      const r = await classify(o.config, name, sample)
      if (o.json) {
        const { rules, detectors, skipped } = r.suggestions
        process.stdout.write(
          `${JSON.stringify({ connection: r.connection, tables: r.tables, columns: r.columns, rules, detectors, skipped })}\n`,
        )
      } else process.stdout.write(r.yaml)
    })
}
