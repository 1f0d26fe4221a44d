// People log in through OIDC, with the gateway as the relying party (`openid-client`):
//
//   browser  `gatehouse login` opens a loopback callback (RFC 8252), asks the gateway to start a
//            login for it, opens the authorization URL; the provider redirects to the callback with
//            a code; the CLI hands the callback URL to the gateway, which redeems the code with the
//            PKCE verifier it kept, and verifies the ID token: issuer, audience, signature through
//            discovery + JWKS, expiry, nonce, state.
//   device   `gatehouse login --device`: the gateway starts a device authorization grant and polls
//            the provider; the CLI shows the code and polls the gateway until the person confirms.
//
// The CLI never sees a provider token, only the Gatehouse token the gateway issues for the ID
// token's user (`username_claim`, default `sub`) and groups (`groups_claim`). Pending logins are
// kept in memory, bounded in number and time, and single-use.

import { randomBytes } from 'node:crypto'
import * as oidc from 'openid-client'
import type { Logger } from 'pino'
import { validateGroup, validateSubject } from './tokens.js'
import type { OidcProviderConfig } from './config.js'
import { IdentityError, refused } from './errors.js'

/** How many logins may wait at once, and for how long: enough for people, not for a flood. */
const MAX_PENDING = 1000
const PENDING_TTL_MS = 10 * 60 * 1000

export interface LoggedIn {
  readonly principal: string
  readonly groups: readonly string[]
  readonly provider: string
  /** The provider's `sub` for the person, for the audit record. */
  readonly subject: string
  readonly ttlSeconds: number | null
}

type DeviceState =
  | { readonly status: 'pending' }
  | { readonly status: 'done'; readonly login: LoggedIn }
  | { readonly status: 'failed'; readonly error: IdentityError }

interface PendingBrowser {
  readonly kind: 'browser'
  readonly provider: string
  readonly redirectUri: string
  readonly state: string
  readonly nonce: string
  readonly verifier: string
  readonly expires: number
}

interface PendingDevice {
  readonly kind: 'device'
  readonly provider: string
  result: DeviceState
  readonly abort: AbortController
  readonly expires: number
}

/** The provider's secret for confidential clients, resolved from its reference at start. */
export type ResolveSecret = (reference: string) => Promise<string>

function isLoopbackRedirect(uri: string): boolean {
  try {
    const u = new URL(uri)
    return u.protocol === 'http:' && (u.hostname === '127.0.0.1' || u.hostname === '[::1]' || u.hostname === 'localhost') && u.port !== ''
  } catch {
    return false
  }
}

export class OidcLogin {
  private readonly configs = new Map<string, Promise<oidc.Configuration>>()
  private readonly pending = new Map<string, PendingBrowser | PendingDevice>()

  constructor(
    private readonly providers: readonly OidcProviderConfig[],
    private readonly resolveSecret: ResolveSecret,
    private readonly log: Logger,
  ) {}

  names(): string[] {
    return this.providers.map((p) => p.name)
  }

  private provider(name: string | undefined): OidcProviderConfig {
    if (this.providers.length === 0) throw refused('invalid_request', 'no OIDC provider is configured (identity.oidc)')
    const p = name === undefined ? this.providers[0] : this.providers.find((x) => x.name === name)
    if (!p) throw refused('invalid_request', `no OIDC provider named ${JSON.stringify(name)} (configured: ${this.names().join(', ')})`)
    return p
  }

