//! Writing an incoming archive to its file and indexing it in the same pass: the bytes are
//! teed to the file as the scan reads them, and the window thread waits for the bytes it reads
//! back.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use super::scan::scan_into_builder;
use super::{current_identity, OpenError};
use crate::archive::ScanOptions;
use crate::index::{ArchiveIdentity, Index};

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

/// How far a file being written has got, shared by the writer and the window thread.
#[derive(Default)]
pub(super) struct Watermark {
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

    pub(super) fn advance(&self, by: u64) {
        self.lock().written += by;
        self.moved.notify_all();
    }

    pub(super) fn finish(&self, file: Option<File>) {
        let mut state = self.lock();
        state.done = true;
        if file.is_some() {
            state.file = file;
        }
        drop(state);
        self.moved.notify_all();
    }

    /// Waits until `offset` bytes are written or no more will come.
    pub(super) fn wait_for(&self, offset: u64) {
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
