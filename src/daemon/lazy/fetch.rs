//! Range requests to the store: one `get_range` per run of neighbouring chunks, each attempt
//! bounded by what is left of the reader's deadline, retried with a backoff (50 ms doubling to
//! 1 s) until the deadline, and every chunk checked against its SHA-256 before anything is
//! kept. A range that arrives short or fails its check is asked for once more; a second bad
//! answer fails the read (`EIO`), never wrong bytes. What arrives and what runs out of time
//! tells the node's [`Breaker`] whether the store answers.

use std::ops::Range;
use std::sync::atomic::Ordering;
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

/// Fetches verified runs of chunks.
#[derive(Debug, Clone)]
pub struct Fetcher {
    backend: Backend,
    stats: Arc<LazyStats>,
    breaker: Arc<Breaker>,
}

impl Fetcher {
    /// A fetcher from `backend`, counting into `stats`.
    pub fn new(backend: Backend, stats: Arc<LazyStats>) -> Fetcher {
        let breaker = Arc::new(Breaker::new(Arc::clone(&stats)));
        Fetcher { backend, stats, breaker }
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
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let attempt = tokio::time::timeout(
                deadline - now,
                self.backend.store().get_range(&location, range.clone()),
            )
            .await;
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