  private configuration(p: OidcProviderConfig): Promise<oidc.Configuration> {
    let c = this.configs.get(p.name)
    if (!c) {
      c = (async () => {
        const secret = p.clientSecret ? await this.resolveSecret(p.clientSecret) : null
        const execute: ((c: oidc.Configuration) => void)[] = [oidc.enableNonRepudiationChecks]
        if (p.allowInsecureHttp) execute.push(oidc.allowInsecureRequests)
        return oidc.discovery(new URL(p.issuer), p.clientId, undefined, secret ? oidc.ClientSecretPost(secret) : oidc.None(), {
          execute,
          timeout: 10,
        })
      })()
      c.catch(() => this.configs.delete(p.name))
      this.configs.set(p.name, c)
    }
    return c.catch((err: unknown) => {
      throw new IdentityError('server_error', `OIDC provider ${p.name}: discovery failed (${(err as Error).message})`, {
        cause: err,
        publicMessage: `the OIDC provider ${p.name} could not be reached; try again`,
      })
    })
  }

  private sweep(): void {
    const now = Date.now()
    for (const [id, p] of this.pending) {
      if (p.expires <= now) {
        if (p.kind === 'device') p.abort.abort()
        this.pending.delete(id)
      }
    }
    if (this.pending.size >= MAX_PENDING) {
      throw new IdentityError('server_error', 'too many pending logins', {
        publicMessage: 'too many logins are in progress; try again in a minute',
      })
    }
  }

