// @ts-check
// A complete third-party proxy plugin in plain JavaScript, type-checked by tsc through its JSDoc
// (`npm run check`), loaded by Gatehouse from `plugins:` in the config. docs/plugins.md walks
// through it line by line.
//
// The protocol: the client's first line is `<token> <connection>`; every later line is one
// command, forwarded to the target only when policy allows it for the whole delegation chain.
// Lines are handled strictly one at a time, in order: a client that pipelines ten lines gets ten
// decisions in order, and the second line is not read before the first is decided and forwarded.
//
//   plugins:
//     - module: ./examples/plugins/line-proxy.js
//   listen:
//     line: 127.0.0.1:7000
//   connections:
//     - { name: echo, protocol: line, address: 127.0.0.1:7001 }

import { createServer } from 'node:net'

/**
 * @typedef {import('gatehouse/proxies/types').ProxyPlugin} ProxyPlugin
 * @typedef {import('gatehouse/proxies/types').ProxyContext} ProxyContext
 * @typedef {import('gatehouse/proxies/types').ProxySession} ProxySession
 * @typedef {import('node:net').Socket} Socket
 */

/** The contract version this plugin is written for (PLUGIN_CONTRACT in gatehouse/proxies/types). */
const CONTRACT = 1

/** Longest line accepted, so a client cannot make the plugin buffer without bound. */
const MAX_LINE = 4096

class LineTooLong extends Error {}

/**
 * The lines of `socket`, one at a time. Reading is driven by the consumer: while it is busy with a
 * line, nothing more is read from the socket (TCP backpressure holds the client), so pipelined
 * lines are never handled concurrently.
 * @param {Socket} socket
 * @returns {AsyncGenerator<string>}
 */
async function* readLines(socket) {
  let pending = ''
  // destroyOnReturn: false keeps the socket open when the reader stops early (a line too long),
  // so the client still gets told why.
  for await (const chunk of socket.iterator({ destroyOnReturn: false })) {
    pending += String(chunk)
    let i = pending.indexOf('\n')
    while (i >= 0) {
      const line = pending.slice(0, i).replace(/\r$/, '')
      pending = pending.slice(i + 1)
      if (line.length > MAX_LINE) throw new LineTooLong()
      yield line
      i = pending.indexOf('\n')
    }
    if (pending.length > MAX_LINE) throw new LineTooLong()
  }
}

/**
 * One client connection: authenticate with the first line, then decide, audit and forward each
 * later line. Everything ends when either side closes or the engine ends the session.
 * @param {ProxyContext} ctx
 * @param {Socket} socket
 * @param {Set<Socket>} open
 */
async function serve(ctx, socket, open) {
  /** @type {ProxySession | null} */
  let session = null
  /** @type {Socket | null} */
  let target = null
  let closed = false
  /** @param {string} reason */
  const close = (reason) => {
    if (closed) return
    closed = true
    socket.end()
    target?.destroy()
    session?.end(reason)
    open.delete(socket)
  }
  open.add(socket)
  socket.setEncoding('utf8')
  socket.on('error', () => close('client error'))
  socket.on('close', () => close('client closed'))
  try {
    for await (const line of readLines(socket)) {
      if (!session) {
        const [credential = '', connection = ''] = line.split(' ')
        const r = await ctx.openSession({ credential, connection, client: { address: `${socket.remoteAddress}:${socket.remotePort}` } })
        if (!r.ok) {
          socket.write(`ERR ${r.error.publicMessage}\n`)
          return close('refused')
        }
        const s = r.session
        session = s
        s.onTerminate((reason) => {
          socket.write(`BYE ${reason}\n`)
          close(reason)
        })
        const t = await ctx.dial(s.target)
        target = t
        t.on('data', (d) => socket.write(d))
        t.on('error', () => close('target error'))
        t.on('close', () => close('target closed'))
        socket.write(`OK ${s.id}\n`)
        continue
      }
      if (!target) return close('no target')
      // Deny by default: a decision that throws, or an audit that cannot be written, refuses.
      let verdict = 'ERR refused: the gateway could not record or decide this command'
      try {
        const decision = await session.decide('line.send', { text: line })
        // Durable before the command reaches the target.
        await session.audit({
          type: 'statement',
          action: 'line.send',
          command: line,
          decision: decision.effect,
          rules: decision.rules,
          policy_version: decision.policy,
        })
        if (decision.effect === 'allow') {
          target.write(`${line}\n`)
          continue
        }
        verdict = decision.effect === 'deny' ? `DENIED ${decision.reason}` : 'HELD approval required'
      } catch (err) {
        ctx.log.warn({ err: String(err) }, 'line command refused')
      }
      socket.write(`${verdict}\n`)
    }
  } catch (err) {
    if (err instanceof LineTooLong) {
      socket.write('ERR line too long\n')
      // A plugin's own audit events live in its namespace: `<plugin name>.<event>`.
      await session?.audit({ type: 'line.too_long', limit: MAX_LINE }).catch(() => undefined)
      return close('line too long')
    }
    ctx.log.warn({ err: String(err) }, 'line connection failed')
  }
  close('client closed')
}

/** @type {ProxyPlugin} */
const plugin = {
  name: 'line',
  contract: CONTRACT,
  async start(ctx) {
    /** @type {Set<Socket>} */
    const open = new Set()
    const server = createServer((socket) => void serve(ctx, socket, open))
    const listen = ctx.listen ?? { host: '127.0.0.1', port: 0 }
    await new Promise((resolve, reject) => {
      server.once('error', reject)
      server.listen(listen.port, listen.host, () => resolve(undefined))
    })
    const a = server.address()
    if (!a || typeof a !== 'object') throw new Error('the line listener has no address')
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
