// What policy sees of an SSH exec, and what is sent to the target. A line made only of plain
// words (no expansion of any kind, no globs, no redirections, no comments, no subshells) joined by
// `|`, `&&`, `||` and `;` is judged as argv lists and forwarded RE-QUOTED: every word in single
// quotes, the operators between them, so the target's shell (bash, dash, a login shell with
// aliases) has nothing left to expand, glob, alias or split — what runs is the argv that was
// judged. Everything else is `opaque`: forwarded as the client wrote it if a policy allows that,
// with nothing judged inside it. The tokenizer predicts nothing about the target's shell; it only
// refuses to call a line plain when a shell would read anything in it other than literal words.
//
// A plain line can still run other programs through its words: wrappers (`timeout`, `nice`) whose
// option grammar is modelled exactly list their inner argv in `programs` too; every other
// program known to run commands, code or scripts from its arguments (`sudo`, `env`, `xargs`,
// shells, interpreters, `find -exec`, shell builtins such as `eval` or `trap`) makes the line
// opaque. That list cannot be complete, which is why policies for agents allow-list programs.

import { RUNNERS, VERSIONED_RUNNER } from '../kit/index.js'

/** Longest exec command line analysed; longer is opaque (OpenSSH's own limit is 256 KiB). */
export const MAX_COMMAND_BYTES = 64 * 1024
/** Most simple commands listed for one exec; more is opaque. */
export const MAX_SIMPLE_COMMANDS = 256
/** Wrappers nested in one simple command (`timeout 5 nice ls`); deeper is opaque. */
const MAX_WRAPPER_DEPTH = 4

export type Operator = '|' | '&&' | '||' | ';'

export interface ExecCommand {
  readonly [key: string]: unknown
  /** The command line as the client sent it. */
  readonly command: string
  /** The first simple command's words. */
  readonly argv: readonly string[]
  /** Every simple command in the line, in order. */
  readonly commands: readonly (readonly string[])[]
  /** The operator after each simple command but the last. */
  readonly operators: readonly Operator[]
  /** Every argv that runs: each simple command, and the inner command of a modelled wrapper. */
  readonly programs: readonly (readonly string[])[]
  /** Always empty: a redirection makes a line opaque (kept for policies that read it). */
  readonly redirects: readonly string[]
  readonly opaque: boolean
  /** Why the line is opaque (absent when it is not). */
  readonly opaque_reason?: string
  /** The line sent to the target: re-quoted when plain, as written when opaque. */
  readonly sent: string
}

/** Reserved words: quoted they are plain command names, which is not what the caller meant. */
// biome-ignore format: a word list, kept compact
const KEYWORDS = new Set([
  'if', 'then', 'else', 'elif', 'fi', 'for', 'while', 'until', 'do', 'done', 'case', 'esac', 'function',
  'select', 'in', '{', '}', '[[', ']]', '!', 'coproc', 'time',
])

/**
 * Shell builtins that run code from their arguments, or change how later words of the line are
 * looked up or expanded (aliases, functions, the hash table, variables a later program reads,
 * traps, array subscripts evaluated as arithmetic).
 */
// biome-ignore format: a word list, kept compact
const CODE_BUILTINS = new Set([
  'eval', 'exec', 'command', 'builtin', 'source', '.', 'trap', 'jobs', 'fc', 'bind', 'complete', 'compgen',
  'compopt', 'let', 'declare', 'typeset', 'local', 'export', 'readonly', 'unset', 'alias', 'unalias', 'hash',
  'enable', 'set', 'shopt', 'read', 'mapfile', 'readarray', 'getopts', 'wait', 'history', 'caller',
])

const ASSIGNMENT = /^[A-Za-z_][A-Za-z0-9_]*\+?=/
/** Characters allowed unquoted in a word: nothing a POSIX shell or bash treats specially. */
const PLAIN = /[A-Za-z0-9_\-./:@%+,=]/
/** A `timeout` duration: GNU's grammar (number, optional fraction, optional unit), nothing else. */
const DURATION = /^[0-9]{1,9}(\.[0-9]{1,9})?[smhd]?$/
const NICENESS = /^-?[0-9]{1,2}$/

