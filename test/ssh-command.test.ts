// The SSH exec analysis: plain words joined by | && || ; are argv lists, re-quoted for the target;
// anything a shell would read as more than words is opaque; programs that run other commands are
// opaque unless their grammar is modelled (timeout, nice), whose inner argv is listed too. The
// re-quoting is checked against the real bash and dash: what they run is exactly the judged argv.

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { describe, test } from 'node:test'
import fc from 'fast-check'
import { analyzeExec, MAX_COMMAND_BYTES, requote, shellQuote } from '../proxies/ssh/command.js'

const plain: { name: string; line: string; commands: string[][]; operators?: string[]; programs?: string[][]; sent?: string }[] = [
  { name: 'one command', line: 'ls -la /tmp', commands: [['ls', '-la', '/tmp']], sent: "'ls' '-la' '/tmp'" },
  {
    name: 'list, pipe, and/or',
    line: 'uptime; ps aux | grep ssh && echo ok || echo no',
    commands: [['uptime'], ['ps', 'aux'], ['grep', 'ssh'], ['echo', 'ok'], ['echo', 'no']],
    operators: [';', '|', '&&', '||'],
    sent: "'uptime' ; 'ps' 'aux' | 'grep' 'ssh' && 'echo' 'ok' || 'echo' 'no'",
  },
  { name: 'quotes and escapes', line: `echo 'a b' "c \\"d\\"" e\\ f`, commands: [['echo', 'a b', 'c "d"', 'e f']] },
  {
    name: 'quoted metacharacters are words',
    line: `echo '$(id)' "*" '\`x\`' ';' '|'`,
    commands: [['echo', '$(id)', '*', '`x`', ';', '|']],
  },
  { name: 'a single quote inside', line: `echo "it's"`, commands: [['echo', "it's"]], sent: `'echo' 'it'\\''s'` },
  { name: 'a trailing semicolon', line: 'ls;', commands: [['ls']], operators: [] },
  { name: 'path-qualified argv0 as is', line: '/bin/ls ./x', commands: [['/bin/ls', './x']] },
  { name: 'newline inside quotes', line: "echo 'a\nb'", commands: [['echo', 'a\nb']] },
  {
    name: 'timeout: the inner argv is a program too',
    line: 'timeout 5 ls /srv',
    commands: [['timeout', '5', 'ls', '/srv']],
    programs: [
      ['timeout', '5', 'ls', '/srv'],
      ['ls', '/srv'],
    ],
  },
  {
    name: 'nice -n over timeout',
    line: 'nice -n 10 timeout 1.5s cat /srv/a',
    commands: [['nice', '-n', '10', 'timeout', '1.5s', 'cat', '/srv/a']],
    programs: [
      ['nice', '-n', '10', 'timeout', '1.5s', 'cat', '/srv/a'],
      ['timeout', '1.5s', 'cat', '/srv/a'],
      ['cat', '/srv/a'],
    ],
  },
  { name: 'find without -exec', line: 'find /srv -name x', commands: [['find', '/srv', '-name', 'x']] },
]

