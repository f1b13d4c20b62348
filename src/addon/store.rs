//! The on-disk registry of add-ons under a state directory.
//!
//! Layout:
//!
//! ```text
//! <state>/addons/<identifier>/metadata.json                 the metadata as uploaded
//! <state>/addons/<identifier>/addon.tar.gz                  the archive as uploaded (tar or tar.gz)
//! <state>/addons/<identifier>/addon.tar.gz.addonfs-index    its index
//! <state>/addons/<identifier>/record.json                   the RuntimeAddon record
//! <state>/staging/<random>/                                 uploads in progress
//! <state>/revision                                          the catalog's revision
//! ```
//!
//! Add-ons are immutable: only their status changes. An add-on is built whole in
//! `staging/<random>` (every file fsynced) and renamed into `addons/` in one step, so a crash at
//! any moment leaves the whole add-on or nothing; [`Store::open`] deletes what is left in
//! `staging/`. Status changes rewrite `record.json` through a temporary file, fsync and rename.
//!
//! Every change bumps the catalog's **revision** (persisted in `revision` the same way) and
//! then tells the store's [`Follower`], if one is registered, before the call that made the
//! change returns: the node daemon's mount shows a change before the API answers for it.
//!
//! One writer process per state directory: [`Store::open`] takes the directory's lock (see
//! [`super::lock`]) and keeps it while the store lives, and serializes its own changes with a
//! mutex. [`Store::open_read_only`] takes no lock, changes nothing (not even `staging/`) and
//! refuses writes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Weak};

use serde::{Deserialize, Serialize};

use super::lock::{LockError, StateLock};
use super::metadata::{paths_collide, Metadata};
use crate::index::Index;

/// File name of the metadata inside an add-on directory.
pub const METADATA_FILE: &str = "metadata.json";
/// File name of the archive inside an add-on directory.
pub const TARBALL_FILE: &str = "addon.tar.gz";
/// File name of the index inside an add-on directory.
pub const INDEX_FILE: &str = "addon.tar.gz.addonfs-index";
/// File name of the record inside an add-on directory.
pub const RECORD_FILE: &str = "record.json";
/// The component of every custom add-on.
pub const COMPONENT: &str = "Custom";
/// File name of the catalog's revision in the state directory (decimal, one line).
pub const REVISION_FILE: &str = "revision";

/// Told of every change to a [`Store`] (an add-on committed, a status changed), after the
/// change is on disk and before the call that made it returns. The node daemon's mount is one;
/// the store knows nothing else about it.
pub trait Follower: Send + Sync {
    /// The store changed; `revision` is the catalog's revision after the change. Called from
    /// the thread that made the change, one call at a time.
    fn changed(&self, revision: u64);
}

/// An add-on's status (the API's values; the store sets only `AVAILABLE` and `DISABLED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Unknown.
    Unknown,
    /// Enabled: mounted into new workloads.
    Available,
    /// Disabled by an admin.
    Disabled,
    /// Deprecated.
    Deprecated,
    /// Deleted.
    Deleted,
    /// Failed.
    Failed,
}

impl Status {
    /// The API spelling, e.g. `AVAILABLE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unknown => "UNKNOWN",
            Status::Available => "AVAILABLE",
            Status::Disabled => "DISABLED",
            Status::Deprecated => "DEPRECATED",
            Status::Deleted => "DELETED",
            Status::Failed => "FAILED",
        }
    }

    /// Parses the API spelling.
    pub fn parse(text: &str) -> Option<Status> {
        serde_json::from_value(serde_json::Value::String(text.to_string())).ok()
    }
}

/// The stored record of one add-on: the API's `RuntimeAddon` plus size and digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Assigned monotonically, from 1.
    pub id: u64,
    /// `custom-addon-<name>`.
    pub identifier: String,
    /// Always `Custom`.
    pub component: String,
    /// The metadata's `name`.
    pub display_name: String,
    /// `AVAILABLE` or `DISABLED`.
    pub status: Status,
    /// Always true for custom add-ons.
    pub manageable: bool,
    /// When it was registered, RFC 3339 UTC.
    pub created_at: String,
    /// Why it is not available; empty otherwise.
    pub reason: String,
    /// Size of the archive in bytes.
    pub size: u64,
    /// SHA-256 of the archive, lowercase hex.
    pub sha256: String,
}

