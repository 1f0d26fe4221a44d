// `gatehouse kube-credential` without the rest of the CLI: kubectl runs the exec credential plugin
// on every invocation, so when the token is at hand (GATEHOUSE_TOKEN or --token-file) the answer
// comes from this module alone, loaded by cli/bin/gatehouse.js before anything else (a few
// milliseconds instead of the whole CLI's start). A stored `gatehouse login` token goes through
// the full command (cli/kube.ts).

import { readFileSync } from 'node:fs'

/** The `exp` of a JWT-shaped token (unverified: only to tell kubectl when to ask again), or null. */
export function tokenExpiry(token: string): number | null {
  const part = token.split('.')[1]
  if (!part) return null
  try {
    const claims = JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as { exp?: unknown }
    return typeof claims.exp === 'number' && Number.isFinite(claims.exp) ? claims.exp : null
  } catch {
    return null
  }
}

/** The ExecCredential kubectl reads; it runs the plugin again once the token expires. */
export function execCredential(token: string): string {
  const status: Record<string, string> = { token }
  const exp = tokenExpiry(token)
  if (exp !== null) status.expirationTimestamp = new Date(exp * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z')
  return `${JSON.stringify({ apiVersion: 'client.authentication.k8s.io/v1', kind: 'ExecCredential', status })}\n`
}

/**
 * Answers `kube-credential <args>` when it needs nothing of the CLI: true when it wrote the
 * credential, false when the full command must run (no token at hand, or arguments it does not know).
 */
export function fastKubeCredential(args: readonly string[], env: NodeJS.ProcessEnv): boolean {
  let tokenFile: string | undefined
  for (let i = 0; i < args.length; i += 2) {
    const k = args[i]
    const v = args[i + 1]
    if (v === undefined || !['--token-file', '--server', '--config'].includes(k ?? '')) return false
    if (k === '--token-file') tokenFile = v
  }
  let token = env.GATEHOUSE_TOKEN
  if (!token && tokenFile) {
    try {
      token = readFileSync(tokenFile, 'utf8').trim()
    } catch {
      return false
    }
  }
  if (!token) return false
  process.stdout.write(execCredential(token))
  return true
}
