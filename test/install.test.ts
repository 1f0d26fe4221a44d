// Installable outside the checkout: `npm pack` (its prepack compiles the default policy bundle)
// gives a tarball that `npm install -g --prefix <tmp> --prefer-offline` installs, the packages
// from npm's cache (filled by `npm run setup`) and only the registry's version lists fetched (a
// lock-file install does not cache those, so a fresh machine has none), and the installed `gatehouse` serves psql from an
// empty directory, with `--config` and with `--dev`, with no opa compiler to be found and no
// file of the checkout in reach. The pack runs in a copy of the built package, so the checkout's
// dist/ is not written while other test files use it. better-sqlite3's binary comes as npm
// installs get it on common platforms, a prebuilt archive (prebuild-install), here made from the
// checkout's own build and offered as a local prebuild: compiling it again would take minutes.

import assert from 'node:assert/strict'
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { freePort } from './helpers/sshd.js'
import { REPO } from './helpers/gateway.js'

/** The environment of a machine where only the installed package exists: no opa, no checkout. */
function cleanEnv(home: string): NodeJS.ProcessEnv {
  const path = (process.env.PATH ?? '')
    .split(':')
    .filter((d) => d !== '' && !existsSync(join(d, 'opa')))
    .join(':')
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: path, HOME: home, GOPATH: join(home, 'no-go') }
  delete env.GATEHOUSE_OPA
  delete env.GATEHOUSE_CONFIG
  return env
}

