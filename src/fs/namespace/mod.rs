//! The tree a mount serves: one or more indexed archives ("volumes") arranged in one of three
//! layouts, with inode numbers derived from the indexes so they are the same on every mount.
//!
//! * [`Layout::Single`]: one archive; its root is the mount's root.
//! * [`Layout::Directories`]: the root is a synthesized directory holding one named directory
//!   per volume (and, for the node daemon, synthesized read-only files such as
//!   `/.addons.json`). Entries can be added, hidden and shown while mounted: a hidden entry is
//!   left out of listings but still answers lookups, so running workloads keep their paths.
//! * [`Layout::Merged`]: one overlay tree; a later volume wins on conflicts and directories that
//!   exist in several volumes merge. A hard-linked file some of whose names a later volume
//!   hides counts only the names still seen (as extracting the archives in order would leave).
//!
//! # Inode numbers
//!
//! A FUSE inode number is `(slot << 40) | index_inode`, where `slot` is the volume's slot
//! (chosen by the caller: the archive's position on the command line, or the add-on's record)
//! and `index_inode` the inode number in that volume's index (dense and deterministic, see
//! [`crate::index`]). Slot 0 is reserved for synthesized nodes; the mount's root is always 1.
//! A merged directory takes the number of its topmost layer. Nothing depends on the order in
//! which the kernel looks things up.
//!
//! # Files
//!
//! `inode` (numbers and their mapping to nodes), `volume` (one archive), `root` (the
//! synthesized root of [`Layout::Directories`]), `merge` (the overlay of [`Layout::Merged`]),
//! `stream_order` (listings in archive-stream order); this file holds the tree itself: its
//! constructors, lookups, listings and attributes.

mod inode;
mod merge;
mod root;
mod stream_order;
mod volume;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use crate::archive::EntryKind;
use crate::index::{Attr, Ino, ROOT_INO};

pub use inode::{compose, split, Slot, FUSE_ROOT, LOCAL_BITS, LOCAL_MASK, MAX_SLOT};
pub use merge::{MergedDir, MergedEntry};
pub use root::{valid_name, RootEntry, RootTarget, SynthFile};
pub(crate) use stream_order::stream_position;
pub use volume::Volume;

use merge::hidden_link_counts;
use root::RootDir;
use stream_order::ListingOrders;

/// How the volumes are arranged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One volume at the root.
    Single,
    /// One directory per volume under a synthesized root.
    Directories,
    /// One overlay tree: later volumes win, directories merge.
    Merged,
}

/// Why the namespace refused a change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NamespaceError {
    /// The slot is 0 (reserved), too large, or already used.
    #[error("volume {name:?}: slot {slot} is reserved, out of range (1..={MAX_SLOT}) or taken")]
    BadSlot {
        /// The volume's name.
        name: String,
        /// The slot asked for.
        slot: Slot,
    },
    /// A root entry of that name exists already.
    #[error("the root already has an entry named {0:?}")]
    NameTaken(String),
    /// The name cannot be a directory entry (empty, `.`, `..`, or contains `/` or NUL).
    #[error("{0:?} cannot be the name of a root entry")]
    BadName(String),
    /// A synthesized file's inode number is outside `2..2^40` or already used.
    #[error("synthesized file {name:?}: inode {ino} is out of range (2..2^40) or taken")]
    BadIno {
        /// The file's name.
        name: String,
        /// The inode asked for.
        ino: u64,
    },
    /// The operation needs another layout (root entries exist only with
    /// [`Layout::Directories`]; [`Layout::Single`] holds exactly one volume).
    #[error("not possible with the {0:?} layout")]
    Layout(Layout),
    /// No root entry of that name.
    #[error("the root has no entry named {0:?}")]
    NoSuchEntry(String),
}

/// A node of the served tree, resolved from a FUSE inode number.
#[derive(Clone)]
pub enum Node {
    /// The synthesized root of [`Layout::Directories`].
    Root,
    /// A synthesized file.
    File(Arc<SynthFile>),
    /// An inode of a volume.
    Entry(Arc<Volume>, Ino),
    /// A merged directory ([`Layout::Merged`]).
    Merged(Arc<MergedDir>),
}

/// What a directory lists, one entry at a time (see [`Namespace::list`]).
pub struct Listed {
    /// The entry's name.
    pub name: Box<[u8]>,
    /// Its FUSE inode number.
    pub ino: u64,
    /// Its kind.
    pub kind: EntryKind,
}

