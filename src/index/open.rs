//! Building an index from an archive file, and finding, checking and reusing a persisted one.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::builder::CompressedPoint;
use super::{ArchiveIdentity, Index, IndexBuilder, IndexError};
use crate::archive::{self, ScanError, ScanEvent, ScanOptions, ScanSummary};
use crate::gzip::{sparsify_window, AccessPoint};

/// Why an archive's index could not be found, built, loaded or written, or its archive opened:
/// each names the file it concerns. The index layer's own error, so that it and the reader
/// above it import nothing of the CLI's top-level error (`crate::error::Error` converts it).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// An I/O error on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The archive could not be scanned.
    #[error("{}: {source}", archive.display())]
    Scan {
        /// The archive.
        archive: PathBuf,
        /// Why.
        #[source]
        source: ScanError,
    },
    /// The index could not be built, loaded or written.
    #[error("{}: {source}", path.display())]
    Index {
        /// The index file (or the archive, when building).
        path: PathBuf,
        /// Why.
        #[source]
        source: IndexError,
    },
}

impl OpenError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> OpenError {
        OpenError::Io { path: path.into(), source }
    }
}

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
) -> Result<Index, OpenError> {
    let file = File::open(archive).map_err(|e| OpenError::io(archive, e))?;
    let before = file.metadata().map_err(|e| OpenError::io(archive, e))?;
    let window_file = Arc::new(file.try_clone().map_err(|e| OpenError::io(archive, e))?);
    let input = ProgressRead { inner: file, read: 0, progress };
    let (summary, builder) =
        scan_into_builder(archive, input, window_file, None, before.mtime(), opts)?;
    let after = std::fs::metadata(archive).map_err(|e| OpenError::io(archive, e))?;
    let identity = ArchiveIdentity { digest: summary.digest, ..current_identity(&before) };
    let unchanged = ArchiveIdentity { digest: [0; 32], ..identity };
    if current_identity(&after) != unchanged || summary.compressed_size != identity.size {
        return Err(OpenError::Index {
            path: archive.to_path_buf(),
            source: IndexError::Stale("the archive changed while it was being indexed".into()),
        });
    }
    builder
        .finish(identity, summary.compression, opts.span, summary.uncompressed_size)
        .map_err(|source| OpenError::Index { path: archive.to_path_buf(), source })
}

/// Writes the bytes of `input` to a new file `archive` and builds its index in the same pass:
/// each chunk is written to the file, hashed and scanned as it arrives, so the archive is read
/// once, never held whole in memory, and never read back. At the end of `input` the file is
/// fsynced and the index is bound to its size, modification time and SHA-256.
///
/// Implicit directories (and the root, if the archive has no `./` entry) get the time the file
/// was created. Any failure (of `input`, of writing, of the scan) returns an error and leaves
/// the partial file for the caller to remove; an error of `input` or of writing `archive` is
/// [`OpenError::Io`] on `archive`, a bad archive is [`OpenError::Scan`] or [`OpenError::Index`].
pub fn build_streaming<R: Read + Send>(
    archive: &Path,
    input: R,
    opts: &ScanOptions,
) -> Result<Index, OpenError> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(archive)
        .map_err(|e| OpenError::io(archive, e))?;
    let created = file.metadata().map_err(|e| OpenError::io(archive, e))?;
    let window_file = Arc::new(File::open(archive).map_err(|e| OpenError::io(archive, e))?);
    let written = Arc::new(Watermark::default());
    let tee = Tee { input, file: Some(file), written: Arc::clone(&written) };
    let failure = Arc::new(std::sync::Mutex::new(None));
    let tee = TeeGuard { tee, failure: Arc::clone(&failure) };
    let scanned =
        scan_into_builder(archive, tee, window_file, Some(&written), created.mtime(), opts);
    // The tee's own failure (the input broke off, the disk is full) explains the scan's.
    if let Some(e) = failure.lock().unwrap_or_else(|e| e.into_inner()).take() {
        return Err(OpenError::io(archive, e));
    }
    let (summary, builder) = scanned?;
    let file = written.take_file().ok_or_else(|| {
        OpenError::io(archive, std::io::Error::other("the archive file was not finished"))
    })?;
    file.sync_all().map_err(|e| OpenError::io(archive, e))?;
    let meta = file.metadata().map_err(|e| OpenError::io(archive, e))?;
    if meta.len() != summary.compressed_size {
        return Err(OpenError::io(
            archive,
            std::io::Error::other(format!(
                "{} bytes were scanned but the file holds {}",
                summary.compressed_size,
                meta.len()
            )),
        ));
    }
    let identity = ArchiveIdentity { digest: summary.digest, ..current_identity(&meta) };
    builder
        .finish(identity, summary.compression, opts.span, summary.uncompressed_size)
        .map_err(|source| OpenError::Index { path: archive.to_path_buf(), source })
}

