//! `addonfs node`: a read-only follower of a store's catalog. Its whole lifecycle is here; the
//! CLI only turns flags into a [`NodeConfig`] and calls [`run_node`]; tests run it as a process.
//!
//! The node mounts every enabled add-on of the catalog at its mount point, exactly as `serve`
//! does ([`DaemonMount`]: one directory per add-on, `/.addons.json` with the revision, a
//! volume's slot = the add-on's persisted id, so inode numbers are the same after a restart).
//! It writes nothing to the store.
//!
//! * **Following.** The catalog (`catalog.json`) is read at most once a second by a
//!   conditional GET (`If-None-Match` with the last ETag): an unchanged catalog costs one small
//!   request answered "not modified". A catalog whose revision is lower than the one served is
//!   ignored (a store restored from an old backup, a stale replica) and counted.
//! * **Fetching.** Each enabled add-on's archive and index are fetched into the node cache
//!   ([`NodeCache`]: verified by size and SHA-256 before they are kept), in the background, so
//!   a large download never holds up a disable. The manifest shows a revision only once every
//!   add-on enabled at it is mounted, so `attach --min-revision N` means "this node has all of
//!   N".
//! * **Faults.** The store down: the node keeps serving what it has (the catalog it last read
//!   is kept in the cache directory, so even a restart while the store is down serves the
//!   cached add-ons), retries with a backoff of 1 s doubling to [`MAX_BACKOFF`], reports it
//!   (`/readyz` says `store: down`, `addonfs_node_store_up` 0, a warning in the log when it
//!   goes down and an info line when it is back), and recovers by itself. The registry down:
//!   nothing changes for a node (it never talks to the registry). Killed and restarted: the
//!   cache is found intact, the same ids give the same inodes, and the holder kept the mount
//!   alive meanwhile ([`super::restart`], as for `serve`): the restarted node takes it over
//!   with the cached catalog loaded first, and open files never notice. Without a holder
//!   (`--no-holder`) the stale mount is cleared and mounted anew.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use object_store::GetOptions;

use super::cache::{hex, parse_sha256, NodeCache, Wanted};
use super::lazy::{HeadWanted, Lazy, LazyConfig};
use super::restart::{MountLife, Restarts};
use super::DaemonError;
use super::{ArchiveSource, DaemonMount, MountAddon};
use crate::addon::backend::{self, Backend};
use crate::addon::catalog::{Catalog as CatalogDoc, CATALOG_KEY};
use crate::addon::Record;
use crate::api::node::{node_router, LazyStats, NodeObserved, NodeStats};
use crate::mount::MountOptions;

/// How often the catalog is read when the store answers.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The longest wait between two tries while the store does not answer.
pub const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// How long one read of the catalog may take, retries included.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest catalog accepted.
const CATALOG_LIMIT: u64 = crate::addon::catalog::MAX_CATALOG_BYTES as u64;
/// The copy of the last catalog served, in the cache directory.
const CACHED_CATALOG: &str = "catalog.json";

/// What `addonfs node` runs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The store's URL (a path, `file:///...`, `s3://bucket/prefix`).
    pub store: String,
    /// The mount point (created if missing).
    pub mount: PathBuf,
    /// The mount across the node's restarts (a holder keeps it in the cache directory).
    pub restarts: Restarts,
    /// The node cache's directory.
    pub cache_dir: PathBuf,
    /// The node cache's size in bytes.
    pub cache_size: u64,
    /// Bytes of inflated spans kept in memory.
    pub chunk_cache: u64,
    /// Where `/healthz`, `/readyz` and `/metrics` are served, if anywhere.
    pub listen: Option<SocketAddr>,
    /// Let other users read the mount.
    pub allow_other: bool,
    /// Read add-ons lazily (those whose catalog entry has an index head); `None`: fetch every
    /// add-on whole before mounting it.
    pub lazy: Option<LazyConfig>,
}

/// One add-on of the catalog as a node reads it.
#[derive(Debug, Clone)]
struct NodeAddon {
    record: Record,
    paths: Vec<String>,
    wanted: Wanted,
    /// Its index's head, when the catalog gives one: the add-on can be read lazily.
    head: Option<HeadWanted>,
}

