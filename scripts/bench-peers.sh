#!/usr/bin/env bash
# Peer benchmark of the FUSE mount: addonfs against ratarmount and archivemount (each when
# installed), side by side on the same tar.gz of a real tree, plus the extracted tree on the
# local file system for reference. Prints a Markdown table (see docs/benchmarks.md, "Peers").
#
#   scripts/bench-peers.sh [ARCHIVE]      (as root: it mounts and drops the page cache)
#
# ARCHIVE defaults to /var/tmp/addonfs-bench/python.tar.gz, made from this machine's Python
# installation if missing (~190 MB, ~46k files). Peers: `pip install ratarmount`,
# `apt-get install -y archivemount`. Environment: ADDONFS (binary; default: release build),
# ROUNDS (samples per figure, default 3, at least 3), WORK (scratch directory; default a new
# one under /var/tmp/addonfs-bench, removed at the end unless KEEP=1), READ_TIMEOUT (seconds
# for "read everything", default 150), PEERS (the peers to run, default "ratarmount
# archivemount", each when installed; PEERS= runs addonfs and ext4 alone), DROP_CACHES=0
# (smoke tests only: figures are then not cold).
#
# The tools alternate: each round measures every tool once (addonfs, the peers, ext4), the
# order rotating from round to round, so a change in the machine's load hits them alike. Each
# cell is the median of the rounds with the spread (min-max) beside it.
#
# Every "cold" figure drops the page cache (sync; echo 3 > /proc/sys/vm/drop_caches) and
# remounts first. Times are wall clock, measured from outside, including the process start.
set -eu

ARCHIVE="${1:-/var/tmp/addonfs-bench/python.tar.gz}"
READ_TIMEOUT="${READ_TIMEOUT:-150}"
ROUNDS="${ROUNDS:-3}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

[[ $EUID -eq 0 ]] || { echo "run as root (mounts, drop_caches)" >&2; exit 1; }
((ROUNDS >= 3)) || { echo "ROUNDS must be at least 3 (a median and a spread)" >&2; exit 1; }

if [[ ! -f "$ARCHIVE" ]]; then
  mkdir -p "$(dirname "$ARCHIVE")"
  prefix="$(python3 -c 'import sys; print(sys.prefix)')"
  echo "making $ARCHIVE from $prefix ..." >&2
  part="$(mktemp "$ARCHIVE.XXXXXX")"
  tar -czf "$part" -C "$prefix" . && mv "$part" "$ARCHIVE"
fi

if [[ -z "${ADDONFS:-}" ]]; then
  echo "building addonfs (release) ..." >&2
  (cd "$ROOT" && cargo build --release --quiet --bin addonfs)
  ADDONFS="${CARGO_TARGET_DIR:-$ROOT/target}/release/addonfs"
fi

# A work directory of this run's own: two runs never share a mount point, copy or index.
if [[ -z "${WORK:-}" ]]; then
  mkdir -p /var/tmp/addonfs-bench
  WORK="$(mktemp -d /var/tmp/addonfs-bench/peers.XXXXXX)"
  [[ "${KEEP:-0}" == 1 ]] || CLEAN_WORK=1
else
  mkdir -p "$WORK"
fi
MNT="$(mktemp -d "$WORK/mnt.XXXXXX")"
EXTRACTED="$(mktemp -d "$WORK/extracted.XXXXXX")"
PID=""
cleanup() {
  if [[ -n "$PID" ]]; then umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true; fi
  if [[ -n "${CLEAN_WORK:-}" ]]; then rm -rf "$WORK"; else rm -rf "$EXTRACTED"; rmdir "$MNT" 2>/dev/null || true; fi
}
trap cleanup EXIT
echo "work directory: $WORK" >&2

# Copies of the archive per tool, so each keeps its own index beside it.
declare -A COPY
for tool in addonfs addonfs-before ratarmount archivemount; do
  COPY[$tool]="$(mktemp "$WORK/$tool.XXXXXX.tar.gz")"
  cp "$ARCHIVE" "${COPY[$tool]}"
