// Real HTTP upstreams for the HTTP proxy tests: nginx over TLS (its own CA, config directory and
// temp paths, no root paths), json-server (a REST API over a JSON file), and raw-socket clients.

import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { connect, createServer } from 'node:net'
import { join } from 'node:path'
import { connect as tlsConnect } from 'node:tls'
import { REPO } from './gateway.js'

export async function freePort(): Promise<number> {
  const s = createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
  const a = s.address()
  const port = a && typeof a === 'object' ? a.port : 0
  await new Promise<void>((r) => s.close(() => r()))
  return port
}

export async function waitForPort(port: number, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((r) => {
      const s = connect({ host: '127.0.0.1', port })
      s.once('connect', () => {
        s.destroy()
        r(true)
      })
      s.once('error', () => r(false))
    })
    if (ok) return
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`nothing listens on ${port}`)
}

function openssl(args: string[], cwd: string): void {
  const r = spawnSync('openssl', args, { cwd, encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`)
}

/** A CA and a server certificate for localhost/127.0.0.1 signed by it. */
export function makeCa(dir: string): { ca: string; cert: string; key: string } {
  mkdirSync(dir, { recursive: true })
  openssl(
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      'ca.key',
      '-out',
      'ca.pem',
      '-days',
      '2',
      '-subj',
      '/CN=test-ca',
    ],
    dir,
  )
  openssl(
    [
      'req',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      'server.key',
      '-out',
      'server.csr',
      '-subj',
      '/CN=localhost',
    ],
    dir,
  )
  writeFileSync(join(dir, 'ext.cnf'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n')
  openssl(
    [
      'x509',
      '-req',
      '-in',
      'server.csr',
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      'server.pem',
      '-days',
      '2',
      '-extfile',
      'ext.cnf',
    ],
    dir,
  )
  return { ca: join(dir, 'ca.pem'), cert: join(dir, 'server.pem'), key: join(dir, 'server.key') }
}

export interface Nginx {
  readonly port: number
  readonly root: string
  stop(): Promise<void>
}

/** nginx on a free port with TLS; `locations` is the text of its server block's locations. */
export async function startNginx(dir: string, tls: { cert: string; key: string }, locations: string): Promise<Nginx> {
  const port = await freePort()
  const root = join(dir, 'www')
  mkdirSync(root, { recursive: true })
  for (const d of ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi', 'logs']) mkdirSync(join(dir, d), { recursive: true })
  // Running as root, workers would switch to `nobody`, which cannot read a private temp dir.
  const user = process.getuid?.() === 0 ? 'user root;' : ''
  const conf = `${user}
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/logs/error.log warn;
events { worker_connections 256; }
http {
  access_log ${dir}/logs/access.log;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  default_type text/plain;
  server {
    listen 127.0.0.1:${port} ssl;
    server_name localhost;
    ssl_certificate ${tls.cert};
    ssl_certificate_key ${tls.key};
    root ${root};
${locations}
  }
}
`
  writeFileSync(join(dir, 'nginx.conf'), conf)
  const proc: ChildProcess = spawn('nginx', ['-p', dir, '-c', join(dir, 'nginx.conf'), '-g', 'daemon off;'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  let stderr = ''
  proc.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString()
  })
  try {
    await waitForPort(port)
  } catch (err) {
    proc.kill('SIGKILL')
    throw new Error(`nginx did not start: ${stderr} ${String(err)}`)
  }
  return {
    port,
    root,
    stop: () =>
      new Promise<void>((r) => {
        if (proc.exitCode !== null) return r()
        proc.once('exit', () => r())
        proc.kill('SIGTERM')
      }),
  }
}

export interface JsonServer {
  readonly port: number
  stop(): Promise<void>
}

/** json-server (npm) over `db`, on a free loopback port. */
export async function startJsonServer(dir: string, db: unknown): Promise<JsonServer> {
  const port = await freePort()
  mkdirSync(dir, { recursive: true })
  const file = join(dir, 'db.json')
  writeFileSync(file, JSON.stringify(db, null, 2))
  const proc = spawn(
    process.execPath,
    [join(REPO, 'node_modules/json-server/lib/cli/bin.js'), file, '--port', String(port), '--host', '127.0.0.1', '--quiet'],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  )
  let stderr = ''
  proc.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString()
  })
  try {
    await waitForPort(port, 30_000)
  } catch (err) {
    proc.kill('SIGKILL')
    throw new Error(`json-server did not start: ${stderr} ${String(err)}`)
  }
  return {
    port,
    stop: () =>
      new Promise<void>((r) => {
        if (proc.exitCode !== null) return r()
        proc.once('exit', () => r())
        proc.kill('SIGTERM')
      }),
  }
}

/**
 * Sends raw bytes and returns everything the server answered until it closed the connection (or
 * `ms` passed). `tls` with a CA: over TLS.
 */
export function rawExchange(port: number, bytes: string | Buffer, opts: { ms?: number; ca?: string } = {}): Promise<string> {
  return new Promise((resolve) => {
    const sock = opts.ca
      ? tlsConnect({ host: '127.0.0.1', port, ca: opts.ca, servername: 'localhost' })
      : connect({ host: '127.0.0.1', port })
    let out = ''
    const done = (): void => {
      clearTimeout(timer)
      sock.destroy()
      resolve(out)
    }
    const timer = setTimeout(done, opts.ms ?? 3000)
    sock.on(opts.ca ? 'secureConnect' : 'connect', () => sock.write(bytes))
    sock.on('data', (d: Buffer) => {
      out += d.toString('latin1')
    })
    sock.on('close', done)
    sock.on('error', done)
  })
}

/** The status code of the first response in raw text. */
export function statusOf(raw: string): number {
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(raw)
  return m ? Number(m[1]) : 0
}
