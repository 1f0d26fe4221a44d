#!/usr/bin/env bash
# `npm test`: type check, lint, then every test file against real servers. Expects `npm run setup`
# to have run (the README's test command does both). Starts the local PostgreSQL if it is down.
set -euo pipefail
cd "$(dirname "$0")/.."

npx --no-install tsc -p tsconfig.json
npx --no-install biome check .

if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi

files=(dist/test/*.test.js)
node --test --test-concurrency=2 --test-timeout=300000 "${files[@]}"
