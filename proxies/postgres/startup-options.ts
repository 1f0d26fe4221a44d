// The `options` startup parameter (psql's PGOPTIONS, drivers' `options`): command-line switches
// for the server process. PostgreSQL splits the string at unescaped whitespace, a backslash
// escaping the next character (pg_split_opts, src/backend/utils/init/postinit.c), then reads the
// words with getopt as process_postgres_switches does (src/backend/tcop/postgres.c): `-c
// name=value`, `-cname=value` and `--name=value` set a setting, the name split from the value at
// the first `=` and its dashes read as underscores (ParseLongOption, guc.c). The gateway reads
// the string the same way and accepts only those forms, for an allow-list of ordinary settings;
// each is then judged and audited as the SET it is (connection.ts). Upstream the gateway sends its
// own re-escaped string of exactly the settings it accepted, so the server sets what was judged.

import { GatehouseError } from '../kit/index.js'

/** Settings a client may set through `options` (lower case, as GUC names compare). */
export const STARTUP_OPTION_SETTINGS: ReadonlySet<string> = new Set([
  'search_path',
  'statement_timeout',
  'lock_timeout',
  'idle_in_transaction_session_timeout',
  'application_name',
  'datestyle',
  'timezone',
  'intervalstyle',
])

/** Settings that change how the server lexes SQL: the gateway's reading of a statement would no
 * longer be the server's. Never accepted at startup (client_encoding only as UTF8). */
const LEXING_SETTINGS: ReadonlySet<string> = new Set([
  'standard_conforming_strings',
  'client_encoding',
  'backslash_quote',
  'escape_string_warning',
])

export interface StartupSetting {
  /** Lower case, dashes read as underscores. */
  readonly name: string
  readonly value: string
}

/** Why an `options` string is refused; the message names the setting or word. */
export class StartupOptionError extends GatehouseError {
  constructor(message: string) {
    super('GH_ERR_PROTOCOL', message, { publicMessage: message })
  }
}

/** C isspace() in the C locale, which pg_split_opts uses. */
function isSpace(c: string): boolean {
  return c === ' ' || c === '\t' || c === '\n' || c === '\v' || c === '\f' || c === '\r'
}

/** pg_split_opts: words at unescaped whitespace; a backslash takes the next character literally. */
export function splitOptions(optstr: string): string[] {
  const words: string[] = []
  let i = 0
  const n = optstr.length
  while (i < n) {
    while (i < n && isSpace(optstr[i] as string)) i++
    if (i >= n) break
    let word = ''
    let escaped = false
    for (; i < n; i++) {
      const c = optstr[i] as string
      if (isSpace(c) && !escaped) break
      if (!escaped && c === '\\') escaped = true
      else {
        escaped = false
        word += c
      }
    }
    words.push(word)
  }
  return words
}

/** ParseLongOption: `name=value` split at the first `=`, dashes in the name read as underscores. */
function longOption(arg: string, form: string): StartupSetting {
  const eq = arg.indexOf('=')
  const name = (eq < 0 ? arg : arg.slice(0, eq)).replace(/-/g, '_')
  if (eq < 0) throw new StartupOptionError(`startup option ${form}${arg} requires a value`)
  return { name: name.toLowerCase(), value: arg.slice(eq + 1) }
}

/** Whether PostgreSQL reads this client_encoding as UTF8 (clean_encoding_name, then its aliases). */
function isUtf8(value: string): boolean {
  const clean = value.toLowerCase().replace(/[^a-z0-9]/g, '')
  return clean === 'utf8' || clean === 'unicode'
}

/**
 * The settings an `options` string sets, in order; throws StartupOptionError naming the first
 * switch or setting that is not accepted. `client_encoding=UTF8` is accepted and dropped (the
 * gateway always asks the server for UTF8).
 */
export function parseStartupOptions(optstr: string): StartupSetting[] {
  const words = splitOptions(optstr)
  const out: StartupSetting[] = []
  for (let i = 0; i < words.length; i++) {
    const w = words[i] as string
    let s: StartupSetting
    if (w === '--') {
      // getopt: the end of the switches; PostgreSQL refuses any word after it.
      if (i + 1 < words.length) throw new StartupOptionError(`invalid startup option argument "${words[i + 1]}"`)
      break
    } else if (w.startsWith('--')) s = longOption(w.slice(2), '--')
    else if (w === '-c') {
      const arg = words[++i]
      if (arg === undefined) throw new StartupOptionError('startup option -c requires an argument')
      s = longOption(arg, '-c ')
    } else if (w.startsWith('-c')) s = longOption(w.slice(2), '-c ')
    else throw new StartupOptionError(`startup option "${w}" is not allowed through Gatehouse: only -c name=value and --name=value`)
    if (LEXING_SETTINGS.has(s.name)) {
      if (s.name === 'client_encoding' && isUtf8(s.value)) continue
      throw new StartupOptionError(`setting "${s.name}" changes how the server reads SQL and cannot be set through Gatehouse`)
    }
    if (!STARTUP_OPTION_SETTINGS.has(s.name)) {
      throw new StartupOptionError(
        `setting "${s.name}" is not allowed in startup options through Gatehouse (allowed: ${[...STARTUP_OPTION_SETTINGS].join(', ')})`,
      )
    }
    out.push(s)
  }
  return out
}

/** The `options` string for the server: `-c name=value` per setting, escaped for pg_split_opts. */
export function encodeStartupOptions(settings: readonly StartupSetting[]): string {
  return settings.map((s) => `-c ${`${s.name}=${s.value}`.replace(/[\\ \t\n\v\f\r]/g, (c) => `\\${c}`)}`).join(' ')
}

/** The SET statement a startup setting is judged and audited as (a standard string literal). */
export function setStatement(s: StartupSetting): string {
  return `SET ${s.name} = '${s.value.replace(/'/g, "''")}'`
}
