// The `identity:` section of gatehouse.yaml: OIDC providers for people, trusted workload issuers
// with claim-matching rules, delegation limits and service-account key lifetimes. Parsed from
// `unknown` like the rest of the config; every problem is reported as "path: what is wrong".
//
//   identity:
//     delegation: { max_depth: 4, default_ttl: 15m }
//     oidc:
//       - name: corp
//         issuer: https://login.example.com
//         client_id: gatehouse
//         client_secret: env:GH_OIDC_SECRET      # optional: a public client with PKCE without it
//         scopes: [openid, email, groups]        # default [openid, profile, email]
//         username_claim: email                  # default sub: user:<value>
//         groups_claim: groups                   # default groups
//         token_ttl: 8h                          # default tokens.default_ttl
//     workload_issuers:
//       - name: github
//         issuer: https://token.actions.githubusercontent.com
//         audience: https://gatehouse.example.com
//         token_ttl: 15m
//         rules:
//           - match: { repository: acme/api, ref: refs/heads/main }
//             principal: workload:acme-api-deploy
//             groups: [deployers]
//             scope: [connection:app]
//     service_keys: { default_ttl: 90d, max_ttl: 365d }
//
// `allow_insecure_http: true` lets a provider or issuer on a loopback address speak plain HTTP
// (tests, a laptop); it is refused for any other host.

import { DEFAULT_MAX_DELEGATION_DEPTH, HARD_MAX_DELEGATION_DEPTH, validateGroup, validateSubject } from '../tokens.js'
import { scopeSyntaxProblem } from './scope.js'

export interface OidcProviderConfig {
  readonly name: string
  readonly issuer: string
  readonly clientId: string
  /** A secret reference (`env:NAME`, `file:PATH`), resolved at start; null for a public client. */
  readonly clientSecret: string | null
  readonly scopes: readonly string[]
  readonly usernameClaim: string
  readonly groupsClaim: string | null
  /** Null: tokens.default_ttl. */
  readonly tokenTtlSeconds: number | null
  readonly allowInsecureHttp: boolean
}

export interface WorkloadRule {
  /** Claim name → expected value; `*` in a value matches any run of characters. */
  readonly match: Readonly<Record<string, string>>
  readonly principal: string
  readonly groups: readonly string[]
  readonly scope: readonly string[]
}

export interface WorkloadIssuerConfig {
  readonly name: string
  readonly issuer: string
  readonly audience: string
  /** Null: found through the issuer's OpenID discovery document. */
  readonly jwksUri: string | null
  readonly tokenTtlSeconds: number
  readonly allowInsecureHttp: boolean
  readonly rules: readonly WorkloadRule[]
}

export interface IdentityConfig {
  readonly delegation: { readonly maxDepth: number; readonly defaultTtlSeconds: number }
  readonly oidc: readonly OidcProviderConfig[]
  readonly workloadIssuers: readonly WorkloadIssuerConfig[]
  readonly serviceKeys: { readonly defaultTtlSeconds: number; readonly maxTtlSeconds: number }
}