function run(cmd: string, args: readonly string[], opts: { cwd: string; env: NodeJS.ProcessEnv; timeout?: number }): string {
  const r = spawnSync(cmd, args, { ...opts, encoding: 'utf8', timeout: opts.timeout ?? 120_000, maxBuffer: 64 * 1024 * 1024 })
  if (r.error) throw r.error
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} failed:\n${r.stdout}\n${r.stderr}`)
  return r.stdout
}

async function waitFor(what: string, ok: () => boolean, proc: ChildProcess, output: () => string, ms = 180_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!ok()) {
    if (proc.exitCode !== null) assert.fail(`gatehouse exited (${proc.exitCode}) before ${what}:\n${output()}`)
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}:\n${output()}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

async function stop(proc: ChildProcess | null): Promise<void> {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return
  const exited = new Promise((r) => proc.once('exit', r))
  proc.kill('SIGTERM')
  const t = setTimeout(() => proc.kill('SIGKILL'), 5000)
  await exited
  clearTimeout(t)
}

describe('npm pack, npm install -g, gatehouse serve from the installed package', () => {
  let root: string
  let prefix: string
  let bin: string
  let home: string
  let env: NodeJS.ProcessEnv
  let files: string[] = []
  let proc: ChildProcess | null = null

  before(() => {
    root = mkdtempSync(join(tmpdir(), 'gh-install-'))
    home = join(root, 'home')
    mkdirSync(home)
    // A copy of the built package (what `files` lists and more: pack must leave out the rest).
    const pkg = join(root, 'pkg')
    mkdirSync(pkg)
    for (const p of ['package.json', 'README.md', 'cli', 'policies', 'examples', 'docs', 'test/README.md']) {
      if (existsSync(join(REPO, p))) cpSync(join(REPO, p), join(pkg, p), { recursive: true })
    }
    for (const d of ['cli', 'engine', 'proxies', 'test']) cpSync(join(REPO, 'dist', d), join(pkg, 'dist', d), { recursive: true })
    symlinkSync(join(REPO, 'node_modules'), join(pkg, 'node_modules'))
    const packed = JSON.parse(
      run('npm', ['pack', '--json', '--pack-destination', root], { cwd: pkg, env: { ...process.env, GATEHOUSE_PACK_BUILT: '1' } }),
    ) as { filename: string; files: { path: string }[] }[]
    const tarball = join(root, packed[0]?.filename ?? '')
    files = packed[0]?.files.map((f) => f.path) ?? []
    prefix = join(root, 'prefix')
    // Native modules (better-sqlite3) compile against the Node headers Debian installs, as
    // `npm run setup` does, rather than downloading them; packages come from npm's cache.
    const prebuilds = join(root, 'prebuilds')
    mkdirSync(prebuilds)
    const sqlite = join(REPO, 'node_modules', 'better-sqlite3')
    const sqliteVersion = (JSON.parse(readFileSync(join(sqlite, 'package.json'), 'utf8')) as { version: string }).version
    const archive = `better-sqlite3-v${sqliteVersion}-node-v${process.versions.modules}-${process.platform}-${process.arch}.tar.gz`
    run('tar', ['czf', join(prebuilds, archive), '-C', sqlite, 'build/Release/better_sqlite3.node'], { cwd: root, env: process.env })
    const npmEnv: NodeJS.ProcessEnv = {
      ...process.env,
      npm_config_better_sqlite3_local_prebuilds: prebuilds,
      ...(existsSync('/usr/include/node/node.h') ? { npm_config_nodedir: '/usr' } : {}),
    }
    run('npm', ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error', tarball], {
      cwd: root,
      env: npmEnv,
      timeout: 300_000,
    })
    bin = join(prefix, 'bin', 'gatehouse')
    env = cleanEnv(home)
  })

  after(async () => {
    await stop(proc)
    rmSync(root, { recursive: true, force: true })
  })

  test('the tarball holds the built code, the bin, the default bundle precompiled; no tests, sources or maps', () => {
    for (const f of ['cli/bin/gatehouse.js', 'dist/cli/main.js', 'dist/cli/gateway/gateway.js', 'dist/proxies/postgres/index.js']) {
      assert.ok(files.includes(f), `${f} is in the tarball`)
    }
    assert.ok(files.includes('dist/policies/default.tar.gz'))
    assert.ok(files.includes('dist/proxies/types.d.ts'), 'the plugin types ship (exports ./proxies/types)')
    assert.ok(files.includes('dist/proxies/kit/index.d.ts'), 'the plugin kit ships (exports ./proxies/kit)')
    assert.ok(files.includes('policies/gatehouse.rego'))
    assert.ok(files.includes('examples/deploy/gatehouse.service'))
    for (const f of files) {
      assert.ok(!f.startsWith('dist/test/') && !f.startsWith('test/') && !f.endsWith('.map'), `${f} does not belong in the package`)
      assert.ok(
        !/^(engine|gateway|proxies|bench)\//.test(f) && !(f.startsWith('cli/') && f.endsWith('.ts')),
        `${f}: TypeScript sources stay out`,
      )
    }
  })

  test('gatehouse --help runs from the prefix, and no opa is reachable', () => {
    assert.match(run(bin, ['--help'], { cwd: home, env }), /serve/)
    assert.notEqual(spawnSync('sh', ['-c', 'command -v opa'], { env }).status, 0)
  })

  test('serve --config from an empty directory serves psql (default policy, no opa)', async () => {
    const dir = join(root, 'site')
    mkdirSync(dir)
    const [api, pgPort] = [await freePort(), await freePort()]
    writeFileSync(
      join(dir, 'gatehouse.yaml'),
      [
        'data_dir: ./data',
        `listen: { api: 127.0.0.1:${api}, postgres: 127.0.0.1:${pgPort} }`,
        'connections:',
        '  - { name: app, protocol: postgres, address: 127.0.0.1:5432, database: test, user: postgres }',
        '',
      ].join('\n'),
    )
    let out = ''
    proc = spawn(bin, ['serve', '--config', 'gatehouse.yaml', '--log-format', 'json'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] })
    proc.stdout?.on('data', (b: Buffer) => {
      out += b.toString()
    })
    proc.stderr?.on('data', (b: Buffer) => {
      out += b.toString()
    })
    await waitFor(
      'the gateway to be ready',
      () => existsSync(join(dir, 'data', 'run.json')),
      proc,
      () => out,
    )
    assert.match(out, /"msg":"policy loaded"/)
    assert.match(out, /default\.tar\.gz/, 'the precompiled default bundle was loaded')
    const token = run(bin, ['token', 'create', '--subject', 'user:alice', '--config', 'gatehouse.yaml'], { cwd: dir, env }).trim()
    const rows = run(
      'psql',
      [
        '-X',
        '-At',
        '-d',
        `host=127.0.0.1 port=${pgPort} dbname=app user=alice sslmode=require`,
        '-c',
        "SELECT 'through the installed gateway'",
      ],
      { cwd: dir, env: { ...env, PGPASSWORD: token } },
    )
    assert.equal(rows.trim(), 'through the installed gateway')
    const res = await fetch(`http://127.0.0.1:${api}/readyz`)
    assert.equal(res.status, 200)
    // The web console's page, script, style and terminal player ship in the package.
    const home = await fetch(`http://127.0.0.1:${api}/`)
    assert.equal(home.status, 200)
    assert.match(await home.text(), /Gatehouse/)
    for (const a of ['app.js', 'console.css', 'asciinema-player.min.js', 'asciinema-player.css']) {
      const r = await fetch(`http://127.0.0.1:${api}/console/assets/${a}`)
      assert.equal(r.status, 200, `${a} is served by the installed gateway`)
      assert.ok((await r.arrayBuffer()).byteLength > 100)
    }
    await stop(proc)
    proc = null
  })

  test('serve --dev in an empty directory', async (t) => {
    // --dev listens on the documented fixed ports; another process may hold them on a shared machine.
    // bash, not sh: /dev/tcp is a bash feature (dash, Debian's sh, fails the probe every time).
    for (const port of [8080, 15432]) {
      const busy = spawnSync('bash', ['-c', `exec 3<>/dev/tcp/127.0.0.1/${port}`], { stdio: 'ignore' }).status === 0
      if (busy) {
        t.skip(`port ${port} is in use here`)
        return
      }
    }
    const dir = join(root, 'dev')
    mkdirSync(dir)
    let out = ''
    proc = spawn(bin, ['serve', '--dev'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] })
    proc.stdout?.on('data', (b: Buffer) => {
      out += b.toString()
    })
    proc.stderr?.on('data', (b: Buffer) => {
      out += b.toString()
    })
    await waitFor(
      'the psql line',
      () => /Connect with psql:\n\s+(.+)\n/.test(out),
      proc,
      () => out,
    )
    const line = /Connect with psql:\n\s+(.+)\n/.exec(out)?.[1] ?? ''
    const r = spawnSync('bash', ['-c', `${line} -X -At -c 'SELECT 40 + 2'`], { cwd: dir, env, encoding: 'utf8', timeout: 60_000 })
    assert.equal(r.status, 0, r.stderr)
    assert.equal(r.stdout.trim(), '42')
    assert.ok(existsSync(join(dir, 'gatehouse-data', 'admin.token')))
    assert.ok(readFileSync(join(dir, 'gatehouse-data', 'run.json'), 'utf8').includes('15432'))
    await stop(proc)
    proc = null
  })
})
