// The web console on the API listener: `/` answers the login page or, with a console session, the
// console's page; the page's script (web/app.ts) calls the same JSON API as the CLI. A console
// session is a cookie that stands for a Gatehouse token kept here (sessions.ts); `consoleAuth`
// turns it into the token for /v1 routes, so every route keeps its own rules (admin routes stay
// admin-only, approvals act as the viewer), and refuses a state-changing call without the
// session's CSRF token.
//
//   GET  /                        login page, or the console (HTML, strict Content-Security-Policy)
//   GET  /console/assets/:file    the page's script and style, the terminal player
//   POST /console/login/token     {token}: a person's Gatehouse token (with --dev or console.token_login)
//   GET  /console/login/oidc      ?provider=: to the provider (authorization code + PKCE)
//   GET  /console/callback        the provider's redirect: a console session for the person
//   POST /console/logout          {csrf}: ends the session (and revokes the token it was issued)

import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Identity } from '../types.js'
import type { IdentityService } from '../identity/service.js'
import type { AuditLog } from '../audit/writer.js'
import type { Store } from '../store.js'
import { isIdentityError } from '../identity/errors.js'
import { type ConsoleSession, ConsoleSessions, csrfMatches, readCookie } from './sessions.js'
import { CONSOLE_CSS } from './style.js'

export const SESSION_COOKIE = 'gh_console'
const LOGIN_COOKIE = 'gh_console_login'
export const CSRF_HEADER = 'x-gatehouse-csrf'
/** A console session lasts at most this long, whatever its token's lifetime (an admin token's is long). */
const MAX_SESSION_SECONDS = 12 * 3600

/** Scripts and styles only from the gateway; the terminal player needs WebAssembly, nothing else runs. */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self' 'wasm-unsafe-eval'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "font-src 'self' data:",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ')

export interface ConsoleDeps {
  readonly identify: (token: string) => Promise<Identity>
  readonly identity: IdentityService | null
  readonly audit: AuditLog
  readonly store: Store
  /** The console's public URL (console.url), or null: OIDC callbacks on loopback addresses only. */
  readonly url: string | null
  /** The login form takes a token (--dev, console.token_login). */
  readonly tokenLogin: boolean
}

interface Asset {
  readonly type: string
  readonly body: () => Buffer
}

const here = dirname(fileURLToPath(import.meta.url))

function once(read: () => Buffer): () => Buffer {
  let b: Buffer | null = null
  return () => {
    b ??= read()
    return b
  }
}

/** The asciinema player's bundle from its npm package (a pinned dependency), served as is. */
function playerFile(name: string): () => Buffer {
  return once(() => {
    return readFileSync(createRequire(import.meta.url).resolve(`asciinema-player/dist/bundle/${name}`))
  })
}

/** The page's script: app.js and the modules it imports, compiled from web/ and served beside it. */
const WEB_MODULES = ['app', 'api', 'dom', 'approvals', 'sessions', 'audit', 'policy', 'replay']

const ASSETS: Record<string, Asset> = {
  ...Object.fromEntries(
    WEB_MODULES.map((m): [string, Asset] => [
      `${m}.js`,
      { type: 'text/javascript; charset=utf-8', body: once(() => readFileSync(join(here, 'web', `${m}.js`))) },
    ]),
  ),
  'console.css': { type: 'text/css; charset=utf-8', body: once(() => Buffer.from(CONSOLE_CSS)) },
  'asciinema-player.min.js': { type: 'text/javascript; charset=utf-8', body: playerFile('asciinema-player.min.js') },
  'asciinema-player.css': { type: 'text/css; charset=utf-8', body: playerFile('asciinema-player.css') },
}

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
}

function isLoopbackHost(host: string): boolean {
  const h = host.replace(/:\d+$/, '')
  return h === '127.0.0.1' || h === 'localhost' || h === '[::1]'
}

/** Secure cookies everywhere but loopback (a browser drops a Secure cookie on plain HTTP elsewhere: fail closed). */
function secureFor(req: FastifyRequest, url: string | null): boolean {
  if (url) return url.startsWith('https:')
  return !isLoopbackHost(req.headers.host ?? '')
}

function cookie(name: string, value: string, opts: { secure: boolean; sameSite: 'Strict' | 'Lax'; maxAge: number; path?: string }): string {
  return [
    `${name}=${value}`,
    `Path=${opts.path ?? '/'}`,
    'HttpOnly',
    `SameSite=${opts.sameSite}`,
    `Max-Age=${Math.max(0, Math.floor(opts.maxAge))}`,
    ...(opts.secure ? ['Secure'] : []),
  ].join('; ')
}

