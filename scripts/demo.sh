#!/usr/bin/env bash
# The demo command of the README: installs the pinned Deno (npm), builds the
# native SHA-256 library where a C compiler is there, then runs a
# tracker, two peers sharing generated files, and a client that downloads one
# and checks it (scripts/demo.ts).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
deno_bin="$(./scripts/install_deno.sh)"
export PATH="$(dirname "$deno_bin"):$PATH" RUST_BACKTRACE=0
deno install --frozen
# Optional: without a C compiler, downloads hash in WebAssembly instead (lib/chunk_hasher.ts).
deno task native || echo "note: no native SHA-256 library; downloads hash in WebAssembly instead" >&2
exec deno task demo "$@"
