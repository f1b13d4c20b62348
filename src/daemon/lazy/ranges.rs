//! The node's on-disk cache of fetched ranges (`<cache-dir>/lazy/`), shared by every add-on
//! read lazily and bounded, with the whole add-ons of [`crate::daemon::cache::NodeCache`], by
//! `--cache-size`.
//!
//! Layout, one directory per add-on (named by its archive's SHA-256):
//!
//! ```text
//! lazy/<sha256>/meta.json        what the directory holds (identifier, sizes, digests)
//! lazy/<sha256>/head             the index's head, verified against the catalog
//! lazy/<sha256>/<name>.data      a sparse file the size of the object (`archive`, `windows`)
//! lazy/<sha256>/<name>.chunks    the object's chunk table: offset, length, SHA-256 per chunk
//! lazy/<sha256>/<name>.have      one byte per chunk: 1 = its verified bytes are in `.data`
//! ```
//!
//! A chunk's bytes are written to `.data` and synced before its byte in `.have` is set, so a
//! crash leaves at worst a chunk fetched again, never a chunk marked present whose bytes are
//! not. At start every directory is checked (sizes of the three files against the table and
//! the meta) and dropped if it does not match; a chunk marked present is re-hashed the first
//! time a read needs it after a start, so bytes damaged on disk are fetched again rather than
//! served. Eviction is per chunk, least recently used across all add-ons, and never a chunk a
//! read has pinned (it is waiting for it or reading it): its `.have` byte is cleared first,
//! then the range is punched out of `.data` (the disk space comes back).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::api::node::LazyStats;

/// One chunk of an object: the unit fetched, verified, cached and evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSpec {
    /// Offset in the object.
    pub offset: u64,
    /// Length in bytes (> 0).
    pub len: u64,
    /// SHA-256 of its bytes.
    pub sha256: [u8; 32],
}

impl ChunkSpec {
    /// One past its last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// A chunk's state in memory.
pub const ABSENT: u8 = 0;
/// Present on disk from a previous run, not re-hashed yet.
pub const UNCHECKED: u8 = 1;
/// Present and verified in this run.
pub const PRESENT: u8 = 2;

/// Bytes per chunk-table record: offset, length, digest.
const RECORD: usize = 8 + 8 + 32;

/// One cached object of one add-on.
pub struct RangeFile {
    id: u64,
    /// Its add-on's directory (for messages and removal).
    dir: PathBuf,
    name: String,
    data: File,
    have_file: File,
    size: u64,
    chunks: Vec<ChunkSpec>,
    state: Vec<AtomicU8>,
}

impl std::fmt::Debug for RangeFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RangeFile({}/{})", self.dir.display(), self.name)
    }
}

impl RangeFile {
    /// The object's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The chunk table.
    pub fn chunks(&self) -> &[ChunkSpec] {
        &self.chunks
    }

    /// Chunk `c`'s state ([`ABSENT`], [`UNCHECKED`], [`PRESENT`]).
    pub fn state(&self, c: usize) -> u8 {
        self.state[c].load(Ordering::Acquire)
    }

    /// The chunks holding `[offset, end)` (an empty range when none do).
    pub fn chunks_for(&self, offset: u64, end: u64) -> std::ops::Range<usize> {
        let first = self.chunks.partition_point(|c| c.end() <= offset);
        let last = self.chunks.partition_point(|c| c.offset < end);
        first..last.max(first)
    }

    /// Reads bytes of present chunks from `.data`.
    pub fn pread(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.data.read_exact_at(buf, offset)
    }

