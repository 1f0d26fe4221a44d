// The MCP tools. Each call is decided as `mcp.call` (command: tool and arguments) for every hop of
// the caller's chain and recorded as an `mcp.call` audit event before anything runs (fail closed);
// the work itself then goes through the gateway's own listeners (loopback.ts) or its own API
// (token exchange, approvals), so every rule that applies to a person's psql applies here too.

import type { CallToolResult, Tool } from '@modelcontextprotocol/sdk/types.js'
import { LITERAL_MARK, redactSql, sqlShape } from '../postgres/public.js'
import type { MaskObligation } from '../kit/index.js'
import type { ConnectionRef, Decision, Identity, PluginContext } from '../types.js'

/** What the MCP plugin asks for: the API listener and the rest of the gateway. */
export type McpContext = PluginContext<'gateway' | 'httpMounts'>
import { gatewayHostKeyFile, LoopbackSqlError, type LoopbackPg, sshExec } from './loopback.js'
import { errorResult, okResult, parseRefusal, refusalOfDecision, refusalResult } from './results.js'
import { isRecord } from '../kit/index.js'

/** Rows a `query` returns when the agent does not say (and the most it may ask for). */
export const DEFAULT_MAX_ROWS = 100
export const MAX_ROWS_LIMIT = 1000
/** Bounds on what an agent may send (the API's body limit caps the whole request at 64 KiB). */
const MAX_SQL_CHARS = 32 * 1024
const MAX_COMMAND_CHARS = 8 * 1024
const MAX_DESCRIBE_COLUMNS = 5000

const GRANT_TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange'
const TOKEN_TYPE_ACCESS = 'urn:ietf:params:oauth:token-type:access_token'

/** Everything a tool call needs: the caller (as the HTTP request proved it) and its MCP session. */
export interface CallContext {
  readonly ctx: McpContext
  readonly identity: Identity
  readonly token: string
  readonly session: string
  pg(connection: string): LoopbackPg
}

interface ToolSpec {
  readonly tool: Tool
  /** The protocol of the connection the tool works on; null for tools that work on none. */
  readonly protocol: 'postgres' | 'ssh' | null
}

const connectionProp = { type: 'string', description: 'A connection name, as list_connections returns it' } as const

