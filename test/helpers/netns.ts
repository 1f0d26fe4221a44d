// Network namespaces for connector tests: a private network the gateway cannot route to, with a
// PostgreSQL cluster in it, and a connector namespace that reaches both. Names and addresses are
// unique per run; `teardown` removes everything even after a failed setup.
//
//   root namespace (gateway)  <-veth->  <id>c (connector)  <-veth->  <id>p (private: PostgreSQL)
//        10.A.B.1/30                     10.A.B.2/30 · 10.A.B.5/30       10.A.B.6/30
//
// The connector namespace does not forward, and the root namespace has no route to 10.A.B.4/30,
// so only a process inside the connector namespace reaches the private one.

import { spawnSync } from 'node:child_process'
import { chmodSync, chownSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { randomBytes, randomInt } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { asPostgres, PG_BIN } from './pgserver.js'

function run(args: string[]): void {
  const r = spawnSync(args[0] as string, args.slice(1), { encoding: 'utf8', timeout: 30_000 })
  if (r.status !== 0) throw new Error(`${args.join(' ')} failed: ${r.stderr}`)
}

export class PrivateNetwork {
  readonly id = `gh${randomBytes(3).toString('hex')}`
  readonly connectorNs = `${this.id}c`
  readonly privateNs = `${this.id}p`
  private readonly net = `10.${randomInt(100, 250)}.${randomInt(0, 255)}`
  /** The gateway's address on the link to the connector namespace. */
  readonly gatewayAddress = `${this.net}.1`
  /** The private target's address (PostgreSQL listens here). */
  readonly privateAddress = `${this.net}.6`
  pgDir = ''
  private created: string[] = []
  private links: string[] = []

  setUp(): void {
    for (const ns of [this.connectorNs, this.privateNs]) {
      run(['ip', 'netns', 'add', ns])
      this.created.push(ns)
      run(['ip', '-n', ns, 'link', 'set', 'lo', 'up'])
    }
    const g = `${this.id}g`
    run(['ip', 'link', 'add', g, 'type', 'veth', 'peer', 'name', `${this.id}cg`, 'netns', this.connectorNs])
    this.links.push(g)
    run(['ip', 'addr', 'add', `${this.gatewayAddress}/30`, 'dev', g])
    run(['ip', 'link', 'set', g, 'up'])
    run(['ip', '-n', this.connectorNs, 'addr', 'add', `${this.net}.2/30`, 'dev', `${this.id}cg`])
    run(['ip', '-n', this.connectorNs, 'link', 'set', `${this.id}cg`, 'up'])
    run([
      'ip',
      '-n',
      this.connectorNs,
      'link',
      'add',
      `${this.id}cp`,
      'type',
      'veth',
      'peer',
      'name',
      `${this.id}pp`,
      'netns',
      this.privateNs,
    ])
    run(['ip', '-n', this.connectorNs, 'addr', 'add', `${this.net}.5/30`, 'dev', `${this.id}cp`])
    run(['ip', '-n', this.connectorNs, 'link', 'set', `${this.id}cp`, 'up'])
    run(['ip', '-n', this.privateNs, 'addr', 'add', `${this.privateAddress}/30`, 'dev', `${this.id}pp`])
    run(['ip', '-n', this.privateNs, 'link', 'set', `${this.id}pp`, 'up'])
  }

  /**
   * A PostgreSQL 15 cluster (trust auth) listening on the private address, inside the private
   * namespace; `hba` lines go before the trust ones (password methods for some roles).
   */
  startPostgres(hba = ''): void {
    const dir = mkdtempSync(join(tmpdir(), 'gh-netns-pg-'))
    this.pgDir = dir
    chmodSync(dir, 0o755)
    const uid = Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout.trim())
    const gid = Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim())
    chownSync(dir, uid, gid)
    const data = join(dir, 'data')
    const init = asPostgres([`${PG_BIN}/initdb`, '-D', data, '-U', 'postgres', '-E', 'UTF8', '--locale=C', '--no-sync', '--auth=trust'])
    if (init.status !== 0) throw new Error(`initdb failed: ${init.stderr}`)
    writeFileSync(join(data, 'pg_hba.conf'), `${hba}host all all 0.0.0.0/0 trust\nlocal all all trust\n`)
    const conf = [
      `listen_addresses = '${this.privateAddress}'`,
      'port = 5432',
      `unix_socket_directories = '${dir}'`,
      'fsync = off',
      'synchronous_commit = off',
      'full_page_writes = off',
      'shared_buffers = 16MB',
      'max_connections = 40',
    ]
    writeFileSync(join(data, 'postgresql.auto.conf'), `${conf.join('\n')}\n`)
    for (const f of ['pg_hba.conf', 'postgresql.auto.conf']) chownSync(join(data, f), uid, gid)
    const r = spawnSync(
      'ip',
      [
        'netns',
        'exec',
        this.privateNs,
        'runuser',
        '-u',
        'postgres',
        '--',
        `${PG_BIN}/pg_ctl`,
        '-D',
        data,
        '-l',
        join(dir, 'log'),
        '-w',
        'start',
      ],
      { encoding: 'utf8', timeout: 60_000 },
    )
    if (r.status !== 0) throw new Error(`pg_ctl start in ${this.privateNs} failed: ${r.stderr}`)
  }

  /** Runs SQL on the private cluster from inside its namespace (bypassing gateway and connector). */
  privateSql(sql: string): string {
    const r = spawnSync(
      'ip',
      [
        'netns',
        'exec',
        this.privateNs,
        'psql',
        '-X',
        '-At',
        '-v',
        'ON_ERROR_STOP=1',
        '-h',
        this.privateAddress,
        '-U',
        'postgres',
        '-d',
        'postgres',
        '-c',
        sql,
      ],
      { encoding: 'utf8', timeout: 30_000 },
    )
    if (r.status !== 0) throw new Error(`psql in ${this.privateNs} failed: ${r.stderr}`)
    return r.stdout.trim()
  }

  /** Removes the cluster, the links and the namespaces; never throws. */
  teardown(): void {
    if (this.pgDir) {
      asPostgres([`${PG_BIN}/pg_ctl`, '-D', join(this.pgDir, 'data'), '-m', 'immediate', 'stop'])
      rmSync(this.pgDir, { recursive: true, force: true })
    }
    for (const l of this.links) spawnSync('ip', ['link', 'del', l])
    for (const ns of this.created) spawnSync('ip', ['netns', 'del', ns])
  }
}
