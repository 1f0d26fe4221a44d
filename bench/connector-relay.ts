// The floor of the connector's relay, without a gateway or PostgreSQL: small request/response
// round trips (60 bytes out, 300 back, as pgbench -S sends and receives) through a relay process,
// in two forms alternated in one run:
//
//   tcp  a bare Node TCP pump (pipe both ways, noDelay): the least any relay in Node costs
//   tls  the same pump with the relay's side towards the driver in TLS (the relay dials out, as
//        the connector does), one stream per TLS connection: what TLS alone adds
//   mux  a sketch of a lighter framing on the same TLS link, for comparison only: each frame is a
//        9-byte header (stream id, length, type) and the bytes, parsed in place; each side sends
//        what a turn of the event loop produced in one write. No flow control, no stream
//        opening or closing: a floor for such a protocol, not one
//   h2   the connector's relay as it is: the relay dials out over TLS, serves HTTP/2 on that
//        socket, and carries each CONNECT stream to the target (a 64 KiB read buffer per target
//        socket, data/drain handlers), as cli/connector.ts does
//
//   node dist/bench/connector-relay.js [--seconds S] [--rounds N] [--streams C]   (tls: at 1 stream)
//
// The driver (this process) plays the gateway and the client; an echo server answers each message.
// CPU of the relay (utime+stime from /proc) and of the driver ÷ round trips. The relay's share of
// system time is printed too: what no change in JavaScript reaches. Prints a markdown table.

import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { connect as h2connect, createServer as createH2Server, type ServerHttp2Stream } from 'node:http2'
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Duplex } from 'node:stream'
import { connect as tlsConnect, createServer as createTlsServer, type TLSSocket } from 'node:tls'
import { fileURLToPath } from 'node:url'
import { arg } from './common.js'
import { CLK_TCK } from './pgbench-servers.js'

const REQUEST = Buffer.alloc(60, 0x51)
const ANSWER = Buffer.alloc(300, 0x44)

/** The `mux` sketch's frame header: stream id (u32), length (u32), type (u8, 0: data). */
const HEADER = 9

/** Splits a byte stream into frames, in place; a frame cut by a read waits for the rest. */
class FrameReader {
  private pending: Buffer | null = null
  constructor(private readonly onFrame: (id: number, body: Buffer) => void) {}

  push(chunk: Buffer): void {
    const buf = this.pending ? Buffer.concat([this.pending, chunk]) : chunk
    this.pending = null
    let at = 0
    while (buf.length - at >= HEADER) {
      const len = buf.readUInt32BE(at + 4)
      if (buf.length - at < HEADER + len) break
      this.onFrame(buf.readUInt32BE(at), buf.subarray(at + HEADER, at + HEADER + len))
      at += HEADER + len
    }
    if (at < buf.length) this.pending = buf.subarray(at)
  }
}

/** Queues frames and writes what a turn of the event loop produced at once. */
class FrameWriter {
  private queue: Buffer[] = []
  private scheduled = false
  constructor(private readonly sock: Socket) {}

  send(id: number, data: Uint8Array): void {
    const f = Buffer.allocUnsafe(HEADER + data.length)
    f.writeUInt32BE(id, 0)
    f.writeUInt32BE(data.length, 4)
    f[8] = 0
    f.set(data, HEADER)
    this.queue.push(f)
    if (!this.scheduled) {
      this.scheduled = true
      setImmediate(this.flush)
    }
  }

  private readonly flush = (): void => {
    this.scheduled = false
    const q = this.queue
    this.queue = []
    this.sock.write(q.length === 1 ? (q[0] as Buffer) : Buffer.concat(q))
  }
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)))
}

