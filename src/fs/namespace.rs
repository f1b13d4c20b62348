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

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::num::NonZeroUsize;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use crate::archive::EntryKind;
use lru::LruCache;

use crate::index::{Attr, Data, Index, Ino, ROOT_INO};
use crate::reader::ArchiveReader;

/// A volume's slot: the high bits of its inode numbers. `0` is reserved for synthesized nodes.
pub type Slot = u32;

/// How many low bits of a FUSE inode number hold the index's inode number.
pub const LOCAL_BITS: u32 = 40;
/// Mask of the index's inode number within a FUSE inode number.
pub const LOCAL_MASK: u64 = (1 << LOCAL_BITS) - 1;
/// The largest usable slot.
pub const MAX_SLOT: Slot = (1 << (64 - LOCAL_BITS)) - 1;
/// The FUSE inode number of the mount's root.
pub const FUSE_ROOT: u64 = 1;

/// The FUSE inode number of inode `ino` of the volume in `slot` (without the root mapping of
/// [`Namespace::fuse_ino`]).
pub fn compose(slot: Slot, ino: Ino) -> u64 {
    (u64::from(slot) << LOCAL_BITS) | (ino & LOCAL_MASK)
}

/// Splits a FUSE inode number into (slot, index inode number).
pub fn split(fuse_ino: u64) -> (Slot, Ino) {
    ((fuse_ino >> LOCAL_BITS) as Slot, fuse_ino & LOCAL_MASK)
}

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

/// One indexed archive served by the mount.
pub struct Volume {
    slot: Slot,
    reader: Arc<ArchiveReader>,
    progress: super::prefetch::Progress,
    walk: super::push::Walk,
}

impl Volume {
    /// A volume in `slot` (1..=[`MAX_SLOT`]) reading through `reader`.
    pub fn new(slot: Slot, reader: ArchiveReader) -> Volume {
        Volume {
            slot,
            reader: Arc::new(reader),
            progress: super::prefetch::Progress::default(),
            walk: super::push::Walk::default(),
        }
    }

    /// The volume's slot.
    pub fn slot(&self) -> Slot {
        self.slot
    }

    /// The reader of the volume's archive.
    pub fn reader(&self) -> &ArchiveReader {
        &self.reader
    }

    /// The reader, shared (the read-ahead pool holds it weakly).
    pub fn shared_reader(&self) -> &Arc<ArchiveReader> {
        &self.reader
    }

    /// The volume's index.
    pub fn index(&self) -> &Index {
        self.reader.index()
    }

    /// How far reads have gone (for read-ahead).
    pub(crate) fn progress(&self) -> &super::prefetch::Progress {
        &self.progress
    }

    /// Where a tree walker is (for pushing files ahead of it).
    pub(crate) fn walk(&self) -> &super::push::Walk {
        &self.walk
    }
}

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

/// A directory that exists in several volumes, seen as one.
pub struct MergedDir {
    /// Its FUSE inode number (the topmost layer's).
    pub ino: u64,
    /// The FUSE inode number of its parent.
    pub parent: u64,
    /// The directories merged, topmost (winning) first.
    pub layers: Vec<(Arc<Volume>, Ino)>,
    /// The merged entries, sorted by name.
    pub entries: Vec<MergedEntry>,
    /// How many entries are directories.
    pub subdirs: u32,
}

