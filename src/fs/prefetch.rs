//! Read-ahead across gzip spans: while a reader walks a gzip archive front to back (as tree
//! walkers do, since listings follow the stream, see [`super::namespace`]), the span after the
//! one being read is inflated into the shared chunk cache on a background thread, so inflating
//! overlaps with serving requests instead of stalling them.
//!
//! Only forward progress triggers it: a read in span `p` right after a read in `p` or `p - 1`
//! asks for `p + 1`, once. Random access (imports, lookups of single files) never does, so it
//! costs nothing there. At most one span is queued; when the thread is busy, the request is
//! dropped. Memory: one step buffer; the spans themselves are charged to the chunk cache.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use super::namespace::Volume;
use crate::archive::Compression;
use crate::index::{Data, Ino};

/// How much of a span one step inflates (the chunk is unlocked between steps, so a reader that
/// catches up is never kept waiting for the whole span).
const STEP: usize = 256 << 10;
/// Spans longer than this are not read ahead (they would not fit the cache usefully).
const MAX_SPAN: u64 = 64 << 20;
/// How many spans ahead of the one being read are inflated.
const AHEAD: usize = 4;
/// "No span yet".
const NONE: usize = usize::MAX;

/// Per-volume progress, kept on the [`Volume`].
#[derive(Debug)]
pub struct Progress {
    /// The span of the last read.
    last: AtomicUsize,
    /// The highest span asked for already.
    asked: AtomicUsize,
}

impl Default for Progress {
    fn default() -> Self {
        Progress { last: AtomicUsize::new(NONE), asked: AtomicUsize::new(NONE) }
    }
}

/// Sends spans to read ahead to the background thread.
#[derive(Clone)]
pub struct Prefetcher {
    queue: SyncSender<(Arc<Volume>, usize)>,
}

impl Prefetcher {
    /// Starts the background thread (it ends when the prefetcher is dropped). `None` if the
    /// thread cannot be spawned (reads then simply are not read ahead).
    pub fn start() -> Option<Prefetcher> {
        let (queue, requests) = mpsc::sync_channel(AHEAD);
        std::thread::Builder::new()
            .name("addonfs-prefetch".into())
            .spawn(move || run(&requests))
            .map_err(|e| tracing::warn!(error = %e, "no read-ahead thread"))
            .ok()?;
        Some(Prefetcher { queue })
    }

    /// Notes a read of `len` bytes at `offset` of file `ino` of `volume`, and asks for the next
    /// span if the volume is being read forward.
    pub fn note(&self, volume: &Arc<Volume>, ino: Ino, offset: u64, len: usize) {
        let index = volume.index();
        if index.compression() != Compression::Gzip || len == 0 {
            return;
        }
        let Data::Contiguous(start) = index.data(ino) else { return };
        let Some(span) = index.point_for(start.saturating_add(offset)) else { return };
        let progress = volume.progress();
        let last = progress.last.swap(span, Ordering::Relaxed);
        let forward = last != NONE && (last == span || last.checked_add(1) == Some(span));
        if forward {
            self.ahead(volume, span);
        }
    }

    /// Asks for the spans after `span` of `volume` (those not asked for yet).
    pub fn ahead(&self, volume: &Arc<Volume>, span: usize) {
        let index = volume.index();
        if index.compression() != Compression::Gzip {
            return;
        }
        let progress = volume.progress();
        for next in span + 1..=span + AHEAD {
            if next >= index.point_count() {
                return;
            }
            let asked = progress.asked.load(Ordering::Relaxed);
            // (A mark far ahead is left from an earlier pass: ask again.)
            if asked != NONE && asked >= next && asked <= span + AHEAD {
                continue;
            }
            match self.queue.try_send((Arc::clone(volume), next)) {
                Ok(()) => progress.asked.store(next, Ordering::Relaxed),
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => return,
            }
        }
    }
}

/// The background thread: inflates each requested span into the cache, a step at a time.
fn run(requests: &Receiver<(Arc<Volume>, usize)>) {
    let mut buf = vec![0u8; STEP];
    while let Ok((volume, span)) = requests.recv() {
        let index = volume.index();
        let start = index.point(span).uncompressed;
        let end = if span + 1 < index.point_count() {
            index.point(span + 1).uncompressed
        } else {
            index.stats().uncompressed_size
        };
        if end <= start || end - start > MAX_SPAN {
            continue;
        }
        let mut at = start;
        while at < end {
            let n = usize::try_from(end - at).map_or(STEP, |left| left.min(STEP));
            if let Err(e) = volume.reader().read_stream(at, &mut buf[..n]) {
                tracing::debug!(span, offset = at, error = %e, "read-ahead stopped");
                break;
            }
            at += n as u64;
        }
    }
}
