#!/usr/bin/env bash
# `npm run setup`: everything Gatehouse and its tests need on a fresh Debian machine, and nothing
# twice: Debian packages (only those missing), the pinned `opa` compiler (Rego → WebAssembly),
# the pinned kube-apiserver and kubectl the Kubernetes proxy tests run against, npm packages from the lock file (native modules built against the local Node headers, no
# download), and the TypeScript build. Safe to run again; each step skips what is already done.
set -euo pipefail
cd "$(dirname "$0")/../.."

OPA_VERSION="v1.22.3"
# These are for the tests and the benchmark; the gateway itself needs none of them at run time.
# psql/pgbench/initdb come with PostgreSQL 15; openssl makes test certificates; pgbouncer is
# the benchmark's reference pooler; openssh-server is the SSH proxy's test target; etcd-server
# stores the Kubernetes proxy tests' API server;
# chromium is the browser the console tests drive.
DEB_PACKAGES=(openssl postgresql-client postgresql-15 pgbouncer openssh-server openssh-client nginx etcd-server chromium)

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
# No kube-apiserver ships as a Debian or npm package: build the release from the Go module proxy
# (cli/setup/kube/go.mod pins it), stamped with its version so `--version` says which. It takes
# about 18 CPU-minutes, so by default it starts first and builds in the background while the rest
# of setup and the test suite run: at the lowest priority (nice 19), so that it takes only the CPU
# the suite leaves idle, and two packages at a time (GOFLAGS=-p=2, about 2 GB), so that it can
# take both cores when they are idle. `npm
# test` starts the Kubernetes end-to-end test once the build is over (test/run.sh; the test itself
# waits for it too, test/helpers/kube.ts). GATEHOUSE_KUBE_BUILD=foreground builds it here instead,
# =off not at all (the Kubernetes end-to-end test then fails and says why). Binaries already in
# $(go env GOPATH)/bin at the pinned version are kept.
KUBE_VERSION="v1.34.3"
KUBE_BUILD_LOG="$GOBIN_DIR/.kube-build.log"
KUBE_BUILD_PID="$GOBIN_DIR/.kube-build.pid"
kube_ok() { [ -x "$GOBIN_DIR/kube-apiserver" ] && [ -x "$GOBIN_DIR/kubectl" ] &&
  "$GOBIN_DIR/kube-apiserver" --version 2>/dev/null | grep -qx "Kubernetes ${KUBE_VERSION}" &&
  "$GOBIN_DIR/kubectl" version --client 2>/dev/null | grep -qx "Client Version: ${KUBE_VERSION}"; }
kube_building() { [ -f "$KUBE_BUILD_PID" ] && kill -0 "$(cat "$KUBE_BUILD_PID")" 2>/dev/null; }
if kube_ok; then
  :
elif kube_building; then
  say "kube-apiserver and kubectl ${KUBE_VERSION} are still building in the background (log: $KUBE_BUILD_LOG)"
elif [ "${GATEHOUSE_KUBE_BUILD:-background}" = off ]; then
  :
elif command -v go >/dev/null; then
  ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=${KUBE_VERSION} -X $p.gitMajor=1 -X $p.gitMinor=34 -X $p.gitTreeState=clean"
  done
  mkdir -p "$GOBIN_DIR"
  # One build of both: they share most packages (apimachinery, client-go), compiled once.
  kube_build=(nice -n 19 go build -trimpath -ldflags="$ld" -o "$GOBIN_DIR/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl)
  if [ "${GATEHOUSE_KUBE_BUILD:-background}" = foreground ]; then
    say "building kube-apiserver and kubectl ${KUBE_VERSION} (once; several minutes on two cores)"
    (cd cli/setup/kube && "${kube_build[@]}")
  else
    say "building kube-apiserver and kubectl ${KUBE_VERSION} in the background (once; log: $KUBE_BUILD_LOG)"
    (cd cli/setup/kube && setsid nohup bash -c 'echo $$ > "$0"; "$@"; echo "exit $?"' \
      "$KUBE_BUILD_PID" env GOFLAGS=-p=2 "${kube_build[@]}" > "$KUBE_BUILD_LOG" 2>&1 < /dev/null &)
  fi
else
  say "warning: Go is not installed, so kube-apiserver ${KUBE_VERSION} cannot be built (the Kubernetes proxy tests need it)"
fi

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
