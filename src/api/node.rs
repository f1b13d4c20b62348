//! A node's public endpoints (`addonfs node --listen`): `GET /healthz`, `GET /readyz` and
//! `GET /metrics`, without a key and without the registry's API (a node has none). They
//! report counters and yes/no, never a key, a credential or add-on content.
//!
//! `/readyz` is ready when the node has a catalog to serve (read from the store, or its last
//! one from the cache directory while the store is down) and the mount answers; the store's
//! state is reported beside it (`store: up|down`) and in the metrics, so a store outage shows
//! without taking every node out of service: nodes keep serving what they have cached.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::error::{ApiError, Code};
use super::health::{counter, probe_mount, ReadPath};
use crate::fs::stats::FsStats;
use crate::reader::ChunkCache;

/// What a node's follower loop reports (plain atomics, read at each scrape).
#[derive(Debug, Default)]
pub struct NodeStats {
    /// The revision the mount's manifest shows.
    pub revision: AtomicU64,
    /// The newest catalog revision read from the store.
    pub catalog_revision: AtomicU64,
    /// A catalog is being served (from the store, or the cached one).
    pub has_catalog: AtomicBool,
    /// The last request to the store succeeded.
    pub store_up: AtomicBool,
    /// Catalog reads sent to the store.
    pub catalog_requests: AtomicU64,
    /// Of those, answered "not modified".
    pub catalog_not_modified: AtomicU64,
    /// Requests to the store that failed.
    pub store_errors: AtomicU64,
    /// Catalogs ignored because their revision went backwards.
    pub catalog_regressions: AtomicU64,
    /// Add-ons fetched into the cache (verified).
    pub fetches: AtomicU64,
    /// Fetches that failed (store error, mismatch, cache full).
    pub fetch_failures: AtomicU64,
    /// Bytes fetched and verified.
    pub fetch_bytes: AtomicU64,
    /// Bytes in the node cache.
    pub cache_bytes: AtomicU64,
    /// The node cache's limit.
    pub cache_limit: AtomicU64,
    /// Cache entries evicted.
    pub cache_evictions: AtomicU64,
    /// Enabled add-ons the node could not mount yet.
    pub missing: AtomicU64,
    /// The last store error, for `/readyz` and the logs.
    pub last_error: Mutex<String>,
}

/// What a node's lazy reads report (`src/daemon/lazy`; plain atomics, read at each scrape).
#[derive(Debug, Default)]
pub struct LazyStats {
    /// Range requests sent to the store (every attempt).
    pub requests: AtomicU64,
    /// Bytes those requests brought.
    pub request_bytes: AtomicU64,
    /// Attempts that failed (an error or a timeout).
    pub request_errors: AtomicU64,
    /// Waits before another attempt.
    pub retries: AtomicU64,
    /// Ranges asked for again because they arrived short or failed their SHA-256.
    pub refetches: AtomicU64,
    /// Ranges that failed their check twice (the read got `EIO`).
    pub bad_ranges: AtomicU64,
    /// Fetches that ran out of time (the read got `EIO`).
    pub timeouts: AtomicU64,
    /// Reads answered `EIO` because the store could not give their bytes in time.
    pub eio: AtomicU64,
    /// Chunks reads found in the range cache.
    pub hits: AtomicU64,
    /// Chunks reads had to fetch (or wait for).
    pub misses: AtomicU64,
    /// Chunks evicted from the range cache.
    pub evictions: AtomicU64,
    /// Bytes evicted.
    pub evicted_bytes: AtomicU64,
    /// Bytes in the range cache (chunks and index heads).
    pub cache_bytes: AtomicU64,
    /// Cached ranges found damaged on disk (fetched again).
    pub corrupt: AtomicU64,
    /// Bytes fetched by the background fill.
    pub prefetch_bytes: AtomicU64,
    /// Index heads fetched.
    pub heads: AtomicU64,
    /// Add-ons mounted lazily.
    pub addons: AtomicU64,
    /// 1 while the store is down (a read waited its deadline out and no range has landed
    /// since): reads that need it fail fast.
    pub store_down: AtomicU64,
    /// Reads failed without waiting their deadline, the store being down.
    pub fast_fails: AtomicU64,
    /// Requests asking a down store whether it is back.
    pub probes: AtomicU64,
    /// Bytes asked for ahead of sequential reads.
    pub read_ahead_bytes: AtomicU64,
    /// Second requests for a range whose first had not answered in about twice the usual time.
    pub hedges: AtomicU64,
    /// Ranges answered by such a second request.
    pub hedges_won: AtomicU64,
}

