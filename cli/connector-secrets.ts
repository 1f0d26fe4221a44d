// Secrets a connector keeps for the gateway (`--secret billing=env:BILLING_PW`): the gateway's
// connection names it `password: connector:env:BILLING_PW`, and asks the connector, over the link
// (POST /prove), for proofs of it during the target's authentication — a SCRAM-SHA-256
// client-final-message, an md5 answer, an SSH key's public half and its signature of a login —
// never for the secret itself.
//
// The connector answers only when everything agrees: its operator gave it this very secret for
// this connection, the gateway's connection names the same reference, and the session asking has
// a stream open through this connector to that target now (one the gateway listed and `--allow`
// permits, and the one the operator's `target=` names). The gateway may be compromised, so what a
// proof is good for is pinned here, not taken from the request: the user an SSH login or an md5
// answer or an SSH login names (`user=`), md5 only where the operator allows it (`md5`), SCRAM
// iteration counts between 4096 and 100,000, the salt and count of the first SCRAM proof for as
// long as the secret is unchanged, and an SSH signature only for a session whose exchange hash a
// target on one of this connector's own streams signed (connector-kex.ts). Anything else is refused with a reason the gateway reports;
// the secret is read when a proof is asked (so a rotated file or variable is used at once) and
// never logged.

import { createHash, randomBytes } from 'node:crypto'
import { isAbsolute } from 'node:path'
import type { Logger } from 'pino'
import { GatehouseError } from '../engine/errors.js'
import { parseAuthority, type ProofAnswer } from '../engine/connector/protocol.js'
import { parseSecretRef, resolveSecret } from '../engine/secrets.js'
import { checkServerFirst, md5Password, saltedPassword, ScramError, scramProofSalted } from '../proxies/postgres/scram.js'
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

/** One `--secret`: the reference, and what its proofs are pinned to. */
export interface HeldSecret {
  readonly ref: string
  /** The PostgreSQL role (md5) or SSH user (login) proofs name; none: no md5 answer, no SSH signature. */
  readonly user?: string
  /** The only target (host:port) proofs are given for. */
  readonly target?: string
  /** Whether md5 answers are given (SCRAM only by default). */
  readonly md5: boolean
}

/**
 * Parses `--secret connection=ref[,user=NAME][,target=host:port][,md5]` (ref: env:NAME or
 * file:/absolute/path, which therefore holds no comma); null when malformed.
 */
export function parseHeldSecret(text: string): { connection: string; secret: HeldSecret } | null {
  const eq = text.indexOf('=')
  if (eq <= 0) return null
  const connection = text.slice(0, eq)
  const [ref = '', ...opts] = text.slice(eq + 1).split(',')
  const parsed = parseSecretRef(ref, '/')
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(connection) || !parsed) return null
  if (parsed.kind === 'file' && !isAbsolute(ref.slice(5))) return null
  let user: string | undefined
  let target: string | undefined
  let md5 = false
  for (const o of opts) {
    if (o === 'md5' && !md5) md5 = true
    else if (o.startsWith('user=') && user === undefined && /^[\x20-\x7e\xa0-\uffff]{1,128}$/.test(o.slice(5))) user = o.slice(5)
    else if (o.startsWith('target=') && target === undefined && parseAuthority(o.slice(7))) target = o.slice(7)
    else return null
  }
  return { connection, secret: { ref, md5, ...(user !== undefined ? { user } : {}), ...(target !== undefined ? { target } : {}) } }
}

export interface ProofContext {
  /** Addresses the gateway listed at attach (null before), and `--allow`. */
  readonly targets: ReadonlySet<string> | null
  readonly allow: readonly string[]
  /** Whether `session` has a CONNECT stream open through this connector to `target`. */
  carries(session: string, target: string): boolean
  /** Whether an SSH server on one of `session`'s streams to `target` signed `sessionId` as its exchange hash. */
  hostSigned(session: string, target: string, sessionId: Buffer): boolean
}

/** The SCRAM parameters of a connection's first proof, and the SaltedPassword they gave. */
interface ScramPin {
  readonly secretTag: string
  readonly salt: string
  readonly iterations: number
  readonly salted: Promise<Buffer>
}

export class HeldSecrets {
  private readonly pins = new Map<string, ScramPin>()
  /** Tags a secret's value (to see it changed) without keeping a plain hash of it. */
  private readonly tagKey = randomBytes(32)

