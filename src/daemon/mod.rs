//! The node daemon's mount: every add-on of the store as one directory (named by its
//! identifier) at the root of one FUSE mount, plus a read-only `/.addons.json` listing the
//! enabled ones, `AVAILABLE` and `DEPRECATED` ([`crate::attach::Manifest`]).
//!
//! The mount follows the store: [`DaemonMount::sync`] (called by `serve` every
//! [`SYNC_INTERVAL`]) adds new add-ons, shows or hides them as they are enabled or disabled, and
//! rewrites the manifest, invalidating the kernel's cached root. A disabled add-on leaves the
//! listing and the manifest, but lookups of its directory keep working, so running workloads
//! never break. A volume's slot is the add-on's id (persisted, never reused), so inode numbers
//! survive restarts.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::addon::store::Addon;
use crate::addon::{Status, Store};
use crate::archive::ScanOptions;
use crate::attach::{Manifest, ManifestAddon, MANIFEST_NAME};
use crate::error::Error;
use crate::fs::namespace::{Layout, Namespace, Slot, Volume};
use crate::fs::{AddonFs, FsOptions};
use crate::index::open::load_matching;
use crate::index::ROOT_INO;
use crate::mount::{mount, MountOptions, Mounted};
use crate::reader::{ArchiveReader, ChunkCache};

/// How often `serve` brings the mount in line with the store.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(20);

/// The inode number of `/.addons.json` (slot 0, fixed so it is stable across restarts).
pub const MANIFEST_INO: u64 = 2;

/// The daemon's mount of a store.
pub struct DaemonMount {
    store: Arc<Store>,
    ns: Arc<Namespace>,
    cache: Arc<ChunkCache>,
    mounted: Mutex<Mounted>,
    path: std::path::PathBuf,
    /// Identifier -> whether it is listed, for the add-ons already in the namespace.
    shown: Mutex<HashMap<String, bool>>,
    /// The manifest last written.
    manifest: Mutex<Vec<u8>>,
}

impl DaemonMount {
    /// Mounts every add-on of `store` at `mountpoint` (clearing a stale mount left there).
    pub fn start(
        store: Arc<Store>,
        mountpoint: &Path,
        cache_bytes: u64,
        opts: &MountOptions,
    ) -> Result<DaemonMount, Error> {
        let ns = Arc::new(Namespace::new(Layout::Directories, (0, 0)));
        ns.set_file(MANIFEST_NAME.as_bytes(), MANIFEST_INO, manifest_bytes(&[]), true)
            .map_err(|e| Error::Usage(format!("cannot create {MANIFEST_NAME}: {e}")))?;
        let fs = AddonFs::new(Arc::clone(&ns), FsOptions::default());
        let mounted = mount(fs, mountpoint, opts)
            .map_err(|e| Error::io(mountpoint, std::io::Error::other(e.to_string())))?;
        let path = mounted.path().to_path_buf();
        let daemon = DaemonMount {
            path,
            store,
            ns,
            cache: Arc::new(ChunkCache::new(cache_bytes)),
            mounted: Mutex::new(mounted),
            shown: Mutex::new(HashMap::new()),
            manifest: Mutex::new(manifest_bytes(&[])),
        };
        daemon.sync();
        Ok(daemon)
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Brings the mount in line with the store: new add-ons appear, status changes show or
    /// hide them, and the manifest is rewritten when it changed. Problems are logged, and the
    /// add-on concerned is retried at the next sync.
    pub fn sync(&self) {
        let addons = self.store.list();
        let mounted = self.mounted.lock().unwrap_or_else(|p| p.into_inner());
        let mut shown = self.shown.lock().unwrap_or_else(|p| p.into_inner());
        let mut root_changed = false;
        for addon in &addons {
            let id = &addon.record.identifier;
            let visible = addon.record.status.is_enabled();
            match shown.get(id) {
                Some(&was) if was == visible => {}
                Some(_) => match self.ns.set_visible(id.as_bytes(), visible) {
                    Ok(_) => {
                        shown.insert(id.clone(), visible);
                        root_changed = true;
                    }
                    Err(e) => tracing::warn!(addon = %id, error = %e, "cannot change visibility"),
                },
                None => match self.add(addon, visible) {
                    Ok(()) => {
                        shown.insert(id.clone(), visible);
                        // A negative lookup of the name may be cached.
                        let _ = mounted.invalidate_entry(ROOT_INO, id.as_bytes());
                        root_changed = true;
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
        let bytes = manifest_bytes(&enabled);
        let mut current = self.manifest.lock().unwrap_or_else(|p| p.into_inner());
        if *current != bytes {
            match self.ns.set_file(MANIFEST_NAME.as_bytes(), MANIFEST_INO, bytes.clone(), true) {
                Ok(()) => {
                    *current = bytes;
                    let _ = mounted.invalidate_inode(MANIFEST_INO);
                    root_changed = true;
                }
                Err(e) => tracing::warn!(error = %e, "cannot update {MANIFEST_NAME}"),
            }
        }
        if root_changed {
            let _ = mounted.invalidate_inode(ROOT_INO);
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
            Error::Usage(format!("add-on id {} is too large for a slot", addon.record.id))
        })?;
        self.ns
            .add_volume(addon.record.identifier.as_bytes(), Volume::new(slot, reader), visible)
            .map_err(|e| Error::Usage(format!("{}: {e}", addon.record.identifier)))?;
        Ok(())
    }

    /// Unmounts (lazily if busy, after `grace`).
    pub fn unmount(self, grace: Duration) {
        let mounted = self.mounted.into_inner().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = mounted.unmount(grace) {
            tracing::warn!(error = %e, "unmount failed");
        }
    }
}

/// The manifest's bytes for the enabled add-ons (deprecated ones flagged, with their reason).
fn manifest_bytes(enabled: &[&Addon]) -> Vec<u8> {
    let manifest = Manifest {
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
