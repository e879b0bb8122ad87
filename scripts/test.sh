#!/usr/bin/env bash
# The test command of the README: installs the pinned Deno (npm), Chromium and
# a C compiler (Debian, when missing) and the locked dependencies, builds the
# native SHA-256 library (deno task native, in deno task test), runs fmt check,
# lint, type check and every test with the op/resource sanitizers; ends with
# a plain `tests: N passed, N failed` line.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
deno_bin="$(./scripts/install_deno.sh)" || { echo "cannot install deno from npm" >&2; exit 1; }
./scripts/install_debian.sh chromium chromium "the dashboard's browser test" || exit 1
./scripts/install_debian.sh "${CC:-cc}" gcc "the native SHA-256 library (deno task native)" || exit 1
export PATH="$(dirname "$deno_bin"):$PATH" NO_COLOR=1 RUST_BACKTRACE=0
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
deno install --frozen && deno task ci 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
passed=0 failed=0
while read -r p f; do
  passed=$((passed + p)) failed=$((failed + f))
done < <(sed -nE 's/^(ok|FAILED) \| ([0-9]+) passed.*\| ([0-9]+) failed.*/\2 \3/p' "$log")
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi # fmt, lint or type check failed
echo "tests: $passed passed, $failed failed"
# Ignored tests are ones that could not run here (the compiled binaries where deno compile cannot build): say so.
ignored=0
while read -r i; do ignored=$((ignored + i)); done < <(sed -nE 's/^(ok|FAILED) \|.*\| ([0-9]+) ignored.*/\2/p' "$log")
if [ "$ignored" -gt 0 ]; then
  echo "not run: ${ignored} test(s), named here:"
  grep -E '\.\.\. ignored' "$log" | sed 's/ \.\.\. ignored.*//; s/^/  /'
fi
exit "$status"
