// The adversarial SSH exec corpus: an agent whose policy allows only `ls`, `cat` under one
// directory and `echo` tries to run anything else through the gateway — expansions, quoting
// tricks, operators, line breaks and NULs, wrappers, environment variables and terminal names,
// aliases of the target's login shell, path tricks on argv[0], the MCP exec tool — and random
// lines from fast-check. The target is a real sshd with two test users created here, one with bash
// as its login shell (and aliases for ls, cat and echo in its ~/.bashrc), one with dash. Ground
// truth is the target's own: a process log written by every program sshd starts (a preloaded
// library, test/data/ssh-exec/execlog.c), and marker files an escaped command would create. Every
// refused attempt must start no process at all; every allowed one must start only the login shell
// running exactly the re-quoted line, and `ls`/`cat` with arguments the policy allows; the secret
// file's content must never come back. Runs as root (it creates users); skipped otherwise.

import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { spawnSync } from 'node:child_process'
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { Client as McpClient } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import fc from 'fast-check'
import ssh2 from 'ssh2'
import { shellQuote } from '../proxies/ssh/command.js'
import { REPO, TestGateway } from './helpers/gateway.js'
import { TestSshd } from './helpers/sshd.js'

const isRoot = process.getuid?.() === 0

interface Outcome {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
  /** The channel could not be opened or the exec was refused at the SSH level (a refused PTY). */
  readonly refused: string | null
}

interface Proc {
  readonly exe: string
  readonly argv: readonly string[]
}

type Want =
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

interface Attempt {
  readonly family: string
  readonly line: string
  readonly want: Want
  readonly env?: Record<string, string>
  readonly term?: string
  /** bash only (the aliases live in the bash user's ~/.bashrc). */
  readonly bashOnly?: boolean
}

