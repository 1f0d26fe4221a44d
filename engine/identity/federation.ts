// Workload federation: a CI job (GitHub Actions, GitLab CI, a Kubernetes service account)
// presents its own OIDC JWT; if its issuer is trusted and its claims match a configured rule, the
// job gets a Gatehouse token for the rule's principal, groups and scope.
//
// The token is checked against the issuer's keys (its JWKS, found through OpenID discovery unless
// `jwks_uri` is given, cached and refreshed on an unknown `kid` by jose), with its configured
// audience, an asymmetric algorithm, and exp/nbf/iat. Rules are tried in order; every `match` entry
// must equal the claim (a `*` in the expected value matches any run of characters, so
// `refs/tags/v*` works). No matching rule: refused, naming the claims the rules look at.

import { createRemoteJWKSet, decodeJwt, errors as joseErrors, type JWTPayload, jwtVerify } from 'jose'
import type { WorkloadIssuerConfig, WorkloadRule } from './config.js'
import { IdentityError, refused } from './errors.js'

/** Asymmetric algorithms only: an HMAC "signature" would need a secret shared with the issuer. */
const ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA']
const MAX_JWT_CHARS = 16 * 1024
const DISCOVERY_TIMEOUT_MS = 5000
const MAX_DISCOVERY_BYTES = 256 * 1024

export interface FederatedIdentity {
  readonly principal: string
  readonly groups: readonly string[]
  readonly scope: readonly string[]
  readonly ttlSeconds: number
  /** For the audit record: which issuer, which rule, which subject. */
  readonly issuer: string
  readonly issuerName: string
  readonly rule: number
  readonly subject: string
}

function globMatch(pattern: string, value: string): boolean {
  if (!pattern.includes('*')) return pattern === value
  const re = new RegExp(
    `^${pattern
      .split('*')
      .map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
      .join('.*')}$`,
    's',
  )
  return re.test(value)
}

function claimText(v: unknown): string | null {
  if (typeof v === 'string') return v
  if (typeof v === 'number' || typeof v === 'boolean') return String(v)
  return null
}

export function ruleMatches(rule: WorkloadRule, claims: JWTPayload): boolean {
  for (const [k, want] of Object.entries(rule.match)) {
    const have = claimText(claims[k])
    if (have === null || !globMatch(want, have)) return false
  }
  return true
}

async function fetchJson(url: string): Promise<unknown> {
  const res = await fetch(url, { signal: AbortSignal.timeout(DISCOVERY_TIMEOUT_MS), redirect: 'error' })
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`)
  const text = await res.text()
  if (text.length > MAX_DISCOVERY_BYTES) throw new Error(`${url}: document too large`)
  return JSON.parse(text) as unknown
}

export class WorkloadFederation {
  private readonly byIssuer = new Map<string, WorkloadIssuerConfig>()
  private readonly jwks = new Map<string, Promise<ReturnType<typeof createRemoteJWKSet>>>()

  constructor(issuers: readonly WorkloadIssuerConfig[]) {
    for (const i of issuers) this.byIssuer.set(i.issuer, i)
  }

  get size(): number {
    return this.byIssuer.size
  }

  private keySet(conf: WorkloadIssuerConfig): Promise<ReturnType<typeof createRemoteJWKSet>> {
    let p = this.jwks.get(conf.issuer)
    if (!p) {
      p = (async () => {
        let uri = conf.jwksUri
        if (!uri) {
          const doc = await fetchJson(`${conf.issuer.replace(/\/$/, '')}/.well-known/openid-configuration`)
          const d = doc as { issuer?: unknown; jwks_uri?: unknown }
          if (d.issuer !== conf.issuer) throw new Error(`discovery document names issuer ${JSON.stringify(d.issuer)}`)
          if (typeof d.jwks_uri !== 'string') throw new Error('discovery document has no jwks_uri')
          uri = d.jwks_uri
        }
        const u = new URL(uri)
        if (u.protocol !== 'https:' && !(conf.allowInsecureHttp && u.protocol === 'http:')) throw new Error(`jwks_uri ${uri} is not https`)
        return createRemoteJWKSet(u, { timeoutDuration: DISCOVERY_TIMEOUT_MS })
      })()
      // A failed discovery is retried on the next exchange, not cached.
      p.catch(() => this.jwks.delete(conf.issuer))
      this.jwks.set(conf.issuer, p)
    }
    return p
  }

  /** Verifies a workload's JWT and maps it through the rules; every refusal is an IdentityError. */
  async exchange(token: string): Promise<FederatedIdentity> {
    const bad = (why: string, publicMessage: string, cause?: unknown): IdentityError =>
      new IdentityError('invalid_grant', `workload token rejected: ${why}`, { cause, publicMessage })
    if (token.length > MAX_JWT_CHARS) throw bad('too long', 'the workload token is too long')
    let unverified: JWTPayload
    try {
      unverified = decodeJwt(token)
    } catch (err) {
      throw bad('malformed', 'the subject token is not a JWT', err)
    }
    const conf = typeof unverified.iss === 'string' ? this.byIssuer.get(unverified.iss) : undefined
    if (!conf) {
      throw bad(
        `untrusted issuer ${JSON.stringify(unverified.iss)}`,
        `the workload token's issuer ${JSON.stringify(unverified.iss ?? null)} is not a trusted workload issuer (identity.workload_issuers)`,
      )
    }
    let keys: ReturnType<typeof createRemoteJWKSet>
    try {
      keys = await this.keySet(conf)
    } catch (err) {
      throw new IdentityError('server_error', `workload issuer ${conf.name}: cannot fetch its keys (${(err as Error).message})`, {
        cause: err,
        publicMessage: `the keys of workload issuer ${conf.name} could not be fetched; try again`,
      })
    }
    let claims: JWTPayload
    try {
      claims = (
        await jwtVerify(token, keys, {
          issuer: conf.issuer,
          audience: conf.audience,
          algorithms: ALGORITHMS,
          requiredClaims: ['exp', 'iat', 'sub'],
        })
      ).payload
    } catch (err) {
      if (err instanceof joseErrors.JWTExpired) throw bad('expired', 'the workload token has expired', err)
      if (err instanceof joseErrors.JWTClaimValidationFailed && err.claim === 'aud') {
        throw bad('wrong audience', `the workload token is not for this gateway (its audience must be ${conf.audience})`, err)
      }
      if (err instanceof joseErrors.JWTClaimValidationFailed && err.claim === 'nbf')
        throw bad('nbf', 'the workload token is not valid yet', err)
      throw bad(err instanceof Error ? err.message : 'invalid', `the workload token is not validly signed by ${conf.name}`, err)
    }
    const index = conf.rules.findIndex((r) => ruleMatches(r, claims))
    const rule = conf.rules[index]
    if (!rule) {
      const keysLooked = [...new Set(conf.rules.flatMap((r) => Object.keys(r.match)))]
      const shown = keysLooked.map((k) => `${k}=${JSON.stringify(claimText(claims[k]))}`).join(', ')
      throw refused('invalid_grant', `the workload token's claims match no rule of issuer ${conf.name} (${shown})`)
    }
    return {
      principal: rule.principal,
      groups: rule.groups,
      scope: rule.scope,
      ttlSeconds: conf.tokenTtlSeconds,
      issuer: conf.issuer,
      issuerName: conf.name,
      rule: index,
      subject: String(claims.sub),
    }
  }
}