    /// Re-hashes chunk `c` (left by an earlier run): true if its bytes are intact; false
    /// (and the chunk dropped) if not.
    pub fn check(&self, cache: &RangeCache, c: usize) -> bool {
        let chunk = self.chunks[c];
        let mut buf = vec![0u8; chunk.len as usize];
        let good = self.data.read_exact_at(&mut buf, chunk.offset).is_ok()
            && <[u8; 32]>::from(Sha256::digest(&buf)) == chunk.sha256;
        if good {
            let _ = self.state[c].compare_exchange(
                UNCHECKED,
                PRESENT,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        } else {
            tracing::warn!(file = ?self, chunk = c, "a cached range is damaged; fetching it again");
            cache.stats.corrupt.fetch_add(1, Ordering::Relaxed);
            cache.drop_chunk(self, c);
        }
        good
    }
}

/// Why the cache could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct RangeError {
    /// The file.
    pub path: PathBuf,
    /// What failed.
    #[source]
    pub source: std::io::Error,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RangeError + '_ {
    move |source| RangeError { path: path.to_path_buf(), source }
}

/// Recency and pins, across every file.
#[derive(Default)]
struct Lru {
    files: HashMap<u64, Arc<RangeFile>>,
    /// Tick → (file, chunk), oldest first.
    order: BTreeMap<u64, (u64, usize)>,
    /// (file, chunk) → its tick in `order`.
    ticks: HashMap<(u64, usize), u64>,
    /// Readers holding a chunk.
    pins: HashMap<(u64, usize), u32>,
    next_tick: u64,
    /// Bytes of present chunks and heads.
    used: u64,
    /// Bytes of heads (counted in `used`).
    heads: HashMap<PathBuf, u64>,
    next_id: u64,
}

/// The range cache of every lazily read add-on.
pub struct RangeCache {
    root: PathBuf,
    limit: u64,
    /// Bytes held by the other cache in the same budget (whole add-ons).
    other: Box<dyn Fn() -> u64 + Send + Sync>,
    lru: Mutex<Lru>,
    /// The counters this cache keeps (evictions, bytes, damaged ranges).
    pub stats: Arc<LazyStats>,
}

impl std::fmt::Debug for RangeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RangeCache({})", self.root.display())
    }
}

/// What `addonfs node cache status` shows of one add-on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DirStatus {
    /// The archive's SHA-256.
    pub sha256: String,
    /// The add-on's identifier.
    pub identifier: String,
    /// The archive's size.
    pub size: u64,
    /// Bytes cached (chunks present and the head).
    pub cached: u64,
    /// Chunks present of the archive and the index's windows.
    pub chunks: u64,
    /// Chunks in all.
    pub total_chunks: u64,
}

/// `meta.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// The add-on's identifier.
    pub identifier: String,
    /// The archive's size.
    pub size: u64,
    /// The archive's SHA-256 (the directory's name).
    pub sha256: String,
    /// The index object's size.
    pub index_size: u64,
    /// The index object's SHA-256.
    pub index_sha256: String,
    /// The head's size.
    pub head_size: u64,
    /// The head's SHA-256.
    pub head_sha256: String,
}

