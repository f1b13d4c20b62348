#!/usr/bin/env python3
"""Concurrent random reads through an `addonfs mount`: reads per second with many reader
threads, the daemon serving with 1 request thread and with 4, side by side.

    scripts/bench-concurrent-reads.py [--archive A] [--rounds 3] [--seconds 3] [--readers 32]
                                      [--addonfs BIN]            (as root: it mounts)

The speed half of `tests/mount.rs`'s `concurrent_random_reads_are_exact` (which checks the
bytes and that reads overlap, not how many are done in a given time). Without `--archive` it
packs the test's corpus (12 files of 0.1 to 3.3 MB, noise and text, `tar | gzip -6`) in a
fresh temporary directory. The mount uses the test's options (`--span 64K --cache-size 512K`,
a cache far smaller than the data). Half the readers use O_DIRECT (every read reaches the
daemon: those figures are the daemon's), half the page cache; each read is 4 KiB-aligned, up to 300 KB, at a random offset of
a random file. Rounds alternate the daemon's thread counts; the median and the spread of each
are printed. Numbers only: nothing is asserted.
"""

import argparse
import mmap
import os
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def default_binary():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    for profile in ("release", "debug"):
        path = os.path.join(target, profile, "addonfs")
        if os.path.exists(path):
            return path
    sys.exit("no addonfs binary: cargo build --release, or --addonfs BIN")


def make_corpus(work):
    """The test's 12 files, packed with GNU tar and gzip -6."""
    src = os.path.join(work, "src")
    for i in range(12):
        d = os.path.join(src, f"dir{i % 3}")
        os.makedirs(d, exist_ok=True)
        n = 100_000 + i * 290_000
        rng = random.Random(i)
        if i % 2 == 0:
            data = rng.randbytes(n)
        else:
            words = [b"import", b"def", b"return", b"self", b"value", b"addon", b"path", b"\n"]
            out = bytearray()
            while len(out) < n:
                out += rng.choice(words) + b" "
            data = bytes(out[:n])
        with open(os.path.join(d, f"f{i}"), "wb") as f:
            f.write(data)
    archive = os.path.join(work, "c.tar.gz")
    subprocess.run(f"tar -cf - -C {src} . | gzip -6 > {archive}", shell=True, check=True)
    return archive


def mounted(path):
    with open("/proc/self/mountinfo") as f:
        return any(line.split(" ")[4] == path for line in f)


class Mount:
    def __init__(self, binary, archive, threads, work):
        self.mnt = tempfile.mkdtemp(prefix="mnt.", dir=work)
        self.log = open(os.path.join(work, f"mount-{threads}.log"), "ab")
        self.proc = subprocess.Popen(
            [binary, "--log-level", "info", "mount", archive, self.mnt, "--span", "64K",
             "--cache-size", "512K", "--threads", str(threads)],
            stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 60
        while not mounted(self.mnt):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"addonfs mount did not mount (see {self.log.name})")
            time.sleep(0.01)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        if mounted(self.mnt):
            subprocess.run(["umount", "-l", self.mnt], check=False)
        os.rmdir(self.mnt)
        self.log.close()


def files_under(root):
    out = []
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            size = os.lstat(p).st_size
            if size >= 8192 and os.path.isfile(p):
                out.append((p, size))
    return sorted(out)


def run_readers(root, readers, seconds):
    """Returns {"direct": (reads, bytes), "cached": (reads, bytes)} done by `readers` threads
    in `seconds` (even-numbered threads use O_DIRECT)."""
    files = files_under(root)
    deadline = time.monotonic() + seconds
    counts = [(0, 0)] * readers

    def reader(t):
        rng = random.Random(1000 + t)
        direct = t % 2 == 0
        flags = os.O_RDONLY | (os.O_DIRECT if direct else 0)
        fds = [os.open(p, flags) for p, _ in files]
        buf = mmap.mmap(-1, 300 * 1024)  # page-aligned, as O_DIRECT wants
        reads = done = 0
        while time.monotonic() < deadline:
            k = rng.randrange(len(files))
            size = files[k][1]
            offset = rng.randrange(0, size) & ~4095
            length = max(4096, rng.randrange(0, 300_000) & ~4095)
            view = memoryview(buf)[:length]
            done += os.preadv(fds[k], [view], offset)
            view.release()
            reads += 1
        for fd in fds:
            os.close(fd)
        buf.close()
        counts[t] = (reads, done)

    threads = [threading.Thread(target=reader, args=(t,)) for t in range(readers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    total = {}
    for kind, parity in (("direct", 0), ("cached", 1)):
        mine = [c for t, c in enumerate(counts) if t % 2 == parity]
        total[kind] = (sum(c[0] for c in mine), sum(c[1] for c in mine))
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--archive")
    ap.add_argument("--addonfs", default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--readers", type=int, default=32)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (it mounts)")
    if args.rounds < 3:
        sys.exit("--rounds must be at least 3 (a median and a spread)")
    binary = args.addonfs or default_binary()
    with tempfile.TemporaryDirectory(prefix="addonfs-bench-reads.", dir="/var/tmp") as work:
        archive = args.archive or make_corpus(work)
        results = {1: [], 4: []}
        for r in range(args.rounds):
            order = [1, 4] if r % 2 == 0 else [4, 1]
            for threads in order:
                m = Mount(binary, archive, threads, work)
                try:
                    got = run_readers(m.mnt, args.readers, args.seconds)
                finally:
                    m.stop()
                rates = {k: (n / args.seconds, b / args.seconds / 1e6) for k, (n, b) in got.items()}
                results[threads].append(rates)
                print(f"round {r + 1}, daemon threads {threads}: "
                      f"O_DIRECT {rates['direct'][0]:.0f} reads/s ({rates['direct'][1]:.1f} MB/s), "
                      f"page cache {rates['cached'][0]:.0f} reads/s", file=sys.stderr)
        print(f"{args.readers} reader threads (half O_DIRECT), {args.seconds:g} s per run, "
              f"{args.rounds} rounds alternating; binary {binary}")
        print()
        print("| daemon threads | O_DIRECT reads/s (median, min–max) | O_DIRECT MB/s | "
              "page-cache reads/s (median) |")
        print("|---|---|---|---|")
        for threads, runs in results.items():
            direct = [x["direct"][0] for x in runs]
            mbs = [x["direct"][1] for x in runs]
            cached = [x["cached"][0] for x in runs]
            print(f"| {threads} | {statistics.median(direct):.0f} ({min(direct):.0f}–{max(direct):.0f})"
                  f" | {statistics.median(mbs):.1f} | {statistics.median(cached):.0f} |")


if __name__ == "__main__":
    main()