done

echo "extracting the reference tree ..." >&2
tar -xzf "$ARCHIVE" -C "$EXTRACTED"
FILES="$(find "$EXTRACTED" -type f | wc -l)"
# The probe answered once mounted: the first top-level name. The small file: the deepest
# regular file under 4 KiB (first in name order among those).
PROBE="$(ls -A "$EXTRACTED" | head -n 1)"
SMALL="$(cd "$EXTRACTED" && find . -type f -size -4k -printf '%d %p\n' | sort -k1,1nr -k2 | head -n 1 | cut -d' ' -f2-)"
SMALL="${SMALL#./}"

now() { echo "${EPOCHREALTIME/./}"; }  # microseconds

drop_caches() { [[ "${DROP_CACHES:-1}" == 0 ]] || { sync; echo 3 > /proc/sys/vm/drop_caches; }; }

start_mount() {  # tool
  local tool="$1" archive="${COPY[$1]}"
  case "$tool" in
    addonfs) "$ADDONFS" mount "$archive" "$MNT" >/dev/null 2>>"$WORK/addonfs.log" & ;;
    addonfs-before) "$ADDONFS_BEFORE" mount "$archive" "$MNT" >/dev/null 2>>"$WORK/addonfs-before.log" & ;;
    ratarmount) ratarmount -f --index-file "$archive.index.sqlite" "$archive" "$MNT" >>"$WORK/ratarmount.log" 2>&1 & ;;
    archivemount) archivemount -f -o ro,readonly "$archive" "$MNT" >>"$WORK/archivemount.log" 2>&1 & ;;
  esac
  PID=$!
}

# Mounts (in this shell, so $PID is the daemon) and sets T to the microseconds until the
# probe answers a stat.
T=""
timed_mount() {  # tool
  local t0 t1 spins=0
  t0=$(now)
  start_mount "$1"
  until [[ -e "$MNT/$PROBE" ]]; do
    if ! kill -0 "$PID" 2>/dev/null; then echo "$1 exited before mounting" >&2; exit 1; fi
    spins=$((spins + 1))
    ((spins < 200000)) || sleep 0.01
  done
  t1=$(now)
  T=$((t1 - t0))
}

unmount() {
  umount "$MNT" 2>/dev/null || umount -l "$MNT"
  wait "$PID" 2>/dev/null || true
  PID=""
}

remove_index() {  # tool
  case "$1" in
    addonfs|addonfs-before) rm -f "${COPY[$1]}.addonfs-index" ;;
    ratarmount) rm -f "${COPY[$1]}.index.sqlite" ;;
    archivemount) ;;
  esac
}

ms() { awk -v us="$1" 'BEGIN { printf (us < 10000 ? "%.2f" : "%.1f"), us / 1000 }'; }
secs() { awk -v us="$1" 'BEGIN { printf "%.2f", us / 1000000 }'; }

# Runs a command in $1 (a directory) and prints microseconds, "timeout:LIMIT" if it ran out,
# or "failed:MICROSECONDS" if it failed (read errors, say).
timed() {  # dir timeout cmd...
  local dir="$1" limit="$2" t0 t1 rc=0
  shift 2
  t0=$(now)
  (cd "$dir" && timeout "$limit" bash -o pipefail -c "$*" >/dev/null 2>>"$WORK/errors.log") || rc=$?
  t1=$(now)
  if ((rc == 124)); then
    echo "timeout:$limit"
  elif ((rc != 0)); then
    echo "failed:$((t1 - t0))"
  else
    echo $((t1 - t0))
  fi
}

small_read() {  # root
  python3 - "$1/$SMALL" <<'EOF'
import sys, time
t = time.perf_counter()
with open(sys.argv[1], "rb") as f:
    f.read()
print(int((time.perf_counter() - t) * 1e6))
EOF
}

