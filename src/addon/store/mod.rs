//! The registry of add-ons on a store (see [`crate::addon::backend`]): a local directory (the
//! embedded default, `serve --state-dir`) or an S3 bucket.
//!
//! Layout (keys relative to the store):
//!
//! ```text
//! catalog.json                                          the catalog: records, paths, object keys, revision
//! addons/<identifier>/<upload-id>/metadata.json         the metadata as uploaded      } written once,
//! addons/<identifier>/<upload-id>/addon.tar.gz          the archive (tar or tar.gz)   } never changed
//! addons/<identifier>/<upload-id>/addon.tar.gz.addonfs-index   its index              }
//! writer.json                                           the one writer's lease (see [`lease`])
//! ```
//!
//! and, in a local directory only, `staging/<random>/` (uploads in progress) and the state
//! directory's lock. A remote store stages uploads in a local scratch directory.
//!
//! Add-ons are immutable: only their status changes, and the catalog is the only object that
//! changes. A commit writes the add-on's objects first (a local store renames the staging
//! directory into place; a remote one streams the files up, multipart for large ones) and the
//! catalog last, so a crash at any moment leaves the catalog without the add-on: its objects
//! are orphans, deleted after a grace period ([`orphans`]). A status change is one catalog
//! write. A local catalog is written through a temporary file, fsync and rename.
//!
//! Every change bumps the catalog's **revision** and then tells the store's [`Follower`], if one
//! is registered, before the call that made the change returns: the node daemon's mount shows a
//! change before the API answers for it.
//!
//! One writer per store: [`Store::open`] takes the lease `writer.json` ([`lease`]), and for a
//! local directory also the directory's lock (see [`super::lock`]), keeps them while the store
//! lives, and serializes its own changes with a mutex. Before each catalog write it checks that
//! the lease is still its own. [`Store::open_read_only`] takes neither, changes nothing and
//! refuses writes.
//!
//! A state directory of the layout before catalogs opens without loss ([`legacy`]).

mod io;
pub mod lease;
mod legacy;
mod objects;
pub mod orphans;

pub use legacy::{RECORD_FILE, REVISION_FILE, STATUS_JOURNAL};
pub use objects::{PARTS_IN_FLIGHT, PART_BYTES};

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::backend::{self, Backend};
use super::catalog::{self, Catalog, CatalogError, Entry, IndexHead, Objects, CATALOG_KEY};
use super::lock::{LockError, StateLock};
use super::metadata::{paths_collide, Metadata};
use crate::index::Index;
use io::Io;
use lease::Lease;

