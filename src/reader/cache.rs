//! The chunk cache: decompressed spans of gzip archives, shared by every reader, bounded in
//! bytes, least recently used out first.

use std::sync::atomic::{AtomicU64, Ordering};
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
    counters: CacheCounters,
}

/// Running totals of a [`ChunkCache`] (plain atomics, read by whoever reports them).
#[derive(Debug, Default)]
pub struct CacheCounters {
    /// Lookups that found their chunk.
    pub hits: AtomicU64,
    /// Lookups that created an empty chunk.
    pub misses: AtomicU64,
    /// Chunks evicted to make room.
    pub evictions: AtomicU64,
    /// Spans whose inflating started (at an access point) by the readers of this cache.
    pub spans_inflated: AtomicU64,
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
        ChunkCache {
            capacity,
            inner: Mutex::new(Inner { lru: LruCache::unbounded(), bytes: 0 }),
            counters: CacheCounters::default(),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The chunk for `key`, created empty (charged `len` bytes) if absent, evicting the least
    /// recently used chunks past the capacity. Evicted chunks stay valid for readers holding
    /// them; the buffer of one that nobody holds is reused for the new chunk, so a reader
    /// streaming through an archive does not map (and fault in) fresh memory for every span.
    pub fn get_or_insert(&self, key: ChunkKey, len: u64) -> Arc<Chunk> {
        let mut inner = self.inner();
        if let Some(chunk) = inner.lru.get(&key) {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            return Arc::clone(chunk);
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        let mut spare = Vec::new();
        while inner.bytes.saturating_add(len) > self.capacity {
            let Some((_, old)) = inner.lru.pop_lru() else { break };
            self.counters.evictions.fetch_add(1, Ordering::Relaxed);
            inner.bytes -= old.len;
            if spare.capacity() == 0 {
                if let Ok(old) = Arc::try_unwrap(old) {
                    let state = old.state.into_inner().unwrap_or_else(|p| p.into_inner());
                    spare = state.data;
                    spare.clear();
                    // Spans differ in length: never keep more than this one needs.
                    spare.shrink_to(usize::try_from(len).unwrap_or(usize::MAX));
                }
            }
        }
        let chunk =
            Arc::new(Chunk { len, state: Mutex::new(ChunkState { data: spare, inflater: None }) });
        inner.lru.put(key, Arc::clone(&chunk));
        inner.bytes += len;
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

    /// The capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Running totals (hits, misses, evictions, spans inflated).
    pub fn counters(&self) -> &CacheCounters {
        &self.counters
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(point: usize) -> ChunkKey {
        ChunkKey { archive: 1, point }
    }

    #[test]
    fn an_evicted_chunk_nobody_holds_lends_its_buffer_to_the_next() {
        let cache = ChunkCache::new(150);
        let a = cache.get_or_insert(key(0), 100);
        a.lock().data.extend_from_slice(&[7u8; 100]);
        drop(a);
        let b = cache.get_or_insert(key(1), 100);
        let state = b.lock();
        assert!(state.data.is_empty(), "a reused buffer starts empty");
        assert!(state.data.capacity() >= 100, "the evicted chunk's buffer was reused");
        drop(state);
        assert_eq!(cache.stats(), CacheStats { chunks: 1, bytes: 100, capacity: 150 });
    }

    #[test]
    fn an_evicted_chunk_still_held_keeps_its_bytes() {
        let cache = ChunkCache::new(150);
        let a = cache.get_or_insert(key(0), 100);
        a.lock().data.extend_from_slice(&[7u8; 100]);
        let b = cache.get_or_insert(key(1), 100);
        assert_eq!(b.lock().data.capacity(), 0, "a held chunk's buffer is not taken");
        assert_eq!(a.lock().data, vec![7u8; 100]);
        assert_eq!(cache.stats().chunks, 1);
        // A new lookup of the evicted key gets a fresh, empty chunk.
        let again = cache.get_or_insert(key(0), 100);
        assert!(again.lock().data.is_empty());
    }
}
