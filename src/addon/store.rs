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

/// An add-on's status (the API's values; the store sets `AVAILABLE`, `DEPRECATED` and
/// `DISABLED`, see [`Store::set_status_with_reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Unknown.
    Unknown,
    /// Enabled: mounted into new workloads.
    Available,
    /// Disabled by an admin: hidden from new workloads, still readable for running ones.
    Disabled,
    /// Deprecated by an admin: still enabled (mounted into new workloads, listed in the
    /// manifest, part of the path-conflict rule), but flagged with a reason so that users are
    /// warned before it is disabled.
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

    /// Whether new workloads get the add-on: `AVAILABLE` and `DEPRECATED`. An enabled add-on
    /// is visible in the mount and its manifest, and its paths count for conflicts.
    pub fn is_enabled(self) -> bool {
        matches!(self, Status::Available | Status::Deprecated)
    }
}

/// The reason recorded when an add-on is disabled without one.
pub const DISABLED_REASON: &str = "disabled by an administrator";
/// The reason recorded when an add-on is deprecated without one.
pub const DEPRECATED_REASON: &str = "deprecated by an administrator";
/// The longest reason accepted, in characters.
pub const MAX_REASON_CHARS: usize = 1024;
/// File name (in the state directory) of the journal of a status change that rewrites several
/// records: written before them and removed after, so that a crash in between is completed at
/// the next start (see [`Store::set_status_with_reason`]).
pub const STATUS_JOURNAL: &str = "status-change.json";

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
    /// `AVAILABLE`, `DEPRECATED` or `DISABLED`.
    pub status: Status,
    /// Always true for custom add-ons.
    pub manageable: bool,
    /// When it was registered, RFC 3339 UTC.
    pub created_at: String,
    /// Why it is not available (disabled) or why it is deprecated; empty when `AVAILABLE`.
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
    #[error("status `{0}` cannot be set; use AVAILABLE, DEPRECATED or DISABLED")]
    BadStatus(String),
    /// `DELETED` was asked for: custom add-ons are never removed.
    #[error("custom add-ons cannot be deleted (status DELETED); disable them instead (status DISABLED): new workloads stop getting them and running ones keep reading them")]
    NotDeletable,
    /// The reason given with a status change breaks a rule.
    #[error("bad reason: {0}")]
    BadReason(String),
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
        Self::open_locked(root, StateLock::acquire(root, command)?)
    }

    /// [`Store::open`] with the state directory's lock already taken (passed on by a restart's
    /// holder: see [`StateLock::adopt`]).
    pub fn open_locked(root: &Path, lock: StateLock) -> Result<Store, StoreError> {
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
        // Temporary files never renamed into place: a status-change journal's, or a revision
        // file's left half-written by a crash (the real one is intact).
        for entry in std::fs::read_dir(root).map_err(io(root))?.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".status-change.json.")
                || name.starts_with(&format!(".{REVISION_FILE}."))
            {
                let _ = std::fs::remove_file(entry.path());
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
        let mut inner = Inner { addons, next_id: max_id + 1, revision };
        load_journal(root, &mut inner, clean, &mut problems);
        for p in &problems {
            tracing::warn!("{p}");
        }
        Ok(Store {
            root: root.to_path_buf(),
            inner: Mutex::new(inner),
            problems,
            lock: None,
            follower: Mutex::new(None),
        })
    }

    /// A duplicate of the lock file's descriptor, which carries the lock (for a restart's
    /// holder to pass on); `None` when read-only.
    pub fn lock_fd(&self) -> Option<std::io::Result<std::os::fd::OwnedFd>> {
        let lock = self.lock.as_ref()?;
        Some(lock.lock().unwrap_or_else(|e| e.into_inner()).try_clone_fd())
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

    /// Sets the status of the add-ons with these ids and identifiers, with the default reason
    /// (see [`Store::set_status_with_reason`]).
    pub fn set_status(
        &self,
        status: Status,
        ids: &[u64],
        identifiers: &[String],
    ) -> Result<usize, StoreError> {
        self.set_status_with_reason(status, None, ids, identifiers)
    }

    /// Sets the status of the add-ons with these ids and identifiers to `AVAILABLE`,
    /// `DEPRECATED` or `DISABLED` (`DELETED` is refused with [`StoreError::NotDeletable`],
    /// `UNKNOWN` and `FAILED` with [`StoreError::BadStatus`]), recording `reason` (or a default
    /// text for `DEPRECATED` and `DISABLED`; an `AVAILABLE` add-on has none).
    ///
    /// All or nothing: every id and identifier is looked up (the error names every unknown
    /// one) and every enable (to `AVAILABLE` or `DEPRECATED` from `DISABLED`) is checked for
    /// path conflicts first; a refusal changes nothing. A change that rewrites several records
    /// writes them to the journal [`STATUS_JOURNAL`] first, so that a crash half-way is
    /// completed at the next open.
    ///
    /// Returns how many add-ons changed: a status (or, when `reason` is given, a reason) that
    /// is already set is not counted, so repeating a request answers 0.
    pub fn set_status_with_reason(
        &self,
        status: Status,
        reason: Option<&str>,
        ids: &[u64],
        identifiers: &[String],
    ) -> Result<usize, StoreError> {
        self.writable()?;
        match status {
            Status::Available | Status::Deprecated | Status::Disabled => {}
            Status::Deleted => return Err(StoreError::NotDeletable),
            Status::Unknown | Status::Failed => {
                return Err(StoreError::BadStatus(status.as_str().to_string()))
            }
        }
        let reason = check_reason(status, reason)?;
        let mut inner = self.lock();
        self.finish_journal(&mut inner)?;
        let mut targets: Vec<u64> = Vec::new();
        let mut unknown: Vec<String> = Vec::new();
        for id in ids {
            if inner.addons.contains_key(id) {
                targets.push(*id);
            } else {
                unknown.push(format!("id {id}"));
            }
        }
        for ident in identifiers {
            match inner.addons.values().find(|a| &a.record.identifier == ident) {
                Some(a) => targets.push(a.record.id),
                None => unknown.push(format!("identifier `{ident}`")),
            }
        }
        if !unknown.is_empty() {
            unknown.dedup();
            return Err(StoreError::NotFound(format!(
                "has {}; nothing was changed",
                unknown.join(", ")
            )));
        }
        targets.sort_unstable();
        targets.dedup();
        if status.is_enabled() {
            let mut enabled_now: Vec<u64> = Vec::new();
            for id in &targets {
                let Some(addon) = inner.addons.get(id) else { continue };
                if !addon.record.status.is_enabled() {
                    check_conflicts(&inner, &addon.record.identifier, &addon.paths, &enabled_now)?;
                }
                enabled_now.push(*id);
            }
        }
        let mut changed: Vec<Record> = Vec::new();
        for id in &targets {
            let Some(addon) = inner.addons.get(id) else { continue };
            let mut record = addon.record.clone();
            record.reason = match (&reason, status) {
                (_, Status::Available) => String::new(),
                (Some(given), _) => given.clone(),
                (None, _) if record.status == status => record.reason,
                (None, Status::Deprecated) => DEPRECATED_REASON.to_string(),
                (None, _) => DISABLED_REASON.to_string(),
            };
            record.status = status;
            if record != addon.record {
                changed.push(record);
            }
        }
        match changed.as_slice() {
            [] => {}
            [one] => {
                let dir = self.dir_of(&inner, one.id);
                rewrite_record(&dir, one)?;
            }
            _ => {
                // Durable intent first: from here on the change is decided, and a crash or an
                // I/O error below is completed from the journal (next change or next open).
                write_journal(&self.root, &changed)?;
                if let Err(e) = self.finish_journal(&mut inner) {
                    tracing::error!(error = %e, "status change recorded in {STATUS_JOURNAL} but not yet applied; it is retried at the next change and at the next start");
                }
            }
        }
        for record in &changed {
            if let Some(addon) = inner.addons.get_mut(&record.id) {
                addon.record = record.clone();
            }
        }
        if !changed.is_empty() {
            self.bump(&mut inner);
            drop(inner);
            self.notify();
        }
        Ok(changed.len())
    }

    fn dir_of(&self, inner: &Inner, id: u64) -> PathBuf {
        inner.addons.get(&id).map_or_else(|| self.root.join("addons"), |a| a.dir.clone())
    }

    /// Applies the journal of an earlier status change if one is there (left by a crash or an
    /// I/O error), then removes it. Refuses (leaving it) if a record cannot be rewritten.
    fn finish_journal(&self, inner: &mut Inner) -> Result<(), StoreError> {
        let path = self.root.join(STATUS_JOURNAL);
        let records = match read_journal(&path) {
            Ok(None) => return Ok(()),
            Ok(Some(records)) => records,
            Err(why) => return Err(StoreError::Io { path, source: std::io::Error::other(why) }),
        };
        apply_journal(inner, &records, true)
            .map_err(|(p, e)| StoreError::Io { path: p, source: e })?;
        std::fs::remove_file(&path).map_err(io(&path))?;
        sync_dir(&self.root)
    }
}

