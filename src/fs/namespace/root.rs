//! The synthesized root of [`Layout::Directories`]: one named entry per volume plus the
//! daemon's synthesized files, each listed or hidden. Entries change while mounted; a hidden
//! entry still answers lookups, so running workloads keep their paths.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::archive::EntryKind;
use crate::index::ROOT_INO;

use super::{
    compose, read, shown, write, Layout, Listed, Namespace, NamespaceError, Node, Volume,
    LOCAL_MASK,
};

/// A read-only file synthesized by the daemon (such as `/.addons.json`).
pub struct SynthFile {
    /// FUSE inode number (slot 0).
    pub ino: u64,
    /// The content.
    pub bytes: Arc<[u8]>,
    /// Modification time (when the content was last set).
    pub mtime: SystemTime,
}

/// What a root entry of the [`Layout::Directories`] layout points to.
#[derive(Clone)]
pub enum RootTarget {
    /// The root directory of a volume.
    Volume(Arc<Volume>),
    /// A synthesized file.
    File(Arc<SynthFile>),
}

/// One entry of the synthesized root.
#[derive(Clone)]
pub struct RootEntry {
    /// What it points to.
    pub target: RootTarget,
    /// Whether listings show it (a hidden entry still answers lookups).
    pub visible: bool,
}

/// The synthesized root's state.
pub(super) struct RootDir {
    entries: BTreeMap<Box<[u8]>, RootEntry>,
    mtime: SystemTime,
}

impl Default for RootDir {
    fn default() -> RootDir {
        RootDir { entries: BTreeMap::new(), mtime: SystemTime::now() }
    }
}

/// True if `name` can be one directory entry's name.
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

impl Namespace {
    /// Adds a volume as the root directory `name` ([`Layout::Directories`] only), listed or
    /// hidden. Callers then invalidate the kernel's entry for `name` in the root.
    pub fn add_volume(
        &self,
        name: &[u8],
        volume: Volume,
        visible: bool,
    ) -> Result<Arc<Volume>, NamespaceError> {
        if self.layout != Layout::Directories {
            return Err(NamespaceError::Layout(self.layout));
        }
        if !valid_name(name) {
            return Err(NamespaceError::BadName(shown(name)));
        }
        let mut root = write(&self.root);
        if root.entries.contains_key(name) {
            return Err(NamespaceError::NameTaken(shown(name)));
        }
        let volume = self.insert_volume(volume)?;
        root.entries.insert(
            name.into(),
            RootEntry { target: RootTarget::Volume(Arc::clone(&volume)), visible },
        );
        root.mtime = SystemTime::now();
        Ok(volume)
    }

    /// Creates or replaces the synthesized read-only file `name` in the root
    /// ([`Layout::Directories`] only), with inode number `ino` (slot 0: `2..2^40`; keep it
    /// fixed so it is stable across restarts). Callers then invalidate the kernel's cache of
    /// the file (`inval_inode`) and of the root entry.
    pub fn set_file(
        &self,
        name: &[u8],
        ino: u64,
        bytes: Vec<u8>,
        visible: bool,
    ) -> Result<(), NamespaceError> {
        if self.layout != Layout::Directories {
            return Err(NamespaceError::Layout(self.layout));
        }
        if !valid_name(name) {
            return Err(NamespaceError::BadName(shown(name)));
        }
        if !(2..=LOCAL_MASK).contains(&ino) {
            return Err(NamespaceError::BadIno { name: shown(name), ino });
        }
        let mut root = write(&self.root);
        let mut files = write(&self.files);
        match root.entries.get(name) {
            Some(RootEntry { target: RootTarget::File(old), .. }) if old.ino == ino => {}
            Some(_) => return Err(NamespaceError::NameTaken(shown(name))),
            None if files.contains_key(&ino) => {
                return Err(NamespaceError::BadIno { name: shown(name), ino })
            }
            None => {}
        }
        let now = SystemTime::now();
        let file = Arc::new(SynthFile { ino, bytes: bytes.into(), mtime: now });
        files.insert(ino, Arc::clone(&file));
        root.entries.insert(name.into(), RootEntry { target: RootTarget::File(file), visible });
        root.mtime = now;
        Ok(())
    }

    /// Shows or hides the root entry `name` in listings; a hidden entry still answers lookups.
    /// Returns whether the visibility changed. Callers then invalidate the kernel's cached
    /// listing of the root (`inval_inode(FUSE_ROOT)`).
    pub fn set_visible(&self, name: &[u8], visible: bool) -> Result<bool, NamespaceError> {
        let mut root = write(&self.root);
        let entry =
            root.entries.get_mut(name).ok_or_else(|| NamespaceError::NoSuchEntry(shown(name)))?;
        let changed = entry.visible != visible;
        entry.visible = visible;
        if changed {
            root.mtime = SystemTime::now();
        }
        Ok(changed)
    }

    /// The root entries, sorted by name (hidden ones included).
    pub fn root_entries(&self) -> Vec<(Box<[u8]>, RootEntry)> {
        read(&self.root).entries.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// The synthesized root's modification time and its number of listed subdirectories.
    pub fn root_state(&self) -> (SystemTime, u32) {
        let root = read(&self.root);
        let dirs = root
            .entries
            .values()
            .filter(|e| e.visible && matches!(e.target, RootTarget::Volume(_)))
            .count();
        (root.mtime, u32::try_from(dirs).unwrap_or(u32::MAX))
    }

    /// The root entry `name` (listed or hidden: a hidden entry still answers lookups).
    pub(super) fn root_child(&self, name: &[u8]) -> Option<Node> {
        read(&self.root).entries.get(name).map(|entry| match &entry.target {
            RootTarget::Volume(volume) => Node::Entry(Arc::clone(volume), ROOT_INO),
            RootTarget::File(file) => Node::File(Arc::clone(file)),
        })
    }

    /// [`Namespace::list`] of the synthesized root: its listed entries, by name.
    pub(super) fn list_root(&self, skip: usize, mut f: impl FnMut(Listed) -> bool) {
        let root = read(&self.root);
        let visible = root.entries.iter().filter(|(_, e)| e.visible).skip(skip);
        for (name, entry) in visible {
            let (ino, kind) = match &entry.target {
                RootTarget::Volume(volume) => (compose(volume.slot(), ROOT_INO), EntryKind::Dir),
                RootTarget::File(file) => (file.ino, EntryKind::File),
            };
            if !f(Listed { name: name.clone(), ino, kind }) {
                break;
            }
        }
    }
}