export function basename(word: string): string {
  const i = word.lastIndexOf('/')
  return i >= 0 ? word.slice(i + 1) : word
}

/** One word in single quotes, a `'` inside as `'\''`: no POSIX shell expands anything in it. */
export function shellQuote(word: string): string {
  return `'${word.replaceAll("'", "'\\''")}'`
}

/** The line sent to the target for plain words: every word quoted, operators between commands. */
export function requote(commands: readonly (readonly string[])[], operators: readonly Operator[]): string {
  let out = ''
  commands.forEach((c, i) => {
    if (i > 0) out += ` ${operators[i - 1] as Operator} `
    out += c.map(shellQuote).join(' ')
  })
  return out
}

class Opaque extends Error {}

/** Characters that may appear inside quotes: anything but NUL and control characters (tab and newline are text). */
function checkQuoted(s: string): void {
  for (let k = 0; k < s.length; k++) {
    const code = s.charCodeAt(k)
    if ((code < 0x20 && code !== 0x09 && code !== 0x0a) || code === 0x7f) throw new Opaque('a control character')
  }
}

/** Splits `line` into plain-word simple commands; throws Opaque at anything a shell would read as more than words. */
function tokenize(line: string): { commands: string[][]; operators: Operator[] } {
  const commands: string[][] = []
  const operators: Operator[] = []
  let words: string[] = []
  let word: string | null = null
  const endWord = (): void => {
    if (word === null) return
    words.push(word)
    word = null
  }
  const endCommand = (op: Operator | null): void => {
    endWord()
    if (words.length === 0) {
      // `ls;` is fine; `; ls`, `ls ;; ls`, `| ls`, `ls &&` are not plain lines.
      if (op === null && operators.length > 0 && operators[operators.length - 1] === ';') {
        operators.pop()
        return
      }
      throw new Opaque('an empty command')
    }
    commands.push(words)
    if (commands.length > MAX_SIMPLE_COMMANDS) throw new Opaque('too many commands')
    words = []
    if (op !== null) operators.push(op)
  }
  const n = line.length
  let i = 0
  while (i < n) {
    const c = line[i] as string
    const next = line[i + 1]
    if (c === ' ' || c === '\t') {
      endWord()
      i++
    } else if (c === ';') {
      endCommand(';')
      i++
    } else if (c === '|') {
      if (next === '&') throw new Opaque('a redirection (|&)')
      endCommand(next === '|' ? '||' : '|')
      i += next === '|' ? 2 : 1
    } else if (c === '&') {
      if (next !== '&') throw new Opaque('a background command (&)')
      endCommand('&&')
      i += 2
    } else if (c === "'") {
      const j = line.indexOf("'", i + 1)
      if (j < 0) throw new Opaque('an unterminated quote')
      const s = line.slice(i + 1, j)
      checkQuoted(s)
      word = (word ?? '') + s
      i = j + 1
    } else if (c === '"') {
      let w: string = word ?? ''
      i++
      for (;;) {
        if (i >= n) throw new Opaque('an unterminated quote')
        const d = line[i] as string
        if (d === '"') break
        if (d === '$' || d === '`') throw new Opaque('an expansion in double quotes')
        if (d === '\\') {
          const e = line[i + 1]
          // Inside double quotes a backslash escapes only $ ` " \ and newline; elsewhere it is itself.
          if (e === '\n') {
            i += 2
            continue
          }
          if (e === '"' || e === '\\' || e === '$' || e === '`') {
            w += e
            i += 2
            continue
          }
        }
        w += d
        i++
      }
      checkQuoted(w)
      word = w
      i++
    } else if (c === '\\') {
      if (next === undefined) throw new Opaque('a trailing backslash')
      if (next === '\n') {
        i += 2
        continue
      }
      checkQuoted(next)
      word = (word ?? '') + next
      i += 2
    } else if (PLAIN.test(c) || c.charCodeAt(0) >= 0x80) {
      word = (word ?? '') + c
      i++
    } else {
      throw new Opaque(unquotedReason(c, next))
    }
  }
  endCommand(null)
  return { commands, operators }
}