  constructor(
    /** connection name → the secret this connector resolves for it. */
    private readonly secrets: ReadonlyMap<string, HeldSecret>,
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
    if (mine === undefined) return refuse(`this connector holds no secret for connection ${connection}`)
    if (mine.ref !== ref) refuse(`this connector holds connection ${connection}'s secret as ${mine.ref}, not ${ref}`)
    if (mine.target !== undefined && mine.target !== target)
      refuse(`this connector proves connection ${connection}'s secret for ${mine.target} only, not ${target}`)
    if (ctx.targets === null || !ctx.targets.has(target)) refuse(`${target} is not a target of this connector`)
    if (ctx.allow.length > 0 && !ctx.allow.includes(target)) refuse(`${target} is not allowed by this connector's --allow`)
    if (!ctx.carries(session, target)) refuse(`session ${session} has no stream to ${target} through this connector`)
    const password = mechanism === 'scram-sha-256' || mechanism === 'md5'
    if (password) {
      // Checked before the secret is read: a refused request costs nothing.
      if (mechanism === 'md5' && !mine.md5)
        refuse(`this connector gives md5 answers for connection ${connection} only with md5 in its --secret`)
      if (mechanism === 'md5' && mine.user === undefined)
        refuse(`this connector's --secret for connection ${connection} names no user=, which md5 answers need`)
      if (mechanism === 'md5' && str('user') !== mine.user)
        refuse(`this connector answers md5 for connection ${connection} as ${mine.user} only`)
    }
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
      if (password && /-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(secret)) return refuse(`secret ${ref} is a private key, not a password`)
      if (mechanism === 'scram-sha-256') {
        const clientFirst = str('client_first_bare')
        const serverFirst = str('server_first')
        const { salt, iterations } = checkServerFirst(clientFirst, serverFirst)
        if (iterations < MIN_SCRAM_ITERATIONS || iterations > MAX_SCRAM_ITERATIONS)
          refuse(`SCRAM iteration count ${iterations} is outside ${MIN_SCRAM_ITERATIONS}..${MAX_SCRAM_ITERATIONS}`)
        const salted = await this.pinned(connection, secret, salt, iterations, refuse)
        const p = scramProofSalted(salted, clientFirst, serverFirst)
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
        const login = data.length > MAX_SIGN_BYTES ? null : parseUserauthRequest(data, blob)
        if (!login) return refuse('only an SSH login with this key is signed')
        if (mine.user === undefined)
          return refuse(`this connector's --secret for connection ${connection} names no user=, which SSH logins need`)
        if (login.user !== mine.user) return refuse(`this connector signs connection ${connection}'s logins as ${mine.user} only`)
        if (!ctx.hostSigned(session, target, login.sessionId))
          return refuse(`the login is not for an SSH session with ${target} on a stream of this connector`)
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

  /**
   * The SaltedPassword for the connection's pinned salt and count: the first SCRAM proof for a
   * secret's value pins them (trust on first use), so a gateway cannot later ask for proofs under a
   * salt it chose, and the PBKDF2 runs once per value, not once per session (a hostile count costs
   * the connector one run). A changed value (a rotated file or variable) may pin anew.
   */
  private pinned(connection: string, secret: string, salt: string, iterations: number, refuse: (why: string) => never): Promise<Buffer> {
    const secretTag = createHash('sha256').update(this.tagKey).update(secret).digest('base64')
    const pin = this.pins.get(connection)
    if (pin && pin.secretTag === secretTag) {
      if (pin.salt !== salt || pin.iterations !== iterations)
        refuse(
          `SCRAM salt or iteration count differs from the first proof for connection ${connection} (a password changed on the server needs the connector restarted, or a new secret)`,
        )
      return pin.salted
    }
    const salted = saltedPassword(secret, salt, iterations)
    this.pins.set(connection, { secretTag, salt, iterations, salted })
    // A failed run pins nothing.
    salted.catch(() => {
      if (this.pins.get(connection)?.salted === salted) this.pins.delete(connection)
    })
    return salted
  }
}

/**
 * Whether `data` is what RFC 4252 §7 has a client sign: session id, SSH_MSG_USERAUTH_REQUEST,
 * user, "ssh-connection", "publickey", TRUE, algorithm, and the public key blob `blob`.
 */
export function isUserauthRequestFor(data: Buffer, blob: Buffer): boolean {
  return parseUserauthRequest(data, blob) !== null
}

/** The session identifier and user of a login request `isUserauthRequestFor` accepts; null otherwise. */
export function parseUserauthRequest(data: Buffer, blob: Buffer): { sessionId: Buffer; user: string } | null {
  let at = 0
  const string = (): Buffer | null => {
    if (at + 4 > data.length) return null
    const n = data.readUInt32BE(at)
    if (at + 4 + n > data.length) return null
    const v = data.subarray(at + 4, at + 4 + n)
    at += 4 + n
    return v
  }
  const sessionId = string()
  if (sessionId === null || sessionId.length === 0) return null
  if (data[at++] !== 50) return null // SSH_MSG_USERAUTH_REQUEST
  const user = string()
  if (user === null) return null
  if (string()?.toString() !== 'ssh-connection') return null
  if (string()?.toString() !== 'publickey') return null
  if (data[at++] !== 1) return null
  if (string() === null) return null // algorithm
  const key = string()
  if (key === null || at !== data.length || !key.equals(blob)) return null
  return { sessionId, user: user.toString('utf8') }
}
