// A real Kubernetes control plane for the Kubernetes proxy tests: Debian's etcd and the
// kube-apiserver that `npm run setup` builds (cli/setup/kube), on free ports in a temporary
// directory, with a token file (an admin and the gateway's own account), RBAC, service-account
// keys, its own serving certificate and an audit log. No kubelet: pods stay Pending.

import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { Agent, fetch as undiciFetch } from 'undici'

const GOBIN = join(process.env.GOPATH || join(process.env.HOME ?? '/root', 'go'), 'bin')
export const KUBE_APISERVER = join(GOBIN, 'kube-apiserver')
/** The kubectl setup builds (the machine may have another one on PATH). */
export const KUBECTL = join(GOBIN, 'kubectl')

const BUILD_PID = join(GOBIN, '.kube-build.pid')
const BUILD_LOG = join(GOBIN, '.kube-build.log')

function alive(pidFile: string): boolean {
  if (!existsSync(pidFile)) return false
  try {
    process.kill(Number(readFileSync(pidFile, 'utf8').trim()), 0)
    return true
  } catch {
    return false
  }
}

/**
 * Waits for the background build `npm run setup` starts (cli/setup/setup.sh), then throws if
 * kube-apiserver, kubectl or etcd is still missing, with what to do.
 */
export async function waitForKube(timeoutMs = 40 * 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (alive(BUILD_PID) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5000))
  if (!existsSync(KUBE_APISERVER) || !existsSync(KUBECTL)) {
    const log = existsSync(BUILD_LOG) ? readFileSync(BUILD_LOG, 'utf8').slice(-2000) : '(no build log)'
    throw new Error(`${KUBE_APISERVER} or ${KUBECTL} is missing: run npm run setup (it builds them). Build log:\n${log}`)
  }
  if (spawnSync('etcd', ['--version']).status !== 0) throw new Error('etcd is missing: run npm run setup (Debian etcd-server)')
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const a = s.address()
      const port = a && typeof a === 'object' ? a.port : 0
      s.close(() => resolve(port))
    })
  })
}

export interface KubeCluster {
  readonly url: string
  /** The API server's serving certificate chain (its self-signed CA inside). */
  readonly ca: string
  readonly adminToken: string
  /** The gateway's own account (user `gatehouse`), allowed to impersonate. */
  readonly gatewayToken: string
  readonly auditLog: string
  /** kubectl as the cluster admin, straight to the API server. */
  admin(args: readonly string[], input?: string): { code: number | null; stdout: string; stderr: string }
  /** The API server's audit events so far. */
  audit(): Record<string, unknown>[]
  /** A GET straight to the API server as the admin, in the media type asked for. */
  get(path: string, accept: string): Promise<{ status: number; type: string; body: Buffer }>
  stop(): Promise<void>
}

function stopProc(p: ChildProcess | null): Promise<void> {
  if (!p || p.exitCode !== null || p.signalCode !== null) return Promise.resolve()
  return new Promise((r) => {
    const t = setTimeout(() => p.kill('SIGKILL'), 10_000)
    p.once('exit', () => {
      clearTimeout(t)
      r()
    })
    p.kill('SIGTERM')
  })
}