/// Checks a reason given with a status change; returns it trimmed, `None` if absent or empty.
fn check_reason(status: Status, reason: Option<&str>) -> Result<Option<String>, StoreError> {
    let Some(reason) = reason.map(str::trim).filter(|r| !r.is_empty()) else { return Ok(None) };
    if status == Status::Available {
        return Err(StoreError::BadReason(
            "an AVAILABLE add-on has no reason; leave `reason` out or empty".to_string(),
        ));
    }
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(StoreError::BadReason(format!(
            "{} characters, more than the limit of {MAX_REASON_CHARS}",
            reason.chars().count()
        )));
    }
    if reason.chars().any(char::is_control) {
        return Err(StoreError::BadReason(
            "control characters (such as a line break) are not allowed; the reason is one line"
                .to_string(),
        ));
    }
    Ok(Some(reason.to_string()))
}

/// Completes the status change of a journal left by a crash: sets its records in `inner` and,
/// with `clean` (a writer), rewrites them on disk and removes the journal. A journal that
/// cannot be read is noted in `problems` and (with `clean`) renamed aside so that it no longer
/// blocks changes.
fn load_journal(root: &Path, inner: &mut Inner, clean: bool, problems: &mut Vec<String>) {
    let path = root.join(STATUS_JOURNAL);
    match read_journal(&path) {
        Ok(None) => {}
        Ok(Some(records)) => match apply_journal(inner, &records, clean) {
            Ok(()) if clean => {
                tracing::info!(records = records.len(), "completed an interrupted status change");
                if let Err(e) = std::fs::remove_file(&path).and_then(|()| {
                    std::fs::File::open(root).and_then(|d| d.sync_all())
                }) {
                    problems.push(format!("{}: cannot remove it: {e}", path.display()));
                }
            }
            Ok(()) => {}
            Err((file, e)) => problems.push(format!(
                "{}: cannot complete the interrupted status change: {e}; it is retried at the next change",
                file.display()
            )),
        },
        Err(why) => {
            let mut note = format!("{}: {why}; ignored", path.display());
            if clean {
                let aside = root.join(format!("{STATUS_JOURNAL}.broken"));
                if std::fs::rename(&path, &aside).is_ok() {
                    note.push_str(&format!(" and moved to {}", aside.display()));
                }
            }
            problems.push(note);
        }
    }
}

