//! A node's cache of add-ons on local disk (`--cache-dir`, bounded by `--cache-size`).
//!
//! Layout:
//!
//! ```text
//! <cache>/entries/<sha256>/addon.tar.gz                   the archive, verified
//! <cache>/entries/<sha256>/addon.tar.gz.addonfs-index     its index, verified
//! <cache>/entries/<sha256>/complete.json                  the marker: what was verified
//! <cache>/tmp/<random>/                                   a download in progress
//! ```
//!
//! An entry is keyed by its archive's SHA-256 (from the catalog). A download goes to
//! `tmp/<random>/`, hashing the bytes as they arrive; only when the size and SHA-256 of both the
//! archive and the index match the catalog is the marker written (fsynced) and the directory
//! renamed into `entries/` in one step. So an entry either is whole and verified, or is not
//! there: unverified bytes are never exposed. `tmp/` is cleared at start.
//!
//! At start the entries are re-verified cheaply: the marker must parse and name the same digest
//! as its directory, and both files must have the sizes it records (a full re-hash of every
//! cached byte at each start would cost a node's restart minutes on large caches; the bytes
//! were hashed once when written, and the marker is written last).
//!
//! Eviction is least recently used, whole add-ons at a time, and never an entry in use (the
//! caller names them: every add-on whose volume is in the mount, listed or hidden, because the
//! kernel answers a workload's opens without asking the daemon, so the daemon cannot tell
//! whether a disabled add-on still has open files). Recency is the marker's modification time,
//! touched whenever the add-on is (re)mounted or stays in use, so it survives restarts.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::addon::backend::Backend;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The archive's file name in an entry.
pub const TARBALL: &str = "addon.tar.gz";
/// The index's file name in an entry.
pub const INDEX: &str = "addon.tar.gz.addonfs-index";
/// The marker's file name in an entry.
pub const MARKER: &str = "complete.json";

/// How stale an entry's recency may get before [`NodeCache::touch`] writes it again.
pub const TOUCH_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// What a node wants cached for one add-on, from the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// The add-on's identifier (for messages and the marker).
    pub identifier: String,
    /// The archive's key in the store.
    pub tarball_key: String,
    /// The archive's size.
    pub size: u64,
    /// The archive's SHA-256.
    pub sha256: [u8; 32],
    /// The index's key in the store.
    pub index_key: String,
    /// The index's size.
    pub index_size: u64,
    /// The index's SHA-256.
    pub index_sha256: [u8; 32],
}

impl Wanted {
    /// Bytes the entry takes on disk (its two files).
    pub fn bytes(&self) -> u64 {
        self.size.saturating_add(self.index_size)
    }
}

/// The marker of a complete entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Marker {
    identifier: String,
    size: u64,
    sha256: String,
    index_size: u64,
    index_sha256: String,
}

/// One complete entry.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The archive's SHA-256, lowercase hex (the directory's name).
    pub key: String,
    /// The add-on's identifier.
    pub identifier: String,
    /// Bytes on disk.
    pub bytes: u64,
    /// When it was last in use.
    pub used: SystemTime,
    /// The index's SHA-256, lowercase hex.
    index_sha256: String,
}

