// Secret references. A config never holds a credential, only where to find it: `env:NAME` or
// `file:PATH`. References are resolved when a session starts, held by that session only, and the
// value never goes to a log, an audit event, an error message, a client or the disk.

import { readFile } from 'node:fs/promises'
import { isAbsolute, resolve } from 'node:path'
import { GatehouseError } from './errors.js'

export type SecretRef = { readonly kind: 'env'; readonly name: string } | { readonly kind: 'file'; readonly path: string }

/** Secrets larger than this are certainly a misconfigured path (a binary, a log), not a password. */
const MAX_SECRET_FILE_BYTES = 64 * 1024

export function parseSecretRef(value: unknown, baseDir: string): SecretRef | null {
  if (typeof value !== 'string') return null
  if (value.startsWith('env:') && /^env:[A-Za-z_][A-Za-z0-9_]*$/.test(value)) return { kind: 'env', name: value.slice(4) }
  if (value.startsWith('file:') && value.length > 5) {
    const p = value.slice(5)
    return { kind: 'file', path: isAbsolute(p) ? p : resolve(baseDir, p) }
  }
  return null
}

export function describeSecretRef(ref: SecretRef): string {
  return ref.kind === 'env' ? `env:${ref.name}` : `file:${ref.path}`
}

/** Resolves a reference. Errors name the reference, never a value. */
export async function resolveSecret(ref: SecretRef): Promise<string> {
  if (ref.kind === 'env') {
    const v = process.env[ref.name]
    if (v === undefined || v === '') {
      throw new GatehouseError('GH_ERR_SECRET', `secret ${describeSecretRef(ref)} is not set`, {
        publicMessage: 'the target credential is unavailable',
      })
    }
    return v
  }
  let buf: Buffer
  try {
    buf = await readFile(ref.path)
  } catch (err) {
    throw new GatehouseError(
      'GH_ERR_SECRET',
      `secret ${describeSecretRef(ref)} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`,
      {
        publicMessage: 'the target credential is unavailable',
      },
    )
  }
  if (buf.length > MAX_SECRET_FILE_BYTES) {
    throw new GatehouseError('GH_ERR_SECRET', `secret ${describeSecretRef(ref)} is larger than ${MAX_SECRET_FILE_BYTES} bytes`, {
      publicMessage: 'the target credential is unavailable',
    })
  }
  // A trailing newline is an artefact of `echo pw > file`, never part of a password.
  const v = buf.toString('utf8').replace(/\r?\n$/, '')
  buf.fill(0)
  if (v === '') {
    throw new GatehouseError('GH_ERR_SECRET', `secret ${describeSecretRef(ref)} is empty`, {
      publicMessage: 'the target credential is unavailable',
    })
  }
  return v
}

/** A reference the connector resolves, not the gateway: `connector:env:NAME`, `connector:file:/abs/path`. */
export const CONNECTOR_SECRET_PREFIX = 'connector:'

/**
 * The reference inside `connector:…` (`env:NAME`, `file:/abs/path`, as the connector resolves it
 * in its own environment); null when `value` is not such a reference. A file must be absolute:
 * no directory of the gateway's means anything on the connector's host.
 */
export function parseConnectorSecretRef(value: unknown): string | null {
  if (typeof value !== 'string' || !value.startsWith(CONNECTOR_SECRET_PREFIX)) return null
  const inner = value.slice(CONNECTOR_SECRET_PREFIX.length)
  const ref = parseSecretRef(inner, '/')
  if (!ref || (ref.kind === 'file' && !isAbsolute(inner.slice(5)))) return null
  return inner
}
