// The per-hop policy input, assembled as JSON text: the document of buildInputs (decide.ts), key for
// key, from pieces cached per principal, identity, connection and second (these objects are
// immutable: a session's identity never changes). The text is also the hop cache's key (active.ts);
// for a bundle that cannot read `input.command.sql` the key leaves the statement text out.

import { decisionTime } from '../decide.js'
import type { DecisionRequest, Identity, Principal } from '../types.js'

const principalJson = new WeakMap<Principal, string>()
const chainJson = new WeakMap<Identity, string>()
const connectionJson = new WeakMap<object, string>()
let timeUnix = -1
let timeJson = ''

function cachedJson<K extends object>(map: WeakMap<K, string>, key: K, make: () => unknown): string {
  let s = map.get(key)
  if (s === undefined) {
    s = JSON.stringify(make())
    map.set(key, s)
  }
  return s
}

const APPROVAL_FALSE = '{"granted":false}'

/**
 * Everything after the principal, `,"chain":…,"time":…}`. For a bundle that cannot read
 * `command.sql` (`withoutSql`), `key` and `input` leave the statement text out and `sql` holds it;
 * otherwise `key` and `input` are the text itself and `sql` is null.
 */
export interface RestOfInput {
  readonly key: string
  readonly sql: string | null
  /** The input after the principal for the policy itself: `key` when `sql` is null, otherwise the
   * same document without `command.sql` (valid JSON, unlike `key`, which marks the omission). */
  readonly input: string
}

export function restOfInput(req: DecisionRequest, now: Date | null, withoutSql: boolean): RestOfInput {
  let t: string
  if (now === null) {
    const ms = Date.now()
    const unix = Math.floor(ms / 1000)
    if (unix !== timeUnix) {
      timeJson = JSON.stringify(decisionTime(new Date(ms)))
      timeUnix = unix
    }
    t = timeJson
  } else t = JSON.stringify(decisionTime(now))
  const chain = cachedJson(chainJson, req.identity, () => req.identity.chain.map((p) => ({ id: p.id, kind: p.kind, groups: p.groups })))
  const conn = cachedJson(connectionJson, req.connection, () => req.connection)
  const approval = req.approval === undefined ? APPROVAL_FALSE : JSON.stringify(req.approval)
  const head = `,"chain":${chain},"connection":${conn},"action":${JSON.stringify(req.action)},"command":`
  const tail = `,"approval":${approval},"time":${t}}`
  const cmd = req.command
  if (!withoutSql || typeof cmd.sql !== 'string') {
    const command = JSON.stringify(cmd)
    const key = `${head}${command}${tail}`
    return { key, sql: null, input: key }
  }
  const { sql, ...rest } = cmd
  const input = `${head}${JSON.stringify(rest)}${tail}`
  // The key marks the missing member, so it can never equal the text of an input that has it.
  return { key: `${input}\u0000nosql`, sql, input }
}

export function hopInput(p: Principal, rest: string): string {
  return `{"principal":${cachedJson(principalJson, p, () => p)}${rest}`
}