function unquotedReason(c: string, next: string | undefined): string {
  switch (c) {
    case '$':
      if (next === '(') return 'a command substitution'
      if (next === "'" || next === '"') return 'an ANSI-C or locale quote'
      return 'a parameter expansion'
    case '`':
      return 'a command substitution'
    case '*':
    case '?':
    case '[':
    case ']':
      return 'a glob pattern'
    case '{':
    case '}':
      return 'a brace expansion or group'
    case '~':
      return 'a tilde expansion'
    case '<':
    case '>':
      return 'a redirection'
    case '(':
    case ')':
      return 'a subshell or function'
    case '#':
      return 'a comment'
    case '!':
      return 'a negation or history expansion'
    case '\n':
    case '\r':
      return 'a line break outside quotes'
    default:
      return c.charCodeAt(0) < 0x20 || c === '\x7f' ? 'a control character' : `the character ${JSON.stringify(c)} outside quotes`
  }
}

/** Appends every argv that `argv` runs to `out`; throws Opaque for a program that runs what cannot be judged. */
function programsOf(argv: readonly string[], out: (readonly string[])[], depth = 0): void {
  const name = argv[0] as string
  if (depth > MAX_WRAPPER_DEPTH) throw new Opaque('wrappers nested too deeply')
  if (ASSIGNMENT.test(name)) throw new Opaque('a variable assignment')
  if (name.startsWith('-')) throw new Opaque(`a command name starting with "-" (${name})`)
  if (KEYWORDS.has(name)) throw new Opaque(`a shell keyword (${name})`)
  out.push(argv)
  const base = basename(name)
  const args = argv.slice(1)
  if (base === 'timeout') {
    // GNU timeout: options come before the duration (getopt stops there); none are accepted here.
    if (args.length >= 2 && DURATION.test(args[0] as string)) {
      programsOf(args.slice(1), out, depth + 1)
      return
    }
    throw new Opaque('timeout with options')
  }
  if (base === 'nice') {
    // GNU nice: `nice CMD` or `nice -n N CMD`; the legacy `-N` and long options are not modelled.
    if (args.length >= 1 && !(args[0] as string).startsWith('-')) {
      programsOf(args, out, depth + 1)
      return
    }
    if (args.length >= 3 && args[0] === '-n' && NICENESS.test(args[1] as string)) {
      programsOf(args.slice(2), out, depth + 1)
      return
    }
    throw new Opaque('nice with options')
  }
  if (CODE_BUILTINS.has(base) || RUNNERS.has(base) || VERSIONED_RUNNER.test(base)) throw new Opaque(`${base} runs other commands`)
  if ((base === 'test' || base === '[') && args.some((a) => a === '-v' || a === '-R')) throw new Opaque(`${base} -v evaluates a subscript`)
  if (base === 'printf' && args.some((a) => a.startsWith('-v'))) throw new Opaque('printf -v assigns a variable')
  if (base === 'find' && args.some((a) => /^-(exec|execdir|ok|okdir)$/.test(a))) throw new Opaque('find -exec runs other commands')
}

/** Analyses an exec command line for policy. Never throws. */
export function analyzeExec(line: string): ExecCommand {
  const opaque = (reason: string, command = line): ExecCommand => ({
    command,
    argv: [],
    commands: [],
    operators: [],
    programs: [],
    redirects: [],
    opaque: true,
    opaque_reason: reason,
    sent: line,
  })
  if (Buffer.byteLength(line) > MAX_COMMAND_BYTES) return opaque('the command line is too long', line.slice(0, 1024))
  if (line.includes('\0')) return opaque('a NUL character')
  try {
    const { commands, operators } = tokenize(line)
    const programs: (readonly string[])[] = []
    for (const c of commands) programsOf(c, programs)
    return {
      command: line,
      argv: commands[0] ?? [],
      commands,
      operators,
      programs,
      redirects: [],
      opaque: false,
      sent: requote(commands, operators),
    }
  } catch (err) {
    return opaque(err instanceof Opaque ? err.message : 'unparseable')
  }
}
