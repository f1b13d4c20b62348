//! Random access to the bytes of any entry: plain tar by positioned reads, gzip by inflating
//! from the nearest access point, with decompressed spans kept in a shared, byte-bounded
//! [`ChunkCache`]. The compressed bytes come from a [`ReadAt`] source: the archive file on disk
//! (`pread`), or whatever else implements it (a node's lazily fetched ranges).

pub mod ahead;
pub mod cache;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

pub use crate::source::ReadAt;
pub use ahead::{ReadAhead, Sequential, Ticket};
pub use cache::{CacheCounters, CacheStats, ChunkCache, ChunkKey};

use cache::{Chunk, ChunkState};

use crate::archive::{Compression, EntryKind};
use crate::gzip::{GzipError, SpanInflater};
use crate::index::open::{current_identity, OpenError};
use crate::index::{Data, Index, IndexError, Ino};

/// How far ahead of a request a span is inflated once reads of it go on sequentially, so they
/// do not relock and resume per call. A span's first read inflates only what it needs, which
/// keeps cold random reads short.
const READ_AHEAD: u64 = 256 << 10;

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No such inode.
    #[error("no inode {0}")]
    NoInode(Ino),
    /// The inode is not a regular file.
    #[error("inode {0} is not a regular file")]
    NotAFile(Ino),
    /// Reading the archive failed (a local file's I/O error, or a lazy source that could not
    /// get or check the bytes in time).
    #[error("{}: read failed at offset {offset}: {source}", archive.display())]
    Io {
        /// The archive.
        archive: PathBuf,
        /// Offset in the archive file.
        offset: u64,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The archive ended before the index says it should.
    #[error("{}: archive ends before offset {offset} (truncated since it was indexed?)", archive.display())]
    Truncated {
        /// The archive.
        archive: PathBuf,
        /// The offset asked for.
        offset: u64,
    },
    /// Inflating failed (the archive changed or is damaged).
    #[error("{}: {source}", archive.display())]
    Gzip {
        /// The archive.
        archive: PathBuf,
        /// What failed.
        #[source]
        source: GzipError,
    },
    /// An access point's window could not be read from the index.
    #[error("{}: {source}", archive.display())]
    Index {
        /// The archive.
        archive: PathBuf,
        /// What failed.
        #[source]
        source: IndexError,
    },
}

