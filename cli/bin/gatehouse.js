#!/usr/bin/env node
// The `gatehouse` command: a plain JavaScript entry that node runs in this process (so signals and
// process accounting reach the server), loading the compiled CLI from dist/.
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const main = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url))
if (!existsSync(main)) {
  process.stderr.write('gatehouse: not built yet; run `npm run setup` (or `npm run build`) in the checkout first\n')
  process.exit(1)
}
// kubectl runs `kube-credential` on every invocation: answered without loading the whole CLI when it can be.
if (process.argv[2] === 'kube-credential') {
  const fast = fileURLToPath(new URL('../../dist/cli/kube-credential.js', import.meta.url))
  if (existsSync(fast) && (await import(fast)).fastKubeCredential(process.argv.slice(3), process.env)) process.exit(0)
}
await import(main)
