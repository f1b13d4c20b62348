//! The public endpoints, without a key: `GET /healthz` (the process answers), `GET /readyz`
//! (the store can be read and the mount answers) and `GET /metrics` (Prometheus, OpenMetrics
//! text). None of them reaches store data: they report counters and yes/no, never a key, a
//! path of the state directory or add-on content.
//!
//! The counters of the read path belong to the layers that bump them ([`crate::fs::stats`],
//! [`crate::reader::CacheCounters`]: plain atomics); `/metrics` reads them when it renders.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::error::{ApiError, Code};
use super::App;
use crate::addon::Store;
use crate::attach::MANIFEST_NAME;
use crate::fs::stats::{FsStats, Op, LATENCY_BOUNDS_US};
use crate::reader::ChunkCache;

/// How long `/readyz` waits for the mount to answer a `stat`.
pub const MOUNT_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the public endpoints observe besides the store: the daemon's mount (`None` with
/// `--no-mount`) and the counters of its file system and chunk cache.
#[derive(Clone, Default)]
pub struct Observed {
    /// The mount point: `/readyz` checks that its manifest can be `stat`ed.
    pub mount: Option<PathBuf>,
    /// The FUSE file system's counters.
    pub fs: Option<Arc<FsStats>>,
    /// The mount's chunk cache.
    pub cache: Option<Arc<ChunkCache>>,
}

/// The API's own counters (requests, uploads), kept with the prometheus-client types.
pub(super) struct Counters {
    requests: Family<[(&'static str, String); 2], Counter>,
    uploads: Family<[(&'static str, &'static str); 1], Counter>,
    upload_bytes: Counter,
}

impl Counters {
    /// Counts an upload that was stored (`ok`) or refused.
    pub(super) fn upload(&self, ok: bool) {
        self.uploads.get_or_create(&[("outcome", if ok { "stored" } else { "refused" })]).inc();
    }

    /// Counts tarball bytes received.
    pub(super) fn upload_bytes(&self, n: u64) {
        self.upload_bytes.inc_by(n);
    }
}

/// The state of the public endpoints.
pub(super) struct Health {
    store: Arc<Store>,
    mount: Option<PathBuf>,
    counters: Arc<Counters>,
    registry: Registry,
    /// A mount probe is running (a hung mount keeps at most one blocked thread).
    probing: Arc<AtomicBool>,
}

impl Health {
    pub(super) fn new(store: Arc<Store>, observed: Observed) -> Health {
        let counters = Arc::new(Counters {
            requests: Family::default(),
            uploads: Family::default(),
            upload_bytes: Counter::default(),
        });
        let mut registry = Registry::default();
        registry.register(
            "addonfs_http_requests",
            "HTTP requests answered, by route (the matched pattern, `unmatched` otherwise) and status",
            counters.requests.clone(),
        );
        registry.register(
            "addonfs_uploads",
            "Uploads finished, by outcome (stored or refused)",
            counters.uploads.clone(),
        );
        registry.register(
            "addonfs_upload_bytes",
            "Tarball bytes received by uploads",
            counters.upload_bytes.clone(),
        );
        let revision_of = Arc::clone(&store);
        registry.register_collector(Box::new(ReadPath {
            revision: Arc::new(move || revision_of.revision()),
            fs: observed.fs,
            cache: observed.cache,
        }));
        Health {
            store,
            mount: observed.mount,
            counters,
            registry,
            probing: Arc::new(AtomicBool::new(false)),
        }
    }

    pub(super) fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Why the daemon is not ready, or `None` when it is.
    async fn not_ready(&self) -> Option<String> {
        let store = Arc::clone(&self.store);
        let store_ok = tokio::task::spawn_blocking(move || store.probe())
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r.map_err(std::io::Error::other));
        if let Err(e) = store_ok {
            // The path stays in the log: the answer is public.
            tracing::warn!(error = %e, "readiness: the store cannot be read");
            return Some("the store cannot be read".into());
        }
        let mount = self.mount.as_ref()?;
        probe_mount(mount, &self.probing).await
    }
}

/// Why the mount at `mount` does not answer a `stat` of its manifest within
/// [`MOUNT_PROBE_TIMEOUT`], or `None` when it does. `probing` keeps a hung mount to one
/// blocked thread.
pub(crate) async fn probe_mount(
    mount: &std::path::Path,
    probing: &Arc<AtomicBool>,
) -> Option<String> {
    if probing.swap(true, Ordering::AcqRel) {
        return Some("the mount has not answered an earlier probe".into());
    }
    let manifest = mount.join(MANIFEST_NAME);
    let probing = Arc::clone(probing);
    let probe = tokio::task::spawn_blocking(move || {
        let result = std::fs::metadata(&manifest);
        probing.store(false, Ordering::Release);
        result
    });
    match tokio::time::timeout(MOUNT_PROBE_TIMEOUT, probe).await {
        Ok(Ok(Ok(_))) => None,
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %e, "readiness: the mount's manifest cannot be read");
            Some(format!("the mount does not answer: {}", e.kind()))
        }
        Ok(Err(_)) => Some("the mount probe failed".into()),
        Err(_) => {
            Some(format!("the mount did not answer within {} s", MOUNT_PROBE_TIMEOUT.as_secs()))
        }
    }
}

