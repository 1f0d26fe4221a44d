// Secrets a connector keeps for the gateway (`--secret billing=env:BILLING_PW`): the gateway's
// connection names it `password: connector:env:BILLING_PW`, and asks the connector, over the link
// (POST /prove), for proofs of it during the target's authentication — a SCRAM-SHA-256
// client-final-message, an md5 answer, an SSH key's public half and its signature of a login —
// never for the secret itself.
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
import { checkServerFirst, md5Password, ScramError, scramProof } from '../proxies/postgres/scram.js'
import ssh2 from 'ssh2'

/** An SSH user-authentication request is small; anything larger is not one. */
const MAX_SIGN_BYTES = 16 * 1024

/**
 * SCRAM iteration counts proven. Below PostgreSQL's default (4096) a gateway-chosen count makes
 * offline guessing of the password from the proof cheap; above 100,000 (25 times the default) one
 * proof costs the connector more than any real server asks for, and a hostile target could make
 * every other connection's proofs wait behind its own on the thread pool.
 */
export const MIN_SCRAM_ITERATIONS = 4096
export const MAX_SCRAM_ITERATIONS = 100_000

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
        const clientFirst = str('client_first_bare')
        const serverFirst = str('server_first')
        const { iterations } = checkServerFirst(clientFirst, serverFirst)
        if (iterations < MIN_SCRAM_ITERATIONS || iterations > MAX_SCRAM_ITERATIONS)
          refuse(`SCRAM iteration count ${iterations} is outside ${MIN_SCRAM_ITERATIONS}..${MAX_SCRAM_ITERATIONS}`)
        // PBKDF2 runs on the thread pool (crypto.pbkdf2), never on the event loop.
        const p = await scramProof(secret, clientFirst, serverFirst)
        this.log.info({ connection, session, target, mechanism }, 'proof given')
        return { client_final: p.clientFinal, server_signature: p.serverSignature.toString('base64') }
      }
      if (mechanism === 'md5') {
        const salt = Buffer.from(str('salt'), 'base64')
        if (salt.length !== 4) return refuse('malformed md5 salt')
        this.log.info({ connection, session, target, mechanism }, 'proof given')
        return { md5: md5Password(str('user'), secret, salt) }
      }
      if (mechanism === 'ssh-public-key' || mechanism === 'ssh-sign') {
        const parsed = ssh2.utils.parseKey(secret)
        const key = Array.isArray(parsed) ? parsed[0] : parsed
        if (!key || key instanceof Error || !key.isPrivateKey()) return refuse(`secret ${ref} is not an SSH private key`)
        const blob = key.getPublicSSH()
        if (mechanism === 'ssh-public-key') return { public_key: `${key.type} ${blob.toString('base64')}` }
        const data = Buffer.from(str('data'), 'base64')
        const hash = b.hash
        if (hash !== undefined && hash !== 'sha256' && hash !== 'sha512' && hash !== 'sha1') return refuse('unsupported signature hash')
        // A signing oracle only for logging in with this key: anything but a publickey
        // user-authentication request naming this very key is refused.
        if (data.length > MAX_SIGN_BYTES || !isUserauthRequestFor(data, blob)) return refuse('only an SSH login with this key is signed')
        const signature = key.sign(data, hash)
        if (signature instanceof Error) return refuse('the signature could not be computed')
        this.log.info({ connection, session, target, mechanism }, 'proof given')
        return { signature: signature.toString('base64') }
      }
      return refuse(`unsupported mechanism ${mechanism} (scram-sha-256, md5, ssh-public-key and ssh-sign are)`)
    } catch (err) {
      if (err instanceof ProofRefused) throw err
      return refuse(err instanceof ScramError ? err.message : 'the proof could not be computed')
    }
  }
}

/**
 * Whether `data` is what RFC 4252 §7 has a client sign: session id, SSH_MSG_USERAUTH_REQUEST,
 * user, "ssh-connection", "publickey", TRUE, algorithm, and the public key blob `blob`.
 */
export function isUserauthRequestFor(data: Buffer, blob: Buffer): boolean {
  let at = 0
  const string = (): Buffer | null => {
    if (at + 4 > data.length) return null
    const n = data.readUInt32BE(at)
    if (at + 4 + n > data.length) return null
    const v = data.subarray(at + 4, at + 4 + n)
    at += 4 + n
    return v
  }
  if (string() === null) return false // session identifier
  if (data[at++] !== 50) return false // SSH_MSG_USERAUTH_REQUEST
  if (string() === null) return false // user name
  if (string()?.toString() !== 'ssh-connection') return false
  if (string()?.toString() !== 'publickey') return false
  if (data[at++] !== 1) return false
  if (string() === null) return false // algorithm
  const key = string()
  return key !== null && at === data.length && key.equals(blob)
}
