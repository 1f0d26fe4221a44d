// The SSH exec corpus's fixture: two test users on a real sshd whose every process is logged, the gateway, and how an attempt is judged.

import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { spawnSync } from 'node:child_process'
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { after, before } from 'node:test'
import ssh2 from 'ssh2'
import { shellQuote } from '../../proxies/ssh/command.js'
import { REPO, TestGateway } from './gateway.js'
import { TestSshd } from './sshd.js'

export const isRoot = process.getuid?.() === 0

export interface Outcome {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
  /** The channel could not be opened or the exec was refused at the SSH level (a refused PTY). */
  readonly refused: string | null
}

export interface Proc {
  readonly exe: string
  readonly argv: readonly string[]
}

export type Want =
  | { readonly deny: true }
  /** Allowed: runs these argv lists (for the re-quoted line) and prints `stdout`, exits `code`. */
  | {
      readonly run: readonly (readonly string[])[]
      readonly operators?: readonly string[]
      readonly stdout?: string
      readonly code?: number
    }
  /** The SSH request itself is refused (a PTY with a bad terminal name): nothing runs. */
  | { readonly sshRefused: true }

export interface Attempt {
  readonly family: string
  readonly line: string
  readonly want: Want
  readonly env?: Record<string, string>
  readonly term?: string
  /** bash only (the aliases live in the bash user's ~/.bashrc). */
  readonly bashOnly?: boolean
}

// Live bindings: set by the before() that useExecCorpus() registers, read by the tests after it ran.
const id = randomBytes(3).toString('hex')
const users = { bash: `ghxb${id}`, dash: `ghxd${id}` }
let base = ''
export let D = ''
export let S = ''
export let M = ''
export let aliasMarks = ''
export let logFile = ''
let logOffset = 0
export let secret = ''
let sshd: TestSshd
export let gw: TestGateway
let sshPort = 0
export let agentToken = ''
export let humanToken = ''
const clients = new Map<string, InstanceType<typeof ssh2.Client>>()
export const counts = new Map<string, number>()
export const stats = { attempts: 0, allowed: 0, denied: 0, sshRefused: 0 }

