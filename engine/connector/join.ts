// Connector join tokens: a one-time, short-lived secret an operator hands to a new connector
// (`gatehouse connectors token --name edge-1`). At attach the connector presents it once; the
// gateway marks it used and gives the link a short-lived Gatehouse token for the connector's
// principal instead, which it replaces before it expires (hub.ts). A join token is
// `ghj_<id>_<secret>`; only the SHA-256 of the secret is stored (256 random bits: a slow hash buys
// nothing), compared in constant time. Every credential minted from it carries its id as `src`, so
// revoking the join token's id (`gatehouse token revoke <id>`) ends them and the link.

import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import type { JoinTokenRecord, Store } from '../store.js'

export const JOIN_TOKEN_PREFIX = 'ghj_'
const JOIN_RE = /^ghj_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/
/** What a refused join token is told: never which check failed. */
export const JOIN_REFUSED = 'the join token is invalid, expired, already used or revoked'
/** A join token lives this long unless asked otherwise, and at most JOIN_MAX_TTL_S. */
export const JOIN_DEFAULT_TTL_S = 3600
export const JOIN_MAX_TTL_S = 7 * 86400

export function isJoinToken(credential: string): boolean {
  return credential.startsWith(JOIN_TOKEN_PREFIX)
}

function sha256hex(text: string): string {
  return createHash('sha256').update(text).digest('hex')
}

export class JoinRefused extends Error {
  constructor(
    /** Why, for the gateway's log (the connector is told JOIN_REFUSED). */
    readonly detail: string,
  ) {
    super(JOIN_REFUSED)
  }
}

export class JoinTokens {
  constructor(private readonly store: Store) {}

  create(connector: string, ttlSeconds: number): { token: string; record: JoinTokenRecord } {
    const id = randomBytes(8).toString('hex')
    const secret = randomBytes(32).toString('base64url')
    const now = Math.floor(Date.now() / 1000)
    const record: JoinTokenRecord = {
      id,
      connector,
      hash: sha256hex(secret),
      createdAt: now,
      expiresAt: now + ttlSeconds,
      usedAt: null,
      usedBy: null,
    }
    this.store.addJoinToken(record)
    return { token: `${JOIN_TOKEN_PREFIX}${id}_${secret}`, record }
  }

  /** Checks and uses up a join token; the connector it joins as. Throws JoinRefused. */
  redeem(token: string, by: string): JoinTokenRecord {
    const m = JOIN_RE.exec(token)
    if (!m) throw new JoinRefused('malformed join token')
    const [, id = '', secret = ''] = m
    const rec = this.store.getJoinToken(id)
    // Compare even when the id is unknown, so timing does not tell which ids exist.
    const want = Buffer.from(rec?.hash ?? '0'.repeat(64), 'hex')
    const ok = timingSafeEqual(want, Buffer.from(sha256hex(secret), 'hex'))
    if (!rec || !ok) throw new JoinRefused(`unknown id or wrong secret for join token ${id}`)
    const now = Math.floor(Date.now() / 1000)
    if (rec.expiresAt <= now) throw new JoinRefused(`join token ${id} expired`)
    if (this.store.isRevoked(id)) throw new JoinRefused(`join token ${id} is revoked`)
    if (!this.store.consumeJoinToken(id, now, by)) throw new JoinRefused(`join token ${id} was already used`)
    return rec
  }
}
