// Public keys registered to principals: a caller who proves possession of a registered key (the
// proxy checks the signature in its own protocol) is that principal, with the groups and scope
// given when the key was registered — like a service-account key, a root credential, one hop.
// The engine only stores keys and finds them by fingerprint; it knows no wire protocol.
//
// A key's id is revocable like a token id (`token revoke <key id>`), and removing a key ends the
// sessions it opened. Keys are OpenSSH public key lines (`ssh-ed25519 AAAA… comment`), the format
// every SSH tool prints; the fingerprint is `SHA256:…` as `ssh-keygen -l` shows it.
// Their API routes are in public-key-routes.ts.

import { createHash, randomBytes } from 'node:crypto'
import { GatehouseError } from '../errors.js'
import { scopeSyntaxProblem } from './scope.js'
import type { PublicKeyRecord, Store } from '../store.js'
import { validateGroup, validateSubject } from './tokens.js'
import type { Identity, PrincipalKind } from '../types.js'

/** Key types callers may register: those the SSH proxy's library verifies. */
export const PUBLIC_KEY_TYPES = ['ssh-ed25519', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521', 'ssh-rsa'] as const
/** Longest key line accepted (an RSA-16384 key is about 2.8 KB of base64). */
export const MAX_KEY_CHARS = 8192

export interface ParsedPublicKey {
  readonly type: string
  readonly blob: Buffer
  readonly fingerprint: string
  readonly comment: string | null
}

/** `SHA256:<unpadded base64>` of a key blob. */
export function fingerprintOf(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`
}

/** Parses an OpenSSH public key line; the problem as a sentence when it is not one. */
export function parsePublicKeyLine(text: string): ParsedPublicKey | string {
  const line = text.trim()
  if (line.length === 0) return 'the key is empty'
  if (line.length > MAX_KEY_CHARS) return `the key is longer than ${MAX_KEY_CHARS} characters`
  if (line.includes('PRIVATE KEY')) return 'this is a private key: give the public key (the .pub file), never the private one'
  if (line.includes('\n')) return 'give one key (one line)'
  const m = /^(\S+)\s+([A-Za-z0-9+/]+={0,2})(?:\s+(.*))?$/.exec(line)
  if (!m) return 'not an OpenSSH public key line ("ssh-ed25519 AAAA… comment")'
  const type = m[1] as string
  if (!(PUBLIC_KEY_TYPES as readonly string[]).includes(type))
    return `key type ${type} is not supported (use one of ${PUBLIC_KEY_TYPES.join(', ')})`
  const blob = Buffer.from(m[2] as string, 'base64')
  const n = blob.length >= 4 ? blob.readUInt32BE(0) : -1
  if (n <= 0 || 4 + n > blob.length || blob.toString('latin1', 4, 4 + n) !== type || blob.length < 4 + n + 16) {
    return 'the key body does not match its type (a damaged or truncated key)'
  }
  return { type, blob, fingerprint: fingerprintOf(blob), comment: m[3]?.trim().slice(0, 200) || null }
}

export interface RegisterKeyRequest {
  readonly principal: string
  readonly key: string
  readonly groups?: readonly string[]
  readonly scope?: readonly string[]
  /** Lifetime in seconds; none: until removed. */
  readonly ttlSeconds?: number
}

function problem(message: string): GatehouseError {
  return new GatehouseError('GH_ERR_AUTH', message)
}

export class PublicKeys {
  constructor(
    private readonly store: Store,
    /** A session opened with a key lasts at most this long (tokens.max_ttl), like one opened with a token. */
    private readonly maxSessionSeconds: number,
  ) {}

  register(req: RegisterKeyRequest): PublicKeyRecord {
    const bad =
      validateSubject(req.principal) ?? (req.groups ?? []).map(validateGroup).find((x) => x !== null) ?? scopeSyntaxProblem(req.scope ?? [])
    if (bad) throw problem(bad)
    // Agents act for someone: they get delegated tokens, never a root credential of their own.
    if (req.principal.startsWith('agent:')) throw problem('keys are for users, workloads and services; agents act through delegated tokens')
    if (req.ttlSeconds !== undefined && (!Number.isInteger(req.ttlSeconds) || req.ttlSeconds <= 0))
      throw problem('the key lifetime must be positive')
    const k = parsePublicKeyLine(req.key)
    if (typeof k === 'string') throw problem(k)
    const existing = this.store.findPublicKey(k.fingerprint)
    if (existing)
      throw problem(`the key ${k.fingerprint} is already registered (to ${existing.principal}, id ${existing.id}); remove it first`)
    const now = Math.floor(Date.now() / 1000)
    const record: PublicKeyRecord = {
      id: `pk_${randomBytes(8).toString('hex')}`,
      principal: req.principal,
      fingerprint: k.fingerprint,
      key: `${k.type} ${k.blob.toString('base64')}`,
      comment: k.comment,
      groups: [...(req.groups ?? [])],
      scope: [...(req.scope ?? [])],
      createdAt: now,
      expiresAt: req.ttlSeconds === undefined ? null : now + req.ttlSeconds,
    }
    this.store.addPublicKey(record)
    return record
  }

  /**
   * The identity of a caller who proved possession of the key with this fingerprint (the proxy
   * verified the signature). Throws GH_ERR_AUTH when the key is unknown, expired or revoked.
   */
  identify(fingerprint: string): Identity {
    const fail = (why: string): GatehouseError =>
      new GatehouseError('GH_ERR_AUTH', `public key rejected: ${why}`, {
        publicMessage: 'authentication failed: the key is not registered',
      })
    const rec = this.store.findPublicKey(fingerprint)
    if (!rec) throw fail(`${fingerprint} is not registered`)
    const now = Math.floor(Date.now() / 1000)
    if (rec.expiresAt !== null && rec.expiresAt <= now) throw fail(`key ${rec.id} expired`)
    if (this.store.isRevoked(rec.id)) throw fail(`key ${rec.id} is revoked`)
    const kind = rec.principal.slice(0, rec.principal.indexOf(':')) as PrincipalKind
    return {
      chain: [{ id: rec.principal, kind, groups: rec.groups, scope: rec.scope }],
      tokenIds: [rec.id],
      expiresAt: Math.min(rec.expiresAt ?? Number.POSITIVE_INFINITY, now + this.maxSessionSeconds),
    }
  }
}

/** The JSON form of a key in the API and `gatehouse ssh list-keys --json`. */
export function publicKeyJson(k: PublicKeyRecord, revoked: boolean): Record<string, unknown> {
  return {
    id: k.id,
    principal: k.principal,
    fingerprint: k.fingerprint,
    key: k.key,
    comment: k.comment,
    groups: k.groups,
    scope: k.scope,
    created_at: new Date(k.createdAt * 1000).toISOString(),
    expires_at: k.expiresAt === null ? null : new Date(k.expiresAt * 1000).toISOString(),
    revoked,
  }
}