export const TOOLS: readonly ToolSpec[] = [
  {
    protocol: null,
    tool: {
      name: 'list_connections',
      description: 'The connections you may use (name, protocol, labels).',
      inputSchema: { type: 'object', properties: {}, additionalProperties: false },
      annotations: { readOnlyHint: true },
    },
  },
  {
    protocol: 'postgres',
    tool: {
      name: 'describe_connection',
      description: 'Tables and columns of a PostgreSQL connection; columns whose values you will see masked are marked classified.',
      inputSchema: { type: 'object', properties: { connection: connectionProp }, required: ['connection'], additionalProperties: false },
      annotations: { readOnlyHint: true },
    },
  },
  {
    protocol: 'postgres',
    tool: {
      name: 'query',
      description:
        "Runs SQL on a PostgreSQL connection under your chain's policy (the same decision, masking, approvals and audit as psql). Returns column names and up to max_rows rows starting at offset; paging re-runs the statement, so page only reads with a stable ORDER BY. A refusal says which rule and hop refused it; a statement held for approval returns a request id for approval_status.",
      inputSchema: {
        type: 'object',
        properties: {
          connection: connectionProp,
          sql: { type: 'string', description: 'The SQL text' },
          max_rows: { type: 'integer', minimum: 1, maximum: MAX_ROWS_LIMIT, description: `Rows to return (default ${DEFAULT_MAX_ROWS})` },
          offset: { type: 'integer', minimum: 0, description: 'Rows of the result to skip (default 0)' },
          reason: { type: 'string', description: 'Why you run it: shown to approvers when the statement needs an approval' },
        },
        required: ['connection', 'sql'],
        additionalProperties: false,
      },
    },
  },
  {
    protocol: 'ssh',
    tool: {
      name: 'exec',
      description:
        "Runs one command line on an SSH connection under your chain's policy; returns stdout, stderr and the exit status. Write plain words joined by |, &&, || or ; (quote with '…'): the words run exactly as written, with no $ expansion, globs, redirections or subshells — lines using those are opaque, and policies usually refuse them for agents. A refusal or a hold comes back as status denied/held with the rule and hop.",
      inputSchema: {
        type: 'object',
        properties: { connection: connectionProp, command: { type: 'string' } },
        required: ['connection', 'command'],
        additionalProperties: false,
      },
    },
  },
  {
    protocol: null,
    tool: {
      name: 'delegate',
      description:
        'Issues a token for a sub-agent acting for you: its scope can only narrow yours (connection:<name>, sql.read, sql.write, …) and it expires no later than your own. Give the token to the sub-agent; it is not shown again.',
      inputSchema: {
        type: 'object',
        properties: {
          agent: { type: 'string', description: "The sub-agent's name: the child principal is agent:<name>" },
          scope: {
            description: 'Scope entries, as a space-separated string or a list (empty: everything you hold)',
            anyOf: [{ type: 'string' }, { type: 'array', items: { type: 'string' } }],
          },
          ttl: { type: 'string', description: "Lifetime such as 10m or 1h (default: the gateway's delegation default)" },
        },
        required: ['agent'],
        additionalProperties: false,
      },
    },
  },
  {
    protocol: null,
    tool: {
      name: 'approval_status',
      description: 'The state of an approval request (pending, approved, denied, expired, used) and what to do next.',
      inputSchema: {
        type: 'object',
        properties: { request_id: { type: 'string' } },
        required: ['request_id'],
        additionalProperties: false,
      },
      annotations: { readOnlyHint: true },
    },
  },
]

const BY_NAME = new Map(TOOLS.map((t) => [t.tool.name, t]))

/** The connections a tool could work on, by protocol; every connection for connection-free tools. */
function candidates(ctx: McpContext, spec: ToolSpec): ConnectionRef[] {
  const all = ctx.gateway.connections()
  return spec.protocol ? all.filter((c) => c.protocol === spec.protocol) : [...all]
}

/** True when the plugin can serve the tool at all (a listener of its protocol is running). */
function served(ctx: McpContext, spec: ToolSpec): boolean {
  return spec.protocol === null || ctx.gateway.listener(spec.protocol) !== null
}

/**
 * The decision for calling `spec` on `connection`; for a tool that works on no connection, the
 * first connection whose decision allows it (else the first refusal). `mcp.call` is a front door:
 * the connection part of each hop's scope applies, its action part does not.
 */
async function decideCall(
  ctx: McpContext,
  identity: Identity,
  spec: ToolSpec,
  connection: ConnectionRef | null,
  args: Record<string, unknown>,
): Promise<{ decision: Decision; connection: ConnectionRef } | null> {
  const list = connection ? [connection] : candidates(ctx, spec)
  let first: { decision: Decision; connection: ConnectionRef } | null = null
  for (const c of list) {
    const decision = await ctx.decide({ identity, connection: c, action: 'mcp.call', command: { tool: spec.tool.name, arguments: args } })
    if (decision.effect === 'allow') return { decision, connection: c }
    first ??= { decision, connection: c }
  }
  return first
}

/** The tools this chain may call: those whose `mcp.call` some connection allows. */
export async function visibleTools(ctx: McpContext, identity: Identity): Promise<Tool[]> {
  const out: Tool[] = []
  for (const spec of TOOLS) {
    if (!served(ctx, spec)) continue
    try {
      const d = await decideCall(ctx, identity, spec, null, {})
      if (d?.decision.effect === 'allow') out.push(spec.tool)
    } catch {
      // An engine failure hides the tool (fail closed); the call itself would be refused too.
    }
  }
  return out
}

