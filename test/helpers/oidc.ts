// A real OpenID Provider for the identity tests: `oidc-provider` started as its own HTTP server on
// 127.0.0.1 (no network beyond loopback), with
//   - a public native client `gatehouse-cli` for authorization code + PKCE (loopback redirect, any
//     port) and the device authorization grant, ID tokens carrying `groups`;
//   - CI clients whose client-credentials access tokens are JWTs with GitHub-like claims
//     (`repository`, `ref`, `workflow`, …), standing in for a CI system's workload identity.
// The login and consent screens are answered by the test: `nextLogin` names the account that
// signs in next, and `Browser` drives the provider's pages the way a person would.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { exportJWK, generateKeyPair } from 'jose'
import Provider, { type Configuration, type KoaContextWithOIDC } from 'oidc-provider'

export interface TestAccount {
  readonly groups: readonly string[]
  readonly email?: string
}

export interface CiClient {
  readonly clientId: string
  readonly clientSecret: string
  /** Claims added to its access tokens: repository, ref, … */
  readonly claims: Readonly<Record<string, string>>
}

export interface TestOpOptions {
  readonly accounts: Readonly<Record<string, TestAccount>>
  readonly ciClients?: readonly CiClient[]
  /** The audience of CI access tokens (the resource indicator they are issued for). */
  readonly ciAudience?: string
}

export const CLI_CLIENT_ID = 'gatehouse-cli'

/** CI clients with GitHub-like claims, for workload federation tests. */
export const CI_AUDIENCE = 'https://gatehouse.test'
export const API_MAIN: CiClient = {
  clientId: 'ci-acme-api',
  clientSecret: 'ci-secret-1',
  claims: { repository: 'acme/api', ref: 'refs/heads/main' },
}
export const WEB_MAIN: CiClient = {
  clientId: 'ci-acme-web',
  clientSecret: 'ci-secret-2',
  claims: { repository: 'acme/web', ref: 'refs/heads/main' },
}
export const API_BRANCH: CiClient = {
  clientId: 'ci-acme-api-pr',
  clientSecret: 'ci-secret-3',
  claims: { repository: 'acme/api', ref: 'refs/heads/feature' },
}

export class TestOP {
  /** The account id that the next login interaction signs in. */
  nextLogin = 'alice'
  /** Interactions answered (login and consent), for assertions. */
  interactions = 0

  private constructor(
    readonly issuer: string,
    readonly provider: Provider,
    private readonly server: Server,
  ) {}

  static async start(opts: TestOpOptions): Promise<TestOP> {
    const server = createServer()
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    const addr = server.address()
    const port = addr && typeof addr === 'object' ? addr.port : 0
    const issuer = `http://127.0.0.1:${port}`
    const { privateKey } = await generateKeyPair('RS256', { extractable: true })
    const jwk = { ...(await exportJWK(privateKey)), kid: 'test-op-1', alg: 'RS256', use: 'sig' }
    const ciAudience = opts.ciAudience ?? 'https://gatehouse.test'
    const ciClients = opts.ciClients ?? []
    const ciClaims = new Map(ciClients.map((c) => [c.clientId, c.claims]))
    const formOnly = async (ctx: KoaContextWithOIDC, form: string): Promise<void> => {
      ctx.body = `<!DOCTYPE html><html><body>${form}</body></html>`
    }
    const configuration: Configuration = {
      clients: [
        {
          client_id: CLI_CLIENT_ID,
          application_type: 'native',
          token_endpoint_auth_method: 'none',
          // The CLI's loopback callback, and the console's on a loopback gateway (any port: native client).
          redirect_uris: ['http://127.0.0.1/callback', 'http://127.0.0.1/console/callback'],
          grant_types: ['authorization_code', 'urn:ietf:params:oauth:grant-type:device_code'],
          response_types: ['code'],
        },
        ...ciClients.map((c) => ({
          client_id: c.clientId,
          client_secret: c.clientSecret,
          grant_types: ['client_credentials'],
          redirect_uris: [],
          response_types: [],
        })),
      ],
      jwks: { keys: [jwk] },
      cookies: { keys: ['gatehouse-test-op'] },
      claims: { openid: ['sub'], email: ['email'], groups: ['groups'] },
      scopes: ['openid', 'email', 'groups'],
      // Claims asked for with a scope go into the ID token, not only the userinfo endpoint.
      conformIdTokenClaims: false,
      pkce: { required: () => true },
      features: {
        devInteractions: { enabled: false },
        clientCredentials: { enabled: true },
        deviceFlow: {
          enabled: true,
          userCodeInputSource: (ctx, form) => formOnly(ctx, form),
          userCodeConfirmSource: (ctx, form) => formOnly(ctx, form),
          successSource: async (ctx) => {
            ctx.body = '<!DOCTYPE html><html><body>signed in</body></html>'
          },
        },
        resourceIndicators: {
          enabled: true,
          defaultResource: () => ciAudience,
          useGrantedResource: () => true,
          getResourceServerInfo: () => ({ scope: 'ci', audience: ciAudience, accessTokenFormat: 'jwt', accessTokenTTL: 300 }),
        },
      },
      extraTokenClaims: (_ctx, token) => {
        const id = (token as { clientId?: string }).clientId
        return id ? { ...(ciClaims.get(id) ?? {}) } : {}
      },
      findAccount: (_ctx, id) => {
        const acc = opts.accounts[id]
        if (!acc) return undefined
        return {
          accountId: id,
          claims: () => ({ sub: id, groups: [...acc.groups], ...(acc.email ? { email: acc.email } : {}) }),
        }
      },
      interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
      ttl: { AccessToken: 300, ClientCredentials: 300, IdToken: 300, DeviceCode: 120, Interaction: 300, Session: 300, Grant: 300 },
    }
    const provider = new Provider(issuer, configuration)
    const op = new TestOP(issuer, provider, server)
    const callback = provider.callback()
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      if (req.url?.startsWith('/interaction/')) {
        op.interact(req, res).catch((err: unknown) => {
          res.statusCode = 500
          res.end(String(err))
        })
        return
      }
      callback(req, res)
    })
    return op
  }

  /** Signs `nextLogin` in and grants what the client asked for, as a person clicking through would. */
  private async interact(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.interactions++
    const details = await this.provider.interactionDetails(req, res)
    if (details.prompt.name === 'login') {
      await this.provider.interactionFinished(req, res, { login: { accountId: this.nextLogin } }, { mergeWithLastSubmission: false })
      return
    }
    const accountId = details.session?.accountId ?? this.nextLogin
    const clientId = String(details.params.client_id)
    const grant = details.grantId
      ? ((await this.provider.Grant.find(details.grantId)) ?? new this.provider.Grant({ accountId, clientId }))
      : new this.provider.Grant({ accountId, clientId })
    const missing = details.prompt.details as { missingOIDCScope?: string[]; missingOIDCClaims?: string[] }
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '))
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims)
    const grantId = await grant.save()
    await this.provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true })
  }

  /** A CI job's workload token: a client-credentials JWT access token with the client's claims. */
  async ciToken(client: CiClient): Promise<string> {
    const res = await fetch(`${this.issuer}/token`, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization: `Basic ${Buffer.from(`${client.clientId}:${client.clientSecret}`).toString('base64')}`,
      },
      body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'ci' }),
    })
    const body = (await res.json()) as { access_token?: string; error?: string; error_description?: string }
    if (!body.access_token) throw new Error(`CI token: ${body.error}: ${body.error_description}`)
    return body.access_token
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections()
    await new Promise<void>((r) => this.server.close(() => r()))
  }
}

