//! Side-by-side measurements of the archive engine on a real corpus (by default a tar.gz of
//! this machine's Python installation, ~740 MB in ~46k files), printed as a Markdown table
//! for `docs/benchmarks.md`.
//!
//! `cargo bench --bench corpus [-- ARCHIVE]`
//!
//! * index build time against `gzip -dc > /dev/null` of the same file (median of 3 each, warm
//!   page cache, run alternately);
//! * for spans of 1, 2 and 4 MiB: index size (and its share of the uncompressed size), cold
//!   random 4 KiB reads (a fresh chunk cache per read: median, p90, p99), index load time.

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
        let tmp = dir.join("python.tar.gz.part");
        let ok = Command::new("tar").arg("-czf").arg(&tmp).arg("-C").arg(&prefix).arg(".").status();
        assert!(ok.is_ok_and(|s| s.success()), "tar failed");
        std::fs::rename(&tmp, &archive).expect("rename");
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
    let (mut gz, mut ours) = (Vec::new(), Vec::new());
    let mut index = None;
    for _ in 0..3 {
        gz.push(gzip_once());
        let (t, i) = build_once(1 << 20);
        ours.push(t);
        index = Some(i);
    }
    let index = index.expect("built");
    let (g, o) = (median(gz), median(ours));
    let uncompressed = index.stats().uncompressed_size;
    println!();
    println!("| step | time | throughput (uncompressed) |");
    println!("|---|---|---|");
    println!(
        "| `gzip -dc > /dev/null` | {:.2} s | {:.0} MB/s |",
        g.as_secs_f64(),
        uncompressed as f64 / 1e6 / g.as_secs_f64()
    );
    println!(
        "| addonfs index build (1 MiB span) | {:.2} s | {:.0} MB/s |",
        o.as_secs_f64(),
        uncompressed as f64 / 1e6 / o.as_secs_f64()
    );
    println!("| ratio | {:.2}x faster than gzip -dc | |", g.as_secs_f64() / o.as_secs_f64());
    println!();
    println!(
        "entries: {} inodes; uncompressed {:.1} MB",
        index.stats().inodes,
        uncompressed as f64 / 1e6
    );
    println!();
    println!("| span | points | index size | % of uncompressed | load (median of 20) | cold 4 KiB read median | p90 | p99 |");
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
}
