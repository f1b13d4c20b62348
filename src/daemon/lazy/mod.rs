//! A node's lazy reading of add-ons (issue 13): an add-on is mounted as soon as its index's
//! head is at hand, and its archive's bytes (and its index's windows) are read by range
//! requests to the store as reads need them.
//!
//! * [`ranges`]: the on-disk range cache (`<cache-dir>/lazy/`), per chunk, LRU across
//!   add-ons, bounded with the whole-add-on cache by `--cache-size`, kept across restarts.
//! * [`fetch`]: range requests with timeouts, retries and backoff within a deadline, every
//!   chunk checked against its SHA-256.
//! * [`breaker`]: whether the store answers; once a read has waited its deadline out, reads
//!   that need the store fail fast until a range lands again.
//! * [`source`]: [`LazyFile`], the reader's byte source over both.
//! * [`fill`]: the background fill of enabled add-ons once reads are quiet.
//!
//! The head (`[0, head_size)` of a format-2 index: header, tree, access points, chunk
//! checksums) is fetched in one request, checked against the catalog's `index_head_sha256`,
//! and kept in the add-on's directory of the range cache, so a restart mounts without the
//! store. An add-on whose catalog entry has no head (a format-1 index, an old registry) is
//! fetched whole, as before ([`crate::daemon::cache`]).

pub mod breaker;
pub mod fetch;
pub mod fill;
pub mod ranges;
pub mod source;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use sha2::{Digest, Sha256};

pub use fetch::Fetcher;
pub use ranges::{ChunkSpec, DirStatus, RangeCache};
pub use source::{Activity, FetchPolicy, LazyFile};

use super::cache::{hex, Wanted};
use crate::addon::backend::Backend;
use crate::api::node::LazyStats;
use crate::index::Index;

/// The directory of the range cache in a node's cache directory.
pub const LAZY_DIR: &str = "lazy";

/// Whether the rest of an enabled add-on is fetched in the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Prefetch {
    /// After reads have been quiet for a while, fetch the rest at `--prefetch-rate`.
    Background,
    /// Only what reads ask for.
    None,
}

/// How a node reads lazily.
#[derive(Debug, Clone, Copy)]
pub struct LazyConfig {
    /// The smallest range request.
    pub min_request: u64,
    /// How long a read may wait for the store before `EIO`.
    pub store_timeout: Duration,
    /// The background fill.
    pub prefetch: Prefetch,
    /// Bytes per second the background fill may fetch.
    pub prefetch_rate: u64,
    /// How long reads must have left the store alone before the fill starts.
    pub prefetch_after: Duration,
}

impl Default for LazyConfig {
    fn default() -> Self {
        LazyConfig {
            min_request: 1 << 20,
            store_timeout: Duration::from_secs(10),
            prefetch: Prefetch::Background,
            prefetch_rate: 20 << 20,
            prefetch_after: Duration::from_secs(5),
        }
    }
}

/// What a node needs to read one add-on lazily (from the catalog).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadWanted {
    /// The archive and index, as for a whole fetch.
    pub wanted: Wanted,
    /// The head's size.
    pub head_size: u64,
    /// The head's SHA-256.
    pub head_sha256: [u8; 32],
}

impl HeadWanted {
    fn meta(&self) -> ranges::Meta {
        ranges::Meta {
            identifier: self.wanted.identifier.clone(),
            size: self.wanted.size,
            sha256: hex(&self.wanted.sha256),
            index_size: self.wanted.index_size,
            index_sha256: hex(&self.wanted.index_sha256),
            head_size: self.head_size,
            head_sha256: hex(&self.head_sha256),
        }
    }
}

/// One add-on opened lazily: its index (from the head) and its archive's byte source.
pub struct LazyAddon {
    /// The add-on's identifier.
    pub identifier: String,
    /// The index, whose windows are read through `windows`.
    pub index: Arc<Index>,
    /// The archive.
    pub archive: Arc<LazyFile>,
    /// The index object (its windows section).
    pub windows: Arc<LazyFile>,
}

impl std::fmt::Debug for LazyAddon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LazyAddon({})", self.identifier)
    }
}

/// A node's lazy reading: the range cache, the fetcher, and the add-ons opened.
pub struct Lazy {
    backend: Backend,
    cache: Arc<RangeCache>,
    fetcher: Fetcher,
    runtime: tokio::runtime::Handle,
    config: LazyConfig,
    activity: Arc<Activity>,
    /// Archive digest (hex) → the add-on opened.
    opened: Mutex<HashMap<String, Arc<LazyAddon>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Lazy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lazy({:?})", self.cache)
    }
}

