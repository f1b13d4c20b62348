#!/usr/bin/env bash
# Upload-to-available against `addonfs index` of the same file, side by side, alternating.
#
#   scripts/bench-upload.sh ADDON.tar.gz [ROUNDS]
#
# Starts `addonfs serve --no-mount` (target/release) on a scratch state directory, then for
# each round: `addonfs index --rebuild` of the file (index written to a scratch path), and the
# seed's curl upload of the same file until the 200 answer (each round under a new name; the
# add-on is disabled afterwards so the next one's paths do not conflict). Prints each round and
# the medians and ratio. The file stays in the page cache for both.
set -euo pipefail
archive=$(realpath "$1")
rounds=${2:-5}
bin=${ADDONFS:-target/release/addonfs}
bin=$(realpath "$bin")
work=$(mktemp -d /tmp/addonfs-bench-upload.XXXXXX)
key=bench-key
cleanup() {
    [[ -n "${server:-}" ]] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
ADDONFS_API_KEY=$key "$bin" serve --no-mount --listen 127.0.0.1:0 --state-dir "$work/state" \
    > "$work/serve.out" 2> "$work/serve.err" &
server=$!
for _ in $(seq 100); do grep -q http:// "$work/serve.out" 2>/dev/null && break; sleep 0.05; done
url=$(grep -o 'http://[0-9.:]*' "$work/serve.out")
cat "$archive" > /dev/null # warm the page cache
now() { date +%s.%N; }
idx=() up=()
printf '%5s %10s %10s %7s\n' round index_s upload_s ratio
for i in $(seq "$rounds"); do
    t0=$(now)
    "$bin" index --rebuild --index "$work/x.idx" "$archive" > /dev/null
    t1=$(now)
    printf '{"name": "bench-%d", "spec": {"paths": ["/usr"]}}' "$i" > "$work/metadata.json"
    t2=$(now)
    code=$(cd "$work" && curl -sS -L -o "$work/reply.json" -w '%{http_code}' \
        "$url/api/v2/runtimeaddons/custom" -F metadata=@metadata.json -F "tarball=@$archive" \
        -H "Authorization: Bearer $key")
    t3=$(now)
    [[ "$code" == 200 ]] || { echo "upload failed ($code): $(cat "$work/reply.json")" >&2; exit 1; }
    curl -sS -o /dev/null "$url/api/v2/runtimeaddons:updatestatus" -H "Authorization: Bearer $key" \
        -H 'Content-Type: application/json' -d "{\"status\":\"DISABLED\",\"identifiers\":[\"custom-addon-bench-$i\"]}"
    a=$(echo "$t1 - $t0" | bc -l) b=$(echo "$t3 - $t2" | bc -l)
    idx+=("$a") up+=("$b")
    printf '%5d %10.3f %10.3f %7.3f\n' "$i" "$a" "$b" "$(echo "$b / $a" | bc -l)"
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
mi=$(median "${idx[@]}") mu=$(median "${up[@]}")
printf 'median: index %.3f s, upload %.3f s, upload/index %.3f (%+.0f%%)\n' "$mi" "$mu" \
    "$(echo "$mu / $mi" | bc -l)" "$(echo "($mu / $mi - 1) * 100" | bc -l)"
echo "server peak RSS: $(grep VmHWM /proc/$server/status | awk '{print $2, $3}')"
