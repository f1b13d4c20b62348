//! Tests of building an index, streamed and from a file, and of reusing it.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use super::scan::window_worker;
use super::streaming::Watermark;
use super::{build, build_streaming, default_index_path, open, OpenError, Origin};
use crate::archive::ScanOptions;
use crate::limits::Limits;

/// A gzip tar made by GNU tar of a few MiB of compressible, non-repeating text (many
/// access points with real windows at a small span), rooted at `./` so the tree has no
/// implicit directory.
fn gzip_tar(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("a/b")).unwrap();
    for i in 0..40u32 {
        // Hex of a pseudo-random sequence: deflate halves it, so the archive spans
        // several read-ahead chunks.
        let text: String = (0..40_000u32)
            .map(|j| format!("{:08x}\n", (i * 40_000 + j).wrapping_mul(2_654_435_761)))
            .collect();
        std::fs::write(tree.join(format!("a/b/f{i}.txt")), text).unwrap();
    }
    let archive = dir.join("src.tar.gz");
    let ok = std::process::Command::new("tar")
        .arg("-C")
        .arg(&tree)
        .arg("-czf")
        .arg(&archive)
        .arg(".")
        .status()
        .unwrap();
    assert!(ok.success());
    archive
}

/// Hands out `bytes` in chunks of varying small sizes, then fails after `fail_at` bytes if
/// given.
struct Dribble {
    bytes: Vec<u8>,
    pos: usize,
    step: usize,
    fail_at: Option<usize>,
}

impl Read for Dribble {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.fail_at.is_some_and(|at| self.pos >= at) {
            return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "gone"));
        }
        self.step = self.step * 7 % 10007 + 1;
        let n = buf.len().min(self.bytes.len() - self.pos).min(self.step);
        buf[..n].copy_from_slice(&self.bytes[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn opts() -> ScanOptions {
    ScanOptions { span: 64 << 10, limits: Limits::default() }
}

#[test]
fn streamed_index_is_the_index_of_the_written_file() {
    let dir = tempfile::tempdir().unwrap();
    let source = gzip_tar(dir.path());
    let bytes = std::fs::read(&source).unwrap();
    let target = dir.path().join("copy.tar.gz");
    let input = Dribble { bytes: bytes.clone(), pos: 0, step: 1, fail_at: None };
    let streamed = build_streaming(&target, input, &opts()).unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), bytes);
    assert!(streamed.point_count() > 10, "{} points", streamed.point_count());
    // Same entries, same points, same sparse windows, same identity as a second pass over
    // the finished file; and the persisted index is taken as current.
    let built = build(&target, &opts(), None).unwrap();
    assert_eq!(streamed.as_bytes(), built.as_bytes());
    streamed.write(&default_index_path(&target)).unwrap();
    let opened = open(&target, None, &opts(), false, None).unwrap();
    assert_eq!(opened.origin, Origin::Loaded);
}

#[test]
fn window_thread_waits_for_the_bytes_after_a_point() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(gzip_tar(dir.path())).unwrap();
    let mut gz = crate::gzip::GzipIndexer::new(&bytes[..], 64 << 10, u64::MAX);
    std::io::copy(&mut gz, &mut std::io::sink()).unwrap();
    let point = gz.take_points().into_iter().find(|p| !p.at_member_start()).unwrap();
    let whole = Arc::new(File::open(dir.path().join("src.tar.gz")).unwrap());
    let sparse_of = |file: &Arc<File>, written: Option<&Watermark>| {
        let (tx, rx) = mpsc::channel();
        tx.send(point.clone()).unwrap();
        drop(tx);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let out = window_worker(file, rx, written, 64 << 10, &stop).unwrap();
        out.points[0].clone()
    };
    let expected = sparse_of(&whole, None);
    // The file holds only a few bytes past the point; the rest comes later.
    let cut = usize::try_from(point.compressed).unwrap() + 8;
    let partial = dir.path().join("partial.tar.gz");
    std::fs::write(&partial, &bytes[..cut]).unwrap();
    let mark = Watermark::default();
    mark.advance(cut as u64);
    let got = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(100));
            let mut f = std::fs::OpenOptions::new().append(true).open(&partial).unwrap();
            std::io::Write::write_all(&mut f, &bytes[cut..]).unwrap();
            mark.advance((bytes.len() - cut) as u64);
            mark.finish(None);
        });
        sparse_of(&Arc::new(File::open(&partial).unwrap()), Some(&mark))
    });
    assert_eq!(got, expected);
}

#[test]
fn streaming_failures_are_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(gzip_tar(dir.path())).unwrap();
    // The input breaks off: an I/O error on the archive, not a bad archive.
    let target = dir.path().join("cut.tar.gz");
    let input = Dribble { bytes: bytes.clone(), pos: 0, step: 1, fail_at: Some(bytes.len() / 2) };
    match build_streaming(&target, input, &opts()) {
        Err(OpenError::Io { path, source }) => {
            assert_eq!(path, target);
            assert_eq!(source.kind(), std::io::ErrorKind::ConnectionReset);
        }
        other => panic!("expected an I/O error, got {:?}", other.map(|_| ())),
    }
    // A corrupt stream is a scan error.
    let mut corrupt = bytes.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid..mid + 16].copy_from_slice(b"not deflate data");
    let target = dir.path().join("corrupt.tar.gz");
    let input = Dribble { bytes: corrupt, pos: 0, step: 1, fail_at: None };
    let e = build_streaming(&target, input, &opts()).map(|_| ()).unwrap_err();
    assert!(matches!(e, OpenError::Scan { .. }), "{e}");
    // The target must be new.
    let input = Dribble { bytes, pos: 0, step: 1, fail_at: None };
    let e = build_streaming(&target, input, &opts()).map(|_| ()).unwrap_err();
    assert!(
        matches!(&e, OpenError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists),
        "{e}"
    );
}
