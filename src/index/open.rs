//! Building an index from an archive file, and finding, checking and reusing a persisted one.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::builder::CompressedPoint;
use super::{ArchiveIdentity, Index, IndexBuilder, IndexError};
use crate::archive::{self, ScanEvent, ScanOptions, ScanSummary};
use crate::error::Error;
use crate::gzip::{sparsify_window, AccessPoint};

/// The suffix of an index file kept beside its archive.
pub const INDEX_SUFFIX: &str = ".addonfs-index";

/// A callback told how many compressed bytes were read so far (for progress bars).
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// How [`open`] obtained the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A persisted index matched the archive and was loaded.
    Loaded,
    /// The index was built now; `reason` says why an existing one was not used.
    Built {
        /// Why (no index yet, stale, corrupt, forced, ...).
        reason: String,
        /// Whether the new index could be written to disk.
        persisted: bool,
    },
}

/// The outcome of [`open`].
pub struct Opened {
    /// The index.
    pub index: Index,
    /// Where it is (or would be) stored.
    pub path: PathBuf,
    /// How it was obtained.
    pub origin: Origin,
    /// Time spent loading or building (and writing).
    pub elapsed: Duration,
}

/// The identity of `archive` as the file system shows it now (the digest is left zero: it is
/// only known after a full pass).
pub fn current_identity(meta: &std::fs::Metadata) -> ArchiveIdentity {
    ArchiveIdentity {
        size: meta.len(),
        mtime_sec: meta.mtime(),
        mtime_nsec: u32::try_from(meta.mtime_nsec()).unwrap_or(0),
        digest: [0; 32],
    }
}

/// The default place of the index of `archive`: beside it, named `<archive>.addonfs-index`.
pub fn default_index_path(archive: &Path) -> PathBuf {
    let mut name = archive.as_os_str().to_owned();
    name.push(INDEX_SUFFIX);
    PathBuf::from(name)
}

/// Scans `archive` once and builds its index in memory. `progress` is told the compressed
/// bytes read so far.
pub fn build(
    archive: &Path,
    opts: &ScanOptions,
    progress: Option<Progress<'_>>,
) -> Result<Index, Error> {
    let file = File::open(archive).map_err(|e| Error::io(archive, e))?;
    let before = file.metadata().map_err(|e| Error::io(archive, e))?;
    let window_file = Arc::new(file.try_clone().map_err(|e| Error::io(archive, e))?);
    let mut builder = IndexBuilder::new(before.mtime());
    let scan_error = |source| Error::Scan { archive: archive.to_path_buf(), source };
    let input = ProgressRead { inner: file, read: 0, progress };
    let (summary, points) = std::thread::scope(|s| {
        // Access points go to a second thread, which makes their windows sparse and
        // compresses them while the scan goes on inflating.
        let (tx, rx) = mpsc::channel::<AccessPoint>();
        let windows = s.spawn(move || window_worker(&window_file, rx));
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
    let summary: ScanSummary = summary.map_err(scan_error)?;
    for point in points.map_err(|e| Error::io(archive, e))? {
        builder.add_compressed_point(point);
    }
    let after = std::fs::metadata(archive).map_err(|e| Error::io(archive, e))?;
    let identity = ArchiveIdentity { digest: summary.digest, ..current_identity(&before) };
    let unchanged = ArchiveIdentity { digest: [0; 32], ..identity };
    if current_identity(&after) != unchanged || summary.compressed_size != identity.size {
        return Err(Error::Index {
            path: archive.to_path_buf(),
            source: IndexError::Stale("the archive changed while it was being indexed".into()),
        });
    }
    builder
        .finish(identity, summary.compression, opts.span, summary.uncompressed_size)
        .map_err(|source| Error::Index { path: archive.to_path_buf(), source })
}

/// Makes each access point's window sparse (see [`sparsify_window`]) and compresses it. A
/// point whose window cannot be checked keeps its whole window.
fn window_worker(
    file: &Arc<File>,
    points: mpsc::Receiver<AccessPoint>,
) -> std::io::Result<Vec<CompressedPoint>> {
    let mut out = Vec::new();
    for point in points {
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

/// Loads the index at `index_path` if it belongs to `archive` as it is now and was taken at
/// `span`; otherwise says why not.
pub fn load_matching(archive: &Path, index_path: &Path, span: u64) -> Result<Index, IndexError> {
    let meta = std::fs::metadata(archive)?;
    let index = Index::load(index_path)?;
    let want = current_identity(&meta);
    let have = ArchiveIdentity { digest: [0; 32], ..index.identity() };
    if have != want {
        return Err(IndexError::Stale(format!(
            "built for a file of {} bytes modified at {}.{:09}, the archive now has {} bytes \
             modified at {}.{:09}",
            have.size, have.mtime_sec, have.mtime_nsec, want.size, want.mtime_sec, want.mtime_nsec
        )));
    }
    if index.compression() == archive::Compression::Gzip && index.span() != span {
        return Err(IndexError::Stale(format!(
            "built with a span of {} bytes, {} asked for",
            index.span(),
            span
        )));
    }
    Ok(index)
}

/// Loads the index of `archive` from `index_path` (default: beside the archive) if it is
/// valid and current, else builds it and tries to persist it. `force` always rebuilds.
pub fn open(
    archive: &Path,
    index_path: Option<&Path>,
    opts: &ScanOptions,
    force: bool,
    progress: Option<Progress<'_>>,
) -> Result<Opened, Error> {
    let start = Instant::now();
    let path = index_path.map(Path::to_path_buf).unwrap_or_else(|| default_index_path(archive));
    let reason = if force {
        "rebuild forced".to_string()
    } else {
        match load_matching(archive, &path, opts.span) {
            Ok(index) => {
                return Ok(Opened { index, path, origin: Origin::Loaded, elapsed: start.elapsed() })
            }
            Err(IndexError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                // Distinguish a missing archive from a missing index.
                std::fs::metadata(archive).map_err(|e| Error::io(archive, e))?;
                "no index yet".to_string()
            }
            Err(e) => e.to_string(),
        }
    };
    let index = build(archive, opts, progress)?;
    let persisted = match index.write(&path) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(index = %path.display(), error = %e, "cannot persist the index; it stays in memory");
            false
        }
    };
    Ok(Opened {
        index,
        path,
        origin: Origin::Built { reason, persisted },
        elapsed: start.elapsed(),
    })
}

/// Counts bytes read and reports them to a progress callback.
struct ProgressRead<'a, R> {
    inner: R,
    read: u64,
    progress: Option<Progress<'a>>,
}

impl<R: Read> Read for ProgressRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if let Some(progress) = self.progress {
            progress(self.read);
        }
        Ok(n)
    }
}
