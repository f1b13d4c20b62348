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
use addonfs::index::Index;
use addonfs::reader::{ArchiveReader, ChunkCache, ReadAt};
use common::corpus::{self, Gz};
use common::{assert_same_bytes, read_entry, walk_dir, walk_index};
use sha2::{Digest, Sha256};

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

/// What a lazy source does with the index's chunks: every read is served from whole chunks,
/// each checked by its SHA-256 before any of its bytes are handed out.
struct Checked {
    bytes: Vec<u8>,
    index: Arc<Index>,
}

impl ReadAt for Checked {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset + buf.len() as u64;
        if end > self.len() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "past the end"));
        }
        let mut at = offset;
        while at < end {
            let c = self.index.chunk_for(at).expect("every byte is in a chunk");
            let chunk = &self.bytes[c.offset as usize..c.end() as usize];
            if <[u8; 32]>::from(Sha256::digest(chunk)) != c.sha256 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("chunk {} fails its SHA-256", c.index),
                ));
            }
            let to = end.min(c.end());
            buf[(at - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&chunk[(at - c.offset) as usize..(to - c.offset) as usize]);
            at = to;
        }
        Ok(())
    }

    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
}

/// The index of `archive` as a node gets it: its head, and its windows by range from the index
/// file's bytes (`windows`, which a test may damage).
fn index_from_head(whole: &Index, windows: Vec<u8>) -> Arc<Index> {
    let head = whole.head().expect("a version-2 index has a head").to_vec();
    assert!(head.len() <= whole.as_bytes().len(), "the head is a prefix");
    Arc::new(Index::from_head(head, Arc::new(windows)).expect("from_head"))
}

#[test]
fn every_file_reads_the_same_from_the_index_head_and_checked_chunks() {
    let c = corpus();
    for how in [Gz::None, Gz::Level(6), Gz::MultiMember, Gz::Bgzip] {
        if !how.available() {
            continue;
        }
        let archive = corpus::compress(&c.tar, how);
        let what = format!("head + checked chunks, {}", how.name());
        let whole = build(&archive, &opts(), None).expect("index");
        let bytes = std::fs::read(&archive).expect("read archive");
        // The chunks cover the archive, each with the SHA-256 of its bytes.
        let mut next = 0;
        for chunk in whole.chunks() {
            assert_eq!(chunk.offset, next, "{what}");
            let sum: [u8; 32] =
                Sha256::digest(&bytes[chunk.offset as usize..chunk.end() as usize]).into();
            assert_eq!(sum, chunk.sha256, "{what}: chunk {}", chunk.index);
            next = chunk.end();
        }
        assert_eq!(next, bytes.len() as u64, "{what}: the chunks cover the archive");
        if how != Gz::None {
            // One chunk per span: a range is checked by the spans it touches, no more.
            assert_eq!(whole.chunk_count(), whole.point_count(), "{what}");
        }
        let index = index_from_head(&whole, whole.as_bytes().to_vec());
        assert_eq!(walk_index(&index), walk_index(&whole), "{what}: the same tree");
        let source = Arc::new(Checked { bytes, index: Arc::clone(&index) });
        let reader = ArchiveReader::open_source(
            source,
            Path::new("store://corpus"),
            Arc::clone(&index),
            Arc::new(ChunkCache::new(4 << 20)),
        )
        .expect("reader");
        check_reader(&reader, &c.dest, &what);
    }
}

#[test]
fn a_flipped_byte_in_a_span_or_a_window_is_refused() {
    let c = corpus();
    let archive = corpus::compress(&c.tar, Gz::Level(6));
    let whole = build(&archive, &opts(), None).expect("index");
    let bytes = std::fs::read(&archive).expect("read archive");
    let ino = whole.resolve(b"big-text").expect("big-text");
    let want = std::fs::read(c.dest.join("big-text")).expect("extracted");
    let Some(addonfs::index::Data::Contiguous(start)) = Some(whole.data(ino)) else {
        panic!("big-text is stored in one piece")
    };
    // A span in the middle of the file, with a window.
    let p = whole.point_for(start + 1_500_000).expect("a point");
    assert!(whole.point(p).has_window);
    let offset = whole.point(p).uncompressed - start;
    let read = |index: &Arc<Index>, bytes: Vec<u8>| {
        let source = Arc::new(Checked { bytes, index: Arc::clone(index) });
        let reader = ArchiveReader::open_source(
            source,
            Path::new("store://corpus"),
            Arc::clone(index),
            Arc::new(ChunkCache::new(4 << 20)),
        )
        .expect("reader");
        let mut buf = vec![0u8; 4096];
        reader.read(ino, offset, &mut buf).map(|n| buf[..n].to_vec())
    };
    // Undamaged: the right bytes.
    let index = index_from_head(&whole, whole.as_bytes().to_vec());
    let good = read(&index, bytes.clone()).expect("an undamaged read");
    assert_eq!(good, &want[offset as usize..offset as usize + 4096]);
    // A flipped byte in the span's compressed bytes: refused by its chunk's SHA-256.
    let chunk = whole.chunk_for(whole.point(p).compressed + 100).expect("a chunk");
    let mut damaged = bytes.clone();
    damaged[(chunk.offset + chunk.len / 2) as usize] ^= 0x20;
    let err = read(&index, damaged).expect_err("a damaged span");
    assert_eq!(err.errno(), libc::EIO, "{err}");
    assert!(err.to_string().contains("SHA-256"), "{err}");
    // A flipped byte in the point's window: refused by the window's SHA-256.
    use addonfs::index::format::{self, PointRec, Section, POINT_LEN};
    let h = format::parse_header(whole.as_bytes()).expect("header");
    let points = format::section_range(&h, Section::Points);
    let rec = PointRec::decode(&whole.as_bytes()[points.start + p * POINT_LEN..]);
    let windows = format::section_range(&h, Section::Windows);
    let mut index_bytes = whole.as_bytes().to_vec();
    index_bytes[windows.start + rec.window_off as usize + rec.window_zlen as usize / 2] ^= 0x01;
    let damaged = index_from_head(&whole, index_bytes);
    let err = read(&damaged, bytes).expect_err("a damaged window");
    assert_eq!(err.errno(), libc::EIO, "{err}");
    assert!(err.to_string().contains("SHA-256"), "{err}");
}
