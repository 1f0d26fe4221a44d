// The README walkthrough ("Five more"), run as written: its shell blocks are read from the README
// (or from docs/, wherever the walkthrough lives), with `npx gatehouse` pointing at this checkout
// and the fixed ports it documents replaced by free ones. The copied bundle with the
// walkthrough's masking edit passes `gatehouse policy test`; masking applies through psql; the
// SSH step starts a real sshd as the reader would, adds the `ops` rule, restarts the gateway with
// an SSH listener, and an `ssh` client with a registered key runs an allowed command and is
// refused an opaque one.

import assert from 'node:assert/strict'
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { BIN, REPO } from './helpers/gateway.js'
import { freePort } from './helpers/sshd.js'

/** Every ```sh block of the README and docs/*.md, in order. */
function shellBlocks(): string[] {
  const files = [join(REPO, 'README.md'), ...readdirSync(join(REPO, 'docs')).map((f) => join(REPO, 'docs', f))]
  const blocks: string[] = []
  for (const f of files) {
    if (!f.endsWith('.md')) continue
    for (const m of readFileSync(f, 'utf8').matchAll(/^```sh\n([\s\S]*?)^```$/gm)) blocks.push(m[1] ?? '')
  }
  return blocks
}

/** The one block that contains `marker` (the walkthrough step), with the documented ports replaced. */
function block(marker: string, ports: Record<string, number>): string {
  const found = shellBlocks().filter((b) => b.includes(marker))
  assert.equal(found.length, 1, `exactly one shell block of the docs contains ${JSON.stringify(marker)}`)
  let text = found[0] as string
  for (const [from, to] of Object.entries(ports)) text = text.replace(new RegExp(`\\b${from}\\b`, 'g'), String(to))
  return text
}

