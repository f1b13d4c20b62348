//! Errors raised while scanning an archive.

use crate::gzip::GzipError;

use super::tar::TarError;

/// Why an archive could not be scanned. Every variant says where (an offset) and what rule broke.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// Reading the archive file failed.
    #[error("read failed: {0}")]
    Io(#[source] std::io::Error),
    /// The first bytes are neither a gzip member nor a tar header.
    #[error("not a tar or gzip archive (first bytes: {magic})")]
    NotAnArchive {
        /// The first bytes, hex-encoded.
        magic: String,
    },
    /// The archive uses a compression addonfs does not serve.
    #[error("{0} compression is not supported (use gzip or plain tar)")]
    UnsupportedCompression(&'static str),
    /// The gzip layer is corrupt or truncated.
    #[error(transparent)]
    Gzip(#[from] GzipError),
    /// The tar layer is corrupt or truncated.
    #[error(transparent)]
    Tar(#[from] TarError),
    /// A configured limit was crossed.
    #[error("limit exceeded at uncompressed offset {offset}: {what} is over the limit of {limit}")]
    Limit {
        /// Which limit (e.g. "uncompressed size", "entry count").
        what: &'static str,
        /// The configured limit.
        limit: u64,
        /// Where in the uncompressed stream it was crossed.
        offset: u64,
    },
}

impl ScanError {
    /// Converts an I/O error raised by the decompressing reader into a scan error, unwrapping
    /// a [`GzipError`] or [`ScanError::Limit`] that travelled inside it.
    pub fn from_io(err: std::io::Error) -> ScanError {
        if err.get_ref().is_some_and(|e| e.is::<GzipError>()) {
            let inner = err.into_inner().expect("checked above");
            return ScanError::Gzip(*inner.downcast::<GzipError>().expect("checked above"));
        }
        if err.get_ref().is_some_and(|e| e.is::<ScanError>()) {
            let inner = err.into_inner().expect("checked above");
            return *inner.downcast::<ScanError>().expect("checked above");
        }
        ScanError::Io(err)
    }
}
