#!/usr/bin/env bash
# node-postgres's own integration suite as a standing check of the PostgreSQL proxy: every
# packages/pg/test/integration/**/*-tests.js file is run directly against a private PostgreSQL 15
# cluster and then through a Gatehouse gateway in front of that cluster (PG* variables at the
# gateway, a token as the password), and a table is printed: file, direct, gateway, wall times.
# Not part of `npm test`: it needs the fetched node-postgres source and the npm registry.
#
#   bench/node-postgres-suite.sh [MIRROR_GIT_DIR]
#
# MIRROR_GIT_DIR defaults to /work/.mirror/brianc+node-postgres/repo (the search tool's `fetch` of
# github:brianc/node-postgres). Needs `npx tsc -p .` first (runs dist/). Environment:
#   NODEPG_DIR=dir   reuse a checkout with node_modules from an earlier run (kept, not deleted)
#   ONLY=regex       run only the test files whose path matches
#   TEST_TIMEOUT_S=n seconds per file and target (default 60)
# The devDependencies the integration files need are installed (async, bluebird, co,
# pg-copy-streams); the Cloudflare worker tooling (wrangler, vitest, workers types, typescript)
# serves only test/cloudflare and is left out. Everything started here is stopped on exit.

set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
MIRROR="${1:-/work/.mirror/brianc+node-postgres/repo}"
PG_BIN=/usr/lib/postgresql/15/bin
TIMEOUT_S="${TEST_TIMEOUT_S:-60}"
DB=nodepg

[ -f "$REPO/dist/cli/index.js" ] || [ -d "$REPO/dist" ] || { echo "run npx tsc -p . first" >&2; exit 1; }
git --git-dir="$MIRROR" rev-parse HEAD >/dev/null 2>&1 || { echo "no node-postgres mirror at $MIRROR" >&2; exit 1; }

