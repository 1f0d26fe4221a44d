// Gatehouse's own tokens: compact JWTs signed with the gateway's Ed25519 key (EdDSA signatures are
// 64 bytes, which keeps even a deep delegation chain far below OpenSSH's 1,023-character password
// limit). The token id is the `jti`; `sub` is the root principal, `grp` its groups, `scp` the
// token's scope (space-separated, empty or absent: unrestricted); `src`, when present, is the id of
// the credential the root token was exchanged for (a service-account key), revocable like a jti.
//
// Delegation (RFC 8693 token exchange) adds, on the child token:
//
//   act  the nested actor chain of RFC 8693 §4.1, newest actor outermost: {"sub": "agent:B",
//        "act": {"sub": "agent:A", "scp": "…"}}. A prior actor carries the shortest scope request
//        that yields its scope (absent: none, i.e. "whatever the parent could"), and its effective
//        scope is recomputed by narrowing hop by hop, as at issue. The outermost actor's scope is
//        the token's own `scp` (its effective scope, the one a resource reads).
//   jti  hierarchical: the parent's id, a dot, 8 random characters (`Qm3…x.d8Ke2pQa.Zr1uV0c9`).
//        Every ancestor's id is a prefix of the child's, so the token names each hop's token id,
//        the parent's included, at 9 characters a hop instead of a full id per hop.
//   rsc  the root token's scope (absent: unrestricted)
//   pth  a hash of the parent token (SHA-256, first 12 bytes, base64url)
//   dep  the depth: the number of actors
//
// So `sub`/`grp` still name the subject on whose behalf every actor works (as RFC 8693 has it),
// and the chain, root first, is [sub, innermost act, …, outermost act]. Every rule of delegation
// (scope only narrows, depth bounded, no agent twice, every ancestor unrevoked) is checked when the
// child is issued and again on every verify, from the token alone plus the revocation store; a
// child's `exp` is never later than its parent's, so an expired ancestor means an expired child.

import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject, randomBytes, webcrypto } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { calculateJwkThumbprint, decodeProtectedHeader, errors as joseErrors, type JWK, jwtVerify, SignJWT } from 'jose'
import { GatehouseError } from '../errors.js'
import { IdentityError, refused } from './errors.js'
import { minimalRequest, narrowScope, scopeWithinProblem } from './scope.js'
import type { Identity, Principal, PrincipalKind } from '../types.js'
import { isRecord } from '../record.js'

export const PRINCIPAL_RE = /^(user|workload|service|agent):[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}$/
const GROUP_RE = /^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$/
const ID_RE = /^[A-Za-z0-9_-]{8,43}$/
/** A token id: a root id, then one 8-character segment per delegation hop. */
const TOKEN_ID_RE = /^[A-Za-z0-9_-]{8,43}(\.[A-Za-z0-9_-]{8}){0,16}$/
const AGENT_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}$/
/** OpenSSH reads a password of at most 1,023 characters and silently cuts the rest. */
export const MAX_TOKEN_CHARS = 1000
/** The default of `identity.delegation.max_depth`. */
export const DEFAULT_MAX_DELEGATION_DEPTH = 4
/** No configuration may allow deeper chains: the verifier walks at most this many `act` levels. */
export const HARD_MAX_DELEGATION_DEPTH = 16
const MAX_AUDIENCE_CHARS = 200

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
  /** The resource the token is for; the gateway itself (its issuer URL) when absent. */
  readonly audience?: string
  /** Id of the credential this token was exchanged for (a service-account key); revocable. */
  readonly source?: string
}

export interface IssuedToken {
  readonly token: string
  readonly id: string
  readonly expiresAt: number
}

export interface DelegateRequest {
  /** The agent's name (`summarizer`) or principal id (`agent:summarizer`). */
  readonly agent: string
  /** Requested scope entries; empty: whatever the parent could. */
  readonly scope: readonly string[]
  /** Requested lifetime; refused when it would outlive the parent. */
  readonly ttlSeconds?: number
  /** Lifetime when none is requested (capped by the parent's remaining lifetime). */
  readonly defaultTtlSeconds?: number
  readonly audience?: string
}

export interface DelegatedToken extends IssuedToken {
  /** The child's identity as the gateway will see it (for the audit record and the caller). */
  readonly identity: Identity
  readonly parentId: string
  readonly scope: readonly string[]
  readonly audience: string
}

