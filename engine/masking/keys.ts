// The keyed-hash key of the `hash` strategy: 32 random bytes in <data_dir>/keys/masking.key, created
// mode 0600 on first use. It is what makes hashed values unguessable: without it anyone could hash
// a dictionary of e-mail addresses and reverse the masked output. Replicas sharing a data
// directory (or a copied key file) produce the same hashes, so joins match across them; replacing
// the key changes every hashed value.

import { randomBytes } from 'node:crypto'
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { GatehouseError } from '../errors.js'

export const MASKING_KEY_BYTES = 32

export function maskingKeyPath(dataDir: string): string {
  return join(dataDir, 'keys', 'masking.key')
}

/** Loads the masking key, creating it the first time. A key file of the wrong size is refused. */
export function loadMaskingKey(dataDir: string): Buffer {
  const file = maskingKeyPath(dataDir)
  mkdirSync(join(dataDir, 'keys'), { recursive: true, mode: 0o700 })
  try {
    writeFileSync(file, randomBytes(MASKING_KEY_BYTES), { mode: 0o600, flag: 'wx' })
  } catch (err) {
    // EEXIST: it is there already (or another process created it first); use it.
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw new GatehouseError('GH_ERR_STATE', `${file}: cannot create the masking key`, { cause: err })
    }
  }
  let key: Buffer
  try {
    if ((statSync(file).mode & 0o077) !== 0) {
      throw new GatehouseError('GH_ERR_STATE', `${file}: the masking key is readable by other users; chmod 600 it`)
    }
    key = readFileSync(file)
  } catch (err) {
    if (err instanceof GatehouseError) throw err
    throw new GatehouseError('GH_ERR_STATE', `${file}: cannot read the masking key`, { cause: err })
  }
  if (key.length !== MASKING_KEY_BYTES) {
    throw new GatehouseError('GH_ERR_STATE', `${file}: the masking key must be ${MASKING_KEY_BYTES} bytes (got ${key.length})`)
  }
  return key
}
