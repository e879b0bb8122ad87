#!/usr/bin/env bash
# Installs the pinned Deno from the npm registry into .tools/deno (ignored by git).
# Kept out of a root package.json on purpose: one there would switch Deno's
# nodeModulesDir default to "manual". Prints the path of the deno binary.
set -euo pipefail
DENO_VERSION="2.9.6"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="$root/.tools/deno"
bin="$prefix/node_modules/.bin/deno"
if [ ! -x "$bin" ] || [ "$("$bin" --version 2>/dev/null | head -n1 | cut -d' ' -f2)" != "$DENO_VERSION" ]; then
  npm install --silent --prefix "$prefix" --no-save --no-package-lock --no-audit --no-fund "deno@$DENO_VERSION" >&2
fi
echo "$bin"
