//! Side-by-side measurements of the archive engine on a real corpus (by default a tar.gz of
//! this machine's Python installation, ~740 MB in ~46k files), printed as a Markdown table
//! for `docs/benchmarks.md`.
//!
//! `cargo bench --bench corpus [-- ARCHIVE]`
//!
//! * index build time against single-threaded `gzip -dc > /dev/null` of the same file (what a
//!   user would otherwise run) and against one thread of the same inflate library (zlib-rs,
//!   through flate2) draining the file: the second ratio is the pipeline's own cost (median of
//!   3 each, warm page cache, run alternately);
//! * for spans of 1, 2 and 4 MiB: index size (and its share of the uncompressed size), index
//!   load time, and random 4 KiB reads with the chunk cache cold (a fresh cache per read) but
//!   the archive in the page cache, the reader opened before the clock starts: median, p90,
//!   p99;
//! * as root, for the 1 MiB span: truly cold random 4 KiB reads, the page cache dropped
//!   (`sync; echo 3 > /proc/sys/vm/drop_caches`) before each, the read alone timed (the index
//!   in memory, the reader open): median, p90, p99 of 100.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use addonfs::archive::{EntryKind, ScanOptions};
use addonfs::index::{Index, Ino, ROOT_INO};
use addonfs::reader::{ArchiveReader, ChunkCache};

fn corpus() -> PathBuf {
    if let Some(arg) = std::env::args().skip(1).find(|a| !a.starts_with("--")) {
        return PathBuf::from(arg);
    }
    let dir = PathBuf::from("/var/tmp/addonfs-bench");
    let archive = dir.join("python.tar.gz");
    if !archive.exists() {
        std::fs::create_dir_all(&dir).expect("mkdir");
        let prefix = Command::new("python3")
            .args(["-c", "import sys; print(sys.prefix)"])
            .output()
            .expect("python3");
        let prefix = String::from_utf8_lossy(&prefix.stdout).trim().to_string();
        eprintln!("making the corpus: tar -czf {} -C {prefix} .", archive.display());
        // A name of this run's own: two runs never write the same partial file.
        let part = tempfile::Builder::new()
            .prefix("python.tar.gz.")
            .suffix(".part")
            .tempfile_in(&dir)
            .expect("temporary file");
        let ok = Command::new("tar")
            .arg("-czf")
            .arg(part.path())
            .arg("-C")
            .arg(&prefix)
            .arg(".")
            .status();
        assert!(ok.is_ok_and(|s| s.success()), "tar failed");
        part.persist(&archive).expect("rename");
    }
    archive
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn pct(v: &[Duration], p: f64) -> Duration {
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn files(index: &Index) -> Vec<(Ino, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![ROOT_INO];
    while let Some(dir) = stack.pop() {
        for (_, child) in index.children(dir, 0) {
            match index.attr(child) {
                Some(a) if a.kind == EntryKind::Dir => stack.push(child),
                Some(a) if a.kind == EntryKind::File && a.size >= 4096 => out.push((child, a.size)),
                _ => {}
            }
        }
    }
    out.sort_unstable();
    out
}

fn main() {
    let archive = corpus();
    let size = std::fs::metadata(&archive).expect("archive").len();
    println!("corpus: {} ({:.1} MB)", archive.display(), size as f64 / 1e6);

    let gzip_once = || {
        let t = Instant::now();
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("gzip -dc {} > /dev/null", archive.display()))
            .status()
            .expect("gzip");
        assert!(ok.success());
        t.elapsed()
    };
    let build_once = |span: u64| {
        let t = Instant::now();
        let index = addonfs::index::open::build(
            &archive,
            &ScanOptions { span, ..Default::default() },
            None,
        )
        .expect("build");
        (t.elapsed(), index)
    };
    // One thread of the inflate library the indexer uses (zlib-rs; flate2 is built on it
    // here), draining the file: what inflating alone costs.
    let drain_once = || {
        let t = Instant::now();
        let file = std::fs::File::open(&archive).expect("open");
        let mut dec =
            flate2::read::MultiGzDecoder::new(std::io::BufReader::with_capacity(1 << 20, file));
        let n = std::io::copy(&mut dec, &mut std::io::sink()).expect("inflate");
        (t.elapsed(), n)
    };
    let (mut gz, mut drain, mut ours) = (Vec::new(), Vec::new(), Vec::new());
    let mut index = None;
    for _ in 0..3 {
        gz.push(gzip_once());
        let (t, _) = drain_once();
        drain.push(t);
        let (t, i) = build_once(1 << 20);
        ours.push(t);
        index = Some(i);
    }
    let index = index.expect("built");
    let (g, d, o) = (median(gz), median(drain), median(ours));
    let uncompressed = index.stats().uncompressed_size;
    let mbs = |t: Duration| uncompressed as f64 / 1e6 / t.as_secs_f64();
    println!();
    println!("| step (median of 3, alternating) | time | throughput (uncompressed) |");
    println!("|---|---|---|");
    println!(
        "| `gzip -dc > /dev/null` (one thread) | {:.2} s | {:.0} MB/s |",
        g.as_secs_f64(),
        mbs(g)
    );
    println!(
        "| zlib-rs (flate2) draining the file, one thread | {:.2} s | {:.0} MB/s |",
        d.as_secs_f64(),
        mbs(d)
    );
    println!(
        "| addonfs index build (1 MiB span) | {:.2} s | {:.0} MB/s |",
        o.as_secs_f64(),
        mbs(o)
    );
    println!(
        "| ratios | {:.2}x faster than gzip -dc; {:.2}x the time of the one-thread drain | |",
        g.as_secs_f64() / o.as_secs_f64(),
        o.as_secs_f64() / d.as_secs_f64()
    );
    println!();
    println!(
        "entries: {} inodes; uncompressed {:.1} MB",
        index.stats().inodes,
        uncompressed as f64 / 1e6
    );
    println!();
    println!("| span | points | index size | % of uncompressed | load (median of 20) | chunk-cache-cold 4 KiB read (page cache warm) median | p90 | p99 |");
    println!("|---|---|---|---|---|---|---|---|");
    drop(index);
    for span in [1u64 << 20, 2 << 20, 4 << 20] {
        let (_, index) = build_once(span);
        let stats = index.stats();
        let dir = tempfile::tempdir().expect("tempdir");
        let path: &Path = &dir.path().join("index");
        index.write(path).expect("write");
        let loads: Vec<Duration> = (0..20)
            .map(|_| {
                let t = Instant::now();
                let i = Index::load(path).expect("load");
                std::hint::black_box(i.stats());
                t.elapsed()
            })
            .collect();
        let index = Arc::new(index);
        let files = files(&index);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut lat = Vec::new();
        let mut buf = vec![0u8; 4096];
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (ino, len) = files[(x % files.len() as u64) as usize];
            let offset = (x >> 20) % (len - 4095);
            let cache = Arc::new(ChunkCache::new(8 << 20));
            let reader = ArchiveReader::open(&archive, Arc::clone(&index), cache).expect("reader");
            let t = Instant::now();
            reader.read(ino, offset, &mut buf).expect("read");
            lat.push(t.elapsed());
        }
        lat.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "| {} MiB | {} | {:.2} MB | {:.2}% | {:.2} ms | {:.3} ms | {:.3} ms | {:.3} ms |",
            span >> 20,
            stats.points,
            stats.bytes as f64 / 1e6,
            100.0 * stats.bytes as f64 / uncompressed as f64,
            ms(median(loads)),
            ms(pct(&lat, 0.5)),
            ms(pct(&lat, 0.9)),
            ms(pct(&lat, 0.99)),
        );
    }
    truly_cold_reads(&archive);
}

