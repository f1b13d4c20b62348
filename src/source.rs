//! Byte sources: where the reader and the gzip inflater get an archive's compressed bytes (and
//! an index its access points' windows), by positioned reads.
//!
//! A local file is one ([`std::fs::File`] reads by `pread`, exactly as before the seam
//! existed: no copy, no lock, one virtual call per read). A node that fetches an add-on's
//! bytes lazily from an object store is another: it implements [`ReadAt`] over ranges it
//! fetches, checks and caches, and the reader above never knows the difference. The trait
//! lives at the bottom of the crate because both the gzip layer and the index read through
//! it; `reader::ReadAt` re-exports it.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Random-access reads of a fixed-length byte sequence (an archive file, an index file), from
/// many threads at once.
///
/// An error means the bytes could not be had *now* (a store that is down, a range that failed
/// its checksum twice): the reader turns it into an `EIO` for the read that needed them, and a
/// later read asks again. A source must never hand out bytes it has not checked.
pub trait ReadAt: Send + Sync {
    /// Fills `buf` with the bytes at `offset`. Asking for bytes past [`ReadAt::len`] fails
    /// with [`io::ErrorKind::UnexpectedEof`].
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// The length of the byte sequence.
    fn len(&self) -> u64;

    /// True if the byte sequence is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads up to `buf.len()` bytes at `offset`, fewer only at the end (0 at or past it).
    /// This is what the inflater calls: it reads ahead in blocks and cannot know where the
    /// last member ends.
    fn read_at_most(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let left = self.len().saturating_sub(offset);
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        self.read_exact_at(&mut buf[..n], offset)?;
        Ok(n)
    }

    /// A hint that `[offset, offset + len)` is about to be read (a gzip span that starts to be
    /// inflated), so the source can get it in one request rather than block by block. The
    /// default does nothing.
    fn will_need(&self, offset: u64, len: u64) {
        let _ = (offset, len);
    }
}

/// A local file, read by `pread`. [`ReadAt::len`] asks the file system (one `fstat`): the
/// reader calls it once, when it opens the file; the read path calls only the reads.
impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }

    fn len(&self) -> u64 {
        self.metadata().map_or(0, |m| m.len())
    }

    /// `pread` until `buf` is full or the file ends: the same system calls as before the seam
    /// (no `fstat` to find the end first).
    fn read_at_most(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            let at = offset.saturating_add(filled as u64);
            match FileExt::read_at(self, &mut buf[filled..], at) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(filled)
    }

    fn will_need(&self, offset: u64, len: u64) {
        // Only advice: a failure changes nothing but speed.
        let len = std::num::NonZeroU64::new(len);
        let _ = rustix::fs::fadvise(self, offset, len, rustix::fs::Advice::WillNeed);
    }
}

/// Bytes in memory (tests, an index's windows fetched whole).
impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let bytes = usize::try_from(offset)
            .ok()
            .and_then(|start| self.get(start..start.checked_add(buf.len())?))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{} bytes at offset {offset} asked of a {}-byte source",
                        buf.len(),
                        self.len()
                    ),
                )
            })?;
        buf.copy_from_slice(bytes);
        Ok(())
    }

    fn len(&self) -> u64 {
        Vec::len(self) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn file_and_memory_agree() {
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut tmp = tempfile::NamedTempFile::new().expect("temp file");
        tmp.write_all(&bytes).expect("write");
        let file = File::open(tmp.path()).expect("open");
        let sources: [&dyn ReadAt; 2] = [&file, &bytes];
        for source in sources {
            assert_eq!(source.len(), 10_000);
            let mut buf = [0u8; 100];
            source.read_exact_at(&mut buf, 9_900).expect("last 100 bytes");
            assert_eq!(&buf[..], &bytes[9_900..]);
            let err = source.read_exact_at(&mut buf, 9_901).expect_err("past the end");
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
            assert_eq!(source.read_at_most(&mut buf, 9_950).expect("short"), 50);
            assert_eq!(&buf[..50], &bytes[9_950..]);
            assert_eq!(source.read_at_most(&mut buf, 10_000).expect("at the end"), 0);
            source.will_need(0, 10_000);
        }
    }
}