export interface TokenIssuerOptions {
  /** `identity.delegation.max_depth`: the most actors a chain may have. */
  readonly maxDepth?: number
  /**
   * Whether the root principal may pass `unmask:<rule>` to an agent without holding it in its
   * scope: the masking rules say its groups see that rule's columns clear. Absent: never.
   */
  readonly mayUnmask?: (root: Principal, rule: string) => boolean
  /** Told about every token issued or delegated (the state database keeps the ids, for revocation). */
  readonly onIssued?: (t: { readonly id: string; readonly subject: string; readonly expiresAt: number }) => void
  /** Problems with scope entries that name no known action or connection (none: not checked). */
  readonly scopeProblems?: (entries: readonly string[]) => string[]
}

/** A verified token: its identity plus what delegation and introspection need. */
export interface VerifiedToken {
  readonly identity: Identity
  readonly id: string
  readonly audience: string
  readonly issuedAt: number
  readonly source: string | null
  /** The number of actors (0 for a root token). */
  readonly depth: number
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

/** Null when `aud` may name a resource: an absolute URI (RFC 8707) or a URN, short enough for a token. */
export function audienceProblem(aud: string): string | null {
  if (aud.length === 0 || aud.length > MAX_AUDIENCE_CHARS) return `the audience must be 1 to ${MAX_AUDIENCE_CHARS} characters`
  if (!/^[a-z][a-z0-9+.-]*:[^\s]+$/i.test(aud))
    return `the audience must be an absolute URI such as https://api.example.com (got ${JSON.stringify(aud)})`
  return null
}

/** The ids of a token and of every ancestor, root first (each a prefix of the next). */
export function lineage(id: string): string[] {
  const parts = id.split('.')
  return parts.map((_, i) => parts.slice(0, i + 1).join('.'))
}

function newTokenId(): string {
  // 72 random bits: unique without coordination (a collision is expected only after some 2^36
  // tokens), and short. It never starts with - or _, so `gatehouse token revoke <id>` parses.
  for (;;) {
    const id = randomBytes(9).toString('base64url')
    if (/^[A-Za-z0-9]/.test(id)) return id
  }
}

/** SHA-256 of a token, first 12 bytes (96 bits), base64url: binds a child to the exact parent it came from. */
export function tokenHash(token: string): string {
  return createHash('sha256').update(token).digest().subarray(0, 12).toString('base64url')
}

function fmtSeconds(s: number): string {
  if (s >= 3600) return `${Math.floor(s / 3600)}h${s % 3600 >= 60 ? `${Math.floor((s % 3600) / 60)}m` : ''}`
  if (s >= 60) return `${Math.floor(s / 60)}m${s % 60 ? `${s % 60}s` : ''}`
  return `${s}s`
}

const GENERIC = 'authentication failed: the token is not a valid Gatehouse token'

export class TokenIssuer {
  readonly maxDepth: number
  private mayUnmask: (root: Principal, rule: string) => boolean
  private readonly onIssued: NonNullable<TokenIssuerOptions['onIssued']>
  /** Entries of a requested scope that name no known action or connection. */
  readonly scopeProblems: NonNullable<TokenIssuerOptions['scopeProblems']>
  /** The public key as a WebCrypto key, imported once: verifying with it skips a per-call conversion. */
  private cryptoKey: Promise<webcrypto.CryptoKey> | null = null

  constructor(
    private readonly key: SigningKey,
    readonly issuer: string,
    opts: TokenIssuerOptions = {},
  ) {
    const d = opts.maxDepth ?? DEFAULT_MAX_DELEGATION_DEPTH
    if (!Number.isInteger(d) || d < 0 || d > HARD_MAX_DELEGATION_DEPTH) {
      throw new GatehouseError('GH_ERR_CONFIG', `the delegation depth limit must be an integer from 0 to ${HARD_MAX_DELEGATION_DEPTH}`)
    }
    this.maxDepth = d
    this.mayUnmask = opts.mayUnmask ?? (() => false)
    this.onIssued = opts.onIssued ?? (() => undefined)
    this.scopeProblems = opts.scopeProblems ?? (() => [])
  }

  /** Replaces the root-unmask rule (the masking rules changed). */
  setMayUnmask(fn: (root: Principal, rule: string) => boolean): void {
    this.mayUnmask = fn
  }

  get kid(): string {
    return this.key.kid
  }

  /** The public key as a JWK, for the JWKS document resources use to check tokens meant for them. */
  publicJwk(): JWK {
    const jwk = this.key.publicKey.export({ format: 'jwk' }) as JWK
    return { kty: jwk.kty, crv: jwk.crv, x: jwk.x, kid: this.key.kid, alg: 'EdDSA', use: 'sig' }
  }