/// `GET /healthz`: the process is alive and answers.
pub(crate) async fn healthz() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

/// `GET /readyz`: `200 {"status": "ok"}` when the store can be read and the mount (if any)
/// answers a `stat` of its manifest within [`MOUNT_PROBE_TIMEOUT`]; `503` in the error
/// envelope otherwise.
pub(super) async fn readyz(State(app): State<Arc<App>>) -> Response {
    match app.health.not_ready().await {
        None => Json(serde_json::json!({"status": "ok"})).into_response(),
        Some(why) => ApiError::new(Code::Unavailable, format!("not ready: {why}")).into_response(),
    }
}

/// `GET /metrics`: every counter in the OpenMetrics text format.
pub(super) async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &app.health.registry) {
        return ApiError::new(Code::Internal, format!("cannot render the metrics: {e}"))
            .into_response();
    }
    ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
        .into_response()
}

/// Counts every answered request by route pattern and status (a layer on the whole router).
pub(super) async fn track(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    // The pattern, never the raw path: labels stay few, and no name a client made up is kept.
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str);
    let route = route.to_string();
    let response = next.run(req).await;
    let labels = [("route", route), ("status", response.status().as_u16().to_string())];
    app.health.counters.requests.get_or_create(&labels).inc();
    response
}

/// The read path's counters and the catalog's revision, read at each scrape.
pub(crate) struct ReadPath {
    /// The catalog's revision (the store's, or the one a node's mount shows).
    pub(crate) revision: Arc<dyn Fn() -> u64 + Send + Sync>,
    pub(crate) fs: Option<Arc<FsStats>>,
    pub(crate) cache: Option<Arc<ChunkCache>>,
}

impl std::fmt::Debug for ReadPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadPath")
    }
}

pub(crate) fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

impl Collector for ReadPath {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let revision = i64::try_from((self.revision)()).unwrap_or(i64::MAX);
        let g = ConstGauge::new(revision);
        g.encode(e.encode_descriptor(
            "addonfs_catalog_revision",
            "The catalog's revision (bumped by every change to the store)",
            None,
            g.metric_type(),
        )?)?;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        // (name, help, value) of the plain counters, written after the histogram.
        let mut counters: Vec<(&str, &str, u64)> = Vec::new();
        if let Some(fs) = &self.fs {
            let mut family = e.encode_descriptor(
                "addonfs_fuse_request_duration_seconds",
                "FUSE requests answered by the mount, by kind, with their latency",
                None,
                MetricType::Histogram,
            )?;
            for op in Op::ALL {
                let c = fs.op(op);
                let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS_US
                    .iter()
                    .map(|&us| us as f64 / 1e6)
                    .chain(std::iter::once(f64::INFINITY))
                    .zip(c.buckets.iter().map(load))
                    .collect();
                let count = buckets.iter().map(|b| b.1).sum();
                let sum = load(&c.nanos) as f64 / 1e9;
                family
                    .encode_family(&[("op", op.name())])?
                    .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
            }
            counters.push((
                "addonfs_fuse_read_bytes",
                "File bytes answered to READ requests",
                load(&fs.bytes_served),
            ));
            if let Some(push) = &fs.push {
                counters.extend([
                    (
                        "addonfs_page_cache_pushed_files",
                        "Files stored in the kernel's page cache ahead of tree walkers",
                        load(&push.files),
                    ),
                    (
                        "addonfs_page_cache_pushed_bytes",
                        "Bytes stored in the kernel's page cache ahead of tree walkers",
                        load(&push.bytes),
                    ),
                ]);
            }
        }
        if let Some(cache) = &self.cache {
            let c = cache.counters();
            counters.extend([
                (
                    "addonfs_chunk_cache_hits",
                    "Chunk-cache lookups that found their span",
                    load(&c.hits),
                ),
                ("addonfs_chunk_cache_misses", "Chunk-cache lookups that did not", load(&c.misses)),
                (
                    "addonfs_chunk_cache_evictions",
                    "Chunks evicted to make room",
                    load(&c.evictions),
                ),
                (
                    "addonfs_spans_inflated",
                    "Gzip spans whose inflating started at an access point",
                    load(&c.spans_inflated),
                ),
            ]);
        }
        for (name, help, value) in counters {
            counter(&mut e, name, help, value)?;
        }
        Ok(())
    }
}