/**
 * A person at a browser: follows redirects, keeps cookies, submits the provider's forms. Stops at
 * the first URL that is not the provider's (the CLI's loopback callback) and returns it.
 */
export class Browser {
  private readonly cookies = new Map<string, string>()

  constructor(private readonly origin: string) {}

  private cookieHeader(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ')
  }

  private keep(res: Response): void {
    for (const c of res.headers.getSetCookie()) {
      const [pair = ''] = c.split(';')
      const eq = pair.indexOf('=')
      if (eq > 0) this.cookies.set(pair.slice(0, eq).trim(), pair.slice(eq + 1))
    }
  }

  /** Requests `url` and follows redirects within the provider; returns the final response and URL. */
  async go(
    url: string,
    init: { method?: string; form?: Record<string, string> } = {},
  ): Promise<{ url: string; body: string; status: number }> {
    let next = url
    let method = init.method ?? 'GET'
    let body: string | undefined = init.form ? new URLSearchParams(init.form).toString() : undefined
    for (let hops = 0; hops < 20; hops++) {
      if (!next.startsWith(this.origin)) return { url: next, body: '', status: 0 }
      const res = await fetch(next, {
        method,
        redirect: 'manual',
        headers: { cookie: this.cookieHeader(), ...(body !== undefined ? { 'content-type': 'application/x-www-form-urlencoded' } : {}) },
        ...(body !== undefined ? { body } : {}),
      })
      this.keep(res)
      const loc = res.headers.get('location')
      if (res.status >= 300 && res.status < 400 && loc) {
        next = new URL(loc, next).toString()
        method = 'GET'
        body = undefined
        continue
      }
      return { url: next, body: await res.text(), status: res.status }
    }
    throw new Error('too many redirects')
  }

  /** Submits the first form of `html` with its hidden inputs plus `extra`. */
  async submit(html: string, base: string, extra: Record<string, string> = {}): Promise<{ url: string; body: string; status: number }> {
    const form = /<form[^>]*action="([^"]+)"[^>]*>([\s\S]*?)<\/form>/i.exec(html)
    if (!form) throw new Error(`no form in: ${html.slice(0, 300)}`)
    const fields: Record<string, string> = {}
    for (const m of (form[2] ?? '').matchAll(/<input[^>]*>/gi)) {
      const name = /name="([^"]+)"/.exec(m[0])?.[1]
      const value = /value="([^"]*)"/.exec(m[0])?.[1] ?? ''
      if (name) fields[name] = value
    }
    return this.go(new URL(form[1] ?? '', base).toString(), { method: 'POST', form: { ...fields, ...extra } })
  }
}