/// File name of the metadata inside an add-on directory.
pub const METADATA_FILE: &str = "metadata.json";
/// File name of the archive inside an add-on directory.
pub const TARBALL_FILE: &str = "addon.tar.gz";
/// File name of the index inside an add-on directory.
pub const INDEX_FILE: &str = "addon.tar.gz.addonfs-index";
/// The component of every custom add-on.
pub const COMPONENT: &str = "Custom";
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
    /// A store object could not be read or written.
    #[error("{key}: {source}")]
    Backend {
        /// The store and the key.
        key: String,
        /// What failed.
        #[source]
        source: Box<object_store::Error>,
    },
    /// The store cannot be opened.
    #[error(transparent)]
    Open(#[from] backend::BackendError),
    /// The store's catalog breaks a rule.
    #[error("the store {store}: {source}")]
    Catalog {
        /// The store's URL.
        store: String,
        /// The rule.
        #[source]
        source: CatalogError,
    },
    /// Another writer holds the store's lease.
    #[error("the store {store} is written by another registry, {other}, whose last heartbeat was {}s ago; only one registry may write a store (stop it, or wait {}s after it died)", age.as_secs(), lease::LEASE.saturating_sub(*age).as_secs() + 1)]
    WriterHeld {
        /// The store's URL.
        store: String,
        /// The other writer.
        other: lease::Writer,
        /// How old its heartbeat is.
        age: Duration,
    },
    /// This writer lost the lease: another registry writes the store now.
    #[error("the store {store} is now written by {other}: this registry lost its writer lease and changes nothing more")]
    Fenced {
        /// The store's URL.
        store: String,
        /// Who holds the lease now.
        other: String,
    },
    /// The store was opened read-only.
    #[error("the store at {} was opened read-only; it cannot be changed", .0.display())]
    ReadOnly(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// One add-on as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addon {
    /// Its record.
    pub record: Record,
    /// The paths its metadata requests.
    pub paths: Vec<String>,
    /// The directory of its objects on disk, for a local store; empty for a remote one.
    pub dir: PathBuf,
    /// The keys of its objects in the store.
    pub objects: Objects,
    /// Size of its index object.
    pub index_size: u64,
    /// SHA-256 of its index object, lowercase hex.
    pub index_sha256: String,
    /// Its index's head (format-2 indexes), for nodes that read lazily.
    pub index_head: Option<IndexHead>,
}

impl Addon {
    /// The archive file (local stores).
    pub fn tarball(&self) -> PathBuf {
        self.dir.join(TARBALL_FILE)
    }

    /// The index file (local stores).
    pub fn index(&self) -> PathBuf {
        self.dir.join(INDEX_FILE)
    }

    fn entry(&self) -> Entry {
        Entry {
            record: self.record.clone(),
            paths: self.paths.clone(),
            objects: self.objects.clone(),
            index_size: self.index_size,
            index_sha256: self.index_sha256.clone(),
            index_head: self.index_head.clone(),
        }
    }

    fn from_entry(backend: &Backend, entry: Entry) -> Addon {
        let dir = backend
            .local_path(entry.objects.tarball.rsplit_once('/').map_or("", |(d, _)| d))
            .unwrap_or_default();
        Addon {
            record: entry.record,
            paths: entry.paths,
            dir,
            objects: entry.objects,
            index_size: entry.index_size,
            index_sha256: entry.index_sha256,
            index_head: entry.index_head,
        }
    }
}

/// An add-on being built in a staging directory; removed on drop unless committed.
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

/// How a writer opens a store.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// What runs (`serve`, `registry`, `addons enable`...), for the lock file.
    pub command: String,
    /// Objects no catalog record references are deleted once older than this.
    pub orphan_grace: Duration,
    /// How often orphans are looked for (besides at open); `None`: only at open.
    pub orphan_interval: Option<Duration>,
    /// Where a remote store stages uploads (a local store stages in `staging/` inside it);
    /// `None`: a fresh temporary directory.
    pub scratch: Option<PathBuf>,
}

impl OpenOptions {
    /// The defaults for `command`: orphans older than [`orphans::GRACE`], looked for every
    /// [`orphans::INTERVAL`].
    pub fn new(command: &str) -> OpenOptions {
        OpenOptions {
            command: command.to_string(),
            orphan_grace: orphans::GRACE,
            orphan_interval: Some(orphans::INTERVAL),
            scratch: None,
        }
    }
}

/// The registry.
#[derive(Debug)]
pub struct Store {
    backend: Backend,
    io: Arc<Io>,
    /// Where uploads are staged.
    staging: PathBuf,
    /// A remote store's scratch directory, removed with the store.
    _scratch: Option<tempfile::TempDir>,
    inner: Mutex<Inner>,
    problems: Vec<String>,
    /// A local directory's lock; `None` when read-only or remote.
    lock: Option<Mutex<StateLock>>,
    /// The writer's lease; `None` when read-only.
    lease: Option<Arc<Lease>>,
    /// The lease's heartbeat and the orphan sweeps, stopped with the store.
    keeper: Option<Keeper>,
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

/// Reads and checks the catalog of `backend`: `None` when there is none.
fn read_catalog(io: &Io, backend: &Backend) -> Result<Option<Catalog>, StoreError> {
    let Some(bytes) = io.block(objects::get(backend, CATALOG_KEY))? else { return Ok(None) };
    Catalog::parse(&bytes)
        .map(Some)
        .map_err(|source| StoreError::Catalog { store: backend.url().to_string(), source })
}

/// Builds the catalog of an old state directory (see [`legacy`]): entries that break a rule
/// of the catalog are noted and left out.
fn migrate(root: &Path, problems: &mut Vec<String>) -> Result<Catalog, StoreError> {
    let old = legacy::load(root)?;
    problems.extend(old.problems);
    let mut catalog = Catalog { revision: old.revision, addons: Vec::new() };
    for entry in old.addons.into_values() {
        catalog.addons.push(entry);
        if let Err(e) = catalog.check() {
            let entry = catalog.addons.pop().map(|e| e.record.identifier).unwrap_or_default();
            problems
                .push(format!("{}: {e}; entry ignored", root.join("addons").join(entry).display()));
        }
    }
    Ok(catalog)
}

impl Store {
    /// Opens (creating if needed) the local store under `root` for writing, with the default
    /// [`OpenOptions`] for `command`. See [`Store::open_backend`].
    pub fn open(root: &Path, command: &str) -> Result<Store, StoreError> {
        let backend = backend::open_local(root).map_err(io(root))?;
        Self::open_backend(backend, &OpenOptions::new(command))
    }

