// Console sessions: the browser holds only a random cookie; the Gatehouse token it stands for stays
// in this process's memory, so no credential reaches a page, a URL or browser storage. Each session
// has its own CSRF token, which the page sends back in a header on every state-changing call.
// Sessions end at logout, at the token's expiry, or when the gateway stops (they are not persisted:
// a restart logs everyone out, which fails closed).

import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import type { Identity } from '../types.js'

/** How many console sessions may exist at once; the oldest is dropped past it. */
const MAX_SESSIONS = 10_000

export interface ConsoleSession {
  readonly token: string
  readonly identity: Identity
  readonly csrf: string
  /** The token was issued for this session (OIDC login): it is revoked at logout. */
  readonly owned: boolean
  /** Unix seconds: the token's expiry. */
  readonly expiresAt: number
}

function key(cookie: string): string {
  return createHash('sha256').update(cookie).digest('base64url')
}

export class ConsoleSessions {
  private readonly byKey = new Map<string, ConsoleSession>()

  /** A new session; returns the cookie value (only the browser keeps it; we keep its hash). */
  create(s: Omit<ConsoleSession, 'csrf'>): { cookie: string; session: ConsoleSession } {
    if (this.byKey.size >= MAX_SESSIONS) {
      const oldest = this.byKey.keys().next().value
      if (oldest !== undefined) this.byKey.delete(oldest)
    }
    const cookie = randomBytes(32).toString('base64url')
    const session: ConsoleSession = { ...s, csrf: randomBytes(24).toString('base64url') }
    this.byKey.set(key(cookie), session)
    return { cookie, session }
  }

  get(cookie: string | undefined): ConsoleSession | null {
    if (!cookie || cookie.length > 128) return null
    const k = key(cookie)
    const s = this.byKey.get(k)
    if (!s) return null
    if (s.expiresAt <= Date.now() / 1000) {
      this.byKey.delete(k)
      return null
    }
    return s
  }

  end(cookie: string): ConsoleSession | null {
    const k = key(cookie)
    const s = this.byKey.get(k) ?? null
    this.byKey.delete(k)
    return s
  }

  /** Ends every session whose token (or an ancestor) is `jti`: a revocation logs the console out too. */
  endByToken(jti: string): void {
    for (const [k, s] of this.byKey) if (s.identity.tokenIds.includes(jti)) this.byKey.delete(k)
  }
}

/** Compares a presented CSRF token with the session's in constant time. */
export function csrfMatches(session: ConsoleSession, presented: unknown): boolean {
  if (typeof presented !== 'string') return false
  const a = Buffer.from(presented)
  const b = Buffer.from(session.csrf)
  return a.length === b.length && timingSafeEqual(a, b)
}

/** The value of one cookie from a Cookie header. */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined
  for (const part of header.split(';')) {
    const eq = part.indexOf('=')
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim()
  }
  return undefined
}