/// Writes the journal of a status change: the new records, atomically (temporary file, fsync,
/// rename, fsync of the state directory).
fn write_journal(root: &Path, records: &[Record]) -> Result<(), StoreError> {
    let path = root.join(STATUS_JOURNAL);
    let json = serde_json::to_vec_pretty(records)
        .map_err(|e| StoreError::Io { path: path.clone(), source: e.into() })?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".status-change.json.")
        .suffix(".tmp")
        .tempfile_in(root)
        .map_err(io(root))?;
    tmp.write_all(&json).and_then(|()| tmp.as_file().sync_all()).map_err(io(&path))?;
    tmp.persist(&path).map_err(|e| StoreError::Io { path: path.clone(), source: e.error })?;
    sync_dir(root)
}

/// Reads the journal at `path`: `None` if there is none, an error text if it cannot be read
/// or parsed.
fn read_journal(path: &Path) -> Result<Option<Vec<Record>>, String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read it: {e}")),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| format!("not a list of records: {e}"))
}

/// Sets the journal's records in `inner` (those whose id and identifier match a loaded add-on;
/// others are skipped) and, with `write`, rewrites each record file that differs.
fn apply_journal(
    inner: &mut Inner,
    records: &[Record],
    write: bool,
) -> Result<(), (PathBuf, std::io::Error)> {
    for record in records {
        let Some(addon) = inner.addons.get_mut(&record.id) else { continue };
        if addon.record.identifier != record.identifier {
            continue;
        }
        if write {
            let on_disk = std::fs::read(addon.dir.join(RECORD_FILE))
                .ok()
                .and_then(|b| serde_json::from_slice::<Record>(&b).ok());
            if on_disk.as_ref() != Some(record) {
                rewrite_record(&addon.dir, record).map_err(|e| match e {
                    StoreError::Io { path, source } => (path, source),
                    other => (addon.dir.clone(), std::io::Error::other(other.to_string())),
                })?;
            }
        }
        addon.record = record.clone();
    }
    Ok(())
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
            || !(other.record.status.is_enabled() || also.contains(&other.record.id))
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

    fn statuses(store: &Store) -> Vec<(Status, String)> {
        store.list().into_iter().map(|a| (a.record.status, a.record.reason)).collect()
    }

    #[test]
    fn rows_affected_counts_only_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "test").unwrap();
        add(&store, "a", &["/opt/a"]).unwrap();
        add(&store, "b", &["/opt/b"]).unwrap();
        let ab = ["custom-addon-a".to_string(), "custom-addon-b".to_string()];
        assert_eq!(store.set_status(Status::Available, &[1, 2], &[]).unwrap(), 0);
        assert_eq!(store.set_status(Status::Disabled, &[1], &[]).unwrap(), 1);
        assert_eq!(store.set_status(Status::Disabled, &[1], &[]).unwrap(), 0);
        // One already disabled, one changing; an id and its identifier count once.
        assert_eq!(store.set_status(Status::Disabled, &[1, 2], &ab).unwrap(), 1);
        assert_eq!(store.set_status(Status::Disabled, &[1, 2], &ab).unwrap(), 0);
        assert_eq!(store.set_status(Status::Deprecated, &[1, 2], &[]).unwrap(), 2);
        assert_eq!(statuses(&store), vec![(Status::Deprecated, DEPRECATED_REASON.into()); 2]);
        assert_eq!(store.set_status(Status::Deprecated, &[1, 2], &[]).unwrap(), 0);
        // A new reason is a change; the same reason again, or none, is not.
        let why = "use custom-addon-c from June";
        let deprecate = || store.set_status_with_reason(Status::Deprecated, Some(why), &[1], &[]);
        assert_eq!(deprecate().unwrap(), 1);
        assert_eq!(deprecate().unwrap(), 0);
        assert_eq!(store.set_status(Status::Deprecated, &[1], &[]).unwrap(), 0);
        assert_eq!(statuses(&store)[0], (Status::Deprecated, why.into()));
        assert_eq!(store.set_status(Status::Available, &[1, 2], &[]).unwrap(), 2);
        assert_eq!(statuses(&store), vec![(Status::Available, String::new()); 2]);
    }

    #[test]
    fn deprecated_stays_enabled_for_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "test").unwrap();
        add(&store, "a", &["/opt/x"]).unwrap();
        store.set_status(Status::Deprecated, &[1], &[]).unwrap();
        // A deprecated add-on still holds its paths.
        let e = add(&store, "b", &["/opt/x/y"]).unwrap_err();
        assert!(
            matches!(&e, StoreError::Conflict { other, .. } if other == "custom-addon-a"),
            "{e}"
        );
        store.set_status(Status::Disabled, &[1], &[]).unwrap();
        add(&store, "b", &["/opt/x/y"]).unwrap();
        // DISABLED -> DEPRECATED is an enable: the same check as DISABLED -> AVAILABLE.
        let e = store.set_status(Status::Deprecated, &[1], &[]).unwrap_err();
        assert!(
            matches!(&e, StoreError::Conflict { other, .. } if other == "custom-addon-b"),
            "{e}"
        );
        assert_eq!(store.list()[0].record.status, Status::Disabled);
        // AVAILABLE <-> DEPRECATED is not: b is enabled, and stays so.
        assert_eq!(store.set_status(Status::Deprecated, &[2], &[]).unwrap(), 1);
        assert_eq!(store.set_status(Status::Available, &[2], &[]).unwrap(), 1);
        assert!(matches!(
            store.set_status(Status::Deprecated, &[1, 2], &[]),
            Err(StoreError::Conflict { .. })
        ));
        assert_eq!(statuses(&store)[1], (Status::Available, String::new()));
    }

    #[test]
    fn refusals_name_every_unknown_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "test").unwrap();
        add(&store, "a", &["/opt/a"]).unwrap();
        let before = store.list();
        let e = store
            .set_status(
                Status::Disabled,
                &[1, 7, 9],
                &["custom-addon-a".into(), "custom-addon-zz".into()],
            )
            .unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, StoreError::NotFound(_)), "{text}");
        for part in ["id 7", "id 9", "identifier `custom-addon-zz`", "nothing was changed"] {
            assert!(text.contains(part), "{text}");
        }
        assert!(!text.contains("id 1,") && !text.contains("`custom-addon-a`"), "{text}");
        let e = store.set_status(Status::Deleted, &[1], &[]).unwrap_err();
        assert!(matches!(e, StoreError::NotDeletable), "{e}");
        assert!(e.to_string().contains("cannot be deleted") && e.to_string().contains("DISABLED"));
        for s in [Status::Unknown, Status::Failed] {
            let e = store.set_status(s, &[1], &[]).unwrap_err();
            assert!(e.to_string().contains("AVAILABLE, DEPRECATED or DISABLED"), "{e}");
        }
        let e = store.set_status_with_reason(Status::Available, Some("x"), &[1], &[]).unwrap_err();
        assert!(matches!(e, StoreError::BadReason(_)), "{e}");
        let long = "x".repeat(MAX_REASON_CHARS + 1);
        for bad in [long.as_str(), "two\nlines"] {
            let e =
                store.set_status_with_reason(Status::Disabled, Some(bad), &[1], &[]).unwrap_err();
            assert!(matches!(e, StoreError::BadReason(_)), "{e}");
        }
        assert_eq!(store.list(), before);
    }

    #[test]
    fn records_of_older_versions_load_and_deprecated_persists() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "test").unwrap();
        add(&store, "a", &["/opt/a"]).unwrap();
        add(&store, "b", &["/opt/b"]).unwrap();
        drop(store);
        // record.json exactly as versions before DEPRECATED wrote it.
        let old = r#"{
  "id": 1,
  "identifier": "custom-addon-a",
  "component": "Custom",
  "display_name": "a",
  "status": "DISABLED",
  "manageable": true,
  "created_at": "2026-11-28T12:33:17Z",
  "reason": "disabled by an administrator",
  "size": 213,
  "sha256": "e11181d90312064311b194761a26bc96c836f77624c709872cd28589dadd0dd9"
}"#;
        std::fs::write(dir.path().join("addons/custom-addon-a").join(RECORD_FILE), old).unwrap();
        let store = Store::open(dir.path(), "test").unwrap();
        assert!(store.problems().is_empty(), "{:?}", store.problems());
        let a = &store.list()[0].record;
        assert_eq!(
            (a.status, a.size, a.created_at.as_str()),
            (Status::Disabled, 213, "2026-11-28T12:33:17Z")
        );
        store.set_status_with_reason(Status::Deprecated, Some("old"), &[1, 2], &[]).unwrap();
        drop(store);
        let store = Store::open_read_only(dir.path()).unwrap();
        assert_eq!(statuses(&store), vec![(Status::Deprecated, "old".into()); 2]);
    }

    #[test]
    fn a_failed_rewrite_mid_batch_is_completed_from_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "test").unwrap();
        for name in ["a", "b", "c"] {
            add(&store, name, &[&format!("/opt/{name}")]).unwrap();
        }
        // b's record cannot be replaced (a non-empty directory is in the way of the rename):
        // a is rewritten first, then b fails.
        let b_record = dir.path().join("addons/custom-addon-b").join(RECORD_FILE);
        let saved = std::fs::read(&b_record).unwrap();
        std::fs::remove_file(&b_record).unwrap();
        std::fs::create_dir_all(b_record.join("in-the-way")).unwrap();
        // The batch is decided once its journal is written: all three change.
        assert_eq!(store.set_status(Status::Disabled, &[1, 2, 3], &[]).unwrap(), 3);
        assert!(store.list().iter().all(|a| a.record.status == Status::Disabled));
        let journal = dir.path().join(STATUS_JOURNAL);
        assert!(journal.exists());
        // Until the journal is applied, further changes are refused, not layered on top.
        let e = store.set_status(Status::Available, &[3], &[]).unwrap_err();
        assert!(matches!(e, StoreError::Io { .. }), "{e}");
        drop(store);
        // A read-only snapshot shows the whole batch without touching the disk.
        std::fs::remove_dir_all(&b_record).unwrap();
        std::fs::write(&b_record, &saved).unwrap();
        let snapshot = Store::open_read_only(dir.path()).unwrap();
        assert!(snapshot.list().iter().all(|a| a.record.status == Status::Disabled));
        assert!(journal.exists());
        // The next writer completes it on disk and removes the journal.
        let store = Store::open(dir.path(), "test").unwrap();
        assert!(store.problems().is_empty(), "{:?}", store.problems());
        assert!(!journal.exists());
        for name in ["a", "b", "c"] {
            let path = dir.path().join(format!("addons/custom-addon-{name}")).join(RECORD_FILE);
            let record: Record = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
            assert_eq!(record.status, Status::Disabled, "{name}");
        }
        assert_eq!(store.set_status(Status::Available, &[3], &[]).unwrap(), 1);
    }

    #[test]
    fn a_broken_journal_is_reported_and_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "test").unwrap();
        add(&store, "a", &["/opt/a"]).unwrap();
        drop(store);
        std::fs::write(dir.path().join(STATUS_JOURNAL), "[{").unwrap();
        std::fs::write(dir.path().join(".status-change.json.x.tmp"), "[").unwrap();
        let store = Store::open(dir.path(), "test").unwrap();
        assert_eq!(store.problems().len(), 1, "{:?}", store.problems());
        assert!(store.problems()[0].contains(STATUS_JOURNAL), "{:?}", store.problems());
        assert!(!dir.path().join(STATUS_JOURNAL).exists());
        assert!(!dir.path().join(".status-change.json.x.tmp").exists());
        assert!(dir.path().join(format!("{STATUS_JOURNAL}.broken")).exists());
        assert_eq!(store.set_status(Status::Disabled, &[1], &[]).unwrap(), 1);
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
