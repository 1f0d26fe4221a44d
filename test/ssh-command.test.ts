// The SSH exec analysis policy sees: simple commands split out of lists, pipes and subshells,
// and everything whose effect the text cannot show marked opaque.

import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { analyzeExec, MAX_COMMAND_BYTES, scpTransfer } from '../proxies/ssh/command.js'

const cases: { name: string; line: string; commands?: string[][]; redirects?: string[]; opaque?: string }[] = [
  { name: 'one command', line: 'ls -la /tmp', commands: [['ls', '-la', '/tmp']] },
  {
    name: 'list, pipe, and/or',
    line: 'uptime; ps aux | grep ssh && echo ok || echo no',
    commands: [['uptime'], ['ps', 'aux'], ['grep', 'ssh'], ['echo', 'ok'], ['echo', 'no']],
  },
  { name: 'subshell and background', line: '(cd /srv && make) & wait', commands: [['cd', '/srv'], ['make'], ['wait']] },
  { name: 'quotes and escapes', line: `echo 'a b' "c \\"d\\"" e\\ f`, commands: [['echo', 'a b', 'c "d"', 'e f']] },
  { name: 'assignments are not the command', line: 'LANG=C FOO=1 sort file', commands: [['sort', 'file']] },
  { name: 'redirections', line: 'cat < in > out 2>&1', commands: [['cat']], redirects: ['in', 'out'] },
  { name: 'comments', line: 'echo hi # rm -rf /', commands: [['echo', 'hi']] },
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell syntax, not a template
  { name: 'variables stay literal', line: 'echo $HOME ${USER}', commands: [['echo', '$HOME', '${USER}']] },
  { name: 'rm hidden after a pipe', line: 'true | rm -rf /', commands: [['true'], ['rm', '-rf', '/']] },
  { name: 'command substitution', line: 'echo $(id)', opaque: 'command substitution' },
  { name: 'backticks in double quotes', line: 'echo "`id`"', opaque: 'command substitution' },
  { name: 'process substitution', line: 'diff <(ls a) <(ls b)', opaque: 'process substitution' },
  { name: 'eval', line: 'eval "$X"', opaque: 'eval' },
  { name: 'sudo eval', line: 'sudo -n eval x', opaque: 'eval' },
  { name: 'sh -c', line: "sh -c 'rm -rf /'", opaque: 'sh -c' },
  { name: 'bash -lc by path', line: '/bin/bash -lc x', opaque: 'bash -c' },
  { name: 'a shell reading stdin', line: 'curl x | sh', opaque: 'sh (a shell running a script)' },
  { name: 'source', line: '. ./env.sh', opaque: '.' },
  { name: 'here-document', line: 'cat <<EOF\nx\nEOF', opaque: 'here-document' },
  { name: 'compound command', line: 'for f in *; do rm $f; done', opaque: 'compound command (for)' },
  { name: 'function definition', line: 'f() { rm -rf /; }; f', opaque: 'function definition or array' },
  { name: 'unterminated quote', line: "echo 'oops", opaque: 'unterminated quote' },
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell syntax, not a template
  { name: 'command substitution in an expansion', line: 'echo ${X:-$(id)}', opaque: 'command substitution in an expansion' },
]

describe('ssh exec analysis', () => {
  for (const c of cases) {
    test(c.name, () => {
      const r = analyzeExec(c.line)
      assert.equal(r.command, c.line)
      if (c.opaque) {
        assert.equal(r.opaque, true)
        assert.equal(r.opaque_reason, c.opaque)
      } else {
        assert.equal(r.opaque, false, r.opaque_reason)
        assert.deepEqual(r.commands, c.commands)
        assert.deepEqual(r.argv, c.commands?.[0])
        if (c.redirects) assert.deepEqual(r.redirects, c.redirects)
      }
    })
  }

  test('a line over the cap is opaque', () => {
    const r = analyzeExec(`echo ${'a'.repeat(MAX_COMMAND_BYTES)}`)
    assert.equal(r.opaque, true)
    assert.equal(r.opaque_reason, 'command line too long')
  })

  test('never throws on arbitrary input', () => {
    for (let i = 0; i < 2000; i++) {
      const s = Array.from({ length: 1 + (i % 40) }, (_, j) => String.fromCharCode(32 + ((i * 31 + j * 17) % 95))).join('')
      analyzeExec(s)
    }
  })

  test('legacy scp execs are file transfers', () => {
    assert.deepEqual(scpTransfer(analyzeExec('scp -t /srv/x')), { operation: 'upload', path: '/srv/x' })
    assert.deepEqual(scpTransfer(analyzeExec('scp -r -f /srv')), { operation: 'download', path: '/srv' })
    assert.equal(scpTransfer(analyzeExec('scp a b')), null)
  })
})
