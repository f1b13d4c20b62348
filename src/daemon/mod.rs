//! The node daemon's mount: every add-on of the store as one directory (named by its
//! identifier) at the root of one FUSE mount, plus a read-only `/.addons.json` listing the
//! enabled ones, `AVAILABLE` and `DEPRECATED` ([`crate::attach::Manifest`]).
//!
//! The mount follows the store by notification: the daemon registers itself as the store's
//! [`Follower`], and every change (an add-on committed, a status changed) runs
//! [`DaemonMount::sync`] in the thread that made it, before that call returns, so the API
//! answers a request only once the mount shows its change (read-your-writes). The sync adds new
//! add-ons, shows or hides them as they are enabled or disabled, rewrites the manifest (with
//! the catalog's revision), and tells the kernel to forget exactly what changed: the root entry
//! of each added or shown/hidden add-on, the root's listing, and the manifest. Nothing runs
//! between changes: an idle daemon does no work. A disabled add-on leaves the listing and the
//! manifest, but lookups of its directory keep working, so running workloads never break. A
//! volume's slot is the add-on's id (persisted, never reused), so inode numbers survive
//! restarts.
//!
//! The mount does not care where an add-on's bytes come from: [`DaemonMount::apply`] takes
//! the catalog as a list of [`MountAddon`]s, each with its [`ArchiveSource`]. `serve` reads the
//! state directory's files in place; a `node` ([`node`]) reads verified copies from its cache.

pub mod cache;
mod error;
pub mod lazy;
pub mod node;
pub mod restart;
mod run;

pub use error::DaemonError;
pub use run::{run, Config, KeySource, MountConfig, StoreConfig, DEFAULT_DRAIN, UNMOUNT_GRACE};

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::addon::store::Follower;
use crate::addon::{Record, Status, Store};
use crate::archive::ScanOptions;
use crate::attach::{Manifest, ManifestAddon, MANIFEST_NAME};
use crate::fs::namespace::{Layout, Namespace, Slot, Volume};
use crate::fs::stats::FsStats;
use crate::fs::{AddonFs, FsOptions};
use crate::index::open::load_matching;
use crate::index::{Index, ROOT_INO};
use crate::mount::{attach, Attach, MountOptions, Mounted};
use crate::reader::{ArchiveReader, ChunkCache};

/// The inode number of `/.addons.json` (slot 0, fixed so it is stable across restarts).
pub const MANIFEST_INO: u64 = 2;

/// The daemon's mount of a store.
pub struct DaemonMount {
    shared: Arc<Shared>,
    /// The mount point asked for; [`DaemonMount::path`] is where it was attached.
    requested: PathBuf,
    path: std::sync::OnceLock<PathBuf>,
    fs_stats: Arc<FsStats>,
    /// The file system until it is attached ([`DaemonMount::attach`]).
    fs: Mutex<Option<AddonFs>>,
}

/// What the store's notifications reach (the store holds it weakly).
struct Shared {
    /// The store followed in process (`serve`), or `None` when the caller applies the
    /// catalog itself (`node`).
    store: Option<Arc<Store>>,
    ns: Arc<Namespace>,
    cache: Arc<ChunkCache>,
    /// `None` once unmounted.
    mounted: Mutex<Option<Mounted>>,
    /// Identifier -> whether it is listed, for the add-ons already in the namespace.
    shown: Mutex<HashMap<String, bool>>,
    /// The manifest last written.
    manifest: Mutex<Vec<u8>>,
    /// The revision the manifest shows: the newest one whose enabled add-ons are all mounted.
    shown_revision: Mutex<u64>,
}

/// One add-on of the catalog as the mount needs it.
#[derive(Debug, Clone)]
pub struct MountAddon {
    /// Its record (identifier, id = its volume's slot, status).
    pub record: Record,
    /// The paths its metadata requests.
    pub paths: Vec<String>,
    /// Where its bytes are; `None` when they are not at hand (yet): an add-on not yet in the
    /// mount is then left out until a later call brings them.
    pub source: Option<ArchiveSource>,
}

