// Env requests and terminal names (proxies/ssh/env.ts), the per-source admission bounds
// (proxies/ssh/admission.ts) and the MCP status line (proxies/ssh/status.ts), as tables. The end to
// end checks against a real sshd are in ssh-exec-corpus and ssh-robustness.

import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { sourceOf } from '../proxies/ssh/admission.js'
import { auditEnv, EnvRequests, envSettingProblems, MAX_ENV, TERM_NAME } from '../proxies/ssh/env.js'
import { statusLine, takeStatus } from '../proxies/ssh/status.js'

describe('ssh env requests', () => {
  const cases: { name: string; allow: string[]; key: string; value: string; ok: boolean }[] = [
    { name: 'a listed name with a plain value', allow: ['LANG'], key: 'LANG', value: 'C.UTF-8', ok: true },
    { name: 'a NAME_* prefix', allow: ['LC_*'], key: 'LC_TIME', value: 'en_GB.UTF-8', ok: true },
    { name: 'not listed', allow: ['LANG'], key: 'TZ', value: 'UTC', ok: false },
    { name: 'nothing listed', allow: [], key: 'LANG', value: 'C', ok: false },
    { name: 'a command substitution in the value', allow: ['LANG'], key: 'LANG', value: '$(id)', ok: false },
    { name: 'an array subscript in the value', allow: ['X_*'], key: 'X_A', value: 'a[$(id)]', ok: false },
    { name: 'whitespace in the value', allow: ['LANG'], key: 'LANG', value: 'C UTF-8', ok: false },
    { name: 'a newline in the value', allow: ['LANG'], key: 'LANG', value: 'C\nid', ok: false },
    { name: 'a value too long', allow: ['LANG'], key: 'LANG', value: 'a'.repeat(257), ok: false },
    { name: 'BASH_ENV even if listed', allow: ['BASH_ENV'], key: 'BASH_ENV', value: '/tmp/x', ok: false },
    { name: 'LD_PRELOAD through a prefix', allow: ['L*'], key: 'LD_PRELOAD', value: '/tmp/x.so', ok: false },
    { name: 'a bash function', allow: ['BASH_*'], key: 'BASH_FUNC_ls%%', value: 'x', ok: false },
    { name: 'PATH', allow: ['PATH'], key: 'PATH', value: '/tmp', ok: false },
    { name: 'not a variable name', allow: ['*'], key: 'A-B', value: 'x', ok: false },
    { name: 'TERM must be a terminal name', allow: ['TERM'], key: 'TERM', value: 'xterm=1', ok: false },
    { name: 'TERM', allow: ['TERM'], key: 'TERM', value: 'xterm-256color', ok: true },
    { name: 'a locale that is a path (glibc loads locale files from it)', allow: ['LC_*'], key: 'LC_ALL', value: '/srv/x', ok: false },
    { name: 'a relative locale path', allow: ['LANG'], key: 'LANG', value: 'x/../../srv', ok: false },
    { name: 'a locale with a modifier', allow: ['LC_*'], key: 'LC_MESSAGES', value: 'de_DE.UTF-8@euro', ok: true },
    { name: 'LANGUAGE as a list of locale names', allow: ['LANGUAGE'], key: 'LANGUAGE', value: 'de_DE:en', ok: true },
    { name: 'LANGUAGE with a path', allow: ['LANGUAGE'], key: 'LANGUAGE', value: 'de:/srv/x', ok: false },
    { name: 'a zoneinfo name', allow: ['TZ'], key: 'TZ', value: 'Europe/Berlin', ok: true },
    { name: 'a POSIX time-zone rule', allow: ['TZ'], key: 'TZ', value: 'CET-1CEST,M3.5.0,M10.5.0/3', ok: true },
    { name: 'a time zone that is an absolute path', allow: ['TZ'], key: 'TZ', value: '/srv/x/tz', ok: false },
    { name: 'a time zone that is a file by glibc (leading colon)', allow: ['TZ'], key: 'TZ', value: ':srv', ok: false },
    { name: 'a time zone climbing out of zoneinfo', allow: ['TZ'], key: 'TZ', value: '../../../srv/x', ok: false },
    { name: 'TZDIR even if listed', allow: ['TZDIR'], key: 'TZDIR', value: '/srv/x', ok: false },
    { name: 'TERMINFO even if listed', allow: ['TERM*'], key: 'TERMINFO', value: '/srv/x', ok: false },
    { name: 'a listed plain name may hold a path', allow: ['FOO'], key: 'FOO', value: '/srv/x', ok: true },
  ]
  for (const c of cases) {
    test(c.name, () => {
      const e = new EnvRequests(c.allow)
      assert.equal(e.offer(c.key, c.value), c.ok)
      assert.deepEqual(e.forPolicy().env, c.ok ? { [c.key]: c.value } : {})
      if (!c.ok) assert.ok(!JSON.stringify(e.forPolicy()).includes(c.value) || c.value === 'x', 'a refused value is never kept')
    })
  }

  test('at most MAX_ENV variables, refused names kept for the audit', () => {
    const e = new EnvRequests(['V_*'])
    for (let i = 0; i < MAX_ENV + 3; i++) e.offer(`V_${i}`, 'x')
    assert.equal(Object.keys(e.accepted).length, MAX_ENV)
    assert.deepEqual(e.forPolicy().env_refused, ['V_32', 'V_33', 'V_34'])
  })

  test('the audit gets values only when the command was allowed', () => {
    assert.deepEqual(auditEnv({ env: { LANG: 'C' }, argv: ['ls'] }, true), { env: { LANG: 'C' }, argv: ['ls'] })
    assert.deepEqual(auditEnv({ env: { LANG: 'C' }, argv: ['ls'] }, false), { argv: ['ls'], env_names: ['LANG'] })
  })

  test('the connection setting is checked', () => {
    assert.deepEqual(envSettingProblems(undefined), [])
    assert.deepEqual(envSettingProblems(['LANG', 'LC_*']), [])
    assert.equal(envSettingProblems('LANG').length, 1)
    assert.equal(envSettingProblems(['*']).length, 1)
    assert.equal(envSettingProblems(['LD_PRELOAD']).length, 1)
    assert.equal(envSettingProblems(['BASH_FUNC_*']).length, 1)
  })

  test('terminal names', () => {
    for (const t of ['xterm', 'xterm-256color', 'screen.xterm-256color', 'vt100+fnkeys', 'rxvt-unicode_x']) assert.ok(TERM_NAME.test(t), t)
    for (const t of ['', '-x', '../x', 'xterm;id', 'xterm$(id)', 'a b', 'x\n', 'x'.repeat(65)]) assert.ok(!TERM_NAME.test(t), t)
  })
})