/** The arguments as the audit log and the policy see them: SQL literals replaced by `?`. */
export function auditArguments(args: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(args)) {
    if (k === 'sql' && typeof v === 'string') {
      // Values in SQL text may be classified (WHERE email = '…') or passwords: the call event keeps
      // the statement's shape; the statement event of the PostgreSQL path has it as psql's would.
      const shape = sqlShape(v)
      out[k] = shape === null ? `[${v.length} characters; see the statement event]` : shape.replaceAll(LITERAL_MARK, '?')
    } else if (k === 'reason' && typeof v === 'string') out[k] = redactSql(v).slice(0, 500)
    else if (typeof v === 'string') out[k] = redactSql(v).slice(0, 2000)
    else out[k] = v
  }
  return out
}

class BadArguments extends Error {}

function str(args: Record<string, unknown>, key: string, max: number, required: true): string
function str(args: Record<string, unknown>, key: string, max: number, required: false): string | undefined
function str(args: Record<string, unknown>, key: string, max: number, required: boolean): string | undefined {
  const v = args[key]
  if (v === undefined && !required) return undefined
  if (typeof v !== 'string' || v.length === 0) throw new BadArguments(`${key} must be a non-empty string`)
  if (v.length > max) throw new BadArguments(`${key} is longer than ${max} characters`)
  return v
}

function int(args: Record<string, unknown>, key: string, dflt: number, min: number, max: number): number {
  const v = args[key]
  if (v === undefined) return dflt
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
    throw new BadArguments(`${key} must be an integer from ${min} to ${max}`)
  return v
}

function checkKnown(spec: ToolSpec, args: Record<string, unknown>): void {
  const schema = spec.tool.inputSchema
  const known = Object.keys(schema.properties ?? {})
  for (const k of Object.keys(args))
    if (!known.includes(k)) throw new BadArguments(`unknown argument ${JSON.stringify(k)} (allowed: ${known.join(', ') || 'none'})`)
  for (const k of schema.required ?? []) if (args[k] === undefined) throw new BadArguments(`${k} is required`)
}

/** Runs one tool call: validate, decide `mcp.call`, audit, then do the work. */
export async function callTool(cc: CallContext, name: string, rawArgs: unknown): Promise<CallToolResult> {
  const spec = BY_NAME.get(name)
  if (!spec || !served(cc.ctx, spec)) return errorResult(`no tool named ${JSON.stringify(name)}`)
  const args = rawArgs === undefined ? {} : rawArgs
  if (!isRecord(args)) return errorResult('the arguments must be an object')
  const chain = cc.identity.chain.map((p) => p.id)
  const recorded = auditArguments(args)
  let connection: ConnectionRef | null = null
  try {
    checkKnown(spec, args)
    if (spec.protocol) {
      const wanted = str(args, 'connection', 128, true)
      connection = cc.ctx.gateway.connections().find((c) => c.name === wanted && c.protocol === spec.protocol) ?? null
      if (!connection)
        throw new BadArguments(`no ${spec.protocol} connection named ${JSON.stringify(wanted)} (list_connections shows yours)`)
    }
  } catch (err) {
    if (!(err instanceof BadArguments)) throw err
    await cc.ctx.audit({
      type: 'mcp.call',
      session: cc.session,
      chain,
      connection: null,
      tool: name,
      arguments: recorded,
      decision: 'invalid',
      reason: err.message,
    })
    return errorResult(`invalid arguments for ${name}: ${err.message}`)
  }

  let decided: Awaited<ReturnType<typeof decideCall>>
  try {
    decided = await decideCall(cc.ctx, cc.identity, spec, connection, recorded)
  } catch {
    decided = null
  }
  const decision: Decision = decided?.decision ?? {
    effect: 'deny',
    rules: [],
    reason: connection || candidates(cc.ctx, spec).length > 0 ? 'the policy could not be evaluated' : 'no connection is configured',
    reasons: [],
    policy: 'gatehouse',
  }
  // Durable before anything runs: a call the audit log cannot record does not happen.
  await cc.ctx.audit({
    type: 'mcp.call',
    session: cc.session,
    chain,
    connection: connection?.name ?? null,
    tool: name,
    arguments: recorded,
    decision: decision.effect,
    rules: decision.rules,
    policy_version: decision.policy,
    ...(decision.effect === 'deny' ? { reason: decision.reason, reasons: decision.reasons } : {}),
  })
  if (decision.effect !== 'allow') return refusalResult(refusalOfDecision(decision), { tool: name })

  try {
    switch (name) {
      case 'list_connections':
        return await listConnections(cc)
      case 'describe_connection':
        return await describeConnection(cc, connection as ConnectionRef)
      case 'query':
        return await runQuery(cc, connection as ConnectionRef, args)
      case 'exec':
        return await runExec(cc, connection as ConnectionRef, args)
      case 'delegate':
        return await delegate(cc, args)
      case 'approval_status':
        return await approvalStatus(cc, args)
      default:
        return errorResult(`no tool named ${JSON.stringify(name)}`)
    }
  } catch (err) {
    if (err instanceof BadArguments) return errorResult(`invalid arguments for ${name}: ${err.message}`)
    if (err instanceof LoopbackSqlError) return sqlFailure(err)
    cc.ctx.log.warn({ tool: name, err: String(err) }, 'mcp tool failed')
    return errorResult(`${name} failed: ${err instanceof Error ? err.message : String(err)}`)
  }
}

