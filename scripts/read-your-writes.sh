#!/bin/bash
# Read-your-writes from outside (docs/benchmarks.md, "Idle daemon"): starts `ADDONFS serve`
# (default target/debug/addonfs) with its mount on a scratch state directory, then N times (default
# 50) uploads a fresh add-on with curl and, at once after the answer, looks for it in the
# mount's /.addons.json; prints how many were missing. As root (serve mounts).
#
#     scripts/read-your-writes.sh [ADDONFS] [N]
set -eu
bin=${1:-target/debug/addonfs}; n=${2:-50}
w=$(mktemp -d /var/tmp/ryw-XXXX)
"$bin" serve --listen 127.0.0.1:0 --state-dir $w/st --mount $w/mnt > $w/out 2>&1 &
pid=$!
sleep 1.5
url=$(grep -o 'http://[0-9.:]*' $w/out | head -1); key=$(head -1 $w/st/api-keys)
miss=0
for i in $(seq 1 $n); do
  mkdir -p $w/a$i/tree/opt/r$i && echo $i > $w/a$i/tree/opt/r$i/f
  echo "{\"name\": \"r$i\", \"spec\": {\"paths\": [\"/opt/r$i\"]}}" > $w/a$i/metadata.json
  tar -czf $w/a$i/addon.tar.gz -C $w/a$i/tree opt
  (cd $w/a$i && curl -sS -o /dev/null $url/api/v2/runtimeaddons/custom -F metadata=@metadata.json -F tarball=@addon.tar.gz -H "Authorization: Bearer $key")
  grep -q "custom-addon-r$i\"" $w/mnt/.addons.json || miss=$((miss+1))
done
echo "$bin: $miss of $n uploads not in .addons.json right after the answer"
kill -TERM $pid; wait $pid || true; umount -l $w/mnt 2>/dev/null || true; rm -rf $w
