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
await import(main)
