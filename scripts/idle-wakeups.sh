#!/bin/sh
# An idle daemon's wake-ups (docs/benchmarks.md, "Idle daemon"):
#
#     scripts/idle-wakeups.sh [ADDONFS] [SECONDS]      (as root: serve mounts)
#
# Starts `ADDONFS serve` (default target/debug/addonfs) on a fresh state directory with its
# mount, waits 2 s for it to settle, then sums the context switches (voluntary + nonvoluntary)
# of all its threads from /proc/PID/task/*/status before and after SECONDS (default 5) of
# idleness, and prints the difference. Nothing talks to the daemon meanwhile.
set -eu
bin=${1:-target/debug/addonfs}
secs=${2:-5}
work=$(mktemp -d /var/tmp/addonfs-idle-XXXXXX)
"$bin" serve --listen 127.0.0.1:0 --state-dir "$work/state" --mount "$work/mnt" \
    >"$work/out" 2>&1 &
pid=$!
trap 'set +e; kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; umount -l "$work/mnt" 2>/dev/null; rm -rf "$work"' EXIT
sleep 2
kill -0 "$pid" || { cat "$work/out"; exit 1; }
switches() {
    cat /proc/"$pid"/task/*/status |
        awk '/^(voluntary|nonvoluntary)_ctxt_switches/ { n += $2 } END { print n }'
}
threads=$(ls /proc/"$pid"/task | wc -l)
before=$(switches)
sleep "$secs"
after=$(switches)
echo "$bin: $((after - before)) context switches in ${secs} s over $threads threads"
