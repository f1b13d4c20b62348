//! The tar walker: decodes ustar, GNU, old-GNU, v7 and PAX headers (with PAX globals and GNU and
//! PAX sparse files) from an uncompressed stream, reporting each entry with the offsets of its
//! data, while skipping the data itself in place.
//!
//! Layout: [`header`] decodes one header block, [`pax`] extended header records, [`sparse`]
//! sparse maps, [`path`] normalizes names, `stream` reads and skips the input, `walker` drives
//! the whole.

mod header;
mod path;
mod pax;
mod sparse;
mod stream;
mod walker;

#[cfg(test)]
mod tests;

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
///
/// Entries whose name (or hard-link target) escapes the archive root are dropped with a
/// warning; metadata pseudo-entries (PAX headers, GNU long names, volume labels) are never
/// reported. The walk goes on past end-of-archive blocks when another archive follows
/// (`cat a.tar b.tar`), and fails on any other non-zero data after them.
pub fn walk<R: BufRead>(
    input: &mut R,
    limits: &Limits,
    on_entry: &mut dyn FnMut(ScannedEntry) -> Result<(), ScanError>,
    on_warning: &mut dyn FnMut(String),
) -> Result<u64, ScanError> {
    walker::Walker::new(input, limits, on_entry, on_warning).run()
}
