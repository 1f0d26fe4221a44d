// The `gatehouse` command. Every command takes --config (default ./gatehouse.yaml or
// GATEHOUSE_CONFIG) and talks to the running server through its API; it reads the data directory
// directly only where no server runs. Lists print oldest first; --json prints JSON Lines.

import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { Command, CommanderError, Option } from 'commander'
import { type Config, configJsonSchema, MAX_WORKERS, parseConfig } from '../engine/config/config.js'
import { parseDuration } from '../engine/duration.js'
import { openLocalAuditLog } from '../engine/audit/writer.js'
import { registerAuditCommands } from './audit.js'
import { isGatehouseError } from '../engine/errors.js'
import { Gateway, issuerFor } from './gateway/gateway.js'
import { Primary } from './gateway/primary.js'
import { isWorkerProcess, runWorker } from './gateway/worker.js'
import { checkConfigAgainstPlugins, scopeCheckerFor } from './gateway/plugin-checks.js'
import { loadPlugins } from './gateway/loader.js'
import { createLogger, defaultLogFormat, LOG_FORMATS, type LogFormat } from '../engine/server/log.js'
import { buildInputs } from '../engine/decide.js'
import { instantiate, loadPolicySource } from '../engine/policy/bundle.js'
import { buildBundle } from '../engine/policy/build.js'
import { parseRequest } from '../engine/policy/cases.js'
import { formatJson, formatJunit, formatText, reportOk, runPolicyTests } from '../engine/policy/check.js'
import { FileProblems, parseYaml } from '../engine/policy/data.js'
import { PolicyEngine, type PolicyStatus } from '../engine/policy/engine.js'
import { Store } from '../engine/store.js'
import { loadOrCreateSigningKey, principalKind, TokenIssuer, validateGroup, validateSubject } from '../engine/identity/tokens.js'
import { postgresPlugin } from '../proxies/postgres/index.js'
import { sshPlugin } from '../proxies/ssh/index.js'
import { mcpPlugin } from '../proxies/mcp/index.js'
import { httpPlugin } from '../proxies/http/index.js'
import { mcpRemotePlugin } from '../proxies/mcp-remote/index.js'
import { kubernetesPlugin } from '../proxies/kubernetes/index.js'
import { registerMcpCommand } from './mcp.js'
import { explainSql } from '../proxies/postgres/sql/explain.js'
import { defaultPolicyDir } from '../engine/policy/sources.js'
import type { Identity, PrincipalKind } from '../engine/types.js'
import { verifyLocally } from './identity.js'
import { ApiClient, ApiError, resolveConfig, ServerUnreachableError } from './client.js'
import { EXIT_OK, exitCodeFor, FailedError, UsageError } from './exit.js'
import { revokedLine, revokeById } from './revoke.js'
import { registerIdentityCommands } from './identity.js'
import { registerClassifyCommand } from './classify.js'
import { registerSshCommands } from './ssh.js'
import { registerKubeCommands } from './kube.js'
import { registerApprovalCommands } from './approvals.js'
import { registerAdminCommands } from './admin.js'
import { registerConnectorCommands } from './connector.js'
import { join } from 'node:path'

const BUILTIN_PLUGINS = [postgresPlugin, sshPlugin, mcpPlugin, httpPlugin, mcpRemotePlugin, kubernetesPlugin]

/** The package version (package.json two levels above dist/cli/ and cli/). */
function packageVersion(): string {
  for (const rel of ['../../package.json', '../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: unknown; version?: unknown }
      if (pkg.name === 'gatehouse' && typeof pkg.version === 'string') return pkg.version
    } catch {
      // not at this level
    }
  }
  return 'unknown'
}

function out(line: string): void {
  process.stdout.write(`${line}\n`)
}

function probe(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port })
    const done = (ok: boolean): void => {
      s.destroy()
      resolve(ok)
    }
    s.setTimeout(timeoutMs, () => done(false))
    s.once('connect', () => done(true))
    s.once('error', () => done(false))
  })
}