export async function startKubeCluster(dir: string): Promise<KubeCluster> {
  mkdirSync(dir, { recursive: true })
  const [etcdPort, peerPort, apiPort] = [await freePort(), await freePort(), await freePort()]
  const adminToken = `admin-${Math.random().toString(36).slice(2)}${Date.now()}`
  const gatewayToken = `gatehouse-${Math.random().toString(36).slice(2)}${Date.now()}`
  writeFileSync(join(dir, 'tokens.csv'), `${adminToken},admin,uid-admin,"system:masters"\n${gatewayToken},gatehouse,uid-gatehouse\n`, {
    mode: 0o600,
  })
  const key = join(dir, 'sa.key')
  const keyGen = spawnSync('openssl', ['genrsa', '-out', key, '2048'], { encoding: 'utf8' })
  if (keyGen.status !== 0) throw new Error(`openssl genrsa: ${keyGen.stderr}`)
  const auditLog = join(dir, 'audit.log')
  writeFileSync(join(dir, 'audit-policy.yaml'), 'apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Metadata\n')
  // Logs go to files, not pipes: kubectl runs through spawnSync, which would leave a pipe undrained
  // and stall a server writing its log.
  const etcdLog = join(dir, 'etcd.log')
  const apiLog = join(dir, 'kube-apiserver.log')
  const etcdFd = openSync(etcdLog, 'a')
  const apiFd = openSync(apiLog, 'a')
  const tail = (path: string, n: number): string => (existsSync(path) ? readFileSync(path, 'utf8').slice(-n) : '')
  const etcd = spawn(
    'etcd',
    [
      '--name=default',
      `--data-dir=${join(dir, 'etcd')}`,
      `--listen-client-urls=http://127.0.0.1:${etcdPort}`,
      `--advertise-client-urls=http://127.0.0.1:${etcdPort}`,
      `--listen-peer-urls=http://127.0.0.1:${peerPort}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${peerPort}`,
      `--initial-cluster=default=http://127.0.0.1:${peerPort}`,
      '--log-level=error',
    ],
    { stdio: ['ignore', 'ignore', etcdFd] },
  )
  closeSync(etcdFd)
  const certDir = join(dir, 'certs')
  const api = spawn(
    KUBE_APISERVER,
    [
      `--etcd-servers=http://127.0.0.1:${etcdPort}`,
      '--bind-address=127.0.0.1',
      '--advertise-address=127.0.0.1',
      `--secure-port=${apiPort}`,
      `--cert-dir=${certDir}`,
      `--token-auth-file=${join(dir, 'tokens.csv')}`,
      '--service-account-issuer=https://kubernetes.default.svc',
      `--service-account-key-file=${key}`,
      `--service-account-signing-key-file=${key}`,
      '--service-cluster-ip-range=10.96.0.0/24',
      '--authorization-mode=RBAC',
      // No controller manager makes the default service account: pods are admitted without one.
      '--disable-admission-plugins=ServiceAccount',
      '--enable-priority-and-fairness=false',
      `--audit-log-path=${auditLog}`,
      `--audit-policy-file=${join(dir, 'audit-policy.yaml')}`,
      '--v=0',
    ],
    { stdio: ['ignore', 'ignore', apiFd] },
  )
  closeSync(apiFd)
  const url = `https://127.0.0.1:${apiPort}`
  const stop = async (): Promise<void> => {
    await stopProc(api)
    await stopProc(etcd)
  }
  // The serving certificate appears once the API server starts; /readyz once its hooks ran
  // (about 20 s on a quiet machine; generous for a loaded one).
  const deadline = Date.now() + 240_000
  const certFile = join(certDir, 'apiserver.crt')
  let ready = false
  let agent: Agent | null = null
  while (Date.now() < deadline) {
    if (api.exitCode !== null || etcd.exitCode !== null) break
    if (existsSync(certFile)) {
      agent ??= new Agent({ connect: { ca: readFileSync(certFile, 'utf8') } })
      try {
        const r = await undiciFetch(`${url}/readyz`, { dispatcher: agent, headers: { authorization: `Bearer ${adminToken}` } })
        await r.text()
        if (r.status === 200) {
          ready = true
          break
        }
      } catch {
        // not listening yet
      }
    }
    await new Promise((r) => setTimeout(r, 500))
  }
  await agent?.close()
  if (!ready) {
    await stop()
    throw new Error(`kube-apiserver did not become ready:\n${tail(apiLog, 8000)}\netcd:\n${tail(etcdLog, 4000)}`)
  }
  const admin = (args: readonly string[], input?: string): { code: number | null; stdout: string; stderr: string } => {
    const r = spawnSync(KUBECTL, [`--server=${url}`, `--certificate-authority=${certFile}`, `--token=${adminToken}`, ...args], {
      encoding: 'utf8',
      input,
      timeout: 120_000,
    })
    return { code: r.status, stdout: r.stdout, stderr: r.stderr }
  }
  // The gateway's account may impersonate (users, groups, the extras it sends) and nothing else.
  const rbac = `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: gatehouse-impersonator }
rules:
  - apiGroups: [""]
    resources: [users, groups]
    verbs: [impersonate]
  - apiGroups: [authentication.k8s.io]
    resources: [userextras/gatehouse.dev/chain, userextras/gatehouse.dev/session]
    verbs: [impersonate]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: { name: gatehouse-impersonator }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: gatehouse-impersonator }
subjects:
  - { apiGroup: rbac.authorization.k8s.io, kind: User, name: gatehouse }
`
  const applied = admin(['apply', '-f', '-'], rbac)
  if (applied.code !== 0) {
    await stop()
    throw new Error(`cannot set up RBAC: ${applied.stderr}`)
  }
  const get = async (path: string, accept: string): Promise<{ status: number; type: string; body: Buffer }> => {
    const a = new Agent({ connect: { ca: readFileSync(certFile, 'utf8') } })
    try {
      const r = await undiciFetch(`${url}${path}`, { dispatcher: a, headers: { authorization: `Bearer ${adminToken}`, accept } })
      return { status: r.status, type: r.headers.get('content-type') ?? '', body: Buffer.from(await r.arrayBuffer()) }
    } finally {
      await a.close()
    }
  }
  return {
    url,
    ca: certFile,
    get,
    adminToken,
    gatewayToken,
    auditLog,
    admin,
    audit: () =>
      existsSync(auditLog)
        ? readFileSync(auditLog, 'utf8')
            .split('\n')
            .filter((l) => l.trim() !== '')
            .map((l) => JSON.parse(l) as Record<string, unknown>)
        : [],
    stop,
  }
}
