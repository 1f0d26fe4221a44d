// Service-account API keys: long-lived credentials for machines that
// have no OIDC token of their own. A key is `ghk_<id>_<secret>`; only the SHA-256 of the secret is
// stored (the secret is 256 random bits, so a slow password hash buys nothing), compared in constant
// time. Every key has a principal `service:<name>`, groups, a scope and an expiry; rotation issues a
// successor with the same rights and ends the old key after a grace period.
//
// The key id is revocable like a token id: revoking it (`token revoke <key id>`) refuses the key,
// every Gatehouse token exchanged for it (they carry it as `src`) and their delegated descendants,
// and ends their open sessions.

import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import type { ServiceKeyRecord, Store } from '../store.js'
import { validateGroup } from './tokens.js'
import type { Identity } from '../types.js'
import { IdentityError, refused } from './errors.js'
import { scopeSyntaxProblem } from './scope.js'

export const SERVICE_KEY_PREFIX = 'ghk_'
const KEY_RE = /^ghk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}$/
const GENERIC = 'authentication failed: the API key is invalid, expired or revoked'

export function isServiceKey(credential: string): boolean {
  return credential.startsWith(SERVICE_KEY_PREFIX)
}

function sha256hex(text: string): string {
  return createHash('sha256').update(text).digest('hex')
}

export interface CreateKeyRequest {
  /** The service's name (`etl`) or principal id (`service:etl`). */
  readonly name: string
  readonly groups?: readonly string[]
  readonly scope?: readonly string[]
  readonly ttlSeconds: number
  readonly description?: string
}

export interface CreatedKey {
  /** The full key: shown once, never stored. */
  readonly key: string
  readonly record: ServiceKeyRecord
}

export class ServiceKeys {
  constructor(private readonly store: Store) {}

  create(req: CreateKeyRequest): CreatedKey {
    const name = req.name.startsWith('service:') ? req.name.slice('service:'.length) : req.name
    if (!NAME_RE.test(name))
      throw refused('invalid_request', `the service name must be letters, digits, _ . @ + - (got ${JSON.stringify(req.name)})`)
    const groups = req.groups ?? []
    const bad = groups.map(validateGroup).find((x) => x !== null) ?? scopeSyntaxProblem(req.scope ?? [])
    if (bad) throw refused('invalid_request', bad)
    if (!Number.isInteger(req.ttlSeconds) || req.ttlSeconds <= 0) throw refused('invalid_request', 'the key lifetime must be positive')
    const id = randomBytes(8).toString('hex')
    const secret = randomBytes(32).toString('base64url')
    const now = Math.floor(Date.now() / 1000)
    const record: ServiceKeyRecord = {
      id,
      principal: `service:${name}`,
      groups: [...groups],
      scope: [...(req.scope ?? [])],
      description: req.description ?? null,
      hash: sha256hex(secret),
      createdAt: now,
      expiresAt: now + req.ttlSeconds,
      rotatedTo: null,
    }
    this.store.addServiceKey(record)
    return { key: `${SERVICE_KEY_PREFIX}${id}_${secret}`, record }
  }

  /**
   * A successor with the same principal, groups and scope, living `ttlSeconds` (default: as long as
   * the old key was issued for); the old key stays valid for `graceSeconds` more (0: ends now).
   */
  rotate(id: string, opts: { graceSeconds: number; ttlSeconds?: number }): CreatedKey {
    const old = this.store.getServiceKey(id)
    if (!old) throw refused('invalid_request', `no service-account key ${id}`)
    if (this.store.isRevoked(id)) throw refused('invalid_request', `key ${id} is revoked; create a new one instead`)
    if (old.rotatedTo) throw refused('invalid_request', `key ${id} was already rotated to ${old.rotatedTo}`)
    const created = this.create({
      name: old.principal,
      groups: old.groups,
      scope: old.scope,
      ttlSeconds: opts.ttlSeconds ?? old.expiresAt - old.createdAt,
      ...(old.description !== null ? { description: old.description } : {}),
    })
    const now = Math.floor(Date.now() / 1000)
    this.store.markServiceKeyRotated(id, created.record.id, now + Math.max(0, opts.graceSeconds))
    return created
  }

  list(): (ServiceKeyRecord & { readonly revoked: boolean })[] {
    const keys = this.store.listServiceKeys()
    const revoked = this.store.revokedAmong(keys.map((k) => k.id))
    return keys.map((k) => ({ ...k, revoked: revoked.has(k.id) }))
  }

  /** The identity a key stands for; its id is the chain's only token id, so revocation reaches it. */
  verify(key: string): Identity {
    const fail = (why: string): IdentityError => new IdentityError('invalid_client', `API key rejected: ${why}`, { publicMessage: GENERIC })
    const m = KEY_RE.exec(key)
    if (!m) throw fail('malformed')
    const [, id = '', secret = ''] = m
    const rec = this.store.getServiceKey(id)
    // Compare even when the id is unknown, so timing does not tell which ids exist.
    const want = Buffer.from(rec?.hash ?? '0'.repeat(64), 'hex')
    const ok = timingSafeEqual(want, Buffer.from(sha256hex(secret), 'hex'))
    if (!rec || !ok) throw fail(`unknown id or wrong secret for ${id}`)
    if (rec.expiresAt <= Math.floor(Date.now() / 1000)) throw fail(`key ${id} expired`)
    if (this.store.isRevoked(id)) throw fail(`key ${id} is revoked`)
    return {
      chain: [{ id: rec.principal, kind: 'service', groups: rec.groups, scope: rec.scope }],
      tokenIds: [id],
      expiresAt: rec.expiresAt,
    }
  }
}