async function devConfig(): Promise<Config> {
  const connections: unknown[] = []
  if (await probe('127.0.0.1', 5432, 500)) {
    connections.push({
      name: 'demo',
      protocol: 'postgres',
      address: '127.0.0.1:5432',
      database: 'test',
      user: 'postgres',
      labels: { env: 'dev' },
    })
  }
  return parseConfig({ data_dir: './gatehouse-data', connections }, null)
}

/** Display names of the listeners the banner knows; any other plugin's listener shows its own name. */
const LISTENER_TITLES: Record<string, string> = { api: 'API', postgres: 'PostgreSQL', ssh: 'SSH', http: 'HTTP', kubernetes: 'Kubernetes' }

/** What `serve` prints once ready: every listener (or `off`), and where the state lives. */
function banner(config: Config, addresses: Readonly<Record<string, string>>, dataDirExisted: boolean): string {
  const names = [...new Set(['api', 'postgres', ...Object.keys(config.listen), ...Object.keys(addresses)])]
  const title = (n: string): string => `${LISTENER_TITLES[n] ?? n}:`
  const width = Math.max(...names.map((n) => title(n).length), 'data:'.length) + 1
  const lines = ['Gatehouse is running.']
  for (const n of names) {
    const a = addresses[n]
    lines.push(`  ${title(n).padEnd(width)}${a === undefined ? 'off' : n === 'api' ? `http://${a}` : a}`)
  }
  let data = config.dataDir
  // Without a configuration file the state lands in the current directory: say so, so nobody
  // is surprised by a ./gatehouse-data they did not ask for.
  if (config.file === null) data += dataDirExisted ? ' (no configuration file: using it)' : ' (no configuration file: created it)'
  lines.push(`  ${'data:'.padEnd(width)}${data}`)
  return `${lines.join('\n')}\n`
}

async function serve(opts: { config?: string; dev?: boolean; logFormat?: LogFormat; workers?: number }): Promise<void> {
  const config = opts.dev && !opts.config && !process.env.GATEHOUSE_CONFIG ? await devConfig() : resolveConfig(opts.config)
  const log = createLogger(config.logLevel, opts.logFormat ?? defaultLogFormat())
  if (isWorkerProcess()) {
    await runWorker(config, BUILTIN_PLUGINS, log, { dev: opts.dev === true })
    return
  }
  const workers = opts.workers ?? config.workers
  if (workers > 1 && config.connectors.length > 0) throw new UsageError('--workers must be 1 while connectors are configured')
  const dataDirExisted = existsSync(config.dataDir)
  const gw =
    workers > 1 ? await Primary.start(config, workers, log) : await Gateway.start(config, BUILTIN_PLUGINS, log, { dev: opts.dev === true })
  let stopping = false
  const stop = (signal: string): void => {
    if (stopping) return
    stopping = true
    log.info({ signal }, 'shutting down')
    ;(gw instanceof Primary ? gw.stop() : gw.stop('the gateway is shutting down')).then(
      () => {
        log.flush()
        process.exit(0)
      },
      () => process.exit(1),
    )
  }
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))
  const pg = gw.addresses.postgres
  process.stdout.write(banner(config, gw.addresses, dataDirExisted))
  if (opts.dev) {
    const demo = config.connections.find((c) => c.protocol === 'postgres')
    const adminToken = gw instanceof Primary ? readFileSync(join(config.dataDir, 'admin.token'), 'utf8').trim() : gw.adminToken
    process.stdout.write(`\nAdmin token (also in ${join(config.dataDir, 'admin.token')}):\n${adminToken}\n`)
    if (gw.addresses.api) process.stdout.write(`\nWeb console: http://${gw.addresses.api}/ (sign in with the admin token)\n`)
    if (demo && pg) {
      const [host, port] = [pg.slice(0, pg.lastIndexOf(':')), pg.slice(pg.lastIndexOf(':') + 1)]
      process.stdout.write(
        `\nConnect with psql:\n  PGPASSWORD="$(cat ${join(config.dataDir, 'admin.token')})" psql "host=${host} port=${port} dbname=${demo.name} user=admin sslmode=require"\n`,
      )
    } else if (!demo) {
      process.stdout.write('\nNo PostgreSQL answered on 127.0.0.1:5432, so no demo connection was added.\n')
    }
  }
}

