//! The chunk cache: decompressed spans of gzip archives, shared by every reader, bounded in
//! bytes, least recently used out first.

use std::sync::{Arc, Mutex, MutexGuard};

use lru::LruCache;

use crate::gzip::SpanInflater;

/// Identifies one span: the cache id of an open archive and the access point the span starts at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkKey {
    /// The archive's cache id (unique per [`super::ArchiveReader`]).
    pub archive: u64,
    /// The access point's number.
    pub point: usize,
}

/// The decompressed bytes of one span, filled on demand from its start.
///
/// Invariant: while `data.len() < len`, `inflater` is either `None` (nothing inflated yet)
/// or positioned exactly at the span start plus `data.len()`. Once the span is whole the
/// inflater is dropped.
pub struct Chunk {
    /// The span's length in uncompressed bytes.
    pub len: u64,
    state: Mutex<ChunkState>,
}

/// The mutable part of a [`Chunk`].
pub struct ChunkState {
    /// Bytes inflated so far, from the span start.
    pub data: Vec<u8>,
    /// The suspended inflater, positioned at the end of `data`.
    pub inflater: Option<SpanInflater>,
}

impl Chunk {
    /// Locks the chunk for filling or reading. Readers of other chunks are not blocked.
    pub fn lock(&self) -> MutexGuard<'_, ChunkState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A byte-bounded LRU of [`Chunk`]s, shared by all readers (thread-safe; the global lock is
/// only held to look up, insert or evict, never while inflating).
pub struct ChunkCache {
    capacity: u64,
    inner: Mutex<Inner>,
}

struct Inner {
    lru: LruCache<ChunkKey, Arc<Chunk>>,
    bytes: u64,
}

/// Counters of a [`ChunkCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Chunks held.
    pub chunks: usize,
    /// Bytes charged (each chunk is charged its full span length).
    pub bytes: u64,
    /// The configured capacity in bytes.
    pub capacity: u64,
}

impl ChunkCache {
    /// The default capacity: 32 MiB.
    pub const DEFAULT_CAPACITY: u64 = 32 << 20;

    /// A cache holding at most about `capacity` bytes (at least one chunk is always kept).
    pub fn new(capacity: u64) -> Self {
        ChunkCache { capacity, inner: Mutex::new(Inner { lru: LruCache::unbounded(), bytes: 0 }) }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The chunk for `key`, created empty (charged `len` bytes) if absent, evicting the least
    /// recently used chunks past the capacity. Evicted chunks stay valid for readers holding
    /// them.
    pub fn get_or_insert(&self, key: ChunkKey, len: u64) -> Arc<Chunk> {
        let mut inner = self.inner();
        if let Some(chunk) = inner.lru.get(&key) {
            return Arc::clone(chunk);
        }
        let chunk = Arc::new(Chunk {
            len,
            state: Mutex::new(ChunkState { data: Vec::new(), inflater: None }),
        });
        inner.lru.put(key, Arc::clone(&chunk));
        inner.bytes += len;
        while inner.bytes > self.capacity && inner.lru.len() > 1 {
            match inner.lru.pop_lru() {
                Some((_, old)) => inner.bytes -= old.len,
                None => break,
            }
        }
        chunk
    }

    /// Forgets the chunk for `key` (after an error while filling it).
    pub fn remove(&self, key: &ChunkKey) {
        let mut inner = self.inner();
        if let Some(old) = inner.lru.pop(key) {
            inner.bytes -= old.len;
        }
    }

    /// Forgets every chunk of one archive (when it is closed).
    pub fn remove_archive(&self, archive: u64) {
        let mut inner = self.inner();
        let keys: Vec<ChunkKey> =
            inner.lru.iter().map(|(k, _)| *k).filter(|k| k.archive == archive).collect();
        for key in keys {
            if let Some(old) = inner.lru.pop(&key) {
                inner.bytes -= old.len;
            }
        }
    }

    /// Current counters.
    pub fn stats(&self) -> CacheStats {
        let inner = self.inner();
        CacheStats { chunks: inner.lru.len(), bytes: inner.bytes, capacity: self.capacity }
    }
}

impl Default for ChunkCache {
    fn default() -> Self {
        ChunkCache::new(Self::DEFAULT_CAPACITY)
    }
}

const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ChunkCache>();
};
