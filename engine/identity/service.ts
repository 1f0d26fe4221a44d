// The identity side of the gateway in one place: Gatehouse tokens (and their delegation), service-
// account keys, workload federation and OIDC login, plus the one entry point a proxy's credential
// goes through (`identify`). The gateway builds one at start; the API's identity routes use it.

import type { Logger } from 'pino'
import type { Store } from '../store.js'
import type { TokenIssuer } from './tokens.js'
import type { AuditEvent, Identity } from '../types.js'
import type { IdentityConfig } from './config.js'
import { WorkloadFederation } from './federation.js'
import { OidcLogin, type ResolveSecret } from './oidc.js'
import { isServiceKey, ServiceKeys } from './service-keys.js'

export interface IdentityServiceDeps {
  readonly config: IdentityConfig
  readonly issuer: TokenIssuer
  readonly store: Store
  readonly audit: { append(event: AuditEvent): Promise<void> }
  readonly log: Logger
  readonly resolveSecret: ResolveSecret
  /** tokens.default_ttl and tokens.max_ttl. */
  readonly defaultTtlSeconds: number
  readonly maxTtlSeconds: number
}

export class IdentityService {
  readonly keys: ServiceKeys
  readonly federation: WorkloadFederation
  readonly oidc: OidcLogin
  readonly config: IdentityConfig
  readonly issuer: TokenIssuer
  readonly store: Store
  readonly audit: { append(event: AuditEvent): Promise<void> }
  readonly log: Logger
  readonly defaultTtlSeconds: number
  readonly maxTtlSeconds: number

  constructor(deps: IdentityServiceDeps) {
    this.config = deps.config
    this.issuer = deps.issuer
    this.store = deps.store
    this.audit = deps.audit
    this.log = deps.log
    this.defaultTtlSeconds = deps.defaultTtlSeconds
    this.maxTtlSeconds = deps.maxTtlSeconds
    this.keys = new ServiceKeys(deps.store)
    this.federation = new WorkloadFederation(deps.config.workloadIssuers)
    this.oidc = new OidcLogin(deps.config.oidc, deps.resolveSecret, deps.log.child({ component: 'oidc' }))
  }

  readonly isRevoked = (jti: string): boolean => this.store.isRevoked(jti)

  /**
   * Who presents `credential`: a Gatehouse token (root or delegated, every rule rechecked) or a
   * service-account key. Throws GH_ERR_AUTH (an IdentityError) with a public message.
   */
  identify(credential: string): Promise<Identity> {
    if (isServiceKey(credential)) {
      try {
        return Promise.resolve(this.keys.verify(credential))
      } catch (err) {
        return Promise.reject(err)
      }
    }
    return this.issuer.verify(credential, this.isRevoked)
  }

  close(): void {
    this.oidc.close()
  }
}