/**
 * A form post or API call from another site is refused: the browser's Sec-Fetch-Site when it sends
 * one, else the Origin's host against this request's Host.
 */
function crossOrigin(req: FastifyRequest): boolean {
  const site = req.headers['sec-fetch-site']
  if (site !== undefined) return site !== 'same-origin'
  const origin = req.headers.origin
  if (origin === undefined) return false
  try {
    return new URL(origin).host !== req.headers.host
  } catch {
    return true
  }
}

/**
 * Why a state-changing call of a console session is refused, or null: it needs the session's CSRF
 * token and a same-origin Sec-Fetch-Site or Origin. A browser always sends one of the two on a
 * POST; a request with neither is not from the console's page, so it is refused too.
 */
function csrfRefusal(req: FastifyRequest, s: ConsoleSession, token: unknown): string | null {
  if (req.headers['sec-fetch-site'] === undefined && req.headers.origin === undefined) {
    return 'a console request without a same-origin Sec-Fetch-Site or Origin header was refused'
  }
  if (crossOrigin(req)) return 'a console request from another site was refused'
  if (!csrfMatches(s, token)) return 'a console request without its CSRF token was refused'
  return null
}

function page(reply: FastifyReply, status: number, title: string, body: string, meta = ''): FastifyReply {
  return reply
    .status(status)
    .header('content-security-policy', CONTENT_SECURITY_POLICY)
    .header('x-frame-options', 'DENY')
    .header('x-content-type-options', 'nosniff')
    .header('referrer-policy', 'same-origin')
    .header('cache-control', 'no-store')
    .type('text/html; charset=utf-8')
    .send(
      `<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">` +
        `<title>${esc(title)} · Gatehouse</title>${meta}<link rel="stylesheet" href="/console/assets/console.css"></head>` +
        `<body>${body}</body></html>`,
    )
}

function loginPage(reply: FastifyReply, deps: ConsoleDeps, error: string | null, status = 200): FastifyReply {
  const providers = deps.identity?.oidc.names() ?? []
  const parts: string[] = [`<main class="login"><h1>Gatehouse</h1><p>Sign in to review approvals, sessions and the audit log.</p>`]
  if (error) parts.push(`<p class="error" role="alert">${esc(error)}</p>`)
  for (const p of providers) {
    parts.push(`<p><a class="button" href="/console/login/oidc?provider=${encodeURIComponent(p)}">Sign in with ${esc(p)}</a></p>`)
  }
  if (deps.tokenLogin) {
    parts.push(
      `<form method="post" action="/console/login/token" class="token-login"><label for="token">Gatehouse token</label>` +
        `<input id="token" name="token" type="password" autocomplete="off" required>` +
        `<button type="submit">Sign in with a token</button></form>`,
    )
  }
  if (providers.length === 0 && !deps.tokenLogin) {
    parts.push('<p>No login is configured: add an OIDC provider (identity.oidc) or start the gateway with --dev.</p>')
  }
  parts.push('</main>')
  return page(reply, status, 'Sign in', parts.join(''))
}

function consolePage(reply: FastifyReply, s: ConsoleSession): FastifyReply {
  const me = s.identity.chain[0]?.id ?? ''
  const body =
    `<a class="skip" href="#main">Skip to content</a><header><span class="brand">Gatehouse</span>` +
    `<nav aria-label="Console"><a href="#approvals">Approvals</a><a href="#sessions">Sessions</a><a href="#audit">Audit</a><a href="#policy">Policy</a></nav>` +
    `<form method="post" action="/console/logout" class="logout"><span class="who">${esc(me)}</span>` +
    `<input type="hidden" name="csrf" value="${esc(s.csrf)}"><button type="submit">Sign out</button></form></header>` +
    `<main id="main" tabindex="-1"><p>Loading…</p></main>` +
    `<script type="module" src="/console/assets/app.js"></script>`
  return page(reply, 200, 'Console', body, `<meta name="gatehouse-csrf" content="${esc(s.csrf)}">`)
}

export class Console {
  readonly sessions = new ConsoleSessions()

  constructor(private readonly deps: ConsoleDeps) {}