/// A parsed catalog.
#[derive(Debug, Clone)]
struct Catalog {
    revision: u64,
    addons: Vec<NodeAddon>,
}

/// Parses a catalog's bytes (untrusted: [`CatalogDoc::parse`] checks sizes, keys and rules;
/// the digests are checked here).
fn parse_catalog(bytes: &[u8]) -> Result<Catalog, String> {
    let doc = CatalogDoc::parse(bytes).map_err(|e| e.to_string())?;
    let mut addons = Vec::with_capacity(doc.addons.len());
    for a in doc.addons {
        let id = a.record.identifier.clone();
        let sha256 = parse_sha256(&a.record.sha256)
            .ok_or_else(|| format!("add-on `{id}`: sha256 is not 64 hex digits"))?;
        let index_sha256 = parse_sha256(&a.index_sha256)
            .ok_or_else(|| format!("add-on `{id}`: index_sha256 is not 64 hex digits"))?;
        let wanted = Wanted {
            identifier: id.clone(),
            tarball_key: a.objects.tarball,
            size: a.record.size,
            sha256,
            index_key: a.objects.index,
            index_size: a.index_size,
            index_sha256,
        };
        let head = match a.index_head {
            None => None,
            Some(h) => Some(HeadWanted {
                wanted: wanted.clone(),
                head_size: h.size,
                head_sha256: parse_sha256(&h.sha256).ok_or_else(|| {
                    format!("add-on `{id}`: index_head_sha256 is not 64 hex digits")
                })?,
            }),
        };
        addons.push(NodeAddon { wanted, head, record: a.record, paths: a.paths });
    }
    Ok(Catalog { revision: doc.revision, addons })
}

/// Runs a node until `shutdown` completes. `ready` is told the endpoints' address (if any)
/// once the mount is up.
pub fn run_node(
    config: &NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(Option<SocketAddr>),
) -> Result<(), DaemonError> {
    let source = backend::open(&config.store)?;
    // The mount survives this process with a holder, as `serve`'s does (see
    // `super::restart`): the cache directory is the node's state directory.
    let Some(mut life) = MountLife::begin(&config.cache_dir, &config.mount, config.restarts)?
    else {
        return Ok(());
    };
    // One node per cache directory: two would evict each other's files.
    let lock = life.lock(&config.cache_dir, "node")?;
    let cache = Arc::new(NodeCache::open(&config.cache_dir, config.cache_size)?);
    let mount = Arc::new(DaemonMount::detached(None, &config.mount, config.chunk_cache)?);
    let stats = Arc::new(NodeStats::default());
    stats.cache_limit.store(config.cache_size, Ordering::Relaxed);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| DaemonError::Failed(format!("cannot start the runtime: {e}")))?;
    let lazy_stats = Arc::new(LazyStats::default());
    let lazy = match config.lazy {
        None => None,
        Some(lazy_config) => {
            // One budget: each cache counts the other's bytes against --cache-size.
            let whole = Arc::downgrade(&cache);
            let lazy = Lazy::open(
                &config.cache_dir,
                config.cache_size,
                Box::new(move || whole.upgrade().map_or(0, |c| c.held())),
                source.clone(),
                runtime.handle().clone(),
                lazy_config,
                Arc::clone(&lazy_stats),
            )
            .map_err(|e| DaemonError::Failed(format!("the range cache: {e}")))?;
            let ranges = Arc::downgrade(lazy.cache());
            cache.share_limit_with(Box::new(move || ranges.upgrade().map_or(0, |r| r.used())));
            Some(lazy)
        }
    };
    let mut follower = Follower {
        source,
        cache: Arc::clone(&cache),
        mount: Arc::clone(&mount),
        stats: Arc::clone(&stats),
        cache_dir: config.cache_dir.clone(),
        catalog: None,
        etag: None,
        fetching: HashMap::new(),
        failed: HashMap::new(),
        lazy,
    };
    // The last catalog served, so a node restarted while the store is down serves its cache.
    follower.load_cached_catalog();
    // Attached once the cached catalog is in: a connection taken over has requests waiting.
    let opts = MountOptions { allow_other: config.allow_other, ..MountOptions::default() };
    // Retired by a successor, this process exits at once: its half downloads go first.
    let retiring = Arc::clone(&cache);
    life.on_retire(move || retiring.abandon_downloads());
    life.attach(&mount, &opts, || Some(lock.try_clone_fd()))?;
    let result = runtime.block_on(async {
        let listener = match config.listen {
            Some(addr) => Some(super::restart::bind(addr, config.restarts.kept()).await?),
            None => None,
        };
        let addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        say(format_args!(
            "addonfs: node mounted the add-ons at {} (store {}, cache {})",
            mount.path().display(),
            config.store,
            config.cache_dir.display()
        ));
        if let Some(addr) = addr {
            say(format_args!("addonfs: listening on http://{addr}"));
        }
        ready(addr);
        life.serving(mount.path());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let server = listener.map(|listener| {
            let router = node_router(NodeObserved {
                stats: Arc::clone(&stats),
                mount: mount.path().to_path_buf(),
                fs: mount.fs_stats(),
                cache: mount.cache(),
                lazy: Arc::clone(&lazy_stats),
            });
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(stopped).await
                {
                    tracing::warn!(error = %e, "the node's endpoints stopped");
                }
            })
        });
        tokio::select! {
            () = follower.run() => {}
            () = shutdown => {}
        }
        let _ = stop_tx.send(true);
        if let Some(server) = server {
            let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
        }
        Ok::<(), DaemonError>(())
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(follower);
    life.stop(mount, result.is_err());
    drop(lock);
    result
}