impl Lazy {
    /// Opens the range cache under `cache_dir` (bounded by `limit` with `other()` bytes held
    /// by whole add-ons) and starts the background fill if configured.
    pub fn open(
        cache_dir: &Path,
        limit: u64,
        other: Box<dyn Fn() -> u64 + Send + Sync>,
        backend: Backend,
        runtime: tokio::runtime::Handle,
        config: LazyConfig,
        stats: Arc<LazyStats>,
    ) -> Result<Arc<Lazy>, ranges::RangeError> {
        let cache = Arc::new(RangeCache::open(
            &cache_dir.join(LAZY_DIR),
            limit,
            other,
            Arc::clone(&stats),
        )?);
        let lazy = Arc::new(Lazy {
            fetcher: Fetcher::new(backend.clone(), stats),
            backend,
            cache,
            runtime,
            config,
            activity: Arc::default(),
            opened: Mutex::new(HashMap::new()),
            stop: Arc::default(),
        });
        if config.prefetch == Prefetch::Background {
            fill::start(Arc::downgrade(&lazy), Arc::clone(&lazy.stop));
        }
        Ok(lazy)
    }

    /// The range cache.
    pub fn cache(&self) -> &Arc<RangeCache> {
        &self.cache
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<LazyStats> {
        self.fetcher.stats()
    }

    /// The add-on already opened, or opened now from its cached head; `None` when the head
    /// is not cached (fetch it with [`Lazy::fetch_head`]).
    pub fn get(&self, want: &HeadWanted) -> Result<Option<Arc<LazyAddon>>, String> {
        let key = hex(&want.wanted.sha256);
        if let Some(addon) = self.lock().get(&key) {
            return Ok(Some(Arc::clone(addon)));
        }
        let dir = self.cache.dir(&key);
        let Some(head) = self.cache.get_head(&dir, &want.meta()) else { return Ok(None) };
        let addon = Arc::new(self.open_addon(want, &dir, head)?);
        self.stats().addons.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(key, Arc::clone(&addon));
        Ok(Some(addon))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<LazyAddon>>> {
        self.opened.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The add-ons opened (for the background fill).
    pub fn opened(&self) -> Vec<Weak<LazyAddon>> {
        self.lock().values().map(Arc::downgrade).collect()
    }

    /// Fetches the index's head of `want` (one range request, retried within
    /// `--store-timeout`), checks it against the catalog, and keeps it.
    pub async fn fetch_head(&self, want: &HeadWanted) -> Result<u64, String> {
        let spec = ChunkSpec { offset: 0, len: want.head_size, sha256: want.head_sha256 };
        let deadline = tokio::time::Instant::now() + self.config.store_timeout;
        let head = self.fetcher.fetch(&want.wanted.index_key, &[spec], deadline).await?;
        self.stats().heads.fetch_add(1, Ordering::Relaxed);
        let dir = self.cache.dir(&hex(&want.wanted.sha256));
        let cache = Arc::clone(&self.cache);
        let meta = want.meta();
        let len = head.len() as u64;
        tokio::task::spawn_blocking(move || cache.put_head(&dir, &meta, &head))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        Ok(len)
    }

    /// The lazy file `name` of an add-on; requests of at least `min_request` bytes.
    #[allow(clippy::too_many_arguments)]
    fn file(
        &self,
        dir: &Path,
        name: &str,
        key: &str,
        size: u64,
        chunks: Vec<ChunkSpec>,
        min_request: u64,
        read_ahead: u64,
    ) -> Result<Arc<LazyFile>, String> {
        let file = self.cache.open_file(dir, name, size, chunks).map_err(|e| e.to_string())?;
        Ok(Arc::new(LazyFile::new(
            key.to_string(),
            file,
            Arc::clone(&self.cache),
            self.fetcher.clone(),
            self.runtime.clone(),
            FetchPolicy { min_request, read_ahead, timeout: self.config.store_timeout },
            Arc::clone(&self.activity),
        )))
    }

    /// Opens an add-on from its verified head: the index over a lazy windows source, and the
    /// archive over the index's chunk table.
    fn open_addon(
        &self,
        want: &HeadWanted,
        dir: &Path,
        head: Vec<u8>,
    ) -> Result<LazyAddon, String> {
        let w = &want.wanted;
        let deferred = Arc::new(Deferred { len: w.index_size, file: std::sync::OnceLock::new() });
        let index = Index::from_head(head.clone(), Arc::clone(&deferred) as _)
            .map_err(|e| format!("{}: the index's head: {e}", w.identifier))?;
        let identity = index.identity();
        if identity.digest != w.sha256 || identity.size != w.size {
            return Err(format!(
                "{}: the index's head describes another archive than the catalog's",
                w.identifier
            ));
        }
        let (windows_chunks, archive_chunks) = tables(&head, &index, want)?;
        // A window is a few KiB and only needed with its span: windows come in requests an
        // eighth of the archive's, so a first read stays far below the whole windows section.
        // Read-ahead does not shrink with the object: a sequential reader wants all it can get.
        let min = self.config.min_request;
        let ahead = min.saturating_mul(source::MAX_REQUEST_FACTOR);
        let (windows_min, windows_ahead) = (request_size(min / 8, w.index_size), ahead / 8);
        let windows = self.file(
            dir,
            "windows",
            &w.index_key,
            w.index_size,
            windows_chunks,
            windows_min,
            windows_ahead,
        )?;
        let archive_min = request_size(min, w.size);
        let archive =
            self.file(dir, "archive", &w.tarball_key, w.size, archive_chunks, archive_min, ahead)?;
        let _ = deferred.file.set(Arc::clone(&windows));
        Ok(LazyAddon { identifier: w.identifier.clone(), index: Arc::new(index), archive, windows })
    }

    /// The background fill's pace.
    pub fn config(&self) -> &LazyConfig {
        &self.config
    }

    /// Foreground activity.
    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    /// The backend.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }
}

/// The smallest request for an object of `size` bytes: `min`, or a 128th of the object when
/// that is smaller (a workload start on a small add-on then fetches a small part of it), but
/// never under [`MIN_REQUEST_FLOOR`].
fn request_size(min: u64, size: u64) -> u64 {
    min.min((size / 128).max(MIN_REQUEST_FLOOR))
}

/// Below this a request's latency, not its bytes, is all it costs.
const MIN_REQUEST_FLOOR: u64 = 64 << 10;

impl Drop for Lazy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The windows' source of an index loaded from its head, set once the windows' chunk table
/// (which the head gives) has its [`LazyFile`].
struct Deferred {
    len: u64,
    file: std::sync::OnceLock<Arc<LazyFile>>,
}

impl crate::source::ReadAt for Deferred {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        match self.file.get() {
            Some(file) => file.read_exact_at(buf, offset),
            None => Err(std::io::Error::other("the index's windows are not open yet")),
        }
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn will_need(&self, offset: u64, len: u64) {
        if let Some(file) = self.file.get() {
            file.will_need(offset, len);
        }
    }
}

/// The chunk tables of an add-on from its index's head: the windows' (each point's stored
/// window in the index object, with the SHA-256 the head records, so a window is checked
/// before it is cached; the index checks it again when it uses it) and the archive's (the
/// index's chunks: spans of a gzip archive, fixed pieces of a plain tar).
fn tables(
    head: &[u8],
    index: &Index,
    want: &HeadWanted,
) -> Result<(Vec<ChunkSpec>, Vec<ChunkSpec>), String> {
    use crate::index::format::{self, PointRec, Section};
    let id = &want.wanted.identifier;
    let header = format::parse_head(head).map_err(|e| format!("{id}: the index's head: {e}"))?;
    // The windows' table: each point's stored window with the SHA-256 the head records, so a
    // window is checked before it is cached (the index checks it again when it uses it).
    let section = |s: Section| {
        let e = header.sections[s as usize];
        let start = usize::try_from(e.offset).ok()?;
        head.get(start..start.checked_add(usize::try_from(e.len).ok()?)?)
    };
    let (Some(points), Some(sums)) = (section(Section::Points), section(Section::WindowSums))
    else {
        return Err(format!("{id}: the index's head lacks its points or window checksums"));
    };
    let windows_at = header.sections[Section::Windows as usize].offset;
    let mut windows: Vec<ChunkSpec> = points
        .chunks_exact(format::POINT_LEN)
        .enumerate()
        .filter_map(|(i, rec)| {
            let p = PointRec::decode(rec);
            if p.window_zlen == 0 {
                return None;
            }
            let sum = sums.get(i * format::WINDOW_SUM_LEN..(i + 1) * format::WINDOW_SUM_LEN)?;
            let mut sha256 = [0u8; 32];
            sha256.copy_from_slice(sum);
            Some(ChunkSpec {
                offset: windows_at.checked_add(p.window_off)?,
                len: u64::from(p.window_zlen),
                sha256,
            })
        })
        .collect();
    windows.sort_by_key(|c| c.offset);
    windows.dedup_by_key(|c| c.offset);
    let archive: Vec<ChunkSpec> = index
        .chunks()
        .map(|c| ChunkSpec { offset: c.offset, len: c.len, sha256: c.sha256 })
        .collect();
    if archive.is_empty() && want.wanted.size > 0 {
        return Err(format!("{id}: the index has no chunk checksums; it cannot be read lazily"));
    }
    Ok((windows, archive))
}

/// The digest of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Removes everything lazily cached under `cache_dir` (for `addonfs node cache clear`).
pub fn clear(cache_dir: &Path) -> std::io::Result<u64> {
    let dir: PathBuf = cache_dir.join(LAZY_DIR);
    let freed = du(&dir);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(freed),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// Bytes allocated on disk under `path` (sparse files count what they hold).
pub fn du(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
    if meta.is_dir() {
        std::fs::read_dir(path).map(|it| it.flatten().map(|e| du(&e.path())).sum()).unwrap_or(0)
    } else {
        meta.blocks() * 512
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod request_size_tests {
    use super::{request_size, MIN_REQUEST_FLOOR};

    #[test]
    fn a_small_object_gets_smaller_requests_never_below_the_floor() {
        let mib = 1 << 20;
        assert_eq!(request_size(mib, 1 << 30), mib, "a large object: --min-request");
        assert_eq!(request_size(mib, 40 * mib), 40 * mib / 128);
        assert_eq!(request_size(mib, mib), MIN_REQUEST_FLOOR);
        assert_eq!(request_size(16 << 10, 1 << 30), 16 << 10, "a smaller --min-request stands");
    }
}
