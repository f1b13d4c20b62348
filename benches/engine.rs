//! Criterion benchmarks of the archive engine on a synthetic archive made at start-up:
//! index build against a plain gzip drain of the same file (side by side, same run), a cold
//! random 4 KiB read, and index load.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use addonfs::archive::ScanOptions;
use addonfs::index::open::build;
use addonfs::index::Index;
use addonfs::reader::{ArchiveReader, ChunkCache};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// A line of Python-like text.
const LINE: &[u8] = b"def value(self):\n    return x\n";

/// Makes a ~48 MiB tar.gz of mixed text and binary files (2,000 files) in a temp dir.
fn fixture() -> (tempfile::TempDir, PathBuf, Vec<(String, u64)>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    let mut files = Vec::new();
    let mut x: u64 = 0x1234_5678_9abc_def1;
    for i in 0..2000u64 {
        let sub = src.join(format!("pkg{}", i % 40));
        std::fs::create_dir_all(&sub).expect("mkdir");
        let len = 1000 + (i * 7919) % 40_000;
        let bytes: Vec<u8> = (0..len)
            .map(|k| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 4 == 0 {
                    (x >> 32) as u8
                } else {
                    LINE[(k as usize) % LINE.len()] ^ ((x >> 60) as u8 & 1)
                }
            })
            .collect();
        std::fs::write(sub.join(format!("f{i}.py")), bytes).expect("write");
        files.push((format!("pkg{}/f{i}.py", i % 40), len));
    }
    let archive = dir.path().join("bench.tar.gz");
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("tar -C {} -cf - . | gzip -6 > {}", src.display(), archive.display()))
        .status()
        .expect("tar");
    assert!(ok.success());
    (dir, archive, files)
}

fn drain_gzip(path: &Path) -> u64 {
    let file = std::fs::File::open(path).expect("open");
    let mut gz =
        flate2::read::MultiGzDecoder::new(std::io::BufReader::with_capacity(1 << 20, file));
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = gz.read(&mut buf).expect("inflate");
        if n == 0 {
            return total;
        }
        total += n as u64;
    }
}

fn benches(c: &mut Criterion) {
    let (_dir, archive, files) = fixture();
    let uncompressed = drain_gzip(&archive);
    let opts = ScanOptions::default();

    let mut group = c.benchmark_group("index_build");
    group.sample_size(10).throughput(Throughput::Bytes(uncompressed));
    group.bench_function("flate2_drain_baseline", |b| b.iter(|| drain_gzip(&archive)));
    group.bench_function("addonfs_index_build", |b| {
        b.iter(|| build(&archive, &opts, None).expect("build"))
    });
    group.finish();

    let index = Arc::new(build(&archive, &opts, None).expect("build"));
    let bytes = index.as_bytes().to_vec();
    c.bench_function("index_load_from_bytes", |b| {
        b.iter(|| Index::from_bytes(bytes.clone()).expect("load"))
    });

    let mut group = c.benchmark_group("cold_read_4k");
    for span in [1u64 << 20, 4 << 20] {
        let opts = ScanOptions { span, ..ScanOptions::default() };
        let index = Arc::new(build(&archive, &opts, None).expect("build"));
        let inos: Vec<(u64, u64)> = files
            .iter()
            .map(|(p, len)| (index.resolve(p.as_bytes()).expect("path"), *len))
            .collect();
        let mut k = 0usize;
        group.bench_with_input(BenchmarkId::from_parameter(span >> 20), &span, |b, _| {
            b.iter(|| {
                // A fresh cache each time: every read inflates from its access point.
                let cache = Arc::new(ChunkCache::new(8 << 20));
                let reader =
                    ArchiveReader::open(&archive, Arc::clone(&index), cache).expect("reader");
                k = (k + 7919) % inos.len();
                let (ino, len) = inos[k];
                let mut buf = [0u8; 4096];
                reader
                    .read(ino, (k as u64 * 131) % len.saturating_sub(4096).max(1), &mut buf)
                    .expect("read")
            })
        });
    }
    group.finish();
}

criterion_group!(engine, benches);
criterion_main!(engine);
