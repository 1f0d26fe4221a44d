// A bare TCP byte pump, the floor cost of any proxy written in Node: for each client socket it
// connects to the target and pipes bytes both ways (noDelay on both sides), and does nothing else:
// no parsing, no buffering beyond what `pipe` does, no logging. The PostgreSQL benchmark
// (bench/pgbench.ts) runs it as its own process so that its CPU time can be read from /proc and
// compared with the gateway's.
//
//   node dist/bench/pump.js --listen 127.0.0.1:0 --target 127.0.0.1:5432
//
// Prints one JSON line once listening: {"listen":"127.0.0.1:PORT","port":PORT,"pid":PID}.
// Stops on SIGTERM/SIGINT.

import { connect, createServer, type Socket } from 'node:net'

interface HostPort {
  readonly host: string
  readonly port: number
}

function parseHostPort(flag: string, value: string | undefined): HostPort {
  if (value === undefined) throw new Error(`${flag} HOST:PORT is required`)
  const i = value.lastIndexOf(':')
  const port = Number(value.slice(i + 1))
  if (i <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`${flag}: bad address ${JSON.stringify(value)}`)
  return { host: value.slice(0, i), port }
}

function argValue(args: readonly string[], flag: string): string | undefined {
  const i = args.indexOf(flag)
  return i >= 0 ? args[i + 1] : undefined
}

function main(): void {
  const args = process.argv.slice(2)
  const listen = parseHostPort('--listen', argValue(args, '--listen') ?? '127.0.0.1:0')
  const target = parseHostPort('--target', argValue(args, '--target'))
  const sockets = new Set<Socket>()

  const server = createServer((client) => {
    client.setNoDelay(true)
    const upstream = connect({ host: target.host, port: target.port, noDelay: true })
    sockets.add(client)
    sockets.add(upstream)
    const close = (): void => {
      client.destroy()
      upstream.destroy()
      sockets.delete(client)
      sockets.delete(upstream)
    }
    client.on('error', close)
    upstream.on('error', close)
    client.on('close', close)
    upstream.on('close', close)
    client.pipe(upstream)
    upstream.pipe(client)
  })

  server.on('error', (err) => {
    process.stderr.write(`pump: ${err.message}\n`)
    process.exit(1)
  })
  server.listen(listen.port, listen.host, () => {
    const addr = server.address()
    const port = addr !== null && typeof addr === 'object' ? addr.port : listen.port
    process.stdout.write(`${JSON.stringify({ listen: `${listen.host}:${port}`, port, pid: process.pid })}\n`)
  })

  const stop = (): void => {
    server.close()
    for (const s of sockets) s.destroy()
    process.exit(0)
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}

try {
  main()
} catch (err) {
  process.stderr.write(`pump: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exit(2)
}