/** Creates the users, the target’s files, sshd and the gateway before the calling describe’s tests; removes them after. */
export function useExecCorpus(): void {
  before(async () => {
    base = mkdtempSync(join(tmpdir(), 'gh-exec-corpus-'))
    chmodSync(base, 0o755)
    D = join(base, 'data')
    S = join(base, 'secret.txt')
    M = join(base, 'marks')
    aliasMarks = join(base, 'alias-marks')
    logFile = join(base, 'exec.log')
    secret = `TOP-SECRET-${randomBytes(8).toString('hex')}`
    mkdirSync(join(D, 'sub'), { recursive: true, mode: 0o755 })
    writeFileSync(join(D, 'a.txt'), 'alpha\n', { mode: 0o644 })
    writeFileSync(join(D, 'b.txt'), 'bravo\n', { mode: 0o644 })
    writeFileSync(join(D, 'odd name.txt'), 'odd\n', { mode: 0o644 })
    writeFileSync(join(D, 'sub', 'c.txt'), 'charlie\n', { mode: 0o644 })
    writeFileSync(S, `${secret}\n`, { mode: 0o644 })
    for (const d of [M, aliasMarks]) {
      mkdirSync(d)
      chmodSync(d, 0o777)
    }
    writeFileSync(logFile, '')
    chmodSync(logFile, 0o666)
    // What a payload would source or find first on PATH: each leaves a marker when it runs.
    writeFileSync(join(base, 'payload.sh'), `touch ${M}/payload-sourced\n`, { mode: 0o755 })
    mkdirSync(join(base, 'evilbin'), { mode: 0o755 })
    for (const p of ['ls', 'cat', 'echo']) writeFileSync(join(base, 'evilbin', p), `#!/bin/sh\ntouch ${M}/evil-${p}\n`, { mode: 0o755 })
    const so = join(base, 'execlog.so')
    const cc = spawnSync('gcc', ['-shared', '-fPIC', '-O1', '-o', so, join(REPO, 'test/data/ssh-exec/execlog.c')], { encoding: 'utf8' })
    assert.equal(cc.status, 0, cc.stderr)
    chmodSync(so, 0o755)
    for (const [shell, user] of Object.entries(users)) {
      const home = join(base, `home-${shell}`)
      mkdirSync(home, { mode: 0o755 })
      const r = spawnSync('useradd', ['-M', '-d', home, '-s', `/bin/${shell}`, user], { encoding: 'utf8' })
      assert.equal(r.status, 0, r.stderr)
      // Not locked (sshd without PAM refuses a locked account), no password either.
      assert.equal(spawnSync('usermod', ['-p', '*', user]).status, 0)
      const u = spawnSync('id', ['-u', user], { encoding: 'utf8' })
      chownSync(home, Number(u.stdout.trim()), Number(u.stdout.trim()))
    }
    // The bash user's login shell has aliases for the three allowed commands: run unquoted, they
    // would leave a marker; the re-quoted words the gateway sends are never alias-expanded.
    writeFileSync(
      join(base, 'home-bash', '.bashrc'),
      ['shopt -s expand_aliases', ...['ls', 'cat', 'echo'].map((c) => `alias ${c}='touch ${aliasMarks}/${c}; ${c}'`), ''].join('\n'),
      { mode: 0o644 },
    )
    sshd = await TestSshd.start({ config: ['AcceptEnv *', `SetEnv LD_PRELOAD=${so} GH_EXECLOG=${logFile}`] })
    // sshd reads the authorized keys as the user logging in.
    chmodSync(sshd.dir, 0o755)
    chmodSync(join(sshd.dir, 'authorized_keys'), 0o644)
    const policyDir = join(base, 'policy')
    mkdirSync(policyDir)
    writeFileSync(
      join(policyDir, 'policy.rego'),
      `# The corpus policy: agents run plain lines whose every program is ls, echo, or cat of files under
# the data directory (absolute, no ..); people may run anything, opaque lines included (the alias
# control and the MCP stderr test use that). \`echo needs-approval\` is held.
package gatehouse

default allow := false

allow if input.action in {"connect", "mcp.call"}

agent_in_chain if {
\tsome p in input.chain
\tp.kind == "agent"
}

data_dir := ${JSON.stringify(`${D}/`)}

under_data(a) if {
\tstartswith(a, data_dir)
\tnot contains(a, "/../")
\tnot endswith(a, "/..")
}

program_ok(p) if p[0] in {"ls", "echo"}

program_ok(p) if {
\tp[0] == "cat"
\tcount(p) > 1
\tevery a in array.slice(p, 1, count(p)) { under_data(a) }
}

allow if {
\tinput.action == "ssh.exec"
\tagent_in_chain
\tnot input.command.opaque
\tcount(input.command.programs) > 0
\tevery p in input.command.programs { program_ok(p) }
}

allow if {
\tinput.action == "ssh.exec"
\tnot agent_in_chain
}

approval contains {"rule": "needs-approval", "group": "ops", "reason": "this one waits for ops"} if {
\tinput.action == "ssh.exec"
\tinput.command.argv == ["echo", "needs-approval"]
}
`,
    )
    const env = ['LANG', 'LC_*', 'GH_NOTE', 'TERM']
    gw = await TestGateway.start({
      connections: [sshd.connection('web-bash', { user: users.bash, env }), sshd.connection('web-dash', { user: users.dash, env })],
      config: { listen: { api: '127.0.0.1:0', postgres: 'off', ssh: '127.0.0.1:0' }, policies: policyDir },
    })
    sshPort = gw.port('ssh')
    humanToken = gw.token('user:alice')
    const d = gw.cli(['token', 'delegate', '--agent', 'corpus', '--token', humanToken, '--json'])
    assert.equal(d.code, 0, d.stderr)
    agentToken = (JSON.parse(d.stdout) as { access_token: string }).access_token
  })

  after(async () => {
    for (const c of clients.values()) c.end()
    await gw?.cleanup()
    await sshd?.stop()
    for (const u of Object.values(users)) spawnSync('userdel', [u])
    if (base) rmSync(base, { recursive: true, force: true })
  })
}

export async function client(connection: string, token: string): Promise<InstanceType<typeof ssh2.Client>> {
  const key = `${connection} ${token === agentToken ? 'agent' : 'human'}`
  const have = clients.get(key)
  if (have) return have
  const c = new ssh2.Client()
  await new Promise<void>((resolve, reject) => {
    c.on('ready', () => resolve())
    c.on('error', reject)
    // Bounds that only end a failure: a handshake through the gateway to sshd can take many seconds
    // on a loaded two-core machine, more so while the corpus's first sessions start.
    c.connect({ host: '127.0.0.1', port: sshPort, username: connection, password: token, readyTimeout: 120_000 })
  })
  c.on('error', () => clients.delete(key))
  c.on('close', () => clients.delete(key))
  clients.set(key, c)
  return c
}

export function exec(
  c: InstanceType<typeof ssh2.Client>,
  line: string,
  opts: { env?: Record<string, string>; term?: string } = {},
): Promise<Outcome> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve({ code: null, stdout: '', stderr: '', refused: 'timed out' }), 120_000)
    const o: ssh2.ExecOptions = {
      ...(opts.env ? { env: opts.env } : {}),
      ...(opts.term ? { pty: { term: opts.term, cols: 80, rows: 24, width: 640, height: 480, modes: {} } } : {}),
    }
    c.exec(line, o, (err, ch) => {
      if (err) {
        clearTimeout(timer)
        resolve({ code: null, stdout: '', stderr: '', refused: err.message })
        return
      }
      let stdout = ''
      let stderr = ''
      let code: number | null = null
      ch.on('data', (b: Buffer) => {
        stdout += b.toString()
      })
      ch.stderr.on('data', (b: Buffer) => {
        stderr += b.toString()
      })
      ch.on('exit', (c2: number | null) => {
        code = c2
      })
      ch.on('close', () => {
        clearTimeout(timer)
        resolve({ code, stdout, stderr, refused: null })
      })
    })
  })
}

