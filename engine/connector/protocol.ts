// The wire contract between the gateway and a connector, shared by both ends.
//
// The connector dials out over TLS (ALPN `h2`) and then serves HTTP/2 on the socket it dialled:
// the gateway is the HTTP/2 client. So only the gateway can open streams (server push is off), and
// a connector can never open a stream into the gateway. The gateway's requests:
//
//   GET  /attach       the connector answers with its credential, version and host name (JSON)
//   POST /targets      the gateway tells an authenticated connector which addresses it may dial
//   POST /refused      the gateway tells a refused connector why, then closes the link
//   POST /credential   the gateway replaces a joined connector's short-lived credential before it
//                      expires; the connector uses the new one from its next attach on
//   POST /prove        proofs of a secret the connector holds for a connection (`connector:env:…`):
//                      a SCRAM-SHA-256 client-final-message or an md5 answer, never the secret
//   CONNECT host:port  one stream per dial; 200 and then the target's bytes both ways, or an error
//                      status with the reason in the `gatehouse-error` header
//
// HTTP/2 gives each stream its own flow-control window, so a stream whose reader stalls (a large
// COPY to a slow client) stops only itself; the other sessions on the link keep flowing.

/**
 * The audience of the credentials a joined connector is given: only the connector listener
 * accepts them (no other listener or API route takes a token for another audience).
 */
export const CONNECTOR_AUDIENCE = 'urn:gatehouse:connector'

/** The only ALPN protocol either side offers. */
export const ALPN = 'h2'
export const ATTACH_PATH = '/attach'
export const TARGETS_PATH = '/targets'
export const REFUSED_PATH = '/refused'
export const CREDENTIAL_PATH = '/credential'
export const PROVE_PATH = '/prove'
/** The reason a dial failed, in CONNECT's error response. */
export const ERROR_HEADER = 'gatehouse-error'
/** The session a stream belongs to (for the connector's log). */
export const SESSION_HEADER = 'gatehouse-session'

/** Per-stream receive window: enough for a fast stream over a long link, small enough to bound memory. */
export const STREAM_WINDOW_BYTES = 1024 * 1024
/** The link's total receive window across streams. */
export const LINK_WINDOW_BYTES = 32 * 1024 * 1024
/** Both ends ping this often and drop a link whose ping is not answered within PING_TIMEOUT_MS. */
export const PING_INTERVAL_MS = 5_000
export const PING_TIMEOUT_MS = 10_000
/** A connector must answer /attach this fast, or the gateway drops it. */
export const ATTACH_TIMEOUT_MS = 5_000
/** Bodies of /attach, /targets and /refused are small JSON documents. */
export const MAX_CONTROL_BODY_BYTES = 64 * 1024

/** What the connector answers to GET /attach. */
export interface AttachHello {
  /**
   * A service-account key (`ghk_…`) or a Gatehouse token whose principal is a configured connector,
   * a one-time join token (`ghj_…`), or the credential the gateway gave in exchange for one.
   */
  readonly credential: string
  readonly version: string
  readonly hostname: string
}

/** What the gateway sends to POST /targets after the connector is authenticated. */
export interface AttachTargets {
  readonly name: string
  /** `host:port` (IPv6 in brackets) of every connection configured `via` this connector. */
  readonly targets: readonly string[]
  /** After a join token was redeemed: the short-lived credential the connector attaches with from now on. */
  readonly credential?: string
}

/** What the gateway sends to POST /credential: the successor of the connector's credential. */
export interface CredentialUpdate {
  readonly credential: string
}

/**
 * What the gateway sends to POST /prove: a proof of the secret `ref` for `connection`, in a
 * session that has a stream open through this connector to `target` now. The connector answers
 * only for a connection its operator gave it that very secret for (`--secret connection=ref`).
 */
export type ProofRequest = {
  readonly session: string
  readonly connection: string
  /** `host:port` as CONNECT spells it. */
  readonly target: string
  /** The reference inside `connector:…` in the gateway's configuration (`env:NAME`). */
  readonly ref: string
} & (
  | { readonly mechanism: 'scram-sha-256'; readonly client_first_bare: string; readonly server_first: string }
  | {
      readonly mechanism: 'md5'
      readonly user: string
      /** base64 of the server's 4-byte salt */
      readonly salt: string
    }
  | { readonly mechanism: 'ssh-public-key' }
  | {
      readonly mechanism: 'ssh-sign'
      /** base64 of the SSH user-authentication request to sign */
      readonly data: string
      readonly hash?: string
    }
)

/** The connector's answer to POST /prove (200); a refusal is an error status with ERROR_HEADER. */
export type ProofAnswer =
  | { readonly client_final: string; readonly server_signature: string }
  | { readonly md5: string }
  | { readonly public_key: string }
  | { /** base64 */ readonly signature: string }

export interface AttachRefused {
  readonly reason: string
}

/** `host:port` as CONNECT's :authority spells it (IPv6 in brackets). */
export function authorityOf(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
}

/** Splits a CONNECT :authority; null when it is not host:port. */
export function parseAuthority(text: string): { host: string; port: number } | null {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(text)
  if (!m || m[1] === undefined) return null
  const port = Number(m[2])
  if (port < 1 || port > 65535) return null
  return { host: m[1].startsWith('[') ? m[1].slice(1, -1) : m[1], port }
}

/** Reads a small JSON body from a stream, refusing more than MAX_CONTROL_BODY_BYTES. */
export function readJsonBody(stream: NodeJS.ReadableStream): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    stream.on('data', (d: Buffer) => {
      size += d.length
      if (size > MAX_CONTROL_BODY_BYTES) {
        reject(new Error('control message too large'))
        return
      }
      chunks.push(d)
    })
    stream.on('error', reject)
    stream.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown)
      } catch {
        reject(new Error('control message is not JSON'))
      }
    })
  })
}