    /// [`Store::open`] with the state directory's lock already taken (passed on by a restart's
    /// holder: see [`StateLock::adopt`]; only `serve` is restarted that way).
    pub fn open_locked(root: &Path, lock: StateLock) -> Result<Store, StoreError> {
        let backend = backend::open_local(root).map_err(io(root))?;
        Self::open_with_lock(backend, &OpenOptions::new("serve"), Some(lock))
    }

    /// Opens a store for writing: for a local directory, takes its lock for the command
    /// (refused if another process holds it; released when the store is dropped) and deletes
    /// leftover uploads in `staging/`; takes the writer lease (refused, naming the other, if
    /// another registry holds it); reads the catalog (an old state directory is migrated, see
    /// [`legacy`]), deletes orphaned objects; and keeps a note of malformed legacy entries (see
    /// [`Store::problems`]) instead of failing. A catalog that breaks a rule is refused.
    pub fn open_backend(backend: Backend, options: &OpenOptions) -> Result<Store, StoreError> {
        Self::open_with_lock(backend, options, None)
    }

    /// [`Store::open_backend`], with a local directory's lock already taken (`taken`).
    fn open_with_lock(
        backend: Backend,
        options: &OpenOptions,
        taken: Option<StateLock>,
    ) -> Result<Store, StoreError> {
        let rt = Arc::new(Io::new().map_err(io(Path::new("the store's runtime")))?);
        // A lock handed over comes with the predecessor's lease (see `Lease::take_over`).
        let handed_over = taken.is_some();
        let (lock, staging, scratch) = match backend.local_root() {
            Some(root) => {
                let lock = match taken {
                    Some(lock) => lock,
                    None => StateLock::acquire(root, &options.command)?,
                };
                let staging = root.join("staging");
                clear_staging(&staging)?;
                (Some(Mutex::new(lock)), staging, None)
            }
            None => {
                let scratch = match &options.scratch {
                    Some(dir) => {
                        std::fs::create_dir_all(dir).map_err(io(dir))?;
                        tempfile::Builder::new().prefix("addonfs-staging-").tempdir_in(dir)
                    }
                    None => tempfile::Builder::new().prefix("addonfs-staging-").tempdir(),
                }
                .map_err(io(Path::new("a scratch directory")))?;
                (None, scratch.path().to_path_buf(), Some(scratch))
            }
        };
        let lease = Arc::new(if handed_over {
            Lease::take_over(&rt, &backend)?
        } else {
            Lease::acquire(&rt, &backend)?
        });
        let mut problems = Vec::new();
        let catalog = match read_catalog(&rt, &backend)? {
            Some(catalog) => catalog,
            None => {
                let catalog = match backend.local_root() {
                    Some(root) if legacy::present(root) => {
                        let catalog = migrate(root, &mut problems)?;
                        tracing::info!(
                            addons = catalog.addons.len(),
                            revision = catalog.revision,
                            "migrated the state directory to a catalog"
                        );
                        catalog
                    }
                    _ => Catalog::default(),
                };
                // Written now: a node finds a catalog from the start.
                write_catalog(&rt, &backend, &lease, &catalog)?;
                catalog
            }
        };
        let keeper = Keeper::start(&rt, &backend, &lease, options);
        let mut store = Self::with_catalog(backend, rt, staging, catalog, problems);
        store._scratch = scratch;
        store.lock = lock;
        store.lease = Some(lease);
        store.keeper = Some(keeper);
        if let Err(e) = orphans::sweep(&store.io, &store.backend, options.orphan_grace) {
            tracing::warn!(error = %e, "cannot clean up orphaned objects");
        }
        Ok(store)
    }

    fn with_catalog(
        backend: Backend,
        io: Arc<Io>,
        staging: PathBuf,
        catalog: Catalog,
        problems: Vec<String>,
    ) -> Store {
        for p in &problems {
            tracing::warn!("{p}");
        }
        let addons: BTreeMap<u64, Addon> = catalog
            .addons
            .into_iter()
            .map(|e| (e.record.id, Addon::from_entry(&backend, e)))
            .collect();
        let next_id = addons.keys().next_back().map_or(1, |id| id + 1);
        Store {
            backend,
            io,
            staging,
            _scratch: None,
            inner: Mutex::new(Inner { addons, next_id, revision: catalog.revision }),
            problems,
            lock: None,
            lease: None,
            keeper: None,
            follower: Mutex::new(None),
        }
    }

