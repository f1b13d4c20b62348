#!/usr/bin/env bash
# Peak memory of `addonfs serve` while it indexes uploads of a tar.gz with many empty entries.
#
#   scripts/bench-upload-memory.sh [CONCURRENT] [ENTRIES]      (defaults: 1 and 1000000)
#
# Makes (once, cached in /tmp) a tar.gz of ENTRIES empty files `usr/dNNNN/fNNNNNN` (1000 per
# directory) plus the directories `p1` ... `p9`, each with one file; starts `addonfs serve
# --no-mount` (ADDONFS, default target/release/addonfs) on a scratch state directory; runs
# CONCURRENT uploads of that file at once (upload i registers path `/p<i>`, so none conflict);
# prints each answer's status, then the server's peak RSS (VmHWM) and its RSS afterwards
# (VmRSS). Extra arguments for `serve` can be given in SERVE_ARGS.
set -euo pipefail
n=${1:-1}
entries=${2:-1000000}
bin=$(realpath "${ADDONFS:-target/release/addonfs}")
tarball=/tmp/addonfs-bench-empty-$entries.tar.gz
if [[ ! -s $tarball ]]; then
    python3 - "$tarball" "$entries" <<'PY'
import sys, tarfile
path, entries = sys.argv[1], int(sys.argv[2])
with tarfile.open(path, "w:gz", compresslevel=6, format=tarfile.GNU_FORMAT) as t:
    for i in range(1, 10):
        d = tarfile.TarInfo(f"p{i}"); d.type = tarfile.DIRTYPE; d.mode = 0o755; t.addfile(d)
        t.addfile(tarfile.TarInfo(f"p{i}/file"))
    for i in range(entries):
        if i % 1000 == 0:
            d = tarfile.TarInfo(f"usr/d{i // 1000:04d}"); d.type = tarfile.DIRTYPE
            d.mode = 0o755; t.addfile(d)
        t.addfile(tarfile.TarInfo(f"usr/d{i // 1000:04d}/f{i:06d}"))
PY
fi
work=$(mktemp -d /tmp/addonfs-bench-mem.XXXXXX)
key=bench-key
cleanup() {
    [[ -n "${server:-}" ]] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
# shellcheck disable=SC2086
ADDONFS_API_KEY=$key "$bin" serve --no-mount --listen 127.0.0.1:0 --state-dir "$work/state" \
    ${SERVE_ARGS:-} > "$work/serve.out" 2> "$work/serve.err" &
server=$!
for _ in $(seq 100); do grep -q http:// "$work/serve.out" 2>/dev/null && break; sleep 0.05; done
url=$(grep -o 'http://[0-9.:]*' "$work/serve.out")
echo "before: $(grep VmRSS /proc/$server/status | awk '{print $2, $3}')"
pids=()
for i in $(seq "$n"); do
    printf '{"name": "mem-%d", "spec": {"paths": ["/p%d"]}}' "$i" "$i" > "$work/metadata-$i.json"
    (cd "$work" && curl -sS -o "$work/reply-$i.json" -w "upload $i: %{http_code}\n" \
        "$url/api/v2/runtimeaddons/custom" -F "metadata=@metadata-$i.json" -F "tarball=@$tarball" \
        -H "Authorization: Bearer $key") &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
for i in $(seq "$n"); do head -c 200 "$work/reply-$i.json"; echo; done
sleep 1
echo "entries $entries, concurrent $n"
echo "server peak RSS (VmHWM): $(grep VmHWM /proc/$server/status | awk '{print $2, $3}')"
echo "server RSS afterwards (VmRSS): $(grep VmRSS /proc/$server/status | awk '{print $2, $3}')"