describe('ssh admission sources', () => {
  test('IPv4, IPv4-mapped and IPv6 /64', () => {
    assert.equal(sourceOf('127.0.0.2'), '127.0.0.2')
    assert.equal(sourceOf('::ffff:10.1.2.3'), '10.1.2.3')
    assert.equal(sourceOf('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64')
    assert.equal(sourceOf('2001:db8:1:2::9'), '2001:db8:1:2::/64')
    assert.equal(sourceOf('2001:0db8::1'), '2001:db8:0:0::/64')
    assert.equal(sourceOf('::1'), '0:0:0:0::/64')
    assert.equal(sourceOf(undefined), '?')
  })
})

describe('the gateway status line', () => {
  const tag = 'a'.repeat(32)
  test("only the line with the caller's tag is the gateway's", () => {
    const denied = { status: 'denied' as const, rule: 'r', hop: 'user:a', reason: 'no', message: 'gatehouse: denied: no' }
    const stderr = `gatehouse: approval required (request R-1) from group ops\ngatehouse-status ${'b'.repeat(32)} {"status":"held","request_id":"R-x","approvers":[],"rules":[],"message":"m"}\n${statusLine(tag, denied)}`
    const r = takeStatus(stderr, tag)
    assert.deepEqual(r.status, denied)
    assert.match(r.stderr, /approval required/)
    assert.match(r.stderr, /gatehouse-status b{32}/)
  })
  test('a malformed status line stays output', () => {
    const r = takeStatus(`gatehouse-status ${tag} {"status":"held"}\n`, tag)
    assert.equal(r.status, null)
    assert.match(r.stderr, /gatehouse-status/)
  })
})