  /**
   * For /v1 routes: a request with the console cookie and no Authorization header acts as the
   * session's token; a state-changing one needs the session's CSRF token in x-gatehouse-csrf and
   * no foreign Origin. Returns false when it has answered (401/403).
   */
  async authenticate(req: FastifyRequest, reply: FastifyReply): Promise<boolean> {
    if (req.headers.authorization !== undefined || !req.url.startsWith('/v1/')) return true
    const c = readCookie(req.headers.cookie, SESSION_COOKIE)
    if (c === undefined) return true
    const s = this.sessions.get(c)
    if (!s || this.revoked(s)) {
      await reply.status(401).send({ error: 'the console session has ended; sign in again', code: 'GH_ERR_AUTH' })
      return false
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      const refused = csrfRefusal(req, s, req.headers[CSRF_HEADER])
      if (refused !== null) {
        await reply.status(403).send({ error: refused, code: 'GH_ERR_CSRF' })
        return false
      }
    }
    req.headers.authorization = `Bearer ${s.token}`
    return true
  }

  private revoked(s: ConsoleSession): boolean {
    return s.identity.tokenIds.some((j) => this.deps.store.isRevoked(j))
  }

  private session(req: FastifyRequest): { cookie: string; session: ConsoleSession } | null {
    const c = readCookie(req.headers.cookie, SESSION_COOKIE)
    const s = this.sessions.get(c)
    if (!c || !s) return null
    if (this.revoked(s)) {
      this.sessions.end(c)
      return null
    }
    return { cookie: c, session: s }
  }

  private async begin(
    req: FastifyRequest,
    reply: FastifyReply,
    token: string,
    identity: Identity,
    owned: boolean,
    via: string,
  ): Promise<void> {
    const expiresAt = Math.min(identity.expiresAt, Math.floor(Date.now() / 1000) + MAX_SESSION_SECONDS)
    const { cookie: value } = this.sessions.create({ token, identity, owned, expiresAt })
    await this.deps.audit.append({
      type: 'console.login',
      session: null,
      chain: identity.chain.map((p) => p.id),
      connection: null,
      via,
      token: identity.tokenIds[identity.tokenIds.length - 1] ?? null,
      client: req.ip,
    })
    reply.header(
      'set-cookie',
      cookie(SESSION_COOKIE, value, {
        secure: secureFor(req, this.deps.url),
        sameSite: 'Strict',
        maxAge: expiresAt - Date.now() / 1000,
      }),
    )
  }

  /** Where the provider sends the browser back: console.url, else this loopback address. */
  private callbackUrl(req: FastifyRequest): string | null {
    if (this.deps.url) return `${this.deps.url}/console/callback`
    const host = req.headers.host ?? ''
    return isLoopbackHost(host) && /^[\w.[\]:-]+$/.test(host) ? `http://${host}/console/callback` : null
  }

  routes() {
    const deps = this.deps
    return async (app: FastifyInstance): Promise<void> => {
      app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 64 * 1024 }, (_req, body, done) => {
        const out: Record<string, string> = {}
        for (const [k, v] of new URLSearchParams(String(body))) if (!(k in out)) out[k] = v
        done(null, out)
      })

      const hidden = { config: { auth: 'public' as const }, schema: { hide: true } }

      app.get('/', hidden, async (req, reply) => {
        const s = this.session(req)
        return s ? consolePage(reply, s.session) : loginPage(reply, deps, null)
      })

      app.get<{ Params: { file: string } }>('/console/assets/:file', hidden, async (req, reply) => {
        const a = Object.hasOwn(ASSETS, req.params.file) ? ASSETS[req.params.file] : undefined
        if (!a) return reply.status(404).send({ error: 'no such asset', code: 'GH_ERR_NOT_FOUND' })
        return reply.type(a.type).header('x-content-type-options', 'nosniff').header('cache-control', 'no-cache').send(a.body())
      })

      app.post<{ Body: { token?: string } }>('/console/login/token', hidden, async (req, reply) => {
        if (!deps.tokenLogin)
          return loginPage(reply, deps, 'Token login is off (start the gateway with --dev or set console.token_login).', 403)
        if (crossOrigin(req)) return loginPage(reply, deps, 'A login from another site was refused.', 403)
        const token = typeof req.body?.token === 'string' ? req.body.token.trim() : ''
        let id: Identity
        try {
          id = await deps.identify(token)
        } catch {
          return loginPage(reply, deps, 'That token is invalid, expired or revoked.', 401)
        }
        if (id.chain.length !== 1) return loginPage(reply, deps, "The console takes a person's token, not a delegated one.", 403)
        // Reviewing and killing are a person's acts: a service account's key or a workload's token
        // keeps its API rights but opens no console session.
        if (id.chain[0]?.kind !== 'user')
          return loginPage(reply, deps, "The console takes a person's token, not a service account's or a workload's.", 403)
        await this.begin(req, reply, token, id, false, 'token')
        return reply.status(303).header('location', '/').header('cache-control', 'no-store').send()
      })