    /// Opens the local store under `root` to read it, without lock or lease: nothing is
    /// changed (an old state directory is read as it is; uploads in progress are left alone)
    /// and every change is refused with [`StoreError::ReadOnly`]. What it lists is a snapshot.
    pub fn open_read_only(root: &Path) -> Result<Store, StoreError> {
        std::fs::metadata(root).map_err(io(root))?;
        let rt = Arc::new(Io::new().map_err(io(Path::new("the store's runtime")))?);
        if !root.join(CATALOG_KEY).exists() {
            let backend = backend::open_local(root).map_err(io(root))?;
            let mut problems = Vec::new();
            let catalog = if legacy::present(root) {
                migrate(root, &mut problems)?
            } else {
                Catalog::default()
            };
            return Ok(Self::with_catalog(backend, rt, root.join("staging"), catalog, problems));
        }
        let backend = backend::open_local(root).map_err(io(root))?;
        let catalog = read_catalog(&rt, &backend)?.unwrap_or_default();
        let staging = root.join("staging");
        Ok(Self::with_catalog(backend, rt, staging, catalog, Vec::new()))
    }

    /// The store's backend.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The directory of a local store; for a remote one, its local scratch directory.
    pub fn root(&self) -> &Path {
        self.backend.local_root().unwrap_or(&self.staging)
    }

    /// A duplicate of the lock file's descriptor, which carries the lock (for a restart's
    /// holder to pass on); `None` when read-only or remote.
    pub fn lock_fd(&self) -> Option<std::io::Result<std::os::fd::OwnedFd>> {
        let lock = self.lock.as_ref()?;
        Some(lock.lock().unwrap_or_else(|e| e.into_inner()).try_clone_fd())
    }

    /// Records the URL of the writer's API, for admin commands (in a local directory's lock
    /// file) and for a refused second registry (in the lease).
    pub fn set_api_url(&self, url: &str) -> Result<(), StoreError> {
        let Some(lease) = &self.lease else { return Err(self.read_only()) };
        if let Some(lock) = &self.lock {
            lock.lock().unwrap_or_else(|e| e.into_inner()).set_api(url)?;
        }
        lease.set_url(&self.io, &self.backend, url)
    }

    fn read_only(&self) -> StoreError {
        StoreError::ReadOnly(PathBuf::from(self.backend.url()))
    }

    fn writable(&self) -> Result<&Lease, StoreError> {
        self.lease.as_deref().ok_or_else(|| self.read_only())
    }

    /// Whether the store can be read now: a local directory's `addons/`, a remote store's
    /// catalog (one small request).
    pub fn probe(&self) -> Result<(), StoreError> {
        match self.backend.local_root() {
            Some(root) => std::fs::metadata(root.join(CATALOG_KEY)).map(drop).map_err(io(root)),
            None => self.io.block(objects::head(&self.backend, CATALOG_KEY)),
        }
    }

