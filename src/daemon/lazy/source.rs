//! [`LazyFile`]: an object of the store read by ranges, as the reader's byte source. A read
//! pins the chunks it covers (so they cannot be evicted under it), serves the ones present from
//! the range cache, and fetches the missing ones: runs of neighbouring missing chunks, each
//! widened forward (then backward) over missing neighbours to at least the minimum request
//! size and at most [`MAX_REQUEST_FACTOR`] times it, one range request per run, all runs at
//! once. A chunk already being fetched for another read is waited for, not asked again. The
//! read gives up with `EIO` at its deadline (`--store-timeout`); from then on the store is
//! down ([`super::breaker`]) and reads that need it fail fast until a range lands again.
//!
//! Reads that move forward through an object (a tree walk, a file read to its end: each span
//! starting where the last one ended) are read ahead: from the third such read on, the next
//! [`FetchPolicy::read_ahead`] bytes (8 MiB) are fetched in one request before they are asked
//! for, and the next such request starts once less than that is left before the reader (so
//! 8 to 16 MiB are present or coming ahead of it, and a request may take as long as reading
//! 8 MiB does; with half that lead a cold 1 GB walk waited on the store for a third of its
//! time). A
//! read that stays inside what was read (a small file, a lookup) does not count, so the first
//! byte of a workload fetches nothing ahead. Read-ahead fills only free space in the cache.

use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::fetch::Fetcher;
use super::ranges::{RangeCache, RangeFile, ABSENT, PRESENT, UNCHECKED};

/// A request is at most this many times the minimum request size.
pub const MAX_REQUEST_FACTOR: u64 = 8;

/// How a lazy source fetches.
#[derive(Debug, Clone, Copy)]
pub struct FetchPolicy {
    /// The smallest range request (neighbouring missing chunks are added up to it).
    pub min_request: u64,
    /// How far a sequential reader is read ahead, in one request.
    pub read_ahead: u64,
    /// How long a read may wait for the store, retries included, before `EIO`.
    pub timeout: Duration,
}

/// One range request in flight, which any number of reads may wait for.
#[derive(Default)]
struct Flight {
    done: Mutex<Option<Result<(), String>>>,
    cv: Condvar,
}

impl Flight {
    fn finish(&self, result: Result<(), String>) {
        *self.done.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
        self.cv.notify_all();
    }

    /// Waits until the flight lands or `deadline`.
    fn wait(&self, deadline: Instant) -> Result<(), String> {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(result) = done.as_ref() {
                return result.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                return Err("no answer from the store within --store-timeout".into());
            }
            done = self.cv.wait_timeout(done, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

/// Activity shared by every lazy source of a node: the background fill waits for quiet.
#[derive(Debug, Default)]
pub struct Activity {
    /// Foreground fetches in flight.
    pub fetching: AtomicU64,
    /// When the last foreground read that needed the store started (ms since `epoch`).
    pub last_read_ms: AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
}

impl Activity {
    /// Milliseconds since this process's activity epoch.
    pub fn now_ms(&self) -> u64 {
        self.epoch.get_or_init(Instant::now).elapsed().as_millis() as u64
    }

    /// How long since the last foreground read that needed the store.
    pub fn quiet_for(&self) -> Duration {
        Duration::from_millis(
            self.now_ms().saturating_sub(self.last_read_ms.load(Ordering::Relaxed)),
        )
    }
}

/// Why a read could not be served from the store.
#[derive(Debug)]
pub struct Unread {
    /// What went wrong.
    pub why: String,
    /// The store was already known down: the read failed without waiting its deadline.
    pub fast: bool,
}

impl Unread {
    fn fast(why: String) -> Unread {
        Unread { why, fast: true }
    }
}

/// An object of the store read lazily through the range cache.
pub struct LazyFile {
    key: String,
    file: Arc<RangeFile>,
    cache: Arc<RangeCache>,
    fetcher: Fetcher,
    runtime: tokio::runtime::Handle,
    policy: FetchPolicy,
    activity: Arc<Activity>,
    inflight: Arc<Mutex<HashMap<usize, Arc<Flight>>>>,
    stream: Mutex<Stream>,
}

/// How the reads of an object have moved: where the last forward run started and ended (in
/// chunks), and how many reads in a row moved it forward.
#[derive(Debug, Default)]
struct Stream {
    start: usize,
    end: usize,
    forward: u32,
}

impl Stream {
    /// Notes a read of chunks `range`; whether reads are sequential (the read ahead is due).
    fn note(&mut self, range: &Range<usize>) -> bool {
        let inside = range.start >= self.start && range.end <= self.end;
        let onward = range.start >= self.start && range.start <= self.end && range.end > self.end;
        if onward {
            self.forward += 1;
            self.end = range.end;
        } else if !inside {
            *self = Stream { start: range.start, end: range.end, forward: 0 };
        }
        self.forward >= 2
    }
}

impl std::fmt::Debug for LazyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LazyFile({})", self.key)
    }
}

/// Pins released on drop.
struct Pinned<'a> {
    cache: &'a RangeCache,
    file: &'a RangeFile,
    range: Range<usize>,
}

