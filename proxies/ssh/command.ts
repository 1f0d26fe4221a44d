// What policy sees of an SSH exec: the command line split the way a POSIX shell would split it
// into simple commands (lists, pipes, `&&`/`||`, subshells), each an argv. Anything whose effect
// cannot be known from the text alone — command substitution, process substitution, arithmetic,
// here-documents, compound commands, `eval`, `source`, `sh -c`, unbalanced quotes, a line too
// long — is marked `opaque: true`, and a policy refuses it unless it allows opaque commands
// explicitly. The analysis errs towards opaque, never towards harmless.

/** Longest exec command line analysed; longer is opaque (OpenSSH's own limit is 256 KiB). */
export const MAX_COMMAND_BYTES = 64 * 1024
/** Most simple commands listed for one exec; more is opaque. */
export const MAX_SIMPLE_COMMANDS = 256

export interface ExecCommand {
  readonly [key: string]: unknown
  /** The command line as the client sent it. */
  readonly command: string
  /** The first simple command's words (after leading `VAR=value` assignments). */
  readonly argv: readonly string[]
  /** Every simple command in the line, in order. */
  readonly commands: readonly (readonly string[])[]
  /** Redirection targets (`> file`, `< file`), in order. */
  readonly redirects: readonly string[]
  readonly opaque: boolean
  /** Why the line is opaque (absent when it is not). */
  readonly opaque_reason?: string
}

const SHELLS = new Set(['sh', 'bash', 'dash', 'zsh', 'ksh', 'mksh', 'ash', 'fish', 'csh', 'tcsh', 'busybox'])
const EVALS = new Set(['eval', 'source', '.'])
/** Commands that run their arguments as a command: `sudo eval …` is still an eval. */
const WRAPPERS = new Set([
  'sudo',
  'env',
  'nohup',
  'time',
  'nice',
  'ionice',
  'command',
  'builtin',
  'exec',
  'timeout',
  'xargs',
  'doas',
  'stdbuf',
])
const KEYWORDS = new Set([
  'if',
  'then',
  'else',
  'elif',
  'fi',
  'for',
  'while',
  'until',
  'do',
  'done',
  'case',
  'esac',
  'function',
  'select',
  '{',
  '}',
  '[[',
  ']]',
  'coproc',
])
const ASSIGNMENT = /^[A-Za-z_][A-Za-z0-9_]*=/

function basename(word: string): string {
  const i = word.lastIndexOf('/')
  return i >= 0 ? word.slice(i + 1) : word
}

class Opaque extends Error {}

/** Splits `line` into simple commands; throws Opaque for what cannot be judged from the text. */
function split(line: string): { commands: string[][]; redirects: string[] } {
  const commands: string[][] = []
  const redirects: string[] = []
  let words: string[] = []
  let word: string | null = null
  let redirectNext = false
  const endWord = (): void => {
    if (word === null) return
    if (redirectNext) {
      redirects.push(word)
      redirectNext = false
    } else {
      if (words.length === 0 && KEYWORDS.has(word)) throw new Opaque(`compound command (${word})`)
      words.push(word)
    }
    word = null
  }
  const endCommand = (): void => {
    endWord()
    if (redirectNext) throw new Opaque('redirection without a target')
    if (words.length > 0) {
      commands.push(words)
      if (commands.length > MAX_SIMPLE_COMMANDS) throw new Opaque('too many commands')
    }
    words = []
  }
  const n = line.length
  let i = 0
  while (i < n) {
    const c = line[i] as string
    const next = line[i + 1]
    if (c === ' ' || c === '\t') {
      endWord()
      i++
    } else if (c === '\n' || c === ';') {
      endCommand()
      i++
    } else if (c === '&' || c === '|') {
      if (c === '&' && next === '>') {
        endWord()
        redirectNext = true
        i += next === '>' && line[i + 2] === '>' ? 3 : 2
        continue
      }
      endCommand()
      i += next === c || (c === '|' && next === '&') ? 2 : 1
    } else if (c === '(' || c === ')') {
      if (c === '(' && (word !== null || words.length > 0)) throw new Opaque('function definition or array')
      endCommand()
      i++
    } else if (c === '<' || c === '>') {
      if (next === '(') throw new Opaque('process substitution')
      if (c === '<' && next === '<' && line[i + 2] !== '<') throw new Opaque('here-document')
      // A word of digits right before the operator is a file descriptor, not an argument.
      if (word !== null && /^[0-9]+$/.test(word)) word = null
      else endWord()
      if (redirectNext) throw new Opaque('redirection without a target')
      i++
      while (i < n && (line[i] === '<' || line[i] === '>' || line[i] === '&' || line[i] === '|')) i++
      // `2>&1`: the target is a descriptor.
      if (line[i - 1] === '&' && /[0-9-]/.test(line[i] ?? '')) {
        while (i < n && /[0-9-]/.test(line[i] as string)) i++
        continue
      }
      redirectNext = true
    } else if (c === '#' && word === null) {
      while (i < n && line[i] !== '\n') i++
    } else if (c === '\\') {
      if (next === undefined) throw new Opaque('trailing backslash')
      if (next !== '\n') word = (word ?? '') + next
      i += 2
    } else if (c === "'") {
      const j = line.indexOf("'", i + 1)
      if (j < 0) throw new Opaque('unterminated quote')
      word = (word ?? '') + line.slice(i + 1, j)
      i = j + 1
    } else if (c === '"') {
      let w: string = word ?? ''
      i++
      for (;;) {
        if (i >= n) throw new Opaque('unterminated quote')
        const d = line[i] as string
        if (d === '"') break
        if (d === '`' || (d === '$' && line[i + 1] === '(')) throw new Opaque('command substitution')
        if (d === '\\' && i + 1 < n && '$`"\\\n'.includes(line[i + 1] as string)) {
          if (line[i + 1] !== '\n') w += line[i + 1]
          i += 2
          continue
        }
        w += d
        i++
      }
      word = w
      i++
    } else if (c === '`' || (c === '$' && next === '(')) {
      throw new Opaque('command substitution')
    } else if (c === '$' && next === '{') {
      const j = line.indexOf('}', i)
      if (j < 0) throw new Opaque('unterminated expansion')
      const inner = line.slice(i + 2, j)
      if (inner.startsWith('!') || inner.includes('$(') || inner.includes('`')) throw new Opaque('command substitution in an expansion')
      word = (word ?? '') + line.slice(i, j + 1)
      i = j + 1
    } else {
      word = (word ?? '') + c
      i++
    }
  }
  endCommand()
  return { commands, redirects }
}

