#!/usr/bin/env bash
# `npm pack` / `npm publish` run this first: the TypeScript build, and the default policy bundle
# compiled to WebAssembly (dist/policies/default.tar.gz with its version beside it), so a gateway
# installed from the tarball runs the default policy without the opa compiler.
# GATEHOUSE_PACK_BUILT=1 skips the build when dist/ is already built (the install test packs a
# copy of the built package).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "${GATEHOUSE_PACK_BUILT:-}" != 1 ]; then npx --no-install tsc -p tsconfig.json; fi
mkdir -p dist/policies
node cli/bin/gatehouse.js policy build policies -o dist/policies/default.tar.gz > dist/policies/default.version
