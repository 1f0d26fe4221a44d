// Client-facing TLS material. With `tls.cert`/`tls.key` in the config those files are used;
// otherwise a self-signed certificate for localhost is made once in <data_dir>/tls/ (in process,
// with the `selfsigned` library: no openssl command needed at run time), so `sslmode=require`
// works out of the box.

import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createSecureContext, type SecureContext } from 'node:tls'
import { GatehouseError } from '../errors.js'

export interface TlsFiles {
  readonly cert: string
  readonly key: string
}

/** About 27 months, the longest lifetime clients accept for a server certificate. */
const SELF_SIGNED_DAYS = 825

export async function ensureSelfSigned(dataDir: string): Promise<TlsFiles> {
  const dir = join(dataDir, 'tls')
  const cert = join(dir, 'cert.pem')
  const key = join(dir, 'key.pem')
  if (existsSync(cert) && existsSync(key)) return { cert, key }
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  try {
    // Loaded only when a certificate is made: it costs most of a second of start-up.
    const { generate } = await import('selfsigned')
    const now = new Date()
    const pems = await generate([{ name: 'commonName', value: 'gatehouse' }], {
      keyType: 'ec',
      curve: 'P-256',
      algorithm: 'sha256',
      notBeforeDate: new Date(now.getTime() - 60_000),
      notAfterDate: new Date(now.getTime() + SELF_SIGNED_DAYS * 86400_000),
      extensions: [
        { name: 'basicConstraints', cA: false },
        { name: 'keyUsage', digitalSignature: true, critical: true },
        { name: 'extKeyUsage', serverAuth: true },
        {
          name: 'subjectAltName',
          altNames: [
            { type: 2, value: 'localhost' },
            { type: 7, ip: '127.0.0.1' },
            { type: 7, ip: '::1' },
          ],
        },
      ],
    })
    // The key first and private from its first byte; each file appears whole (renamed into place).
    writeFileSync(`${key}.tmp`, pems.private, { mode: 0o600 })
    chmodSync(`${key}.tmp`, 0o600)
    renameSync(`${key}.tmp`, key)
    writeFileSync(`${cert}.tmp`, pems.cert, { mode: 0o644 })
    renameSync(`${cert}.tmp`, cert)
  } catch (err) {
    throw new GatehouseError('GH_ERR_STATE', `cannot create a self-signed certificate in ${dir}: ${(err as Error).message}`, { cause: err })
  }
  return { cert, key }
}

export function loadSecureContext(files: TlsFiles): SecureContext {
  try {
    return createSecureContext({ cert: readFileSync(files.cert), key: readFileSync(files.key), minVersion: 'TLSv1.2' })
  } catch (err) {
    throw new GatehouseError('GH_ERR_CONFIG', `cannot load TLS certificate ${files.cert} / key ${files.key}`, { cause: err })
  }
}