    /// Deletes the objects no catalog record references that are older than `grace`; returns
    /// their keys (see [`orphans`]).
    pub fn sweep_orphans(&self, grace: Duration) -> Result<Vec<String>, StoreError> {
        self.writable()?;
        orphans::sweep(&self.io, &self.backend, grace)
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

    /// The catalog as held (what the store's `catalog.json` says).
    pub fn catalog(&self) -> Catalog {
        catalog_of(&self.lock())
    }

    /// Registers the one follower told of every change from now on (replacing any other);
    /// `None` unregisters it, waiting for a call in progress to end.
    pub fn set_follower(&self, follower: Option<Weak<dyn Follower>>) {
        *self.follower.lock().unwrap_or_else(|e| e.into_inner()) = follower;
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

    /// The number of entries in the staging directory (uploads in progress or left over).
    pub fn staging_count(&self) -> usize {
        std::fs::read_dir(&self.staging).map_or(0, |d| d.count())
    }

    /// Starts an upload: a fresh staging directory.
    pub fn stage(&self) -> Result<Staging, StoreError> {
        self.writable()?;
        std::fs::create_dir_all(&self.staging).map_err(io(&self.staging))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let n = STAGE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = self.staging.join(format!("{}-{nanos}-{n}", std::process::id()));
        std::fs::create_dir(&dir).map_err(io(&dir))?;
        Ok(Staging { dir, committed: false })
    }

    /// Checks that no add-on is named like `metadata` (cheap, before an upload is indexed).
    pub fn check_new(&self, metadata: &Metadata) -> Result<(), StoreError> {
        let inner = self.lock();
        check_new_locked(&inner, metadata)
    }

    /// Commits a staged add-on whose archive is in place: writes its `index` (built from that
    /// archive) and its metadata (`metadata_bytes`, as uploaded), puts the three objects in
    /// the store under a fresh upload id, then writes the catalog with the add-on in it. The
    /// add-on is `AVAILABLE` at once. Refused if the name exists or a path collides with an
    /// enabled add-on; then the catalog is unchanged (objects already written are deleted, or
    /// left to the orphan sweep).
    pub fn commit(
        &self,
        mut staging: Staging,
        metadata: &Metadata,
        metadata_bytes: &[u8],
        index: &Index,
    ) -> Result<Record, StoreError> {
        let lease = self.writable()?;
        self.check_new(metadata)?;
        // Written atomically and fsynced; the tarball is fsynced here.
        let index_path = staging.index();
        index.write(&index_path).map_err(|e| StoreError::Io {
            path: index_path.clone(),
            source: std::io::Error::other(e),
        })?;
        let (index_size, index_sha256) =
            legacy::digest_file(&index_path).map_err(io(&index_path))?;
        let index_head = legacy::digest_head(&index_path, index).map_err(io(&index_path))?;
        write_synced(&staging.dir.join(METADATA_FILE), metadata_bytes)?;
        let tarball = staging.tarball();
        std::fs::File::open(&tarball).and_then(|f| f.sync_all()).map_err(io(&tarball))?;
        let identifier = metadata.identifier();
        let objects = Objects::new(&identifier, &catalog::new_upload_id());
        // Objects first.
        let dir = self.put_objects(&mut staging, &objects)?;
        let mut inner = self.lock();
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
        let addon = Addon {
            record: record.clone(),
            paths: metadata.spec.paths.clone(),
            dir,
            objects,
            index_size,
            index_sha256,
            index_head,
        };
        // The catalog last (checked again: another upload may have committed meanwhile).
        let written = check_new_locked(&inner, metadata).and_then(|()| {
            let mut next = catalog_of(&inner);
            next.revision += 1;
            next.addons.push(addon.entry());
            write_catalog(&self.io, &self.backend, lease, &next)
        });
        if let Err(e) = written {
            drop(inner);
            self.discard(&addon.objects);
            return Err(e);
        }
        inner.next_id += 1;
        inner.revision += 1;
        inner.addons.insert(record.id, addon);
        drop(inner);
        self.notify();
        Ok(record)
    }

    /// Puts a staged add-on's objects under `objects`' keys; returns their local directory
    /// (local stores: the staging directory is renamed into place, no copy).
    fn put_objects(&self, staging: &mut Staging, objects: &Objects) -> Result<PathBuf, StoreError> {
        if let Some(target) =
            self.backend.local_path(objects.tarball.rsplit_once('/').map_or("", |(d, _)| d))
        {
            let parent = target.parent().unwrap_or(&target).to_path_buf();
            std::fs::create_dir_all(&parent).map_err(io(&parent))?;
            sync_dir(&staging.dir)?;
            std::fs::rename(&staging.dir, &target).map_err(io(&target))?;
            staging.committed = true;
            sync_dir(&parent)?;
            if let Some(grand) = parent.parent() {
                sync_dir(grand)?;
            }
            sync_dir(&self.staging)?;
            return Ok(target);
        }
        let files = [
            (&objects.metadata, staging.dir.join(METADATA_FILE)),
            (&objects.index, staging.index()),
            (&objects.tarball, staging.tarball()),
        ];
        let put = self.io.block(async {
            for (key, path) in &files {
                objects::put_file(&self.backend, key, path).await?;
            }
            Ok::<_, StoreError>(())
        });
        if let Err(e) = put {
            self.discard(objects);
            return Err(e);
        }
        Ok(PathBuf::new())
    }

    /// Deletes the objects of a commit that did not make it into the catalog (best effort:
    /// what is left is an orphan, swept later).
    fn discard(&self, objects: &Objects) {
        if let Some(dir) =
            self.backend.local_path(objects.tarball.rsplit_once('/').map_or("", |(d, _)| d))
        {
            let _ = std::fs::remove_dir_all(&dir);
            // The add-on's directory too, when this was its only upload.
            if let Some(parent) = dir.parent() {
                let _ = std::fs::remove_dir(parent);
            }
            return;
        }
        let deleted = self.io.block(async {
            for key in objects.keys() {
                objects::delete(&self.backend, key).await?;
            }
            Ok::<_, StoreError>(())
        });
        if let Err(e) = deleted {
            tracing::warn!(error = %e, "objects of a refused upload are left to the orphan sweep");
        }
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
    /// path conflicts first; a refusal changes nothing. The change is one catalog write.
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
        let lease = self.writable()?;
        match status {
            Status::Available | Status::Deprecated | Status::Disabled => {}
            Status::Deleted => return Err(StoreError::NotDeletable),
            Status::Unknown | Status::Failed => {
                return Err(StoreError::BadStatus(status.as_str().to_string()))
            }
        }
        let reason = check_reason(status, reason)?;
        let mut inner = self.lock();
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
        if changed.is_empty() {
            return Ok(0);
        }
        let mut next = catalog_of(&inner);
        next.revision += 1;
        for entry in &mut next.addons {
            if let Some(record) = changed.iter().find(|r| r.id == entry.record.id) {
                entry.record = record.clone();
            }
        }
        write_catalog(&self.io, &self.backend, lease, &next)?;
        for record in &changed {
            if let Some(addon) = inner.addons.get_mut(&record.id) {
                addon.record = record.clone();
            }
        }
        inner.revision = next.revision;
        drop(inner);
        self.notify();
        Ok(changed.len())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(keeper) = self.keeper.take() {
            keeper.stop();
        }
        if let Some(lease) = &self.lease {
            lease.release(&self.io, &self.backend);
        }
    }
}

/// The lease's heartbeat and the periodic orphan sweep: a thread that lives as long as the
/// store.
#[derive(Debug)]
struct Keeper {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Keeper {
    fn start(io: &Arc<Io>, backend: &Backend, lease: &Arc<Lease>, options: &OpenOptions) -> Keeper {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let (io, backend, lease) = (Arc::clone(io), backend.clone(), Arc::clone(lease));
        let (grace, interval) = (options.orphan_grace, options.orphan_interval);
        let thread = std::thread::Builder::new()
            .name("addonfs-lease".into())
            .spawn(move || {
                let mut last_sweep = std::time::Instant::now();
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(lease::HEARTBEAT)
                {
                    if let Err(e) = lease.heartbeat(&io, &backend) {
                        tracing::error!(error = %e, "cannot refresh the writer lease");
                    }
                    if interval.is_some_and(|i| last_sweep.elapsed() >= i) {
                        last_sweep = std::time::Instant::now();
                        if let Err(e) = orphans::sweep(&io, &backend, grace) {
                            tracing::warn!(error = %e, "cannot clean up orphaned objects");
                        }
                    }
                }
            })
            .expect("cannot start the lease thread");
        Keeper { stop, thread }
    }

    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// The catalog of `inner`.
fn catalog_of(inner: &Inner) -> Catalog {
    Catalog { revision: inner.revision, addons: inner.addons.values().map(Addon::entry).collect() }
}

/// Writes the catalog, after checking the lease is still this writer's (fencing). A local
/// catalog is written through a temporary file, fsync and rename.
fn write_catalog(
    io: &Io,
    backend: &Backend,
    lease: &Lease,
    catalog: &Catalog,
) -> Result<(), StoreError> {
    lease.check(io, backend)?;
    let bytes = catalog.to_bytes();
    match backend.local_root() {
        Some(root) => replace_file(root, CATALOG_KEY, &bytes),
        None => io.block(objects::put(backend, CATALOG_KEY, bytes)),
    }
}

/// Deletes what is left in a local store's `staging/` (uploads a crash interrupted).
fn clear_staging(staging: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(staging).map_err(io(staging))?;
    for entry in std::fs::read_dir(staging).map_err(io(staging))? {
        let path = entry.map_err(io(staging))?.path();
        tracing::info!(path = %path.display(), "removing an unfinished upload");
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(io(&path))?;
    }
    Ok(())
}

fn check_new_locked(inner: &Inner, metadata: &Metadata) -> Result<(), StoreError> {
    let identifier = metadata.identifier();
    if inner.addons.values().any(|a| a.record.identifier == identifier) {
        return Err(StoreError::AlreadyExists { identifier });
    }
    check_conflicts(inner, &identifier, &metadata.spec.paths, &[])
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
        // The statuses survive a reopen.
        drop(store);
        let store = Store::open(dir.path(), "test").unwrap();
        let list = store.list();
        assert_eq!(list[0].record.status, Status::Disabled);
        assert_eq!(list[0].record.reason, "disabled by an administrator");
        assert_eq!(list[1].record.status, Status::Available);
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

    /// Copies the state directory that the code before catalogs made (`tests/data/legacy-state`:
    /// `addons register` of a (tar.gz) and b (tar), `addons disable custom-addon-b`,
    /// `addons deprecate --reason "use c" custom-addon-a`; revision 4) into a fresh directory.
    fn legacy_state() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/legacy-state");
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(fixture.join("addons"))
            .arg(fixture.join(REVISION_FILE))
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success());
        dir
    }

    #[test]
    fn a_state_directory_of_old_code_opens_without_loss() {
        let dir = legacy_state();
        let expected: Vec<Record> = ["a", "b"]
            .iter()
            .map(|n| {
                let path = dir.path().join(format!("addons/custom-addon-{n}")).join(RECORD_FILE);
                serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
            })
            .collect();
        // A read-only look migrates in memory and writes nothing.
        let snapshot = Store::open_read_only(dir.path()).unwrap();
        assert_eq!(snapshot.revision(), 4);
        assert!(!dir.path().join(CATALOG_KEY).exists());
        drop(snapshot);
        let store = Store::open(dir.path(), "test").unwrap();
        assert!(store.problems().is_empty(), "{:?}", store.problems());
        assert_eq!(store.revision(), 4);
        let list = store.list();
        assert_eq!(list.iter().map(|a| a.record.clone()).collect::<Vec<_>>(), expected);
        assert_eq!(
            (list[0].record.status, list[0].record.reason.as_str()),
            (Status::Deprecated, "use c")
        );
        assert_eq!(list[1].record.status, Status::Disabled);
        assert_eq!(list[1].paths, ["/usr/bin/b"]);
        // The catalog points at the files where they are, and the digests are theirs.
        let catalog =
            Catalog::parse(&std::fs::read(dir.path().join(CATALOG_KEY)).unwrap()).unwrap();
        assert_eq!(catalog, store.catalog());
        for (entry, addon) in catalog.addons.iter().zip(&list) {
            assert_eq!(entry.objects, Objects::legacy(&entry.record.identifier));
            let (size, digest) =
                legacy::digest_file(&dir.path().join(&entry.objects.tarball)).unwrap();
            assert_eq!((size, digest), (entry.record.size, entry.record.sha256.clone()));
            let (size, digest) =
                legacy::digest_file(&dir.path().join(&entry.objects.index)).unwrap();
            assert_eq!((size, digest), (entry.index_size, entry.index_sha256.clone()));
            assert!(addon.tarball().is_file() && addon.index().is_file());
        }
        // Changes go on from there, and ids continue.
        assert_eq!(store.set_status(Status::Available, &[2], &[]).unwrap(), 1);
        assert_eq!(add(&store, "c", &["/opt/c"]).unwrap().id, 3);
        assert_eq!(store.revision(), 6);
        drop(store);
        let store = Store::open(dir.path(), "test").unwrap();
        assert_eq!(store.revision(), 6);
        assert_eq!(statuses(&store)[1], (Status::Available, String::new()));
        // The orphan sweep never touches the old layout's files.
        assert!(store.sweep_orphans(Duration::ZERO).unwrap().is_empty());
        assert!(dir.path().join("addons/custom-addon-a/addon.tar.gz").is_file());
    }

    #[test]
    fn migration_completes_an_interrupted_status_change_and_notes_broken_entries() {
        let dir = legacy_state();
        // The journal of a batch that old code decided but did not finish rewriting.
        let mut records: Vec<Record> = ["a", "b"]
            .iter()
            .map(|n| {
                let path = dir.path().join(format!("addons/custom-addon-{n}")).join(RECORD_FILE);
                serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
            })
            .collect();
        for r in &mut records {
            r.status = Status::Disabled;
            r.reason = DISABLED_REASON.into();
        }
        std::fs::write(dir.path().join(STATUS_JOURNAL), serde_json::to_vec(&records).unwrap())
            .unwrap();
        std::fs::create_dir_all(dir.path().join("addons/custom-addon-broken")).unwrap();
        std::fs::write(dir.path().join("addons/custom-addon-broken").join(RECORD_FILE), "{")
            .unwrap();
        let store = Store::open(dir.path(), "test").unwrap();
        assert_eq!(store.problems().len(), 1, "{:?}", store.problems());
        assert!(store.problems()[0].contains("custom-addon-broken"), "{:?}", store.problems());
        assert_eq!(statuses(&store), vec![(Status::Disabled, DISABLED_REASON.into()); 2]);
        drop(store);
        // A broken journal is noted, not fatal.
        let dir = legacy_state();
        std::fs::write(dir.path().join(STATUS_JOURNAL), "[{").unwrap();
        let store = Store::open(dir.path(), "test").unwrap();
        assert!(store.problems()[0].contains(STATUS_JOURNAL), "{:?}", store.problems());
        assert_eq!(store.list().len(), 2);
    }

    #[test]
    fn a_bad_catalog_is_refused_naming_the_key_and_rule() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "test").unwrap();
        add(&store, "a", &["/opt/a"]).unwrap();
        drop(store);
        let path = dir.path().join(CATALOG_KEY);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("\"/opt/a\"", "\"opt/a\"")).unwrap();
        for e in [
            Store::open(dir.path(), "test").unwrap_err(),
            Store::open_read_only(dir.path()).unwrap_err(),
        ] {
            let text = e.to_string();
            assert!(text.contains("catalog.json: addons[0] (custom-addon-a).paths"), "{text}");
            assert!(text.contains("absolute"), "{text}");
        }
    }

