// The gateway's audit key: an Ed25519 key of its own, apart from the token signing key (a leaked
// token key must not let anyone re-sign the record, and the audit key can be pinned on another
// machine without trusting the token issuer). It signs segment headers and checkpoints; `gatehouse
// audit pubkey` prints its public half for `audit verify --pubkey`.
//
// By default it lives in <data_dir>/keys/audit.jwk (created on first use). `audit.signing_key`
// names a secret reference instead (`env:NAME`, `file:PATH` on another mount): then the key is
// never created, a missing or unreadable one stops the gateway, and whoever can write the data
// directory cannot re-sign a rewritten log with it (docs/audit.md).

import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject, sign, verify } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { GatehouseError } from '../errors.js'
import { describeSecretRef, parseSecretRef, resolveSecret } from '../secrets.js'
import { sha256Hex } from './format.js'

export interface AuditSigner {
  /** First 16 hex digits of SHA-256 over the raw 32-byte public key. */
  readonly kid: string
  readonly publicKey: KeyObject
  sign(message: Buffer): string
}

export function auditKeyPath(keysDir: string): string {
  return join(keysDir, 'audit.jwk')
}

export function keyId(publicKey: KeyObject): string {
  const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32)
  return sha256Hex(raw).slice(0, 16)
}

function signerFor(privateKey: KeyObject): AuditSigner {
  const publicKey = createPublicKey(privateKey)
  return {
    kid: keyId(publicKey),
    publicKey,
    sign: (message) => sign(null, message, privateKey).toString('base64url'),
  }
}

/** Loads the audit key, creating it (mode 0600) the first time. */
export function loadOrCreateAuditKey(keysDir: string): AuditSigner {
  const file = auditKeyPath(keysDir)
  mkdirSync(keysDir, { recursive: true, mode: 0o700 })
  if (!existsSync(file)) {
    const { privateKey } = generateKeyPairSync('ed25519')
    try {
      writeFileSync(file, `${JSON.stringify(privateKey.export({ format: 'jwk' }))}\n`, { mode: 0o600, flag: 'wx' })
    } catch (err) {
      // Another process created it first: use theirs.
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new GatehouseError('GH_ERR_STATE', `${file}: cannot write the audit key`, { cause: err })
      }
    }
  }
  return loadAuditKey(keysDir)
}

/**
 * The configured audit key: from the secret reference `signingKey` (the key as a JWK, or as a
 * PKCS#8 PEM), or `<dataDir>/keys/audit.jwk` when there is none (created if `create`). Errors name
 * the reference, never the key.
 */
export async function resolveAuditSigner(signingKey: string | null, dataDir: string, baseDir: string, create = true): Promise<AuditSigner> {
  if (signingKey === null) return create ? loadOrCreateAuditKey(join(dataDir, 'keys')) : loadAuditKey(join(dataDir, 'keys'))
  const ref = parseSecretRef(signingKey, baseDir)
  if (!ref) throw new GatehouseError('GH_ERR_CONFIG', 'audit.signing_key must be a secret reference (env:NAME or file:PATH)')
  const text = await resolveSecret(ref)
  try {
    return signerFor(parsePrivateKey(text))
  } catch (err) {
    throw new GatehouseError(
      'GH_ERR_CONFIG',
      `audit.signing_key ${describeSecretRef(ref)}: not an Ed25519 private key (a JWK, or PKCS#8 PEM) (${err instanceof Error ? err.message : 'unreadable'})`,
    )
  }
}

/** An Ed25519 private key given as a JWK (JSON) or PKCS#8 PEM. The message never quotes the text. */
function parsePrivateKey(text: string): KeyObject {
  const t = text.trim()
  let key: KeyObject
  try {
    key = t.startsWith('{')
      ? createPrivateKey({ key: JSON.parse(t) as import('node:crypto').JsonWebKey, format: 'jwk' })
      : createPrivateKey({ key: t, format: 'pem' })
  } catch {
    throw new Error('cannot be parsed')
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`a ${key.asymmetricKeyType ?? 'unknown'} key`)
  return key
}

export function loadAuditKey(keysDir: string): AuditSigner {
  const file = auditKeyPath(keysDir)
  try {
    const jwk = JSON.parse(readFileSync(file, 'utf8')) as import('node:crypto').JsonWebKey
    return signerFor(createPrivateKey({ key: jwk, format: 'jwk' }))
  } catch (err) {
    throw new GatehouseError('GH_ERR_STATE', `${file}: cannot read the audit key`, { cause: err })
  }
}

/** The public key as SPKI PEM, the form `audit pubkey` prints and `--pubkey` reads. */
export function publicKeyPem(key: KeyObject): string {
  return key.export({ format: 'pem', type: 'spki' }).toString()
}

/**
 * Reads a public key given as SPKI PEM, as a JWK (JSON), or as the bare base64/base64url 32-byte
 * Ed25519 key. Throws GH_ERR_CONFIG with a readable message otherwise.
 */
export function parsePublicKey(text: string): KeyObject {
  const t = text.trim()
  try {
    let key: KeyObject
    if (t.startsWith('-----BEGIN')) key = createPublicKey(t)
    else if (t.startsWith('{')) key = createPublicKey({ key: JSON.parse(t) as import('node:crypto').JsonWebKey, format: 'jwk' })
    else {
      const raw = Buffer.from(t.replace(/-/g, '+').replace(/_/g, '/'), 'base64')
      if (raw.length !== 32) throw new Error('not 32 bytes')
      key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: raw.toString('base64url') }, format: 'jwk' })
    }
    if (key.asymmetricKeyType !== 'ed25519') throw new Error(`a ${key.asymmetricKeyType ?? 'unknown'} key`)
    return key
  } catch (err) {
    throw new GatehouseError('GH_ERR_CONFIG', `the audit public key is not an Ed25519 key in PEM, JWK or base64 form (${String(err)})`, {
      cause: err,
    })
  }
}

export function verifySignature(key: KeyObject, message: Buffer, sig: unknown): boolean {
  if (typeof sig !== 'string' || !/^[A-Za-z0-9_-]{86}$/.test(sig)) return false
  try {
    return verify(null, message, key, Buffer.from(sig, 'base64url'))
  } catch {
    return false
  }
}