      app.get<{ Querystring: { provider?: string } }>('/console/login/oidc', hidden, async (req, reply) => {
        const svc = deps.identity
        if (!svc || svc.oidc.names().length === 0) return loginPage(reply, deps, 'No OIDC provider is configured.', 400)
        const callback = this.callbackUrl(req)
        if (!callback) return loginPage(reply, deps, 'Set console.url to sign in through a provider from this address.', 400)
        const provider = typeof req.query.provider === 'string' ? req.query.provider : undefined
        try {
          const r = await svc.oidc.startBrowser(provider, callback, true)
          // Lax: the provider's redirect back is a cross-site navigation, which a Strict cookie misses.
          reply.header(
            'set-cookie',
            cookie(LOGIN_COOKIE, r.loginId, { secure: secureFor(req, deps.url), sameSite: 'Lax', maxAge: 600, path: '/console/callback' }),
          )
          return reply.status(302).header('location', r.authorizationUrl).header('cache-control', 'no-store').send()
        } catch (err) {
          if (isIdentityError(err)) return loginPage(reply, deps, err.publicMessage, 400)
          throw err
        }
      })

      app.get('/console/callback', hidden, async (req, reply) => {
        const svc = deps.identity
        const loginId = readCookie(req.headers.cookie, LOGIN_COOKIE)
        const callback = this.callbackUrl(req)
        reply.header(
          'set-cookie',
          cookie(LOGIN_COOKIE, '', { secure: secureFor(req, deps.url), sameSite: 'Lax', maxAge: 0, path: '/console/callback' }),
        )
        if (!svc || !loginId || !callback) return loginPage(reply, deps, 'This login is unknown or has expired; sign in again.', 400)
        const query = req.url.includes('?') ? req.url.slice(req.url.indexOf('?')) : ''
        let token: string
        let id: Identity
        try {
          const login = await svc.oidc.finishBrowser(loginId, `${callback}${query}`)
          const ttl = Math.min(login.ttlSeconds ?? svc.defaultTtlSeconds, svc.maxTtlSeconds)
          const t = await svc.issuer.issue({ subject: login.principal, groups: login.groups, ttlSeconds: ttl })
          await svc.audit.append({
            type: 'token.issued',
            session: null,
            chain: [login.principal],
            connection: null,
            token: {
              id: t.id,
              source: 'oidc',
              provider: login.provider,
              provider_subject: login.subject,
              subject: login.principal,
              groups: login.groups,
              expires_at: new Date(t.expiresAt * 1000).toISOString(),
              console: true,
            },
          })
          token = t.token
          id = await deps.identify(t.token)
        } catch (err) {
          if (isIdentityError(err)) return loginPage(reply, deps, err.publicMessage, 400)
          throw err
        }
        await this.begin(req, reply, token, id, true, 'oidc')
        // A page, not a redirect: the cross-site redirect chain from the provider would not carry
        // the new Strict cookie; this same-site refresh does.
        return page(
          reply,
          200,
          'Signed in',
          '<main class="login"><p>Signed in. <a href="/">Open the console</a>.</p></main>',
          '<meta http-equiv="refresh" content="0;url=/">',
        )
      })

      app.post<{ Body: { csrf?: string } }>('/console/logout', hidden, async (req, reply) => {
        const c = readCookie(req.headers.cookie, SESSION_COOKIE)
        const s = c ? this.sessions.get(c) : null
        if (!c || !s) return reply.status(303).header('location', '/').send()
        const refused = csrfRefusal(req, s, req.body?.csrf ?? req.headers[CSRF_HEADER])
        if (refused !== null) return reply.status(403).send({ error: refused, code: 'GH_ERR_CSRF' })
        this.sessions.end(c)
        const jti = s.identity.tokenIds[s.identity.tokenIds.length - 1]
        // The token the login issued dies with the session; a pasted token (the admin's) is the owner's to revoke.
        if (s.owned && jti) deps.store.revoke(jti, 'console logout')
        await deps.audit.append({
          type: 'console.logout',
          session: null,
          chain: s.identity.chain.map((p) => p.id),
          connection: null,
          token: jti ?? null,
          revoked: s.owned,
        })
        reply.header('set-cookie', cookie(SESSION_COOKIE, '', { secure: secureFor(req, deps.url), sameSite: 'Strict', maxAge: 0 }))
        return reply.status(303).header('location', '/').header('cache-control', 'no-store').send()
      })
    }
  }
}