/** `policy eval --sql`'s options. */
interface EvalSqlOptions {
  sql?: string
  connection?: string
  as?: string
  subject?: string
  group: string[]
  scope?: string
  searchPath: string
  config?: string
}

/**
 * `policy eval --sql`: the statement classified exactly as the PostgreSQL proxy classifies it,
 * on a configured connection, for a token's chain or a named principal, each statement decided.
 */
async function evalSql(sourceArg: string | undefined, o: EvalSqlOptions): Promise<unknown> {
  if (!o.connection) throw new UsageError('--sql needs --connection NAME')
  if ((o.as === undefined) === (o.subject === undefined)) throw new UsageError('--sql needs --as TOKEN or --subject ID (one of them)')
  const config = resolveConfig(o.config)
  const conn = config.connections.find((c) => c.name === o.connection)
  if (!conn) {
    throw new UsageError(
      `--connection: no connection named ${JSON.stringify(o.connection)} (configured: ${config.connections.map((c) => c.name).join(', ') || 'none'})`,
    )
  }
  if (conn.protocol !== 'postgres')
    throw new UsageError(`--connection ${conn.name} is ${conn.protocol}, not postgres: --sql needs a PostgreSQL connection`)
  let identity: Identity
  if (o.as !== undefined) {
    const me = await verifyLocally(config, o.as).catch((err: unknown) => {
      throw new FailedError(`--as: the token does not verify here (${err instanceof Error ? err.message : String(err)})`)
    })
    identity = {
      chain: me.chain.map((p) => ({ id: p.id, kind: p.kind as PrincipalKind, groups: p.groups, scope: p.scope })),
      tokenIds: me.token_ids,
      expiresAt: Math.floor(Date.parse(me.expires_at) / 1000),
    }
  } else {
    const subject = o.subject ?? ''
    const bad = validateSubject(subject) ?? o.group.map(validateGroup).find((x) => x !== null) ?? null
    if (bad) throw new UsageError(bad)
    const scope = o.scope ? o.scope.split(/\s+/).filter(Boolean) : []
    const problems = scopeCheckerFor(config, await loadPlugins(BUILTIN_PLUGINS, config.plugins))(scope)
    if (problems.length > 0) throw new UsageError(`--scope: ${problems.join('; ')}`)
    identity = {
      chain: [{ id: subject, kind: principalKind(subject), groups: o.group, scope }],
      tokenIds: [],
      expiresAt: Math.floor(Date.now() / 1000) + 3600,
    }
  }
  const source = sourceArg ?? config.policies ?? defaultPolicyDir()
  const engine = new PolicyEngine(await loadPolicySource(source))
  const user = typeof conn.settings.user === 'string' ? conn.settings.user : 'postgres'
  const facts = await explainSql(o.sql ?? '', { searchPath: o.searchPath, user })
  if (facts.parse_error !== null) throw new UsageError(`--sql: ${facts.parse_error}`)
  const now = new Date()
  const connection = { name: conn.name, protocol: conn.protocol, labels: conn.labels }
  return {
    policy: engine.version,
    connection,
    chain: identity.chain.map((p) => p.id),
    statements: facts.statements.map((st) => {
      const request = { identity, connection, action: st.action, command: st.command }
      const e = engine.explain(request, now)
      return {
        sql: st.command.sql,
        action: st.action,
        command: st.command,
        decision: e.decision,
        hops: e.hops,
        requirements: e.requirements,
        ...(e.error ? { error: e.error } : {}),
      }
    }),
  }
}