/// Where an add-on's archive and index are read from.
#[derive(Debug, Clone)]
pub enum ArchiveSource {
    /// The registry's own files (`serve`): read in place; an index that does not match the
    /// archive is rebuilt.
    StateDir {
        /// The archive.
        tarball: PathBuf,
        /// Its index.
        index: PathBuf,
    },
    /// A node's cached copy, whose size and SHA-256 were checked against the catalog before it
    /// was kept ([`cache::NodeCache`]). The index must describe an archive of that digest.
    /// (Reading spans by ranges from the store, without the whole copy, is a later source.)
    Verified {
        /// The archive.
        tarball: PathBuf,
        /// Its index.
        index: PathBuf,
        /// The archive's SHA-256, as the catalog gives it.
        sha256: [u8; 32],
    },
    /// An add-on read lazily from the store ([`lazy`]): its index from a head checked against
    /// the catalog, its bytes by verified ranges.
    Lazy(Arc<lazy::LazyAddon>),
}

/// What [`DaemonMount::apply`] did.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// The revision the manifest shows now.
    pub revision: u64,
    /// Identifiers of every add-on in the mount (listed or hidden): their files are in use.
    pub mounted: HashSet<String>,
    /// Enabled add-ons that could not be mounted (their bytes missing or unreadable).
    pub missing: Vec<String>,
}

impl Follower for Shared {
    fn changed(&self, _revision: u64) {
        self.sync();
    }
}

impl DaemonMount {
    /// Mounts every add-on of `store` at `mountpoint` (clearing a stale mount left there) and
    /// follows the store's changes until [`DaemonMount::unmount`].
    pub fn start(
        store: Arc<Store>,
        mountpoint: &Path,
        cache_bytes: u64,
        opts: &MountOptions,
    ) -> Result<DaemonMount, DaemonError> {
        let daemon = DaemonMount::detached(Some(store), mountpoint, cache_bytes)?;
        daemon.attach(opts, Attach::Fresh)?;
        Ok(daemon)
    }

    /// The mount of `store` (followed as [`DaemonMount::start`] says), or an empty root (only
    /// `/.addons.json`, revision 0) without one, for `mountpoint`, not attached yet: a caller
    /// that brings the catalog itself ([`DaemonMount::apply`], a node) fills it first, so that
    /// a connection taken over finds every add-on its waiting requests name; then
    /// [`DaemonMount::attach`] (see [`restart::MountLife::attach`]).
    pub fn detached(
        store: Option<Arc<Store>>,
        mountpoint: &Path,
        cache_bytes: u64,
    ) -> Result<DaemonMount, DaemonError> {
        let ns = Arc::new(Namespace::new(Layout::Directories, (0, 0)));
        ns.set_file(MANIFEST_NAME.as_bytes(), MANIFEST_INO, manifest_bytes(0, &[]), true)
            .map_err(|e| DaemonError::Failed(format!("cannot create {MANIFEST_NAME}: {e}")))?;
        let fs = AddonFs::new(Arc::clone(&ns), FsOptions::default());
        let fs_stats = fs.stats();
        let shared = Arc::new(Shared {
            store,
            ns,
            cache: Arc::new(ChunkCache::new(cache_bytes)),
            mounted: Mutex::new(None),
            shown: Mutex::new(HashMap::new()),
            manifest: Mutex::new(manifest_bytes(0, &[])),
            shown_revision: Mutex::new(0),
        });
        if let Some(store) = &shared.store {
            // Registered before the first sync, so no change falls between the two.
            let follower: Weak<dyn Follower> = Arc::downgrade(&shared) as Weak<dyn Follower>;
            store.set_follower(Some(follower));
        }
        // Every add-on is in the namespace before the first request is answered: a connection
        // taken over (see `crate::holder`) has requests waiting, for add-ons its workloads use.
        shared.sync();
        Ok(DaemonMount {
            shared,
            requested: mountpoint.to_path_buf(),
            path: std::sync::OnceLock::new(),
            fs_stats,
            fs: Mutex::new(Some(fs)),
        })
    }