function sqlFailure(err: LoopbackSqlError): CallToolResult {
  const refusal = parseRefusal(err.message)
  if (refusal) return refusalResult(refusal, { sqlstate: err.sqlstate })
  // Authentication refusals of the loopback session (revoked, expired) read like the gateway's.
  return errorResult(err.message, {
    ...(err.sqlstate ? { sqlstate: err.sqlstate } : {}),
    ...(err.detail ? { detail: err.detail } : {}),
    ...(err.hint ? { hint: err.hint } : {}),
  })
}

async function listConnections(cc: CallContext): Promise<CallToolResult> {
  const out: ConnectionRef[] = []
  for (const c of cc.ctx.gateway.connections()) {
    if (cc.ctx.gateway.listener(c.protocol) === null) continue
    const d = await cc.ctx.decide({ identity: cc.identity, connection: c, action: 'connect', command: {} }).catch(() => null)
    if (d?.effect === 'allow') out.push({ name: c.name, protocol: c.protocol, labels: c.labels })
  }
  return okResult(`${out.length} connection(s)`, { connections: out })
}

/** `pattern` against `schema.table.column`, from the right; `*` is one name segment. */
export function columnMatches(pattern: string, schema: string, table: string, column: string): boolean {
  const p = pattern.split('.')
  const n = [schema, table, column]
  if (p.length === 0 || p.length > 3) return false
  for (let i = 1; i <= p.length; i++) {
    const seg = p[p.length - i]
    const name = n[n.length - i]
    if (seg !== '*' && seg !== name) return false
  }
  return true
}

const CATALOG_SQL = `SELECT c.table_schema, c.table_name, c.column_name, c.data_type, c.is_nullable
FROM information_schema.columns c
WHERE c.table_schema NOT IN ('pg_catalog', 'information_schema') AND c.table_schema NOT LIKE 'pg_toast%'
ORDER BY c.table_schema, c.table_name, c.ordinal_position`

