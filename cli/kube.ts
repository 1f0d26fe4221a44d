// `gatehouse kubeconfig` and `gatehouse kube-credential`: kubectl through the gateway.
//
//   kubeconfig --connection NAME [--token T | --token-file F] [-o FILE] [--server URL]
//       a kubeconfig whose cluster is the gateway's Kubernetes listener (`/c/NAME`, the gateway's
//       certificate as its CA) and whose user runs `gatehouse kube-credential`
//   kube-credential [--token-file F]
//       the exec credential plugin: prints an ExecCredential with the caller's current token
//       (GATEHOUSE_TOKEN, --token-file, or the stored `gatehouse login` token for the server)
//
// The cluster's own credential never leaves the gateway; the kubeconfig holds only what names the
// caller to Gatehouse.

import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import type { Command, Option } from 'commander'
import yaml from 'js-yaml'
import type { Config } from '../engine/config/config.js'
import { resolveConfig, runningServer } from './client.js'
import { CliError, storedLoginToken } from './identity.js'
import { execCredential } from './kube-credential.js'

/** The gateway's Kubernetes listener as kubectl reaches it. */
function listenerUrl(config: Config): string {
  const running = runningServer(config)?.listeners.kubernetes
  const at = running ?? (config.listen.kubernetes ? `${config.listen.kubernetes.host}:${config.listen.kubernetes.port}` : null)
  if (!at) throw new CliError('the gateway has no Kubernetes listener: set listen.kubernetes in the configuration (or give --server)')
  const i = at.lastIndexOf(':')
  let host = at.slice(0, i).replace(/^\[|\]$/g, '')
  const port = at.slice(i + 1)
  // The self-signed certificate names localhost; a wildcard bind is reached as localhost too.
  if (host === '127.0.0.1' || host === '0.0.0.0' || host === '::' || host === '::1') host = 'localhost'
  return `https://${host.includes(':') ? `[${host}]` : host}:${port}`
}

function gatewayCa(config: Config): string {
  const file = config.tls.cert ?? join(config.dataDir, 'tls', 'cert.pem')
  if (!existsSync(file)) throw new CliError(`${file}: the gateway's certificate is not there yet (start the gateway once)`)
  return readFileSync(file, 'utf8')
}

export function registerKubeCommands(program: Command, configOption: () => Option): void {
  program
    .command('kubeconfig')
    .description("a kubeconfig for kubectl through the gateway's Kubernetes listener; its user runs gatehouse kube-credential")
    .addOption(configOption())
    .requiredOption('--connection <name>', 'the kubernetes connection')
    .option('--token <token>', 'put this Gatehouse token in the kubeconfig (it is then a credential: mode 0600)')
    .option('--token-file <path>', 'kube-credential reads the token from this file each time')
    .option('--server <url>', "the gateway's Kubernetes listener as clients reach it (default from the configuration)")
    .option('-o, --output <file>', 'write the kubeconfig here (mode 0600) instead of standard output')
    .action((o: { config?: string; connection: string; token?: string; tokenFile?: string; server?: string; output?: string }) => {
      const config = resolveConfig(o.config)
      const conn = config.connections.find((c) => c.name === o.connection)
      if (!conn) throw new CliError(`no connection named ${o.connection}`)
      if (conn.protocol !== 'kubernetes') throw new CliError(`connection ${o.connection} is ${conn.protocol}, not kubernetes`)
      if (o.token && o.tokenFile) throw new CliError('give --token or --token-file, not both')
      const base = (o.server ?? listenerUrl(config)).replace(/\/$/, '')
      const name = `gatehouse-${o.connection}`
      // The same gatehouse that wrote the kubeconfig, run by the same node: no PATH needed.
      const args = [resolve(process.argv[1] ?? 'gatehouse'), 'kube-credential']
      if (o.tokenFile) args.push('--token-file', resolve(o.tokenFile))
      if (!o.token && !o.tokenFile) args.push('--server', base)
      const doc = {
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [
          {
            name,
            cluster: {
              server: `${base}/c/${o.connection}`,
              'certificate-authority-data': Buffer.from(gatewayCa(config)).toString('base64'),
            },
          },
        ],
        users: [
          {
            name,
            user: {
              exec: {
                apiVersion: 'client.authentication.k8s.io/v1',
                command: process.execPath,
                args,
                ...(o.token ? { env: [{ name: 'GATEHOUSE_TOKEN', value: o.token }] } : {}),
                interactiveMode: 'Never',
                provideClusterInfo: false,
              },
            },
          },
        ],
        contexts: [{ name, context: { cluster: name, user: name, namespace: 'default' } }],
        'current-context': name,
      }
      const text = yaml.dump(doc, { lineWidth: -1 })
      if (o.output) {
        writeFileSync(o.output, text, { mode: 0o600 })
        chmodSync(o.output, 0o600)
      } else process.stdout.write(text)
    })

  program
    .command('kube-credential')
    .description("kubectl's exec credential plugin (used by the kubeconfig from gatehouse kubeconfig): prints the caller's token")
    .addOption(configOption())
    .option('--token-file <path>', 'read the token from this file')
    .option('--server <url>', 'use the token gatehouse login stored for this gateway')
    .action((o: { tokenFile?: string; server?: string }) => {
      let token = process.env.GATEHOUSE_TOKEN
      if (!token && o.tokenFile) token = readFileSync(o.tokenFile, 'utf8').trim()
      if (!token && o.server) {
        // The stored login is kept under the gateway's API URL; accept either that or this listener.
        token = storedLoginToken(o.server) ?? storedLoginToken(process.env.GATEHOUSE_SERVER ?? '')
      }
      if (!token) throw new CliError('no Gatehouse token: set GATEHOUSE_TOKEN, give --token-file, or run gatehouse login')
      // kubectl runs the plugin again once the token expires (a renewed login is picked up then).
      process.stdout.write(execCredential(token))
    })
}