export const DEFAULT_IDENTITY: IdentityConfig = {
  delegation: { maxDepth: DEFAULT_MAX_DELEGATION_DEPTH, defaultTtlSeconds: 15 * 60 },
  oidc: [],
  workloadIssuers: [],
  serviceKeys: { defaultTtlSeconds: 90 * 86400, maxTtlSeconds: 365 * 86400 },
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/
const CLAIM_RE = /^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$/

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

export function parseDurationText(text: string): number | null {
  const m = /^(\d+)(s|m|h|d)$/.exec(text.trim())
  if (!m) return null
  const unit = m[2] === 's' ? 1 : m[2] === 'm' ? 60 : m[2] === 'h' ? 3600 : 86400
  return Number(m[1]) * unit
}

function isLoopbackUrl(u: URL): boolean {
  return u.hostname === '127.0.0.1' || u.hostname === '[::1]' || u.hostname === 'localhost'
}

type Add = (path: string, what: string) => void

function unknownKeys(add: Add, obj: Record<string, unknown>, path: string, allowed: readonly string[]): void {
  for (const k of Object.keys(obj)) if (!allowed.includes(k)) add(`${path}.${k}`, `unknown key (allowed: ${allowed.join(', ')})`)
}

function str(add: Add, obj: Record<string, unknown>, key: string, path: string, required = false): string | undefined {
  const v = obj[key]
  if (v === undefined || v === null) {
    if (required) add(`${path}.${key}`, 'is required')
    return undefined
  }
  if (typeof v !== 'string' || v.length === 0) {
    add(`${path}.${key}`, `must be a non-empty string (got ${JSON.stringify(v)})`)
    return undefined
  }
  return v
}

function dur(add: Add, obj: Record<string, unknown>, key: string, path: string): number | null {
  const v = str(add, obj, key, path)
  if (v === undefined) return null
  const s = parseDurationText(v)
  if (s === null || s === 0) {
    add(`${path}.${key}`, `must be a duration like 30s, 15m, 1h or 7d (got ${JSON.stringify(v)})`)
    return null
  }
  return s
}

function bool(add: Add, obj: Record<string, unknown>, key: string, path: string): boolean {
  const v = obj[key] ?? false
  if (typeof v !== 'boolean') {
    add(`${path}.${key}`, 'must be true or false')
    return false
  }
  return v
}

function strList(add: Add, obj: Record<string, unknown>, key: string, path: string): string[] | undefined {
  const v = obj[key]
  if (v === undefined || v === null) return undefined
  if (!Array.isArray(v) || !v.every((x): x is string => typeof x === 'string' && x.length > 0)) {
    add(`${path}.${key}`, 'must be a list of non-empty strings')
    return undefined
  }
  return v
}

/** An https URL, or http on a loopback host when `allow_insecure_http` is set. */
function url(add: Add, value: string | undefined, path: string, insecureOk: boolean): string | undefined {
  if (value === undefined) return undefined
  let u: URL
  try {
    u = new URL(value)
  } catch {
    add(path, `must be a URL (got ${JSON.stringify(value)})`)
    return undefined
  }
  if (u.protocol === 'https:') return value
  if (u.protocol === 'http:' && insecureOk && isLoopbackUrl(u)) return value
  add(
    path,
    u.protocol === 'http:' && insecureOk
      ? 'allow_insecure_http is only allowed for a loopback address (127.0.0.1, [::1], localhost)'
      : 'must be an https URL (plain http only on loopback with allow_insecure_http: true)',
  )
  return undefined
}

function list(add: Add, raw: unknown, path: string): unknown[] {
  if (raw === undefined || raw === null) return []
  if (!Array.isArray(raw)) {
    add(path, 'must be a list')
    return []
  }
  return raw
}

/** Parses `identity:`; `defaultTokenTtl` is tokens.default_ttl. Problems go to `add`. */
export function parseIdentityConfig(raw: unknown, add: Add): IdentityConfig {
  if (raw === undefined || raw === null) return DEFAULT_IDENTITY
  if (!isRecord(raw)) {
    add('identity', 'must be a mapping')
    return DEFAULT_IDENTITY
  }
  unknownKeys(add, raw, 'identity', ['delegation', 'oidc', 'workload_issuers', 'service_keys'])

  let delegation = DEFAULT_IDENTITY.delegation
  const d = raw.delegation
  if (d !== undefined && d !== null) {
    if (!isRecord(d)) add('identity.delegation', 'must be a mapping')
    else {
      unknownKeys(add, d, 'identity.delegation', ['max_depth', 'default_ttl'])
      const md = d.max_depth ?? DEFAULT_MAX_DELEGATION_DEPTH
      if (typeof md !== 'number' || !Number.isInteger(md) || md < 0 || md > HARD_MAX_DELEGATION_DEPTH) {
        add('identity.delegation.max_depth', `must be an integer from 0 to ${HARD_MAX_DELEGATION_DEPTH}`)
      }
      delegation = {
        maxDepth: typeof md === 'number' && Number.isInteger(md) ? md : DEFAULT_MAX_DELEGATION_DEPTH,
        defaultTtlSeconds: dur(add, d, 'default_ttl', 'identity.delegation') ?? DEFAULT_IDENTITY.delegation.defaultTtlSeconds,
      }
    }
  }

  const oidc: OidcProviderConfig[] = []
  const names = new Set<string>()
  list(add, raw.oidc, 'identity.oidc').forEach((p, i) => {
    const path = `identity.oidc[${i}]`
    if (!isRecord(p)) {
      add(path, 'must be a mapping with name, issuer and client_id')
      return
    }
    unknownKeys(add, p, path, [
      'name',
      'issuer',
      'client_id',
      'client_secret',
      'scopes',
      'username_claim',
      'groups_claim',
      'token_ttl',
      'allow_insecure_http',
    ])
    const name = str(add, p, 'name', path, true)
    if (name !== undefined && !NAME_RE.test(name)) add(`${path}.name`, 'must be letters, digits, _ . - (at most 63)')
    else if (name !== undefined && names.has(name)) add(`${path}.name`, `duplicate provider name ${JSON.stringify(name)}`)
    else if (name !== undefined) names.add(name)
    const insecure = bool(add, p, 'allow_insecure_http', path)
    const issuer = url(add, str(add, p, 'issuer', path, true), `${path}.issuer`, insecure)
    const clientId = str(add, p, 'client_id', path, true)
    const clientSecret = str(add, p, 'client_secret', path) ?? null
    if (clientSecret !== null && !/^(env|file):./.test(clientSecret)) {
      add(`${path}.client_secret`, 'must be a secret reference (env:NAME or file:PATH), never the secret itself')
    }
    const scopes = strList(add, p, 'scopes', path) ?? ['openid', 'profile', 'email']
    if (!scopes.includes('openid')) add(`${path}.scopes`, 'must include openid')
    const usernameClaim = str(add, p, 'username_claim', path) ?? 'sub'
    const groupsRaw = p.groups_claim
    const groupsClaim = groupsRaw === null || groupsRaw === '' ? null : (str(add, p, 'groups_claim', path) ?? 'groups')
    for (const [k, v] of [
      ['username_claim', usernameClaim],
      ['groups_claim', groupsClaim],
    ] as const) {
      if (v !== null && !CLAIM_RE.test(v)) add(`${path}.${k}`, `is not a claim name (got ${JSON.stringify(v)})`)
    }
    const tokenTtlSeconds = dur(add, p, 'token_ttl', path)
    if (name && issuer && clientId) {
      oidc.push({ name, issuer, clientId, clientSecret, scopes, usernameClaim, groupsClaim, tokenTtlSeconds, allowInsecureHttp: insecure })
    }
  })

  const workloadIssuers: WorkloadIssuerConfig[] = []
  const wnames = new Set<string>()
  list(add, raw.workload_issuers, 'identity.workload_issuers').forEach((w, i) => {
    const path = `identity.workload_issuers[${i}]`
    if (!isRecord(w)) {
      add(path, 'must be a mapping with name, issuer, audience and rules')
      return
    }
    unknownKeys(add, w, path, ['name', 'issuer', 'audience', 'jwks_uri', 'token_ttl', 'allow_insecure_http', 'rules'])
    const name = str(add, w, 'name', path, true)
    if (name !== undefined && !NAME_RE.test(name)) add(`${path}.name`, 'must be letters, digits, _ . - (at most 63)')
    else if (name !== undefined && wnames.has(name)) add(`${path}.name`, `duplicate issuer name ${JSON.stringify(name)}`)
    else if (name !== undefined) wnames.add(name)
    const insecure = bool(add, w, 'allow_insecure_http', path)
    const issuer = url(add, str(add, w, 'issuer', path, true), `${path}.issuer`, insecure)
    const audience = str(add, w, 'audience', path, true)
    const jwksUri = url(add, str(add, w, 'jwks_uri', path), `${path}.jwks_uri`, insecure) ?? null
    const tokenTtlSeconds = dur(add, w, 'token_ttl', path) ?? 15 * 60
    const rules: WorkloadRule[] = []
    const rulesRaw = list(add, w.rules, `${path}.rules`)
    if (rulesRaw.length === 0) add(`${path}.rules`, 'needs at least one rule: a token that matches no rule is refused')
    rulesRaw.forEach((r, j) => {
      const rp = `${path}.rules[${j}]`
      if (!isRecord(r)) {
        add(rp, 'must be a mapping with match and principal')
        return
      }
      unknownKeys(add, r, rp, ['match', 'principal', 'groups', 'scope'])
      const match: Record<string, string> = {}
      if (!isRecord(r.match) || Object.keys(r.match).length === 0) add(`${rp}.match`, 'must be a non-empty mapping of claim name to value')
      else {
        for (const [k, v] of Object.entries(r.match)) {
          if (!CLAIM_RE.test(k)) add(`${rp}.match.${k}`, 'is not a claim name')
          else if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') add(`${rp}.match.${k}`, 'must be a string')
          else if (String(v) === '*' || String(v) === '') add(`${rp}.match.${k}`, 'must constrain the claim (not empty, not a lone *)')
          else match[k] = String(v)
        }
      }
      const principal = str(add, r, 'principal', rp, true)
      if (principal !== undefined && (validateSubject(principal) !== null || !principal.startsWith('workload:'))) {
        add(`${rp}.principal`, `must be workload:<name> (got ${JSON.stringify(principal)})`)
      }
      const groups = strList(add, r, 'groups', rp) ?? []
      for (const g of groups) {
        const bad = validateGroup(g)
        if (bad) add(`${rp}.groups`, bad)
      }
      const scope = strList(add, r, 'scope', rp) ?? []
      const sbad = scopeSyntaxProblem(scope)
      if (sbad) add(`${rp}.scope`, sbad)
      if (principal && Object.keys(match).length > 0) rules.push({ match, principal, groups, scope })
    })
    if (name && issuer && audience)
      workloadIssuers.push({ name, issuer, audience, jwksUri, tokenTtlSeconds, allowInsecureHttp: insecure, rules })
  })
  const issuersSeen = new Set<string>()
  for (const w of workloadIssuers) {
    if (issuersSeen.has(w.issuer)) add('identity.workload_issuers', `issuer ${w.issuer} is listed twice: put all its rules in one entry`)
    issuersSeen.add(w.issuer)
  }

  let serviceKeys = DEFAULT_IDENTITY.serviceKeys
  const sk = raw.service_keys
  if (sk !== undefined && sk !== null) {
    if (!isRecord(sk)) add('identity.service_keys', 'must be a mapping')
    else {
      unknownKeys(add, sk, 'identity.service_keys', ['default_ttl', 'max_ttl'])
      serviceKeys = {
        defaultTtlSeconds: dur(add, sk, 'default_ttl', 'identity.service_keys') ?? serviceKeys.defaultTtlSeconds,
        maxTtlSeconds: dur(add, sk, 'max_ttl', 'identity.service_keys') ?? serviceKeys.maxTtlSeconds,
      }
      if (serviceKeys.defaultTtlSeconds > serviceKeys.maxTtlSeconds) add('identity.service_keys.default_ttl', 'is longer than max_ttl')
    }
  }
  return { delegation, oidc, workloadIssuers, serviceKeys }
}
