#!/usr/bin/env python3
"""Cold start of attach binaries, side by side (docs/benchmarks.md, "Startup latency").

    scripts/bench-attach-start.py STATE_DIR BINARY... [--rounds N]   (as root)

Starts `addonfs serve` over STATE_DIR (a store holding at least one enabled add-on, e.g.
/var/tmp/addonfs-bench/startup/1M/state made by `addonfs bench startup`), then for N rounds
(default 15) runs each BINARY as `BINARY --mount M --root R` into a fresh root, in turn, after
`sync; echo 3 > /proc/sys/vm/drop_caches`, timing spawn to exit. Prints each binary's median,
min and max in ms. ADDONFS: the addonfs binary (default target/release/addonfs).
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

args = sys.argv[1:]
rounds = 15
if "--rounds" in args:
    i = args.index("--rounds")
    rounds = int(args[i + 1])
    del args[i : i + 2]
if len(args) < 2 or os.geteuid() != 0:
    sys.exit(__doc__)
state, binaries = args[0], args[1:]
addonfs = os.environ.get("ADDONFS", os.path.join(os.path.dirname(__file__), "../target/release/addonfs"))
work = tempfile.mkdtemp(prefix="addonfs-attach-start-", dir="/var/tmp")
mnt, root = os.path.join(work, "mnt"), os.path.join(work, "root")
os.mkdir(mnt)
daemon = subprocess.Popen(
    [addonfs, "serve", "--state-dir", state, "--mount", mnt, "--listen", "127.0.0.1:0"],
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
try:
    deadline = time.time() + 30
    while not os.path.exists(os.path.join(mnt, ".addons.json")):
        if daemon.poll() is not None or time.time() > deadline:
            sys.exit(f"addonfs serve did not mount {mnt}")
        time.sleep(0.01)
    times = {b: [] for b in binaries}
    for _ in range(rounds):
        for b in binaries:
            shutil.rmtree(root, ignore_errors=True)
            os.mkdir(root)
            os.system("sync; echo 3 > /proc/sys/vm/drop_caches")
            start = time.perf_counter()
            subprocess.run([b, "--mount", mnt, "--root", root], stdout=subprocess.DEVNULL, check=True)
            times[b].append((time.perf_counter() - start) * 1e3)
    for b in binaries:
        t = times[b]
        print(f"{b}: median {statistics.median(t):.2f} ms, min {min(t):.2f}, max {max(t):.2f} ({rounds} rounds)")
finally:
    daemon.terminate()
    daemon.wait()
    shutil.rmtree(work, ignore_errors=True)
