//! Gzip with random access, zran style: while indexing, record access points at deflate block
//! boundaries (with the 32 KiB window that precedes them); later, resume inflating at any point.

#[allow(unsafe_code)] // the zlib bindings
mod ffi;
mod header;
mod indexer;
mod span;
mod sparse;
#[cfg(test)]
mod tests;

pub use indexer::GzipIndexer;
pub use span::SpanInflater;
pub use sparse::sparsify_window;

/// The largest window an access point carries: deflate's 32 KiB history.
pub const WINDOW_SIZE: usize = 32 * 1024;

/// A place where inflating can resume without reading what comes before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPoint {
    /// Offset in the uncompressed stream.
    pub uncompressed: u64,
    /// Offset in the compressed file of the first byte to feed the inflater. When `bits` is not
    /// zero, the byte before it holds `bits` more bits to prime.
    pub compressed: u64,
    /// Number of bits (0..=7) of the byte at `compressed - 1` that belong to the next block.
    pub bits: u8,
    /// The uncompressed bytes before this point (at most 32 KiB), or empty when the point sits
    /// at the start of a gzip member's header, where no history is needed.
    pub window: Vec<u8>,
}

impl AccessPoint {
    /// True if the point sits at the start of a gzip member (its header), needing no window.
    pub fn at_member_start(&self) -> bool {
        self.window.is_empty()
    }
}

/// A problem in the gzip layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("gzip stream corrupt at compressed offset {offset}: {reason}")]
pub struct GzipError {
    /// Offset in the compressed file where the problem was found.
    pub offset: u64,
    /// What was wrong.
    pub reason: String,
}

/// What a finished indexing pass saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GzipSummary {
    /// Compressed bytes consumed.
    pub compressed: u64,
    /// Uncompressed bytes produced.
    pub uncompressed: u64,
    /// Number of gzip members.
    pub members: u64,
}
