// A TCP relay in front of the machine's PostgreSQL that counts the connections made through it:
// the tests point a gateway connection at it to prove that a refused caller opens no server
// connection at all.

import { connect, createServer, type Server, type Socket } from 'node:net'

export /** A TCP relay to the real PostgreSQL that counts the connections the gateway opens. */
async function countingRelay(): Promise<{ port: number; accepted: () => number; close: () => void }> {
  let accepted = 0
  const sockets = new Set<Socket>()
  const server: Server = createServer((client) => {
    accepted++
    const up = connect({ host: '127.0.0.1', port: 5432 })
    sockets.add(client).add(up)
    client.pipe(up).pipe(client)
    const end = (): void => {
      client.destroy()
      up.destroy()
    }
    client.on('error', end).on('close', end)
    up.on('error', end).on('close', end)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const a = server.address()
  const port = a && typeof a === 'object' ? a.port : 0
  return {
    port,
    accepted: () => accepted,
    close: () => {
      for (const s of sockets) s.destroy()
      server.close()
    },
  }
}
