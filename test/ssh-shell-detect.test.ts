// Best-effort detection of shell command lines from PTY input: a table of keystroke sequences and
// the line a readline-like editor would run, with what it cannot know flagged as uncertain.

import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { type DetectedCommand, MAX_LINE, ShellCommandDetector } from '../proxies/ssh/shell-detect.js'

/** Types `keys`, then the remote side prints `echo` (by default each wanted line after a prompt). */
function detect(keys: string, echo: string): DetectedCommand[] {
  const got: DetectedCommand[] = []
  const d = new ShellCommandDetector((c) => got.push(c))
  d.output(Buffer.from('user@host:~$ '))
  for (const ch of keys) d.input(Buffer.from(ch))
  d.output(Buffer.from(echo))
  return got
}

function shown(lines: readonly string[]): string {
  return lines.map((l) => `user@host:~$ ${l}\r\noutput of it\r\n`).join('')
}

const cases: { name: string; keys: string; want: string[]; uncertain?: boolean }[] = [
  { name: 'a plain line', keys: 'ls -la /tmp\r', want: ['ls -la /tmp'] },
  { name: 'two lines, LF', keys: 'id\nuname -a\n', want: ['id', 'uname -a'] },
  { name: 'backspace (DEL and Ctrl-H)', keys: 'rmx\x7f -f y\x08x\r', want: ['rm -f x'] },
  { name: 'Ctrl-U kills to the start', keys: 'rm -rf /\x15echo safe\r', want: ['echo safe'] },
  { name: 'Ctrl-W deletes a word', keys: 'cat /etc/shadow\x17/etc/hosts\r', want: ['cat /etc/hosts'] },
  { name: 'cursor movement and insert', keys: 'echo world\x1b[D\x1b[D\x1b[D\x1b[D\x1b[Dhello \r', want: ['echo hello world'] },
  { name: 'Ctrl-A then type, Ctrl-K', keys: 'whoami extra\x01sudo \x05\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x0b\r', want: ['sudo whoami'] },
  { name: 'Ctrl-C abandons the line', keys: 'rm -rf /\x03ls\r', want: ['ls'] },
  { name: 'empty lines are not commands', keys: '\r\r  \r', want: [] },
  { name: 'history recall is uncertain', keys: '\x1b[A\r', want: [] },
  { name: 'history recall then edit is uncertain', keys: 'x\x1b[Ax\r', want: ['xx'], uncertain: true },
  { name: 'tab completion is uncertain', keys: 'cat /etc/pas\td\r', want: ['cat /etc/pasd'], uncertain: true },
  { name: 'bracketed paste keeps its text', keys: '\x1b[200~echo pasted\x1b[201~\r', want: ['echo pasted'] },
  { name: 'delete key', keys: 'lsx\x1b[D\x1b[3~\r', want: ['ls'] },
]

describe('shell command detection', () => {
  for (const c of cases) {
    test(c.name, () => {
      const got = detect(c.keys, shown(c.want))
      assert.deepEqual(
        got.map((g) => g.line),
        c.want,
      )
      if (c.uncertain !== undefined) assert.equal(got[0]?.uncertain, c.uncertain)
      else for (const g of got) assert.equal(g.uncertain, false, g.line)
    })
  }

  test('input the remote side did not echo (a password prompt) is never reported', () => {
    assert.deepEqual(detect('hunter2-secret\r', '[sudo] password for alice: \r\nfile-a file-b\r\n'), [])
  })

  test('the echo is followed through backspaces, cursor moves and erases, as a terminal draws it', () => {
    // bash echoes a backspace at the end as "\b \b", a mid-line edit as a redraw of the tail.
    const echo = 'rmx\b \b -f y\b \bx\r\n'
    assert.deepEqual(
      detect('rmx\x7f -f y\x08x\r', echo).map((g) => g.line),
      ['rm -f x'],
    )
    const mid = 'echo world\b\b\b\b\b\x1b[1@h\x1b[1@i\x1b[1@ \r\n'
    assert.deepEqual(
      detect('echo world\x1b[D\x1b[D\x1b[D\x1b[D\x1b[Dhi \r', mid).map((g) => g.line),
      ['echo hi world'],
    )
  })

  test('a line over the cap is reported cut and flagged', () => {
    const long = `${'a'.repeat(MAX_LINE + 10)}`
    const got = detect(`${long}\r`, `${long}\r\n`)
    assert.equal(got[0]?.line.length, MAX_LINE)
    assert.equal(got[0]?.truncated, true)
  })

  test('arbitrary bytes never throw', () => {
    const d = new ShellCommandDetector(() => undefined)
    for (let i = 0; i < 2000; i++) d.input(Buffer.from([Math.floor(Math.random() * 256), 0x1b, 0x5b, Math.floor(Math.random() * 256)]))
  })
})
