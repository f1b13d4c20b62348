//! Read-ahead on a small pool of worker threads: the spans ahead of a sequential reader of a
//! gzip archive are inflated into the shared chunk cache **concurrently**, one span per worker,
//! so on a machine of several cores they all inflate while the reader copies.
//!
//! Spans between access points are independent (each resumes at its own point with its own
//! window), so nothing orders the workers. A span a worker is inflating is an ordinary chunk of
//! the cache: its suspended inflater is shared, a reader that catches up continues where the
//! worker stopped (the chunk is unlocked between steps of [`STEP`] bytes), and no byte is
//! inflated twice.
//!
//! Memory stays within the cache's bound: how far ahead a reader is served ([`ReadAhead::depth`])
//! is limited to a quarter of the cache's capacity in spans, so the spans in flight never evict
//! the one being read, and each span is charged to the cache as soon as a worker starts it.
//! Beyond the bound, at most one span per worker is held while evicted (a worker finishing a
//! span nobody reads any more).
//!
//! Jobs name their reader weakly: once its owner drops an [`ArchiveReader`], its queued spans
//! are skipped, and the reader is dropped (its chunks with it) when the worker inflating one
//! of its spans finishes. A [`Ticket`] cancels a reader's jobs outright: queued ones are taken
//! off the queue, a running one stops at its next step. [`Sequential`] is the whole thing for
//! one front-to-back reader (`addonfs cat`), cancelled when it is dropped.

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;

use super::{ArchiveReader, ReadError};
use crate::archive::Compression;
use crate::index::Ino;

/// How much of a span a worker inflates per lock of its chunk (a reader that catches up waits
/// for at most one step).
pub const STEP: usize = 256 << 10;
/// Spans longer than this are not read ahead (a handful of them would not fit the cache).
pub const MAX_SPAN: u64 = 64 << 20;
/// At most this many workers, however many cores.
const MAX_WORKERS: usize = 8;
/// At most this many spans queued (for all readers together); further requests are dropped.
const MAX_QUEUED: usize = 64;

/// One reader's claim on the pool: cancels the read-ahead asked for with it, and says where the
/// reader has got, so a span it has passed is not inflated late (under load a worker may
/// start a job after the reader went by; the span may have been evicted since, and would be
/// inflated again for nobody). Cheap to clone; all clones are one ticket.
#[derive(Debug, Clone)]
pub struct Ticket(Arc<TicketState>);

#[derive(Debug)]
struct TicketState {
    cancelled: AtomicBool,
    /// The span of the reader's last read (`usize::MAX` before any).
    at: AtomicUsize,
}

impl Default for Ticket {
    fn default() -> Self {
        Ticket(Arc::new(TicketState {
            cancelled: AtomicBool::new(false),
            at: AtomicUsize::new(usize::MAX),
        }))
    }
}

impl Ticket {
    /// A live ticket.
    pub fn new() -> Ticket {
        Ticket::default()
    }

    /// Cancels: queued spans asked for with this ticket are dropped, a running one stops at its
    /// next step, and later requests with it are refused.
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::Relaxed);
    }

    /// Whether [`Ticket::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::Relaxed)
    }

    /// Notes that the reader reads span `span` now: queued spans up to it are skipped (the
    /// reader inflates what it needs of its own span itself).
    pub fn reached(&self, span: usize) {
        self.0.at.store(span, Ordering::Relaxed);
    }

    /// Whether the reader is at or past `span`.
    fn passed(&self, span: usize) -> bool {
        let at = self.0.at.load(Ordering::Relaxed);
        at != usize::MAX && span <= at
    }
}

