// Proofs of a secret a connector keeps (`password: connector:env:NAME`): the SecretProver a session
// gets for such a key asks the connector carrying it (POST /prove on the link) for a SCRAM proof or
// an md5 answer, and checks only the answer's shape; the secret itself never crosses the link.
// Any refusal or silence fails the session closed (GH_ERR_SECRET, with the connector's reason).

import { GatehouseError } from '../errors.js'
import type { SecretProver } from '../types.js'
import type { ProofRequest } from './protocol.js'

/** A control request the connector refused, with its reason. */
export class ControlRefused extends Error {
  constructor(readonly reason: string) {
    super(reason)
  }
}

/** The link carrying the session now, or null when none does. */
export type ProofChannel = () => {
  readonly connector: string
  readonly session: string
  ask(req: ProofRequest, signal?: AbortSignal): Promise<unknown>
} | null

export function connectorProver(connection: string, target: string, ref: string, channel: ProofChannel): SecretProver {
  const ask = async (body: Record<string, string>, signal?: AbortSignal): Promise<Record<string, unknown>> => {
    const via = channel()
    const name = via?.connector ?? 'of this connection'
    const failed = (why: string): GatehouseError =>
      new GatehouseError('GH_ERR_SECRET', `connection ${connection}: connector ${name} did not prove ${ref}: ${why}`, {
        publicMessage: `connector ${name} cannot authenticate connection ${connection}: ${why}`,
      })
    if (!via) throw failed('the connector is not connected')
    let answer: unknown
    try {
      answer = await via.ask({ session: via.session, connection, target, ref, ...body } as ProofRequest, signal)
    } catch (err) {
      throw failed(err instanceof ControlRefused ? err.reason : 'the connector did not answer')
    }
    if (typeof answer !== 'object' || answer === null) throw failed('malformed answer')
    return answer as Record<string, unknown>
  }
  const malformed = (what: string): GatehouseError =>
    new GatehouseError('GH_ERR_SECRET', `connection ${connection}: malformed ${what} proof from the connector`, {
      publicMessage: `the connector of connection ${connection} answered a malformed ${what} proof`,
    })
  return {
    ref: `connector:${ref}`,
    async scramSha256(clientFirstBare, serverFirst, signal) {
      const a = await ask({ mechanism: 'scram-sha-256', client_first_bare: clientFirstBare, server_first: serverFirst }, signal)
      if (typeof a.client_final !== 'string' || typeof a.server_signature !== 'string') throw malformed('SCRAM')
      return { clientFinal: a.client_final, serverSignature: a.server_signature }
    },
    async md5(user, salt, signal) {
      const a = await ask({ mechanism: 'md5', user, salt: salt.toString('base64') }, signal)
      if (typeof a.md5 !== 'string' || !/^md5[0-9a-f]{32}$/.test(a.md5)) throw malformed('md5')
      return a.md5
    },
    async sshPublicKey(signal) {
      const a = await ask({ mechanism: 'ssh-public-key' }, signal)
      if (typeof a.public_key !== 'string' || !/^[a-z0-9@.-]+ [A-Za-z0-9+/]+={0,2}$/.test(a.public_key)) throw malformed('SSH public key')
      return a.public_key
    },
    async sshSign(data, hash, signal) {
      const a = await ask({ mechanism: 'ssh-sign', data: data.toString('base64'), ...(hash ? { hash } : {}) }, signal)
      if (typeof a.signature !== 'string' || a.signature.length === 0) throw malformed('SSH signature')
      return Buffer.from(a.signature, 'base64')
    },
  }
}