describe('README walkthrough: masking with policy tests that agree, and SSH', () => {
  let dir: string
  let ports: Record<string, number>
  let gw: ChildProcess | null = null
  let gwOut = ''
  /** `npx gatehouse …` runs this checkout's CLI; everything else is as a reader's shell runs it. */
  let prelude: string

  const sh = (script: string, opts: { allowFail?: boolean } = {}): { code: number | null; out: string } => {
    const r = spawnSync('bash', ['-c', `${prelude}\n${script}`], { cwd: dir, encoding: 'utf8', timeout: 120_000 })
    const out = `${r.stdout}${r.stderr}`
    if (!opts.allowFail) assert.equal(r.status, 0, `the walkthrough step failed:\n${script}\n---\n${out}`)
    return { code: r.status, out }
  }

  /** Runs a step's lines except the one that starts the gateway in the foreground. */
  const setupLines = (text: string): string =>
    text
      .split('\n')
      .filter((l) => !/^npx gatehouse serve\b/.test(l))
      .join('\n')

  const startGateway = async (): Promise<void> => {
    rmSync(join(dir, 'gatehouse-data', 'run.json'), { force: true })
    gwOut = ''
    const p = spawn(process.execPath, [BIN, 'serve', '--config', 'gatehouse.yaml', '--log-format', 'json'], {
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    gw = p
    p.stdout?.on('data', (b: Buffer) => {
      gwOut += b.toString()
    })
    p.stderr?.on('data', (b: Buffer) => {
      gwOut += b.toString()
    })
    const deadline = Date.now() + 60_000
    while (!existsSync(join(dir, 'gatehouse-data', 'run.json'))) {
      if (p.exitCode !== null) assert.fail(`the gateway exited:\n${gwOut}`)
      if (Date.now() > deadline) assert.fail(`the gateway did not start:\n${gwOut}`)
      await new Promise((r) => setTimeout(r, 100))
    }
  }

  const stopGateway = async (): Promise<void> => {
    const p = gw
    gw = null
    if (!p || p.exitCode !== null) return
    const exited = new Promise((r) => p.once('exit', r))
    p.kill('SIGINT') // Ctrl-C, as the walkthrough says
    await exited
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gh-walk-'))
    // The reader is in a checkout: `cp -r policies demo-policies` copies the default bundle.
    cpSync(join(REPO, 'policies'), join(dir, 'policies'), { recursive: true })
    ports = { 8080: await freePort(), 15432: await freePort(), 2222: await freePort(), 2200: await freePort() }
    prelude = `set -euo pipefail\nnpx() { if [ "$1" = gatehouse ]; then shift; node ${JSON.stringify(BIN)} "$@"; else command npx "$@"; fi; }`
  })

  after(async () => {
    await stopGateway()
    const pid = join(dir, 'demo-ssh', 'sshd.pid')
    if (existsSync(pid)) {
      try {
        process.kill(Number(readFileSync(pid, 'utf8').trim()), 'SIGTERM')
      } catch {
        // already gone
      }
    }
    rmSync(dir, { recursive: true, force: true })
  })

  test('the masking edit, its cases and the copied ones pass `gatehouse policy test`', () => {
    const step = block('cat > demo-policies/masking.yaml', ports)
    assert.match(step, /npx gatehouse policy test demo-policies/)
    const r = sh(setupLines(step))
    assert.match(r.out, /PASS/)
    assert.doesNotMatch(r.out, /FAIL/)
  })

  test('the gateway from that config masks email for Alice and not for Carol', async () => {
    await startGateway()
    const q = (token: string, sql: string): string =>
      sh(
        `PGPASSWORD=${token} psql -X -At -v ON_ERROR_STOP=1 "host=127.0.0.1 port=${ports[15432]} dbname=app user=x sslmode=require" -c ${JSON.stringify(sql)}`,
      ).out.trim()
    // The table the walkthrough creates once a DBA approves; made directly here (approvals have
    // their own tests).
    const table = `walk_${process.pid}`
    const direct = (sql: string): string =>
      sh(`psql -X -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p 5432 -U postgres -d test -c ${JSON.stringify(sql)}`).out
    direct(`CREATE TABLE ${table} (id serial, name text, email text)`)
    try {
      direct(`INSERT INTO ${table} (name, email) VALUES ('Ann Lee', 'ann.lee@example.com')`)
      const alice = sh('npx gatehouse token create --subject user:alice --group writers --group dba --ttl 1h').out.trim()
      const carol = sh('npx gatehouse token create --subject user:carol --group pii-readers --ttl 1h').out.trim()
      assert.equal(q(alice, `SELECT name, email FROM ${table}`), 'Ann Lee|****.com')
      assert.equal(q(carol, `SELECT name, email FROM ${table}`), 'Ann Lee|ann.lee@example.com')
    } finally {
      direct(`DROP TABLE ${table}`)
    }
  })

  test('SSH: a reader-started sshd, the ops rule, a registered key: allowed and refused commands', async () => {
    // sshd started as the reader starts it, and the ops rule.
    sh(block('demo-ssh/sshd_config <<EOF', ports))
    const policy = sh('npx gatehouse policy test demo-policies')
    assert.match(policy.out, /PASS/)
    await stopGateway()
    sh(setupLines(block('protocol: ssh', ports)))
    await startGateway()
    const client = block('npx gatehouse ssh add-key user:dave', ports)
    // The refused line exits 126: run the block as a reader's shell would, without stopping there.
    const r = sh(`set +e\n${client}`, { allowFail: true })
    const lines = r.out.split('\n')
    assert.ok(lines.includes('Linux'), `uname -s ran on the target:\n${r.out}`)
    assert.match(r.out, /gatehouse: denied: .*ssh\.exec/)
    const audit = sh('npx gatehouse audit list --json --type statement').out
    const events = audit
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((e) => e.action === 'ssh.exec')
    assert.deepEqual(
      events.map((e) => [e.decision, e.command]),
      [
        ['allow', 'uname -s'],
        ['deny', 'echo $HOME'],
      ],
    )
    assert.deepEqual(events[0]?.chain, ['user:dave'])
  })
})