/// One entry of a [`MergedDir`]: the topmost layer that has the name wins.
pub struct MergedEntry {
    /// The name.
    pub name: Box<[u8]>,
    /// Index into [`MergedDir::layers`] of the winning layer.
    pub layer: usize,
    /// The winner's inode in its volume.
    pub ino: Ino,
    /// The winner's kind.
    pub kind: EntryKind,
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

/// The synthesized root's state.
struct RootDir {
    entries: BTreeMap<Box<[u8]>, RootEntry>,
    mtime: SystemTime,
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
    orders: Mutex<LruCache<u64, Arc<[u32]>>>,
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

/// True if `name` can be one directory entry's name.
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

impl Namespace {
    /// An empty namespace. `owner` (uid, gid) owns the synthesized root and files.
    pub fn new(layout: Layout, owner: (u32, u32)) -> Namespace {
        Namespace {
            layout,
            owner,
            volumes: RwLock::new(HashMap::new()),
            root: RwLock::new(RootDir { entries: BTreeMap::new(), mtime: SystemTime::now() }),
            merged: RwLock::new(HashMap::new()),
            merged_layers: RwLock::new(HashMap::new()),
            files: RwLock::new(HashMap::new()),
            merged_nlink: RwLock::new(HashMap::new()),
            orders: Mutex::new(LruCache::new(
                NonZeroUsize::new(ORDER_CACHE_DIRS).unwrap_or(NonZeroUsize::MIN),
            )),
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
        all.sort_by_key(|v| v.slot);
        all
    }

    fn insert_volume(&self, volume: Volume) -> Result<Arc<Volume>, NamespaceError> {
        let mut volumes = write(&self.volumes);
        let slot = volume.slot;
        if slot == 0
            || slot > MAX_SLOT
            || volumes.contains_key(&slot)
            || (self.layout == Layout::Single && !volumes.is_empty())
        {
            let name = volume.reader.path().display().to_string();
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

    /// The FUSE inode number of inode `ino` of `volume`: the volume's root is the mount's root
    /// in the single and merged layouts.
    pub fn fuse_ino(&self, volume: &Volume, ino: Ino) -> u64 {
        if ino == ROOT_INO && self.layout != Layout::Directories {
            FUSE_ROOT
        } else {
            compose(volume.slot, ino)
        }
    }

    /// The node behind a FUSE inode number.
    pub fn resolve(&self, fuse_ino: u64) -> Option<Node> {
        if fuse_ino == FUSE_ROOT {
            return match self.layout {
                Layout::Directories => Some(Node::Root),
                Layout::Single => {
                    let volume = read(&self.volumes).values().next().cloned()?;
                    Some(Node::Entry(volume, ROOT_INO))
                }
                Layout::Merged => read(&self.merged).get(&FUSE_ROOT).cloned().map(Node::Merged),
            };
        }
        let (slot, ino) = split(fuse_ino);
        if slot == 0 {
            return read(&self.files).get(&ino).cloned().map(Node::File);
        }
        if self.layout == Layout::Merged {
            if let Some(dir) = read(&self.merged).get(&fuse_ino) {
                return Some(Node::Merged(Arc::clone(dir)));
            }
        }
        let volume = read(&self.volumes).get(&slot).cloned()?;
        volume.index().attr(ino)?;
        Some(Node::Entry(volume, ino))
    }

    /// The FUSE inode number of `node`.
    pub fn ino_of(&self, node: &Node) -> u64 {
        match node {
            Node::Root => FUSE_ROOT,
            Node::File(file) => file.ino,
            Node::Entry(volume, ino) => self.fuse_ino(volume, *ino),
            Node::Merged(dir) => dir.ino,
        }
    }

    /// The kind of `node`, or `None` if its volume lost it (never, for a valid index).
    pub fn kind_of(&self, node: &Node) -> Option<EntryKind> {
        match node {
            Node::Root | Node::Merged(_) => Some(EntryKind::Dir),
            Node::File(_) => Some(EntryKind::File),
            Node::Entry(volume, ino) => volume.index().attr(*ino).map(|a| a.kind),
        }
    }

    /// The FUSE inode number of the parent directory of directory `node` (for `..`).
    pub fn parent_of(&self, node: &Node) -> u64 {
        match node {
            Node::Root | Node::File(_) => FUSE_ROOT,
            Node::Merged(dir) => dir.parent,
            Node::Entry(volume, ino) => {
                if *ino == ROOT_INO {
                    return FUSE_ROOT;
                }
                let parent = volume.index().parent(*ino).unwrap_or(ROOT_INO);
                let fuse = self.fuse_ino(volume, parent);
                if self.layout == Layout::Merged {
                    if let Some(merged) = read(&self.merged_layers).get(&fuse) {
                        return *merged;
                    }
                }
                fuse
            }
        }
    }

    /// Looks `name` up in directory `dir`. `Ok(None)`: no such entry; `Err(())`: `dir` is not
    /// a directory.
    #[allow(clippy::result_unit_err)]
    pub fn lookup(&self, dir: &Node, name: &[u8]) -> Result<Option<Node>, ()> {
        match dir {
            Node::File(_) => Err(()),
            Node::Root => Ok(read(&self.root).entries.get(name).map(|entry| match &entry.target {
                RootTarget::Volume(volume) => Node::Entry(Arc::clone(volume), ROOT_INO),
                RootTarget::File(file) => Node::File(Arc::clone(file)),
            })),
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

    /// The child `name` of a merged directory: the topmost layer's entry wins; if it is a
    /// directory, it merges with the same-named directories of the layers below, down to the
    /// first layer where the name is not a directory (which hides everything beneath it).
    fn merged_child(&self, dir: &MergedDir, name: &[u8]) -> Option<Node> {
        let mut layers: Vec<(Arc<Volume>, Ino)> = Vec::new();
        for (volume, parent) in &dir.layers {
            let index = volume.index();
            let Some(child) = index.lookup(*parent, name) else { continue };
            let is_dir = index.attr(child).is_some_and(|a| a.kind == EntryKind::Dir);
            if layers.is_empty() && !is_dir {
                return Some(Node::Entry(Arc::clone(volume), child));
            }
            if !is_dir {
                break;
            }
            layers.push((Arc::clone(volume), child));
        }
        match layers.len() {
            0 => None,
            1 => layers.pop().map(|(volume, ino)| Node::Entry(volume, ino)),
            _ => {
                let ino = self.fuse_ino(&layers[0].0, layers[0].1);
                if let Some(existing) = read(&self.merged).get(&ino) {
                    return Some(Node::Merged(Arc::clone(existing)));
                }
                Some(Node::Merged(self.register(ino, dir.ino, layers)))
            }
        }
    }

    /// Builds and records the merged directory `ino` (child of `parent`) over `layers`
    /// (topmost first). Idempotent: a concurrent registration of the same directory wins.
    fn register(&self, ino: u64, parent: u64, layers: Vec<(Arc<Volume>, Ino)>) -> Arc<MergedDir> {
        let mut names: BTreeMap<&[u8], (usize, Ino, EntryKind)> = BTreeMap::new();
        for (layer, (volume, dir)) in layers.iter().enumerate() {
            let index = volume.index();
            for (name, child) in index.children(*dir, 0) {
                if names.contains_key(name) {
                    continue;
                }
                let Some(attr) = index.attr(child) else { continue };
                names.insert(name, (layer, child, attr.kind));
            }
        }
        let entries: Vec<MergedEntry> = names
            .into_iter()
            .map(|(name, (layer, ino, kind))| MergedEntry { name: name.into(), layer, ino, kind })
            .collect();
        let subdirs = entries.iter().filter(|e| e.kind == EntryKind::Dir).count();
        let layer_inos: Vec<u64> = layers.iter().map(|(v, i)| self.fuse_ino(v, *i)).collect();
        let built = Arc::new(MergedDir {
            ino,
            parent,
            layers,
            entries,
            subdirs: u32::try_from(subdirs).unwrap_or(u32::MAX),
        });
        let mut merged = write(&self.merged);
        if let Some(existing) = merged.get(&ino) {
            return Arc::clone(existing);
        }
        merged.insert(ino, Arc::clone(&built));
        drop(merged);
        let mut by_layer = write(&self.merged_layers);
        for layer_ino in layer_inos {
            by_layer.insert(layer_ino, ino);
        }
        built
    }

    /// The entries of directory `dir` (without `.` and `..`), sorted by name, from position
    /// `skip`; `f` is called for each until it returns `false`. Returns `Err(())` if `dir` is
    /// not a directory.
    #[allow(clippy::result_unit_err)]
    pub fn list(
        &self,
        dir: &Node,
        skip: usize,
        mut f: impl FnMut(Listed) -> bool,
    ) -> Result<(), ()> {
        match dir {
            Node::File(_) => Err(()),
            Node::Root => {
                let root = read(&self.root);
                let visible = root.entries.iter().filter(|(_, e)| e.visible).skip(skip);
                for (name, entry) in visible {
                    let (ino, kind) = match &entry.target {
                        RootTarget::Volume(volume) => {
                            (compose(volume.slot, ROOT_INO), EntryKind::Dir)
                        }
                        RootTarget::File(file) => (file.ino, EntryKind::File),
                    };
                    if !f(Listed { name: name.clone(), ino, kind }) {
                        break;
                    }
                }
                Ok(())
            }
            Node::Entry(volume, ino) => {
                let index = volume.index();
                match index.attr(*ino) {
                    Some(attr) if attr.kind == EntryKind::Dir => {}
                    _ => return Err(()),
                }
                let order = self.listing_order(volume, *ino);
                for &position in order.iter().skip(skip) {
                    let Some((name, child)) = index.children(*ino, position as usize).next() else {
                        continue;
                    };
                    let Some(attr) = index.attr(child) else { continue };
                    let listed = Listed {
                        name: name.into(),
                        ino: self.fuse_ino(volume, child),
                        kind: attr.kind,
                    };
                    if !f(listed) {
                        break;
                    }
                }
                Ok(())
            }
            Node::Merged(merged) => {
                for entry in merged.entries.iter().skip(skip) {
                    let volume = &merged.layers[entry.layer].0;
                    let listed = Listed {
                        name: entry.name.clone(),
                        ino: self.fuse_ino(volume, entry.ino),
                        kind: entry.kind,
                    };
                    if !f(listed) {
                        break;
                    }
                }
                Ok(())
            }
        }
    }

    /// The order in which directory `dir` of `volume` lists its entries: positions into its
    /// name-sorted entries, sorted by where each entry's bytes are in the archive stream (a
    /// directory by the first bytes among its first entries; entries without bytes last, in name
    /// order). Tools that walk a tree in listing order (`tar -c`, `cp -r`, `rsync`) then read
    /// the archive front to back, so every gzip span is inflated once instead of being inflated
    /// again for each name-ordered jump. Deterministic, so listing offsets stay valid; cached
    /// for large directories, which the kernel lists in several calls.
    fn listing_order(&self, volume: &Volume, dir: Ino) -> Arc<[u32]> {
        let index = volume.index();
        let count = index.child_count(dir).min(u32::MAX as usize);
        let key = compose(volume.slot, dir);
        let cached = count > ORDER_CACHE_MIN_ENTRIES;
        if cached {
            if let Some(order) = self.orders.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
                return Arc::clone(order);
            }
        }
        let mut keyed: Vec<(u64, u32)> = index
            .children(dir, 0)
            .take(count)
            .enumerate()
            .map(|(position, (_, child))| (stream_key(index, child, 1), position as u32))
            .collect();
        keyed.sort_unstable();
        let order: Arc<[u32]> = keyed.into_iter().map(|(_, position)| position).collect();
        if cached {
            self.orders.lock().unwrap_or_else(|p| p.into_inner()).put(key, Arc::clone(&order));
        }
        order
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
                    if let Some(&seen) = read(&self.merged_nlink).get(&compose(volume.slot, *ino)) {
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

/// The link counts, in a merged tree of `volumes` (bottom first), of the hard-linked files
/// some of whose names a later volume hides (by an entry of the same path, or a non-directory
/// in place of one of its directories): FUSE inode number → the names still seen. Files whose
/// names are all seen keep their archive's count and are not listed. Walks every volume but
/// the topmost once, at mount.
fn hidden_link_counts(volumes: &[&Volume]) -> HashMap<u64, u32> {
    let mut out = HashMap::new();
    for (i, volume) in volumes.iter().enumerate() {
        let later = &volumes[i + 1..];
        if later.is_empty() {
            break;
        }
        let index = volume.index();
        let mut seen: HashMap<Ino, (u32, u32)> = HashMap::new();
        let mut stack: Vec<(Ino, Vec<Box<[u8]>>)> = vec![(ROOT_INO, Vec::new())];
        while let Some((dir, path)) = stack.pop() {
            for (name, child) in index.children(dir, 0) {
                let Some(attr) = index.attr(child) else { continue };
                let mut child_path = path.clone();
                child_path.push(name.into());
                if attr.kind == EntryKind::Dir {
                    stack.push((child, child_path));
                } else if attr.nlink > 1 {
                    let counts = seen.entry(child).or_insert((attr.nlink, 0));
                    if !later.iter().any(|v| hides(v.index(), &child_path)) {
                        counts.1 += 1;
                    }
                }
            }
        }
        for (ino, (nlink, visible)) in seen {
            if visible < nlink {
                out.insert(compose(volume.slot, ino), visible);
            }
        }
    }
    out
}

/// True if `later` hides the path `components` of a volume below it: it has an entry at that
/// path (of any kind: a later volume wins), or a non-directory where one of the path's
/// directories is (which takes the directory's place, and everything under it).
fn hides(later: &Index, components: &[Box<[u8]>]) -> bool {
    let mut dir = ROOT_INO;
    for (i, name) in components.iter().enumerate() {
        let Some(child) = later.lookup(dir, name) else { return false };
        if i + 1 == components.len() {
            return true;
        }
        match later.attr(child) {
            Some(attr) if attr.kind == EntryKind::Dir => dir = child,
            _ => return true,
        }
    }
    false
}

/// Directories with more entries than this keep their listing order cached.
const ORDER_CACHE_MIN_ENTRIES: usize = 64;
/// How many listing orders are cached.
const ORDER_CACHE_DIRS: usize = 256;
/// How many entries of a subdirectory are looked at to place it in its parent's listing.
const ORDER_PROBE: usize = 16;

/// Where directory (or file) `ino` is in the archive stream, as listings order it (`u64::MAX`
/// for entries without bytes).
pub(crate) fn stream_position(index: &Index, ino: Ino) -> u64 {
    stream_key(index, ino, 1)
}

/// Where the bytes of `ino` start in the archive stream: a file's first data byte; a
/// directory's earliest among its first [`ORDER_PROBE`] entries (looking `depth` levels down);
/// `u64::MAX` for what has no bytes.
fn stream_key(index: &Index, ino: Ino, depth: u32) -> u64 {
    match index.attr(ino).map(|a| a.kind) {
        Some(EntryKind::File) => match index.data(ino) {
            Data::Contiguous(offset) => offset,
            Data::Sparse(runs) => runs.first().map_or(u64::MAX, |r| r.stream_offset),
            Data::None => u64::MAX,
        },
        Some(EntryKind::Dir) if depth > 0 => index
            .children(ino, 0)
            .take(ORDER_PROBE)
            .map(|(_, child)| stream_key(index, child, depth - 1))
            .min()
            .unwrap_or(u64::MAX),
        _ => u64::MAX,
    }
}

/// Converts a raw name to an `OsStr`.
pub fn os(name: &[u8]) -> &OsStr {
    OsStr::from_bytes(name)
}