async function main(argv: string[]): Promise<void> {
  const program = new Command()
  program
    .name('gatehouse')
    .description('Policy-as-code access gateway')
    .version(packageVersion(), '-V, --version', 'print the version')
    .showHelpAfterError()
    // Usage errors throw (exit 2) instead of exiting 1 from inside commander: see cli/exit.ts.
    .exitOverride()
  const configOpt = (): Option => new Option('-c, --config <file>', 'configuration file (default ./gatehouse.yaml or $GATEHOUSE_CONFIG)')

  program
    .command('serve')
    .description('run the gateway in this process')
    .addOption(configOpt())
    .option('--dev', 'no config needed: ./gatehouse-data, a demo connection to 127.0.0.1:5432/test, prints an admin token and a psql line')
    .addOption(
      new Option(
        '--log-format <format>',
        'the log on stderr: json (one object a line), or pretty (default: pretty when stderr is a terminal)',
      ).choices(LOG_FORMATS),
    )
    .option('--workers <n>', 'worker processes sharing the listeners (default: workers: in the config, else 1)', (v: string) => {
      const n = Number(v)
      if (!Number.isInteger(n) || n < 1 || n > MAX_WORKERS)
        throw new UsageError(`--workers must be an integer between 1 and ${MAX_WORKERS}`)
      return n
    })
    .action(serve)

  const token = program.command('token').description('issue, delegate, exchange and revoke Gatehouse tokens')
  token
    .command('create')
    .description('issue a token; prints it alone on stdout')
    .addOption(configOpt())
    .requiredOption('--subject <id>', 'principal id, e.g. user:alice, service:etl, agent:summarizer')
    .option('--group <group>', 'a group of the principal (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--scope <scope>', 'space-separated scope entries, e.g. "connection:app sql.read"')
    .option('--ttl <duration>', 'lifetime, e.g. 15m, 1h (default tokens.default_ttl)')
    .option('--json', 'print {token, id, expires_at} as JSON')
    .action(async (o: { config?: string; subject: string; group: string[]; scope?: string; ttl?: string; json?: boolean }) => {
      const config = resolveConfig(o.config)
      const bad = validateSubject(o.subject) ?? o.group.map(validateGroup).find((x) => x !== null) ?? null
      if (bad) throw new UsageError(bad)
      const scope = o.scope ? o.scope.split(/\s+/).filter(Boolean) : []
      // Checked here too (the server checks again), so a typo is a usage error either way.
      const problems = scopeCheckerFor(config, await loadPlugins(BUILTIN_PLUGINS, config.plugins))(scope)
      if (problems.length > 0) throw new UsageError(`--scope: ${problems.join('; ')}`)
      const api = ApiClient.forServer(config)
      let r: { token: string; id: string; expires_at: string }
      if (api) {
        r = await api.call('POST', '/v1/tokens', { subject: o.subject, groups: o.group, scope, ...(o.ttl ? { ttl: o.ttl } : {}) })
      } else {
        const ttl = o.ttl ? parseDuration(o.ttl) : config.tokens.defaultTtlSeconds
        if (ttl === null || ttl <= 0) throw new UsageError('--ttl must be a duration like 15m or 1h')
        if (ttl > config.tokens.maxTtlSeconds) throw new UsageError(`--ttl exceeds tokens.max_ttl (${config.tokens.maxTtlSeconds}s)`)
        const store = new Store(config.dataDir)
        const issuer = new TokenIssuer(await loadOrCreateSigningKey(config.dataDir), issuerFor(config), {
          onIssued: (t) => store.recordIssued(t.id, t.subject, t.expiresAt),
        })
        const t = await issuer.issue({ subject: o.subject, groups: o.group, scope, ttlSeconds: ttl }).finally(() => store.close())
        const audit = await openLocalAuditLog(config)
        await audit.append({
          type: 'token.issued',
          session: null,
          chain: ['local:cli'],
          connection: null,
          token: { id: t.id, subject: o.subject, groups: o.group, scope },
        })
        audit.close()
        r = { token: t.token, id: t.id, expires_at: new Date(t.expiresAt * 1000).toISOString() }
      }
      out(o.json ? JSON.stringify(r) : r.token)
    })
  token
    .command('revoke')
    .description('revoke a token by id (its jti): it and every token delegated from it are refused; their live sessions end at once')
    .addOption(configOpt())
    .argument('<id>', 'token id (jti)')
    .option('--reason <text>', 'why, for the audit log')
    .option('--json', 'print {revoked, sessions_ended}')
    .action(async (id: string, o: { config?: string; reason?: string; json?: boolean }) => {
      const r = await revokeById(resolveConfig(o.config), id, o.reason)
      out(o.json ? JSON.stringify(r) : revokedLine(r))
    })

  // login, logout, whoami, token delegate, token exchange, service-account key …
  registerIdentityCommands(program, token)
  registerMcpCommand(program)

  const sessions = program.command('sessions').description('list and end sessions')
  sessions
    .command('list')
    .description('sessions, oldest first, ended ones included')
    .addOption(configOpt())
    .option('--active', 'live sessions only')
    .option('--limit <n>', 'only the last n', (v: string) => Number.parseInt(v, 10))
    .option('--json', 'JSON Lines')
    .action(async (o: { config?: string; active?: boolean; limit?: number; json?: boolean }) => {
      const config = resolveConfig(o.config)
      const api = ApiClient.forServer(config)
      type Row = {
        id: string
        connection: string
        protocol: string
        chain: string[]
        client: string
        started_at: string
        ended_at: string | null
        end_reason: string | null
        active: boolean
        worker?: number | null
      }
      let rows: Row[]
      if (api) {
        const qs = new URLSearchParams({ ...(o.active ? { active: 'true' } : {}), ...(o.limit ? { limit: String(o.limit) } : {}) })
        rows = (await api.call<{ sessions: Row[] }>('GET', `/v1/sessions?${qs}`)).sessions
      } else {
        const store = new Store(config.dataDir)
        rows = store.listSessions({ activeOnly: o.active === true, ...(o.limit ? { limit: o.limit } : {}) }).map((s) => ({
          id: s.id,
          connection: s.connection,
          protocol: s.protocol,
          chain: [...s.chain],
          client: s.client,
          started_at: s.startedAt,
          ended_at: s.endedAt,
          end_reason: s.endReason,
          active: false,
          worker: s.worker,
        }))
        store.close()
      }
      for (const r of rows) {
        if (o.json) out(JSON.stringify(r))
        else
          out(
            [
              r.id,
              r.active ? 'active' : 'ended ',
              r.started_at,
              r.chain.join('>'),
              r.connection,
              r.protocol,
              r.client,
              r.end_reason ?? '',
            ].join('  '),
          )
      }
    })
  sessions
    .command('kill')
    .description('end a live session (client and server sides)')
    .addOption(configOpt())
    .argument('<id>', 'session id')
    .option('--reason <text>', 'told to the client and recorded')
    .option('--json', 'print {killed}')
    .action(async (id: string, o: { config?: string; reason?: string; json?: boolean }) => {
      const config = resolveConfig(o.config)
      const api = ApiClient.forServer(config)
      if (!api)
        throw new ServerUnreachableError('no Gatehouse server is running for this configuration, so there is no live session to end')
      await api.call('POST', `/v1/sessions/${encodeURIComponent(id)}/kill`, o.reason ? { reason: o.reason } : {})
      out(o.json ? JSON.stringify({ killed: id }) : `killed ${id}`)
    })

  // audit list|verify|pubkey|export|sinks, sessions replay|export (cli/audit.ts)
  registerAuditCommands(program, sessions, {
    configOption: configOpt,
    resolveConfig,
    apiFor: (c) => ApiClient.forServer(c),
    noServer: (message) => new ServerUnreachableError(message),
  })
  registerApprovalCommands(program)

  // ssh add-key|list-keys|remove-key|host-key (cli/ssh.ts)
  registerSshCommands(program, configOpt)
  registerKubeCommands(program, configOpt)

  const policy = program
    .command('policy')
    .description('build, test and evaluate policy bundles (build, test and eval need no config and no server)')
  policy
    .command('build')
    .description('compile a policy directory into a bundle (policy.wasm + data.json); prints its version')
    .argument('<dir>', 'policy directory: *.rego, masking.yaml, approvals.yaml')
    .option('-o, --output <file>', 'where to write the bundle', 'bundle.tar.gz')
    .option('--json', 'print {version, file, bytes}')
    .action(async (dir: string, o: { output: string; json?: boolean }) => {
      const built = await buildBundle(dir)
      // Load it as the gateway would, so a bundle that builds but cannot load fails here.
      await instantiate(built.sources.dir, built.version, built.wasm, built.data, built.sources.regoText)
      writeFileSync(o.output, built.archive)
      process.stderr.write(`wrote ${o.output} (${built.archive.length} bytes)\n`)
      out(o.json ? JSON.stringify({ version: built.version, file: o.output, bytes: built.archive.length }) : built.version)
    })
  policy
    .command('test')
    .description('run the opa unit tests (*_test.rego) and the decision tables (*.cases.yaml) through the gateway engine')
    .argument('<dir>', 'policy directory')
    .option('-v, --verbose', 'print passing cases too')
    .addOption(
      new Option('--format <format>', 'text, json (one document) or junit (JUnit XML alone on stdout)')
        .choices(['text', 'json', 'junit'])
        .default('text'),
    )
    .option('--json', 'the same as --format json')
    .option('--run <pattern>', 'only cases and opa tests whose name matches this regular expression')
    .option('--no-explain', 'do not trace failing cases with opa')
    .action(async (dir: string, o: { verbose?: boolean; format: string; json?: boolean; run?: string; explain: boolean }) => {
      let run: RegExp | undefined
      if (o.run !== undefined) {
        try {
          run = new RegExp(o.run)
        } catch (err) {
          throw new UsageError(`--run: not a regular expression (${(err as Error).message})`)
        }
      }
      const report = await runPolicyTests(dir, { ...(run ? { run } : {}), explain: o.explain })
      const format = o.json ? 'json' : o.format
      if (format === 'json') out(formatJson(report))
      else if (format === 'junit') process.stdout.write(formatJunit(report))
      else for (const line of formatText(report, o.verbose === true)) out(line)
      // 2: the bundle does not build (nothing could be tested); 1: something tested failed.
      if (report.buildError !== null) process.exitCode = 2
      else if (!reportOk(report)) process.exitCode = 1
    })
  policy
    .command('eval')
    .description(
      'print the full decision for one input, with what every hop said; or, with --sql, for a real statement as the gateway classifies it',
    )
    .argument('[source]', "policy directory or bundle.tar.gz (default: the configuration's policies, else the default bundle)")
    .option('-i, --input <file>', 'the input (JSON or YAML, as a case input of *.cases.yaml; - for stdin)')
    .option('--sql <text>', 'a statement (or several): classified as the PostgreSQL proxy does, each decided')
    .option('--connection <name>', 'with --sql: the configured connection it runs on (its labels reach policy)')
    .option('--as <token>', "with --sql: the chain of this token (verified with the data directory's key)")
    .option('--subject <id>', 'with --sql: a one-hop chain for this principal instead of a token')
    .option('--group <group>', 'with --subject: a group (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--scope <scope>', 'with --subject: space-separated scope entries')
    .option('--search-path <path>', 'with --sql: the session search_path', '"$user", public')
    .addOption(configOpt())
    .action(async (sourceArg: string | undefined, o: EvalSqlOptions & { input?: string }) => {
      if ((o.input === undefined) === (o.sql === undefined)) throw new UsageError('give --input FILE or --sql TEXT (one of them)')
      if (o.input !== undefined) {
        if (sourceArg === undefined) throw new UsageError('--input needs the policy directory or bundle as its first argument')
        const text = readFileSync(o.input === '-' ? 0 : o.input, 'utf8')
        const p = new FileProblems(o.input === '-' ? '(stdin)' : o.input)
        const raw = parseYaml(text, p)
        const parsed = p.list.length === 0 ? parseRequest(p, raw, 'input', new Date()) : null
        if (!parsed) throw new UsageError(`invalid input:\n  ${p.list.join('\n  ')}`)
        const engine = new PolicyEngine(await loadPolicySource(sourceArg))
        const e = engine.explain(parsed.request, parsed.now)
        out(JSON.stringify({ ...e, inputs: buildInputs(parsed.request, parsed.now) }, null, 2))
        return
      }
      out(JSON.stringify(await evalSql(sourceArg, o), null, 2))
    })
  policy
    .command('explain')
    .description('print the facts the SQL classifier extracts, as a policy sees them in input.action and input.command')
    .argument('<sql>', 'one or more SQL statements')
    .option('--search-path <path>', 'the session search_path used to qualify bare table names', '"$user", public')
    .option('--user <name>', 'the server user "$user" stands for', 'postgres')
    .action(async (sql: string, o: { searchPath: string; user: string }) => {
      out(JSON.stringify(await explainSql(sql, { searchPath: o.searchPath, user: o.user }), null, 2))
    })
  policy
    .command('status')
    .description("the running gateway's policy: version, when it was loaded, where from, and why the last reload failed")
    .addOption(configOpt())
    .option('--json', 'print JSON')
    .action(async (o: { config?: string; json?: boolean }) => {
      const config = resolveConfig(o.config)
      const api = ApiClient.forServer(config)
      if (!api)
        throw new ServerUnreachableError(
          'no Gatehouse server is running for this configuration; policy status reports what a running gateway loaded',
        )
      const st = await api.call<PolicyStatus>('GET', '/v1/policy')
      if (o.json) out(JSON.stringify(st))
      else {
        out(`version:    ${st.version}`)
        out(`loaded at:  ${st.loaded_at ?? '-'}`)
        out(`source:     ${st.source ?? '-'}`)
        out(`last error: ${st.last_error ? st.last_error.replaceAll('\n', '\n            ') : 'none'}`)
      }
    })

  registerClassifyCommand(program) // classify CONNECTION (cli/classify.ts)
  registerAdminCommands(program, configOpt) // admin rotate (cli/admin.ts)

  const configCmd = program.command('config').description('the configuration file: its schema, and whether a file is valid')
  configCmd
    .command('schema')
    .description('print the JSON Schema of gatehouse.yaml (for editors: yaml-language-server, VS Code)')
    .action(async () => {
      const plugins = await loadPlugins(BUILTIN_PLUGINS, [])
      out(JSON.stringify(configJsonSchema(plugins.map((l) => l.plugin)), null, 2))
    })
  configCmd
    .command('check')
    .description('validate a configuration file (the schema, then each connection against its plugin) without starting anything')
    .addOption(configOpt())
    .option('--json', 'print {ok, file}')
    .action(async (o: { config?: string; json?: boolean }) => {
      const config = resolveConfig(o.config)
      await checkConfigAgainstPlugins(config, await loadPlugins(BUILTIN_PLUGINS, config.plugins))
      out(o.json ? JSON.stringify({ ok: true, file: config.file }) : `${config.file ?? '(built-in configuration)'}: valid`)
    })
  registerConnectorCommands(program, configOpt, packageVersion()) // connector, connectors list (cli/connector.ts)
  await program.parseAsync(argv)
}

main(process.argv).catch((err: unknown) => {
  const code = exitCodeFor(err)
  if (err instanceof CommanderError) {
    // commander has already printed the problem (or the help, or the version).
  } else if (isGatehouseError(err) || err instanceof UsageError || err instanceof FailedError || err instanceof ApiError) {
    process.stderr.write(`gatehouse: ${err.message}\n`)
  } else if (code === 3) {
    process.stderr.write('gatehouse: the server did not answer on its API address\n')
  } else {
    process.stderr.write(`gatehouse: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
  }
  process.exit(code === EXIT_OK ? EXIT_OK : code)
})