/** The relay process: `relay tcp LISTEN_PORT ECHO_PORT` or `relay h2 DRIVER_PORT ECHO_PORT`. */
function relay(mode: string, port: number, echoPort: number): void {
  if (mode === 'tcp') {
    const server = createServer({ noDelay: true }, (c) => {
      const t = netConnect({ host: '127.0.0.1', port: echoPort, noDelay: true })
      c.pipe(t)
      t.pipe(c)
      c.on('error', () => t.destroy())
      t.on('error', () => c.destroy())
    })
    server.listen(port, '127.0.0.1')
    return
  }
  const sock = tlsConnect({ host: '127.0.0.1', port, ALPNProtocols: ['h2'], rejectUnauthorized: false })
  if (mode === 'mux') {
    sock.setNoDelay(true)
    const out = new FrameWriter(sock)
    const targets = new Map<number, Socket>()
    const reader = new FrameReader((id, body) => {
      let t = targets.get(id)
      if (!t) {
        t = netConnect({
          host: '127.0.0.1',
          port: echoPort,
          noDelay: true,
          onread: {
            buffer: Buffer.allocUnsafe(64 * 1024),
            callback: (n: number, buf: Uint8Array): boolean => {
              out.send(id, buf.subarray(0, n))
              return true
            },
          },
        })
        t.on('error', () => sock.destroy())
        targets.set(id, t)
      }
      t.write(body)
    })
    sock.on('data', (d: Buffer) => reader.push(d))
    sock.on('error', () => undefined)
    sock.on('close', () => process.exit(0))
    return
  }
  if (mode === 'tls') {
    sock.setNoDelay(true)
    const t = netConnect({ host: '127.0.0.1', port: echoPort, noDelay: true })
    sock.pipe(t)
    t.pipe(sock)
    sock.on('error', () => t.destroy())
    t.on('error', () => sock.destroy())
    sock.on('close', () => process.exit(0))
    return
  }
  sock.once('secureConnect', () => {
    const server = createH2Server({ settings: { initialWindowSize: 1024 * 1024, enablePush: false } })
    server.on('stream', (stream: ServerHttp2Stream) => {
      const readBuffer = Buffer.allocUnsafe(64 * 1024)
      const target = netConnect({
        host: '127.0.0.1',
        port: echoPort,
        noDelay: true,
        onread: {
          buffer: readBuffer,
          callback: (n: number, buf: Uint8Array): boolean => {
            if (stream.destroyed) return false
            if (stream.write(Buffer.from(buf.subarray(0, n)))) return true
            stream.once('drain', () => target.resume())
            return false
          },
        },
      })
      target.once('connect', () => {
        stream.respond({ ':status': 200 })
        stream.on('data', (d: Buffer) => {
          if (!target.write(d)) stream.pause()
        })
        target.on('drain', () => stream.resume())
      })
      stream.on('error', () => target.destroy())
      target.on('error', () => stream.destroy())
    })
    server.emit('connection', sock)
  })
  sock.on('close', () => process.exit(0))
}

function ticks(pid: number): { total: number; sys: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return { total: Number(f[11]) + Number(f[12]), sys: Number(f[12]) }
}

type Mode = 'tcp' | 'tls' | 'mux' | 'h2'

interface Sample {
  readonly mode: string
  readonly rtps: number
  readonly relayUs: number
  readonly relaySys: number
  readonly driverUs: number
}

