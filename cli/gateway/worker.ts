// One worker of `gatehouse serve --workers N` (gateway/primary.ts forks it): a whole gateway that
// shares the primary's listeners, writes its own audit segment series and tells the other workers,
// through the primary, what they must act on (engine/peers.ts). It stops when the primary says so
// (SIGTERM) and also when its channel to the primary closes: a worker that can no longer learn of
// revocations must not keep serving.

import cluster from 'node:cluster'
import type { Logger } from 'pino'
import type { Config } from '../../engine/config/config.js'
import { IpcPeers, type PeerEnvelope } from '../../engine/peers.js'
import type { AnyProxyPlugin } from '../../proxies/types.js'
import { Gateway } from './gateway.js'
import { WORKER_CLEAN_ENV, WORKER_ID_ENV, type WorkerReady } from './primary.js'

/** Whether this process is a worker the primary forked. */
export function isWorkerProcess(): boolean {
  return cluster.isWorker && process.env[WORKER_ID_ENV] !== undefined
}

export async function runWorker(
  config: Config,
  plugins: readonly AnyProxyPlugin[],
  log: Logger,
  opts: { readonly dev?: boolean } = {},
): Promise<Gateway> {
  const id = Number(process.env[WORKER_ID_ENV])
  const wlog = log.child({ worker: id })
  const send = (m: PeerEnvelope | WorkerReady): boolean => {
    try {
      return process.send?.(m) ?? false
    } catch {
      return false
    }
  }
  const peers = new IpcPeers(id, send)
  process.on('message', (m: unknown) => peers.receive(m))
  let gw: Gateway | null = null
  let stopping = false
  const stop = (reason: string, code: number): void => {
    if (stopping) return
    stopping = true
    const done = (): void => {
      wlog.flush()
      process.exit(code)
    }
    if (gw) gw.stop(reason).then(done, () => process.exit(1))
    else done()
  }
  process.on('disconnect', () => {
    wlog.error('lost the channel to the primary: stopping, since revocations could no longer reach this worker')
    stop('the gateway worker lost its primary', 1)
  })
  // The primary forwards SIGTERM; a terminal's Ctrl-C reaches the whole process group.
  process.on('SIGTERM', () => stop('the gateway is shutting down', 0))
  process.on('SIGINT', () => stop('the gateway is shutting down', 0))
  gw = await Gateway.start(config, plugins, wlog, {
    ...(opts.dev ? { dev: true } : {}),
    worker: { id, cleanAll: process.env[WORKER_CLEAN_ENV] === '1', peers },
  })
  if (stopping) {
    await gw.stop('the gateway is shutting down')
    process.exit(0)
  }
  send({ gh: 'ready', addresses: { ...gw.addresses } })
  return gw
}