    /// Attaches the file system at its mount point, mounted anew or taking a kept connection
    /// over as `how` says (once; a second call fails).
    pub fn attach(&self, opts: &MountOptions, how: Attach) -> Result<(), DaemonError> {
        let mountpoint = &self.requested;
        let fs = self.fs.lock().unwrap_or_else(|p| p.into_inner()).take();
        let fs = fs.ok_or_else(|| DaemonError::Failed("the mount is attached already".into()))?;
        let mounted = match attach(fs, mountpoint, opts, how) {
            Ok(mounted) => mounted,
            Err(e) => {
                if let Some(store) = &self.shared.store {
                    store.set_follower(None);
                }
                return Err(DaemonError::io(mountpoint, std::io::Error::other(e.to_string())));
            }
        };
        let _ = self.path.set(mounted.path().to_path_buf());
        *self.shared.mounted.lock().unwrap_or_else(|p| p.into_inner()) = Some(mounted);
        // What changed meanwhile (its invalidations were skipped: nothing was mounted).
        self.shared.sync();
        Ok(())
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.path.get().map_or(&self.requested, PathBuf::as_path)
    }

    /// The file system's request counters.
    pub fn fs_stats(&self) -> Arc<FsStats> {
        Arc::clone(&self.fs_stats)
    }

    /// The chunk cache of the mount's readers.
    pub fn cache(&self) -> Arc<ChunkCache> {
        Arc::clone(&self.shared.cache)
    }

    /// Brings the mount in line with the store (the store's changes do it themselves; this is
    /// for a caller that wants it now).
    pub fn sync(&self) {
        self.shared.sync();
    }

    /// Brings the mount in line with `addons`, the catalog at `revision` (see
    /// [`Shared::apply`]).
    pub fn apply(&self, revision: u64, addons: &[MountAddon]) -> Applied {
        self.shared.apply(revision, addons)
    }

    /// What a successor needs to take the connection over: a duplicate of `/dev/fuse` and the
    /// protocol version negotiated.
    pub fn handover(&self) -> std::io::Result<(std::os::fd::OwnedFd, fuser::Version)> {
        let mounted = self.shared.mounted.lock().unwrap_or_else(|p| p.into_inner());
        mounted.as_ref().ok_or_else(|| std::io::Error::other("unmounted"))?.handover()
    }

    /// A closure that has the kernel resend the requests a dead predecessor had read (see
    /// [`Mounted::resend`]), for the holder's instructions.
    pub fn resender(&self) -> impl Fn() + Send + 'static {
        let shared = Arc::downgrade(&self.shared);
        move || {
            let Some(shared) = shared.upgrade() else { return };
            let mounted = shared.mounted.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(mounted) = mounted.as_ref() {
                match mounted.resend() {
                    Ok(()) => tracing::info!(
                        "asked the kernel to resend the requests a predecessor had read"
                    ),
                    Err(e) => tracing::warn!(
                        error = %e,
                        "the kernel cannot resend requests (FUSE_NOTIFY_RESEND needs Linux 6.9): \
                         those a dead predecessor had read were answered with EIO"
                    ),
                }
            }
        }
    }

    /// Stops following the store and leaves the mount as it is, served until this process
    /// exits (the holder keeps the connection for the next one).
    pub fn leave(self) {
        if let Some(store) = &self.shared.store {
            store.set_follower(None);
        }
        let mounted = self.shared.mounted.lock().unwrap_or_else(|p| p.into_inner()).take();
        std::mem::forget(mounted);
    }

    /// Stops following the store (waiting for a sync in progress) and unmounts (lazily if
    /// busy, after `grace`).
    pub fn unmount(self, grace: Duration) {
        if let Some(store) = &self.shared.store {
            store.set_follower(None);
        }
        let mounted = self.shared.mounted.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(Err(e)) = mounted.map(|m| m.unmount(grace)) {
            tracing::warn!(error = %e, "unmount failed");
        }
    }
}