const opaque: { name: string; line: string; reason: RegExp }[] = [
  { name: 'command substitution', line: 'echo $(id)', reason: /command substitution/ },
  { name: 'backticks', line: 'echo `id`', reason: /command substitution/ },
  { name: 'backticks in double quotes', line: 'echo "`id`"', reason: /expansion in double quotes/ },
  { name: 'a variable', line: 'echo $HOME', reason: /parameter expansion/ },
  { name: 'a variable in double quotes', line: 'echo "$HOME"', reason: /expansion in double quotes/ },
  { name: 'ANSI-C quote', line: "echo $'\\x41'", reason: /ANSI-C/ },
  { name: 'glob', line: 'cat /srv/*', reason: /glob/ },
  { name: 'question glob', line: 'cat /etc/passw?', reason: /glob/ },
  { name: 'bracket glob', line: 'cat /etc/[p]asswd', reason: /glob/ },
  { name: 'brace list', line: 'cat /srv/{a,b}', reason: /brace/ },
  { name: 'tilde', line: 'ls ~root', reason: /tilde/ },
  { name: 'assignment prefix', line: 'PATH=/tmp ls', reason: /assignment/ },
  { name: 'quoted assignment', line: "'X=1' ls", reason: /assignment/ },
  { name: 'redirection', line: 'echo hi > /tmp/x', reason: /redirection/ },
  { name: 'fd redirection', line: 'ls 2>&1', reason: /redirection/ },
  { name: 'here-document', line: 'cat <<EOF\nx\nEOF', reason: /redirection/ },
  { name: 'comment', line: 'echo hi # rm -rf /', reason: /comment/ },
  { name: 'subshell', line: '(ls)', reason: /subshell/ },
  { name: 'process substitution', line: 'diff <(ls a) <(ls b)', reason: /redirection/ },
  { name: 'background', line: 'ls & id', reason: /background/ },
  { name: 'newline', line: 'ls\nid', reason: /line break/ },
  { name: 'carriage return', line: 'ls\rid', reason: /line break/ },
  { name: 'NUL', line: 'ls\0id', reason: /NUL/ },
  { name: 'control character in quotes', line: "echo '\x1b[2J'", reason: /control character/ },
  { name: 'negation', line: '! ls', reason: /negation/ },
  { name: 'quoted keyword', line: "'if' true", reason: /keyword/ },
  { name: 'unterminated quote', line: "echo 'oops", reason: /unterminated/ },
  { name: 'empty command', line: '; ls', reason: /empty command/ },
  { name: 'trailing pipe', line: 'ls |', reason: /empty command/ },
  { name: 'eval', line: 'eval id', reason: /eval runs/ },
  { name: 'sh -c', line: "sh -c 'id'", reason: /sh runs/ },
  { name: 'bash by path', line: '/bin/bash -lc x', reason: /bash runs/ },
  { name: 'a shell reading stdin', line: 'ls | sh', reason: /sh runs/ },
  { name: 'sudo', line: 'sudo ls', reason: /sudo runs/ },
  { name: 'env', line: 'env ls', reason: /env runs/ },
  { name: 'xargs', line: 'ls | xargs rm', reason: /xargs runs/ },
  { name: 'exec', line: 'exec ls', reason: /exec runs/ },
  { name: 'python -c', line: "python3 -c 'print(1)'", reason: /python3 runs/ },
  { name: 'find -exec', line: 'find . -exec id ;', reason: /empty command|find -exec/ },
  { name: 'find -exec quoted', line: "find . -exec id ';'", reason: /find -exec/ },
  { name: 'timeout with options', line: 'timeout -s KILL 5 ls', reason: /timeout with options/ },
  { name: 'timeout wrapping sh', line: 'timeout 5 sh', reason: /sh runs/ },
  { name: 'nice legacy', line: 'nice -5 ls', reason: /nice with options/ },
  { name: 'trap', line: "trap 'id' EXIT", reason: /trap runs/ },
  { name: 'test -v subscript', line: "test -v 'a[$(id)]'", reason: /subscript/ },
  { name: 'printf -v', line: "printf -v 'a[$(id)]' x", reason: /printf -v/ },
  { name: 'dot', line: '. ./x', reason: /\. runs/ },
]

describe('ssh exec analysis', () => {
  for (const c of plain) {
    test(`plain: ${c.name}`, () => {
      const r = analyzeExec(c.line)
      assert.equal(r.opaque, false, r.opaque_reason)
      assert.equal(r.command, c.line)
      assert.deepEqual(r.commands, c.commands)
      assert.deepEqual(r.argv, c.commands[0])
      if (c.operators) assert.deepEqual(r.operators, c.operators)
      assert.deepEqual(r.programs, c.programs ?? c.commands)
      assert.equal(r.sent, c.sent ?? requote(r.commands, r.operators))
      assert.deepEqual(r.redirects, [])
    })
  }
  for (const c of opaque) {
    test(`opaque: ${c.name}`, () => {
      const r = analyzeExec(c.line)
      assert.equal(r.opaque, true, JSON.stringify(r.commands))
      assert.match(String(r.opaque_reason), c.reason)
      assert.deepEqual([r.argv, r.commands, r.programs], [[], [], []])
      assert.equal(r.sent, c.line, 'an opaque line is sent as written (if a policy allows it)')
    })
  }

  test('a line over the cap is opaque', () => {
    const r = analyzeExec(`echo ${'a'.repeat(MAX_COMMAND_BYTES)}`)
    assert.equal(r.opaque, true)
    assert.match(String(r.opaque_reason), /too long/)
  })

  test('never throws, and a plain line always re-quotes to its own argv (fast-check)', () => {
    const alphabet = fc.constantFrom(...`ab /-.'"\\$\`*?[]{}~<>()#!;|&= \t\n\r\0é`.split(''))
    fc.assert(
      fc.property(fc.array(alphabet, { maxLength: 40 }), (chars) => {
        const r = analyzeExec(chars.join(''))
        if (!r.opaque) {
          assert.equal(analyzeExec(r.sent).sent, r.sent, 'the sent line analyses to the same argv')
          assert.deepEqual(analyzeExec(r.sent).commands, r.commands)
        }
      }),
      { numRuns: 3000 },
    )
  })

  test('bash and dash run exactly the re-quoted words (fast-check against the real shells)', () => {
    const word = fc.string({ unit: fc.constantFrom(...`a /'"\\$\`*?[]{}~<>()#!;|&=\t\n%é`.split('')), maxLength: 12 })
    fc.assert(
      fc.property(fc.array(word, { minLength: 1, maxLength: 6 }), (words) => {
        const line = `printf '%s\\0' ${words.map(shellQuote).join(' ')}`
        for (const shell of ['/bin/bash', '/bin/dash']) {
          const r = spawnSync(shell, ['-c', line], { encoding: 'utf8', cwd: '/' })
          assert.equal(r.status, 0, r.stderr)
          assert.deepEqual(r.stdout.split('\0').slice(0, -1), words, shell)
        }
      }),
      { numRuns: 60 },
    )
  })
})
