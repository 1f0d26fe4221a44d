// The `identity:` section of gatehouse.yaml: OIDC providers for people, trusted workload issuers
// with claim-matching rules, delegation limits and service-account key lifetimes. `identitySchema`
// validates it as part of the configuration's one schema; every problem is "path: what is wrong".
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

import { z } from 'zod'
import { bool, duration, int, issueLines, NAME_RE, strict, text, uniqueNames } from '../config/zod.js'
import { parseDuration } from '../duration.js'
import { DEFAULT_MAX_DELEGATION_DEPTH, HARD_MAX_DELEGATION_DEPTH, validateGroup, validateSubject } from './tokens.js'
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

const CLAIM_RE = /^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$/

function isLoopbackUrl(u: URL): boolean {
  return u.hostname === '127.0.0.1' || u.hostname === '[::1]' || u.hostname === 'localhost'
}

/** Why `value` is not an acceptable provider URL (https, or http on loopback with allow_insecure_http), or null. */
function urlProblem(value: string, insecureOk: boolean): string | null {
  if (!URL.canParse(value)) return `must be a URL (got ${JSON.stringify(value)})`
  const u = new URL(value)
  if (u.protocol === 'https:') return null
  if (u.protocol === 'http:' && insecureOk && isLoopbackUrl(u)) return null
  return u.protocol === 'http:' && insecureOk
    ? 'allow_insecure_http is only allowed for a loopback address (127.0.0.1, [::1], localhost)'
    : 'must be an https URL (plain http only on loopback with allow_insecure_http: true)'
}

const nameField = (what: string) =>
  text().regex(NAME_RE, { error: 'must be letters, digits, _ . - (at most 63)' }).describe(`the ${what}'s name`)
const strList = () =>
  z.array(z.string().min(1), { error: 'must be a list of non-empty strings' }).refine((l) => l.every((x) => x.length > 0), {
    error: 'must be a list of non-empty strings',
  })
const DURATION = 'must be a duration like 30s, 15m, 1h or 7d'

const oidcProvider = strict(
  {
    name: nameField('provider'),
    issuer: text(),
    client_id: text(),
    client_secret: text()
      .regex(/^(env|file):./, { error: 'must be a secret reference (env:NAME or file:PATH), never the secret itself' })
      .optional(),
    scopes: strList()
      .refine((l) => l.includes('openid'), { error: 'must include openid' })
      .optional(),
    username_claim: text()
      .regex(CLAIM_RE, { error: (iss) => `is not a claim name (got ${JSON.stringify(iss.input)})` })
      .optional(),
    groups_claim: z
      .union([z.literal(''), z.null(), z.string().regex(CLAIM_RE)], {
        error: (iss) => `is not a claim name (got ${JSON.stringify(iss.input)})`,
      })
      .optional(),
    token_ttl: duration(DURATION).optional(),
    allow_insecure_http: bool().optional(),
  },
  'must be a mapping with name, issuer and client_id',
).superRefine((p, ctx) => {
  const bad = urlProblem(p.issuer, p.allow_insecure_http === true)
  if (bad) ctx.addIssue({ code: 'custom', path: ['issuer'], message: bad })
})

const workloadRule = strict(
  {
    match: z
      .record(
        z.string().regex(CLAIM_RE, { error: 'is not a claim name' }),
        z
          .union([z.string(), z.number(), z.boolean()], { error: 'must be a string' })
          .refine((v) => String(v) !== '*' && String(v) !== '', { error: 'must constrain the claim (not empty, not a lone *)' }),
        { error: 'must be a non-empty mapping of claim name to value' },
      )
      .refine((m) => Object.keys(m).length > 0, { error: 'must be a non-empty mapping of claim name to value' }),
    principal: text().refine((v) => validateSubject(v) === null && v.startsWith('workload:'), {
      error: (iss) => `must be workload:<name> (got ${JSON.stringify(iss.input)})`,
    }),
    groups: strList()
      .superRefine((groups, ctx) => {
        for (const g of groups) {
          const bad = validateGroup(g)
          if (bad) ctx.addIssue({ code: 'custom', message: bad })
        }
      })
      .optional(),
    scope: strList()
      .superRefine((scope, ctx) => {
        const bad = scopeSyntaxProblem(scope)
        if (bad) ctx.addIssue({ code: 'custom', message: bad })
      })
      .optional(),
  },
  'must be a mapping with match and principal',
)

const workloadIssuer = strict(
  {
    name: nameField('issuer'),
    issuer: text(),
    audience: text(),
    jwks_uri: text().optional(),
    token_ttl: duration(DURATION).optional(),
    allow_insecure_http: bool().optional(),
    rules: z
      .array(workloadRule, { error: 'must be a list' })
      .refine((r) => r.length > 0, { error: 'needs at least one rule: a token that matches no rule is refused' })
      .optional(),
  },
  'must be a mapping with name, issuer, audience and rules',
).superRefine((w, ctx) => {
  const insecure = w.allow_insecure_http === true
  const bad = urlProblem(w.issuer, insecure)
  if (bad) ctx.addIssue({ code: 'custom', path: ['issuer'], message: bad })
  const jwks = w.jwks_uri === undefined ? null : urlProblem(w.jwks_uri, insecure)
  if (jwks) ctx.addIssue({ code: 'custom', path: ['jwks_uri'], message: jwks })
  if (w.rules === undefined)
    ctx.addIssue({ code: 'custom', path: ['rules'], message: 'needs at least one rule: a token that matches no rule is refused' })
})

