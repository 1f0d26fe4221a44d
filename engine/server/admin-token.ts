// The one admin credential: a token for user:admin in the admin group, kept in
// <data_dir>/admin.token (mode 0600). Every start reuses it while it verifies; only
// `gatehouse admin rotate` replaces it, and the replaced one is revoked at the same moment, so at
// most one admin token is ever valid. A start re-mints it only when it cannot be used any more
// (missing, revoked, signed by another key or issuer, or near its end), revoking what it replaces.

import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { ADMIN_GROUP } from './api.js'
import type { AuditLog } from '../audit/writer.js'
import type { Store } from '../store.js'
import type { TokenIssuer } from '../identity/tokens.js'

export const ADMIN_SUBJECT = 'user:admin'
/** Lifetime of the admin token: long, because it is reused until rotated. */
export const ADMIN_TOKEN_TTL_SECONDS = 365 * 86400
/** A start replaces a token with less than this left, so a running gateway never outlives it. */
const RENEW_BEFORE_SECONDS = 30 * 86400

export function adminTokenPath(dataDir: string): string {
  return join(dataDir, 'admin.token')
}

export interface AdminTokenResult {
  readonly token: string
  readonly id: string
  /** The id of the token this one replaced and revoked, if any. */
  readonly replaced: string | null
  /** False when the existing token was reused. */
  readonly minted: boolean
}

/** Writes a file so that a reader sees either nothing or the whole content, never a torn file. */
function writePrivate(path: string, content: string): void {
  const tmp = `${path}.${process.pid}.tmp`
  writeFileSync(tmp, content, { mode: 0o600 })
  renameSync(tmp, path)
}

/** The jti of a token without checking it: only to revoke the token it names. */
function unverifiedId(token: string): string | null {
  const payload = token.split('.')[1]
  if (payload === undefined) return null
  try {
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { jti?: unknown }
    return typeof claims.jti === 'string' && /^[A-Za-z0-9_.-]{1,200}$/.test(claims.jti) ? claims.jti : null
  } catch {
    return null
  }
}

async function mint(
  dataDir: string,
  issuer: TokenIssuer,
  store: Store,
  audit: AuditLog,
  chain: readonly string[],
  previous: string | null,
  reason: string,
): Promise<AdminTokenResult> {
  const t = await issuer.issue({ subject: ADMIN_SUBJECT, groups: [ADMIN_GROUP], ttlSeconds: ADMIN_TOKEN_TTL_SECONDS })
  writePrivate(adminTokenPath(dataDir), `${t.token}\n`)
  await audit.append({
    type: 'token.issued',
    session: null,
    chain: [...chain],
    connection: null,
    token: { id: t.id, subject: ADMIN_SUBJECT, groups: [ADMIN_GROUP], scope: [], expires_at: new Date(t.expiresAt * 1000).toISOString() },
    reason,
  })
  const replaced = previous === null ? null : unverifiedId(previous)
  if (replaced !== null && store.revoke(replaced, reason)) {
    await audit.append({ type: 'token.revoked', session: null, chain: [...chain], connection: null, token: { id: replaced }, reason })
  }
  return { token: t.token, id: t.id, replaced, minted: true }
}

/** At start: the admin token in the data directory if it still verifies, else a new one. */
export async function loadOrMintAdminToken(dataDir: string, issuer: TokenIssuer, store: Store, audit: AuditLog): Promise<AdminTokenResult> {
  const file = adminTokenPath(dataDir)
  const existing = existsSync(file) ? readFileSync(file, 'utf8').trim() : null
  if (existing) {
    try {
      const v = await issuer.verifyToken(existing, (j) => store.isRevoked(j))
      const root = v.identity.chain[0]
      const fresh = v.identity.expiresAt - Math.floor(Date.now() / 1000) > RENEW_BEFORE_SECONDS
      if (v.depth === 0 && root?.id === ADMIN_SUBJECT && root.groups.includes(ADMIN_GROUP) && fresh) {
        return { token: existing, id: v.id, replaced: null, minted: false }
      }
    } catch {
      // Unusable (another key or issuer, revoked, expired): replaced below.
    }
  }
  return mint(dataDir, issuer, store, audit, ['local:start'], existing, 'admin token replaced at start (the previous one was unusable)')
}

/** `gatehouse admin rotate`: a new admin token; the previous one is revoked. */
export async function rotateAdminToken(
  dataDir: string,
  issuer: TokenIssuer,
  store: Store,
  audit: AuditLog,
  chain: readonly string[],
): Promise<AdminTokenResult> {
  const file = adminTokenPath(dataDir)
  const existing = existsSync(file) ? readFileSync(file, 'utf8').trim() : null
  return mint(dataDir, issuer, store, audit, chain, existing, 'admin token rotated')
}