WORK="$(mktemp -d /tmp/gh-nodepg-XXXXXX)"
chmod 755 "$WORK"
GW_PID=""
cleanup() {
  if [ -n "$GW_PID" ]; then kill "$GW_PID" 2>/dev/null || true; wait "$GW_PID" 2>/dev/null || true; fi
  if [ -d "$WORK/pgdata" ]; then runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pgdata" -m immediate stop >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

free_port() { node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

# ---- node-postgres's packages/pg, with the dev dependencies its integration files use ----------
if [ -n "${NODEPG_DIR:-}" ] && [ -d "$NODEPG_DIR/node_modules" ]; then
  PKG="$NODEPG_DIR"
else
  PKG="${NODEPG_DIR:-$WORK/node-postgres}"
  mkdir -p "$PKG"
  git --git-dir="$MIRROR" archive HEAD packages/pg | tar -x -C "$PKG" --strip-components=2
  node -e '
    const fs = require("fs"); const f = process.argv[1]; const p = JSON.parse(fs.readFileSync(f, "utf8"));
    for (const d of ["@cloudflare/vitest-pool-workers", "@cloudflare/workers-types", "typescript", "vitest", "wrangler"]) delete p.devDependencies[d];
    fs.writeFileSync(f, JSON.stringify(p, null, 2));' "$PKG/package.json"
  (cd "$PKG" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
fi
echo "node-postgres $(git --git-dir="$MIRROR" rev-parse --short HEAD) (pg $(node -p "require('$PKG/package.json').version")) in $PKG" >&2

# ---- a private PostgreSQL 15 cluster; its superuser is postgres --------------------------------
PG_PORT="$(free_port)"
chown postgres "$WORK"
runuser -u postgres -- "$PG_BIN/initdb" -D "$WORK/pgdata" -U postgres -E UTF8 --locale=C --auth=trust --no-sync >/dev/null
printf 'host all all 127.0.0.1/32 trust\nlocal all all trust\n' > "$WORK/pgdata/pg_hba.conf"
# TLS as well, for ssl-tests.js (a self-signed certificate; the tests do not verify it).
openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -days 1 \
  -keyout "$WORK/pgdata/server.key" -out "$WORK/pgdata/server.crt" >/dev/null 2>&1
chown postgres "$WORK/pgdata/server.key" "$WORK/pgdata/server.crt"
chmod 600 "$WORK/pgdata/server.key"
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pgdata" -l "$WORK/pg.log" -w \
  -o "-p $PG_PORT -k $WORK -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200 -c ssl=on" start >/dev/null
psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c "CREATE DATABASE $DB" >/dev/null

# ---- a gateway in front of it ------------------------------------------------------------------
mkdir -p "$WORK/gw"
cat > "$WORK/gw/gatehouse.yaml" <<EOF
data_dir: $WORK/gw/data
listen: { api: 127.0.0.1:0, postgres: 127.0.0.1:0 }
log_level: warn
connections:
  - { name: $DB, protocol: postgres, address: 127.0.0.1:$PG_PORT, database: $DB, user: postgres }
EOF
node "$REPO/cli/bin/gatehouse.js" serve --config "$WORK/gw/gatehouse.yaml" >"$WORK/gw/out.log" 2>&1 &
GW_PID=$!
for _ in $(seq 1 400); do [ -f "$WORK/gw/data/run.json" ] && break; sleep 0.05; done
GW_PORT="$(node -p "const l=require('$WORK/gw/data/run.json').listeners.postgres; l.slice(l.lastIndexOf(':')+1)")"
# The counterpart of the superuser the direct run uses: a writer, DBA and gatehouse admin (the
# suite creates tables and types, writes, copies, and cancels or terminates its own backends).
TOKEN="$(node "$REPO/cli/bin/gatehouse.js" token create --config "$WORK/gw/gatehouse.yaml" --subject user:nodepg \
  --group writers --group dba --group gatehouse-admins --ttl 2h)"

# ---- the suite, file by file -------------------------------------------------------------------
run_file() { # target file → prints "pass|fail seconds"
  local target="$1" file="$2" port password t0 t1 rc
  if [ "$target" = direct ]; then port="$PG_PORT"; password=""; else port="$GW_PORT"; password="$TOKEN"; fi
  t0=$(date +%s.%N)
  set +e
  # TEST_TIMEOUT: the suite's own per-test limit (5 s by default), raised for loaded machines.
  (cd "$PKG" && TEST_TIMEOUT="${TEST_TIMEOUT:-30000}" PGHOST=127.0.0.1 PGPORT="$port" PGUSER=postgres PGDATABASE="$DB" PGPASSWORD="$password" PGSSLMODE=disable \
    timeout "$TIMEOUT_S" node "$file" >"$WORK/last-$target.log" 2>&1)
  rc=$?
  set -e
  t1=$(date +%s.%N)
  if [ "$rc" -eq 0 ]; then printf 'pass %.1f' "$(echo "$t1 - $t0" | bc)"; else printf 'FAIL %.1f' "$(echo "$t1 - $t0" | bc)"; fi
  if [ "$rc" -ne 0 ] && [ -n "${SHOW_FAILURES:-}" ]; then
    { echo "----- $target $file (exit $rc)"; tail -n 30 "$WORK/last-$target.log"; } >&2
  fi
}

mapfile -t FILES < <(cd "$PKG" && find test/integration -name '*-tests.js' | sort)
[ -n "${ONLY:-}" ] && mapfile -t FILES < <(printf '%s\n' "${FILES[@]}" | grep -E "$ONLY")

echo "| file | direct | gateway | direct (s) | gateway (s) |"
echo "|---|---|---|---:|---:|"
ND=0; NG=0; TD=0; TG=0
for f in "${FILES[@]}"; do
  read -r d dt <<<"$(run_file direct "$f")"
  read -r g gt <<<"$(run_file gateway "$f")"
  [ "$d" = pass ] && ND=$((ND + 1))
  [ "$g" = pass ] && NG=$((NG + 1))
  TD=$(echo "$TD + $dt" | bc); TG=$(echo "$TG + $gt" | bc)
  echo "| ${f#test/integration/} | $d | $g | $dt | $gt |"
done
echo
echo "${#FILES[@]} files: $ND pass direct, $NG pass through the gateway; wall time ${TD} s direct, ${TG} s through the gateway"
if grep -q 'internal error in the PostgreSQL proxy' "$WORK/gw/out.log"; then
  echo "the gateway logged an internal error:" >&2
  grep 'internal error' "$WORK/gw/out.log" | head -5 >&2
fi
