#!/usr/bin/env bash
# Installs Debian's chromium when /usr/bin/chromium is missing: the dashboard's
# browser test (tests/e2e/dashboard_browser_test.ts) drives it. Needs root or sudo.
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
echo "installing chromium (apt-get) for the dashboard's browser test..." >&2
if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium; } >"$log" 2>&1; then
  tail -n 20 "$log" >&2
  echo "error: cannot install chromium with apt-get (see above); install it (apt-get install -y chromium) and run again" >&2
  exit 1
fi
