#!/usr/bin/env bash
# Usage: install_debian.sh COMMAND PACKAGE WHY
# Installs Debian's PACKAGE with apt-get when COMMAND is not on the PATH; WHY
# says what needs it. Needs root or sudo. test.sh uses it for chromium (the
# dashboard's browser test drives it) and gcc (`deno task native` builds the
# native SHA-256 library with it).
set -euo pipefail
command="$1" package="$2" why="$3"
command -v "$command" >/dev/null && exit 0
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
echo "installing $package (apt-get) for $why..." >&2
if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$package"; } >"$log" 2>&1; then
  tail -n 20 "$log" >&2
  echo "error: cannot install $package with apt-get (see above); install it (apt-get install -y $package) and run again" >&2
  exit 1
fi
