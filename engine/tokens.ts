// Gatehouse's own tokens: compact JWTs signed with the gateway's Ed25519 key (EdDSA signatures are
// 64 bytes, which keeps even a deep delegation chain far below OpenSSH's 1,023-character password
// limit). The token id is the `jti`; `sub` is the principal id; `grp` its groups; `scp` its scope.
// Delegation (the identity issue) adds the nested `act` claim of RFC 8693 §4.1.

import { randomBytes, generateKeyPairSync, createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto'
import { existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { SignJWT, jwtVerify, errors as joseErrors, calculateJwkThumbprint, type JWK } from 'jose'
import { GatehouseError } from './errors.js'
import type { Identity, Principal, PrincipalKind } from './types.js'

export const PRINCIPAL_RE = /^(user|workload|service|agent):[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}$/
const GROUP_RE = /^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$/
/** OpenSSH reads a password of at most 1,023 characters and silently cuts the rest. */
export const MAX_TOKEN_CHARS = 1000

export interface SigningKey {
  readonly privateKey: KeyObject
  readonly publicKey: KeyObject
  readonly kid: string
}

/** Loads the gateway's signing key from the data directory, creating it (mode 0600) if absent. */
export async function loadOrCreateSigningKey(dataDir: string): Promise<SigningKey> {
  const dir = join(dataDir, 'keys')
  const file = join(dir, 'signing.jwk')
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  if (!existsSync(file)) {
    const { privateKey } = generateKeyPairSync('ed25519')
    const jwk = privateKey.export({ format: 'jwk' })
    writeFileSync(file, `${JSON.stringify(jwk)}\n`, { mode: 0o600, flag: 'wx' })
  }
  let jwk: JWK
  try {
    jwk = JSON.parse(readFileSync(file, 'utf8')) as JWK
  } catch (err) {
    throw new GatehouseError('GH_ERR_STATE', `${file}: cannot read the signing key`, { cause: err })
  }
  const privateKey = createPrivateKey({ key: jwk as import('node:crypto').JsonWebKey, format: 'jwk' })
  const publicKey = createPublicKey(privateKey)
  const pubJwk = publicKey.export({ format: 'jwk' }) as JWK
  const kid = (await calculateJwkThumbprint(pubJwk)).slice(0, 16)
  return { privateKey, publicKey, kid }
}

export interface IssueRequest {
  readonly subject: string
  readonly groups?: readonly string[]
  readonly scope?: readonly string[]
  readonly ttlSeconds: number
}

export interface IssuedToken {
  readonly token: string
  readonly id: string
  readonly expiresAt: number
}

export function principalKind(id: string): PrincipalKind {
  return id.slice(0, id.indexOf(':')) as PrincipalKind
}

export function validateSubject(subject: string): string | null {
  if (!PRINCIPAL_RE.test(subject)) {
    return `subject must be <kind>:<name> with kind user, workload, service or agent (got ${JSON.stringify(subject)})`
  }
  return null
}

export function validateGroup(group: string): string | null {
  return GROUP_RE.test(group) ? null : `group names are letters, digits, _ . : @ - (got ${JSON.stringify(group)})`
}

export class TokenIssuer {
  constructor(
    private readonly key: SigningKey,
    readonly issuer: string,
  ) {}

  async issue(req: IssueRequest): Promise<IssuedToken> {
    const bad = validateSubject(req.subject) ?? (req.groups ?? []).map(validateGroup).find((x) => x !== null) ?? null
    if (bad) throw new GatehouseError('GH_ERR_AUTH', bad)
    const id = randomBytes(12).toString('base64url')
    const now = Math.floor(Date.now() / 1000)
    const exp = now + req.ttlSeconds
    const claims: Record<string, unknown> = {}
    if (req.groups && req.groups.length > 0) claims.grp = [...req.groups]
    if (req.scope && req.scope.length > 0) claims.scp = req.scope.join(' ')
    const token = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'EdDSA', kid: this.key.kid })
      .setIssuer(this.issuer)
      .setAudience(this.issuer)
      .setSubject(req.subject)
      .setJti(id)
      .setIssuedAt(now)
      .setExpirationTime(exp)
      .sign(this.key.privateKey)
    if (token.length > MAX_TOKEN_CHARS) {
      throw new GatehouseError('GH_ERR_AUTH', `the token would be ${token.length} characters, over the ${MAX_TOKEN_CHARS} limit`)
    }
    return { token, id, expiresAt: exp }
  }

  /**
   * Checks signature, issuer, audience and expiry, then asks `isRevoked` about the token id.
   * Every failure is GH_ERR_AUTH with one public message, so a caller learns nothing about
   * which check failed; the log gets the detail.
   */
  async verify(token: string, isRevoked: (jti: string) => boolean): Promise<Identity> {
    const fail = (why: string, cause?: unknown): GatehouseError =>
      new GatehouseError('GH_ERR_AUTH', `token rejected: ${why}`, {
        cause,
        publicMessage: 'authentication failed: the token is invalid, expired or revoked',
      })
    if (token.length > MAX_TOKEN_CHARS * 2) throw fail('token too long')
    let payload: Record<string, unknown>
    try {
      const r = await jwtVerify(token, this.key.publicKey, {
        issuer: this.issuer,
        audience: this.issuer,
        algorithms: ['EdDSA'],
        requiredClaims: ['sub', 'jti', 'exp', 'iat'],
      })
      payload = r.payload as Record<string, unknown>
    } catch (err) {
      if (err instanceof joseErrors.JWTExpired) throw fail('expired', err)
      throw fail(err instanceof Error ? err.message : 'malformed', err)
    }
    const sub = payload.sub
    const jti = payload.jti
    const exp = payload.exp
    if (typeof sub !== 'string' || validateSubject(sub) !== null) throw fail('bad subject')
    if (typeof jti !== 'string' || typeof exp !== 'number') throw fail('bad claims')
    const grp = payload.grp ?? []
    if (!Array.isArray(grp) || !grp.every((g): g is string => typeof g === 'string')) throw fail('bad groups')
    const scp = payload.scp ?? ''
    if (typeof scp !== 'string') throw fail('bad scope')
    if (isRevoked(jti)) throw fail(`token ${jti} is revoked`)
    const principal: Principal = {
      id: sub,
      kind: principalKind(sub),
      groups: grp,
      scope: scp === '' ? [] : scp.split(' '),
    }
    return { chain: [principal], tokenIds: [jti], expiresAt: exp }
  }
}