/// What a node's endpoints observe.
#[derive(Clone)]
pub struct NodeObserved {
    /// The follower's counters.
    pub stats: Arc<NodeStats>,
    /// The mount point.
    pub mount: PathBuf,
    /// The FUSE file system's counters.
    pub fs: Arc<FsStats>,
    /// The mount's chunk cache.
    pub cache: Arc<ChunkCache>,
    /// The lazy reads' counters.
    pub lazy: Arc<LazyStats>,
}

struct NodeApp {
    observed: NodeObserved,
    registry: Registry,
    probing: Arc<AtomicBool>,
}

/// The router of a node's public endpoints.
pub fn node_router(observed: NodeObserved) -> axum::Router {
    let mut registry = Registry::default();
    let stats = Arc::clone(&observed.stats);
    registry.register_collector(Box::new(ReadPath {
        revision: Arc::new(move || stats.revision.load(Ordering::Relaxed)),
        fs: Some(Arc::clone(&observed.fs)),
        cache: Some(Arc::clone(&observed.cache)),
    }));
    registry.register_collector(Box::new(Follower(Arc::clone(&observed.stats))));
    registry.register_collector(Box::new(Lazy(Arc::clone(&observed.lazy))));
    let app = Arc::new(NodeApp { observed, registry, probing: Arc::new(AtomicBool::new(false)) });
    axum::Router::new()
        .route("/healthz", get(super::health::healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(Code::NotFound, "no such endpoint").into_response() })
        .with_state(app)
}

async fn readyz(State(app): State<Arc<NodeApp>>) -> Response {
    let stats = &app.observed.stats;
    let store = if stats.store_up.load(Ordering::Relaxed) { "up" } else { "down" };
    if !stats.has_catalog.load(Ordering::Relaxed) {
        return ApiError::new(
            Code::Unavailable,
            format!("not ready: no catalog yet (the store is {store})"),
        )
        .into_response();
    }
    if let Some(why) = probe_mount(&app.observed.mount, &app.probing).await {
        return ApiError::new(Code::Unavailable, format!("not ready: {why}")).into_response();
    }
    Json(serde_json::json!({
        "status": "ok",
        "store": store,
        "revision": stats.revision.load(Ordering::Relaxed),
    }))
    .into_response()
}

async fn metrics(State(app): State<Arc<NodeApp>>) -> Response {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &app.registry) {
        return ApiError::new(Code::Internal, format!("cannot render the metrics: {e}"))
            .into_response();
    }
    ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
        .into_response()
}

/// The follower's counters, read at each scrape.
struct Follower(Arc<NodeStats>);

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Follower")
    }
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for Follower {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.0;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        gauge(
            &mut e,
            "addonfs_node_store_up",
            "1 when the node's last request to the store succeeded",
            u64::from(s.store_up.load(Ordering::Relaxed)),
        )?;
        gauge(
            &mut e,
            "addonfs_node_store_revision",
            "The newest catalog revision read from the store",
            load(&s.catalog_revision),
        )?;
        gauge(
            &mut e,
            "addonfs_node_cache_bytes",
            "Bytes of verified add-ons in the node cache",
            load(&s.cache_bytes),
        )?;
        gauge(
            &mut e,
            "addonfs_node_cache_limit_bytes",
            "The node cache's size",
            load(&s.cache_limit),
        )?;
        gauge(
            &mut e,
            "addonfs_node_missing_addons",
            "Enabled add-ons the node has not mounted yet",
            load(&s.missing),
        )?;
        for (name, help, v) in [
            (
                "addonfs_node_catalog_requests",
                "Catalog reads sent to the store",
                &s.catalog_requests,
            ),
            (
                "addonfs_node_catalog_not_modified",
                "Catalog reads answered not modified",
                &s.catalog_not_modified,
            ),
            ("addonfs_node_store_errors", "Requests to the store that failed", &s.store_errors),
            (
                "addonfs_node_catalog_regressions",
                "Catalogs ignored because their revision went backwards",
                &s.catalog_regressions,
            ),
            ("addonfs_node_fetches", "Add-ons fetched into the cache and verified", &s.fetches),
            ("addonfs_node_fetch_failures", "Add-on fetches that failed", &s.fetch_failures),
            ("addonfs_node_fetch_bytes", "Bytes fetched and verified", &s.fetch_bytes),
            (
                "addonfs_node_cache_evictions",
                "Add-ons evicted from the node cache",
                &s.cache_evictions,
            ),
        ] {
            counter(&mut e, name, help, load(v))?;
        }
        Ok(())
    }
}

