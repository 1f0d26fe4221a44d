// SCRAM-SHA-256 as a client (RFC 5802, RFC 7677), the way PostgreSQL speaks it: no channel
// binding ("n,,"), the user name left empty (the server uses the startup packet's). The server's
// signature is verified, so a server that does not know the password cannot pose as the target.

import { createHash, createHmac, pbkdf2, randomBytes, timingSafeEqual } from 'node:crypto'
import { promisify } from 'node:util'

const pbkdf2Async = promisify(pbkdf2)

/** A hostile or misconfigured server could ask for billions of iterations to stall the gateway. */
const MAX_ITERATIONS = 1_000_000

export class ScramError extends Error {}

export class ScramClient {
  readonly clientNonce = randomBytes(18).toString('base64')
  readonly clientFirstBare = `n=,r=${this.clientNonce}`
  private expectedServerSignature: Buffer | null = null

  clientFirstMessage(): string {
    return `n,,${this.clientFirstBare}`
  }

  async clientFinalMessage(password: string, serverFirst: string): Promise<string> {
    const proof = await scramProof(password, this.clientFirstBare, serverFirst)
    this.expectedServerSignature = proof.serverSignature
    return proof.clientFinal
  }

  /**
   * Takes a proof computed elsewhere (by the connector that holds the password) for this
   * exchange: its client-final-message must answer this very server-first-message, and its
   * server signature is what verifyServerFinal expects.
   */
  adoptProof(serverFirst: string, proof: { readonly clientFinal: string; readonly serverSignature: string }): string {
    const nonce = checkServerFirst(this.clientFirstBare, serverFirst).nonce
    if (!/^c=biws,r=[^,]+,p=[A-Za-z0-9+/]+={0,2}$/.test(proof.clientFinal) || !proof.clientFinal.startsWith(`c=biws,r=${nonce},p=`)) {
      throw new ScramError('the SCRAM proof does not answer this exchange')
    }
    const signature = Buffer.from(proof.serverSignature, 'base64')
    if (signature.length !== 32) throw new ScramError('malformed SCRAM server signature in the proof')
    this.expectedServerSignature = signature
    return proof.clientFinal
  }

  verifyServerFinal(serverFinal: string): void {
    const v = parseAttributes(serverFinal).get('v')
    if (!v || !this.expectedServerSignature) throw new ScramError('malformed SCRAM server-final-message')
    const got = Buffer.from(v, 'base64')
    if (got.length !== this.expectedServerSignature.length || !timingSafeEqual(got, this.expectedServerSignature)) {
      throw new ScramError('the server could not prove it knows the password (SCRAM server signature mismatch)')
    }
  }
}

/** The server-first-message's nonce, salt and iterations, checked against the client-first-message-bare. */
export function checkServerFirst(clientFirstBare: string, serverFirst: string): { nonce: string; salt: string; iterations: number } {
  const clientNonce = parseAttributes(clientFirstBare).get('r')
  const attrs = parseAttributes(serverFirst)
  const nonce = attrs.get('r')
  const salt = attrs.get('s')
  const iterText = attrs.get('i')
  if (!clientNonce) throw new ScramError('malformed SCRAM client-first-message')
  if (!nonce || !salt || !iterText) throw new ScramError('malformed SCRAM server-first-message')
  if (!nonce.startsWith(clientNonce) || nonce.length === clientNonce.length) {
    throw new ScramError('SCRAM server nonce does not extend the client nonce')
  }
  const iterations = Number(iterText)
  if (!Number.isInteger(iterations) || iterations < 1 || iterations > MAX_ITERATIONS) {
    throw new ScramError('SCRAM iteration count out of range')
  }
  return { nonce, salt, iterations }
}

/**
 * The client-final-message (with ClientProof) answering `serverFirst` for `clientFirstBare`, and
 * the ServerSignature the server-final-message must carry. What a holder of the password computes
 * for a party that must not hold it (the gateway, for a connector-held password).
 */
export async function scramProof(
  password: string,
  clientFirstBare: string,
  serverFirst: string,
): Promise<{ clientFinal: string; serverSignature: Buffer }> {
  const { salt, iterations } = checkServerFirst(clientFirstBare, serverFirst)
  const salted = await saltedPassword(password, salt, iterations)
  const proof = scramProofSalted(salted, clientFirstBare, serverFirst)
  salted.fill(0)
  return proof
}

/** SCRAM's SaltedPassword: PBKDF2-HMAC-SHA-256 on the thread pool (never the event loop). */
export function saltedPassword(password: string, salt: string, iterations: number): Promise<Buffer> {
  return pbkdf2Async(password.normalize('NFKC'), Buffer.from(salt, 'base64'), iterations, 32, 'sha256')
}

/** scramProof from the SaltedPassword (kept by a prover that pinned the salt and iteration count). */
export function scramProofSalted(
  salted: Buffer,
  clientFirstBare: string,
  serverFirst: string,
): { clientFinal: string; serverSignature: Buffer } {
  const { nonce } = checkServerFirst(clientFirstBare, serverFirst)
  const clientKey = hmac(salted, 'Client Key')
  const storedKey = createHash('sha256').update(clientKey).digest()
  const finalWithoutProof = `c=biws,r=${nonce}`
  const authMessage = `${clientFirstBare},${serverFirst},${finalWithoutProof}`
  const clientSignature = hmac(storedKey, authMessage)
  const proof = Buffer.alloc(clientKey.length)
  for (let i = 0; i < proof.length; i++) proof[i] = (clientKey[i] as number) ^ (clientSignature[i] as number)
  const serverSignature = hmac(hmac(salted, 'Server Key'), authMessage)
  return { clientFinal: `${finalWithoutProof},p=${proof.toString('base64')}`, serverSignature }
}

function hmac(key: Buffer, text: string): Buffer {
  return createHmac('sha256', key).update(text).digest()
}

function parseAttributes(text: string): Map<string, string> {
  const out = new Map<string, string>()
  for (const part of text.split(',')) {
    const eq = part.indexOf('=')
    if (eq === 1) out.set(part.slice(0, 1), part.slice(2))
  }
  return out
}

/** PostgreSQL's md5 password response: "md5" + md5(md5(password + user) + salt). */
export function md5Password(user: string, password: string, salt: Buffer): string {
  const inner = createHash('md5')
    .update(password + user)
    .digest('hex')
  return `md5${createHash('md5')
    .update(Buffer.concat([Buffer.from(inner), salt]))
    .digest('hex')}`
}
