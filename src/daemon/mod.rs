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

mod run;

pub use run::{run, Config, KeySource, MountConfig, DEFAULT_DRAIN, UNMOUNT_GRACE};

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::addon::store::{Addon, Follower};
use crate::addon::{Status, Store};
use crate::archive::ScanOptions;
use crate::attach::{Manifest, ManifestAddon, MANIFEST_NAME};
use crate::error::Error;
use crate::fs::namespace::{Layout, Namespace, Slot, Volume};
use crate::fs::stats::FsStats;
use crate::fs::{AddonFs, FsOptions};
use crate::index::open::load_matching;
use crate::index::ROOT_INO;
use crate::mount::{attach, Attach, MountOptions, Mounted};
use crate::reader::{ArchiveReader, ChunkCache};

/// The inode number of `/.addons.json` (slot 0, fixed so it is stable across restarts).
pub const MANIFEST_INO: u64 = 2;

/// The daemon's mount of a store.
pub struct DaemonMount {
    shared: Arc<Shared>,
    path: std::path::PathBuf,
    fs_stats: Arc<FsStats>,
}

/// What the store's notifications reach (the store holds it weakly).
struct Shared {
    store: Arc<Store>,
    ns: Arc<Namespace>,
    cache: Arc<ChunkCache>,
    /// `None` once unmounted.
    mounted: Mutex<Option<Mounted>>,
    /// Identifier -> whether it is listed, for the add-ons already in the namespace.
    shown: Mutex<HashMap<String, bool>>,
    /// The manifest last written.
    manifest: Mutex<Vec<u8>>,
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
    ) -> Result<DaemonMount, Error> {
        Self::start_on(store, mountpoint, cache_bytes, opts, Attach::Fresh)
    }

    /// [`DaemonMount::start`], mounting anew or taking a kept connection over as `how` says
    /// (see [`crate::holder`]).
    pub fn start_on(
        store: Arc<Store>,
        mountpoint: &Path,
        cache_bytes: u64,
        opts: &MountOptions,
        how: Attach,
    ) -> Result<DaemonMount, Error> {
        let ns = Arc::new(Namespace::new(Layout::Directories, (0, 0)));
        ns.set_file(MANIFEST_NAME.as_bytes(), MANIFEST_INO, manifest_bytes(0, &[]), true)
            .map_err(|e| Error::Daemon(format!("cannot create {MANIFEST_NAME}: {e}")))?;
        let fs = AddonFs::new(Arc::clone(&ns), FsOptions::default());
        let fs_stats = fs.stats();
        let shared = Arc::new(Shared {
            store: Arc::clone(&store),
            ns,
            cache: Arc::new(ChunkCache::new(cache_bytes)),
            mounted: Mutex::new(None),
            shown: Mutex::new(HashMap::new()),
            manifest: Mutex::new(manifest_bytes(0, &[])),
        });
        // Registered before the first sync, so no change falls between the two.
        let follower: Weak<dyn Follower> = Arc::downgrade(&shared) as Weak<dyn Follower>;
        store.set_follower(Some(follower));
        // Every add-on is in the namespace before the first request is answered: a connection
        // taken over (see `crate::holder`) has requests waiting, for add-ons its workloads use.
        shared.sync();
        let mounted = match attach(fs, mountpoint, opts, how) {
            Ok(mounted) => mounted,
            Err(e) => {
                store.set_follower(None);
                return Err(Error::io(mountpoint, std::io::Error::other(e.to_string())));
            }
        };
        let path = mounted.path().to_path_buf();
        *shared.mounted.lock().unwrap_or_else(|p| p.into_inner()) = Some(mounted);
        // What changed meanwhile (its invalidations were skipped: nothing was mounted).
        shared.sync();
        Ok(DaemonMount { shared, path, fs_stats })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.path
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
        self.shared.store.set_follower(None);
        let mounted = self.shared.mounted.lock().unwrap_or_else(|p| p.into_inner()).take();
        std::mem::forget(mounted);
    }

    /// Stops following the store (waiting for a sync in progress) and unmounts (lazily if
    /// busy, after `grace`).
    pub fn unmount(self, grace: Duration) {
        self.shared.store.set_follower(None);
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
        let (revision, addons) = self.store.snapshot();
        let mounted = self.mounted.lock().unwrap_or_else(|p| p.into_inner());
        let mut shown = self.shown.lock().unwrap_or_else(|p| p.into_inner());
        // Root entries whose kernel dentry (possibly a cached "no such entry") must go.
        let mut entries: Vec<&str> = Vec::new();
        for addon in &addons {
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
                None => match self.add(addon, visible) {
                    Ok(()) => {
                        shown.insert(id.clone(), visible);
                        entries.push(id);
                    }
                    Err(e) => tracing::warn!(addon = %id, error = %e, "cannot mount add-on"),
                },
            }
        }
        let enabled: Vec<&Addon> = addons
            .iter()
            .filter(|a| {
                a.record.status.is_enabled() && shown.get(&a.record.identifier) == Some(&true)
            })
            .collect();
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
        let Some(mounted) = mounted.as_ref() else { return };
        // The kernel answers from its caches (long TTLs): forget the changed entries, the
        // manifest's attributes and pages, and the root's listing, before this returns.
        let forget = |what: &str, result: std::io::Result<()>| {
            if let Err(e) = result {
                tracing::warn!(error = %e, "cannot invalidate the kernel's cache of {what}");
            }
        };
        for id in &entries {
            forget(id, mounted.invalidate_entry(ROOT_INO, id.as_bytes()));
        }
        if manifest_changed {
            forget(MANIFEST_NAME, mounted.invalidate_inode(MANIFEST_INO));
        }
        if !entries.is_empty() {
            forget("the root", mounted.invalidate_inode(ROOT_INO));
        }
    }

    /// Opens an add-on's archive and adds it to the namespace.
    fn add(&self, addon: &Addon, visible: bool) -> Result<(), Error> {
        let tarball = addon.tarball();
        let index = match load_matching(&tarball, &addon.index(), ScanOptions::DEFAULT_SPAN) {
            Ok(index) => index,
            Err(_) => {
                crate::index::open::open(
                    &tarball,
                    Some(&addon.index()),
                    &Default::default(),
                    false,
                    None,
                )?
                .index
            }
        };
        let reader = ArchiveReader::open(&tarball, Arc::new(index), Arc::clone(&self.cache))?;
        let slot = Slot::try_from(addon.record.id).map_err(|_| {
            Error::Daemon(format!("add-on id {} is too large for a slot", addon.record.id))
        })?;
        self.ns
            .add_volume(addon.record.identifier.as_bytes(), Volume::new(slot, reader), visible)
            .map_err(|e| Error::Daemon(format!("{}: {e}", addon.record.identifier)))?;
        Ok(())
    }
}

/// The manifest's bytes for the enabled add-ons at `revision` (deprecated ones flagged, with
/// their reason).
fn manifest_bytes(revision: u64, enabled: &[&Addon]) -> Vec<u8> {
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
