//! The overlay of [`Layout::Merged`]: a later volume wins on conflicts, directories that exist
//! in several volumes merge (registered when first looked up or listed), and a hard-linked file
//! some of whose names a later volume hides counts only the names still seen.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::archive::EntryKind;
use crate::index::{Index, Ino, ROOT_INO};

use super::{compose, read, write, Listed, Namespace, Node, Volume};

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

impl Namespace {
    /// The child `name` of a merged directory: the topmost layer's entry wins; if it is a
    /// directory, it merges with the same-named directories of the layers below, down to the
    /// first layer where the name is not a directory (which hides everything beneath it).
    pub(super) fn merged_child(&self, dir: &MergedDir, name: &[u8]) -> Option<Node> {
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
    pub(super) fn register(
        &self,
        ino: u64,
        parent: u64,
        layers: Vec<(Arc<Volume>, Ino)>,
    ) -> Arc<MergedDir> {
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

    /// [`Namespace::list`] of a merged directory: its merged entries, by name.
    pub(super) fn list_merged(
        &self,
        merged: &MergedDir,
        skip: usize,
        mut f: impl FnMut(Listed) -> bool,
    ) {
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
    }
}

/// The link counts, in a merged tree of `volumes` (bottom first), of the hard-linked files
/// some of whose names a later volume hides (by an entry of the same path, or a non-directory
/// in place of one of its directories): FUSE inode number → the names still seen. Files whose
/// names are all seen keep their archive's count and are not listed. Walks every volume but
/// the topmost once, at mount.
pub(super) fn hidden_link_counts(volumes: &[&Volume]) -> HashMap<u64, u32> {
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
                out.insert(compose(volume.slot(), ino), visible);
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
