//! The reader's byte-source seam (`reader::ReadAt`): every file of a corpus archive read through
//! a source other than the local file (bytes in memory; an index rebuilt from its head with the
//! windows fetched by range) is exactly what the local reader and GNU tar give, and a source
//! that fails or lies makes reads fail with `EIO`, never serve wrong bytes.

mod common;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use addonfs::archive::ScanOptions;
use addonfs::index::open::build;
use addonfs::reader::{ArchiveReader, ChunkCache, ReadAt};
use common::corpus::{self, Gz};
use common::{assert_same_bytes, read_entry, walk_dir};

/// A small span so the archives have many access points.
const SPAN: u64 = 64 << 10;

fn opts() -> ScanOptions {
    ScanOptions { span: SPAN, ..ScanOptions::default() }
}

/// The standard corpus as a plain tar, extracted by GNU tar, in a temporary directory.
struct Corpus {
    _tmp: tempfile::TempDir,
    tar: PathBuf,
    dest: PathBuf,
}

fn corpus() -> Corpus {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = corpus::source_tree(&tmp.path().join("src"));
    corpus::trim_for("gnu", &src);
    // Big files, so a gzip has many spans and a plain tar many chunks.
    std::fs::write(src.join("big-text"), corpus::text(7, 3 << 20)).expect("write");
    std::fs::write(src.join("big-noise"), corpus::noise(8, 1 << 20)).expect("write");
    let tar = tmp.path().join("corpus.tar");
    corpus::tar_create(&src, &tar, "gnu", &[]);
    let dest = tmp.path().join("x");
    corpus::extract(&tar, &dest, false);
    Corpus { _tmp: tmp, tar, dest }
}

/// A source that serves bytes from memory, or fails every read while `fail` is set.
struct Flaky {
    bytes: Vec<u8>,
    fail: AtomicBool,
    reads: AtomicU64,
}

impl ReadAt for Flaky {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        if self.fail.load(Ordering::Relaxed) {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the store did not answer"));
        }
        self.bytes.read_exact_at(buf, offset)
    }

    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
}

/// Reads every file of `archive` through `reader` and compares with what GNU tar extracted.
fn check_reader(reader: &ArchiveReader, dest: &Path, what: &str) {
    let expected = walk_dir(dest);
    assert_same_bytes(dest, &expected, &[], what, |path, offset, len| {
        read_entry(reader, path, offset, len)
    });
}

#[test]
fn every_file_reads_the_same_through_a_memory_source() {
    let c = corpus();
    for how in [Gz::None, Gz::Level(6), Gz::MultiMember, Gz::Bgzip] {
        if !how.available() {
            continue;
        }
        let archive = corpus::compress(&c.tar, how);
        let what = format!("memory source, {}", how.name());
        let index = Arc::new(build(&archive, &opts(), None).expect("index"));
        let bytes = std::fs::read(&archive).expect("read archive");
        let source = Arc::new(Flaky { bytes, fail: false.into(), reads: 0.into() });
        let reader = ArchiveReader::open_source(
            Arc::clone(&source) as Arc<dyn ReadAt>,
            Path::new("store://corpus"),
            Arc::clone(&index),
            Arc::new(ChunkCache::new(4 << 20)),
        )
        .expect("reader");
        check_reader(&reader, &c.dest, &what);
        assert!(source.reads.load(Ordering::Relaxed) > 0, "{what}: the source was read");
        // The same reads through the local file give the same bytes (the oracle above is
        // GNU tar; this is the reader before the seam).
        let local =
            ArchiveReader::open(&archive, Arc::clone(&index), Arc::new(ChunkCache::new(4 << 20)))
                .expect("local reader");
        check_reader(&local, &c.dest, &format!("local file, {}", how.name()));
    }
}

#[test]
fn a_failing_source_is_eio_and_recovers() {
    let c = corpus();
    for how in [Gz::None, Gz::Level(6)] {
        let archive = corpus::compress(&c.tar, how);
        let index = Arc::new(build(&archive, &opts(), None).expect("index"));
        let bytes = std::fs::read(&archive).expect("read archive");
        let source = Arc::new(Flaky { bytes, fail: true.into(), reads: 0.into() });
        let reader = ArchiveReader::open_source(
            Arc::clone(&source) as Arc<dyn ReadAt>,
            Path::new("store://corpus"),
            Arc::clone(&index),
            Arc::new(ChunkCache::new(4 << 20)),
        )
        .expect("reader");
        let ino = index.resolve(b"big-text").expect("big-text");
        let mut buf = vec![0u8; 100_000];
        let err = reader.read(ino, 1_000_000, &mut buf).expect_err("the source fails");
        assert_eq!(err.errno(), libc::EIO, "{}: {err}", how.name());
        // The store comes back: the same read succeeds, with the right bytes.
        source.fail.store(false, Ordering::Relaxed);
        let n = reader.read(ino, 1_000_000, &mut buf).expect("read after recovery");
        let want = std::fs::read(c.dest.join("big-text")).expect("extracted");
        assert_eq!(&buf[..n], &want[1_000_000..1_000_000 + n], "{}", how.name());
    }
}

#[test]
fn a_source_of_another_length_is_refused() {
    let c = corpus();
    let index = Arc::new(build(&c.tar, &opts(), None).expect("index"));
    let mut bytes = std::fs::read(&c.tar).expect("read archive");
    bytes.push(0);
    let source: Arc<dyn ReadAt> = Arc::new(bytes);
    let err = ArchiveReader::open_source(
        source,
        Path::new("store://corpus"),
        index,
        Arc::new(ChunkCache::default()),
    )
    .err()
    .expect("a longer source is not the indexed archive");
    assert!(err.to_string().contains("bytes"), "{err}");
}
