//! Limits that protect the indexer from hostile or absurd archives (decompression bombs,
//! header floods), and a bounded read for the small files given on the command line.

use std::io::Read;
use std::path::Path;

/// Reads at most `max` bytes of the file at `path`, whatever it is: a regular file, a device
/// (`/dev/zero`) or a FIFO. Callers pass their limit plus one and refuse a result longer than
/// the limit, so an endless source costs `max` bytes, never all of memory.
pub fn read_at_most(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(max).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Resource limits applied while scanning an archive.
///
/// Every limit is checked while the bytes stream through, so a hostile archive is rejected as
/// soon as it crosses one, with an error that names the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest uncompressed (tar) stream accepted, in bytes. Guards against decompression bombs.
    pub max_uncompressed: u64,
    /// Largest number of tar entries accepted.
    pub max_entries: u64,
    /// Largest metadata block (PAX extended header, GNU long name/link, sparse map) accepted, in
    /// bytes.
    pub max_header_bytes: u64,
    /// Longest path (after normalization) accepted, in bytes.
    pub max_path_len: usize,
}

impl Limits {
    /// Default cap on the uncompressed size: 64 GiB.
    pub const DEFAULT_MAX_UNCOMPRESSED: u64 = 64 << 30;
    /// Default cap on the entry count: 4 million.
    pub const DEFAULT_MAX_ENTRIES: u64 = 4_000_000;
    /// Default cap on one metadata block: 1 MiB.
    pub const DEFAULT_MAX_HEADER_BYTES: u64 = 1 << 20;
    /// Default cap on a path's length: 4096 bytes (Linux `PATH_MAX`).
    pub const DEFAULT_MAX_PATH_LEN: usize = 4096;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_uncompressed: Self::DEFAULT_MAX_UNCOMPRESSED,
            max_entries: Self::DEFAULT_MAX_ENTRIES,
            max_header_bytes: Self::DEFAULT_MAX_HEADER_BYTES,
            max_path_len: Self::DEFAULT_MAX_PATH_LEN,
        }
    }
}