  private async sign(claims: Record<string, unknown>, subject: string, audience: string, id: string, now: number, exp: number) {
    const token = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'EdDSA', kid: this.key.kid })
      .setIssuer(this.issuer)
      .setAudience(audience)
      .setSubject(subject)
      .setJti(id)
      .setIssuedAt(now)
      .setExpirationTime(exp)
      .sign(this.key.privateKey)
    if (token.length > MAX_TOKEN_CHARS) {
      throw refused(
        'invalid_request',
        `the token would be ${token.length} characters, over the ${MAX_TOKEN_CHARS}-character limit (OpenSSH cuts longer passwords): use shorter names or a smaller scope`,
      )
    }
    return token
  }

  async issue(req: IssueRequest): Promise<IssuedToken> {
    const bad =
      validateSubject(req.subject) ??
      (req.groups ?? []).map(validateGroup).find((x) => x !== null) ??
      (req.audience !== undefined ? audienceProblem(req.audience) : null) ??
      (this.scopeProblems(req.scope ?? []).join('; ') || null)
    if (bad) throw new GatehouseError('GH_ERR_AUTH', bad)
    const id = newTokenId()
    const now = Math.floor(Date.now() / 1000)
    const exp = now + req.ttlSeconds
    const claims: Record<string, unknown> = {}
    if (req.groups && req.groups.length > 0) claims.grp = [...req.groups]
    if (req.scope && req.scope.length > 0) claims.scp = req.scope.join(' ')
    if (req.source !== undefined) claims.src = req.source
    const token = await this.sign(claims, req.subject, req.audience ?? this.issuer, id, now, exp)
    this.onIssued({ id, subject: req.subject, expiresAt: exp })
    return { token, id, expiresAt: exp }
  }

  /**
   * Issues a child of `parentToken` for an agent (RFC 8693 delegation). The parent must be a
   * valid Gatehouse token for this gateway; the child's scope is narrowed from the parent's, its
   * life ends no later than the parent's, its depth is bounded and its agent new to the chain.
   * Every refusal is an IdentityError whose public message says what to change.
   */
  async delegate(parentToken: string, req: DelegateRequest, isRevoked: (jti: string) => boolean): Promise<DelegatedToken> {
    const parent = await this.verifyToken(parentToken, isRevoked)
    const name = req.agent.startsWith('agent:') ? req.agent.slice('agent:'.length) : req.agent
    if (!AGENT_NAME_RE.test(name)) {
      throw refused('invalid_request', `the agent name must be letters, digits, _ . @ + - (at most 64; got ${JSON.stringify(req.agent)})`)
    }
    const agent = `agent:${name}`
    const chain = parent.identity.chain
    const chainText = chain.map((p) => p.id).join(' → ')
    if (parent.depth + 1 > this.maxDepth) {
      throw refused(
        'invalid_request',
        `delegation depth ${parent.depth + 1} exceeds the limit of ${this.maxDepth} (identity.delegation.max_depth); the chain is ${chainText}`,
      )
    }
    if (chain.some((p) => p.id === agent)) {
      throw refused('invalid_request', `${agent} already appears in the chain ${chainText}: an agent may appear at most once`)
    }
    const holder = chain[chain.length - 1]
    const root = chain[0]
    if (!holder || !root) throw new IdentityError('invalid_grant', 'empty chain', { publicMessage: GENERIC })
    const unknown = this.scopeProblems(req.scope)
    if (unknown.length > 0) throw refused('invalid_scope', unknown.join('; '))
    const narrowed = narrowScope(holder.scope, req.scope, parent.depth === 0 ? (rule) => this.mayUnmask(root, rule) : () => false)
    if (!narrowed.ok) throw refused('invalid_scope', narrowed.problem)

    const now = Math.floor(Date.now() / 1000)
    const remaining = parent.identity.expiresAt - now
    let exp: number
    if (req.ttlSeconds !== undefined) {
      if (!Number.isInteger(req.ttlSeconds) || req.ttlSeconds <= 0)
        throw refused('invalid_request', 'the lifetime must be a positive number of seconds')
      if (req.ttlSeconds > remaining) {
        throw refused(
          'invalid_request',
          `the requested lifetime ${fmtSeconds(req.ttlSeconds)} is longer than the parent's remaining ${fmtSeconds(Math.max(0, remaining))}: a child cannot outlive its parent`,
        )
      }
      exp = now + req.ttlSeconds
    } else {
      exp = Math.min(parent.identity.expiresAt, now + (req.defaultTtlSeconds ?? remaining))
    }
    const audience = req.audience ?? this.issuer
    const audBad = audienceProblem(audience)
    if (audBad) throw refused('invalid_target', audBad)

    const id = `${parent.id}.${randomBytes(6).toString('base64url')}`
    const claims: Record<string, unknown> = {}
    if (root.groups.length > 0) claims.grp = [...root.groups]
    if (narrowed.scope.length > 0) claims.scp = narrowed.scope.join(' ')
    if (parent.source) claims.src = parent.source
    if (root.scope.length > 0) claims.rsc = root.scope.join(' ')
    // Nest: the innermost act is the first actor; each prior actor carries its shortest request.
    let act: Record<string, unknown> | undefined
    for (let i = 1; i < chain.length; i++) {
      const hop = chain[i] as Principal
      const level: Record<string, unknown> = { sub: hop.id }
      const request = minimalRequest(hop.scope, (chain[i - 1] as Principal).scope)
      if (request.length > 0) level.scp = request.join(' ')
      if (act) level.act = act
      act = level
    }
    claims.act = act ? { sub: agent, act } : { sub: agent }
    claims.pth = tokenHash(parentToken)
    claims.dep = parent.depth + 1
    const token = await this.sign(claims, root.id, audience, id, now, exp)
    this.onIssued({ id, subject: agent, expiresAt: exp })
    const identity: Identity = {
      chain: [...chain, { id: agent, kind: 'agent', groups: [], scope: narrowed.scope }],
      tokenIds: [...parent.identity.tokenIds, id],
      expiresAt: exp,
    }
    return { token, id, expiresAt: exp, identity, parentId: parent.id, scope: narrowed.scope, audience }
  }

  /**
   * Checks signature, key id, issuer, audience, expiry and not-before, then the delegation chain
   * (depth, no agent twice, each hop's scope within the one before), then asks `isRevoked` about
   * every token id in the chain. Every failure is GH_ERR_AUTH; the public message says which kind
   * of failure without internals (a forgery learns only "not a valid Gatehouse token"); the log
   * gets the detail.
   */
  async verify(token: string, isRevoked: (jti: string) => boolean): Promise<Identity> {
    return (await this.verifyToken(token, isRevoked)).identity
  }

  async verifyToken(token: string, isRevoked: (jti: string) => boolean, audience: string = this.issuer): Promise<VerifiedToken> {
    const fail = (why: string, publicMessage = GENERIC, cause?: unknown): IdentityError =>
      new IdentityError('invalid_grant', `token rejected: ${why}`, { cause, publicMessage })
    if (token.length > MAX_TOKEN_CHARS * 2) throw fail('token too long')
    let header: { alg?: unknown; kid?: unknown }
    try {
      header = decodeProtectedHeader(token)
    } catch (err) {
      throw fail('malformed', GENERIC, err)
    }
    if (header.alg !== 'EdDSA') throw fail(`algorithm ${JSON.stringify(header.alg)} is not accepted`)
    if (header.kid !== this.key.kid) throw fail(`unknown key id ${JSON.stringify(header.kid)}`)
    let payload: Record<string, unknown>
    try {
      this.cryptoKey ??= webcrypto.subtle.importKey('jwk', this.key.publicKey.export({ format: 'jwk' }), { name: 'Ed25519' }, false, [
        'verify',
      ])
      const r = await jwtVerify(token, await this.cryptoKey, {
        issuer: this.issuer,
        audience,
        algorithms: ['EdDSA'],
        requiredClaims: ['sub', 'jti', 'exp', 'iat', 'aud'],
      })
      payload = r.payload as Record<string, unknown>
    } catch (err) {
      if (err instanceof joseErrors.JWTExpired) throw fail('expired', 'authentication failed: the token has expired', err)
      if (err instanceof joseErrors.JWTClaimValidationFailed) {
        if (err.claim === 'nbf') throw fail('not yet valid (nbf)', 'authentication failed: the token is not valid yet', err)
        if (err.claim === 'aud') throw fail('wrong audience', 'authentication failed: the token is meant for another audience', err)
        if (err.claim === 'iss') throw fail('wrong issuer', GENERIC, err)
      }
      throw fail(err instanceof Error ? err.message : 'malformed', GENERIC, err)
    }
    const { sub, jti, exp, iat } = payload
    if (typeof sub !== 'string' || validateSubject(sub) !== null) throw fail('bad subject')
    if (typeof jti !== 'string' || !TOKEN_ID_RE.test(jti) || typeof exp !== 'number' || typeof iat !== 'number') throw fail('bad claims')
    const grp = payload.grp ?? []
    if (!Array.isArray(grp) || !grp.every((g): g is string => typeof g === 'string' && validateGroup(g) === null)) throw fail('bad groups')
    const scopeOf = (v: unknown, what: string): string[] => {
      if (v === undefined) return []
      if (typeof v !== 'string') throw fail(`bad scope in ${what}`)
      return v.split(' ').filter((e) => e.length > 0)
    }
    const scp = scopeOf(payload.scp, 'scp')
    const src = payload.src
    if (src !== undefined && (typeof src !== 'string' || !ID_RE.test(src))) throw fail('bad src')
    const aud = payload.aud
    const audText = typeof aud === 'string' ? aud : Array.isArray(aud) && typeof aud[0] === 'string' ? aud[0] : audience

    const ids: string[] = src !== undefined ? [src] : []
    let chain: Principal[]
    let depth = 0
    if (payload.act === undefined) {
      for (const k of ['rsc', 'pth', 'dep']) if (payload[k] !== undefined) throw fail(`${k} without act`)
      if (jti.includes('.')) throw fail('a hierarchical id without act')
      chain = [{ id: sub, kind: principalKind(sub), groups: grp, scope: scp }]
      ids.push(jti)
    } else {
      const invalidChain = 'authentication failed: the delegation chain of the token is invalid'
      const { dep, pth } = payload
      if (typeof pth !== 'string' || !/^[A-Za-z0-9_-]{16}$/.test(pth)) throw fail('bad pth')
      const rootScope = scopeOf(payload.rsc, 'rsc')
      // Walk the nested act claims, newest actor first, never deeper than the hard limit.
      const actors: { sub: string; scp: unknown }[] = []
      let level: unknown = payload.act
      while (level !== undefined) {
        if (actors.length >= HARD_MAX_DELEGATION_DEPTH) throw fail('act nested too deeply', invalidChain)
        if (!isRecord(level)) throw fail('act is not an object', invalidChain)
        for (const k of Object.keys(level)) if (!['sub', 'scp', 'act'].includes(k)) throw fail(`unknown act member ${k}`, invalidChain)
        const outermost = actors.length === 0
        if (typeof level.sub !== 'string' || validateSubject(level.sub) !== null || principalKind(level.sub) !== 'agent') {
          throw fail('an actor is not an agent', invalidChain)
        }
        if (outermost && level.scp !== undefined) throw fail('scp on the outermost act', invalidChain)
        actors.push({ sub: level.sub, scp: level.scp })
        level = level.act
      }
      actors.reverse()
      depth = actors.length
      const lineageIds = lineage(jti)
      if (dep !== depth || lineageIds.length !== depth + 1)
        throw fail(`dep ${String(dep)}, ${depth} actors and id ${jti} disagree`, invalidChain)
      if (depth > this.maxDepth) {
        throw fail(
          `depth ${depth} exceeds the limit of ${this.maxDepth}`,
          'authentication failed: the delegation chain is deeper than this gateway allows',
        )
      }
      const root: Principal = { id: sub, kind: principalKind(sub), groups: grp, scope: rootScope }
      chain = [root]
      ids.push(...lineageIds)
      // Each hop's scope is narrowed from the one before, as at issue; the presenting hop's is the
      // token's own `scp`, which must lie within its parent's.
      const mayUnmaskRoot = (rule: string): boolean => this.mayUnmask(root, rule)
      actors.forEach((a, i) => {
        const before = chain[chain.length - 1] as Principal
        const unmask = i === 0 ? mayUnmaskRoot : () => false
        let scope: readonly string[]
        let problem: string | null
        if (i === actors.length - 1) {
          scope = scp
          problem = scopeWithinProblem(scp, before.scope, unmask)
        } else {
          const r = narrowScope(before.scope, scopeOf(a.scp, `act of ${a.sub}`), unmask)
          scope = r.ok ? r.scope : []
          problem = r.ok ? null : r.problem
        }
        if (problem) {
          throw fail(
            `${a.sub}: ${problem}`,
            `authentication failed: the delegation chain is invalid: the scope of ${a.sub} is wider than its parent's`,
          )
        }
        chain.push({ id: a.sub, kind: 'agent', groups: [], scope })
      })
      const seen = new Set<string>()
      for (const p of chain) {
        if (seen.has(p.id)) throw fail(`${p.id} appears twice in the chain`, invalidChain)
        seen.add(p.id)
      }
    }
    for (const id of ids) {
      if (isRevoked(id)) {
        throw fail(
          id === jti ? `token ${id} is revoked` : `ancestor ${id} of token ${jti} is revoked`,
          id === jti
            ? 'authentication failed: the token is revoked'
            : 'authentication failed: a token this one was delegated from is revoked',
        )
      }
    }
    return { identity: { chain, tokenIds: ids, expiresAt: exp }, id: jti, audience: audText, issuedAt: iat, source: src ?? null, depth }
  }
}
