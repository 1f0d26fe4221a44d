// The environment is part of the command: a variable a caller sets (OpenSSH `SendEnv`/`SetEnv`)
// reaches the target's shell and every program it starts, so it can change what a judged argv
// does (`BASH_ENV`, `LD_PRELOAD`, `PATH`, a payload evaluated through an array subscript or a
// prompt expansion). Env requests are refused unless the connection allow-lists the name
// (`env: [LANG, LC_*]`), the name is not one that changes how programs load or shells start, and
// the value is plain text; accepted variables go to policy in `input.command.env`. A PTY's
// terminal type is checked as a terminal name.

/** Variables accepted per channel; more are refused. */
export const MAX_ENV = 32
/** Longest value accepted. */
export const MAX_ENV_VALUE = 256
/** Names kept for the audit of refused requests per channel. */
const MAX_REFUSED_NAMES = 32

const NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/
/** A plain value: no shell syntax, no whitespace, no control characters. */
const VALUE = /^[A-Za-z0-9_.,:@%+/=-]*$/
/**
 * Values glibc reads as names of files to load get their own syntax. A locale (`LANG`, `LC_*`)
 * holding a `/` is a path glibc loads locale data from, so a locale is a name only
 * (`en_US.UTF-8`, `de_DE@euro`, `C`); `LANGUAGE` is a `:` list of them. A time zone may name a
 * zoneinfo file (`Europe/Berlin`) or be a POSIX rule (`CET-1CEST,M3.5.0,M10.5.0/3`), but an
 * absolute path, a leading `:` (a file, by glibc's reading) or a `..` would load a file elsewhere.
 */
export const LOCALE_NAME = /^[A-Za-z0-9_.@-]{1,64}$/
const LANGUAGE_LIST = /^[A-Za-z0-9_.@-]{1,64}(:[A-Za-z0-9_.@-]{1,64}){0,15}$/
const TZ_VALUE = /^[A-Za-z0-9_+,.-][A-Za-z0-9_+,.:/-]{0,63}$/

/** Whether a value has the syntax its name asks for (TERM is checked as a terminal name). */
export function valueFits(name: string, value: string): boolean {
  if (name === 'LANG' || name.startsWith('LC_')) return LOCALE_NAME.test(value)
  if (name === 'LANGUAGE') return LANGUAGE_LIST.test(value)
  if (name === 'TZ') return TZ_VALUE.test(value) && !value.includes('..')
  if (name === 'TERM') return TERM_NAME.test(value)
  return true
}

/** A terminal name as terminfo spells it (`xterm-256color`, `screen.xterm`, `vt100+fnkeys`). */
export const TERM_NAME = /^[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}$/
/** Never passed, whatever the allow-list says: they change how programs load, shells start or commands are found. */
const FORBIDDEN =
  /^(LD_.*|BASH_FUNC_.*|BASH_ENV|ENV|SHELLOPTS|BASHOPTS|IFS|PS[0-9]|PROMPT_COMMAND|CDPATH|GLOBIGNORE|PATH|HOME|SHELL|USER|LOGNAME|MAIL|TMPDIR|HOSTALIASES|RESOLV_.*|LOCPATH|NLSPATH|GCONV_PATH|GLIBC_TUNABLES|MALLOC_.*|PYTHON.*|PERL.*|RUBY.*|NODE_.*|JAVA_TOOL_OPTIONS|_JAVA_OPTIONS|GIT_.*|SSH_.*|GATEHOUSE_.*|TZDIR|TERMINFO|TERMINFO_DIRS|TERMCAP|DYLD_.*|LESSOPEN|LESSCLOSE|PAGER|MANPAGER|EDITOR|VISUAL|ZDOTDIR|INPUTRC|OPENSSL_CONF|OPENSSL_ENGINES|RES_OPTIONS|LOCALDOMAIN|LUA_INIT.*)$/

/** Checks a connection's `env` setting; returns the problems (empty: fine). */
export function envSettingProblems(v: unknown): string[] {
  if (v === undefined) return []
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) return ['env: must be a list of variable names (LANG, LC_*)']
  const problems: string[] = []
  for (const p of v as string[]) {
    const name = p.endsWith('*') ? p.slice(0, -1) : p
    if (!/^[A-Za-z_][A-Za-z0-9_]{0,63}$/.test(name)) problems.push(`env: ${JSON.stringify(p)} is not a variable name or a NAME_* prefix`)
    else if (FORBIDDEN.test(p.endsWith('*') ? `${name}X` : name) || FORBIDDEN.test(name)) {
      problems.push(`env: ${p} is never passed to a target (it changes how programs load or shells start)`)
    }
  }
  return problems
}

/** Whether a pattern list (`LANG`, `LC_*`) names `name`. */
function listed(patterns: readonly string[], name: string): boolean {
  return patterns.some((p) => (p.endsWith('*') ? name.startsWith(p.slice(0, -1)) : p === name))
}

/** The env requests of one session channel: what was accepted (for the target and policy) and what was refused. */
export class EnvRequests {
  readonly accepted: Record<string, string> = {}
  readonly refused: string[] = []
  private count = 0

  constructor(private readonly allowed: readonly string[]) {}

  /** From the connection's `env` setting (anything but a list of names allows none). */
  static fromSetting(v: unknown): EnvRequests {
    return new EnvRequests(Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [])
  }

  /** Decides one env request; true when it is accepted. */
  offer(name: string, value: string): boolean {
    const ok =
      this.count < MAX_ENV &&
      NAME.test(name) &&
      !FORBIDDEN.test(name) &&
      listed(this.allowed, name) &&
      value.length <= MAX_ENV_VALUE &&
      VALUE.test(value) &&
      valueFits(name, value) &&
      !(name in this.accepted)
    if (ok) {
      this.accepted[name] = value
      this.count++
    } else if (this.refused.length < MAX_REFUSED_NAMES) {
      // Only a name is kept, and only one that is a name: a refused value is never recorded.
      this.refused.push(NAME.test(name) ? name : '(not a variable name)')
    }
    return ok
  }

  /** The fields for policy (`env`) — and the audit's: values only when policy allowed the command. */
  forPolicy(): { env: Record<string, string>; env_refused?: string[] } {
    return { env: { ...this.accepted }, ...(this.refused.length > 0 ? { env_refused: [...this.refused] } : {}) }
  }
}

/** The audit form of a command's env: names always, values only when policy allowed the command. */
export function auditEnv(fields: Record<string, unknown>, allowed: boolean): Record<string, unknown> {
  const env = fields.env
  if (allowed || env === undefined || env === null || typeof env !== 'object') return fields
  const { env: _values, ...rest } = fields
  return { ...rest, env_names: Object.keys(env) }
}