/// The lazy reads' counters, read at each scrape.
struct Lazy(Arc<LazyStats>);

impl std::fmt::Debug for Lazy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lazy")
    }
}

impl Collector for Lazy {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.0;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        gauge(
            &mut e,
            "addonfs_node_range_cache_bytes",
            "Bytes in the node's range cache (fetched chunks and index heads)",
            load(&s.cache_bytes),
        )?;
        gauge(&mut e, "addonfs_node_lazy_addons", "Add-ons mounted lazily", load(&s.addons))?;
        gauge(
            &mut e,
            "addonfs_node_store_down",
            "1 while the store is down for lazy reads: those that need it fail fast",
            load(&s.store_down),
        )?;
        for (name, help, v) in [
            ("addonfs_node_range_requests", "Range requests sent to the store", &s.requests),
            ("addonfs_node_range_bytes", "Bytes range requests brought", &s.request_bytes),
            (
                "addonfs_node_range_request_errors",
                "Range requests that failed or timed out",
                &s.request_errors,
            ),
            ("addonfs_node_range_retries", "Waits before another range request", &s.retries),
            (
                "addonfs_node_range_hedges",
                "Range requests sent again because the first was slow to answer",
                &s.hedges,
            ),
            (
                "addonfs_node_range_hedges_won",
                "Ranges answered by the second request",
                &s.hedges_won,
            ),
            (
                "addonfs_node_range_refetches",
                "Ranges asked again: short or failing their SHA-256",
                &s.refetches,
            ),
            ("addonfs_node_range_bad", "Ranges that failed their check twice", &s.bad_ranges),
            ("addonfs_node_range_timeouts", "Fetches out of time", &s.timeouts),
            ("addonfs_node_read_eio", "Reads answered EIO: the store could not help", &s.eio),
            ("addonfs_node_store_probes", "Requests asking a down store if it is back", &s.probes),
            (
                "addonfs_node_read_ahead_bytes",
                "Bytes asked for ahead of sequential reads",
                &s.read_ahead_bytes,
            ),
            (
                "addonfs_node_read_fast_fails",
                "Reads answered EIO at once, the store being down",
                &s.fast_fails,
            ),
            ("addonfs_node_range_hits", "Chunks reads found in the range cache", &s.hits),
            ("addonfs_node_range_misses", "Chunks reads had to fetch", &s.misses),
            ("addonfs_node_range_evictions", "Chunks evicted from the range cache", &s.evictions),
            (
                "addonfs_node_range_evicted_bytes",
                "Bytes evicted from the range cache",
                &s.evicted_bytes,
            ),
            (
                "addonfs_node_range_corrupt",
                "Cached ranges found damaged on disk and fetched again",
                &s.corrupt,
            ),
            (
                "addonfs_node_prefetch_bytes",
                "Bytes fetched by the background fill",
                &s.prefetch_bytes,
            ),
            ("addonfs_node_index_heads", "Index heads fetched", &s.heads),
        ] {
            counter(&mut e, name, help, load(v))?;
        }
        Ok(())
    }
}