async function round(mode: Mode, streams: number, seconds: number, echoPort: number, dir: string): Promise<Sample> {
  const self = fileURLToPath(import.meta.url)
  const sockets: Duplex[] = []
  let child: ChildProcess
  let cleanup = (): void => undefined
  let count = 0
  let running = true
  let startMux = (): void => undefined
  if (mode === 'tcp') {
    const probe = createServer()
    const port = await listen(probe)
    await new Promise((r) => probe.close(r))
    child = spawn(process.execPath, [self, 'relay', 'tcp', String(port), String(echoPort)], { stdio: 'ignore' })
    for (let i = 0; ; i++) {
      const s = await new Promise<Socket | null>((resolve) => {
        const c = netConnect({ host: '127.0.0.1', port, noDelay: true })
        c.once('connect', () => resolve(c))
        c.once('error', () => resolve(null))
      })
      if (s) {
        sockets.push(s)
        if (sockets.length === streams) break
      } else if (i > 200) throw new Error('the tcp relay did not listen')
      else await new Promise((r) => setTimeout(r, 50))
    }
  } else {
    const server = createTlsServer({
      key: readFileSync(join(dir, 'key.pem')),
      cert: readFileSync(join(dir, 'cert.pem')),
      ALPNProtocols: ['h2'],
    })
    const port = await listen(server)
    const got = new Promise<TLSSocket>((resolve) => server.once('secureConnection', resolve))
    child = spawn(process.execPath, [self, 'relay', mode, String(port), String(echoPort)], { stdio: 'ignore' })
    const sock = await got
    if (mode === 'tls') {
      // One TLS connection carries one stream: only the first stream is driven.
      sock.setNoDelay(true)
      sockets.push(sock)
      cleanup = () => server.close()
    }
    if (mode === 'mux') {
      sock.setNoDelay(true)
      const out = new FrameWriter(sock)
      const reader = new FrameReader((id) => {
        count++
        if (running) out.send(id, REQUEST)
      })
      sock.on('data', (d: Buffer) => reader.push(d))
      sock.on('error', () => undefined)
      startMux = () => {
        for (let id = 1; id <= streams; id++) out.send(id, REQUEST)
      }
      cleanup = () => {
        sock.destroy()
        server.close()
      }
    }
    const h2s =
      mode === 'tls' || mode === 'mux'
        ? null
        : h2connect('http://relay', {
            createConnection: () => sock,
            settings: { enablePush: false, initialWindowSize: 1024 * 1024 },
          })
    for (let i = 0; h2s !== null && i < streams; i++) {
      const st = h2s.request({ ':method': 'CONNECT', ':authority': `127.0.0.1:${echoPort}` }, { endStream: false })
      await new Promise((r) => st.once('response', r))
      sockets.push(st)
    }
    if (h2s !== null)
      cleanup = () => {
        h2s.destroy()
        server.close()
      }
  }
  startMux()
  for (const s of sockets) {
    s.on('data', () => {
      count++
      if (running) s.write(REQUEST)
    })
    s.on('error', () => undefined)
    s.write(REQUEST)
  }
  await new Promise((r) => setTimeout(r, 1000))
  const pid = child.pid ?? 0
  const c0 = count
  const r0 = ticks(pid)
  const d0 = process.cpuUsage()
  await new Promise((r) => setTimeout(r, seconds * 1000))
  const n = count - c0
  const r1 = ticks(pid)
  const d = process.cpuUsage(d0)
  running = false
  for (const s of sockets) s.destroy()
  cleanup()
  const exited = new Promise((r) => child.once('exit', r))
  child.kill('SIGTERM')
  await exited
  return {
    mode,
    rtps: n / seconds,
    relayUs: (((r1.total - r0.total) / CLK_TCK) * 1e6) / n,
    relaySys: (r1.sys - r0.sys) / Math.max(1, r1.total - r0.total),
    driverUs: (d.user + d.system) / n,
  }
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2
}

async function main(): Promise<void> {
  if (process.argv[2] === 'relay') {
    relay(process.argv[3] ?? '', Number(process.argv[4]), Number(process.argv[5]))
    return
  }
  const seconds = arg('--seconds', 5)
  const rounds = arg('--rounds', 3)
  const streams = arg('--streams', 1)
  // TLS alone carries one stream per connection: compared only at one stream.
  const modes: readonly Mode[] = streams === 1 ? ['tcp', 'tls', 'mux', 'h2'] : ['tcp', 'mux', 'h2']
  const dir = mkdtempSync(join(tmpdir(), 'gh-relay-bench-'))
  const echo = createServer({ noDelay: true }, (s) => {
    s.on('data', () => s.write(ANSWER))
    s.on('error', () => undefined)
  })
  try {
    const key = spawnSync(
      'openssl',
      ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'key.pem')].concat([
        '-out',
        join(dir, 'cert.pem'),
        '-days',
        '1',
        '-subj',
        '/CN=relay',
      ]),
      { encoding: 'utf8' },
    )
    if (key.status !== 0) throw new Error(`openssl failed: ${key.stderr}`)
    const echoPort = await listen(echo)
    const samples: Sample[] = []
    for (let i = 0; i < rounds; i++) {
      for (const mode of modes) {
        const s = await round(mode, streams, seconds, echoPort, dir)
        samples.push(s)
        process.stderr.write(`${JSON.stringify(s)}\n`)
      }
    }
    const load = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')
    const lines = [
      `${streams} stream(s), ${rounds} alternated rounds of ${seconds} s; load average ${load}`,
      '',
      '| relay | round trips/s | relay µs/round trip | relay system share | driver µs/round trip |',
      '|---|---:|---:|---:|---:|',
    ]
    for (const mode of modes) {
      const m = samples.filter((s) => s.mode === mode)
      lines.push(
        `| ${mode} | ${median(m.map((s) => s.rtps)).toFixed(0)} | ${median(m.map((s) => s.relayUs)).toFixed(0)} | ${(median(m.map((s) => s.relaySys)) * 100).toFixed(0)}% | ${median(m.map((s) => s.driverUs)).toFixed(0)} |`,
      )
    }
    process.stdout.write(`${lines.join('\n')}\n`)
  } finally {
    echo.close()
    rmSync(dir, { recursive: true, force: true })
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`)
  process.exit(1)
})
