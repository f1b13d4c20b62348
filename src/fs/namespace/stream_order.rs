//! Listings in archive-stream order: a directory lists its entries by where their bytes are in
//! the archive, so tools that walk a tree in listing order read the archive front to back.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::archive::EntryKind;
use crate::index::{Data, Index, Ino};

use super::{compose, Volume};

/// Directories with more entries than this keep their listing order cached.
const ORDER_CACHE_MIN_ENTRIES: usize = 64;
/// How many listing orders are cached.
const ORDER_CACHE_DIRS: usize = 256;
/// How many entries of a subdirectory are looked at to place it in its parent's listing.
const ORDER_PROBE: usize = 16;

/// The listing orders of large directories, by FUSE inode number (an LRU of
/// [`ORDER_CACHE_DIRS`]): the kernel lists a large directory in several calls, and each would
/// otherwise sort it again.
pub(super) struct ListingOrders(Mutex<LruCache<u64, Arc<[u32]>>>);

impl ListingOrders {
    pub(super) fn new() -> ListingOrders {
        ListingOrders(Mutex::new(LruCache::new(
            NonZeroUsize::new(ORDER_CACHE_DIRS).unwrap_or(NonZeroUsize::MIN),
        )))
    }

    /// The order in which directory `dir` of `volume` lists its entries: positions into its
    /// name-sorted entries, sorted by where each entry's bytes are in the archive stream (a
    /// directory by the first bytes among its first entries; entries without bytes last, in name
    /// order). Tools that walk a tree in listing order (`tar -c`, `cp -r`, `rsync`) then read
    /// the archive front to back, so every gzip span is inflated once instead of being inflated
    /// again for each name-ordered jump. Deterministic, so listing offsets stay valid; cached
    /// for large directories, which the kernel lists in several calls.
    pub(super) fn of(&self, volume: &Volume, dir: Ino) -> Arc<[u32]> {
        let index = volume.index();
        let count = index.child_count(dir).min(u32::MAX as usize);
        let key = compose(volume.slot(), dir);
        let cached = count > ORDER_CACHE_MIN_ENTRIES;
        if cached {
            if let Some(order) = self.0.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
                return Arc::clone(order);
            }
        }
        let mut keyed: Vec<(u64, u32)> = index
            .children(dir, 0)
            .take(count)
            .enumerate()
            .map(|(position, (_, child))| (stream_key(index, child, 1), position as u32))
            .collect();
        keyed.sort_unstable();
        let order: Arc<[u32]> = keyed.into_iter().map(|(_, position)| position).collect();
        if cached {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).put(key, Arc::clone(&order));
        }
        order
    }
}

/// Where directory (or file) `ino` is in the archive stream, as listings order it (`u64::MAX`
/// for entries without bytes).
pub(crate) fn stream_position(index: &Index, ino: Ino) -> u64 {
    stream_key(index, ino, 1)
}

/// Where the bytes of `ino` start in the archive stream: a file's first data byte; a
/// directory's earliest among its first [`ORDER_PROBE`] entries (looking `depth` levels down);
/// `u64::MAX` for what has no bytes.
fn stream_key(index: &Index, ino: Ino, depth: u32) -> u64 {
    match index.attr(ino).map(|a| a.kind) {
        Some(EntryKind::File) => match index.data(ino) {
            Data::Contiguous(offset) => offset,
            Data::Sparse(runs) => runs.first().map_or(u64::MAX, |r| r.stream_offset),
            Data::None => u64::MAX,
        },
        Some(EntryKind::Dir) if depth > 0 => index
            .children(ino, 0)
            .take(ORDER_PROBE)
            .map(|(_, child)| stream_key(index, child, depth - 1))
            .min()
            .unwrap_or(u64::MAX),
        _ => u64::MAX,
    }
}