async function describeConnection(cc: CallContext, connection: ConnectionRef): Promise<CallToolResult> {
  const r = await cc.pg(connection.name).query(CATALOG_SQL, { maxRows: MAX_DESCRIBE_COLUMNS, offset: 0 })
  const tables = new Map<string, { schema: string; table: string; columns: Record<string, unknown>[] }>()
  for (const row of r.rows) {
    const [schema, table, column, type, nullable] = row.map((v) => String(v))
    if (!schema || !table || !column) continue
    const key = `${schema}.${table}`
    let t = tables.get(key)
    if (!t) {
      t = { schema, table, columns: [] }
      tables.set(key, t)
    }
    t.columns.push({ name: column, type, nullable: nullable === 'YES' })
  }
  // What a read of these tables would be masked with, for this chain: the engine's own answer.
  let masks: readonly MaskObligation[] = []
  const d = await cc.ctx
    .decide({
      identity: cc.identity,
      connection,
      action: 'sql.read',
      command: { sql: '', kind: 'select', tables: [...tables.keys()], write_tables: [], functions: [], has_where: false },
    })
    .catch(() => null)
  if (d?.effect === 'allow') masks = d.mask.filter((m) => m.column !== '')
  let classified = 0
  for (const t of tables.values()) {
    for (const col of t.columns) {
      const rules = masks.filter((m) => columnMatches(m.column, t.schema, t.table, String(col.name)))
      if (rules.length > 0) {
        classified++
        col.classified = true
        col.masked_by = [...new Set(rules.map((m) => m.rule))]
        col.strategy = rules[0]?.strategy
      }
    }
  }
  return okResult(`${tables.size} table(s), ${classified} classified column(s)`, {
    connection: connection.name,
    tables: [...tables.values()],
    ...(r.truncated ? { truncated: true } : {}),
  })
}

async function runQuery(cc: CallContext, connection: ConnectionRef, args: Record<string, unknown>): Promise<CallToolResult> {
  const sql = str(args, 'sql', MAX_SQL_CHARS, true)
  const maxRows = int(args, 'max_rows', DEFAULT_MAX_ROWS, 1, MAX_ROWS_LIMIT)
  const offset = int(args, 'offset', 0, 0, Number.MAX_SAFE_INTEGER)
  const reason = str(args, 'reason', 500, false)
  const r = await cc.pg(connection.name).query(sql, { maxRows, offset, ...(reason !== undefined ? { reason } : {}) })
  const next = offset + r.rows.length < r.rowCount ? offset + r.rows.length : null
  const summary =
    r.affected !== null
      ? `${r.command ?? 'OK'}: ${r.affected} row(s) affected`
      : `${r.rows.length} of ${r.rowCount} row(s) from offset ${offset}`
  return okResult(summary, {
    connection: connection.name,
    command: r.command,
    columns: r.columns,
    rows: r.rows,
    row_count: r.rowCount,
    ...(r.affected !== null ? { affected: r.affected } : {}),
    offset,
    next_offset: next,
    truncated: r.truncated,
  })
}

async function runExec(cc: CallContext, connection: ConnectionRef, args: Record<string, unknown>): Promise<CallToolResult> {
  const command = str(args, 'command', MAX_COMMAND_CHARS, true)
  const address = cc.ctx.gateway.listener('ssh')
  if (!address) return errorResult('this gateway has no SSH listener (listen.ssh)')
  try {
    const r = await sshExec(address, gatewayHostKeyFile(cc.ctx.stateDir), connection.name, cc.token, command)
    // Structure comes from the gateway's own verdict, never from what the target printed.
    if (r.gateway?.status === 'error') return errorResult(`exec on ${connection.name} failed: ${r.gateway.message}`)
    if (r.gateway) return refusalResult(r.gateway, { exit_code: r.exitCode })
    return okResult(`exit status ${r.exitCode ?? r.signal ?? 'unknown'}`, {
      connection: connection.name,
      exit_code: r.exitCode,
      signal: r.signal,
      stdout: r.stdout,
      stderr: r.stderr,
      truncated: r.truncated,
    })
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err)
    const refusal = parseRefusal(message)
    if (refusal) return refusalResult(refusal)
    return errorResult(`exec on ${connection.name} failed: ${message}`)
  }
}

