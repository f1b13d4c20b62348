//! The one scan both builds run: entries into an [`IndexBuilder`], access points to a second
//! thread that makes their windows sparse and compresses them while the scan goes on inflating,
//! and hashes the archive's chunks (see `chunks`).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use super::chunks::ChunkHasher;
use super::streaming::Watermark;
use super::OpenError;
use crate::archive::{self, Compression, ScanEvent, ScanOptions, ScanSummary};
use crate::gzip::{sparsify_window, AccessPoint};
use crate::index::builder::{CompressedPoint, WindowCompressor};
use crate::index::format::{self, ChunkRec};
use crate::index::IndexBuilder;

/// Runs one scan of `input` into a fresh [`IndexBuilder`], sparsifying access point windows
/// (read back from `window_file`) on a second thread. With `written`, the window thread waits
/// until the bytes it needs have been written to `window_file`.
pub(super) fn scan_into_builder<R: Read + Send>(
    archive: &Path,
    input: R,
    window_file: Arc<File>,
    written: Option<&Watermark>,
    default_mtime: i64,
    opts: &ScanOptions,
) -> Result<(ScanSummary, IndexBuilder), OpenError> {
    let mut builder = IndexBuilder::new(default_mtime);
    let failed = AtomicBool::new(false);
    let (summary, worked) = std::thread::scope(|s| {
        // Access points go to a second thread, which makes their windows sparse and
        // compresses them while the scan goes on inflating, and hashes the chunks.
        let (tx, rx) = mpsc::channel::<AccessPoint>();
        let (failed, span) = (&failed, opts.span);
        let windows = s.spawn(move || window_worker(&window_file, rx, written, span, failed));
        let summary = archive::scan(input, opts, |event| {
            match event {
                ScanEvent::Entry(entry) => {
                    // A warning returned here is already kept by the builder.
                    let _ = builder.add_entry(entry);
                }
                ScanEvent::Point(point) => {
                    let _ = tx.send(point);
                }
                ScanEvent::Warning(warning) => builder.add_warning(warning),
            }
            Ok(())
        });
        if summary.is_err() {
            failed.store(true, Ordering::Relaxed);
        }
        drop(tx);
        let worked = match windows.join() {
            Ok(worked) => worked,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        (summary, worked)
    });
    let summary: ScanSummary =
        summary.map_err(|source| OpenError::Scan { archive: archive.to_path_buf(), source })?;
    let Worked { points, chunks, hashed } = worked.map_err(|e| OpenError::io(archive, e))?;
    if hashed != summary.compressed_size {
        // The file is not what the scan read (it changed under us): no checksums of it.
        return Err(OpenError::io(
            archive,
            std::io::Error::other(format!(
                "{} bytes were scanned but {hashed} could be read back to checksum them",
                summary.compressed_size
            )),
        ));
    }
    for point in points {
        builder.add_compressed_point(point);
    }
    builder.set_chunks(chunks);
    Ok((summary, builder))
}

/// What the window thread made.
pub(super) struct Worked {
    /// The access points, windows sparse and compressed.
    pub(super) points: Vec<CompressedPoint>,
    /// The archive's chunks with their checksums.
    pub(super) chunks: Vec<ChunkRec>,
    /// Where the last chunk ends.
    pub(super) hashed: u64,
}

/// The archive's format, by its first bytes (as the scan detects it), once they are written.
fn detect_file(file: &File, written: Option<&Watermark>) -> Option<Compression> {
    if let Some(written) = written {
        written.wait_for(512);
    }
    let mut head = [0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match file.read_at(&mut head[n..], n as u64) {
            Ok(0) => break,
            Ok(got) => n += got,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    archive::detect(&head[..n]).ok()
}

/// Compressed bytes past an access point that [`sparsify_window`] may read: one window of
/// output, at up to 15 bits a literal, plus block headers. If a stream needs more, the window
/// is simply kept whole.
const SPARSIFY_LOOKAHEAD: u64 = 128 << 10;

/// Makes each access point's window sparse (see [`sparsify_window`]) and compresses it (a
/// point whose window cannot be checked keeps its whole window), and hashes the archive's
/// chunks: a plain tar's of a fixed size from the start, a gzip's span by span as the points
/// come, then the last span once the scan is done. `failed` tells it the scan failed (then the
/// chunks are not wanted).
pub(super) fn window_worker(
    file: &Arc<File>,
    points: mpsc::Receiver<AccessPoint>,
    written: Option<&Watermark>,
    span: u64,
    failed: &AtomicBool,
) -> std::io::Result<Worked> {
    let stop = || failed.load(Ordering::Relaxed);
    let mut chunks = ChunkHasher::new(file, written);
    let plain = detect_file(file, written) == Some(Compression::None);
    if plain {
        chunks.through_end(format::plain_chunk_size(span), &stop)?;
    }
    let mut out = Vec::new();
    let mut compressor = WindowCompressor::new();
    for point in points {
        if !stop() {
            chunks.cut(ChunkHasher::point_start(&point))?;
        }
        if let Some(written) = written {
            if !point.at_member_start() {
                written.wait_for(point.compressed.saturating_add(SPARSIFY_LOOKAHEAD));
            }
        }
        let sparse = sparsify_window(file, &point);
        let window = match &sparse {
            Ok(sparse) => sparse,
            Err(e) => {
                tracing::debug!(offset = point.uncompressed, error = %e, "keeping a whole window");
                &point.window
            }
        };
        out.push(compressor.point(&point, window)?);
    }
    if !plain {
        chunks.through_end(u64::MAX, &stop)?;
    }
    let (chunks, hashed) = chunks.finish();
    Ok(Worked { points: out, chunks, hashed })
}