# R[tool,metric]: the samples, space-separated, in round order.
declare -A R
add() { R[$1,$2]="${R[$1,$2]:+${R[$1,$2]} }$3"; }  # tool metric value

measure() {  # tool
  local tool="$1" limit="$READ_TIMEOUT"
  echo "== round $round: $tool" >&2
  remove_index "$tool"
  drop_caches
  timed_mount "$tool"
  add "$tool" first "$T"
  unmount
  timed_mount "$tool"
  add "$tool" mount "$T"
  unmount
  drop_caches
  timed_mount "$tool"
  add "$tool" find "$(timed "$MNT" 600 "find . -type f | wc -l")"
  R[$tool,count]=$(cd "$MNT" && find . -type f | wc -l)
  unmount
  drop_caches
  timed_mount "$tool"
  add "$tool" small "$(small_read "$MNT")"
  unmount
  drop_caches
  timed_mount "$tool"
  add "$tool" readall "$(timed "$MNT" "$limit" "tar -cf - . | wc -c")"
  add "$tool" rss "$(awk '/VmHWM/ { print $2 }' "/proc/$PID/status")"
  unmount
}

measure_ext4() {
  echo "== round $round: ext4 (extracted tree)" >&2
  drop_caches
  add ext4 find "$(timed "$EXTRACTED" 600 "find . -type f | wc -l")"
  drop_caches
  add ext4 small "$(small_read "$EXTRACTED")"
  drop_caches
  add ext4 readall "$(timed "$EXTRACTED" 600 "tar -cf - . | wc -c")"
}

TOOLS=(addonfs)
[[ -z "${ADDONFS_BEFORE:-}" ]] || TOOLS+=(addonfs-before)
for peer in ${PEERS-ratarmount archivemount}; do
  case "$peer" in
    ratarmount) hint="pip install ratarmount" ;;
    archivemount) hint="apt-get install -y archivemount" ;;
    *) echo "unknown peer $peer (ratarmount, archivemount)" >&2; exit 1 ;;
  esac
  command -v "$peer" >/dev/null && TOOLS+=("$peer") || echo "$peer not installed ($hint): skipped" >&2
done
ORDER=("${TOOLS[@]}" ext4)
for ((round = 1; round <= ROUNDS; round++)); do
  # Rotate the order: each tool goes first in some round.
  shift_by=$(((round - 1) % ${#ORDER[@]}))
  for tool in "${ORDER[@]:shift_by}" "${ORDER[@]:0:shift_by}"; do
    if [[ "$tool" == ext4 ]]; then measure_ext4; else measure "$tool"; fi
  done
done
for tool in "${ORDER[@]}"; do
  for metric in first mount find small readall rss; do
    if [[ -n "${R[$tool,$metric]:-}" ]]; then echo "   $tool $metric: ${R[$tool,$metric]}" >&2; fi
  done
done

# The table. A cell: the median of the rounds and the spread (min-max); a timeout or a
# failure in any round is shown as such.
median() { tr ' ' '\n' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
spread() { tr ' ' '\n' | sort -n | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo, hi }'; }
fmt() {  # metric microseconds-or-kB
  case "$1" in
    first|readall|find) secs "$2" ;;
    mount|small) ms "$2" ;;
    rss) echo "$(($2 / 1024))" ;;
  esac
}
unit() { case "$1" in first|readall|find) echo " s" ;; mount|small) echo " ms" ;; rss) echo " MB" ;; esac; }
cell() {  # tool metric -> formatted value
  local v="${R[$1,$2]:-}" lo hi
  case "$v" in
    "") echo "—"; return ;;
    *timeout:*) echo "> $(grep -o 'timeout:[0-9]*' <<<"$v" | head -n 1 | cut -d: -f2) s (timeout)"; return ;;
    *failed:*) echo "$(secs "$(grep -o 'failed:[0-9]*' <<<"$v" | head -n 1 | cut -d: -f2)") s (failed: errors)"; return ;;
  esac
  read -r lo hi <<<"$(spread <<<"$v")"
  echo "$(fmt "$2" "$(median <<<"$v")")$(unit "$2") ($(fmt "$2" "$lo")–$(fmt "$2" "$hi"))"
}
ratio() {  # tool metric: ratarmount / tool (times faster), on medians; for rss: tool / ratarmount
  local v="${R[$1,$2]:-}" r="${R[ratarmount,$2]:-}"
  [[ "$v" =~ ^[0-9\ ]+$ && "$r" =~ ^[0-9\ ]+$ ]] || { echo "—"; return; }
  v="$(median <<<"$v")"
  r="$(median <<<"$r")"
  ((v > 0)) || { echo "—"; return; }
  if [[ "$2" == rss ]]; then
    awk -v a="$v" -v b="$r" 'BEGIN { printf "%.2f× the memory", a / b }'
  else
    awk -v a="$v" -v b="$r" 'BEGIN { if (b >= a) printf "%.1f× faster", b / a; else printf "%.1f× slower", a / b }'
  fi
}

