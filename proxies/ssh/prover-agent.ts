// The target login key of a connection that leaves it with its connector (`private_key:
// connector:file:/etc/gh/id_ed25519`): an ssh2 agent whose identity and signatures are asked of
// the connector carrying the session, so the private key never reaches the gateway. The connector
// signs only a user-authentication request naming that key, for a session it carries now.

import ssh2 from 'ssh2'
import type { SecretProver } from '../types.js'

type SignCallback = (err?: Error, signature?: Buffer) => void

export class ConnectorKeyAgent extends ssh2.BaseAgent<string> {
  constructor(
    private readonly prover: SecretProver,
    private readonly signal?: AbortSignal,
  ) {
    super()
  }

  getIdentities(cb: (err: Error | undefined, keys?: string[]) => void): void {
    this.prover.sshPublicKey(this.signal).then(
      (key) => cb(undefined, [key]),
      (err: unknown) => cb(err instanceof Error ? err : new Error(String(err))),
    )
  }

  sign(_pubKey: string, data: Buffer, options: { hash?: string } | SignCallback, cb?: SignCallback): void {
    const done = typeof options === 'function' ? options : cb
    const hash = typeof options === 'function' ? undefined : options.hash
    this.prover.sshSign(data, hash, this.signal).then(
      (signature) => done?.(undefined, signature),
      (err: unknown) => done?.(err instanceof Error ? err : new Error(String(err))),
    )
  }
}
