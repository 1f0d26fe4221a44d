// A direct TCP connection to a target. ProxyContext.dial uses it for connections without `via:`;
// the others go through a connector's tunnel (engine/connector) behind the same function.

import { connect, type Socket } from 'node:net'
import { GatehouseError } from '../../engine/errors.js'
import type { Address } from '../../engine/types.js'

/** A target that does not answer within this time is reported unreachable, not waited on. */
export const DIAL_TIMEOUT_MS = 10_000

export type Dialer = (target: Address, signal?: AbortSignal) => Promise<Socket>

export const directDialer: Dialer = (target, signal) =>
  new Promise<Socket>((resolve, reject) => {
    let settled = false
    const sock = connect({ host: target.host, port: target.port, noDelay: true })
    const fail = (why: string, cause?: unknown): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      sock.destroy()
      reject(
        new GatehouseError('GH_ERR_UPSTREAM', `cannot reach ${target.host}:${target.port}: ${why}`, {
          cause,
          publicMessage: 'the target server is unreachable',
        }),
      )
    }
    const timer = setTimeout(() => fail('timed out'), DIAL_TIMEOUT_MS)
    const onAbort = (): void => fail('aborted')
    signal?.addEventListener('abort', onAbort, { once: true })
    sock.once('error', (err) => fail((err as NodeJS.ErrnoException).code ?? err.message, err))
    sock.once('connect', () => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
      sock.removeAllListeners('error')
      resolve(sock)
    })
  })