/// One add-on as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addon {
    /// Its record.
    pub record: Record,
    /// The paths its metadata requests.
    pub paths: Vec<String>,
    /// Its directory.
    pub dir: PathBuf,
}

impl Addon {
    /// The archive file.
    pub fn tarball(&self) -> PathBuf {
        self.dir.join(TARBALL_FILE)
    }

    /// The index file.
    pub fn index(&self) -> PathBuf {
        self.dir.join(INDEX_FILE)
    }
}

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// An add-on with this identifier exists (add-ons are immutable).
    #[error("add-on `{identifier}` already exists; add-ons are immutable and cannot be replaced")]
    AlreadyExists {
        /// The identifier.
        identifier: String,
    },
    /// Two enabled add-ons would request colliding paths.
    #[error("add-on `{identifier}` requests `{path}`, which collides with `{other_path}` of the enabled add-on `{other}`; two enabled add-ons cannot request the same path or one inside the other")]
    Conflict {
        /// The add-on being added or enabled.
        identifier: String,
        /// Its path.
        path: String,
        /// The enabled add-on.
        other: String,
        /// Its path.
        other_path: String,
    },
    /// No add-on matches.
    #[error("no add-on {0}")]
    NotFound(String),
    /// The status cannot be set.
    #[error("status `{0}` cannot be set; use AVAILABLE or DISABLED")]
    BadStatus(String),
    /// Another process holds the state directory.
    #[error(transparent)]
    Locked(#[from] LockError),
    /// The store was opened read-only.
    #[error("the store at {} was opened read-only; it cannot be changed", .0.display())]
    ReadOnly(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// An add-on being built in `staging/`; removed on drop unless committed.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    committed: bool,
}

impl Staging {
    /// The staging directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the archive goes.
    pub fn tarball(&self) -> PathBuf {
        self.dir.join(TARBALL_FILE)
    }

    /// Where the index goes.
    pub fn index(&self) -> PathBuf {
        self.dir.join(INDEX_FILE)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The registry.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    inner: Mutex<Inner>,
    problems: Vec<String>,
    /// The state directory's lock; `None` when read-only.
    lock: Option<Mutex<StateLock>>,
    /// Who is told of changes (held weakly: the follower owns the store, not the reverse).
    follower: Mutex<Option<Weak<dyn Follower>>>,
}

#[derive(Debug)]
struct Inner {
    addons: BTreeMap<u64, Addon>,
    next_id: u64,
    /// The catalog's revision: bumped by every change.
    revision: u64,
}

static STAGE_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Opens (creating if needed) the store under `root` for writing: takes the state
    /// directory's lock for `command` (refused if another process holds it; released when the
    /// store is dropped), deletes leftover uploads in `staging/`, loads every add-on, and keeps
    /// a note of malformed entries (see [`Store::problems`]) instead of failing.
    pub fn open(root: &Path, command: &str) -> Result<Store, StoreError> {
        let lock = StateLock::acquire(root, command)?;
        let addons_dir = root.join("addons");
        let staging_dir = root.join("staging");
        std::fs::create_dir_all(&addons_dir).map_err(io(&addons_dir))?;
        std::fs::create_dir_all(&staging_dir).map_err(io(&staging_dir))?;
        for entry in std::fs::read_dir(&staging_dir).map_err(io(&staging_dir))? {
            let path = entry.map_err(io(&staging_dir))?.path();
            tracing::info!(path = %path.display(), "removing an unfinished upload");
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(io(&path))?;
        }
        // A revision file left half-written by a crash (the real one is intact).
        if let Ok(entries) = std::fs::read_dir(root) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&format!(".{REVISION_FILE}.")) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let mut store = Self::load(root, true)?;
        store.lock = Some(Mutex::new(lock));
        Ok(store)
    }

    /// Opens the store under `root` to read it, without the lock: nothing on disk is changed
    /// (uploads in progress in `staging/` are left alone) and every change is refused with
    /// [`StoreError::ReadOnly`]. What it lists is a snapshot.
    pub fn open_read_only(root: &Path) -> Result<Store, StoreError> {
        let addons_dir = root.join("addons");
        if !addons_dir.is_dir() {
            // Nothing stored yet (or not a state directory): an empty store, created nowhere.
            std::fs::metadata(root).map_err(io(root))?;
            return Ok(Store {
                root: root.to_path_buf(),
                inner: Mutex::new(Inner { addons: BTreeMap::new(), next_id: 1, revision: 0 }),
                problems: Vec::new(),
                lock: None,
                follower: Mutex::new(None),
            });
        }
        Self::load(root, false)
    }

    /// Loads every add-on under `root/addons` (no lock); with `clean`, removes leftover
    /// temporary records of interrupted status changes.
    fn load(root: &Path, clean: bool) -> Result<Store, StoreError> {
        let addons_dir = root.join("addons");
        let mut problems = Vec::new();
        let mut addons = BTreeMap::new();
        let mut max_id = 0;
        let mut names: Vec<_> = std::fs::read_dir(&addons_dir)
            .map_err(io(&addons_dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        names.sort();
        for dir in names {
            match load_addon(&dir, clean) {
                Ok(addon) => {
                    max_id = max_id.max(addon.record.id);
                    if addons.contains_key(&addon.record.id) {
                        problems.push(format!(
                            "{}: id {} is used twice; entry ignored",
                            dir.display(),
                            addon.record.id
                        ));
                        continue;
                    }
                    addons.insert(addon.record.id, addon);
                }
                Err(why) => problems.push(format!("{}: {why}; entry ignored", dir.display())),
            }
        }
        let revision = read_revision(root)?;
        for p in &problems {
            tracing::warn!("{p}");
        }
        Ok(Store {
            root: root.to_path_buf(),
            inner: Mutex::new(Inner { addons, next_id: max_id + 1, revision }),
            problems,
            lock: None,
            follower: Mutex::new(None),
        })
    }

    /// Records the URL of this process's API in the state directory's lock file, where the
    /// admin commands find a running daemon.
    pub fn set_api_url(&self, url: &str) -> Result<(), StoreError> {
        let Some(lock) = &self.lock else { return Err(StoreError::ReadOnly(self.root.clone())) };
        lock.lock().unwrap_or_else(|e| e.into_inner()).set_api(url)?;
        Ok(())
    }

    fn writable(&self) -> Result<(), StoreError> {
        match self.lock {
            Some(_) => Ok(()),
            None => Err(StoreError::ReadOnly(self.root.clone())),
        }
    }

    /// The state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Malformed entries found by [`Store::open`] (ignored).
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every add-on, by id.
    pub fn list(&self) -> Vec<Addon> {
        self.lock().addons.values().cloned().collect()
    }

    /// The catalog's revision (0 for a store that never changed).
    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    /// The revision and every add-on, by id, read together.
    pub fn snapshot(&self) -> (u64, Vec<Addon>) {
        let inner = self.lock();
        (inner.revision, inner.addons.values().cloned().collect())
    }

    /// Registers the one follower told of every change from now on (replacing any other);
    /// `None` unregisters it, waiting for a call in progress to end.
    pub fn set_follower(&self, follower: Option<Weak<dyn Follower>>) {
        *self.follower.lock().unwrap_or_else(|e| e.into_inner()) = follower;
    }

    /// Bumps the revision and persists it (with `inner` locked, so the file only grows).
    /// The change itself is on disk already: a failure to write the revision is logged, not
    /// returned, so that a caller is never told a durable change failed.
    fn bump(&self, inner: &mut Inner) {
        inner.revision += 1;
        if let Err(e) = write_revision(&self.root, inner.revision) {
            tracing::error!(error = %e, revision = inner.revision, "cannot persist the revision");
        }
    }

    /// Tells the follower of a change (called with no lock of the store held; the follower
    /// lock serializes the calls and lets [`Store::set_follower`] wait for the last one).
    fn notify(&self) {
        let follower = self.follower.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = follower.as_ref().and_then(Weak::upgrade) {
            f.changed(self.revision());
        }
    }

    /// The add-on with this identifier.
    pub fn find(&self, identifier: &str) -> Option<Addon> {
        self.lock().addons.values().find(|a| a.record.identifier == identifier).cloned()
    }

    /// The number of entries in `staging/` (uploads in progress or left over).
    pub fn staging_count(&self) -> usize {
        std::fs::read_dir(self.root.join("staging")).map_or(0, |d| d.count())
    }

    /// Starts an upload: a fresh directory under `staging/`.
    pub fn stage(&self) -> Result<Staging, StoreError> {
        self.writable()?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let n = STAGE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.join("staging").join(format!("{}-{nanos}-{n}", std::process::id()));
        std::fs::create_dir(&dir).map_err(io(&dir))?;
        Ok(Staging { dir, committed: false })
    }

    /// Checks that no add-on is named like `metadata` (cheap, before an upload is indexed).
    pub fn check_new(&self, metadata: &Metadata) -> Result<(), StoreError> {
        let inner = self.lock();
        self.check_new_locked(&inner, metadata)
    }

    /// Commits a staged add-on whose archive is in place: writes its `index` (built from that
    /// archive), its metadata (`metadata_bytes`, as uploaded) and record, fsyncs, and renames
    /// it into `addons/`. The
    /// add-on is `AVAILABLE` at once. Refused if the name exists or a path collides with an
    /// enabled add-on; then nothing is stored.
    pub fn commit(
        &self,
        mut staging: Staging,
        metadata: &Metadata,
        metadata_bytes: &[u8],
        index: &Index,
    ) -> Result<Record, StoreError> {
        self.writable()?;
        // Written atomically and fsynced; the tarball is fsynced here.
        let index_path = staging.index();
        index.write(&index_path).map_err(|e| StoreError::Io {
            path: index_path.clone(),
            source: std::io::Error::other(e),
        })?;
        write_synced(&staging.dir.join(METADATA_FILE), metadata_bytes)?;
        let tarball = staging.tarball();
        std::fs::File::open(&tarball).and_then(|f| f.sync_all()).map_err(io(&tarball))?;
        let identifier = metadata.identifier();
        let mut inner = self.lock();
        self.check_new_locked(&inner, metadata)?;
        let identity = index.identity();
        let record = Record {
            id: inner.next_id,
            identifier: identifier.clone(),
            component: COMPONENT.to_string(),
            display_name: metadata.name.clone(),
            status: Status::Available,
            manageable: true,
            created_at: super::rfc3339_utc(now_secs()),
            reason: String::new(),
            size: identity.size,
            sha256: identity.digest.iter().map(|b| format!("{b:02x}")).collect(),
        };
        let json = serde_json::to_vec_pretty(&record).map_err(|e| StoreError::Io {
            path: staging.dir.join(RECORD_FILE),
            source: e.into(),
        })?;
        write_synced(&staging.dir.join(RECORD_FILE), &json)?;
        sync_dir(&staging.dir)?;
        let target = self.root.join("addons").join(&identifier);
        std::fs::rename(&staging.dir, &target).map_err(io(&target))?;
        staging.committed = true;
        sync_dir(&self.root.join("addons"))?;
        sync_dir(&self.root.join("staging"))?;
        inner.next_id += 1;
        inner.addons.insert(
            record.id,
            Addon { record: record.clone(), paths: metadata.spec.paths.clone(), dir: target },
        );
        self.bump(&mut inner);
        drop(inner);
        self.notify();
        Ok(record)
    }

    fn check_new_locked(&self, inner: &Inner, metadata: &Metadata) -> Result<(), StoreError> {
        let identifier = metadata.identifier();
        if inner.addons.values().any(|a| a.record.identifier == identifier)
            || self.root.join("addons").join(&identifier).exists()
        {
            return Err(StoreError::AlreadyExists { identifier });
        }
        check_conflicts(inner, &identifier, &metadata.spec.paths, &[])
    }

    /// Sets the status of the add-ons with these ids and identifiers to `AVAILABLE` or
    /// `DISABLED`. All are found and checked first (an unknown one or a path conflict changes
    /// nothing); each record is then rewritten atomically. Returns how many add-ons matched.
    pub fn set_status(
        &self,
        status: Status,
        ids: &[u64],
        identifiers: &[String],
    ) -> Result<usize, StoreError> {
        self.writable()?;
        if !matches!(status, Status::Available | Status::Disabled) {
            return Err(StoreError::BadStatus(status.as_str().to_string()));
        }
        let mut inner = self.lock();
        let mut targets: Vec<u64> = Vec::new();
        for id in ids {
            if !inner.addons.contains_key(id) {
                return Err(StoreError::NotFound(format!("has id {id}")));
            }
            targets.push(*id);
        }
        for ident in identifiers {
            let Some(a) = inner.addons.values().find(|a| &a.record.identifier == ident) else {
                return Err(StoreError::NotFound(format!("has identifier `{ident}`")));
            };
            targets.push(a.record.id);
        }
        targets.sort_unstable();
        targets.dedup();
        if status == Status::Available {
            let mut enabled_now: Vec<u64> = Vec::new();
            for id in &targets {
                let Some(addon) = inner.addons.get(id) else { continue };
                if addon.record.status != Status::Available {
                    check_conflicts(&inner, &addon.record.identifier, &addon.paths, &enabled_now)?;
                }
                enabled_now.push(*id);
            }
        }
        // Records rewritten before a failure are changes too: they bump the revision.
        let mut changed = 0;
        let rewritten = targets.iter().try_for_each(|id| {
            let Some(addon) = inner.addons.get_mut(id) else { return Ok(()) };
            if addon.record.status == status {
                return Ok(());
            }
            let mut record = addon.record.clone();
            record.status = status;
            record.reason = if status == Status::Disabled {
                "disabled by an administrator".to_string()
            } else {
                String::new()
            };
            rewrite_record(&addon.dir, &record)?;
            addon.record = record;
            changed += 1;
            Ok::<(), StoreError>(())
        });
        if changed > 0 {
            self.bump(&mut inner);
            drop(inner);
            self.notify();
        }
        rewritten?;
        Ok(targets.len())
    }
}

/// Refuses if any of `paths` collides with a path of an enabled add-on (other than
/// `identifier`), or of an add-on in `also` (ids about to be enabled).
fn check_conflicts(
    inner: &Inner,
    identifier: &str,
    paths: &[String],
    also: &[u64],
) -> Result<(), StoreError> {
    for other in inner.addons.values() {
        if other.record.identifier == identifier
            || !(other.record.status == Status::Available || also.contains(&other.record.id))
        {
            continue;
        }
        for path in paths {
            if let Some(op) = other.paths.iter().find(|op| paths_collide(path, op)) {
                return Err(StoreError::Conflict {
                    identifier: identifier.to_string(),
                    path: path.clone(),
                    other: other.record.identifier.clone(),
                    other_path: op.clone(),
                });
            }
        }
    }
    Ok(())
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut f = std::fs::File::create(path).map_err(io(path))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io(path))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(io(dir))
}

/// Rewrites `record.json` in `dir`: temporary file, fsync, rename, fsync of the directory.
fn rewrite_record(dir: &Path, record: &Record) -> Result<(), StoreError> {
    let path = dir.join(RECORD_FILE);
    let json = serde_json::to_vec_pretty(record)
        .map_err(|e| StoreError::Io { path: path.clone(), source: e.into() })?;
    replace_file(dir, RECORD_FILE, &json)
}

/// Replaces `dir/name` with `bytes` atomically: a temporary file (`.name.*.tmp`), fsync,
/// rename, fsync of the directory.
fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let path = dir.join(name);
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io(dir))?;
    tmp.write_all(bytes).and_then(|()| tmp.as_file().sync_all()).map_err(io(&path))?;
    tmp.persist(&path).map_err(|e| StoreError::Io { path: path.clone(), source: e.error })?;
    sync_dir(dir)
}

