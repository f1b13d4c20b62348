//! Range requests to the store: one `get_range` per run of neighbouring chunks, each attempt
//! bounded by what is left of the reader's deadline, retried with a backoff (50 ms doubling to
//! 1 s) until the deadline, and every chunk checked against its SHA-256 before anything is
//! kept. A range that arrives short or fails its check is asked for once more; a second bad
//! answer fails the read (`EIO`), never wrong bytes. What arrives and what runs out of time
//! tells the node's [`Breaker`] whether the store answers.
//!
//! **Hedging.** An attempt that has not answered within about twice what answers usually take
//! ([`Hedge`]) is asked for once more on another connection, and whichever answers first is
//! used (the other is dropped, closing its connection). Stores have a long tail: AWS's S3
//! guidance for latency-sensitive readers is to retry slow requests aggressively on a new
//! connection. A hedge costs one request and its bytes, only in the tail; an answer that
//! never comes (a stalled connection) no longer holds a read until its deadline. A local
//! directory store is never hedged.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};

use super::breaker::Breaker;
use super::ranges::ChunkSpec;
use crate::addon::backend::Backend;
use crate::api::node::LazyStats;

/// The first wait after a failed attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A hedge is sent this many times the expected answer time after the first request.
const HEDGE_FACTOR: f64 = 2.0;
/// Never sooner (a loopback store answers small ranges in a few milliseconds: hedging those
/// would only double the load).
const MIN_HEDGE: Duration = Duration::from_millis(10);
/// Never later (a range that takes longer is treated as slow whatever the estimate says).
const MAX_HEDGE: Duration = Duration::from_secs(2);
/// Before any answer was timed (a node's first ranges: its index heads).
const FIRST_HEDGE: Duration = Duration::from_millis(40);
/// Weight of a new answer time in the running estimate.
const EWMA_WEIGHT: f64 = 0.2;

/// When to hedge: a running estimate of how long answers take per MiB asked for (a range under
/// 1 MiB counts as 1 MiB: below that, the round trip dominates), from every attempt that
/// answered, timed from its first request.
#[derive(Debug, Default)]
pub struct Hedge {
    /// Milliseconds per MiB, as `f64` bits; 0 before the first answer.
    ms_per_mib: AtomicU64,
}

impl Hedge {
    /// How long an attempt for `bytes` may take before it is hedged.
    pub fn after(&self, bytes: u64) -> Duration {
        let per_mib = f64::from_bits(self.ms_per_mib.load(Ordering::Relaxed));
        if per_mib <= 0.0 {
            return FIRST_HEDGE;
        }
        let expected = per_mib * mib(bytes);
        Duration::from_secs_f64(HEDGE_FACTOR * expected / 1e3).clamp(MIN_HEDGE, MAX_HEDGE)
    }

    /// Notes that `bytes` were answered in `took`.
    pub fn observe(&self, bytes: u64, took: Duration) {
        let sample = took.as_secs_f64() * 1e3 / mib(bytes);
        // Lost updates between concurrent answers only drop a sample.
        let old = f64::from_bits(self.ms_per_mib.load(Ordering::Relaxed));
        let new = if old <= 0.0 { sample } else { old + EWMA_WEIGHT * (sample - old) };
        self.ms_per_mib.store(new.to_bits(), Ordering::Relaxed);
    }
}

fn mib(bytes: u64) -> f64 {
    (bytes as f64 / (1u64 << 20) as f64).max(1.0)
}

/// Fetches verified runs of chunks.
#[derive(Debug, Clone)]
pub struct Fetcher {
    backend: Backend,
    stats: Arc<LazyStats>,
    breaker: Arc<Breaker>,
    hedge: Arc<Hedge>,
}

impl Fetcher {
    /// A fetcher from `backend`, counting into `stats`.
    pub fn new(backend: Backend, stats: Arc<LazyStats>) -> Fetcher {
        let breaker = Arc::new(Breaker::new(Arc::clone(&stats)));
        Fetcher { backend, stats, breaker, hedge: Arc::default() }
    }