/// Random 4 KiB reads with nothing cached: the page cache is dropped before each (root only),
/// and only the read is timed (the index is in memory and the reader open, as in a running
/// mount). 1 MiB span.
fn truly_cold_reads(archive: &Path) {
    let drop_caches = || {
        Command::new("sh")
            .arg("-c")
            .arg("sync && echo 3 > /proc/sys/vm/drop_caches")
            .status()
            .is_ok_and(|s| s.success())
    };
    println!();
    if !drop_caches() {
        println!("truly cold reads: skipped (dropping the page cache needs root)");
        return;
    }
    let index = Arc::new(
        addonfs::index::open::build(
            archive,
            &ScanOptions { span: 1 << 20, ..Default::default() },
            None,
        )
        .expect("build"),
    );
    let files = files(&index);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut lat = Vec::new();
    let mut buf = vec![0u8; 4096];
    for _ in 0..100 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (ino, len) = files[(x % files.len() as u64) as usize];
        let offset = (x >> 20) % (len - 4095);
        let cache = Arc::new(ChunkCache::new(8 << 20));
        let reader = ArchiveReader::open(archive, Arc::clone(&index), cache).expect("reader");
        assert!(drop_caches(), "drop_caches");
        let t = Instant::now();
        reader.read(ino, offset, &mut buf).expect("read");
        lat.push(t.elapsed());
    }
    lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("| span | truly cold 4 KiB read (page cache dropped before each, read alone) median | p90 | p99 |");
    println!("|---|---|---|---|");
    println!(
        "| 1 MiB | {:.3} ms | {:.3} ms | {:.3} ms |",
        ms(pct(&lat, 0.5)),
        ms(pct(&lat, 0.9)),
        ms(pct(&lat, 0.99))
    );
}
