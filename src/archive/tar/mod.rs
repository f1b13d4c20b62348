//! The tar walker: decodes ustar, GNU, old-GNU and PAX headers from an uncompressed stream.

use std::io::BufRead;

use super::{ScanError, ScannedEntry};
use crate::limits::Limits;

/// A structural problem in the tar stream.
#[derive(Debug, thiserror::Error)]
#[error("tar stream corrupt at uncompressed offset {offset}: {reason}")]
pub struct TarError {
    /// Offset in the uncompressed stream of the offending header or record.
    pub offset: u64,
    /// What was wrong.
    pub reason: String,
}

/// Walks the tar stream `input` to its end, calling `on_entry` for every entry and `on_warning`
/// for every non-fatal problem. Returns the number of bytes consumed.
pub fn walk<R: BufRead>(
    input: &mut R,
    limits: &Limits,
    on_entry: &mut dyn FnMut(ScannedEntry) -> Result<(), ScanError>,
    on_warning: &mut dyn FnMut(String),
) -> Result<u64, ScanError> {
    let _ = (input, limits, on_entry, on_warning);
    todo!("tar walk")
}
