//! Indexing an archive file that is already on disk.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use super::scan::scan_into_builder;
use super::{current_identity, OpenError, Progress};
use crate::archive::ScanOptions;
use crate::index::{ArchiveIdentity, Index, IndexError};

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