    /// Whether the store answers, as this fetcher's ranges have seen it.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    /// A read of `key` waited its deadline out: the store is down, and (if it was up) a probe
    /// on `runtime` asks it for `key` until it is back.
    pub fn store_down(&self, runtime: &tokio::runtime::Handle, key: &str, why: &str) {
        if self.breaker.mark_down(why) {
            let probe = Arc::clone(&self.breaker)
                .probe(Arc::clone(self.backend.store()), self.backend.key(key));
            runtime.spawn(probe);
        }
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<LazyStats> {
        &self.stats
    }

    /// Fetches `chunks` (contiguous in the object `key`, in order) in one range request, and
    /// checks each; retries until `deadline`. The bytes returned are the chunks' bytes end to
    /// end.
    pub async fn fetch(
        &self,
        key: &str,
        chunks: &[ChunkSpec],
        deadline: tokio::time::Instant,
    ) -> Result<Vec<u8>, String> {
        let (Some(first), Some(last)) = (chunks.first(), chunks.last()) else {
            return Ok(Vec::new());
        };
        let range: Range<u64> = first.offset..last.end();
        let location = self.backend.key(key);
        let mut backoff = FIRST_BACKOFF;
        let mut refetched = false;
        let mut last_error = String::from("no attempt");
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                let why = format!(
                    "{key} bytes {}..{}: no good answer from the store within the deadline \
                     (last: {last_error})",
                    range.start, range.end
                );
                self.store_down(&tokio::runtime::Handle::current(), key, &why);
                return Err(why);
            }
            let attempt =
                tokio::time::timeout(deadline - now, self.attempt(&location, range.clone())).await;
            let bytes = match attempt {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(e)) => {
                    last_error = e.to_string();
                    self.stats.request_errors.fetch_add(1, Ordering::Relaxed);
                    self.pause(&mut backoff, deadline).await;
                    continue;
                }
                Err(_) => {
                    last_error = "the request timed out".into();
                    self.stats.request_errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            };
            self.stats.request_bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            tracing::debug!(
                key,
                start = range.start,
                bytes = bytes.len(),
                ms = now.elapsed().as_secs_f64() * 1e3,
                "range answered"
            );
            match check(chunks, &bytes) {
                Ok(()) => {
                    self.breaker.mark_up();
                    return Ok(bytes.to_vec());
                }
                Err(why) if !refetched => {
                    tracing::warn!(key, %why, "a range failed its check; asking once more");
                    self.stats.refetches.fetch_add(1, Ordering::Relaxed);
                    refetched = true;
                }
                Err(why) => {
                    self.stats.bad_ranges.fetch_add(1, Ordering::Relaxed);
                    return Err(format!("{key}: {why} (twice; refused)"));
                }
            }
        }
    }

    /// One attempt at `range`: a request, and a second one (the hedge) if the first has not
    /// answered by [`Hedge::after`]; the first success wins, an error only when both failed.
    async fn attempt(
        &self,
        location: &object_store::path::Path,
        range: Range<u64>,
    ) -> object_store::Result<bytes::Bytes> {
        let bytes = range.end - range.start;
        let started = tokio::time::Instant::now();
        let first = self.request(location, range.clone());
        tokio::pin!(first);
        if self.backend.local_root().is_some() {
            // A directory on this machine has no network tail to hedge against.
            return first.await;
        }
        let wait = self.hedge.after(bytes);
        if let Ok(answer) = tokio::time::timeout(wait, &mut first).await {
            if answer.is_ok() {
                self.hedge.observe(bytes, started.elapsed());
            }
            return answer;
        }
        tracing::debug!(
            key = %location,
            start = range.start,
            bytes,
            after_ms = wait.as_secs_f64() * 1e3,
            "range slow to answer: asking once more"
        );
        self.stats.hedges.fetch_add(1, Ordering::Relaxed);
        let second = self.request(location, range);
        tokio::pin!(second);
        let answer = tokio::select! {
            answer = &mut first => match answer {
                Ok(answer) => Ok(answer),
                // The first failed: the hedge's answer is the attempt's.
                Err(_) => self.hedge_answer(second.await),
            },
            answer = &mut second => match answer {
                Ok(_) => self.hedge_answer(answer),
                // The hedge failed: the first may still answer.
                Err(_) => first.await,
            },
        };
        // Timed from the first request: if the store got slower for good, the estimate follows
        // and hedges become rare again.
        if answer.is_ok() {
            self.hedge.observe(bytes, started.elapsed());
        }
        answer
    }

    /// One request for `range`.
    async fn request(
        &self,
        location: &object_store::path::Path,
        range: Range<u64>,
    ) -> object_store::Result<bytes::Bytes> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.backend.store().get_range(location, range).await
    }

    /// Counts an answer that came from a hedge.
    fn hedge_answer(
        &self,
        answer: object_store::Result<bytes::Bytes>,
    ) -> object_store::Result<bytes::Bytes> {
        if answer.is_ok() {
            self.stats.hedges_won.fetch_add(1, Ordering::Relaxed);
        }
        answer
    }

    async fn pause(&self, backoff: &mut Duration, deadline: tokio::time::Instant) {
        self.stats.retries.fetch_add(1, Ordering::Relaxed);
        let wake = (tokio::time::Instant::now() + *backoff).min(deadline);
        tokio::time::sleep_until(wake).await;
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
    }
}