/** Process records appended since the last call. */
export function newProcs(): Proc[] {
  const buf = readFileSync(logFile)
  const text = buf.subarray(logOffset).toString('utf8')
  logOffset = buf.length
  return text
    .split('\x1e')
    .filter((r) => r !== '')
    .map((r) => {
      const f = r.split('\x1f')
      return { exe: f[1] ?? '', argv: f.slice(2) }
    })
}

export function marks(): string[] {
  return readdirSync(M)
}

const under = (a: string): boolean => a.startsWith(`${D}/`) && !a.includes('/../') && !a.endsWith('/..')

/** Checks what the target started for one allowed exec: the shell running `sent`, then only ls/cat within policy. */
export function checkProcs(procs: readonly Proc[], shell: string, sent: string | null, what: string): void {
  for (const p of procs) {
    const b = basename(p.exe)
    if (b === shell) {
      assert.equal(p.argv[1], '-c', `${what}: the login shell runs one command line`)
      if (sent !== null) assert.equal(p.argv[2], sent, `${what}: the target's shell runs exactly the re-quoted line`)
    } else if (b === 'ls') {
      // allowed with any arguments
    } else if (b === 'cat') {
      for (const a of p.argv.slice(1)) assert.ok(under(a), `${what}: cat ran on ${a}, outside the data directory`)
    } else assert.fail(`${what}: the target started ${p.exe} ${JSON.stringify(p.argv)}, which the policy does not allow`)
  }
}

export const fill = (s: string): string => s.replaceAll('{D}', D).replaceAll('{S}', S).replaceAll('{M}', M).replaceAll('{B}', base)

export async function attempt(a: Attempt, shell: 'bash' | 'dash'): Promise<void> {
  const line = fill(a.line)
  const env = a.env ? Object.fromEntries(Object.entries(a.env).map(([k, v]) => [k, fill(v)])) : undefined
  const what = `[${a.family}/${shell}] ${JSON.stringify(line)}`
  newProcs()
  const c = await client(`web-${shell}`, agentToken)
  const r = await exec(c, line, { ...(env ? { env } : {}), ...(a.term ? { term: fill(a.term) } : {}) })
  const procs = newProcs()
  stats.attempts++
  counts.set(a.family, (counts.get(a.family) ?? 0) + 1)
  assert.doesNotMatch(r.stdout + r.stderr, new RegExp(secret), `${what}: the secret came back`)
  assert.deepEqual(marks(), [], `${what}: an escaped command left a marker`)
  assert.deepEqual(readdirSync(aliasMarks), [], `${what}: an alias of the login shell ran`)
  if ('deny' in a.want) {
    stats.denied++
    assert.equal(r.refused, null, `${what}: ${r.refused}`)
    assert.equal(
      r.code,
      126,
      `${what}: refused with 126 (got ${r.code}, stdout ${JSON.stringify(r.stdout)}, stderr ${JSON.stringify(r.stderr)})`,
    )
    assert.match(r.stderr, /^gatehouse: denied/, what)
    assert.deepEqual(procs, [], `${what}: a refused command started nothing on the target`)
  } else if ('sshRefused' in a.want) {
    stats.sshRefused++
    assert.notEqual(r.refused, null, `${what}: the SSH request is refused (got exit ${r.code}: ${r.stdout} ${r.stderr})`)
    assert.deepEqual(procs, [], `${what}: nothing started on the target`)
  } else {
    stats.allowed++
    const sent = a.want.run.map((argv) => argv.map((w) => shellQuote(fill(w))).join(' '))
    const ops = a.want.operators ?? a.want.run.slice(1).map(() => ';')
    const line2 = sent.reduce((acc, s, i) => (i === 0 ? s : `${acc} ${ops[i - 1]} ${s}`), '')
    assert.equal(r.refused, null, `${what}: ${r.refused}`)
    assert.equal(r.code, a.want.code ?? 0, `${what}: exit status (stderr ${JSON.stringify(r.stderr)})`)
    if (a.want.stdout !== undefined) assert.equal(r.stdout, fill(a.want.stdout), `${what}: output`)
    assert.ok(
      procs.some((p) => basename(p.exe) === shell),
      `${what}: the login shell ran (${JSON.stringify(procs)})`,
    )
    checkProcs(procs, shell, line2, what)
  }
}