/// What a fetch task reports: the archive's digest, the bytes fetched or why not, and whether
/// it was an index head (a lazy add-on) rather than a whole add-on.
type Fetched = (String, Result<u64, String>, bool);

/// The follower loop's state.
struct Follower {
    source: Backend,
    cache: Arc<NodeCache>,
    mount: Arc<DaemonMount>,
    stats: Arc<NodeStats>,
    cache_dir: PathBuf,
    /// The catalog being served.
    catalog: Option<Catalog>,
    /// The ETag of the last catalog read.
    etag: Option<String>,
    /// Archive digest → identifier, for fetches in flight.
    fetching: HashMap<String, String>,
    /// Archive digest → when a failed fetch may be tried again.
    failed: HashMap<String, tokio::time::Instant>,
    /// Lazy reading, unless the node fetches add-ons whole.
    lazy: Option<Arc<Lazy>>,
}

impl Follower {
    fn load_cached_catalog(&mut self) {
        let path = self.cache_dir.join(CACHED_CATALOG);
        let Ok(bytes) = std::fs::read(&path) else { return };
        match parse_catalog(&bytes) {
            Ok(catalog) => {
                tracing::info!(
                    revision = catalog.revision,
                    "serving the cached catalog until the store answers"
                );
                self.catalog = Some(catalog);
                self.stats.has_catalog.store(true, Ordering::Relaxed);
                self.reconcile(None);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring the cached catalog")
            }
        }
    }