impl Shared {
    /// Brings the mount in line with the store: new add-ons appear, status changes show or
    /// hide them, and the manifest is rewritten when it changed; the kernel forgets what
    /// changed. Problems are logged, and the add-on concerned is retried at the next change.
    fn sync(&self) {
        let Some(store) = &self.store else { return };
        let (revision, addons) = store.snapshot();
        let addons: Vec<MountAddon> = addons
            .into_iter()
            .map(|a| MountAddon {
                source: Some(ArchiveSource::StateDir { tarball: a.tarball(), index: a.index() }),
                record: a.record,
                paths: a.paths,
            })
            .collect();
        self.apply(revision, &addons);
    }

    /// Brings the mount in line with the catalog `addons` at `revision`: new add-ons appear,
    /// status changes show or hide them, add-ons gone from the catalog are hidden, and the
    /// manifest is rewritten when it changed; the kernel forgets what changed. The manifest
    /// shows `revision` only once every add-on enabled in it is mounted (a node that could not
    /// fetch one has not caught up: `attach --min-revision` keeps waiting); until then it
    /// keeps the revision it showed. Problems are logged, and the add-on concerned is retried
    /// at the next call.
    fn apply(&self, revision: u64, addons: &[MountAddon]) -> Applied {
        let mounted = self.mounted.lock().unwrap_or_else(|p| p.into_inner());
        let mut shown = self.shown.lock().unwrap_or_else(|p| p.into_inner());
        // Root entries whose kernel dentry (possibly a cached "no such entry") must go.
        let mut entries: Vec<&str> = Vec::new();
        let mut missing = Vec::new();
        for addon in addons {
            let id = &addon.record.identifier;
            let visible = addon.record.status.is_enabled();
            match shown.get(id) {
                Some(&was) if was == visible => {}
                Some(_) => match self.ns.set_visible(id.as_bytes(), visible) {
                    Ok(_) => {
                        shown.insert(id.clone(), visible);
                        entries.push(id);
                    }
                    Err(e) => tracing::warn!(addon = %id, error = %e, "cannot change visibility"),
                },
                None => match &addon.source {
                    // Not at hand: a disabled one is not needed, an enabled one is missing.
                    None => {
                        if visible {
                            missing.push(id.clone());
                        }
                    }
                    Some(source) => match self.add(addon, source, visible) {
                        Ok(()) => {
                            shown.insert(id.clone(), visible);
                            entries.push(id);
                        }
                        Err(e) => {
                            tracing::warn!(addon = %id, error = %e, "cannot mount add-on");
                            if visible {
                                missing.push(id.clone());
                            }
                        }
                    },
                },
            }
        }
        // Gone from the catalog (deleted): hidden like a disabled one, still readable.
        let listed: HashSet<&str> = addons.iter().map(|a| a.record.identifier.as_str()).collect();
        let gone: Vec<String> = shown
            .iter()
            .filter(|(id, &visible)| visible && !listed.contains(id.as_str()))
            .map(|(id, _)| id.clone())
            .collect();
        let mut gone_entries = Vec::new();
        for id in gone {
            match self.ns.set_visible(id.as_bytes(), false) {
                Ok(_) => {
                    shown.insert(id.clone(), false);
                    gone_entries.push(id);
                }
                Err(e) => tracing::warn!(addon = %id, error = %e, "cannot hide add-on"),
            }
        }
        let enabled: Vec<&MountAddon> = addons
            .iter()
            .filter(|a| {
                a.record.status.is_enabled() && shown.get(&a.record.identifier) == Some(&true)
            })
            .collect();
        let mut shown_revision = self.shown_revision.lock().unwrap_or_else(|p| p.into_inner());
        if missing.is_empty() {
            *shown_revision = revision;
        }
        let revision = *shown_revision;
        drop(shown_revision);
        let applied = Applied {
            revision,
            mounted: shown.keys().cloned().collect(),
            missing: missing.clone(),
        };
        let bytes = manifest_bytes(revision, &enabled);
        let mut current = self.manifest.lock().unwrap_or_else(|p| p.into_inner());
        let mut manifest_changed = false;
        if *current != bytes {
            match self.ns.set_file(MANIFEST_NAME.as_bytes(), MANIFEST_INO, bytes.clone(), true) {
                Ok(()) => {
                    *current = bytes;
                    manifest_changed = true;
                }
                Err(e) => tracing::warn!(error = %e, "cannot update {MANIFEST_NAME}"),
            }
        }
        let Some(mounted) = mounted.as_ref() else { return applied };
        // The kernel answers from its caches (long TTLs): forget the changed entries, the
        // manifest's attributes and pages, and the root's listing, before this returns.
        let forget = |what: &str, result: std::io::Result<()>| {
            if let Err(e) = result {
                tracing::warn!(error = %e, "cannot invalidate the kernel's cache of {what}");
            }
        };
        for id in entries.iter().copied().chain(gone_entries.iter().map(String::as_str)) {
            forget(id, mounted.invalidate_entry(ROOT_INO, id.as_bytes()));
        }
        if manifest_changed {
            forget(MANIFEST_NAME, mounted.invalidate_inode(MANIFEST_INO));
        }
        if !entries.is_empty() || !gone_entries.is_empty() {
            forget("the root", mounted.invalidate_inode(ROOT_INO));
        }
        applied
    }