struct Job {
    reader: Weak<ArchiveReader>,
    span: usize,
    ticket: Ticket,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Jobs taken by a worker and not finished yet.
    running: usize,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a job is queued or the pool closes.
    work: Condvar,
    /// Signalled when the last running job finishes with nothing queued.
    idle: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The pool. Dropping it drops the queued jobs and waits for the running ones (at most one
/// [`STEP`] each once cancelled, one span otherwise).
pub struct ReadAhead {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl ReadAhead {
    /// The number of workers for this machine: one per core (a sequential reader's own thread
    /// mostly copies once the workers are ahead of it), between 1 and 8.
    pub fn default_workers() -> usize {
        std::thread::available_parallelism().map_or(1, NonZeroUsize::get).clamp(1, MAX_WORKERS)
    }

    /// Starts `workers` threads (at least one, at most 8). Fails only if no thread could be
    /// spawned; fewer are fine.
    pub fn start(workers: usize) -> std::io::Result<ReadAhead> {
        let shared = Arc::new(Shared::default());
        let mut handles = Vec::new();
        let mut last_error = None;
        for i in 0..workers.clamp(1, MAX_WORKERS) {
            let shared = Arc::clone(&shared);
            match std::thread::Builder::new()
                .name(format!("addonfs-ahead-{i}"))
                .spawn(move || work(&shared))
            {
                Ok(handle) => handles.push(handle),
                Err(e) => last_error = Some(e),
            }
        }
        match (handles.is_empty(), last_error) {
            (true, Some(e)) => Err(e),
            _ => Ok(ReadAhead { shared, workers: handles }),
        }
    }

    /// How many workers run.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// How many spans past the one being read to keep inflated or in flight for `reader`: two
    /// per worker (one inflating, one queued behind it), but never more than a quarter of the
    /// cache's capacity in spans of the archive's average length, and at least one.
    pub fn depth(&self, reader: &ArchiveReader) -> usize {
        let index = reader.index();
        let points = index.point_count().max(1) as u64;
        let average = (index.stats().uncompressed_size / points).max(1);
        let room = usize::try_from(reader.cache().capacity() / 4 / average).unwrap_or(usize::MAX);
        (2 * self.workers.len()).min(room).max(1)
    }

    /// Asks for span `span` of `reader` to be inflated into the cache. False if it was not
    /// queued: the ticket is cancelled, the archive is not gzip, there is no such span, or the
    /// queue is full. A span already queued for the same reader is not queued twice.
    pub fn request(&self, reader: &Arc<ArchiveReader>, span: usize, ticket: &Ticket) -> bool {
        if ticket.is_cancelled()
            || reader.index().compression() != Compression::Gzip
            || span >= reader.index().point_count()
        {
            return false;
        }
        let mut queue = self.shared.lock();
        if queue.closed {
            return false;
        }
        let weak = Arc::downgrade(reader);
        if queue.jobs.iter().any(|j| j.span == span && Weak::ptr_eq(&j.reader, &weak)) {
            return true;
        }
        if queue.jobs.len() >= MAX_QUEUED {
            return false;
        }
        queue.jobs.push_back(Job { reader: weak, span, ticket: ticket.clone() });
        drop(queue);
        self.shared.work.notify_one();
        true
    }

    /// Drops the queued jobs of `ticket` and cancels it (a running job stops at its next step).
    pub fn cancel(&self, ticket: &Ticket) {
        ticket.cancel();
        self.shared.lock().jobs.retain(|j| !j.ticket.is_cancelled());
    }

    /// Waits until no job is queued or running (for tests and benchmarks).
    pub fn wait_idle(&self) {
        let mut queue = self.shared.lock();
        while !queue.jobs.is_empty() || queue.running > 0 {
            queue = self.shared.idle.wait(queue).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// One front-to-back reader of `reader` through this pool.
    pub fn sequential(&self, reader: Arc<ArchiveReader>) -> Sequential<'_> {
        Sequential {
            pool: self,
            depth: self.depth(&reader),
            reader,
            asked: None,
            ticket: Ticket::new(),
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        {
            let mut queue = self.shared.lock();
            queue.closed = true;
            for job in queue.jobs.drain(..) {
                job.ticket.cancel();
            }
        }
        self.shared.work.notify_all();
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}

/// A worker: takes the oldest job, inflates its span, until the pool closes.
fn work(shared: &Shared) {
    loop {
        let job = {
            let mut queue = shared.lock();
            loop {
                if let Some(job) = queue.jobs.pop_front() {
                    queue.running += 1;
                    break job;
                }
                if queue.closed {
                    return;
                }
                queue = shared.work.wait(queue).unwrap_or_else(|p| p.into_inner());
            }
        };
        if !job.ticket.is_cancelled() && !job.ticket.passed(job.span) {
            // Held strongly only while its span inflates: the reader's owner may drop it.
            if let Some(reader) = job.reader.upgrade() {
                if let Err(e) = reader.inflate_span(job.span, &job.ticket.0.cancelled) {
                    tracing::debug!(span = job.span, error = %e, "read-ahead of a span stopped");
                }
            }
        }
        let mut queue = shared.lock();
        queue.running -= 1;
        if queue.running == 0 && queue.jobs.is_empty() {
            shared.idle.notify_all();
        }
    }
}

/// One front-to-back reader: each read asks for the spans after the one it lands in (those not
/// asked for yet, up to [`ReadAhead::depth`]). Dropping it cancels what it asked for and still
/// waits in the queue.
pub struct Sequential<'p> {
    pool: &'p ReadAhead,
    reader: Arc<ArchiveReader>,
    depth: usize,
    /// The last span asked for.
    asked: Option<usize>,
    ticket: Ticket,
}

impl Sequential<'_> {
    /// Reads like [`ArchiveReader::read`], first asking for the spans ahead of `offset`.
    pub fn read(&mut self, ino: Ino, offset: u64, buf: &mut [u8]) -> Result<usize, ReadError> {
        if let Some(span) = self.reader.span_of(ino, offset) {
            self.ticket.reached(span);
            let last = span + self.depth;
            let first = match self.asked {
                Some(asked) if asked > span && asked <= last => asked + 1,
                _ => span + 1,
            };
            for next in first..=last {
                if !self.pool.request(&self.reader, next, &self.ticket) {
                    break;
                }
                self.asked = Some(next);
            }
        }
        self.reader.read(ino, offset, buf)
    }

    /// The reader.
    pub fn reader(&self) -> &Arc<ArchiveReader> {
        &self.reader
    }
}

impl Drop for Sequential<'_> {
    fn drop(&mut self) {
        self.pool.cancel(&self.ticket);
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::archive::ScanOptions;
    use crate::index::open::build;
    use crate::index::{Index, ROOT_INO};
    use crate::reader::ChunkCache;

    /// Span of the test archives: small, so a few MiB make dozens of spans.
    const SPAN: u64 = 64 << 10;

    /// A tar.gz made by GNU tar of `files` files of ~`size` bytes of non-repeating hex text
    /// (deflate halves it: many access points with real windows), and the files' bytes.
    fn archive(dir: &Path, files: u32, size: u32) -> Option<(PathBuf, Vec<Vec<u8>>)> {
        if !crate::testutil::require("tar") {
            return None;
        }
        let tree = dir.join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        let mut all = Vec::new();
        for i in 0..files {
            let text: String = (0..size / 9)
                .map(|j| format!("{:08x}\n", (i * size + j).wrapping_mul(2_654_435_761)))
                .collect();
            std::fs::write(tree.join(format!("f{i:02}")), &text).unwrap();
            all.push(text.into_bytes());
        }
        let archive = dir.join("a.tar.gz");
        let ok = std::process::Command::new("tar")
            .arg("-C")
            .arg(&tree)
            .arg("-czf")
            .arg(&archive)
            .arg(".")
            .status()
            .unwrap();
        assert!(ok.success());
        Some((archive, all))
    }

    fn open(archive: &Path, cache: &Arc<ChunkCache>) -> Arc<ArchiveReader> {
        let opts = ScanOptions { span: SPAN, ..ScanOptions::default() };
        let index = Arc::new(build(archive, &opts, None).unwrap());
        Arc::new(ArchiveReader::open(archive, index, Arc::clone(cache)).unwrap())
    }

    fn ino(index: &Index, name: &str) -> Ino {
        index.lookup(ROOT_INO, name.as_bytes()).unwrap()
    }

    /// Reads file `name` front to back through `sequential` in `step`-byte reads.
    fn read_through(sequential: &mut Sequential<'_>, name: &str, step: usize) -> Vec<u8> {
        let ino = ino(sequential.reader().index(), name);
        let mut out = Vec::new();
        let mut buf = vec![0u8; step];
        loop {
            let n = sequential.read(ino, out.len() as u64, &mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    /// Several sequential readers and the workers inflating ahead of them, all at once, on a
    /// cache of a few spans: the bytes charged never pass the capacity (sampled all along),
    /// every byte read is right, and a lone sequential reader gets every span inflated exactly
    /// once (the read-ahead never evicts a span before the reader gets to it).
    #[test]
    fn the_cache_bound_holds_under_parallel_read_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let Some((archive, files)) = archive(dir.path(), 6, 600_000) else { return };
        let capacity = 12 * SPAN;
        let cache = Arc::new(ChunkCache::new(capacity));
        let reader = open(&archive, &cache);
        assert!(reader.index().point_count() > 30, "the archive has many spans");
        let pool = ReadAhead::start(4).unwrap();
        assert_eq!(pool.workers(), 4);
        // Two per worker would be 8; a quarter of the cache is less.
        let depth = pool.depth(&reader);
        assert!((1..=3).contains(&depth), "depth {depth}");

        let done = AtomicBool::new(false);
        let mut peak = 0;
        std::thread::scope(|s| {
            let monitor = s.spawn(|| {
                let mut peak = 0;
                while !done.load(Ordering::Relaxed) {
                    peak = peak.max(cache.stats().bytes);
                    std::thread::yield_now();
                }
                peak
            });
            let readers: Vec<_> = (0..3usize)
                .map(|t| {
                    let (pool, reader, files) = (&pool, Arc::clone(&reader), &files);
                    s.spawn(move || {
                        let mut sequential = pool.sequential(reader);
                        for (i, want) in files.iter().enumerate().skip(t) {
                            let got = read_through(&mut sequential, &format!("f{i:02}"), 40_000);
                            assert!(got == *want, "reader {t}: f{i:02}");
                        }
                    })
                })
                .collect();
            for r in readers {
                r.join().unwrap();
            }
            pool.wait_idle();
            done.store(true, Ordering::Relaxed);
            peak = monitor.join().unwrap();
        });
        assert!(peak > 0 && peak <= capacity, "charged {peak} bytes of {capacity}");
        assert!(cache.stats().bytes <= capacity);

        // One reader alone, from a cold cache, reading the files in stream order (GNU tar
        // packs a directory in its on-disk order, not by name): each span inflated once.
        let cache = Arc::new(ChunkCache::new(capacity));
        let reader = open(&archive, &cache);
        let mut order: Vec<usize> = (0..files.len()).collect();
        order.sort_by_key(|&i| {
            match reader.index().data(ino(reader.index(), &format!("f{i:02}"))) {
                crate::index::Data::Contiguous(start) => start,
                _ => unreachable!("plain files"),
            }
        });
        let mut sequential = pool.sequential(Arc::clone(&reader));
        for i in order {
            assert!(read_through(&mut sequential, &format!("f{i:02}"), 128 << 10) == files[i]);
        }
        drop(sequential);
        pool.wait_idle();
        let spans = reader.index().point_count() as u64;
        let inflated = cache.counters().spans_inflated.load(Ordering::Relaxed);
        // (The tar stream's last span may hold only the end-of-archive blocks, never read.)
        assert!(inflated == spans || inflated + 1 == spans, "{inflated} of {spans} spans");
        assert!(cache.stats().bytes <= capacity);
    }

    /// A cancelled ticket's queued spans are never inflated, and its running one stops.
    #[test]
    fn a_cancelled_ticket_inflates_nothing_more() {
        let dir = tempfile::tempdir().unwrap();
        let Some((archive, _)) = archive(dir.path(), 4, 600_000) else { return };
        let cache = Arc::new(ChunkCache::new(64 << 20));
        let reader = open(&archive, &cache);
        let pool = ReadAhead::start(1).unwrap();
        let ticket = Ticket::new();
        let spans = reader.index().point_count();
        // Span 0's chunk held here: the worker takes span 0 and waits for it, so it can take
        // no other job before the cancel, however the threads are scheduled.
        let (chunk, ..) = reader.span_at(0).unwrap();
        let held = chunk.lock();
        for span in 0..spans {
            assert!(pool.request(&reader, span, &ticket));
        }
        pool.cancel(&ticket);
        drop(held);
        pool.wait_idle();
        // One worker: at most the one span it had taken before the cancel.
        let inflated = cache.counters().spans_inflated.load(Ordering::Relaxed);
        assert!(inflated <= 1, "{inflated} spans inflated after the cancel");
        assert!(!pool.request(&reader, 0, &ticket), "a cancelled ticket is refused");
        // A live ticket still works.
        assert!(pool.request(&reader, spans - 1, &Ticket::new()));
        pool.wait_idle();
        assert_eq!(cache.counters().spans_inflated.load(Ordering::Relaxed), inflated + 1);
    }

    /// A reader that stops: dropping its `Sequential` takes its spans off the queue, and once
    /// its owner drops the reader, the workers do not keep it (or its chunks) alive.
    #[test]
    fn a_reader_that_stops_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let Some((archive, files)) = archive(dir.path(), 4, 600_000) else { return };
        let cache = Arc::new(ChunkCache::new(64 << 20));
        let reader = open(&archive, &cache);
        let pool = ReadAhead::start(2).unwrap();
        let mut sequential = pool.sequential(Arc::clone(&reader));
        let mut buf = vec![0u8; 4096];
        let f0 = ino(reader.index(), "f00");
        assert_eq!(sequential.read(f0, 0, &mut buf).unwrap(), 4096);
        assert!(buf == files[0][..4096]);
        drop(sequential);
        assert!(pool.shared.lock().jobs.is_empty(), "the dropped reader's spans were unqueued");

        // Spans queued for a reader whose owner drops it are skipped.
        let ticket = Ticket::new();
        for span in 0..reader.index().point_count() {
            pool.request(&reader, span, &ticket);
        }
        let weak = Arc::downgrade(&reader);
        drop(reader);
        pool.wait_idle();
        assert!(weak.upgrade().is_none(), "no worker keeps the reader");
        assert_eq!(cache.stats().bytes, 0, "its chunks left the cache with it");
        assert_eq!(cache.stats().chunks, 0);
        // The pool ends when dropped (its workers joined).
        drop(pool);
    }
}
