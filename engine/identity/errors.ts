// Identity errors. Every one is a GatehouseError with code GH_ERR_AUTH (a proxy answers it as an
// authentication failure); `oauth` is the RFC 6749 §5.2 / RFC 8693 §2.2.2 error code that the
// token endpoint answers with. `message` is for the log, `publicMessage` for the caller: clear,
// without internals (no library names, no key material, no token contents beyond ids).

import { GatehouseError } from '../errors.js'

export type OAuthErrorCode =
  | 'invalid_request'
  | 'invalid_client'
  | 'invalid_grant'
  | 'invalid_scope'
  | 'invalid_target'
  | 'unauthorized_client'
  | 'unsupported_grant_type'
  | 'access_denied'
  | 'authorization_pending'
  | 'slow_down'
  | 'expired_token'
  | 'server_error'

export class IdentityError extends GatehouseError {
  readonly oauth: OAuthErrorCode

  constructor(oauth: OAuthErrorCode, message: string, options?: { cause?: unknown; publicMessage?: string }) {
    super('GH_ERR_AUTH', message, options)
    this.name = 'IdentityError'
    this.oauth = oauth
  }
}

export function isIdentityError(err: unknown): err is IdentityError {
  return err instanceof IdentityError
}

/** A request the caller can fix: the message is safe to show as it is. */
export function refused(oauth: OAuthErrorCode, message: string): IdentityError {
  return new IdentityError(oauth, message, { publicMessage: message })
}
