// A complete third-party proxy plugin in plain JavaScript, loaded by Gatehouse from `plugins:` in
// the config. It proxies a line-based protocol: the client's first line is `<token> <connection>`,
// every later line is one command. It uses only the narrow ProxyContext every plugin gets —
// openSession (identify, connect decision, secrets, audit), session.decide, session.audit and
// dial — exactly as the built-in PostgreSQL proxy does.
//
//   plugins:
//     - module: ./examples/plugins/line-proxy.js
//   listen:
//     line: 127.0.0.1:7000
//   connections:
//     - { name: echo, protocol: line, address: 127.0.0.1:7001 }

import { createServer } from 'node:net'
import { createInterface } from 'node:readline'

/** Longest line accepted, so a client cannot make the plugin buffer without bound. */
const MAX_LINE = 4096

/** @type {import('gatehouse/proxies/types').ProxyPlugin} */
const plugin = {
  name: 'line',
  async start(ctx) {
    const open = new Set()
    const server = createServer((socket) => {
      let session = null
      let target = null
      const lines = createInterface({ input: socket, crlfDelay: Number.POSITIVE_INFINITY })
      const close = (reason) => {
        lines.close()
        socket.end()
        target?.destroy()
        session?.end(reason)
        open.delete(socket)
      }
      open.add(socket)
      socket.on('error', () => close('client error'))
      socket.on('data', (d) => {
        if (d.length > MAX_LINE) {
          socket.write('ERR line too long\n')
          close('line too long')
        }
      })
      lines.on('line', async (line) => {
        lines.pause()
        try {
          if (!session) {
            const [credential = '', connection = ''] = line.split(' ')
            const r = await ctx.openSession({ credential, connection, client: { address: `${socket.remoteAddress}:${socket.remotePort}` } })
            if (!r.ok) {
              socket.write(`ERR ${r.error.publicMessage}\n`)
              close('refused')
              return
            }
            session = r.session
            session.onTerminate((reason) => {
              socket.write(`BYE ${reason}\n`)
              close(reason)
            })
            target = await ctx.dial(session.target)
            target.on('data', (d) => socket.write(d))
            target.on('error', () => close('target error'))
            socket.write(`OK ${session.id}\n`)
            return
          }
          const decision = await session.decide('line.send', { text: line })
          await session.audit({
            type: 'statement',
            sql: line,
            decision: decision.effect,
            rules: decision.rules,
            policy_version: decision.policy,
          })
          if (decision.effect !== 'allow') {
            socket.write(`DENIED ${decision.effect === 'deny' ? decision.reason : 'approval required'}\n`)
            return
          }
          target.write(`${line}\n`)
        } catch (err) {
          socket.write('ERR refused: the gateway could not record or decide this command\n')
          ctx.log.warn({ err: String(err) }, 'line command refused')
        } finally {
          lines.resume()
        }
      })
    })
    await new Promise((resolve, reject) => {
      server.once('error', reject)
      server.listen(ctx.listen?.port ?? 0, ctx.listen?.host ?? '127.0.0.1', resolve)
    })
    const a = server.address()
    return {
      address: { host: a.address, port: a.port },
      async stop(reason) {
        server.close()
        for (const s of open) s.end(`BYE ${reason}\n`)
      },
    }
  },
}

export default plugin