impl ReadError {
    /// The errno a file system should answer with.
    pub fn errno(&self) -> i32 {
        match self {
            ReadError::NoInode(_) => libc::ENOENT,
            ReadError::NotAFile(_) => libc::EISDIR,
            _ => libc::EIO,
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Serves random reads of one indexed archive. Cheap to share between threads (`&self` reads).
pub struct ArchiveReader {
    /// The archive's name in messages (a local path, or a store's key for a lazy source).
    path: PathBuf,
    source: Arc<dyn ReadAt>,
    index: Arc<Index>,
    cache: Arc<ChunkCache>,
    id: u64,
}

impl ArchiveReader {
    /// Opens `archive` for reads described by `index`, caching spans in `cache`. Fails if the
    /// file's size or mtime no longer match the index.
    pub fn open(
        archive: &Path,
        index: Arc<Index>,
        cache: Arc<ChunkCache>,
    ) -> Result<Self, OpenError> {
        let file = File::open(archive).map_err(|e| OpenError::io(archive, e))?;
        let meta = file.metadata().map_err(|e| OpenError::io(archive, e))?;
        let now = current_identity(&meta);
        let want = index.identity();
        if (now.size, now.mtime_sec, now.mtime_nsec) != (want.size, want.mtime_sec, want.mtime_nsec)
        {
            return Err(OpenError::Index {
                path: archive.to_path_buf(),
                source: IndexError::Stale("the archive changed since it was indexed".into()),
            });
        }
        Ok(ArchiveReader::with_source(archive, Arc::new(file), index, cache))
    }

    /// Opens `archive` for reads described by `index`, for a file whose bytes the caller has
    /// verified against `index`'s digest itself (a node's cache checks the SHA-256 of every
    /// download before it keeps it): the size must match, the modification time is the
    /// download's, not the uploaded file's, so it is not compared.
    ///
    /// A verified local copy, read by `pread`; [`ArchiveReader::open_source`] is the same for
    /// any other source.
    pub fn open_verified(
        archive: &Path,
        index: Arc<Index>,
        cache: Arc<ChunkCache>,
    ) -> Result<Self, OpenError> {
        let file = File::open(archive).map_err(|e| OpenError::io(archive, e))?;
        ArchiveReader::open_source(Arc::new(file), archive, index, cache)
    }

    /// Serves reads described by `index` from the bytes of `source` (a node's lazily fetched
    /// ranges, say), which must be the archive `index` describes: its length is compared here,
    /// its content is the source's to check (by the index's chunk checksums,
    /// [`Index::chunk_for`]). `name` names the archive in messages. An error of the source
    /// fails the read that needed the bytes with `EIO` ([`ReadError::errno`]); the next read
    /// asks the source again.
    pub fn open_source(
        source: Arc<dyn ReadAt>,
        name: &Path,
        index: Arc<Index>,
        cache: Arc<ChunkCache>,
    ) -> Result<Self, OpenError> {
        let size = source.len();
        if size != index.identity().size {
            return Err(OpenError::Index {
                path: name.to_path_buf(),
                source: IndexError::Stale(format!(
                    "the archive has {size} bytes, its index describes {}",
                    index.identity().size
                )),
            });
        }
        Ok(ArchiveReader::with_source(name, source, index, cache))
    }

    fn with_source(
        name: &Path,
        source: Arc<dyn ReadAt>,
        index: Arc<Index>,
        cache: Arc<ChunkCache>,
    ) -> Self {
        ArchiveReader {
            path: name.to_path_buf(),
            source,
            index,
            cache,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The archive's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The index.
    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// The chunk cache.
    pub fn cache(&self) -> &Arc<ChunkCache> {
        &self.cache
    }

    /// The gzip span (access point's number) holding byte `offset` of file `ino`, for a file
    /// of a gzip archive stored in one piece; `None` otherwise.
    pub fn span_of(&self, ino: Ino, offset: u64) -> Option<usize> {
        if self.index.compression() != Compression::Gzip {
            return None;
        }
        match self.index.data(ino) {
            Data::Contiguous(start) => self.index.point_for(start.checked_add(offset)?),
            _ => None,
        }
    }

    /// Inflates the whole of span `p` into the cache (unless it is there already, or longer
    /// than [`ahead::MAX_SPAN`]), [`ahead::STEP`] bytes per lock of its chunk so a reader
    /// that catches up waits for one step at most. Stops early, leaving what it inflated,
    /// once `stop` is set.
    fn inflate_span(&self, p: usize, stop: &AtomicBool) -> Result<(), ReadError> {
        if self.index.compression() != Compression::Gzip || p >= self.index.point_count() {
            return Ok(());
        }
        let start = self.index.point(p).uncompressed;
        let (chunk, key, _, _, end) = self.span_at(start)?;
        if end - start > ahead::MAX_SPAN {
            return Ok(());
        }
        let mut have = 0u64;
        while have < chunk.len && !stop.load(Ordering::Relaxed) {
            let need = have.saturating_add(ahead::STEP as u64).min(chunk.len);
            have = self.fill(&chunk, key, p, start, need, 0)?.data.len() as u64;
        }
        Ok(())
    }

    /// Reads up to `buf.len()` bytes of file `ino` from `offset`; returns the count (0 at or
    /// past the end). Sparse holes read as zeros.
    pub fn read(&self, ino: Ino, offset: u64, buf: &mut [u8]) -> Result<usize, ReadError> {
        let attr = self.index.attr(ino).ok_or(ReadError::NoInode(ino))?;
        if attr.kind != EntryKind::File {
            return Err(ReadError::NotAFile(ino));
        }
        if offset >= attr.size {
            return Ok(0);
        }
        let len = usize::try_from((attr.size - offset).min(buf.len() as u64)).unwrap_or(buf.len());
        let buf = &mut buf[..len];
        match self.index.data(ino) {
            Data::None => buf.fill(0),
            Data::Contiguous(start) => self.read_stream(start + offset, buf)?,
            Data::Sparse(segments) => {
                buf.fill(0);
                let end = offset + len as u64;
                for seg in segments {
                    let (s, e) = (seg.logical.max(offset), (seg.logical + seg.len).min(end));
                    if s >= e {
                        continue;
                    }
                    let out = &mut buf[(s - offset) as usize..(e - offset) as usize];
                    self.read_stream(seg.stream_offset + (s - seg.logical), out)?;
                }
            }
        }
        Ok(len)
    }

    /// Fills `buf` with the uncompressed tar stream from `offset`.
    pub fn read_stream(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        match self.index.compression() {
            Compression::None => self.pread(offset, buf),
            Compression::Gzip => self.read_gzip(offset, buf),
        }
    }

    fn pread(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        self.source.read_exact_at(buf, offset).map_err(|source| {
            if source.kind() == std::io::ErrorKind::UnexpectedEof {
                ReadError::Truncated { archive: self.path.clone(), offset }
            } else {
                ReadError::Io { archive: self.path.clone(), offset, source }
            }
        })
    }

    /// The span holding uncompressed `offset`: its chunk (as cached, maybe not filled yet),
    /// the chunk's key, the access point's number and the span's start and end.
    fn span_at(&self, offset: u64) -> Result<(Arc<Chunk>, ChunkKey, usize, u64, u64), ReadError> {
        let total = self.index.stats().uncompressed_size;
        let truncated = || ReadError::Truncated { archive: self.path.clone(), offset };
        let p = self.index.point_for(offset).ok_or_else(truncated)?;
        let start = self.index.point(p).uncompressed;
        let end = if p + 1 < self.index.point_count() {
            self.index.point(p + 1).uncompressed
        } else {
            total
        };
        if offset >= end {
            return Err(truncated());
        }
        let key = ChunkKey { archive: self.id, point: p };
        let chunk = self.cache.get_or_insert(key, end - start);
        Ok((chunk, key, p, start, end))
    }

    fn read_gzip(&self, mut offset: u64, mut buf: &mut [u8]) -> Result<(), ReadError> {
        while !buf.is_empty() {
            let (chunk, key, p, start, end) = self.span_at(offset)?;
            let want = (offset + buf.len() as u64).min(end);
            let n = (want - offset) as usize;
            let state = self.fill(&chunk, key, p, start, want - start, READ_AHEAD)?;
            let from = (offset - start) as usize;
            buf[..n].copy_from_slice(&state.data[from..from + n]);
            drop(state);
            buf = &mut buf[n..];
            offset += n as u64;
        }
        Ok(())
    }

    /// Calls `f` with up to `len` bytes of file `ino` from `offset` (fewer at the end of the
    /// file, none at or past it). Bytes of a gzip archive that lie in one span are handed
    /// straight out of the chunk cache (the chunk stays locked while `f` runs); anything else
    /// is read into `buf` first. For passing data on (to the kernel, say) without copying it.
    pub fn read_with<R>(
        &self,
        ino: Ino,
        offset: u64,
        len: usize,
        buf: &mut Vec<u8>,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, ReadError> {
        let attr = self.index.attr(ino).ok_or(ReadError::NoInode(ino))?;
        if attr.kind != EntryKind::File {
            return Err(ReadError::NotAFile(ino));
        }
        if offset >= attr.size {
            return Ok(f(&[]));
        }
        let len = usize::try_from((attr.size - offset).min(len as u64)).unwrap_or(len);
        if let (Compression::Gzip, Data::Contiguous(first)) =
            (self.index.compression(), self.index.data(ino))
        {
            let at = first + offset;
            let (chunk, key, p, start, end) = self.span_at(at)?;
            if at + len as u64 <= end {
                let state =
                    self.fill(&chunk, key, p, start, at + len as u64 - start, READ_AHEAD)?;
                let from = (at - start) as usize;
                return Ok(f(&state.data[from..from + len]));
            }
        }
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let n = self.read(ino, offset, &mut buf[..len])?;
        Ok(f(&buf[..n]))
    }

    /// Tells the source that the compressed bytes of span `p` are about to be read, so a cold
    /// span's bytes come in one request (from disk: `fadvise`; from a store: one range), read
    /// while the first ones are inflated, rather than one small read at a time as the inflater
    /// asks. Only advice.
    fn advise_span(&self, p: usize) {
        // From the byte that holds this point's first bit up to, not including, the one that
        // holds the next point's: each starts a span's chunk (a lazy node fetches and checks
        // chunks whole), so advising a byte more on either side would fetch a whole
        // neighbouring span for a read of this one. The inflater reads the next point's byte
        // only if it gets to this span's last bits.
        let from = self.index.point(p).first_byte();
        let to = if p + 1 < self.index.point_count() {
            self.index.point(p + 1).first_byte()
        } else {
            self.index.identity().size
        };
        self.source.will_need(from, to.saturating_sub(from));
    }

    /// Makes `chunk` (cached under `key`: span of point `p`, starting at `start`) hold at least
    /// `need` bytes, inflating `ahead` bytes further for readers that go on sequentially (not
    /// at a span's first read, which keeps cold random reads short). On an error the chunk is
    /// dropped from the cache, so the next read starts the span afresh.
    fn fill<'c>(
        &self,
        chunk: &'c Chunk,
        key: ChunkKey,
        p: usize,
        start: u64,
        need: u64,
        ahead: u64,
    ) -> Result<std::sync::MutexGuard<'c, ChunkState>, ReadError> {
        let filled = self.fill_span(chunk, p, start, need, ahead);
        if filled.is_err() {
            self.cache.remove(&key);
        }
        filled
    }

    /// [`ArchiveReader::fill`] without the clean-up on error.
    fn fill_span<'c>(
        &self,
        chunk: &'c Chunk,
        p: usize,
        start: u64,
        need: u64,
        ahead: u64,
    ) -> Result<std::sync::MutexGuard<'c, ChunkState>, ReadError> {
        let mut state = chunk.lock();
        if state.data.len() as u64 >= need {
            return Ok(state);
        }
        let gzip_error = |source| ReadError::Gzip { archive: self.path.clone(), source };
        if state.inflater.is_none() {
            if !state.data.is_empty() {
                // Invariant broken by an earlier error: start over.
                state.data.clear();
            }
            let point = self.index.point(p);
            // Advised before the window is read: from a store the span's range and the
            // window's are then asked for at once, one round trip instead of two.
            self.advise_span(p);
            let window = if point.has_window {
                self.index
                    .point_window(p)
                    .map_err(|source| ReadError::Index { archive: self.path.clone(), source })?
            } else {
                Vec::new()
            };
            let inflater = SpanInflater::new(
                Arc::clone(&self.source),
                point.uncompressed,
                point.compressed,
                point.bits,
                &window,
            )
            .map_err(gzip_error)?;
            state.data.reserve_exact(chunk.len as usize);
            state.inflater = Some(inflater);
            self.cache.counters().spans_inflated.fetch_add(1, Ordering::Relaxed);
        }
        let ahead = if state.data.is_empty() { 0 } else { ahead };
        let target = need.saturating_add(ahead).min(chunk.len) as usize;
        let ChunkState { data, inflater: slot } = &mut *state;
        let Some(inflater) = slot.as_mut() else {
            return Err(ReadError::Truncated { archive: self.path.clone(), offset: start });
        };
        while data.len() < target {
            let old = data.len();
            data.resize(target, 0);
            match inflater.read(&mut data[old..]) {
                Ok(0) => {
                    data.truncate(old);
                    return Err(ReadError::Truncated {
                        archive: self.path.clone(),
                        offset: start + old as u64,
                    });
                }
                Ok(n) => data.truncate(old + n),
                Err(e) => {
                    data.truncate(old);
                    *slot = None;
                    return Err(gzip_error(e));
                }
            }
        }
        if data.len() as u64 >= chunk.len {
            state.inflater = None;
        }
        Ok(state)
    }
}

impl Drop for ArchiveReader {
    fn drop(&mut self) {
        self.cache.remove_archive(self.id);
    }
}