  /**
   * Starts a browser login whose provider redirects to `redirectUri`: a loopback URL with a port
   * from a caller, or (`ownCallback`) the console's callback, which the gateway computed itself.
   */
  async startBrowser(
    providerName: string | undefined,
    redirectUri: string,
    ownCallback = false,
  ): Promise<{ loginId: string; authorizationUrl: string }> {
    const p = this.provider(providerName)
    if (!ownCallback && !isLoopbackRedirect(redirectUri)) {
      throw refused('invalid_request', 'redirect_uri must be a loopback URL with a port, e.g. http://127.0.0.1:53682/callback (RFC 8252)')
    }
    this.sweep()
    const config = await this.configuration(p)
    const verifier = oidc.randomPKCECodeVerifier()
    const state = oidc.randomState()
    const nonce = oidc.randomNonce()
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: redirectUri,
      scope: p.scopes.join(' '),
      response_type: 'code',
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state,
      nonce,
    })
    const loginId = randomBytes(18).toString('base64url')
    this.pending.set(loginId, {
      kind: 'browser',
      provider: p.name,
      redirectUri,
      state,
      nonce,
      verifier,
      expires: Date.now() + PENDING_TTL_MS,
    })
    return { loginId, authorizationUrl: url.toString() }
  }

  /** Completes a browser login from the URL the provider redirected to. Single use. */
  async finishBrowser(loginId: string, callbackUrl: string): Promise<LoggedIn> {
    const pend = this.pending.get(loginId)
    if (pend?.kind !== 'browser' || pend.expires <= Date.now()) {
      throw refused('invalid_grant', 'this login is unknown or has expired; run gatehouse login again')
    }
    this.pending.delete(loginId)
    let current: URL
    try {
      current = new URL(callbackUrl)
    } catch {
      throw refused('invalid_request', 'callback_url is not a URL')
    }
    if (`${current.origin}${current.pathname}` !== pend.redirectUri.replace(/\?.*$/, '')) {
      throw refused('invalid_request', 'callback_url is not the redirect_uri this login was started with')
    }
    const p = this.provider(pend.provider)
    const config = await this.configuration(p)
    let tokens: Awaited<ReturnType<typeof oidc.authorizationCodeGrant>>
    try {
      tokens = await oidc.authorizationCodeGrant(
        config,
        current,
        { pkceCodeVerifier: pend.verifier, expectedState: pend.state, expectedNonce: pend.nonce, idTokenExpected: true },
        { redirect_uri: pend.redirectUri },
      )
    } catch (err) {
      throw this.providerError(p, err)
    }
    return this.identityFrom(p, tokens.claims())
  }

  /** Starts a device authorization grant; the gateway polls the provider until it completes. */
  async startDevice(providerName: string | undefined): Promise<{
    loginId: string
    userCode: string
    verificationUri: string
    verificationUriComplete: string | null
    expiresIn: number
    interval: number
  }> {
    const p = this.provider(providerName)
    this.sweep()
    const config = await this.configuration(p)
    let da: Awaited<ReturnType<typeof oidc.initiateDeviceAuthorization>>
    try {
      da = await oidc.initiateDeviceAuthorization(config, { scope: p.scopes.join(' ') })
    } catch (err) {
      throw this.providerError(p, err)
    }
    const loginId = randomBytes(18).toString('base64url')
    const abort = new AbortController()
    const entry: PendingDevice = {
      kind: 'device',
      provider: p.name,
      result: { status: 'pending' },
      abort,
      expires: Date.now() + Math.min(PENDING_TTL_MS, da.expires_in * 1000 + 60_000),
    }
    this.pending.set(loginId, entry)
    oidc
      .pollDeviceAuthorizationGrant(config, da, undefined, { signal: abort.signal })
      .then((tokens) => {
        entry.result = { status: 'done', login: this.identityFrom(p, tokens.claims()) }
      })
      .catch((err: unknown) => {
        entry.result = { status: 'failed', error: err instanceof IdentityError ? err : this.providerError(p, err) }
      })
    return {
      loginId,
      userCode: da.user_code,
      verificationUri: da.verification_uri,
      verificationUriComplete: da.verification_uri_complete ?? null,
      expiresIn: da.expires_in,
      interval: da.interval ?? 5,
    }
  }

  /** Where a device login stands; a finished one is handed out once. */
  pollDevice(loginId: string): DeviceState {
    const pend = this.pending.get(loginId)
    if (pend?.kind !== 'device') return { status: 'failed', error: refused('expired_token', 'this device login is unknown or has expired') }
    if (pend.result.status !== 'pending') this.pending.delete(loginId)
    return pend.result
  }

  /** Stops every device poll (the gateway is stopping). */
  close(): void {
    for (const p of this.pending.values()) if (p.kind === 'device') p.abort.abort()
    this.pending.clear()
  }

  private providerError(p: OidcProviderConfig, err: unknown): IdentityError {
    if (err instanceof IdentityError) return err
    const e = err as { error?: unknown; error_description?: unknown; message?: string; code?: unknown }
    const what = typeof e.error === 'string' ? e.error : (e.message ?? String(err))
    this.log.warn({ provider: p.name, err: what, code: e.code }, 'OIDC login failed')
    if (e.error === 'access_denied') return refused('access_denied', 'the login was declined at the provider')
    if (e.error === 'expired_token') return refused('expired_token', 'the device code expired before the login was confirmed')
    return new IdentityError('access_denied', `OIDC provider ${p.name}: ${what}`, {
      cause: err,
      publicMessage: `the login could not be verified with ${p.name}`,
    })
  }

  private identityFrom(p: OidcProviderConfig, claims: oidc.IDToken | undefined): LoggedIn {
    if (!claims)
      throw new IdentityError('access_denied', `OIDC provider ${p.name}: no ID token`, { publicMessage: `${p.name} returned no ID token` })
    const raw = claims[p.usernameClaim]
    const principal = `user:${typeof raw === 'string' ? raw : ''}`
    if (typeof raw !== 'string' || validateSubject(principal) !== null) {
      throw refused('access_denied', `the ID token's ${p.usernameClaim} claim is missing or not usable as a user name`)
    }
    const groups: string[] = []
    const g = p.groupsClaim ? claims[p.groupsClaim] : undefined
    if (Array.isArray(g)) {
      for (const x of g) {
        if (typeof x === 'string' && validateGroup(x) === null) groups.push(x)
        else this.log.warn({ provider: p.name, group: x }, 'ignored a group name Gatehouse cannot use')
      }
    } else if (typeof g === 'string' && validateGroup(g) === null) groups.push(g)
    return { principal, groups, provider: p.name, subject: String(claims.sub), ttlSeconds: p.tokenTtlSeconds }
  }
}