impl RangeCache {
    /// Opens (creating) the range cache at `root`, bounded by `limit` bytes together with
    /// `other()` bytes held elsewhere; checks every add-on directory (dropping the ones that
    /// do not pass).
    pub fn open(
        root: &Path,
        limit: u64,
        other: Box<dyn Fn() -> u64 + Send + Sync>,
        stats: Arc<LazyStats>,
    ) -> Result<RangeCache, RangeError> {
        std::fs::create_dir_all(root).map_err(io(root))?;
        let cache = RangeCache {
            root: root.to_path_buf(),
            limit,
            other,
            lru: Mutex::new(Lru::default()),
            stats,
        };
        let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
        for item in std::fs::read_dir(root).map_err(io(root))? {
            let dir = item.map_err(io(root))?.path();
            let used = std::fs::metadata(dir.join("meta.json"))
                .and_then(|m| m.modified())
                .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
            dirs.push((used, dir));
        }
        // Oldest first: their chunks get the oldest ticks, so recency roughly survives.
        dirs.sort();
        for (_, dir) in dirs {
            if let Err(why) = cache.load_dir(&dir) {
                tracing::warn!(dir = %dir.display(), %why, "dropping a range-cache directory");
                cache.forget_dir(&dir);
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        cache.publish();
        Ok(cache)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.lru.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The directory of the add-on whose archive has digest `sha256` (hex).
    pub fn dir(&self, sha256: &str) -> PathBuf {
        self.root.join(sha256)
    }

    /// Bytes held (present chunks and heads).
    pub fn used(&self) -> u64 {
        self.lock().used
    }

    fn publish(&self) {
        let used = self.lock().used;
        self.stats.cache_bytes.store(used, Ordering::Relaxed);
    }

    fn load_dir(&self, dir: &Path) -> Result<(), String> {
        let meta = read_meta(dir)?;
        if dir.file_name().and_then(|n| n.to_str()) != Some(meta.sha256.as_str()) {
            return Err("meta.json names another archive".into());
        }
        let head = std::fs::metadata(dir.join("head")).map_err(|e| format!("head: {e}"))?;
        if head.len() != meta.head_size {
            return Err(format!(
                "head has {} bytes, meta.json says {}",
                head.len(),
                meta.head_size
            ));
        }
        self.lock().heads.insert(dir.to_path_buf(), meta.head_size);
        self.lock().used += meta.head_size;
        for (name, size) in [("archive", meta.size), ("windows", meta.index_size)] {
            if !dir.join(format!("{name}.chunks")).exists() {
                continue;
            }
            let chunks = read_table(&dir.join(format!("{name}.chunks")))?;
            self.load_file(dir, name, size, chunks).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Opens `dir/<name>.*` with the chunk table `chunks` of an object of `size` bytes: the
    /// chunks marked present come back as [`UNCHECKED`] when the table and sizes match what is
    /// on disk; otherwise the files start empty.
    pub fn open_file(
        &self,
        dir: &Path,
        name: &str,
        size: u64,
        chunks: Vec<ChunkSpec>,
    ) -> Result<Arc<RangeFile>, RangeError> {
        {
            let lru = self.lock();
            if let Some(f) = lru.files.values().find(|f| f.dir == dir && f.name == name) {
                if f.size == size && f.chunks == chunks {
                    return Ok(Arc::clone(f));
                }
            }
        }
        // A different table: start afresh.
        let old = self.lock().files.values().find(|f| f.dir == dir && f.name == name).cloned();
        if let Some(old) = old {
            self.forget_file(&old);
        }
        let table = dir.join(format!("{name}.chunks"));
        let same = read_table(&table).is_ok_and(|t| t == chunks);
        if !same {
            for ext in ["have", "data", "chunks"] {
                let _ = std::fs::remove_file(dir.join(format!("{name}.{ext}")));
            }
            write_table(&table, &chunks).map_err(io(&table))?;
        }
        self.load_file(dir, name, size, chunks)
    }

    fn load_file(
        &self,
        dir: &Path,
        name: &str,
        size: u64,
        chunks: Vec<ChunkSpec>,
    ) -> Result<Arc<RangeFile>, RangeError> {
        check_table(&chunks, size).map_err(|why| RangeError {
            path: dir.join(name),
            source: std::io::Error::other(why),
        })?;
        let data_path = dir.join(format!("{name}.data"));
        let have_path = dir.join(format!("{name}.have"));
        let data = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&data_path)
            .map_err(io(&data_path))?;
        let have_file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&have_path)
            .map_err(io(&have_path))?;
        let data_len = data.metadata().map_err(io(&data_path))?.len();
        let mut have = vec![0u8; chunks.len()];
        let have_len = have_file.metadata().map_err(io(&have_path))?.len();
        if data_len == size && have_len == chunks.len() as u64 {
            have_file.read_exact_at(&mut have, 0).map_err(io(&have_path))?;
        } else {
            // New, or not what the table describes: empty.
            data.set_len(0).and_then(|()| data.set_len(size)).map_err(io(&data_path))?;
            have_file
                .set_len(0)
                .and_then(|()| have_file.set_len(chunks.len() as u64))
                .map_err(io(&have_path))?;
        }
        let state =
            have.iter().map(|&b| AtomicU8::new(if b == 1 { UNCHECKED } else { ABSENT })).collect();
        let mut lru = self.lock();
        let id = lru.next_id;
        lru.next_id += 1;
        let file = Arc::new(RangeFile {
            id,
            dir: dir.to_path_buf(),
            name: name.to_string(),
            data,
            have_file,
            size,
            chunks,
            state,
        });
        for (c, &b) in have.iter().enumerate() {
            if b == 1 {
                lru.used += file.chunks[c].len;
                let tick = lru.next_tick;
                lru.next_tick += 1;
                lru.order.insert(tick, (id, c));
                lru.ticks.insert((id, c), tick);
            }
        }
        lru.files.insert(id, Arc::clone(&file));
        drop(lru);
        self.publish();
        Ok(file)
    }

    /// Writes `dir/meta.json` and `dir/head` (the head's bytes, verified by the caller).
    pub fn put_head(&self, dir: &Path, meta: &Meta, head: &[u8]) -> Result<(), RangeError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join("head");
        write_synced(&path, head).map_err(io(&path))?;
        let path = dir.join("meta.json");
        write_synced(&path, &serde_json::to_vec(meta).unwrap_or_default()).map_err(io(&path))?;
        let mut lru = self.lock();
        let old = lru.heads.insert(dir.to_path_buf(), head.len() as u64).unwrap_or(0);
        lru.used = lru.used - old + head.len() as u64;
        drop(lru);
        self.publish();
        Ok(())
    }

    /// The head kept in `dir`, if its meta matches `want` and its bytes their digest.
    pub fn get_head(&self, dir: &Path, want: &Meta) -> Option<Vec<u8>> {
        let meta = read_meta(dir).ok()?;
        if &meta != want {
            return None;
        }
        let head = std::fs::read(dir.join("head")).ok()?;
        let digest: [u8; 32] = Sha256::digest(&head).into();
        if super::super::cache::hex(&digest) != want.head_sha256 {
            self.stats.corrupt.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        // Marked used now (recency of the directory, for the order at the next start).
        if let Ok(f) = File::options().append(true).open(dir.join("meta.json")) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
        Some(head)
    }

    /// Pins chunks `range` of `file` (eviction skips them) and marks the present ones used.
    pub fn pin(&self, file: &RangeFile, range: std::ops::Range<usize>) {
        let mut lru = self.lock();
        for c in range {
            *lru.pins.entry((file.id, c)).or_insert(0) += 1;
            if let Some(old) = lru.ticks.get(&(file.id, c)).copied() {
                lru.order.remove(&old);
                let tick = lru.next_tick;
                lru.next_tick += 1;
                lru.order.insert(tick, (file.id, c));
                lru.ticks.insert((file.id, c), tick);
            }
        }
    }

    /// Undoes [`RangeCache::pin`]; if pinned chunks held the cache over its bound, evicts
    /// down to it now.
    pub fn unpin(&self, file: &RangeFile, range: std::ops::Range<usize>) {
        let mut lru = self.lock();
        for c in range {
            if let std::collections::hash_map::Entry::Occupied(mut e) = lru.pins.entry((file.id, c))
            {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
        let used = lru.used;
        // The other cache's bytes are asked for without this lock held: it asks for ours
        // under its own lock.
        drop(lru);
        if used.saturating_add((self.other)()) > self.limit {
            self.make_room(0);
        }
    }

    /// Bytes that can be stored without evicting anything.
    pub fn free(&self) -> u64 {
        self.limit.saturating_sub(self.used().saturating_add((self.other)()))
    }

    /// Evicts least recently used chunks nobody pins until `need` more bytes fit (as far as
    /// possible: pinned chunks stay even if the cache is then over its bound for a while).
    fn make_room(&self, need: u64) {
        // Asked before this lock is taken (the other cache asks for ours under its own).
        let other = (self.other)();
        let mut lru = self.lock();
        let mut skipped = Vec::new();
        while lru.used.saturating_add(need).saturating_add(other) > self.limit {
            let Some((&tick, &(id, c))) = lru.order.iter().next() else { break };
            lru.order.remove(&tick);
            if lru.pins.contains_key(&(id, c)) {
                skipped.push((tick, (id, c)));
                continue;
            }
            lru.ticks.remove(&(id, c));
            let Some(file) = lru.files.get(&id).cloned() else { continue };
            let len = file.chunks[c].len;
            lru.used = lru.used.saturating_sub(len);
            // Cleared on disk first, then the space punched out.
            file.state[c].store(ABSENT, Ordering::Release);
            let _ = file.have_file.write_all_at(&[0], c as u64);
            let _ = punch(&file.data, file.chunks[c].offset, len);
            self.stats.evictions.fetch_add(1, Ordering::Relaxed);
            self.stats.evicted_bytes.fetch_add(len, Ordering::Relaxed);
        }
        for (tick, key) in skipped {
            lru.order.insert(tick, key);
        }
        let used = lru.used;
        drop(lru);
        self.stats.cache_bytes.store(used, Ordering::Relaxed);
    }

    /// Stores verified `bytes` of chunks `range` of `file` (contiguous, starting at the
    /// first's offset): makes room, writes the data, and marks them present for this process
    /// (reads find them in the page cache). On disk they are marked present only by
    /// [`RangeCache::persist`], after the data is synced: a read waiting for the bytes does
    /// not wait for the disk's sync too (tens of milliseconds on a busy disk, and most of a
    /// cold first byte's spread).
    pub fn store(
        &self,
        file: &RangeFile,
        range: std::ops::Range<usize>,
        bytes: &[u8],
    ) -> Result<(), RangeError> {
        let start = file.chunks[range.start].offset;
        self.make_room(bytes.len() as u64);
        let data_path = file.dir.join(format!("{}.data", file.name));
        file.data.write_all_at(bytes, start).map_err(io(&data_path))?;
        let mut lru = self.lock();
        for c in range {
            if file.state[c].swap(PRESENT, Ordering::AcqRel) == ABSENT {
                lru.used += file.chunks[c].len;
                let tick = lru.next_tick;
                lru.next_tick += 1;
                lru.order.insert(tick, (file.id, c));
                if let Some(old) = lru.ticks.insert((file.id, c), tick) {
                    lru.order.remove(&old);
                }
            }
        }
        let used = lru.used;
        drop(lru);
        self.stats.cache_bytes.store(used, Ordering::Relaxed);
        Ok(())
    }

    /// Makes what [`RangeCache::store`] stored of chunks `range` of `file` survive a restart:
    /// syncs the data, then sets the chunks' bytes in `.have`, for those still present (under
    /// the lock eviction takes, so a chunk evicted meanwhile is not marked again). A crash
    /// before this leaves the chunks to be fetched again, never marked present without their
    /// bytes (and a chunk marked present is re-hashed the first time it is read after a start).
    pub fn persist(
        &self,
        file: &RangeFile,
        range: std::ops::Range<usize>,
    ) -> Result<(), RangeError> {
        let data_path = file.dir.join(format!("{}.data", file.name));
        file.data.sync_data().map_err(io(&data_path))?;
        let have_path = file.dir.join(format!("{}.have", file.name));
        let _lru = self.lock();
        for c in range {
            if file.state[c].load(Ordering::Acquire) != ABSENT {
                file.have_file.write_all_at(&[1], c as u64).map_err(io(&have_path))?;
            }
        }
        Ok(())
    }

    /// Drops chunk `c` of `file` (damaged).
    fn drop_chunk(&self, file: &RangeFile, c: usize) {
        let mut lru = self.lock();
        if file.state[c].swap(ABSENT, Ordering::AcqRel) != ABSENT {
            lru.used = lru.used.saturating_sub(file.chunks[c].len);
            if let Some(tick) = lru.ticks.remove(&(file.id, c)) {
                lru.order.remove(&tick);
            }
        }
        drop(lru);
        let _ = file.have_file.write_all_at(&[0], c as u64);
    }

    fn forget_file(&self, file: &RangeFile) {
        let mut lru = self.lock();
        lru.files.remove(&file.id);
        for c in 0..file.chunks.len() {
            if let Some(tick) = lru.ticks.remove(&(file.id, c)) {
                lru.order.remove(&tick);
                lru.used = lru.used.saturating_sub(file.chunks[c].len);
            }
        }
    }

    fn forget_dir(&self, dir: &Path) {
        let files: Vec<Arc<RangeFile>> =
            self.lock().files.values().filter(|f| f.dir == dir).cloned().collect();
        for f in files {
            self.forget_file(&f);
        }
        let mut lru = self.lock();
        if let Some(h) = lru.heads.remove(dir) {
            lru.used = lru.used.saturating_sub(h);
        }
    }

    /// What each add-on directory holds.
    pub fn status(&self) -> Vec<DirStatus> {
        let lru = self.lock();
        let mut out: BTreeMap<PathBuf, DirStatus> = BTreeMap::new();
        for (dir, head) in &lru.heads {
            let meta = read_meta(dir).ok();
            out.insert(
                dir.clone(),
                DirStatus {
                    sha256: meta.as_ref().map(|m| m.sha256.clone()).unwrap_or_default(),
                    identifier: meta.as_ref().map(|m| m.identifier.clone()).unwrap_or_default(),
                    size: meta.as_ref().map_or(0, |m| m.size),
                    cached: *head,
                    chunks: 0,
                    total_chunks: 0,
                },
            );
        }
        for f in lru.files.values() {
            let Some(s) = out.get_mut(&f.dir) else { continue };
            s.total_chunks += f.chunks.len() as u64;
            for c in 0..f.chunks.len() {
                if f.state(c) != ABSENT {
                    s.chunks += 1;
                    s.cached += f.chunks[c].len;
                }
            }
        }
        out.into_values().collect()
    }
}

fn read_meta(dir: &Path) -> Result<Meta, String> {
    let path = dir.join("meta.json");
    let bytes = std::fs::read(&path).map_err(|e| format!("meta.json: {e}"))?;
    if bytes.len() > 64 << 10 {
        return Err("meta.json is too large".into());
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("meta.json is invalid: {e}"))
}

/// A chunk table covers `[first offset, size)`... in order, without overlaps, inside the object.
fn check_table(chunks: &[ChunkSpec], size: u64) -> Result<(), String> {
    let mut at = 0u64;
    for (i, c) in chunks.iter().enumerate() {
        if c.len == 0 || c.offset < at || c.offset.checked_add(c.len).is_none_or(|e| e > size) {
            return Err(format!(
                "chunk {i} ({} +{}) is out of order or out of bounds",
                c.offset, c.len
            ));
        }
        at = c.end();
    }
    Ok(())
}

fn read_table(path: &Path) -> Result<Vec<ChunkSpec>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() % RECORD != 0 {
        return Err(format!("{}: not a whole number of records", path.display()));
    }
    Ok(bytes
        .chunks_exact(RECORD)
        .map(|r| {
            let mut sha256 = [0u8; 32];
            sha256.copy_from_slice(&r[16..48]);
            ChunkSpec {
                offset: u64::from_le_bytes(r[0..8].try_into().unwrap_or_default()),
                len: u64::from_le_bytes(r[8..16].try_into().unwrap_or_default()),
                sha256,
            }
        })
        .collect())
}

fn write_table(path: &Path, chunks: &[ChunkSpec]) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(chunks.len() * RECORD);
    for c in chunks {
        bytes.extend_from_slice(&c.offset.to_le_bytes());
        bytes.extend_from_slice(&c.len.to_le_bytes());
        bytes.extend_from_slice(&c.sha256);
    }
    write_synced(path, &bytes)
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Gives the disk space of `[offset, offset + len)` back (the file keeps its size).
fn punch(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    use rustix::fs::FallocateFlags;
    rustix::fs::fallocate(file, FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE, offset, len)
        .map_err(std::io::Error::from)
}