/// The served tree. Shared (`Arc`) between the FUSE handler and whoever changes the root.
pub struct Namespace {
    layout: Layout,
    /// Owner of synthesized nodes (and, when mapped, of everything).
    owner: (u32, u32),
    /// Volumes by slot.
    volumes: RwLock<HashMap<Slot, Arc<Volume>>>,
    /// The root entries ([`Layout::Directories`]).
    root: RwLock<RootDir>,
    /// Merged directories by FUSE inode number ([`Layout::Merged`]), registered when first
    /// looked up or listed.
    merged: RwLock<HashMap<u64, Arc<MergedDir>>>,
    /// The FUSE inode number of every layer of a merged directory → the merged directory's.
    merged_layers: RwLock<HashMap<u64, u64>>,
    /// Synthesized files by inode number.
    files: RwLock<HashMap<u64, Arc<SynthFile>>>,
    /// Link counts of hard-linked files some of whose names a later volume hides
    /// ([`Layout::Merged`]), by FUSE inode number: the names still seen.
    merged_nlink: RwLock<HashMap<u64, u32>>,
    /// Listing orders of large directories, by FUSE inode number.
    orders: ListingOrders,
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn shown(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

impl Namespace {
    /// An empty namespace. `owner` (uid, gid) owns the synthesized root and files.
    pub fn new(layout: Layout, owner: (u32, u32)) -> Namespace {
        Namespace {
            layout,
            owner,
            volumes: RwLock::new(HashMap::new()),
            root: RwLock::new(RootDir::default()),
            merged: RwLock::new(HashMap::new()),
            merged_layers: RwLock::new(HashMap::new()),
            files: RwLock::new(HashMap::new()),
            merged_nlink: RwLock::new(HashMap::new()),
            orders: ListingOrders::new(),
        }
    }

    /// A namespace serving one archive at the root.
    pub fn single(volume: Volume, owner: (u32, u32)) -> Result<Namespace, NamespaceError> {
        let ns = Namespace::new(Layout::Single, owner);
        ns.insert_volume(volume)?;
        Ok(ns)
    }

    /// A namespace with one root directory per volume, named as given (names must be unique).
    pub fn directories(
        volumes: Vec<(Vec<u8>, Volume)>,
        owner: (u32, u32),
    ) -> Result<Namespace, NamespaceError> {
        let ns = Namespace::new(Layout::Directories, owner);
        for (name, volume) in volumes {
            ns.add_volume(&name, volume, true)?;
        }
        Ok(ns)
    }

    /// A namespace merging `volumes` into one tree; later volumes win.
    pub fn merged(volumes: Vec<Volume>, owner: (u32, u32)) -> Result<Namespace, NamespaceError> {
        let ns = Namespace::new(Layout::Merged, owner);
        let mut layers = Vec::with_capacity(volumes.len());
        for volume in volumes {
            layers.push((ns.insert_volume(volume)?, ROOT_INO));
        }
        let bottom_first: Vec<&Volume> = layers.iter().map(|(v, _)| v.as_ref()).collect();
        *write(&ns.merged_nlink) = hidden_link_counts(&bottom_first);
        layers.reverse();
        ns.register(FUSE_ROOT, FUSE_ROOT, layers);
        Ok(ns)
    }

    /// The layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The owner (uid, gid) of synthesized nodes.
    pub fn owner(&self) -> (u32, u32) {
        self.owner
    }

    /// Every volume, by slot.
    pub fn volumes(&self) -> Vec<Arc<Volume>> {
        let mut all: Vec<Arc<Volume>> = read(&self.volumes).values().cloned().collect();
        all.sort_by_key(|v| v.slot());
        all
    }

    fn insert_volume(&self, volume: Volume) -> Result<Arc<Volume>, NamespaceError> {
        let mut volumes = write(&self.volumes);
        let slot = volume.slot();
        if slot == 0
            || slot > MAX_SLOT
            || volumes.contains_key(&slot)
            || (self.layout == Layout::Single && !volumes.is_empty())
        {
            let name = volume.reader().path().display().to_string();
            return Err(if self.layout == Layout::Single && !volumes.is_empty() {
                NamespaceError::Layout(self.layout)
            } else {
                NamespaceError::BadSlot { name, slot }
            });
        }
        let volume = Arc::new(volume);
        volumes.insert(slot, Arc::clone(&volume));
        Ok(volume)
    }

    /// Looks `name` up in directory `dir`. `Ok(None)`: no such entry; `Err(())`: `dir` is not
    /// a directory.
    #[allow(clippy::result_unit_err)]
    pub fn lookup(&self, dir: &Node, name: &[u8]) -> Result<Option<Node>, ()> {
        match dir {
            Node::File(_) => Err(()),
            Node::Root => Ok(self.root_child(name)),
            Node::Entry(volume, ino) => {
                let index = volume.index();
                match index.attr(*ino) {
                    Some(attr) if attr.kind == EntryKind::Dir => {}
                    _ => return Err(()),
                }
                Ok(index.lookup(*ino, name).map(|child| Node::Entry(Arc::clone(volume), child)))
            }
            Node::Merged(merged) => Ok(self.merged_child(merged, name)),
        }
    }

    /// The entries of directory `dir` (without `.` and `..`), sorted by name, from position
    /// `skip`; `f` is called for each until it returns `false`. Returns `Err(())` if `dir` is
    /// not a directory.
    #[allow(clippy::result_unit_err)]
    pub fn list(&self, dir: &Node, skip: usize, f: impl FnMut(Listed) -> bool) -> Result<(), ()> {
        match dir {
            Node::File(_) => Err(()),
            Node::Root => {
                self.list_root(skip, f);
                Ok(())
            }
            Node::Entry(volume, ino) => self.list_volume_dir(volume, *ino, skip, f),
            Node::Merged(merged) => {
                self.list_merged(merged, skip, f);
                Ok(())
            }
        }
    }

    /// [`Namespace::list`] of a directory of one volume, in archive-stream order (see
    /// `stream_order`).
    fn list_volume_dir(
        &self,
        volume: &Volume,
        dir: Ino,
        skip: usize,
        mut f: impl FnMut(Listed) -> bool,
    ) -> Result<(), ()> {
        let index = volume.index();
        match index.attr(dir) {
            Some(attr) if attr.kind == EntryKind::Dir => {}
            _ => return Err(()),
        }
        let order = self.orders.of(volume, dir);
        for &position in order.iter().skip(skip) {
            let Some((name, child)) = index.children(dir, position as usize).next() else {
                continue;
            };
            let Some(attr) = index.attr(child) else { continue };
            let listed =
                Listed { name: name.into(), ino: self.fuse_ino(volume, child), kind: attr.kind };
            if !f(listed) {
                break;
            }
        }
        Ok(())
    }

    /// The attributes of `node` as the index (or the synthesizer) has them; `ino` is the FUSE
    /// inode number and `nlink` is adjusted for merged and synthesized directories.
    pub fn attr(&self, node: &Node) -> Option<Attr> {
        let (uid, gid) = self.owner;
        let synth = |kind, mode, size, nlink, time: SystemTime| {
            let (mtime, mtime_nsec) = match time.duration_since(SystemTime::UNIX_EPOCH) {
                Ok(d) => (i64::try_from(d.as_secs()).unwrap_or(i64::MAX), d.subsec_nanos()),
                Err(_) => (0, 0),
            };
            Attr { ino: 0, kind, mode, uid, gid, mtime, mtime_nsec, size, nlink, rdev: (0, 0) }
        };
        let mut attr = match node {
            Node::Root => {
                let (mtime, dirs) = self.root_state();
                synth(EntryKind::Dir, 0o755, 0, dirs.saturating_add(2), mtime)
            }
            Node::File(file) => {
                synth(EntryKind::File, 0o444, file.bytes.len() as u64, 1, file.mtime)
            }
            Node::Entry(volume, ino) => {
                let mut attr = volume.index().attr(*ino)?;
                if attr.nlink > 1 && self.layout == Layout::Merged {
                    if let Some(&seen) = read(&self.merged_nlink).get(&compose(volume.slot(), *ino))
                    {
                        attr.nlink = seen;
                    }
                }
                attr
            }
            Node::Merged(dir) => {
                let (volume, top) = &dir.layers[0];
                let mut attr = volume.index().attr(*top)?;
                attr.nlink = dir.subdirs.saturating_add(2);
                attr
            }
        };
        attr.ino = self.ino_of(node);
        Some(attr)
    }

    /// Total uncompressed bytes and inodes of every volume (for `statfs`).
    pub fn totals(&self) -> (u64, u64) {
        let volumes = read(&self.volumes);
        let mut bytes = 0u64;
        let mut inodes = 1 + read(&self.files).len() as u64;
        for volume in volumes.values() {
            let stats = volume.index().stats();
            bytes = bytes.saturating_add(stats.uncompressed_size);
            inodes = inodes.saturating_add(stats.inodes);
        }
        (bytes, inodes)
    }
}

/// Converts a raw name to an `OsStr`.
pub fn os(name: &[u8]) -> &OsStr {
    OsStr::from_bytes(name)
}