echo
echo "Archive: \`$(basename "$ARCHIVE")\`, $(du -m "$ARCHIVE" | cut -f1) MB, $FILES files;" \
     "small file: \`$SMALL\` ($(stat -c %s "$EXTRACTED/$SMALL") bytes, depth $(($(tr -cd / <<<"$SMALL" | wc -c) + 1)))."
versions="$(basename "$ADDONFS") $("$ADDONFS" --version | cut -d' ' -f2)"
for tool in "${TOOLS[@]:1}"; do
  case "$tool" in
    addonfs-before) versions+=", before: $("$ADDONFS_BEFORE" --version | cut -d' ' -f2) ($ADDONFS_BEFORE)" ;;
    ratarmount) versions+=", $(ratarmount --version 2>/dev/null | head -n 1 | tr -s ' ')" ;;
    archivemount) versions+=", $(archivemount --version 2>&1 | head -n 1)" ;;
  esac
done
echo "Kernel $(uname -r), $(nproc) cores; $versions."
echo "Medians of $ROUNDS rounds, tools alternating; (min–max) beside each."
echo
header="| | addonfs"
sep="|---|---"
for tool in "${TOOLS[@]:1}"; do header+=" | $tool"; sep+="|---"; done
header+=" | ext4 (extracted)"
sep+="|---"
[[ " ${TOOLS[*]} " == *" ratarmount "* ]] && { header+=" | addonfs vs ratarmount"; sep+="|---"; }
[[ " ${TOOLS[*]} " == *" ratarmount "* && -n "${ADDONFS_BEFORE:-}" ]] && { header+=" | before vs ratarmount"; sep+="|---"; }
echo "$header |"
echo "$sep|"
for metric in first mount find small readall rss; do
  case "$metric" in
    first) label="first mount, indexing included" ;;
    mount) label="mount with an existing index" ;;
    find) label="cold \`find -type f \| wc -l\`" ;;
    small) label="cold read of one small deep file" ;;
    readall) label="cold read of every file (\`tar -cf - . \| wc -c\`)" ;;
    rss) label="peak daemon RSS (VmHWM)" ;;
  esac
  row="| $label | $(cell addonfs $metric)"
  for tool in "${TOOLS[@]:1}"; do row+=" | $(cell "$tool" $metric)"; done
  case "$metric" in
    find|small|readall) row+=" | $(cell ext4 $metric)" ;;
    *) row+=" | —" ;;
  esac
  [[ " ${TOOLS[*]} " == *" ratarmount "* ]] && row+=" | $(ratio addonfs $metric)"
  [[ " ${TOOLS[*]} " == *" ratarmount "* && -n "${ADDONFS_BEFORE:-}" ]] && row+=" | $(ratio addonfs-before $metric)"
  echo "$row |"
done
for tool in "${TOOLS[@]}"; do
  [[ "${R[$tool,count]}" == "$FILES" ]] || echo "WARNING: $tool shows ${R[$tool,count]} files, the extracted tree has $FILES" >&2
done
