//! Measurements (ignored tests, run by hand in release; they print, they do not assert):
//!
//! * `window_levels`: zlib levels 1/6/9 on real windows.
//! * `load_time_synthetic`: `Index::from_bytes` for 50k synthetic entries and 800 points.
//! * `corpus_size`: the index of a real tar file (sections, total, load time).
//!
//! `cargo test --release --lib index::tests::measure -- --ignored --nocapture --test-threads 1`

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::{Duration, Instant};

use super::{dir, file, identity, point};
use crate::gzip::AccessPoint;
use crate::index::format::{self, Section};
use crate::index::{Compression, Index, IndexBuilder};

/// The 32 KiB before every multiple of `span` in `path` (the windows a gzip index of that tar
/// would store at that span).
fn windows_of(path: &std::ffi::OsStr, span: u64) -> Vec<(u64, Vec<u8>)> {
    let mut f = std::fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let mut windows = Vec::new();
    let mut at = span;
    while at < len {
        let mut w = vec![0u8; format::MAX_WINDOW];
        f.seek(SeekFrom::Start(at - w.len() as u64)).unwrap();
        f.read_exact(&mut w).unwrap();
        windows.push((at, w));
        at += span;
    }
    windows
}

/// Measures zlib levels 1/6/9 on the windows of the tar file named by `ADDONFS_WINDOW_SAMPLE`.
#[test]
#[ignore = "measurement; needs ADDONFS_WINDOW_SAMPLE"]
fn window_levels() {
    let Some(path) = std::env::var_os("ADDONFS_WINDOW_SAMPLE") else {
        eprintln!("ADDONFS_WINDOW_SAMPLE not set");
        return;
    };
    let windows = windows_of(&path, 1 << 20);
    let raw: usize = windows.iter().map(|(_, w)| w.len()).sum();
    println!("{} windows, {raw} raw bytes", windows.len());
    for level in [1, 6, 9] {
        let start = Instant::now();
        let mut total = 0usize;
        for (_, w) in &windows {
            let mut enc =
                flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(level));
            enc.write_all(w).unwrap();
            total += enc.finish().unwrap().len();
        }
        let took = start.elapsed();
        println!(
            "level {level}: {total} bytes ({:.1}% of raw, {:.0} B/window), {:.1} ms total, \
             {:.1} us/window",
            100.0 * total as f64 / raw as f64,
            total as f64 / windows.len() as f64,
            took.as_secs_f64() * 1e3,
            took.as_secs_f64() * 1e6 / windows.len() as f64
        );
    }
}

fn report(index: &Index) {
    let h = format::parse_header(index.as_bytes()).unwrap();
    let total = index.as_bytes().len();
    for s in Section::LAYOUT {
        let len = h.sections[s as usize].len;
        println!(
            "  {:>8}: {:>10} bytes ({:.1}%)",
            s.name(),
            len,
            100.0 * len as f64 / total as f64
        );
    }
    let stats = index.stats();
    println!(
        "  total {} bytes = {:.3}% of {} uncompressed; {} inodes, {} dirents, {} points",
        total,
        100.0 * total as f64 / stats.uncompressed_size.max(1) as f64,
        stats.uncompressed_size,
        stats.inodes,
        stats.dirents,
        stats.points
    );
}

fn time_load(index: &Index, path: &std::path::Path) {
    let mut from_bytes = Vec::new();
    for _ in 0..30 {
        let bytes = index.as_bytes().to_vec();
        let start = Instant::now();
        let loaded = Index::from_bytes(bytes).unwrap();
        from_bytes.push(start.elapsed());
        std::hint::black_box(loaded);
    }
    index.write(path).unwrap();
    let mut load = Vec::new();
    for _ in 0..30 {
        let start = Instant::now();
        let loaded = Index::load(path).unwrap();
        load.push(start.elapsed());
        std::hint::black_box(loaded);
    }
    let show = |v: &mut Vec<Duration>| {
        v.sort();
        format!(
            "min {:.3} ms, median {:.3} ms",
            v[0].as_secs_f64() * 1e3,
            v[v.len() / 2].as_secs_f64() * 1e3
        )
    };
    println!("  from_bytes: {}", show(&mut from_bytes));
    println!("  load (read file + from_bytes): {}", show(&mut load));
    let start = Instant::now();
    let w = index.point_window(index.point_count() / 2).unwrap();
    println!("  point_window: {} bytes in {:.3} ms", w.len(), start.elapsed().as_secs_f64() * 1e3);
}

/// `Index::from_bytes` for 50k synthetic entries (2000 directories of 25 files) and 800 points.
#[test]
#[ignore = "measurement"]
fn load_time_synthetic() {
    let mut b = IndexBuilder::new(0);
    let mut offset = 0u64;
    for d in 0..2000 {
        b.add_entry(dir(&format!("lib/python3.11/site-packages/pkg{d:04}")));
        for f in 0..24 {
            let size = 1000 + (d * 31 + f * 7) as u64 % 30_000;
            b.add_entry(file(
                &format!("lib/python3.11/site-packages/pkg{d:04}/module_{f}.py"),
                offset,
                size,
            ));
            offset += size.div_ceil(512) * 512 + 512;
        }
    }
    let span = offset / 800;
    for i in 0..800u64 {
        b.add_point(AccessPoint { compressed: i * span / 3, ..point(i * span + 1, 32 * 1024) });
    }
    let start = Instant::now();
    let index = b.finish(identity(), Compression::Gzip, span, offset).unwrap();
    println!("synthetic: finish {:.1} ms", start.elapsed().as_secs_f64() * 1e3);
    report(&index);
    let tmp = tempfile::tempdir().unwrap();
    time_load(&index, &tmp.path().join("x.idx"));
}

/// The index of the tar file named by `ADDONFS_INDEX_SAMPLE` (entries read with the `tar`
/// crate, access points every 1 MiB with the real windows): section sizes, total, load time.
#[test]
#[ignore = "measurement; needs ADDONFS_INDEX_SAMPLE"]
fn corpus_size() {
    let Some(path) = std::env::var_os("ADDONFS_INDEX_SAMPLE") else {
        eprintln!("ADDONFS_INDEX_SAMPLE not set");
        return;
    };
    let start = Instant::now();
    let (entries, bytes) = super::oracle::scan(std::path::Path::new(&path));
    println!("{} entries read in {:.1} ms", entries.len(), start.elapsed().as_secs_f64() * 1e3);
    let mut b = IndexBuilder::new(0);
    let start = Instant::now();
    for e in entries {
        b.add_entry(e);
    }
    let add = start.elapsed();
    let windows = windows_of(&path, 1 << 20);
    let start = Instant::now();
    for (at, w) in windows {
        b.add_point(AccessPoint { uncompressed: at, compressed: at / 4, bits: 3, window: w });
    }
    let points = start.elapsed();
    let start = Instant::now();
    let index = b.finish(identity(), Compression::Gzip, 1 << 20, bytes.len() as u64).unwrap();
    println!(
        "add_entry {:.1} ms, add_point {:.1} ms, finish {:.1} ms",
        add.as_secs_f64() * 1e3,
        points.as_secs_f64() * 1e3,
        start.elapsed().as_secs_f64() * 1e3
    );
    report(&index);
    let tmp = tempfile::tempdir().unwrap();
    time_load(&index, &tmp.path().join("x.idx"));
}
