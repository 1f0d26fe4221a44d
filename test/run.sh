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

# The Kubernetes end-to-end test runs against the kube-apiserver and kubectl that setup builds in
# the background (cli/setup/setup.sh, nice 19, so it takes only the CPU the suite leaves). It runs
# after the rest of the suite, not beside it: an etcd and an API server starting next to the timed
# tests (revocation within a second, ssh logins) starved them on two cores. Waiting for the build
# (at most 40 minutes) counts against no test's timeout.
files=()
kube=()
for f in dist/test/*.test.js; do
  # dist/ keeps what earlier builds compiled: a test whose source was renamed, split or removed
  # would run again from its stale copy.
  [ -f "test/$(basename "$f" .js).ts" ] || continue
  case "$f" in
    dist/test/kube-proxy.test.js) kube+=("$f") ;;
    *) files+=("$f") ;;
  esac
done
status=0
# A file is bounded at ten minutes: the bound only ends a hang, and files that spawn the CLI
# many times took over five beside the background kube build on two cores.
node --test --test-concurrency=2 --test-timeout=600000 "${files[@]}" || status=$?
gobin="$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin"
pidf="$gobin/.kube-build.pid"
end=$((SECONDS + 2400))
while [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null && [ "$SECONDS" -lt "$end" ]; do sleep 5; done
# One etcd and API server for the whole file: ten minutes bound only a hang.
node --test --test-timeout=600000 "${kube[@]}" || status=$?
exit "$status"
