//! FUSE inode numbers: `(slot << 40) | index_inode`, so a node has the same number on every
//! mount and nothing depends on the order in which the kernel looks things up; and the mapping
//! between numbers and [`Node`]s.

use std::sync::Arc;

use crate::archive::EntryKind;
use crate::index::{Ino, ROOT_INO};

use super::{read, Layout, Namespace, Node, Volume};

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

impl Namespace {
    /// The FUSE inode number of inode `ino` of `volume`: the volume's root is the mount's root
    /// in the single and merged layouts.
    pub fn fuse_ino(&self, volume: &Volume, ino: Ino) -> u64 {
        if ino == ROOT_INO && self.layout != Layout::Directories {
            FUSE_ROOT
        } else {
            compose(volume.slot(), ino)
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
}