/** The `identity:` section of the configuration schema (engine/config/config.ts composes it). */
export const identitySchema = strict({
  delegation: strict({
    max_depth: int(0, HARD_MAX_DELEGATION_DEPTH, `must be an integer from 0 to ${HARD_MAX_DELEGATION_DEPTH}`).optional(),
    default_ttl: duration(DURATION).optional(),
  })
    .nullable()
    .optional(),
  oidc: uniqueNames(z.array(oidcProvider, { error: 'must be a list' }), 'provider name')
    .nullable()
    .optional(),
  workload_issuers: uniqueNames(z.array(workloadIssuer, { error: 'must be a list' }), 'issuer name')
    .superRefine(
      (ws: unknown[], ctx) => {
        if (!Array.isArray(ws)) return
        const seen = new Set<string>()
        for (const w of ws) {
          const issuer = typeof w === 'object' && w !== null ? (w as { issuer?: unknown }).issuer : undefined
          if (typeof issuer !== 'string') continue
          if (seen.has(issuer))
            ctx.addIssue({ code: 'custom', message: `issuer ${issuer} is listed twice: put all its rules in one entry` })
          seen.add(issuer)
        }
      },
      { when: () => true },
    )
    .nullable()
    .optional(),
  service_keys: strict({ default_ttl: duration(DURATION).optional(), max_ttl: duration(DURATION).optional() })
    .superRefine((sk, ctx) => {
      const d = parseDuration(sk.default_ttl ?? '90d') ?? 0
      const m = parseDuration(sk.max_ttl ?? '365d') ?? 0
      if (d > m) ctx.addIssue({ code: 'custom', path: ['default_ttl'], message: 'is longer than max_ttl' })
    })
    .nullable()
    .optional(),
})
  .nullable()
  .optional()

export type IdentitySection = z.output<typeof identitySchema>

/** The validated section as the engine uses it. */
export function identityFromSection(raw: IdentitySection): IdentityConfig {
  if (raw === undefined || raw === null) return DEFAULT_IDENTITY
  const secs = (v: string | undefined): number | null => (v === undefined ? null : parseDuration(v))
  const d = raw.delegation
  const delegation = d
    ? {
        maxDepth: d.max_depth ?? DEFAULT_MAX_DELEGATION_DEPTH,
        defaultTtlSeconds: secs(d.default_ttl) ?? DEFAULT_IDENTITY.delegation.defaultTtlSeconds,
      }
    : DEFAULT_IDENTITY.delegation
  const oidc: OidcProviderConfig[] = (raw.oidc ?? []).map((p) => ({
    name: p.name,
    issuer: p.issuer,
    clientId: p.client_id,
    clientSecret: p.client_secret ?? null,
    scopes: p.scopes ?? ['openid', 'profile', 'email'],
    usernameClaim: p.username_claim ?? 'sub',
    groupsClaim: p.groups_claim === null || p.groups_claim === '' ? null : (p.groups_claim ?? 'groups'),
    tokenTtlSeconds: secs(p.token_ttl),
    allowInsecureHttp: p.allow_insecure_http === true,
  }))
  const workloadIssuers: WorkloadIssuerConfig[] = (raw.workload_issuers ?? []).map((w) => ({
    name: w.name,
    issuer: w.issuer,
    audience: w.audience,
    jwksUri: w.jwks_uri ?? null,
    tokenTtlSeconds: secs(w.token_ttl) ?? 15 * 60,
    allowInsecureHttp: w.allow_insecure_http === true,
    rules: (w.rules ?? []).map((r) => ({
      match: Object.fromEntries(Object.entries(r.match).map(([k, v]) => [k, String(v)])),
      principal: r.principal,
      groups: r.groups ?? [],
      scope: r.scope ?? [],
    })),
  }))
  const sk = raw.service_keys
  const serviceKeys = sk
    ? {
        defaultTtlSeconds: secs(sk.default_ttl) ?? DEFAULT_IDENTITY.serviceKeys.defaultTtlSeconds,
        maxTtlSeconds: secs(sk.max_ttl) ?? DEFAULT_IDENTITY.serviceKeys.maxTtlSeconds,
      }
    : DEFAULT_IDENTITY.serviceKeys
  return { delegation, oidc, workloadIssuers, serviceKeys }
}

type Add = (path: string, what: string) => void

/** Validates and converts `identity:` alone; problems go to `add` as (key path, what). */
export function parseIdentityConfig(raw: unknown, add: Add): IdentityConfig {
  const r = identitySchema.safeParse(raw)
  if (!r.success) {
    for (const l of issueLines(r.error.issues, ['identity']))
      add(l.line.slice(0, l.line.indexOf(': ')), l.line.slice(l.line.indexOf(': ') + 2))
    return DEFAULT_IDENTITY
  }
  return identityFromSection(r.data)
}