function apiBase(ctx: McpContext): string {
  const a = ctx.gateway.listener('api')
  if (!a) throw new Error('the API listener is not running')
  const host = a.host === '0.0.0.0' ? '127.0.0.1' : a.host === '::' ? '::1' : a.host
  return `http://${host.includes(':') ? `[${host}]` : host}:${a.port}`
}

/** `gatehouse token delegate` through the gateway's own RFC 8693 endpoint: the same rules, the same audit. */
async function delegate(cc: CallContext, args: Record<string, unknown>): Promise<CallToolResult> {
  const agent = str(args, 'agent', 80, true)
  const ttl = str(args, 'ttl', 16, false)
  const rawScope = args.scope
  let scope: string
  if (rawScope === undefined) scope = ''
  else if (typeof rawScope === 'string') scope = rawScope
  else if (Array.isArray(rawScope) && rawScope.every((s): s is string => typeof s === 'string')) scope = rawScope.join(' ')
  else throw new BadArguments('scope must be a string or a list of strings')
  if (scope.length > 2048) throw new BadArguments('scope is longer than 2048 characters')
  const form = new URLSearchParams({
    grant_type: GRANT_TOKEN_EXCHANGE,
    subject_token: cc.token,
    subject_token_type: TOKEN_TYPE_ACCESS,
    agent,
    ...(scope ? { scope } : {}),
    ...(ttl ? { ttl } : {}),
  })
  const res = await fetch(`${apiBase(cc.ctx)}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: form.toString(),
  })
  const body: unknown = await res.json().catch(() => null)
  if (!res.ok || !isRecord(body) || typeof body.access_token !== 'string') {
    const why = isRecord(body) && typeof body.error_description === 'string' ? body.error_description : `HTTP ${res.status}`
    const code = isRecord(body) && typeof body.error === 'string' ? body.error : 'error'
    return refusalResult(
      {
        status: 'denied',
        rule: 'delegation',
        hop: cc.identity.chain[cc.identity.chain.length - 1]?.id ?? null,
        reason: why,
        message: `gatehouse: delegation refused (${code}): ${why}`,
      },
      { oauth_error: code },
    )
  }
  return okResult(`token for agent:${agent} (chain ${Array.isArray(body.chain) ? body.chain.join(' → ') : ''})`, {
    token: body.access_token,
    token_id: body.token_id,
    chain: body.chain,
    scope: body.scope,
    expires_in: body.expires_in,
    audience: body.audience,
  })
}

const REQUEST_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/

async function approvalStatus(cc: CallContext, args: Record<string, unknown>): Promise<CallToolResult> {
  const id = str(args, 'request_id', 64, true)
  if (!REQUEST_ID_RE.test(id)) throw new BadArguments('request_id is not a request id')
  const res = await fetch(`${apiBase(cc.ctx)}/v1/approvals/${encodeURIComponent(id)}`, { headers: { authorization: `Bearer ${cc.token}` } })
  const body: unknown = await res.json().catch(() => null)
  if (!res.ok || !isRecord(body)) {
    const why = isRecord(body) && typeof body.error === 'string' ? body.error : `HTTP ${res.status}`
    return errorResult(`approval request ${id}: ${why}`)
  }
  const status = typeof body.status === 'string' ? body.status : 'unknown'
  const next: Record<string, string> = {
    pending: 'Wait, then call approval_status again; the reviewers named in requirements decide.',
    approved: 'Approved: call the same tool again with the same arguments to run it.',
    denied: 'Denied by a reviewer: do not retry it; change the request or ask a person.',
    expired: 'Expired without a decision: run the statement again to open a new request.',
    used: 'The approval was used; a new run needs a new approval.',
  }
  return okResult(`approval request ${id}: ${status}`, {
    request: {
      id: body.id,
      status,
      connection: body.connection,
      action: body.action,
      statement: body.statement,
      reason: body.reason,
      requirements: body.requirements,
      votes: body.votes,
      expires_at: body.expires_at,
      grant: body.grant,
    },
    what_you_can_do: next[status] ?? 'Call approval_status again later.',
  })
}