/// A cache failure.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A local file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The store could not be read.
    #[error("the store: {0}")]
    Store(#[from] object_store::Error),
    /// What the store sent is not what the catalog promised.
    #[error("{key}: {what} (the catalog says size {size}, SHA-256 {sha256}); not kept")]
    Mismatch {
        /// The object's key.
        key: String,
        /// What differs.
        what: String,
        /// The catalog's size.
        size: u64,
        /// The catalog's digest.
        sha256: String,
    },
    /// The add-on does not fit beside the add-ons in use.
    #[error("add-on `{identifier}` needs {need} bytes, and only {free} of the cache's {limit} bytes can be freed (the rest is in use); raise --cache-size")]
    Full {
        /// The add-on.
        identifier: String,
        /// Bytes it needs.
        need: u64,
        /// Bytes that could be had.
        free: u64,
        /// The cache's size.
        limit: u64,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io { path: path.to_path_buf(), source }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Parses 64 hex digits.
pub fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

/// The node's add-on cache.
pub struct NodeCache {
    root: PathBuf,
    limit: u64,
    entries: Mutex<Vec<Entry>>,
    /// Entries evicted since start.
    pub evictions: std::sync::atomic::AtomicU64,
    /// Bytes of downloads in progress, counted against the limit so that two fetches at once
    /// cannot together overfill the cache.
    reserved: std::sync::atomic::AtomicU64,
    /// Bytes held in the same budget by the range cache (lazily read add-ons), which this
    /// cache cannot evict; set once by the node.
    external: std::sync::OnceLock<Box<dyn Fn() -> u64 + Send + Sync>>,
    /// Staging directories of the downloads in progress.
    downloading: Mutex<HashSet<PathBuf>>,
}

impl NodeCache {
    /// Opens (creating) the cache at `root` with `limit` bytes: clears `tmp/`, and keeps the
    /// entries that pass the cheap check (removing the others).
    pub fn open(root: &Path, limit: u64) -> Result<NodeCache, CacheError> {
        let entries_dir = root.join("entries");
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&entries_dir).map_err(io(&entries_dir))?;
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let mut entries = Vec::new();
        for item in std::fs::read_dir(&entries_dir).map_err(io(&entries_dir))? {
            let item = item.map_err(io(&entries_dir))?;
            let dir = item.path();
            match check_entry(&dir) {
                Ok(entry) => entries.push(entry),
                Err(why) => {
                    tracing::warn!(entry = %dir.display(), %why, "dropping a cache entry");
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
        }
        Ok(NodeCache {
            root: root.to_path_buf(),
            limit,
            entries: Mutex::new(entries),
            evictions: Default::default(),
            reserved: Default::default(),
            external: std::sync::OnceLock::new(),
            downloading: Mutex::default(),
        })
    }

    /// Removes the staging directories of the downloads in progress: for a process about to
    /// exit without destructors (retired by a successor, which cleared `tmp/` when it started
    /// and would not see them again until its own restart).
    pub fn abandon_downloads(&self) {
        for dir in self.downloading.lock().unwrap_or_else(|p| p.into_inner()).drain() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// Counts `bytes()` (the range cache's) against the limit too.
    pub fn share_limit_with(&self, bytes: Box<dyn Fn() -> u64 + Send + Sync>) {
        let _ = self.external.set(bytes);
    }

    /// Bytes held and reserved (downloads in progress), for the range cache's budget.
    pub fn held(&self) -> u64 {
        self.used().saturating_add(self.reserved.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The cache's size limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes held by complete entries.
    pub fn used(&self) -> u64 {
        self.lock().iter().map(|e| e.bytes).sum()
    }

    /// The complete entries.
    pub fn entries(&self) -> Vec<Entry> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dir(&self, key: &str) -> PathBuf {
        self.root.join("entries").join(key)
    }

    /// The archive and index of `wanted` if they are cached (and their index digest matches).
    pub fn get(&self, wanted: &Wanted) -> Option<(PathBuf, PathBuf)> {
        let key = hex(&wanted.sha256);
        let entries = self.lock();
        let entry = entries.iter().find(|e| e.key == key)?;
        if entry.index_sha256 != hex(&wanted.index_sha256) || entry.bytes != wanted.bytes() {
            return None;
        }
        let dir = self.dir(&key);
        Some((dir.join(TARBALL), dir.join(INDEX)))
    }

    /// Marks the entries of `keys` (archive digests) as used now. An entry marked within the
    /// last [`TOUCH_EVERY`] is left alone: an idle node writes nothing.
    pub fn touch(&self, keys: &HashSet<String>) {
        let now = SystemTime::now();
        let mut entries = self.lock();
        let stale = |e: &Entry| now.duration_since(e.used).map_or(true, |age| age >= TOUCH_EVERY);
        for entry in entries.iter_mut().filter(|e| keys.contains(&e.key) && stale(e)) {
            // Recency survives restarts: the marker's mtime (best effort).
            let marker = self.root.join("entries").join(&entry.key).join(MARKER);
            if let Ok(file) = std::fs::File::options().append(true).open(&marker) {
                let _ = file.set_modified(now);
            }
            entry.used = now;
        }
    }

    /// Evicts least recently used entries not in `in_use` (archive digests) until `need` more
    /// bytes fit under the limit.
    pub fn make_room(
        &self,
        identifier: &str,
        need: u64,
        in_use: &HashSet<String>,
    ) -> Result<(), CacheError> {
        let mut entries = self.lock();
        let reserved = self.reserved.load(std::sync::atomic::Ordering::Relaxed);
        let external = self.external.get().map_or(0, |f| f());
        let used: u64 = entries
            .iter()
            .map(|e| e.bytes)
            .sum::<u64>()
            .saturating_add(reserved)
            .saturating_add(external);
        let evictable: u64 =
            entries.iter().filter(|e| !in_use.contains(&e.key)).map(|e| e.bytes).sum();
        let pinned = used - evictable;
        if pinned.saturating_add(need) > self.limit {
            return Err(CacheError::Full {
                identifier: identifier.to_string(),
                need,
                free: self.limit.saturating_sub(pinned),
                limit: self.limit,
            });
        }
        let mut used = used;
        while used.saturating_add(need) > self.limit {
            let Some(victim) = entries
                .iter()
                .enumerate()
                .filter(|(_, e)| !in_use.contains(&e.key))
                .min_by_key(|(_, e)| e.used)
                .map(|(i, _)| i)
            else {
                break;
            };
            let entry = entries.remove(victim);
            let dir = self.dir(&entry.key);
            tracing::info!(addon = %entry.identifier, bytes = entry.bytes, "evicting from the node cache");
            // Renamed out first, so a crash mid-removal leaves no half entry in `entries/`.
            let doomed = self.root.join("tmp").join(format!("evicted-{}", entry.key));
            match std::fs::rename(&dir, &doomed) {
                Ok(()) => {
                    let _ = std::fs::remove_dir_all(&doomed);
                }
                Err(e) => tracing::warn!(entry = %dir.display(), error = %e, "cannot evict"),
            }
            used -= entry.bytes;
            self.evictions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// [`NodeCache::make_room`], then counts `need` against the limit until the reservation
    /// is dropped (under the same lock, so two fetches cannot both take the same room).
    fn reserve(
        &self,
        identifier: &str,
        need: u64,
        in_use: &HashSet<String>,
    ) -> Result<Reservation<'_>, CacheError> {
        static RESERVING: Mutex<()> = Mutex::new(());
        let _one = RESERVING.lock().unwrap_or_else(|p| p.into_inner());
        self.make_room(identifier, need, in_use)?;
        Ok(Reservation::new(&self.reserved, need))
    }

    /// Downloads `wanted`'s archive and index from `store`, verifies
    /// both, and keeps them as a complete entry; returns the archive's and index's paths.
    /// `in_use` (archive digests) are never evicted to make room. Unverified bytes stay in
    /// `tmp/` and are removed.
    pub async fn fetch(
        &self,
        store: &Backend,
        wanted: &Wanted,
        in_use: &HashSet<String>,
    ) -> Result<(PathBuf, PathBuf), CacheError> {
        if let Some(found) = self.get(wanted) {
            return Ok(found);
        }
        let _reservation = self.reserve(&wanted.identifier, wanted.bytes(), in_use)?;
        let tmp_root = self.root.join("tmp");
        let staging = tempfile::Builder::new()
            .prefix("fetch-")
            .tempdir_in(&tmp_root)
            .map_err(io(&tmp_root))?;
        let _downloading = Downloading::new(&self.downloading, staging.path());
        let tarball = staging.path().join(TARBALL);
        let index = staging.path().join(INDEX);
        download(store, &wanted.tarball_key, &tarball, wanted.size, &wanted.sha256).await?;
        download(store, &wanted.index_key, &index, wanted.index_size, &wanted.index_sha256).await?;
        let marker = Marker {
            identifier: wanted.identifier.clone(),
            size: wanted.size,
            sha256: hex(&wanted.sha256),
            index_size: wanted.index_size,
            index_sha256: hex(&wanted.index_sha256),
        };
        let marker_path = staging.path().join(MARKER);
        let text = serde_json::to_vec(&marker).unwrap_or_default();
        write_synced(&marker_path, &text)?;
        sync_dir(staging.path())?;
        let key = hex(&wanted.sha256);
        let dir = self.dir(&key);
        let staged = staging.keep();
        if let Err(e) = std::fs::rename(&staged, &dir) {
            let _ = std::fs::remove_dir_all(&staged);
            return Err(CacheError::Io { path: dir, source: e });
        }
        sync_dir(&self.root.join("entries"))?;
        let mut entries = self.lock();
        entries.retain(|e| e.key != key);
        entries.push(Entry {
            key,
            identifier: wanted.identifier.clone(),
            bytes: wanted.bytes(),
            used: SystemTime::now(),
            index_sha256: marker.index_sha256,
        });
        Ok((dir.join(TARBALL), dir.join(INDEX)))
    }
}

/// A download's staging directory, listed in the cache while the download runs (so a process
/// told to retire, which exits without destructors, can remove it: [`NodeCache::abandon_downloads`]).
struct Downloading<'a> {
    set: &'a Mutex<HashSet<PathBuf>>,
    path: PathBuf,
}

impl<'a> Downloading<'a> {
    fn new(set: &'a Mutex<HashSet<PathBuf>>, path: &Path) -> Self {
        set.lock().unwrap_or_else(|p| p.into_inner()).insert(path.to_path_buf());
        Downloading { set, path: path.to_path_buf() }
    }
}

impl Drop for Downloading<'_> {
    fn drop(&mut self) {
        self.set.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.path);
    }
}

/// Bytes counted against the limit while a download runs; released when it ends either way.
struct Reservation<'a> {
    counter: &'a std::sync::atomic::AtomicU64,
    bytes: u64,
}

impl<'a> Reservation<'a> {
    fn new(counter: &'a std::sync::atomic::AtomicU64, bytes: u64) -> Self {
        counter.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        Reservation { counter, bytes }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.bytes, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Streams one object into `to`, checking its size and SHA-256 as the bytes arrive.
async fn download(
    store: &Backend,
    key: &str,
    to: &Path,
    size: u64,
    sha256: &[u8; 32],
) -> Result<(), CacheError> {
    let location = store.key(key);
    let mismatch = |what: String| CacheError::Mismatch {
        key: key.to_string(),
        what,
        size,
        sha256: hex(sha256),
    };
    let result = store.store().get_opts(&location, Default::default()).await?;
    let mut stream = result.into_stream();
    let mut file = std::fs::File::create(to).map_err(io(to))?;
    let mut hasher = Sha256::new();
    let mut got = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        got = got.saturating_add(chunk.len() as u64);
        if got > size {
            return Err(mismatch(format!("more than {size} bytes arrived")));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).map_err(io(to))?;
    }
    if got != size {
        return Err(mismatch(format!("{got} bytes arrived")));
    }
    let digest: [u8; 32] = hasher.finalize().into();
    if &digest != sha256 {
        return Err(mismatch(format!("the bytes' SHA-256 is {}", hex(&digest))));
    }
    file.sync_all().map_err(io(to))?;
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let mut file = std::fs::File::create(path).map_err(io(path))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(io(path))
}

fn sync_dir(dir: &Path) -> Result<(), CacheError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// The cheap check of an entry at start: its marker parses, names its directory's digest,
/// and both files have the recorded sizes.
fn check_entry(dir: &Path) -> Result<Entry, String> {
    let key = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    if parse_sha256(&key).is_none() {
        return Err("not an entry name".into());
    }
    let marker_path = dir.join(MARKER);
    let meta = std::fs::metadata(&marker_path).map_err(|e| format!("no marker: {e}"))?;
    if meta.len() > 64 << 10 {
        return Err("the marker is too large".into());
    }
    let text = std::fs::read(&marker_path).map_err(|e| format!("marker: {e}"))?;
    let marker: Marker =
        serde_json::from_slice(&text).map_err(|e| format!("the marker is invalid: {e}"))?;
    if marker.sha256 != key || parse_sha256(&marker.index_sha256).is_none() {
        return Err("the marker names another archive".into());
    }
    for (name, want) in [(TARBALL, marker.size), (INDEX, marker.index_size)] {
        let have = std::fs::metadata(dir.join(name)).map_err(|e| format!("{name}: {e}"))?.len();
        if have != want {
            return Err(format!("{name} has {have} bytes, the marker says {want}"));
        }
    }
    Ok(Entry {
        key,
        identifier: marker.identifier,
        bytes: marker.size.saturating_add(marker.index_size),
        used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        index_sha256: marker.index_sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addon::backend::open_local;

    fn sha(bytes: &[u8]) -> [u8; 32] {
        Sha256::digest(bytes).into()
    }

    fn put(root: &Path, key: &str, bytes: &[u8]) {
        let path = root.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    fn wanted(name: &str, tar: &[u8], idx: &[u8]) -> Wanted {
        Wanted {
            identifier: name.into(),
            tarball_key: format!("addons/{name}/t"),
            size: tar.len() as u64,
            sha256: sha(tar),
            index_key: format!("addons/{name}/i"),
            index_size: idx.len() as u64,
            index_sha256: sha(idx),
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn fetches_verifies_survives_a_restart_and_evicts_the_least_recently_used() {
        let store_dir = tempfile::tempdir().unwrap();
        let cache_dir = tempfile::tempdir().unwrap();
        let store = open_local(store_dir.path()).unwrap();
        let (a, b, c) = (vec![1u8; 400], vec![2u8; 400], vec![3u8; 400]);
        for (n, t) in [("a", &a), ("b", &b), ("c", &c)] {
            put(store_dir.path(), &format!("addons/{n}/t"), t);
            put(store_dir.path(), &format!("addons/{n}/i"), b"index");
        }
        let (wa, wb, wc) =
            (wanted("a", &a, b"index"), wanted("b", &b, b"index"), wanted("c", &c, b"index"));
        let none = HashSet::new();
        let cache = NodeCache::open(cache_dir.path(), 1000).unwrap();
        let rt = rt();
        let (ta, _) = rt.block_on(cache.fetch(&store, &wa, &none)).unwrap();
        assert_eq!(std::fs::read(&ta).unwrap(), a);
        std::thread::sleep(std::time::Duration::from_millis(20));
        rt.block_on(cache.fetch(&store, &wb, &none)).unwrap();
        assert_eq!(cache.used(), 810);
        // Restart: both entries are back, with their recency.
        drop(cache);
        let cache = NodeCache::open(cache_dir.path(), 1000).unwrap();
        assert!(cache.get(&wa).is_some() && cache.get(&wb).is_some());
        // A third does not fit: the least recently used (a) goes, unless it is in use.
        let in_use: HashSet<String> = [hex(&wa.sha256)].into();
        rt.block_on(cache.fetch(&store, &wc, &in_use)).unwrap();
        assert!(cache.get(&wa).is_some(), "an entry in use is never evicted");
        assert!(cache.get(&wb).is_none());
        assert!(cache.get(&wc).is_some());
        // Nothing can be freed: refused, naming the add-on.
        let all: HashSet<String> = [hex(&wa.sha256), hex(&wc.sha256)].into();
        let e = rt.block_on(cache.fetch(&store, &wb, &all)).unwrap_err();
        assert!(matches!(e, CacheError::Full { .. }), "{e}");
        assert!(e.to_string().contains("`b`"), "{e}");
    }

    #[test]
    fn bytes_that_do_not_match_the_catalog_are_never_kept() {
        let store_dir = tempfile::tempdir().unwrap();
        let cache_dir = tempfile::tempdir().unwrap();
        let store = open_local(store_dir.path()).unwrap();
        let tar = vec![7u8; 100];
        put(store_dir.path(), "addons/x/t", &tar);
        put(store_dir.path(), "addons/x/i", b"index");
        let cache = NodeCache::open(cache_dir.path(), 1 << 20).unwrap();
        let rt = rt();
        let none = HashSet::new();
        for (what, mut w) in [
            ("digest", wanted("x", &[8u8; 100], b"index")),
            ("short", wanted("x", &tar, b"index")),
            ("long", wanted("x", &tar, b"index")),
        ] {
            match what {
                "short" => w.size = 101,
                "long" => w.size = 99,
                _ => {}
            }
            let e = rt.block_on(cache.fetch(&store, &w, &none)).unwrap_err();
            assert!(matches!(e, CacheError::Mismatch { .. }), "{what}: {e}");
            assert!(cache.get(&w).is_none());
        }
        assert_eq!(std::fs::read_dir(cache_dir.path().join("entries")).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(cache_dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_damaged_entry_is_dropped_at_start() {
        let store_dir = tempfile::tempdir().unwrap();
        let cache_dir = tempfile::tempdir().unwrap();
        let store = open_local(store_dir.path()).unwrap();
        let tar = vec![5u8; 64];
        put(store_dir.path(), "addons/x/t", &tar);
        put(store_dir.path(), "addons/x/i", b"index");
        let w = wanted("x", &tar, b"index");
        let cache = NodeCache::open(cache_dir.path(), 1 << 20).unwrap();
        let (t, _) = rt().block_on(cache.fetch(&store, &w, &HashSet::new())).unwrap();
        drop(cache);
        // Truncated behind the cache's back (a crash of the disk, an operator's mistake).
        std::fs::write(&t, b"short").unwrap();
        let cache = NodeCache::open(cache_dir.path(), 1 << 20).unwrap();
        assert!(cache.get(&w).is_none());
        assert_eq!(cache.used(), 0);
    }
}
