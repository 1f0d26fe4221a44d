// Client-facing TLS material. With `tls.cert`/`tls.key` in the config those files are used;
// otherwise a self-signed certificate for localhost is made once in <data_dir>/tls/ (with the
// `openssl` command the setup installs), so `sslmode=require` works out of the box.

import { execFileSync } from 'node:child_process'
import { chmodSync, existsSync, mkdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { createSecureContext, type SecureContext } from 'node:tls'
import { GatehouseError } from './errors.js'

export interface TlsFiles {
  readonly cert: string
  readonly key: string
}

export function ensureSelfSigned(dataDir: string): TlsFiles {
  const dir = join(dataDir, 'tls')
  const cert = join(dir, 'cert.pem')
  const key = join(dir, 'key.pem')
  if (existsSync(cert) && existsSync(key)) return { cert, key }
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  try {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-days',
        '825',
        '-subj',
        '/CN=gatehouse',
        '-addext',
        'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1',
        '-keyout',
        key,
        '-out',
        cert,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    )
    chmodSync(key, 0o600)
  } catch (err) {
    throw new GatehouseError('GH_ERR_STATE', `cannot create a self-signed certificate in ${dir} (is openssl installed?)`, { cause: err })
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
