//! The one scan both builds run: entries into an [`IndexBuilder`], access points to a second
//! thread that makes their windows sparse and compresses them while the scan goes on inflating.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::{mpsc, Arc};

use super::streaming::Watermark;
use super::OpenError;
use crate::archive::{self, ScanEvent, ScanOptions, ScanSummary};
use crate::gzip::{sparsify_window, AccessPoint};
use crate::index::builder::CompressedPoint;
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
    let (summary, points) = std::thread::scope(|s| {
        // Access points go to a second thread, which makes their windows sparse and
        // compresses them while the scan goes on inflating.
        let (tx, rx) = mpsc::channel::<AccessPoint>();
        let windows = s.spawn(move || window_worker(&window_file, rx, written));
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
        drop(tx);
        let points = match windows.join() {
            Ok(points) => points,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        (summary, points)
    });
    let summary: ScanSummary =
        summary.map_err(|source| OpenError::Scan { archive: archive.to_path_buf(), source })?;
    for point in points.map_err(|e| OpenError::io(archive, e))? {
        builder.add_compressed_point(point);
    }
    Ok((summary, builder))
}

/// Compressed bytes past an access point that [`sparsify_window`] may read: one window of
/// output, at up to 15 bits a literal, plus block headers. If a stream needs more, the window
/// is simply kept whole.
const SPARSIFY_LOOKAHEAD: u64 = 128 << 10;

/// Makes each access point's window sparse (see [`sparsify_window`]) and compresses it. A
/// point whose window cannot be checked keeps its whole window.
pub(super) fn window_worker(
    file: &Arc<File>,
    points: mpsc::Receiver<AccessPoint>,
    written: Option<&Watermark>,
) -> std::io::Result<Vec<CompressedPoint>> {
    let mut out = Vec::new();
    for point in points {
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
        out.push(CompressedPoint::new(&point, window)?);
    }
    Ok(out)
}
