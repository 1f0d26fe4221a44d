// Secrets a connector keeps for the gateway (`--secret billing=env:BILLING_PW`): the gateway's
// connection names it `password: connector:env:BILLING_PW`, and asks the connector, over the link
// (POST /prove), for proofs of it during the target's authentication — a SCRAM-SHA-256
// client-final-message or an md5 answer — never for the secret itself.
//
// The connector answers only when everything agrees: its operator gave it this very secret for
// this connection, the gateway's connection names the same reference, and the session asking has
// a stream open through this connector to that target now (one the gateway listed and `--allow`
// permits). Anything else is refused with a reason the gateway reports; the secret is read when a
// proof is asked (so a rotated file or variable is used at once) and never logged.

import { isAbsolute } from 'node:path'
import type { Logger } from 'pino'
import { GatehouseError } from '../engine/errors.js'
import { parseSecretRef, resolveSecret } from '../engine/secrets.js'
import type { ProofAnswer } from '../engine/connector/protocol.js'
import { md5Password, ScramError, scramProof } from '../proxies/postgres/scram.js'

/** A proof the connector will not give: the reason goes back to the gateway. */
export class ProofRefused extends Error {}

/** Parses `--secret connection=ref` (ref: env:NAME or file:/absolute/path); null when malformed. */
export function parseHeldSecret(text: string): { connection: string; ref: string } | null {
  const eq = text.indexOf('=')
  if (eq <= 0) return null
  const connection = text.slice(0, eq)
  const ref = text.slice(eq + 1)
  const parsed = parseSecretRef(ref, '/')
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(connection) || !parsed) return null
  if (parsed.kind === 'file' && !isAbsolute(ref.slice(5))) return null
  return { connection, ref }
}

export interface ProofContext {
  /** Addresses the gateway listed at attach (null before), and `--allow`. */
  readonly targets: ReadonlySet<string> | null
  readonly allow: readonly string[]
  /** Whether `session` has a CONNECT stream open through this connector to `target`. */
  carries(session: string, target: string): boolean
}

export class HeldSecrets {
  constructor(
    /** connection name → the reference this connector resolves for it. */
    private readonly secrets: ReadonlyMap<string, string>,
    private readonly log: Logger,
  ) {}

  get size(): number {
    return this.secrets.size
  }

  /** The proof asked for by a POST /prove body; throws ProofRefused. */
  async prove(body: unknown, ctx: ProofContext): Promise<ProofAnswer> {
    const b = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>
    const str = (k: string): string => {
      const v = b[k]
      if (typeof v !== 'string' || v.length === 0 || v.length > 4096) throw new ProofRefused(`malformed proof request (${k})`)
      return v
    }
    const connection = str('connection')
    const session = str('session')
    const target = str('target')
    const ref = str('ref')
    const mechanism = str('mechanism')
    const mine = this.secrets.get(connection)
    const refuse = (why: string): never => {
      this.log.warn({ connection, session, target, why }, 'proof refused')
      throw new ProofRefused(why)
    }
    if (mine === undefined) refuse(`this connector holds no secret for connection ${connection}`)
    if (mine !== ref) refuse(`this connector holds connection ${connection}'s secret as ${mine}, not ${ref}`)
    if (ctx.targets === null || !ctx.targets.has(target)) refuse(`${target} is not a target of this connector`)
    if (ctx.allow.length > 0 && !ctx.allow.includes(target)) refuse(`${target} is not allowed by this connector's --allow`)
    if (!ctx.carries(session, target)) refuse(`session ${session} has no stream to ${target} through this connector`)
    const parsed = parseSecretRef(ref, '/')
    if (!parsed) return refuse(`malformed reference ${ref}`)
    let secret: string
    try {
      secret = await resolveSecret(parsed)
    } catch (err) {
      // The message names the reference (never a value): "secret env:BILLING_PW is not set".
      return refuse(err instanceof GatehouseError ? err.message : `secret ${ref} cannot be read`)
    }
    try {
      if (mechanism === 'scram-sha-256') {
        const p = await scramProof(secret, str('client_first_bare'), str('server_first'))
        this.log.info({ connection, session, target, mechanism }, 'proof given')
        return { client_final: p.clientFinal, server_signature: p.serverSignature.toString('base64') }
      }
      if (mechanism === 'md5') {
        const salt = Buffer.from(str('salt'), 'base64')
        if (salt.length !== 4) return refuse('malformed md5 salt')
        this.log.info({ connection, session, target, mechanism }, 'proof given')
        return { md5: md5Password(str('user'), secret, salt) }
      }
      return refuse(`unsupported mechanism ${mechanism} (scram-sha-256 and md5 are)`)
    } catch (err) {
      if (err instanceof ProofRefused) throw err
      return refuse(err instanceof ScramError ? err.message : 'the proof could not be computed')
    }
  }
}