/// Writes the revision file of the state directory `root`.
fn write_revision(root: &Path, revision: u64) -> Result<(), StoreError> {
    replace_file(root, REVISION_FILE, format!("{revision}\n").as_bytes())
}

/// Reads the revision file of the state directory `root`: 0 when it does not exist (a store
/// from before revisions, or one that never changed); an error naming it when it is not a
/// number.
fn read_revision(root: &Path) -> Result<u64, StoreError> {
    let path = root.join(REVISION_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|e| StoreError::Io {
            path: path.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the revision {:?} is not a non-negative integer: {e}", text.trim()),
            ),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(StoreError::Io { path, source: e }),
    }
}

/// Loads one add-on directory, or says what is wrong with it; with `clean`, removes leftover
/// temporary records.
fn load_addon(dir: &Path, clean: bool) -> Result<Addon, String> {
    if !dir.is_dir() {
        return Err("not a directory".into());
    }
    // Leftover temporary records from an interrupted status change.
    if let Some(entries) = std::fs::read_dir(dir).ok().filter(|_| clean) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(".record.json.") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let read = |name: &str| {
        let path = dir.join(name);
        let meta = std::fs::metadata(&path).map_err(|e| format!("{name}: {e}"))?;
        if meta.len() > super::metadata::MAX_METADATA_BYTES as u64 {
            return Err(format!("{name}: {} bytes, too large", meta.len()));
        }
        std::fs::read(&path).map_err(|e| format!("{name}: {e}"))
    };
    let record: Record =
        serde_json::from_slice(&read(RECORD_FILE)?).map_err(|e| format!("{RECORD_FILE}: {e}"))?;
    let metadata =
        Metadata::parse(&read(METADATA_FILE)?).map_err(|e| format!("{METADATA_FILE}: {e}"))?;
    let dir_name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if record.identifier != metadata.identifier() || record.identifier != dir_name {
        return Err(format!(
            "record identifier `{}`, metadata identifier `{}` and directory `{dir_name}` differ",
            record.identifier,
            metadata.identifier()
        ));
    }
    for file in [TARBALL_FILE, INDEX_FILE] {
        if !dir.join(file).is_file() {
            return Err(format!("{file} is missing"));
        }
    }
    Ok(Addon { record, paths: metadata.spec.paths, dir: dir.to_path_buf() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::ScanOptions;

    /// Stages an add-on named `name` requesting `paths`, its tarball made by GNU tar.
    fn staged(store: &Store, name: &str, paths: &[&str]) -> (Staging, Metadata, Vec<u8>, Index) {
        let src = tempfile::tempdir().unwrap();
        for p in paths {
            let file = src.path().join(p.trim_start_matches('/'));
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, name).unwrap();
        }
        let staging = store.stage().unwrap();
        let st = std::process::Command::new("tar")
            .arg("-C")
            .arg(src.path())
            .arg("-czf")
            .arg(staging.tarball())
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
        let bytes = serde_json::json!({"name": name, "spec": {"paths": paths}}).to_string();
        let metadata = Metadata::parse(bytes.as_bytes()).unwrap();
        let index =
            crate::index::open::build(&staging.tarball(), &ScanOptions::default(), None).unwrap();
        assert!(metadata.check_against(&index).is_empty());
        (staging, metadata, bytes.into_bytes(), index)
    }

    fn add(store: &Store, name: &str, paths: &[&str]) -> Result<Record, StoreError> {
        let (staging, m, bytes, index) = staged(store, name, paths);
        store.commit(staging, &m, &bytes, &index)
    }

    #[test]
    fn commit_persists_and_ids_continue_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "test").unwrap();
        let a = add(&store, "a", &["/opt/a"]).unwrap();
        assert_eq!(
            (a.id, a.status, a.identifier.as_str()),
            (1, Status::Available, "custom-addon-a")
        );
        assert_eq!(store.staging_count(), 0);
        drop(store);
        let store = Store::open(dir.path(), "test").unwrap();
        assert_eq!(store.list()[0].record, a);
        assert_eq!(add(&store, "b", &["/opt/b"]).unwrap().id, 2);
        assert!(store.problems().is_empty());
    }

    #[test]
    fn refused_commits_store_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "test").unwrap();
        add(&store, "a", &["/opt/a"]).unwrap();
        assert!(matches!(add(&store, "a", &["/x"]), Err(StoreError::AlreadyExists { .. })));
        let e = add(&store, "b", &["/opt/a/sub"]).unwrap_err();
        assert!(
            matches!(&e, StoreError::Conflict { other, .. } if other == "custom-addon-a"),
            "{e}"
        );
        let e = add(&store, "c", &["/opt"]).unwrap_err();
        assert!(e.to_string().contains("`/opt`") && e.to_string().contains("`/opt/a`"), "{e}");
        assert_eq!(store.list().len(), 1);
        assert_eq!(store.staging_count(), 0);
    }

    #[test]
    fn status_changes_are_checked_first_and_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "test").unwrap();
        add(&store, "a", &["/opt/x"]).unwrap();
        store.set_status(Status::Disabled, &[1], &[]).unwrap();
        add(&store, "b", &["/opt/x"]).unwrap();
        store.set_status(Status::Disabled, &[2], &[]).unwrap();
        // Enabling both at once collides inside the batch: nothing changes.
        let e = store.set_status(Status::Available, &[1, 2], &[]).unwrap_err();
        assert!(matches!(e, StoreError::Conflict { .. }), "{e}");
        assert!(store.list().iter().all(|a| a.record.status == Status::Disabled));
        assert!(matches!(
            store.set_status(Status::Available, &[1], &["custom-addon-zz".into()]),
            Err(StoreError::NotFound(_))
        ));
        assert!(store.list().iter().all(|a| a.record.status == Status::Disabled));
        assert_eq!(
            store.set_status(Status::Available, &[], &["custom-addon-b".into()]).unwrap(),
            1
        );
        assert!(matches!(
            store.set_status(Status::Failed, &[1], &[]),
            Err(StoreError::BadStatus(_))
        ));
        // A leftover temporary record is removed at open; the status survives.
        std::fs::write(dir.path().join("addons/custom-addon-b/.record.json.x.tmp"), "{").unwrap();
        drop(store);
        let store = Store::open(dir.path(), "test").unwrap();
        let list = store.list();
        assert_eq!(list[0].record.status, Status::Disabled);
        assert_eq!(list[0].record.reason, "disabled by an administrator");
        assert_eq!(list[1].record.status, Status::Available);
        assert!(!dir.path().join("addons/custom-addon-b/.record.json.x.tmp").exists());
    }

    /// A follower that records the revisions it is told of and what the store lists then.
    struct Seen(Mutex<Vec<(u64, usize)>>, std::sync::Arc<Store>);

    impl Follower for Seen {
        fn changed(&self, revision: u64) {
            self.0.lock().unwrap().push((revision, self.1.list().len()));
        }
    }

    #[test]
    fn every_change_bumps_the_persisted_revision_and_tells_the_follower() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(Store::open(dir.path(), "test").unwrap());
        assert_eq!(store.revision(), 0);
        let seen = std::sync::Arc::new(Seen(Mutex::new(Vec::new()), store.clone()));
        let weak = std::sync::Arc::downgrade(&seen);
        store.set_follower(Some(weak));
        add(&store, "a", &["/opt/a"]).unwrap();
        store.set_status(Status::Disabled, &[1], &[]).unwrap();
        // No change, no revision: already disabled; refused commits change nothing either.
        store.set_status(Status::Disabled, &[1], &[]).unwrap();
        assert!(add(&store, "a", &["/x"]).is_err());
        store.set_status(Status::Available, &[], &["custom-addon-a".into()]).unwrap();
        // The follower saw each change once, with the change already listed.
        assert_eq!(*seen.0.lock().unwrap(), [(1, 1), (2, 1), (3, 1)]);
        assert_eq!(std::fs::read_to_string(dir.path().join(REVISION_FILE)).unwrap(), "3\n");
        store.set_follower(None);
        add(&store, "b", &["/opt/b"]).unwrap();
        assert_eq!(seen.0.lock().unwrap().len(), 3, "an unregistered follower hears nothing");
        drop(seen);
        assert_eq!(store.revision(), 4);
        drop(store);
        assert_eq!(Store::open_read_only(dir.path()).unwrap().revision(), 4);
        let store = Store::open(dir.path(), "test").unwrap();
        assert_eq!(store.revision(), 4);
        store.set_status(Status::Disabled, &[2], &[]).unwrap();
        assert_eq!(store.revision(), 5);
        drop(store);
        // A damaged revision file is named, not silently reset.
        std::fs::write(dir.path().join(REVISION_FILE), "x\n").unwrap();
        let e = Store::open(dir.path(), "test").unwrap_err();
        assert!(e.to_string().contains(REVISION_FILE), "{e}");
    }
}
