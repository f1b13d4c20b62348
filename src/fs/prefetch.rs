//! Read-ahead across gzip spans: while a reader walks a gzip archive front to back (as tree
//! walkers and readers of large files do; listings follow the stream, see [`super::namespace`]),
//! the spans after the one being read are inflated into the shared chunk cache by the reader's
//! worker pool ([`crate::reader::ReadAhead`]), several at once, so inflating overlaps with
//! serving requests and uses every core instead of stalling the reader.
//!
//! Only forward progress triggers it: a read in span `p` right after a read in `p` or `p - 1`
//! asks for the spans up to `p + depth` not asked for yet ([`ReadAhead::depth`]: two per
//! worker, bounded by a quarter of the cache). Random access (imports, lookups of single files)
//! never does, so it costs nothing there. When the pool's queue is full, requests are dropped.
//! Memory: the spans are charged to the chunk cache.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::namespace::Volume;
use crate::archive::Compression;
use crate::index::Ino;
use crate::reader::{ReadAhead, Ticket};

/// "No span yet".
const NONE: usize = usize::MAX;

/// Per-volume progress, kept on the [`Volume`].
#[derive(Debug)]
pub struct Progress {
    /// The span of the last read.
    last: AtomicUsize,
    /// The highest span asked for already.
    asked: AtomicUsize,
    /// The volume's claim on the pool (where its reader has got).
    ticket: Ticket,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            last: AtomicUsize::new(NONE),
            asked: AtomicUsize::new(NONE),
            ticket: Ticket::new(),
        }
    }
}

/// Asks the worker pool for the spans ahead of forward readers.
#[derive(Clone)]
pub struct Prefetcher {
    pool: Arc<ReadAhead>,
}

impl Prefetcher {
    /// Starts the worker pool, one worker per core but one (it ends when the last prefetcher is
    /// dropped): a request thread inflates what it reads itself when it catches up, and the
    /// reading process and the kernel's copies need the rest. Measured on 2 cores through the
    /// mount, a second worker made a read of every file 12% slower, at the same CPU (see
    /// docs/benchmarks.md, issue 16). `None` if no thread can be spawned (reads then simply
    /// are not read ahead).
    pub fn start() -> Option<Prefetcher> {
        let workers = ReadAhead::default_workers().saturating_sub(1).max(1);
        let pool = ReadAhead::start(workers)
            .map_err(|e| tracing::warn!(error = %e, "no read-ahead threads"))
            .ok()?;
        Some(Prefetcher { pool: Arc::new(pool) })
    }

    /// Notes a read of `len` bytes at `offset` of file `ino` of `volume`, and asks for the next
    /// spans if the volume is being read forward.
    pub fn note(&self, volume: &Arc<Volume>, ino: Ino, offset: u64, len: usize) {
        if len == 0 {
            return;
        }
        let Some(span) = volume.reader().span_of(ino, offset) else { return };
        let progress = volume.progress();
        progress.ticket.reached(span);
        let last = progress.last.swap(span, Ordering::Relaxed);
        let forward = last != NONE && (last == span || last.checked_add(1) == Some(span));
        if forward {
            self.ahead(volume, span);
        }
    }

    /// Asks for the spans after `span` of `volume` (those not asked for yet).
    pub fn ahead(&self, volume: &Arc<Volume>, span: usize) {
        let reader = volume.shared_reader();
        if reader.index().compression() != Compression::Gzip {
            return;
        }
        let depth = self.pool.depth(reader);
        let progress = volume.progress();
        for next in span + 1..=span + depth {
            let asked = progress.asked.load(Ordering::Relaxed);
            // (A mark far ahead is left from an earlier pass: ask again.)
            if asked != NONE && asked >= next && asked <= span + depth {
                continue;
            }
            if !self.pool.request(reader, next, &progress.ticket) {
                return;
            }
            progress.asked.store(next, Ordering::Relaxed);
        }
    }
}