/** The command word of argv after assignments and wrappers (`sudo -u x env A=1 eval …` → eval). */
function opaqueCall(argv: readonly string[]): string | null {
  let i = 0
  while (i < argv.length) {
    const w = argv[i] as string
    const b = basename(w)
    if (ASSIGNMENT.test(w) || w.startsWith('-')) {
      i++
      continue
    }
    if (EVALS.has(b)) return b
    if (SHELLS.has(b)) {
      // `sh -c '…'`, `bash -lc …`, `busybox sh -c …`: the real command is a string argument.
      if (argv.slice(i + 1).some((a) => /^-[A-Za-z]*c/.test(a))) return `${b} -c`
      // A shell reading its script from stdin or a file is no more judgeable.
      return `${b} (a shell running a script)`
    }
    if (!WRAPPERS.has(b)) return null
    i++
  }
  return null
}

/** Analyses an exec command line for policy. Never throws. */
export function analyzeExec(line: string): ExecCommand {
  if (Buffer.byteLength(line) > MAX_COMMAND_BYTES) {
    return { command: line.slice(0, 1024), argv: [], commands: [], redirects: [], opaque: true, opaque_reason: 'command line too long' }
  }
  let parsed: { commands: string[][]; redirects: string[] }
  try {
    parsed = split(line)
  } catch (err) {
    const reason = err instanceof Opaque ? err.message : 'unparseable'
    return { command: line, argv: [], commands: [], redirects: [], opaque: true, opaque_reason: reason }
  }
  const commands = parsed.commands.map((c) => {
    let i = 0
    while (i < c.length - 1 && ASSIGNMENT.test(c[i] as string)) i++
    return c.slice(i)
  })
  let reason: string | null = null
  for (const c of commands) {
    reason = opaqueCall(c)
    if (reason) break
  }
  const base = { command: line, argv: commands[0] ?? [], commands, redirects: parsed.redirects }
  return reason ? { ...base, opaque: true, opaque_reason: reason } : { ...base, opaque: false }
}

/** A legacy `scp -t` (upload) or `scp -f` (download) exec: a file transfer, decided as ssh.sftp. */
export function scpTransfer(cmd: ExecCommand): { operation: 'upload' | 'download'; path: string } | null {
  if (cmd.opaque || cmd.commands.length !== 1) return null
  const argv = cmd.argv
  if (basename(argv[0] ?? '') !== 'scp') return null
  const flags = argv.slice(1).filter((a) => a.startsWith('-'))
  const upload = flags.some((f) => /^-[a-zA-Z]*t/.test(f))
  const download = flags.some((f) => /^-[a-zA-Z]*f/.test(f))
  if (upload === download) return null
  const path = argv.slice(1).filter((a) => !a.startsWith('-'))
  return { operation: upload ? 'upload' : 'download', path: path[path.length - 1] ?? '.' }
}
