#!/usr/bin/env bash
# `npm run setup`: everything Gatehouse and its tests need on a fresh Debian machine, and nothing
# twice: Debian packages (only those missing), the pinned `opa` compiler (Rego → WebAssembly),
# npm packages from the lock file (native modules built against the local Node headers, no
# download), and the TypeScript build. Safe to run again; each step skips what is already done.
set -euo pipefail
cd "$(dirname "$0")/../.."

OPA_VERSION="v1.22.3"
# These are for the tests and the benchmark; the gateway itself needs none of them at run time.
# psql/pgbench/initdb come with PostgreSQL 15; openssl makes test certificates; pgbouncer is
# the benchmark's reference pooler; openssh-server is the SSH proxy's test target.
DEB_PACKAGES=(openssl postgresql-client postgresql-15 pgbouncer openssh-server openssh-client nginx)

say() { printf '\033[1msetup:\033[0m %s\n' "$*"; }

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  say "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  # Installing a server package must not start or reconfigure services the machine already runs.
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

GOBIN_DIR="$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin"
if [ -x "$GOBIN_DIR/opa" ] && "$GOBIN_DIR/opa" version 2>/dev/null | grep -q "^Version: ${OPA_VERSION#v}$"; then
  :
elif command -v go >/dev/null; then
  say "building opa ${OPA_VERSION} with go install (a few minutes, once)"
  (cd /tmp && go install "github.com/open-policy-agent/opa@${OPA_VERSION}")
else
  say "warning: Go is not installed, so opa ${OPA_VERSION} cannot be built; install it and put it on PATH (see README)"
fi

# Native modules (better-sqlite3) compile against Node's headers where Debian puts them, instead
# of downloading them.
if [ -f /usr/include/node/node.h ]; then export npm_config_nodedir=/usr; fi
lock_hash="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ ! -f node_modules/.gatehouse-lock ] || [ "$(cat node_modules/.gatehouse-lock)" != "$lock_hash" ]; then
  say "installing npm packages from package-lock.json (native builds take about two minutes)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_hash" > node_modules/.gatehouse-lock
fi

say "building (tsc)"
npx --no-install tsc -p tsconfig.json
say "ready: npx gatehouse --help"