/// Runs one scan of `input` into a fresh [`IndexBuilder`], sparsifying access point windows
/// (read back from `window_file`) on a second thread. With `written`, the window thread waits
/// until the bytes it needs have been written to `window_file`.
fn scan_into_builder<R: Read + Send>(
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

/// How far a file being written has got, shared by the writer and the window thread.
#[derive(Default)]
struct Watermark {
    state: std::sync::Mutex<WatermarkState>,
    moved: std::sync::Condvar,
}

#[derive(Default)]
struct WatermarkState {
    written: u64,
    /// No more bytes will come (the end, or a failure).
    done: bool,
    /// The finished file, handed back by the writer at the end of the input.
    file: Option<File>,
}

impl Watermark {
    fn lock(&self) -> std::sync::MutexGuard<'_, WatermarkState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn advance(&self, by: u64) {
        self.lock().written += by;
        self.moved.notify_all();
    }

    fn finish(&self, file: Option<File>) {
        let mut state = self.lock();
        state.done = true;
        if file.is_some() {
            state.file = file;
        }
        drop(state);
        self.moved.notify_all();
    }

    /// Waits until `offset` bytes are written or no more will come.
    fn wait_for(&self, offset: u64) {
        let mut state = self.lock();
        while state.written < offset && !state.done {
            state = self.moved.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn take_file(&self) -> Option<File> {
        self.lock().file.take()
    }
}

/// The scan's input for [`build_streaming`]: reads `input` and writes every byte to `file`
/// before handing it on.
struct Tee<R> {
    input: R,
    file: Option<File>,
    written: Arc<Watermark>,
}

impl<R: Read> Tee<R> {
    fn read_and_write(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::Write;
        let n = self.input.read(buf)?;
        let Some(file) = self.file.as_mut() else { return Ok(0) };
        if n == 0 {
            self.written.finish(self.file.take());
            return Ok(0);
        }
        file.write_all(&buf[..n])?;
        self.written.advance(n as u64);
        Ok(n)
    }
}

/// Wraps a [`Tee`]: keeps its first failure for [`build_streaming`] and tells the window thread
/// that no more bytes come when it stops, however it stops.
struct TeeGuard<R> {
    tee: Tee<R>,
    failure: Arc<std::sync::Mutex<Option<std::io::Error>>>,
}

impl<R: Read> Read for TeeGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.tee.read_and_write(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // The scan stops at its first input error; keep the original for the caller.
                    let copy = std::io::Error::new(e.kind(), e.to_string());
                    *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    self.tee.file = None;
                    self.tee.written.finish(None);
                    return Err(copy);
                }
                Ok(n) => return Ok(n),
            }
        }
    }
}

impl<R> Drop for TeeGuard<R> {
    fn drop(&mut self) {
        self.tee.written.finish(None);
    }
}

/// Makes each access point's window sparse (see [`sparsify_window`]) and compresses it. A
/// point whose window cannot be checked keeps its whole window.
fn window_worker(
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
) -> Result<Opened, OpenError> {
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
                std::fs::metadata(archive).map_err(|e| OpenError::io(archive, e))?;
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

#[cfg(test)]
mod tests {
    use super::*;
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
            let out = window_worker(file, rx, written).unwrap();
            out[0].clone()
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
        let input =
            Dribble { bytes: bytes.clone(), pos: 0, step: 1, fail_at: Some(bytes.len() / 2) };
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
}