    /// Opens an add-on's archive and adds it to the namespace.
    fn add(
        &self,
        addon: &MountAddon,
        source: &ArchiveSource,
        visible: bool,
    ) -> Result<(), DaemonError> {
        let reader = match source {
            ArchiveSource::StateDir { tarball, index } => {
                let index = match load_matching(tarball, index, ScanOptions::DEFAULT_SPAN) {
                    Ok(index) => index,
                    Err(_) => {
                        crate::index::open::open(
                            tarball,
                            Some(index),
                            &Default::default(),
                            false,
                            None,
                        )?
                        .index
                    }
                };
                ArchiveReader::open(tarball, Arc::new(index), Arc::clone(&self.cache))?
            }
            ArchiveSource::Verified { tarball, index: index_path, sha256 } => {
                let index = Index::load(index_path)
                    .map_err(|e| DaemonError::Failed(format!("{}: {e}", index_path.display())))?;
                // The index's own checks passed; it must also describe this very archive.
                if index.identity().digest != *sha256 {
                    return Err(DaemonError::Failed(format!(
                        "{}: the index was built for another archive (its SHA-256 differs \
                         from the catalog's)",
                        index_path.display()
                    )));
                }
                ArchiveReader::open_verified(tarball, Arc::new(index), Arc::clone(&self.cache))?
            }
            ArchiveSource::Lazy(addon) => lazy_reader(addon, Arc::clone(&self.cache))?,
        };
        let slot = Slot::try_from(addon.record.id).map_err(|_| {
            DaemonError::Failed(format!("add-on id {} is too large for a slot", addon.record.id))
        })?;
        self.ns
            .add_volume(addon.record.identifier.as_bytes(), Volume::new(slot, reader), visible)
            .map_err(|e| DaemonError::Failed(format!("{}: {e}", addon.record.identifier)))?;
        Ok(())
    }
}

/// A reader of an add-on read lazily.
fn lazy_reader(
    addon: &lazy::LazyAddon,
    cache: Arc<ChunkCache>,
) -> Result<ArchiveReader, DaemonError> {
    // Named by its identifier in messages: there is no local path.
    let name = PathBuf::from(format!("{}/{}", addon.identifier, crate::addon::store::TARBALL_FILE));
    let source: Arc<dyn crate::source::ReadAt> = Arc::clone(&addon.archive) as _;
    Ok(ArchiveReader::open_source(source, &name, Arc::clone(&addon.index), cache)?)
}

/// The manifest's bytes for the enabled add-ons at `revision` (deprecated ones flagged, with
/// their reason).
fn manifest_bytes(revision: u64, enabled: &[&MountAddon]) -> Vec<u8> {
    let manifest = Manifest {
        revision,
        addons: enabled
            .iter()
            .map(|a| {
                let deprecated = a.record.status == Status::Deprecated;
                ManifestAddon {
                    identifier: a.record.identifier.clone(),
                    paths: a.paths.clone(),
                    deprecated,
                    reason: if deprecated { a.record.reason.clone() } else { String::new() },
                }
            })
            .collect(),
    };
    let mut bytes = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}