describe('ssh exec corpus: an allow-list agent cannot run anything else', {
  skip: isRoot ? false : 'needs root to create test users',
}, () => {
  const id = randomBytes(3).toString('hex')
  const users = { bash: `ghxb${id}`, dash: `ghxd${id}` }
  let base = ''
  let D = ''
  let S = ''
  let M = ''
  let aliasMarks = ''
  let logFile = ''
  let logOffset = 0
  let secret = ''
  let sshd: TestSshd
  let gw: TestGateway
  let sshPort = 0
  let agentToken = ''
  let humanToken = ''
  const clients = new Map<string, InstanceType<typeof ssh2.Client>>()
  const counts = new Map<string, number>()
  const stats = { attempts: 0, allowed: 0, denied: 0, sshRefused: 0 }

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

  async function client(connection: string, token: string): Promise<InstanceType<typeof ssh2.Client>> {
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

  function exec(
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
  function newProcs(): Proc[] {
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

  function marks(): string[] {
    return readdirSync(M)
  }

  const under = (a: string): boolean => a.startsWith(`${D}/`) && !a.includes('/../') && !a.endsWith('/..')

  /** Checks what the target started for one allowed exec: the shell running `sent`, then only ls/cat within policy. */
  function checkProcs(procs: readonly Proc[], shell: string, sent: string | null, what: string): void {
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

  const fill = (s: string): string => s.replaceAll('{D}', D).replaceAll('{S}', S).replaceAll('{M}', M).replaceAll('{B}', base)

  async function attempt(a: Attempt, shell: 'bash' | 'dash'): Promise<void> {
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

  const deny: Want = { deny: true }
  const ok = (run: string[][], stdout?: string, extra: { code?: number; operators?: string[] } = {}): Want => ({
    run,
    ...(stdout !== undefined ? { stdout } : {}),
    ...extra,
  })

  const corpus: Attempt[] = [
    // Expansions of every kind: opaque, refused, nothing runs.
    ...[
      'echo $(touch {M}/e1)',
      'echo `touch {M}/e2`',
      'echo "$(touch {M}/e3)"',
      'echo $((1+1))',
      // biome-ignore lint/suspicious/noTemplateCurlyInString: shell syntax, not a template
      'cat {D}/a.txt${IFS}{S}',
      'cat $HOME/../secret.txt',
      // biome-ignore lint/suspicious/noTemplateCurlyInString: shell syntax, not a template
      'echo ${x:-$(touch {M}/e7)}',
      "echo $'\\x41'",
      'echo $"hi"',
      'cat {D}/*',
      'cat {D}/?.txt',
      'cat {D}/[a].txt',
      'cat {D}/{a,b}.txt',
      'cat ~/x',
      'ls ~root',
      // biome-ignore lint/suspicious/noTemplateCurlyInString: shell syntax, not a template
      'echo ${PATH}',
      // biome-ignore lint/suspicious/noTemplateCurlyInString: shell syntax, not a template
      'echo "${X@P}"',
      'echo $((a[$(touch {M}/e18)]))',
      'cat <(touch {M}/e19)',
      'echo $0',
      'echo $$',
      'cat {D}/a.txt{,}',
      'echo "`touch {M}/e23`"',
      "cat $'{S}'",
      // biome-ignore lint/suspicious/noTemplateCurlyInString: shell syntax, not a template
      'echo ${!PATH*}',
      'cat {D}/a.txt$IFS{S}',
      'echo $(<{S})',
      // biome-ignore lint/suspicious/noTemplateCurlyInString: shell syntax, not a template
      'echo ${HOME:0:1}',
    ].map((line): Attempt => ({ family: 'expansion', line, want: deny })),
    // Quoting tricks: what is quoted is a literal word (and runs as one); what is not plain is refused.
    { family: 'quoting', line: "echo '$(touch {M}/q1)'", want: ok([['echo', '$(touch {M}/q1)']], '$(touch {M}/q1)\n') },
    { family: 'quoting', line: 'echo "\\$(touch {M}/q2)"', want: ok([['echo', '$(touch {M}/q2)']], '$(touch {M}/q2)\n') },
    { family: 'quoting', line: "echo '`touch {M}/q3`'", want: ok([['echo', '`touch {M}/q3`']], '`touch {M}/q3`\n') },
    { family: 'quoting', line: `echo '\\''$(touch {M}/q4)'`, want: ok([['echo', '\\$(touch {M}/q4)']], '\\$(touch {M}/q4)\n') },
    { family: 'quoting', line: `echo "it's"`, want: ok([['echo', "it's"]], "it's\n") },
    { family: 'quoting', line: "c'a't {D}/a.txt", want: ok([['cat', '{D}/a.txt']], 'alpha\n') },
    { family: 'quoting', line: 'ec\\ho hi', want: ok([['echo', 'hi']], 'hi\n') },
    { family: 'quoting', line: `echo 'a'"b"c`, want: ok([['echo', 'abc']], 'abc\n') },
    { family: 'quoting', line: "cat '{D}/odd name.txt'", want: ok([['cat', '{D}/odd name.txt']], 'odd\n') },
    { family: 'quoting', line: 'cat {D}/odd\\ name.txt', want: ok([['cat', '{D}/odd name.txt']], 'odd\n') },
    { family: 'quoting', line: "cat '{D}/a.txt;touch {M}/q11'", want: ok([['cat', '{D}/a.txt;touch {M}/q11']], '', { code: 1 }) },
    { family: 'quoting', line: "cat '{D}/a.txt' ';' 'touch' '{M}/q12'", want: deny },
    { family: 'quoting', line: "echo 'unterminated", want: deny },
    { family: 'quoting', line: 'echo "unterminated', want: deny },
    { family: 'quoting', line: 'echo \\', want: deny },
    { family: 'quoting', line: 'echo "a$(touch {M}/q16)"', want: deny },
    { family: 'quoting', line: 'echo "\\\\$(touch {M}/q17)"', want: deny },
    { family: 'quoting', line: `echo "'"$(touch {M}/q18)"'"`, want: deny },
    { family: 'quoting', line: "echo 'a' 'touch {M}/q19' | 'cat'", want: deny },
    { family: 'quoting', line: "echo é ü 'ǅ'", want: ok([['echo', 'é', 'ü', 'ǅ']], 'é ü ǅ\n') },
    // Operators: every command of the line is judged.
    ...['ls {D}; touch {M}/o1', 'echo a && touch {M}/o2', 'echo a || touch {M}/o3', 'echo a | touch {M}/o4', 'ls {D} & touch {M}/o5']
      .concat(['ls {D} |& touch {M}/o6', 'echo a;;touch {M}/o7', '; touch {M}/o8', 'ls |', 'ls && && ls', 'echo a | cat'])
      .concat(['cat {S} || echo x', 'echo a > {M}/o9', 'echo a >> {M}/o10', 'cat < {S}', 'echo a 2>{M}/o12', 'cat {D}/a.txt >&2'])
      .concat(['echo a ; ; echo b', 'echo a &', '& echo a'])
      .map((line): Attempt => ({ family: 'operators', line, want: deny })),
    {
      family: 'operators',
      line: 'echo a | cat {D}/a.txt',
      want: ok(
        [
          ['echo', 'a'],
          ['cat', '{D}/a.txt'],
        ],
        'alpha\n',
        { operators: ['|'] },
      ),
    },
    {
      family: 'operators',
      line: 'ls {D} && echo ok',
      want: ok(
        [
          ['ls', '{D}'],
          ['echo', 'ok'],
        ],
        'a.txt\nb.txt\nodd name.txt\nsub\nok\n',
        { operators: ['&&'] },
      ),
    },
    {
      family: 'operators',
      line: 'ls /nonexistent-x || echo fallback',
      want: ok(
        [
          ['ls', '/nonexistent-x'],
          ['echo', 'fallback'],
        ],
        'fallback\n',
        { operators: ['||'] },
      ),
    },
    {
      family: 'operators',
      line: 'echo a;echo b;',
      want: ok(
        [
          ['echo', 'a'],
          ['echo', 'b'],
        ],
        'a\nb\n',
      ),
    },
    // Line breaks, CR, NUL and control characters.
    ...['echo a\ntouch {M}/c1', 'echo a\rtouch {M}/c2', 'echo a\r\ntouch {M}/c3', 'echo a\0; touch {M}/c4', "echo 'a\0'; touch {M}/c5"]
      .concat(['echo a\vtouch {M}/c6', 'echo a\ftouch {M}/c7', "echo '\x1b]0;x\x07'", 'echo a\x7ftouch {M}/c9', 'echo "a\rb"'])
      .concat(['\ntouch {M}/c11', 'echo a\n\ntouch {M}/c12', 'echo a;\ntouch {M}/c13'])
      .map((line): Attempt => ({ family: 'control', line, want: deny })),
    { family: 'control', line: "echo 'x\ny'", want: ok([['echo', 'x\ny']], 'x\ny\n') },
    { family: 'control', line: 'echo "x\ny"', want: ok([['echo', 'x\ny']], 'x\ny\n') },
    { family: 'control', line: 'ls \\\n{D}', want: ok([['ls', '{D}']], 'a.txt\nb.txt\nodd name.txt\nsub\n') },
    { family: 'control', line: 'echo a\u2028touch {M}/c17', want: ok([['echo', 'a\u2028touch', '{M}/c17']], 'a\u2028touch {M}/c17\n') },
    { family: 'control', line: 'echo a\u0085b', want: ok([['echo', 'a\u0085b']], 'a\u0085b\n') },
    { family: 'control', line: 'echo a\ttouch', want: ok([['echo', 'a', 'touch']], 'a touch\n') },
    // Wrappers and other programs that run commands: none is on the allow-list, and most are opaque.
    ...[
      'timeout 5 touch {M}/w1',
      'timeout 5 cat {S}',
      'timeout 5 ls {D}',
      'nice touch {M}/w4',
      'nice -n 5 touch {M}/w5',
      'env touch {M}/w6',
      'env -i touch {M}/w7',
      'sudo touch {M}/w8',
      'echo {M}/w9 | xargs touch',
      'exec touch {M}/w10',
      '! touch {M}/w11',
      "'!' touch {M}/w12",
      'command touch {M}/w13',
      'builtin eval touch {M}/w14',
      'busybox touch {M}/w15',
      "sh -c 'touch {M}/w16'",
      "bash -c 'touch {M}/w17'",
      "dash -c 'touch {M}/w18'",
      "rbash -c 'touch {M}/w19'",
      "/bin/sh -c 'touch {M}/w20'",
      `perl -e 'open F, ">{M}/w21"'`,
      'python3 -c \'open("{M}/w22", "w")\'',
      `awk 'BEGIN { system("touch {M}/w23") }'`,
      "find {D} -exec touch {M}/w24 ';'",
      'stdbuf -o0 touch {M}/w25',
      'ionice touch {M}/w26',
      'time touch {M}/w27',
      'nohup touch {M}/w28',
      'setsid touch {M}/w29',
      'eval touch {M}/w30',
      '. {B}/payload.sh',
      'source {B}/payload.sh',
      "trap 'touch {M}/w33' EXIT",
      'alias ls=touch',
      'hash -p /usr/bin/touch ls; ls {M}/w35',
      'echo touch {M}/w36 | sh',
      'ls | bash',
      "git -c core.pager='touch {M}/w38' log",
      "tar -cf /dev/null {D} --checkpoint=1 --checkpoint-action=exec='touch {M}/w39'",
      "sed -n '1e touch {M}/w40' {D}/a.txt",
      'echo x | xargs -I{} touch {M}/w41',
      'echo ok; exec touch {M}/w42',
      'ls {D} && sh',
      "timeout 5 sh -c 'touch {M}/w44'",
      "nice -n 5 bash -c 'touch {M}/w45'",
      "timeout 5 nice timeout 5 sh -c 'touch {M}/w46'",
      "test -v 'a[$(touch {M}/w47)]'",
      "printf -v 'a[$(touch {M}/w48)]' x",
      "let 'a[$(touch {M}/w49)]'",
      'touch {M}/w50',
    ].map((line): Attempt => ({ family: 'wrappers', line, want: deny })),
    // The environment: refused names and values never reach the target; allowed ones do.
    ...(
      [
        ['BASH_ENV', '{B}/payload.sh'],
        ['ENV', '{B}/payload.sh'],
        ['LD_PRELOAD', '{B}/nothing.so'],
        ['PATH', '{B}/evilbin:/usr/bin:/bin'],
        ['BASH_FUNC_echo%%', '() { touch {M}/f; }'],
        ['SHELLOPTS', 'xtrace'],
        ['PS4', '$(touch {M}/ps4)'],
        ['LC_ALL', '$(touch {M}/lc)'],
        ['GH_NOTE', 'a[$(touch {M}/sub)]'],
        ['GH_NOTE', 'two words'],
        ['IFS', '/'],
        ['PROMPT_COMMAND', 'touch {M}/pc'],
        ['TERM', 'xterm;touch'],
        ['LANG', "C.UTF-8'"],
      ] as const
    ).map(
      ([k, v], i): Attempt => ({ family: 'env', line: `echo env-${i}`, env: { [k]: v }, want: ok([['echo', `env-${i}`]], `env-${i}\n`) }),
    ),
    { family: 'env', line: 'ls {D}/sub', env: { PATH: '{B}/evilbin:/usr/bin:/bin' }, want: ok([['ls', '{D}/sub']], 'c.txt\n') },
    {
      family: 'env',
      line: 'echo env-accepted',
      env: { LANG: 'C.UTF-8', GH_NOTE: 'plain-value' },
      want: ok([['echo', 'env-accepted']], 'env-accepted\n'),
    },
    { family: 'env', line: 'echo tty-bad', term: 'xterm$(touch {M}/t1)', want: { sshRefused: true } },
    { family: 'env', line: 'echo tty-bad', term: '../../tmp/x', want: { sshRefused: true } },
    { family: 'env', line: 'echo tty-bad', term: 'xterm\nls', want: { sshRefused: true } },
    { family: 'env', line: 'echo tty-ok', term: 'xterm-256color', want: ok([['echo', 'tty-ok']], 'tty-ok\r\n') },
    // The bash user's aliases (ls, cat, echo) never run: the words are quoted.
    { family: 'aliases', line: 'ls {D}/sub', want: ok([['ls', '{D}/sub']], 'c.txt\n') },
    { family: 'aliases', line: 'cat {D}/b.txt', want: ok([['cat', '{D}/b.txt']], 'bravo\n') },
    { family: 'aliases', line: 'echo no-alias', want: ok([['echo', 'no-alias']], 'no-alias\n') },
    {
      family: 'aliases',
      line: 'echo a | cat {D}/sub/c.txt && ls {D}/sub',
      want: ok(
        [
          ['echo', 'a'],
          ['cat', '{D}/sub/c.txt'],
          ['ls', '{D}/sub'],
        ],
        'charlie\nc.txt\n',
        { operators: ['|', '&&'] },
      ),
    },
    {
      family: 'aliases',
      line: "\\ls {D}/sub; 'echo' x",
      want: ok(
        [
          ['ls', '{D}/sub'],
          ['echo', 'x'],
        ],
        'c.txt\nx\n',
      ),
    },
    // Path tricks on argv[0] and in cat's arguments.
    ...[
      '/bin/ls {D}',
      '/usr/bin/cat {D}/a.txt',
      './ls',
      '../../usr/bin/ls',
      'LS {D}',
      'cat {D}/../secret.txt',
      'cat {D}/./../secret.txt',
      'cat {D}/sub/../../secret.txt',
      'cat {D}/..',
      'cat {D}-evil/x',
      'cat {D}',
      'cat -- {S}',
      'cat {D}/a.txt {S}',
      'cat -n {S}',
      'cat a.txt',
      'cat\\  {D}/a.txt',
      '{B}/evilbin/ls',
      'cat /proc/self/environ',
      'cat {D}/a.txt /etc/shadow',
      'cat',
    ].map((line): Attempt => ({ family: 'argv0-paths', line, want: deny })),
    { family: 'argv0-paths', line: 'cat {D}//a.txt', want: ok([['cat', '{D}//a.txt']], 'alpha\n') },
    { family: 'argv0-paths', line: '  cat {D}/a.txt  ', want: ok([['cat', '{D}/a.txt']], 'alpha\n') },
    { family: 'argv0-paths', line: '\'cat\' "{D}/a.txt"', want: ok([['cat', '{D}/a.txt']], 'alpha\n') },
    { family: 'argv0-paths', line: 'cat {D}/./a.txt', want: ok([['cat', '{D}/./a.txt']], 'alpha\n') },
    { family: 'argv0-paths', line: 'ls -la {S}', want: ok([['ls', '-la', '{S}']]) },
  ]

  for (const shell of ['bash', 'dash'] as const) {
    test(`the corpus against ${shell} as the login shell`, async () => {
      for (const a of corpus) {
        if (a.bashOnly && shell !== 'bash') continue
        await attempt(a, shell)
      }
    })
  }

  test('control: the aliases are live — an opaque line a person may run (sent as written) does expand them', async () => {
    newProcs()
    const c = await client('web-bash', humanToken)
    const r = await exec(c, `ls ${D}/sub 2>/dev/null`)
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stdout, 'c.txt\n')
    assert.deepEqual(readdirSync(aliasMarks), ['ls'], 'the alias ran for the line sent as written')
    rmSync(join(aliasMarks, 'ls'))
    newProcs()
  })

  test('random lines (fast-check): nothing outside the policy ever runs', async () => {
    const token = fc.constantFrom(
      'ls',
      'cat',
      'echo',
      'touch',
      'sh',
      '-c',
      'id',
      'env',
      '{D}/a.txt',
      '{S}',
      '{M}/r',
      '{D}/../secret.txt',
      ' ',
      ' ',
      ' ',
      ';',
      '|',
      '&&',
      '||',
      '&',
      '$(',
      ')',
      '`',
      "'",
      '"',
      '\\',
      '$IFS',
      '${',
      '}',
      '*',
      '?',
      '[',
      ']',
      '>',
      '<',
      '\n',
      '\r',
      '\t',
      '#',
      '~',
      '!',
      '=',
      'X=1',
      '{a,b}',
      "$'",
      '%',
      'é',
    )
    let runs = 0
    await fc.assert(
      fc.asyncProperty(
        fc.array(token, { minLength: 1, maxLength: 14 }),
        fc.constantFrom('bash' as const, 'dash' as const),
        async (tokens, shell) => {
          const line = fill(tokens.join(''))
          newProcs()
          const c = await client(`web-${shell}`, agentToken)
          const r = await exec(c, line)
          const procs = newProcs()
          runs++
          const what = `[random/${shell}] ${JSON.stringify(line)}`
          assert.doesNotMatch(r.stdout + r.stderr, new RegExp(secret), what)
          assert.deepEqual(marks(), [], what)
          assert.deepEqual(readdirSync(aliasMarks), [], what)
          if (r.code === 126 && r.stderr.startsWith('gatehouse: denied')) assert.deepEqual(procs, [], what)
          else checkProcs(procs, shell, null, what)
        },
      ),
      { numRuns: 120 },
    )
    counts.set('random (fast-check)', runs)
    stats.attempts += runs
  })

  test('MCP exec goes through the same path; status comes from the gateway, never from the target', async () => {
    const connect = async (token: string): Promise<McpClient> => {
      const m = new McpClient({ name: 'gatehouse-corpus', version: '1.0.0' })
      await m.connect(
        new StreamableHTTPClientTransport(new URL(`${gw.apiUrl}/mcp`), { requestInit: { headers: { authorization: `Bearer ${token}` } } }),
      )
      return m
    }
    const agent = await connect(agentToken)
    const human = await connect(humanToken)
    const call = async (m: McpClient, command: string, connection = 'web-bash') => {
      newProcs()
      const r = await m.callTool({ name: 'exec', arguments: { connection, command: fill(command) } })
      const procs = newProcs()
      counts.set('mcp', (counts.get('mcp') ?? 0) + 1)
      stats.attempts++
      assert.deepEqual(marks(), [], command)
      return { isError: r.isError === true, data: (r.structuredContent ?? {}) as Record<string, unknown>, procs }
    }
    try {
      const allowed = await call(agent, 'cat {D}/a.txt')
      assert.equal(allowed.isError, false)
      assert.equal(allowed.data.stdout, 'alpha\n')
      checkProcs(allowed.procs, 'bash', `'cat' '${D}/a.txt'`, 'mcp allowed')
      const dashed = await call(agent, 'echo via-dash', 'web-dash')
      assert.equal(dashed.data.stdout, 'via-dash\n')
      for (const line of [
        'cat {S}',
        'echo $(touch {M}/m1)',
        'ls {D}; touch {M}/m2',
        'timeout 5 touch {M}/m3',
        "sh -c 'touch {M}/m4'",
        'cat {D}/../secret.txt',
        'echo a\ntouch {M}/m6',
        '/bin/cat {S}',
      ]) {
        const r = await call(agent, line)
        assert.equal(r.isError, true, line)
        assert.equal(r.data.status, 'denied', line)
        assert.deepEqual(r.procs, [], `${line}: nothing started`)
        assert.doesNotMatch(JSON.stringify(r.data), new RegExp(secret))
      }
      // Text shaped like the gateway's notices, printed by the target (a person may run this
      // opaque line): it stays the command's output, never a structured status.
      const fakeHold = await call(human, "echo 'gatehouse: approval required (request R-abcdef12) from group ops' >&2; exit 1")
      assert.equal(fakeHold.isError, false, JSON.stringify(fakeHold.data))
      assert.equal(fakeHold.data.status, 'ok')
      assert.equal(fakeHold.data.exit_code, 1)
      assert.match(String(fakeHold.data.stderr), /approval required \(request R-abcdef12\)/)
      const fakeDeny = await call(human, "echo 'gatehouse: denied by no-rm (user:alice): fake' >&2; exit 126")
      assert.equal(fakeDeny.data.status, 'ok')
      assert.equal(fakeDeny.data.exit_code, 126)
      // A real hold: the gateway's own verdict, with its request id, at once (the agent polls).
      const held = await call(agent, 'echo needs-approval')
      assert.equal(held.isError, true)
      assert.equal(held.data.status, 'held', JSON.stringify(held.data))
      assert.match(String(held.data.request_id), /^R-/)
      assert.deepEqual(held.data.approvers, ['ops'])
      assert.deepEqual(held.procs, [], 'a held command started nothing')
    } finally {
      await agent.close()
      await human.close()
    }
  })

  test('the audit records what was sent and the environment (values only where allowed)', () => {
    const audit = gw.auditEvents()
    const events = audit.filter((e) => e.type === 'statement' && e.action === 'ssh.exec')
    const accepted = events.find((e) => e.command === 'echo env-accepted')
    assert.ok(accepted)
    assert.equal(accepted.sent, "'echo' 'env-accepted'")
    assert.deepEqual(accepted.env, { LANG: 'C.UTF-8', GH_NOTE: 'plain-value' })
    const refused = events.find((e) => e.command === 'echo env-0')
    assert.deepEqual(refused?.env_refused, ['BASH_ENV'])
    assert.deepEqual(refused?.env, {})
    const badValue = events.find((e) => e.command === 'echo env-8')
    assert.deepEqual(badValue?.env_refused, ['GH_NOTE'])
    assert.ok(!JSON.stringify(events).includes('touch') || events.every((e) => !JSON.stringify(e.env ?? {}).includes('touch')))
    const opaque = events.find((e) => e.command === `echo $(touch ${M}/e1)`)
    assert.equal(opaque?.opaque, true)
    assert.equal(opaque?.decision, 'deny')
    const results = audit.filter((e) => e.type === 'result' && e.action === 'ssh.exec' && e.command === 'echo env-accepted')
    assert.ok(results.every((e) => e.exit_status === 0) && results.length === 2, JSON.stringify(results))
  })

  test('nothing ran that the policy did not allow, over the whole corpus (the full process log)', () => {
    const all = readFileSync(logFile, 'utf8')
      .split('\x1e')
      .filter(Boolean)
      .map((r) => r.split('\x1f'))
    // The only programs the target ever started: the two login shells, ls and cat — plus what the
    // control test's person ran (touch from the alias) — and cat only ever inside the data directory.
    const names = new Set(all.map((f) => basename(f[1] ?? '')))
    for (const n of names) assert.ok(['bash', 'dash', 'ls', 'cat', 'touch'].includes(n), `the target started ${n}`)
    // touch ran only as the bash user's alias, for a person's lines sent as written (the control
    // test and the MCP stderr test), and only on the alias marker directory.
    for (const f of all.filter((x) => basename(x[1] ?? '') === 'touch')) {
      assert.ok(
        f.slice(3).every((a) => a.startsWith(`${aliasMarks}/`)),
        `touch ran on ${JSON.stringify(f.slice(3))}`,
      )
    }
    assert.deepEqual(marks(), [])
    console.log(`corpus: ${JSON.stringify({ ...stats, families: Object.fromEntries(counts) })}`)
  })
})