    /// Polls the catalog and applies it until the task is dropped.
    async fn run(&mut self) {
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Fetched>();
        let mut backoff = POLL_INTERVAL;
        let mut next_poll = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(next_poll) => {
                    let mut changed = false;
                    match self.poll().await {
                        Ok(c) => {
                            changed = c;
                            if !self.stats.store_up.swap(true, Ordering::Relaxed) {
                                tracing::info!("the store answers");
                            }
                            backoff = POLL_INTERVAL;
                        }
                        Err(e) => {
                            self.stats.store_errors.fetch_add(1, Ordering::Relaxed);
                            if self.stats.store_up.swap(false, Ordering::Relaxed) || backoff == POLL_INTERVAL {
                                tracing::warn!(error = %e, "cannot read the catalog; serving what is cached, retrying with backoff");
                            }
                            *self.stats.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                        }
                    }
                    next_poll = tokio::time::Instant::now() + backoff;
                    // Nothing to do when nothing changed and nothing is missing: an idle node
                    // only asks for the catalog.
                    if changed || self.stats.missing.load(Ordering::Relaxed) > 0 || !self.failed.is_empty() {
                        self.reconcile(Some(&done_tx));
                    }
                }
                Some((key, result, head)) = done_rx.recv() => {
                    let id = self.fetching.remove(&key).unwrap_or_default();
                    match result {
                        Ok(bytes) if head => {
                            tracing::info!(addon = %id, bytes, "index head fetched and verified; mounting lazily");
                        }
                        Ok(bytes) => {
                            self.stats.fetches.fetch_add(1, Ordering::Relaxed);
                            self.stats.fetch_bytes.fetch_add(bytes, Ordering::Relaxed);
                            tracing::info!(addon = %id, bytes, "fetched and verified");
                        }
                        Err(e) => {
                            self.stats.fetch_failures.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(addon = %id, error = %e, "cannot fetch add-on; retrying");
                            self.failed.insert(key, tokio::time::Instant::now() + backoff.max(Duration::from_secs(2)));
                        }
                    }
                    self.reconcile(Some(&done_tx));
                }
            }
        }
    }

    /// One conditional read of the catalog; a newer one replaces the one served (then the
    /// answer is true).
    async fn poll(&mut self) -> Result<bool, String> {
        let location = self.source.key(CATALOG_KEY);
        let options = GetOptions { if_none_match: self.etag.clone(), ..Default::default() };
        self.stats.catalog_requests.fetch_add(1, Ordering::Relaxed);
        // The client's own retries stay inside this bound, so a store that hangs is reported
        // down after it rather than after the client's minutes of retrying.
        let read =
            tokio::time::timeout(POLL_TIMEOUT, self.source.store().get_opts(&location, options));
        let Ok(answer) = read.await else {
            return Err(format!("{CATALOG_KEY}: no answer within {} s", POLL_TIMEOUT.as_secs()));
        };
        let result = match answer {
            Ok(result) => result,
            Err(object_store::Error::NotModified { .. }) => {
                self.stats.catalog_not_modified.fetch_add(1, Ordering::Relaxed);
                return Ok(false);
            }
            // A catalog served before cannot vanish from a healthy store (an unmounted NFS
            // share, a wrong bucket): that is the store failing.
            Err(object_store::Error::NotFound { .. })
                if self.catalog.as_ref().is_some_and(|c| c.revision > 0) =>
            {
                return Err(format!("{CATALOG_KEY} is gone from the store"));
            }
            // No catalog yet: an empty store (the registry has not written one).
            Err(object_store::Error::NotFound { .. }) => {
                if self.catalog.is_none() {
                    self.catalog = Some(Catalog { revision: 0, addons: Vec::new() });
                    self.stats.has_catalog.store(true, Ordering::Relaxed);
                    return Ok(true);
                }
                return Ok(false);
            }
            Err(e) => return Err(format!("{CATALOG_KEY}: {e}")),
        };
        if result.meta.size > CATALOG_LIMIT {
            return Err(format!("{CATALOG_KEY} is larger than {CATALOG_LIMIT} bytes"));
        }
        let etag = result.meta.e_tag.clone();
        let bytes = tokio::time::timeout(POLL_TIMEOUT, result.bytes())
            .await
            .map_err(|_| {
                format!(
                    "{CATALOG_KEY}: the body did not arrive within {} s",
                    POLL_TIMEOUT.as_secs()
                )
            })?
            .map_err(|e| format!("{CATALOG_KEY}: {e}"))?;
        // The ETag is kept even for a catalog refused below: it is not read again until it
        // changes.
        self.etag = etag;
        let catalog = match parse_catalog(&bytes) {
            Ok(catalog) => catalog,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring an invalid catalog");
                return Ok(false);
            }
        };
        let current = self.catalog.as_ref().map_or(0, |c| c.revision);
        if catalog.revision < current {
            self.stats.catalog_regressions.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                revision = catalog.revision,
                served = current,
                "ignoring a catalog whose revision went backwards"
            );
            return Ok(false);
        }
        self.stats.catalog_revision.store(catalog.revision, Ordering::Relaxed);
        if let Err(e) = keep_catalog(&self.cache_dir, &bytes) {
            tracing::warn!(error = %e, "cannot keep a copy of the catalog");
        }
        self.catalog = Some(catalog);
        self.stats.has_catalog.store(true, Ordering::Relaxed);
        Ok(true)
    }

    /// Applies the catalog to the mount with what is cached, and starts the fetches of the
    /// enabled add-ons that are not (with `done`; without, only applies).
    fn reconcile(&mut self, done: Option<&tokio::sync::mpsc::UnboundedSender<Fetched>>) {
        let Some(catalog) = &self.catalog else { return };
        let mut list = Vec::with_capacity(catalog.addons.len());
        let mut to_fetch = Vec::new();
        let mut heads_to_fetch = Vec::new();
        for addon in &catalog.addons {
            let enabled = addon.record.status.is_enabled();
            // A whole copy in the cache first (it needs no store at all), then lazily.
            let mut source = self.cache.get(&addon.wanted).map(|(tarball, index)| {
                ArchiveSource::Verified { tarball, index, sha256: addon.wanted.sha256 }
            });
            let mut whole = source.is_none() && enabled;
            if let (None, Some(lazy), Some(head)) = (&source, &self.lazy, &addon.head) {
                match lazy.get(head) {
                    Ok(Some(opened)) => {
                        source = Some(ArchiveSource::Lazy(opened));
                        whole = false;
                    }
                    Ok(None) => {
                        if enabled {
                            heads_to_fetch.push(head.clone());
                        }
                        whole = false;
                    }
                    Err(e) => {
                        tracing::warn!(addon = %addon.record.identifier, error = %e, "cannot read the add-on lazily; fetching it whole");
                    }
                }
            }
            if whole {
                to_fetch.push(addon.wanted.clone());
            }
            list.push(MountAddon {
                record: addon.record.clone(),
                paths: addon.paths.clone(),
                source,
            });
        }
        let applied = self.mount.apply(catalog.revision, &list);
        self.stats.revision.store(applied.revision, Ordering::Relaxed);
        self.stats.missing.store(applied.missing.len() as u64, Ordering::Relaxed);
        // In use: every add-on in the mount (listed or hidden) and every enabled one.
        let in_use: HashSet<String> = catalog
            .addons
            .iter()
            .filter(|a| {
                applied.mounted.contains(&a.record.identifier) || a.record.status.is_enabled()
            })
            .map(|a| hex(&a.wanted.sha256))
            .collect();
        self.cache.touch(&in_use);
        self.stats.cache_bytes.store(self.cache.used(), Ordering::Relaxed);
        self.stats
            .cache_evictions
            .store(self.cache.evictions.load(Ordering::Relaxed), Ordering::Relaxed);
        let Some(done) = done else { return };
        // Failures of add-ons no longer wanted are forgotten.
        let wanted: HashSet<String> = to_fetch
            .iter()
            .chain(heads_to_fetch.iter().map(|h| &h.wanted))
            .map(|w| hex(&w.sha256))
            .collect();
        self.failed.retain(|key, _| wanted.contains(key));
        let now = tokio::time::Instant::now();
        if let Some(lazy) = &self.lazy {
            for head in heads_to_fetch {
                let key = hex(&head.wanted.sha256);
                if self.fetching.contains_key(&key)
                    || self.failed.get(&key).is_some_and(|t| *t > now)
                {
                    continue;
                }
                self.failed.remove(&key);
                self.fetching.insert(key.clone(), head.wanted.identifier.clone());
                let (lazy, done) = (Arc::clone(lazy), done.clone());
                tokio::spawn(async move {
                    let result = lazy.fetch_head(&head).await;
                    let _ = done.send((key, result, true));
                });
            }
        }
        for wanted in to_fetch {
            let key = hex(&wanted.sha256);
            if self.fetching.contains_key(&key) || self.failed.get(&key).is_some_and(|t| *t > now) {
                continue;
            }
            self.failed.remove(&key);
            self.fetching.insert(key.clone(), wanted.identifier.clone());
            let (source, cache, in_use, done) =
                (self.source.clone(), Arc::clone(&self.cache), in_use.clone(), done.clone());
            tokio::spawn(async move {
                let result = cache
                    .fetch(&source, &wanted, &in_use)
                    .await
                    .map(|_| wanted.bytes())
                    .map_err(|e| e.to_string());
                let _ = done.send((key, result, false));
            });
        }
    }
}

/// Keeps `bytes` as the cached catalog (through a temporary file and a rename).
fn keep_catalog(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{CACHED_CATALOG}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, dir.join(CACHED_CATALOG))
}

/// A progress line on standard output, flushed (a supervisor or test waits for it).
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}
