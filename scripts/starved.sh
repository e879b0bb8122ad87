#!/usr/bin/env bash
# Runs a command with only part of the machine's CPU, as on a virtual machine whose host takes the rest: the command
# and everything it starts share CPUS cores' worth of time in a CPU cgroup (the kernel's CFS quota), and stop for the
# rest of each 100 ms period once it is used up. Timing tests that pass only on an idle machine fail here.
#
#   sudo scripts/starved.sh 0.5 deno test -A --no-check tests/e2e/     # half a core for the e2e suite
#
# Needs root and the cgroup v1 CPU controller (/sys/fs/cgroup/cpu), which the project's machines have.
set -euo pipefail

if [ $# -lt 2 ] || ! [[ $1 =~ ^[0-9]*\.?[0-9]+$ ]]; then
  echo "usage: scripts/starved.sh CPUS COMMAND [ARG...]   (CPUS: cores' worth of CPU time, e.g. 0.5)" >&2
  exit 2
fi
cpus=$1
shift
period=100000
quota=$(awk -v c="$cpus" -v p="$period" 'BEGIN { printf "%d", c * p }')
if [ "$quota" -lt 1000 ]; then
  echo "starved.sh: $cpus cores is too little (at least 0.01)" >&2
  exit 2
fi
root=/sys/fs/cgroup/cpu
if [ ! -w "$root" ] || [ ! -f "$root/cpu.cfs_quota_us" ]; then
  echo "starved.sh: needs root and the cgroup v1 CPU controller at $root" >&2
  exit 1
fi

group=$root/shoal-starved-$$
mkdir "$group"
# The group can be removed once every process in it has ended; a straggler the command left running keeps it, and is
# named rather than killed (it is not ours to end).
cleanup() {
  if ! rmdir "$group" 2>/dev/null; then
    echo "starved.sh: processes still in $group: $(tr '\n' ' ' < "$group/cgroup.procs")" >&2
  fi
}
trap cleanup EXIT
echo "$period" > "$group/cpu.cfs_period_us"
echo "$quota" > "$group/cpu.cfs_quota_us"
echo "starved.sh: $cpus cores' worth of CPU for: $*" >&2
status=0
# The child joins the group before it runs the command, so all it starts is in the group too.
bash -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' starved "$group" "$@" || status=$?
awk '{ v[$1] = $2 } END { printf "starved.sh: stopped in %d of %d periods, %.1f s in all\n", v["nr_throttled"], v["nr_periods"], v["throttled_time"] / 1e9 }' "$group/cpu.stat" >&2
exit "$status"
