//! [`Breaker`]: whether the store answers, as a node's lazy reads have seen it. Without it a
//! hung store costs every read its whole `--store-timeout`: a workload reading a file in a
//! loop (each short read followed by the next, as `read_exact` does), or the kernel's
//! readahead, asks again and again, and each ask waits the full deadline — minutes for one
//! `read(2)` (35 s alone, 123 s on a loaded machine, in `tests/lazy_faults.rs`). With it, the
//! first read that waits its deadline out marks the store down; from then on a read that needs
//! the store fails with `EIO` at once (what is cached still reads).
//!
//! While the store is down a probe asks it every [`PROBE_EVERY`] for the object that failed
//! (a `HEAD`, each bounded by [`PROBE_TIMEOUT`], so a store that comes back is seen within a
//! probe's interval, not after an old request's retries run out). The probe, or any range that
//! arrives whole and checked, marks the store up again, and reads fetch as usual. Failing at
//! once rather than waiting a little for the probe: the kernel retries a failed readahead page
//! by page, and each wait would be paid once per page.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use object_store::{ObjectStore, ObjectStoreExt};

use crate::api::node::LazyStats;

/// How often a down store is asked whether it is back.
pub const PROBE_EVERY: Duration = Duration::from_millis(250);

/// How long one probe waits for its answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The store is down: since when, and what the read that gave up last saw.
#[derive(Debug, Clone)]
struct Down {
    since: Instant,
    why: String,
}

/// Whether the store answers; shared by every lazy source of a node.
#[derive(Debug)]
pub struct Breaker {
    down: Mutex<Option<Down>>,
    stats: Arc<LazyStats>,
}

impl Breaker {
    /// An up breaker, mirroring its state into `stats`.
    pub fn new(stats: Arc<LazyStats>) -> Breaker {
        Breaker { down: Mutex::new(None), stats }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Down>> {
        self.down.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the store is down.
    pub fn is_down(&self) -> bool {
        self.lock().is_some()
    }

    /// A read waited its deadline out: the store is down (from the first such read on).
    /// Whether it was up until now (then the caller starts [`Breaker::probe`]).
    pub fn mark_down(&self, why: &str) -> bool {
        let mut down = self.lock();
        match down.as_mut() {
            Some(d) => {
                d.why = why.to_string();
                false
            }
            None => {
                tracing::warn!(
                    %why,
                    "the store did not answer within --store-timeout: reads that need it fail \
                     fast until it answers again"
                );
                *down = Some(Down { since: Instant::now(), why: why.to_string() });
                self.stats.store_down.store(1, Ordering::Relaxed);
                true
            }
        }
    }

    /// Asks `store` for `location` every [`PROBE_EVERY`] until it answers (then the store is
    /// up) or something else has marked it up.
    pub async fn probe(
        self: Arc<Self>,
        store: Arc<dyn ObjectStore>,
        location: object_store::path::Path,
    ) {
        loop {
            tokio::time::sleep(PROBE_EVERY).await;
            if !self.is_down() {
                return;
            }
            self.stats.probes.fetch_add(1, Ordering::Relaxed);
            if let Ok(answer) = tokio::time::timeout(PROBE_TIMEOUT, store.head(&location)).await {
                if answered(&answer) {
                    self.mark_up();
                    return;
                }
            }
        }
    }

    /// A range arrived whole, or the probe was answered: the store is up.
    pub fn mark_up(&self) {
        let mut down = self.lock();
        if let Some(d) = down.take() {
            tracing::info!(
                down_for_ms = d.since.elapsed().as_millis() as u64,
                "the store answers again"
            );
            self.stats.store_down.store(0, Ordering::Relaxed);
        }
    }

    /// `Ok` if the store is up; else the error of a read that fails fast, naming how long the
    /// store has been down.
    pub fn check(&self) -> Result<(), String> {
        let down = self.lock();
        let Some(d) = down.as_ref() else { return Ok(()) };
        self.stats.fast_fails.fetch_add(1, Ordering::Relaxed);
        Err(format!(
            "the store has not answered for {} ms (last: {}); failing fast until it does",
            d.since.elapsed().as_millis(),
            d.why
        ))
    }
}

/// Whether the store answered a probe: any answer counts, also "not found" (the object may
/// have been deleted since: the store is up all the same, and a probe waiting for that object
/// would keep every read failing) or a refusal; only a transport failure or a server error
/// (`Generic`) does not.
fn answered<T>(result: &object_store::Result<T>) -> bool {
    use object_store::Error;
    matches!(
        result,
        Ok(_)
            | Err(Error::NotFound { .. }
                | Error::PermissionDenied { .. }
                | Error::Unauthenticated { .. }
                | Error::Precondition { .. }
                | Error::NotModified { .. })
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_from_the_first_read_out_of_time_until_a_range_lands() {
        let stats = Arc::new(LazyStats::default());
        let breaker = Breaker::new(Arc::clone(&stats));
        assert!(breaker.check().is_ok());
        assert!(breaker.mark_down("timed out"), "the first read out of time starts a probe");
        assert!(!breaker.mark_down("timed out again"), "one probe at a time");
        assert_eq!(stats.store_down.load(Ordering::Relaxed), 1);
        let err = breaker.check().unwrap_err();
        assert!(err.contains("timed out again"), "{err}");
        assert_eq!(stats.fast_fails.load(Ordering::Relaxed), 1);
        breaker.mark_up();
        assert!(breaker.check().is_ok());
        assert_eq!(stats.store_down.load(Ordering::Relaxed), 0);
        assert!(breaker.mark_down("timed out"), "down again: another probe");
    }
}

#[cfg(test)]
mod probe_tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::path::Path;

    fn down() -> (Arc<LazyStats>, Arc<Breaker>) {
        let stats = Arc::new(LazyStats::default());
        let breaker = Arc::new(Breaker::new(Arc::clone(&stats)));
        breaker.mark_down("timed out");
        (stats, breaker)
    }

    #[tokio::test]
    async fn a_store_that_answers_is_up_even_if_the_object_is_gone() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let (_, breaker) = down();
        let probe = Arc::clone(&breaker).probe(store, Path::from("addons/deleted/addon.tar.gz"));
        tokio::time::timeout(Duration::from_secs(30), probe).await.unwrap();
        assert!(!breaker.is_down());
    }

    #[tokio::test]
    async fn a_store_nobody_listens_for_stays_down_while_the_probe_asks() {
        // A port nothing listens on: every probe is refused.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let store: Arc<dyn ObjectStore> = Arc::new(
            object_store::aws::AmazonS3Builder::new()
                .with_bucket_name("b")
                .with_region("garage")
                .with_endpoint(format!("http://127.0.0.1:{port}"))
                .with_allow_http(true)
                .with_access_key_id("k")
                .with_secret_access_key("s")
                .with_retry(object_store::RetryConfig { max_retries: 0, ..Default::default() })
                .build()
                .unwrap(),
        );
        let (stats, breaker) = down();
        let probe = tokio::spawn(Arc::clone(&breaker).probe(store, Path::from("a")));
        tokio::time::sleep(PROBE_EVERY * 4).await;
        assert!(breaker.is_down());
        assert!(stats.probes.load(Ordering::Relaxed) >= 2, "the probe kept asking");
        // Marked up by a range that landed: the probe stops.
        breaker.mark_up();
        tokio::time::timeout(Duration::from_secs(30), probe).await.unwrap().unwrap();
    }
}
