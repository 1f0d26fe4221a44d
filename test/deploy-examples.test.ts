// examples/deploy/ stays in step with the gateway: its configuration loads, and the commands the
// systemd unit and the container build file run are commands `gatehouse` has, with flags it takes.
// Where `systemd-analyze` exists the unit is verified by it (with ExecStart pointed at this
// checkout's bin). Neither the unit nor the image is run: no systemd as init and no container
// runtime on the test machine.

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { loadConfigFile } from '../engine/config/config.js'
import { BIN, REPO } from './helpers/gateway.js'

const DEPLOY = join(REPO, 'examples', 'deploy')

describe('examples/deploy', () => {
  test('gatehouse.yaml is a valid configuration', () => {
    const c = loadConfigFile(join(DEPLOY, 'gatehouse.yaml'))
    assert.equal(c.metrics.auth, 'admin')
    assert.equal(c.dataDir, '/var/lib/gatehouse')
  })

  test('the unit and the Containerfile run `serve` with flags it takes', () => {
    const help = spawnSync(process.execPath, [BIN, 'serve', '--help'], { encoding: 'utf8', timeout: 120_000 })
    assert.equal(help.status, 0, help.stderr)
    const unit = readFileSync(join(DEPLOY, 'gatehouse.service'), 'utf8')
    const exec = /^ExecStart=\S+ (.*)$/m.exec(unit)?.[1] ?? ''
    const image = readFileSync(join(DEPLOY, 'Containerfile'), 'utf8')
    const entry = (JSON.parse(/^ENTRYPOINT (\[.*\])$/m.exec(image)?.[1] ?? '[]') as string[]).slice(1).join(' ')
    assert.match(image, /^# UNTESTED HERE/m, 'the build file says it is untested here')
    for (const line of [exec, entry]) {
      assert.match(line, /^serve /)
      for (const flag of line.match(/--[a-z-]+/g) ?? []) assert.ok(help.stdout.includes(flag), `serve takes ${flag}`)
    }
  })

  test('systemd-analyze verify accepts the unit', (t) => {
    if (spawnSync('sh', ['-c', 'command -v systemd-analyze']).status !== 0) {
      t.skip('systemd-analyze is not installed')
      return
    }
    const dir = mkdtempSync(join(tmpdir(), 'gh-unit-'))
    try {
      const unit = join(dir, 'gatehouse.service')
      writeFileSync(unit, readFileSync(join(DEPLOY, 'gatehouse.service'), 'utf8').replaceAll('/usr/local/bin/gatehouse', BIN))
      const r = spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8', timeout: 60_000 })
      assert.equal(r.status, 0, r.stderr)
      assert.equal(r.stderr.trim(), '', r.stderr)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