impl Drop for Pinned<'_> {
    fn drop(&mut self) {
        self.cache.unpin(self.file, self.range.clone());
    }
}

impl LazyFile {
    /// The object `key` of the store, cached in `file`.
    pub fn new(
        key: String,
        file: Arc<RangeFile>,
        cache: Arc<RangeCache>,
        fetcher: Fetcher,
        runtime: tokio::runtime::Handle,
        policy: FetchPolicy,
        activity: Arc<Activity>,
    ) -> LazyFile {
        LazyFile {
            key,
            file,
            cache,
            fetcher,
            runtime,
            policy,
            activity,
            inflight: Arc::default(),
            stream: Mutex::default(),
        }
    }

    /// The object's length.
    pub fn len(&self) -> u64 {
        self.file.size()
    }

    /// Whether the object is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its cached chunks.
    pub fn file(&self) -> &Arc<RangeFile> {
        &self.file
    }

    /// Fills `buf` with the object's bytes at `offset`, fetching what is missing.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let end =
            offset.checked_add(buf.len() as u64).filter(|&e| e <= self.len()).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{}: {} bytes at {offset} are past its end", self.key, buf.len()),
                )
            })?;
        let range = self.file.chunks_for(offset, end);
        let covered = self.file.chunks()[range.clone()].iter().map(|c| c.len).sum::<u64>();
        if range.is_empty()
            || self.file.chunks()[range.start].offset > offset
            || self.file.chunks()[range.end - 1].end() < end
            || covered < end - offset
        {
            return Err(io::Error::other(format!(
                "{}: bytes {offset}..{end} are not covered by its chunk table",
                self.key
            )));
        }
        self.cache.pin(&self.file, range.clone());
        let _pinned = Pinned { cache: &self.cache, file: &self.file, range: range.clone() };
        self.note(&range);
        self.ensure(range, Instant::now() + self.policy.timeout, true).map(drop).map_err(|e| {
            self.fetcher.stats().eio.fetch_add(1, Ordering::Relaxed);
            let why = &e.why;
            // The store's going down was logged once, by the breaker.
            if e.fast {
                tracing::debug!(key = %self.key, offset, len = buf.len(), %why, "read failed");
            } else {
                tracing::warn!(key = %self.key, offset, len = buf.len(), %why, "read failed");
            }
            io::Error::other(format!("{}: {why}", self.key))
        })?;
        self.file.pread(buf, offset)
    }

    /// Starts fetching what is missing of `[offset, offset + len)` (a gzip span about to be
    /// inflated) in as few requests as the chunk table allows, without waiting: the reads that
    /// follow wait for those requests rather than ask chunk by chunk.
    pub fn will_need(&self, offset: u64, len: u64) {
        let end = offset.saturating_add(len).min(self.len());
        let range = self.file.chunks_for(offset, end);
        self.note(&range);
        let missing: Vec<usize> = range.filter(|&c| self.file.state(c) == ABSENT).collect();
        if missing.is_empty() || self.fetcher.breaker().is_down() {
            return;
        }
        self.activity.last_read_ms.store(self.activity.now_ms(), Ordering::Relaxed);
        let deadline = Instant::now() + self.policy.timeout;
        let (ours, _) = self.claim(&missing);
        for (run, flight) in ours {
            self.start(run, flight, deadline, true);
        }
    }

    /// Notes a read of chunks `range`, and reads ahead of it if reads are sequential.
    fn note(&self, range: &Range<usize>) {
        if range.is_empty() {
            return;
        }
        let sequential = self.stream.lock().unwrap_or_else(|p| p.into_inner()).note(range);
        if sequential {
            self.read_ahead(range.end);
        }
    }

    /// Fetches, without waiting, [`FetchPolicy::read_ahead`] bytes of missing chunks in one
    /// request, from the first one missing within that distance of `from`: the reader has a
    /// whole request's worth present or coming before it (and at most two), so a request may
    /// take as long as the reader takes to read as much. Nothing when that much is there.
    fn read_ahead(&self, from: usize) {
        if self.fetcher.breaker().is_down() {
            return;
        }
        let chunks = self.file.chunks();
        let Some(base) = chunks.get(from).map(|c| c.offset) else { return };
        let ahead = self.policy.read_ahead;
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        let free = |c: usize| self.file.state(c) == ABSENT && !inflight.contains_key(&c);
        let mut first = from;
        while first < chunks.len() && chunks[first].offset - base < ahead && !free(first) {
            first += 1;
        }
        if first >= chunks.len() || chunks[first].offset - base >= ahead {
            return;
        }
        let mut end = first + 1;
        let mut bytes = chunks[first].len;
        while end < chunks.len()
            && free(end)
            && chunks[end - 1].end() == chunks[end].offset
            && bytes + chunks[end].len <= ahead
        {
            bytes += chunks[end].len;
            end += 1;
        }
        if self.cache.free() < bytes {
            return;
        }
        let flight = Arc::new(Flight::default());
        for k in first..end {
            inflight.insert(k, Arc::clone(&flight));
        }
        drop(inflight);
        self.fetcher.stats().read_ahead_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.start(first..end, flight, Instant::now() + self.policy.timeout, true);
    }

    /// Fetches chunk `c` and its missing neighbours up to the minimum request (the
    /// background fill); returns the bytes fetched.
    pub fn prefetch(&self, c: usize, deadline: Instant) -> Result<u64, String> {
        self.ensure(c..c + 1, deadline, false).map_err(|e| e.why)
    }

    /// Makes chunks `range` present (the caller pinned them), fetching what is missing;
    /// `foreground` for a read (counted as hits and misses; the background fill waits for it).
    pub fn ensure(
        &self,
        range: Range<usize>,
        deadline: Instant,
        foreground: bool,
    ) -> Result<u64, Unread> {
        let stats = self.fetcher.stats();
        let breaker = self.fetcher.breaker();
        // Chunks left by an earlier run are re-hashed once before they are served.
        for c in range.clone() {
            if self.file.state(c) == UNCHECKED {
                self.file.check(&self.cache, c);
            }
        }
        let missing: Vec<usize> =
            range.clone().filter(|&c| self.file.state(c) != PRESENT).collect();
        if foreground {
            stats.hits.fetch_add((range.len() - missing.len()) as u64, Ordering::Relaxed);
            stats.misses.fetch_add(missing.len() as u64, Ordering::Relaxed);
            if !missing.is_empty() {
                self.activity.last_read_ms.store(self.activity.now_ms(), Ordering::Relaxed);
            }
        }
        let mut fetched = 0;
        loop {
            let missing: Vec<usize> =
                range.clone().filter(|&c| self.file.state(c) != PRESENT).collect();
            if missing.is_empty() {
                return Ok(fetched);
            }
            if Instant::now() >= deadline {
                return Err(self.out_of_time("no answer from the store within --store-timeout"));
            }
            if !foreground && breaker.is_down() {
                return Err(Unread::fast("the store is down: the fill waits for it".into()));
            }
            // Down: the probe tells when it is back; until then no read waits for it.
            breaker.check().map_err(Unread::fast)?;
            let (ours, theirs) = self.claim(&missing);
            let chunks = self.file.chunks();
            fetched +=
                ours.iter().flat_map(|(r, _)| chunks[r.clone()].iter()).map(|c| c.len).sum::<u64>();
            let waits: Vec<Arc<Flight>> = ours.iter().map(|(_, f)| Arc::clone(f)).collect();
            for (run, flight) in ours {
                self.start(run, flight, deadline, foreground);
            }
            // Our own requests ran until our deadline: their failure is the read's.
            for flight in waits {
                flight.wait(deadline).map_err(|why| {
                    if Instant::now() >= deadline {
                        self.out_of_time(&why)
                    } else {
                        Unread { why, fast: false }
                    }
                })?;
            }
            // Another read's may have failed at its earlier deadline: then we ask ourselves,
            // at the next turn.
            for flight in theirs {
                let _ = flight.wait(deadline);
            }
        }
    }

    /// A read that waited its deadline out: the store is down from now on.
    fn out_of_time(&self, why: &str) -> Unread {
        self.fetcher.store_down(&self.runtime, &self.key, &format!("{}: {why}", self.key));
        Unread { why: why.to_string(), fast: false }
    }

    /// Claims the chunks of `missing` nobody fetches yet, as runs of neighbours (each widened
    /// to the minimum request), and returns them with their new flights, and the flights of
    /// the chunks others fetch.
    #[allow(clippy::type_complexity)]
    fn claim(&self, missing: &[usize]) -> (Vec<(Range<usize>, Arc<Flight>)>, Vec<Arc<Flight>>) {
        let chunks = self.file.chunks();
        let mut theirs: Vec<Arc<Flight>> = Vec::new();
        let mut ours: Vec<(Range<usize>, Arc<Flight>)> = Vec::new();
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        let mut i = 0;
        while i < missing.len() {
            let c = missing[i];
            if let Some(f) = inflight.get(&c) {
                if !theirs.iter().any(|t| Arc::ptr_eq(t, f)) {
                    theirs.push(Arc::clone(f));
                }
                i += 1;
                continue;
            }
            // A run of neighbouring missing chunks nobody fetches, one range of the object.
            let mut end = c + 1;
            while i + 1 < missing.len()
                && missing[i + 1] == end
                && !inflight.contains_key(&end)
                && chunks[end - 1].end() == chunks[end].offset
            {
                end += 1;
                i += 1;
            }
            i += 1;
            let run = self.widen(c..end, &inflight);
            let flight = Arc::new(Flight::default());
            for k in run.clone() {
                inflight.insert(k, Arc::clone(&flight));
            }
            ours.push((run, flight));
        }
        (ours, theirs)
    }

    /// `run` widened over missing neighbours nobody fetches: forward up to the minimum request
    /// size, then backward, never past [`MAX_REQUEST_FACTOR`] times it.
    fn widen(&self, run: Range<usize>, inflight: &HashMap<usize, Arc<Flight>>) -> Range<usize> {
        let chunks = self.file.chunks();
        let bytes = |r: &Range<usize>| chunks[r.clone()].iter().map(|c| c.len).sum::<u64>();
        let min = self.policy.min_request;
        let max = min.saturating_mul(MAX_REQUEST_FACTOR);
        let free = |c: usize| self.file.state(c) == ABSENT && !inflight.contains_key(&c);
        // Only neighbours that touch: a run is one range of the object.
        let touches = |a: usize, b: usize| chunks[a].end() == chunks[b].offset;
        let mut run = run;
        while bytes(&run) < min
            && run.end < chunks.len()
            && free(run.end)
            && touches(run.end - 1, run.end)
            && bytes(&run) + chunks[run.end].len <= max
        {
            run.end += 1;
        }
        while bytes(&run) < min
            && run.start > 0
            && free(run.start - 1)
            && touches(run.start - 1, run.start)
            && bytes(&run) + chunks[run.start - 1].len <= max
        {
            run.start -= 1;
        }
        run
    }

    /// Fetches `run` on the runtime, stores it, and lands `flight` (removing it from the
    /// chunks in flight).
    fn start(&self, run: Range<usize>, flight: Arc<Flight>, deadline: Instant, foreground: bool) {
        let specs = self.file.chunks()[run.clone()].to_vec();
        let fetcher = self.fetcher.clone();
        let key = self.key.clone();
        let file = Arc::clone(&self.file);
        let cache = Arc::clone(&self.cache);
        let activity = Arc::clone(&self.activity);
        let inflight = Arc::clone(&self.inflight);
        let deadline = tokio::time::Instant::from_std(deadline);
        if foreground {
            activity.fetching.fetch_add(1, Ordering::Relaxed);
        }
        self.runtime.spawn(async move {
            let persist = (Arc::clone(&cache), Arc::clone(&file), run.clone());
            let result = match fetcher.fetch(&key, &specs, deadline).await {
                Ok(bytes) => {
                    let stored = tokio::task::spawn_blocking(move || {
                        cache.store(&file, run, &bytes).map_err(|e| e.to_string())
                    })
                    .await;
                    stored.unwrap_or_else(|e| Err(format!("storing the range failed: {e}")))
                }
                Err(e) => Err(e),
            };
            // The readers go on (below) while the range is synced and marked on disk.
            if result.is_ok() {
                let (cache, file, run) = persist;
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = cache.persist(&file, run) {
                        tracing::warn!(error = %e, "a fetched range is not kept across a restart");
                    }
                });
            }
            if foreground {
                activity.fetching.fetch_sub(1, Ordering::Relaxed);
            }
            inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|_, f| !Arc::ptr_eq(f, &flight));
            flight.finish(result);
        });
    }
}

impl crate::source::ReadAt for LazyFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        LazyFile::read_exact_at(self, buf, offset)
    }

    fn len(&self) -> u64 {
        LazyFile::len(self)
    }

    fn will_need(&self, offset: u64, len: u64) {
        LazyFile::will_need(self, offset, len);
    }
}

#[cfg(test)]
mod tests {
    use super::Stream;

    #[test]
    fn only_reads_that_move_forward_make_a_stream() {
        let mut s = Stream::default();
        // A small file: its span, then reads inside it.
        assert!(!s.note(&(10..12)));
        assert!(!s.note(&(10..11)));
        assert!(!s.note(&(11..12)));
        // A walk: each span from where the last ended (or in its last chunk).
        assert!(!s.note(&(12..14)));
        assert!(s.note(&(13..15)));
        assert!(s.note(&(15..16)));
        assert!(s.note(&(15..16)), "a read inside keeps the stream");
        // A jump elsewhere starts over.
        assert!(!s.note(&(40..41)));
        assert!(!s.note(&(41..42)));
        assert!(s.note(&(42..43)));
        // Backwards starts over too.
        assert!(!s.note(&(5..6)));
    }
}
