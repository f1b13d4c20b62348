//! Criterion benchmarks of the archive engine on a synthetic archive made at start-up:
//! index build against one thread of the same inflate library (zlib-rs, through flate2)
//! draining the same file (side by side, same run), index load, and random 4 KiB reads with
//! the chunk cache cold. Those reads find the archive in the page cache (nothing here drops
//! it: `cargo bench --bench corpus` has a truly cold variant, as root); one variant times the
//! read alone, the other opening the reader too.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use addonfs::archive::ScanOptions;
use addonfs::index::open::build;
use addonfs::index::Index;
use addonfs::reader::{ArchiveReader, ChunkCache};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};

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
    group.bench_function("zlib_rs_one_thread_drain_baseline", |b| b.iter(|| drain_gzip(&archive)));
    group.bench_function("addonfs_index_build", |b| {
        b.iter(|| build(&archive, &opts, None).expect("build"))
    });
    group.finish();

    let index = Arc::new(build(&archive, &opts, None).expect("build"));
    let bytes = index.as_bytes().to_vec();
    c.bench_function("index_load_from_bytes", |b| {
        b.iter(|| Index::from_bytes(bytes.clone()).expect("load"))
    });

    // Chunk cache cold (a fresh one each time), page cache warm.
    let mut group = c.benchmark_group("chunk_cache_cold_read_4k");
    for span in [1u64 << 20, 4 << 20] {
        let opts = ScanOptions { span, ..ScanOptions::default() };
        let index = Arc::new(build(&archive, &opts, None).expect("build"));
        let inos: Vec<(u64, u64)> = files
            .iter()
            .map(|(p, len)| (index.resolve(p.as_bytes()).expect("path"), *len))
            .collect();
        let pick = |k: usize| {
            let (ino, len) = inos[k];
            (ino, (k as u64 * 131) % len.saturating_sub(4096).max(1))
        };
        let open = || {
            let cache = Arc::new(ChunkCache::new(8 << 20));
            ArchiveReader::open(&archive, Arc::clone(&index), cache).expect("reader")
        };
        let mut k = 0usize;
        group.bench_with_input(BenchmarkId::new("read_alone", span >> 20), &span, |b, _| {
            b.iter_batched(
                || {
                    k = (k + 7919) % inos.len();
                    (open(), pick(k))
                },
                |(reader, (ino, offset))| {
                    let mut buf = [0u8; 4096];
                    reader.read(ino, offset, &mut buf).expect("read")
                },
                BatchSize::PerIteration,
            )
        });
        group.bench_with_input(BenchmarkId::new("with_reader_open", span >> 20), &span, |b, _| {
            b.iter(|| {
                k = (k + 7919) % inos.len();
                let (ino, offset) = pick(k);
                let reader = open();
                let mut buf = [0u8; 4096];
                reader.read(ino, offset, &mut buf).expect("read")
            })
        });
    }
    group.finish();
}

criterion_group!(engine, benches);
criterion_main!(engine);