/// Checks that `bytes` are `chunks` end to end, each with its digest.
fn check(chunks: &[ChunkSpec], bytes: &[u8]) -> Result<(), String> {
    let want: u64 = chunks.iter().map(|c| c.len).sum();
    if bytes.len() as u64 != want {
        return Err(format!("{} bytes arrived, {want} were asked for", bytes.len()));
    }
    let mut at = 0usize;
    for c in chunks {
        let part = &bytes[at..at + c.len as usize];
        if <[u8; 32]>::from(Sha256::digest(part)) != c.sha256 {
            return Err(format!("bytes {}..{} do not match their SHA-256", c.offset, c.end()));
        }
        at += c.len as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_hedge_waits_twice_the_usual_answer_time_for_the_size() {
        let hedge = Hedge::default();
        assert_eq!(hedge.after(MIB), FIRST_HEDGE, "nothing timed yet");
        hedge.observe(MIB, Duration::from_millis(10));
        assert_eq!(hedge.after(MIB), Duration::from_millis(20));
        // Below 1 MiB the round trip dominates: as long as for 1 MiB.
        assert_eq!(hedge.after(64 << 10), Duration::from_millis(20));
        assert_eq!(hedge.after(4 * MIB), Duration::from_millis(80));
        // A small range answered in 5 ms counts as 5 ms per MiB: the estimate moves a fifth
        // of the way, 10 -> 9 ms per MiB.
        hedge.observe(100, Duration::from_millis(5));
        assert_eq!(hedge.after(MIB), Duration::from_millis(18));
        // Bounds: never sooner than MIN_HEDGE, never later than MAX_HEDGE.
        let fast = Hedge::default();
        fast.observe(MIB, Duration::from_micros(100));
        assert_eq!(fast.after(MIB), MIN_HEDGE);
        let slow = Hedge::default();
        slow.observe(MIB, Duration::from_secs(5));
        assert_eq!(slow.after(MIB), MAX_HEDGE);
    }

    #[test]
    fn a_store_that_stays_slow_moves_the_estimate() {
        let hedge = Hedge::default();
        hedge.observe(MIB, Duration::from_millis(10));
        // Every answer now takes 100 ms (each one hedged, timed from its first request).
        for _ in 0..30 {
            hedge.observe(MIB, Duration::from_millis(100));
        }
        let after = hedge.after(MIB);
        assert!(after > Duration::from_millis(190), "{after:?}: still hedging every request");
    }
}