    #[test]
    fn a_second_writer_is_refused_naming_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let backend = backend::open_local(dir.path()).unwrap();
        let first = Store::open_backend(backend.clone(), &OpenOptions::new("test")).unwrap();
        first.set_api_url("http://192.0.2.1:7474").unwrap();
        // Another host's registry on the same (shared) directory: no flock between them, the
        // lease refuses. Simulated by a lease written by another owner.
        drop(first);
        let other = lease::Writer {
            owner: "elsewhere:1:abc".into(),
            url: "https://registry.example:7474".into(),
            heartbeat_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64,
        };
        std::fs::write(dir.path().join(lease::WRITER_KEY), serde_json::to_vec(&other).unwrap())
            .unwrap();
        let e = Store::open_backend(backend.clone(), &OpenOptions::new("test")).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, StoreError::WriterHeld { .. }), "{text}");
        assert!(
            text.contains("elsewhere:1:abc") && text.contains("https://registry.example:7474"),
            "{text}"
        );
        // A stale lease is taken over.
        let stale = lease::Writer { heartbeat_ms: other.heartbeat_ms - 60_000, ..other.clone() };
        std::fs::write(dir.path().join(lease::WRITER_KEY), serde_json::to_vec(&stale).unwrap())
            .unwrap();
        let store = Store::open_backend(backend, &OpenOptions::new("test")).unwrap();
        add(&store, "a", &["/opt/a"]).unwrap();
        // Fencing: a writer that lost its lease changes nothing more.
        std::fs::write(dir.path().join(lease::WRITER_KEY), serde_json::to_vec(&other).unwrap())
            .unwrap();
        let before = std::fs::read(dir.path().join(CATALOG_KEY)).unwrap();
        let e = store.set_status(Status::Disabled, &[1], &[]).unwrap_err();
        assert!(matches!(e, StoreError::Fenced { .. }), "{e}");
        assert!(e.to_string().contains("elsewhere:1:abc"), "{e}");
        assert!(add(&store, "b", &["/opt/b"]).is_err());
        assert_eq!(std::fs::read(dir.path().join(CATALOG_KEY)).unwrap(), before);
        assert_eq!(store.list().len(), 1);
    }

    #[test]
    fn orphans_are_swept_after_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "test").unwrap();
        add(&store, "a", &["/opt/a"]).unwrap();
        let orphan = dir.path().join("addons/custom-addon-z/1-ff");
        std::fs::create_dir_all(&orphan).unwrap();
        std::fs::write(orphan.join(TARBALL_FILE), "x").unwrap();
        assert!(store.sweep_orphans(Duration::from_secs(3600)).unwrap().is_empty());
        assert_eq!(
            store.sweep_orphans(Duration::ZERO).unwrap(),
            ["addons/custom-addon-z/1-ff/addon.tar.gz"]
        );
        assert!(!dir.path().join("addons/custom-addon-z").exists());
        assert!(store.list()[0].tarball().is_file());
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
        let on_disk =
            Catalog::parse(&std::fs::read(dir.path().join(CATALOG_KEY)).unwrap()).unwrap();
        assert_eq!(on_disk.revision, 3);
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
        // A damaged catalog is named, not silently reset.
        std::fs::write(dir.path().join(CATALOG_KEY), "x\n").unwrap();
        let e = Store::open(dir.path(), "test").unwrap_err();
        assert!(e.to_string().contains(CATALOG_KEY), "{e}");
    }
}
