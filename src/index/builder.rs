//! Builds the tree (inodes + directory entries) from scanned entries, in stream order, with
//! extraction semantics: the last duplicate wins, hard links name the inode their target had
//! when they were seen, and missing parents become implicit directories.
//!
//! The rules, entry by entry (`tar -x` is the reference; where it would fail, the rule says what
//! the index shows instead):
//!
//! * Missing parents become implicit directories (mode `0o755`, uid/gid 0, the default mtime).
//!   A parent that exists but is not a directory is replaced by an implicit directory (warning).
//! * The entry `""` (the archive's `./`) sets the root's attributes; any other kind there is
//!   dropped (warning).
//! * A directory over a directory updates its attributes and keeps its children. Anything else
//!   over an existing name makes the name point to the new inode; a non-empty directory
//!   replaced that way loses its whole subtree (warning).
//! * A hard link names the inode its target path has at that moment (a later duplicate of the
//!   target does not change what the link shows). A link to a missing path or to a directory
//!   is dropped (warning), and its parents are not created.
//! * Inode numbers are assigned at [`IndexBuilder::finish`] by a breadth-first walk of the
//!   final tree in bytewise name order (root = 1): the same tree always gets the same numbers,
//!   and inodes no name reaches any more are not stored.

use std::collections::HashMap;
use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

use sha2::{Digest, Sha256};

use super::format::{
    self, AttrRec, ChunkRec, DirentRec, Header, InodeRec, PointRec, Section, SectionEntry,
    SparseRec, XattrRec, DATA_CONTIGUOUS, DATA_NONE, DATA_SPARSE, MAX_WINDOW,
};
use super::{ArchiveIdentity, Index, IndexError};
use crate::archive::{Compression, DataLayout, EntryKind, ScannedEntry, SparseSegment};
use crate::gzip::AccessPoint;

/// The zlib level windows are compressed with (see `docs/index-format.md` for the
/// measurements behind the choice).
pub const WINDOW_ZLIB_LEVEL: u32 = 6;

/// At most this many warnings are kept with the index; the rest are counted in one last line.
pub const MAX_KEPT_WARNINGS: usize = 1000;

/// A kept warning is cut to this many bytes.
pub const MAX_WARNING_LEN: usize = 8192;

type NodeId = usize;

const ROOT: NodeId = 0;

/// No link (the end of a directory's list of children).
const NO_LINK: u32 = u32::MAX;

/// Mode of implicit directories.
const IMPLICIT_DIR_MODE: u32 = 0o755;

/// One inode while building. Kept small (an archive may have millions): what few entries
/// have (a symlink target, device numbers, a sparse map, xattrs) is boxed in [`Extra`], and a
/// directory's names live in the builder's [`Link`] list, not in a map of its own.
#[derive(Debug)]
struct Node {
    /// Never [`EntryKind::Hardlink`].
    kind: EntryKind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime_nsec: u32,
    mtime: i64,
    size: u64,
    /// Contiguous data: its offset in the tar stream (a sparse map is in `extra`).
    data_offset: Option<u64>,
    extra: Option<Box<Extra>>,
    /// Directories only: the newest of its links (each link points to the one before).
    first_link: u32,
    /// Directories only: how many names it holds.
    children: u32,
}

/// The parts of a node that few entries have.
#[derive(Debug, Default)]
struct Extra {
    rdev: (u32, u32),
    sparse: Option<Vec<SparseSegment>>,
    symlink: Vec<u8>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// One name in a directory: `names[name_off..name_off + name_len]` in `dir` is `node`.
#[derive(Debug, Clone, Copy)]
struct Link {
    name_off: u64,
    name_len: u32,
    dir: u32,
    node: u32,
    /// The previous link of the same directory, or [`NO_LINK`].
    next: u32,
}

impl Node {
    fn implicit_dir(mtime: i64) -> Node {
        Node {
            kind: EntryKind::Dir,
            mode: IMPLICIT_DIR_MODE,
            uid: 0,
            gid: 0,
            mtime_nsec: 0,
            mtime,
            size: 0,
            data_offset: None,
            extra: None,
            first_link: NO_LINK,
            children: 0,
        }
    }

    fn is_dir(&self) -> bool {
        self.kind == EntryKind::Dir
    }

    fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    fn xattrs(&self) -> &[(Vec<u8>, Vec<u8>)] {
        self.extra.as_ref().map_or(&[], |e| &e.xattrs)
    }
}

/// An access point as kept by the builder (its window already compressed into the blob).
#[derive(Debug, Clone, Copy)]
struct Point {
    rec: PointRec,
    /// SHA-256 of the compressed window (zeros without one).
    window_sha256: [u8; 32],
}

/// Accumulates entries and access points, then serializes them into an [`Index`].
pub struct IndexBuilder {
    default_mtime: i64,
    nodes: Vec<Node>,
    /// Every name of every directory.
    links: Vec<Link>,
    /// The bytes of the names of `links`, one after the other.
    names: Vec<u8>,
    /// `links` by (directory, name), for lookups.
    lookup: HashTable<u32>,
    hasher: DefaultHashBuilder,
    points: Vec<Point>,
    windows: Vec<u8>,
    /// The archive file's chunks with their checksums (none if the caller has not hashed the
    /// archive: then the index cannot check bytes fetched by range).
    chunks: Vec<ChunkRec>,
    /// The first problem with the access points, reported by `finish`.
    point_error: Option<String>,
    warnings: Vec<String>,
    warnings_not_kept: u64,
}

impl std::fmt::Debug for IndexBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexBuilder")
            .field("nodes", &self.nodes.len())
            .field("links", &self.links.len())
            .field("points", &self.points.len())
            .field("windows", &self.windows.len())
            .field("warnings", &self.warnings.len())
            .finish()
    }
}

fn kind_name(kind: EntryKind) -> &'static str {
    kind.name()
}

/// The components of a normalized path (empty components are skipped, defensively).
fn components(path: &[u8]) -> Vec<&[u8]> {
    path.split(|&b| b == b'/').filter(|c| !c.is_empty()).collect()
}

impl IndexBuilder {
    /// Starts an empty tree. `default_mtime` is used for implicit directories (and the root, if
    /// the archive has no `./` entry).
    pub fn new(default_mtime: i64) -> Self {
        IndexBuilder {
            default_mtime,
            nodes: vec![Node::implicit_dir(default_mtime)],
            links: Vec::new(),
            names: Vec::new(),
            lookup: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            points: Vec::new(),
            windows: Vec::new(),
            chunks: Vec::new(),
            point_error: None,
            warnings: Vec::new(),
            warnings_not_kept: 0,
        }
    }

    /// Adds one entry (stream order). Returns a warning when the entry is dropped or replaces
    /// something in a way worth reporting (a hard link to a missing target, say). The warning
    /// is also kept with the index: do not pass it to [`IndexBuilder::add_warning`] again.
    pub fn add_entry(&mut self, entry: ScannedEntry) -> Option<String> {
        let mut warnings = Vec::new();
        self.insert(entry, &mut warnings);
        if warnings.is_empty() {
            return None;
        }
        let text = warnings.join("; ");
        self.add_warning(text.clone());
        Some(text)
    }

    fn insert(&mut self, mut entry: ScannedEntry, warnings: &mut Vec<String>) {
        let path = std::mem::take(&mut entry.path);
        let shown = String::from_utf8_lossy(&path).into_owned();
        let at = entry.header_offset;
        let comps = components(&path);
        if comps.iter().any(|c| *c == b"." || *c == b"..") {
            warnings.push(format!(
                "entry '{shown}' at offset {at}: path has a '.' or '..' component: dropped"
            ));
            return;
        }

        // A hard link resolves its target now, before anything changes.
        let link_to = if entry.kind == EntryKind::Hardlink {
            let Some(target) = entry.link_target.as_deref() else {
                warnings.push(format!(
                    "entry '{shown}' at offset {at}: hard link without a target: dropped"
                ));
                return;
            };
            let target_shown = String::from_utf8_lossy(target);
            match self.resolve(target) {
                None => {
                    warnings.push(format!(
                        "entry '{shown}' at offset {at}: hard link to '{target_shown}', which \
                         does not exist: dropped"
                    ));
                    return;
                }
                Some(id) if self.nodes[id].is_dir() => {
                    warnings.push(format!(
                        "entry '{shown}' at offset {at}: hard link to '{target_shown}', which \
                         is a directory: dropped"
                    ));
                    return;
                }
                Some(id) => Some(id),
            }
        } else {
            None
        };

        let Some((name, parents)) = comps.split_last() else {
            // The root itself.
            if entry.kind == EntryKind::Dir {
                let root = &mut self.nodes[ROOT];
                Self::set_dir_attrs(root, entry);
            } else {
                warnings.push(format!(
                    "entry './' at offset {at}: the archive root is a {}, not a directory: \
                     dropped",
                    kind_name(entry.kind)
                ));
            }
            return;
        };

        // Walk (and make) the parents.
        let mut dir = ROOT;
        for (depth, comp) in parents.iter().enumerate() {
            dir = match self.child(dir, comp) {
                Some(id) if self.nodes[id].is_dir() => id,
                existing => {
                    if let Some(id) = existing {
                        let parent_shown =
                            String::from_utf8_lossy(&parents[..=depth].join(&b'/')).into_owned();
                        warnings.push(format!(
                            "entry '{shown}' at offset {at}: parent '{parent_shown}' is a {}, \
                             not a directory: replaced by a directory",
                            kind_name(self.nodes[id].kind)
                        ));
                    }
                    let id = self.push(Node::implicit_dir(self.default_mtime));
                    self.set_child(dir, comp, id);
                    id
                }
            };
        }

        let existing = self.child(dir, name);
        let new_id = match (entry.kind, existing) {
            (EntryKind::Hardlink, _) => match link_to {
                Some(id) => id,
                None => return,
            },
            (EntryKind::Dir, Some(id)) if self.nodes[id].is_dir() => {
                Self::set_dir_attrs(&mut self.nodes[id], entry);
                return;
            }
            _ => match self.node_from_entry(entry, &shown, warnings) {
                Some(node) => self.push(node),
                None => return,
            },
        };
        if let Some(old) = existing {
            if old == new_id {
                return;
            }
            if self.nodes[old].is_dir() && self.nodes[old].children > 0 {
                let dropped = self.subtree_names(old);
                warnings.push(format!(
                    "entry '{shown}' at offset {at}: replaces a directory and the {dropped} \
                     names below it, which are dropped"
                ));
            }
        }
        self.set_child(dir, name, new_id);
    }

    fn hash_link(&self, dir: NodeId, name: &[u8]) -> u64 {
        self.hasher.hash_one((dir as u32, name))
    }

    fn link_name(&self, link: &Link) -> &[u8] {
        // In bounds: `set_child` appended these bytes.
        &self.names[link.name_off as usize..link.name_off as usize + link.name_len as usize]
    }

    /// The link named `name` in directory `dir`, if any.
    fn find_link(&self, dir: NodeId, name: &[u8]) -> Option<u32> {
        let hash = self.hash_link(dir, name);
        self.lookup
            .find(hash, |&i| {
                let link = &self.links[i as usize];
                link.dir as usize == dir && self.link_name(link) == name
            })
            .copied()
    }

    /// The node named `name` in directory `dir`, if any.
    fn child(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        self.find_link(dir, name).map(|i| self.links[i as usize].node as usize)
    }

    /// Makes `name` in directory `dir` name `node` (replacing what it named).
    fn set_child(&mut self, dir: NodeId, name: &[u8], node: NodeId) {
        if let Some(i) = self.find_link(dir, name) {
            self.links[i as usize].node = node as u32;
            return;
        }
        let i = self.links.len() as u32;
        let link = Link {
            name_off: self.names.len() as u64,
            name_len: name.len() as u32,
            dir: dir as u32,
            node: node as u32,
            next: self.nodes[dir].first_link,
        };
        self.names.extend_from_slice(name);
        self.links.push(link);
        self.nodes[dir].first_link = i;
        self.nodes[dir].children += 1;
        let hash = self.hash_link(dir, name);
        let (links, names, hasher) = (&self.links, &self.names, &self.hasher);
        self.lookup.insert_unique(hash, i, |&j| {
            let l = &links[j as usize];
            let n = &names[l.name_off as usize..l.name_off as usize + l.name_len as usize];
            hasher.hash_one((l.dir, n))
        });
    }

    /// The links of directory `dir`, newest first.
    fn links_of(&self, dir: NodeId) -> impl Iterator<Item = &Link> + '_ {
        let mut at = self.nodes[dir].first_link;
        std::iter::from_fn(move || {
            let link = self.links.get(at as usize)?;
            at = link.next;
            Some(link)
        })
    }

    /// The node at `path` now, if every component exists (intermediate ones being directories).
    fn resolve(&self, path: &[u8]) -> Option<NodeId> {
        let mut id = ROOT;
        for comp in components(path) {
            let node = &self.nodes[id];
            if !node.is_dir() {
                return None;
            }
            id = self.child(id, comp)?;
        }
        Some(id)
    }

    fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Number of names in the subtree below directory `id`.
    fn subtree_names(&self, id: NodeId) -> u64 {
        let mut count = 0u64;
        let mut stack = vec![id];
        while let Some(d) = stack.pop() {
            for child in self.links_of(d).map(|l| l.node as usize) {
                count += 1;
                if self.nodes[child].is_dir() {
                    stack.push(child);
                }
            }
        }
        count
    }

    fn set_dir_attrs(node: &mut Node, entry: ScannedEntry) {
        node.mode = entry.mode & 0o7777;
        node.uid = entry.uid;
        node.gid = entry.gid;
        node.mtime = entry.mtime;
        node.mtime_nsec = entry.mtime_nsec;
        if !entry.xattrs.is_empty() || node.extra.is_some() {
            node.extra_mut().xattrs = entry.xattrs;
        }
    }

    /// A new (non-hardlink) node for `entry`, or `None` (with a warning) if it cannot be one.
    fn node_from_entry(
        &self,
        entry: ScannedEntry,
        shown: &str,
        warnings: &mut Vec<String>,
    ) -> Option<Node> {
        let at = entry.header_offset;
        let mut node = Node {
            kind: entry.kind,
            mode: entry.mode & 0o7777,
            uid: entry.uid,
            gid: entry.gid,
            mtime_nsec: entry.mtime_nsec,
            mtime: entry.mtime,
            size: 0,
            data_offset: None,
            extra: None,
            first_link: NO_LINK,
            children: 0,
        };
        if !entry.xattrs.is_empty() {
            node.extra_mut().xattrs = entry.xattrs;
        }
        match entry.kind {
            EntryKind::File => {
                node.size = entry.size;
                match entry.data {
                    DataLayout::None => {}
                    DataLayout::Contiguous { offset } => {
                        if offset.checked_add(entry.size).is_none() {
                            warnings.push(format!(
                                "entry '{shown}' at offset {at}: data offset {offset} + size {} \
                                 overflows: dropped",
                                entry.size
                            ));
                            return None;
                        }
                        node.data_offset = Some(offset);
                    }
                    DataLayout::Sparse(segments) => {
                        if let Err(why) = check_sparse(&segments, entry.size) {
                            warnings.push(format!(
                                "entry '{shown}' at offset {at}: bad sparse map ({why}): dropped"
                            ));
                            return None;
                        }
                        node.extra_mut().sparse = Some(segments);
                    }
                }
            }
            EntryKind::Dir | EntryKind::Fifo => {}
            EntryKind::CharDev | EntryKind::BlockDev => node.extra_mut().rdev = entry.rdev,
            EntryKind::Symlink => {
                let Some(target) = entry.link_target.filter(|t| !t.is_empty()) else {
                    warnings.push(format!(
                        "entry '{shown}' at offset {at}: symbolic link without a target: dropped"
                    ));
                    return None;
                };
                node.size = target.len() as u64;
                node.extra_mut().symlink = target;
            }
            EntryKind::Hardlink => return None, // handled by the caller
        }
        Some(node)
    }

    /// Adds one access point (stream order); its window is compressed right away. Points must
    /// be strictly increasing in uncompressed offset, carry at most 32 KiB of window and at
    /// most 7 bits; the first one that does not makes [`IndexBuilder::finish`] fail with
    /// [`IndexError::Build`].
    pub fn add_point(&mut self, point: AccessPoint) {
        match CompressedPoint::new(&point, &point.window) {
            Ok(compressed) => self.add_compressed_point(compressed),
            Err(e) => {
                if self.point_error.is_none() {
                    self.point_error = Some(format!(
                        "access point {}: compressing the window failed: {e}",
                        self.points.len()
                    ));
                }
            }
        }
    }

    /// Adds one access point whose window was already compressed (so the compression can run
    /// on another thread); same rules as [`IndexBuilder::add_point`].
    pub fn add_compressed_point(&mut self, point: CompressedPoint) {
        let zwindow = &point.zwindow;
        if self.point_error.is_some() {
            return;
        }
        let i = self.points.len();
        if let Some(last) = self.points.last() {
            if point.uncompressed <= last.rec.uncompressed {
                self.point_error = Some(format!(
                    "access point {i} at uncompressed offset {} does not come after the previous \
                     one at {}",
                    point.uncompressed, last.rec.uncompressed
                ));
                return;
            }
        }
        if point.window_len > MAX_WINDOW || point.bits > 7 || zwindow.len() > u32::MAX as usize {
            self.point_error = Some(format!(
                "access point {i} at uncompressed offset {}: window of {} bytes (max {MAX_WINDOW}) \
                 or {} bits (max 7)",
                point.uncompressed, point.window_len, point.bits
            ));
            return;
        }
        let window_off = self.windows.len() as u64;
        self.windows.extend_from_slice(zwindow);
        self.points.push(Point {
            rec: PointRec {
                uncompressed: point.uncompressed,
                compressed: point.compressed,
                window_off,
                // Both fit: checked above.
                window_zlen: zwindow.len() as u32,
                window_len: point.window_len as u16,
                bits: point.bits,
            },
            window_sha256: point.window_sha256,
        });
    }

    /// Records the chunks of the archive file and their checksums (see
    /// [`Index::chunk_for`]): offsets strictly increasing from 0, the last one before the end
    /// of the archive (`finish` checks them against the archive's size).
    pub fn set_chunks(&mut self, chunks: Vec<ChunkRec>) {
        self.chunks = chunks;
    }

    /// Records a warning to keep with the index (at most [`MAX_KEPT_WARNINGS`] are kept, each
    /// cut to [`MAX_WARNING_LEN`] bytes; the rest are counted).
    pub fn add_warning(&mut self, warning: String) {
        if self.warnings.len() >= MAX_KEPT_WARNINGS {
            self.warnings_not_kept += 1;
            return;
        }
        let mut warning = warning;
        if warning.len() > MAX_WARNING_LEN {
            let mut cut = MAX_WARNING_LEN;
            while !warning.is_char_boundary(cut) {
                cut -= 1;
            }
            warning.truncate(cut);
        }
        self.warnings.push(warning);
    }

    /// Finishes the tree and serializes it.
    pub fn finish(
        self,
        identity: ArchiveIdentity,
        compression: Compression,
        span: u64,
        uncompressed_size: u64,
    ) -> Result<Index, IndexError> {
        if let Some(e) = &self.point_error {
            return Err(IndexError::Build(e.clone()));
        }
        let bytes = self.serialize(identity, compression, span, uncompressed_size)?;
        Index::from_bytes(bytes).map_err(|e| match e {
            IndexError::Corrupt(why) => {
                IndexError::Build(format!("the entries do not form a valid index: {why}"))
            }
            other => other,
        })
    }

    fn serialize(
        mut self,
        identity: ArchiveIdentity,
        compression: Compression,
        span: u64,
        uncompressed_size: u64,
    ) -> Result<Vec<u8>, IndexError> {
        let too_many =
            |what: &str| IndexError::Build(format!("too many {what} (the limit is 2^32-1)"));

        // Breadth-first numbering in name order. `order[k]` is the node of inode k + 1. The
        // links of each directory reached are sorted by name once, into `sorted`; directory
        // `order[k]`'s are `sorted[range[k]..]`, in the same order as the walk reaches them.
        let mut ino_of: Vec<u32> = vec![0; self.nodes.len()];
        let mut names: Vec<u32> = vec![0; self.nodes.len()];
        let mut order: Vec<u32> = vec![ROOT as u32];
        let mut parent: Vec<u32> = vec![1]; // per inode, directories only
        let mut sorted: Vec<u32> = Vec::new();
        let mut dir_start: Vec<usize> = Vec::new(); // per directory, in walk order
        let mut scratch: Vec<u32> = Vec::new();
        ino_of[ROOT] = 1;
        let mut k = 0;
        while k < order.len() {
            let id = order[k] as usize;
            let ino = k as u32 + 1;
            k += 1;
            if !self.nodes[id].is_dir() {
                continue;
            }
            scratch.clear();
            let mut at = self.nodes[id].first_link;
            while let Some(link) = self.links.get(at as usize) {
                scratch.push(at);
                at = link.next;
            }
            scratch.sort_unstable_by(|&a, &b| {
                self.link_name(&self.links[a as usize]).cmp(self.link_name(&self.links[b as usize]))
            });
            dir_start.push(sorted.len());
            sorted.extend_from_slice(&scratch);
            for &l in &scratch {
                let child = self.links[l as usize].node as usize;
                names[child] = names[child].saturating_add(1);
                if ino_of[child] == 0 {
                    let child_ino =
                        u32::try_from(order.len() + 1).map_err(|_| too_many("inodes"))?;
                    ino_of[child] = child_ino;
                    order.push(child as u32);
                    parent.push(ino);
                }
            }
        }
        drop(scratch);
        dir_start.push(sorted.len());

        let mut strings = StringTable::default();
        let mut attr_ids: HashMap<AttrRec, u32> = HashMap::new();
        let mut attrs = Vec::new();
        let mut inodes = Vec::with_capacity(order.len() * format::INODE_LEN);
        let mut dirents = Vec::new();
        let mut sparse = Vec::new();
        let mut xattrs = Vec::new();
        let (mut dirent_count, mut sparse_count, mut xattr_count) = (0u64, 0u64, 0u64);
        let mut dirs_seen = 0usize;

        for (k, &id) in order.iter().enumerate() {
            let id = id as usize;
            let node = &self.nodes[id];
            let ino = k as u32 + 1;
            let attr = AttrRec {
                mtime: node.mtime,
                uid: node.uid,
                gid: node.gid,
                mtime_nsec: node.mtime_nsec,
                mode: (node.mode & 0o7777) as u16,
            };
            let next_attr = attr_ids.len();
            let attr = *attr_ids.entry(attr).or_insert_with(|| {
                attr.encode(&mut attrs);
                next_attr as u32
            });
            let mut rec = InodeRec {
                kind: format::kind_code(node.kind),
                data: DATA_NONE,
                attr,
                size: node.size,
                nlink: names[id].max(1),
                a: 0,
                b: 0,
                c: 0,
            };
            match node.kind {
                EntryKind::Dir => {
                    let links = &sorted[dir_start[dirs_seen]..dir_start[dirs_seen + 1]];
                    dirs_seen += 1;
                    let child_of = |l: u32| self.links[l as usize].node as usize;
                    let subdirs =
                        links.iter().filter(|&&l| self.nodes[child_of(l)].is_dir()).count();
                    rec.nlink = u32::try_from(subdirs).unwrap_or(u32::MAX).saturating_add(2);
                    rec.a = dirent_count;
                    rec.b = u32::try_from(links.len()).map_err(|_| too_many("dirents"))?;
                    rec.c = parent[k];
                    for &l in links {
                        let name_off =
                            strings.intern_name(self.link_name(&self.links[l as usize]))?;
                        DirentRec { name_off, ino: ino_of[child_of(l)] }.encode(&mut dirents);
                    }
                    dirent_count += links.len() as u64;
                }
                EntryKind::File => {
                    match (node.data_offset, node.extra.as_ref().and_then(|e| e.sparse.as_ref())) {
                        (Some(offset), _) => {
                            rec.data = DATA_CONTIGUOUS;
                            rec.a = offset;
                        }
                        (None, None) => {}
                        (None, Some(segments)) => {
                            rec.data = DATA_SPARSE;
                            rec.a = sparse_count;
                            rec.b = u32::try_from(segments.len())
                                .map_err(|_| too_many("sparse segments"))?;
                            for s in segments {
                                SparseRec {
                                    logical: s.logical,
                                    len: s.len,
                                    stream_offset: s.stream_offset,
                                }
                                .encode(&mut sparse);
                            }
                            sparse_count += segments.len() as u64;
                        }
                    }
                }
                EntryKind::Symlink => {
                    let target = node.extra.as_ref().map_or(&[][..], |e| &e.symlink);
                    let (off, len) = strings.intern(target)?;
                    rec.a = u64::from(off);
                    rec.b = len;
                }
                EntryKind::CharDev | EntryKind::BlockDev => {
                    let rdev = node.extra.as_ref().map_or((0, 0), |e| e.rdev);
                    rec.b = rdev.0;
                    rec.c = rdev.1;
                }
                EntryKind::Fifo | EntryKind::Hardlink => {}
            }
            rec.encode(&mut inodes);
            for (name, value) in node.xattrs() {
                let (name_off, name_len) = strings.intern(name)?;
                let (value_off, value_len) = strings.intern(value)?;
                XattrRec { ino, name_off, name_len, value_off, value_len }.encode(&mut xattrs);
                xattr_count += 1;
            }
        }

        // The tree is serialized: free it (and the walk's tables) before the sections are
        // copied into one buffer, so that the peak is not the tree plus two copies.
        let blob = strings.into_blob();
        let inode_count = order.len() as u64;
        let attr_count = attr_ids.len() as u64;
        drop((ino_of, names, order, parent, sorted, dir_start, attr_ids));
        drop(std::mem::take(&mut self.nodes));
        drop(std::mem::take(&mut self.links));
        drop(std::mem::take(&mut self.names));
        drop(std::mem::take(&mut self.lookup));

        let mut points = Vec::with_capacity(self.points.len() * format::POINT_LEN);
        let mut window_sums = Vec::with_capacity(self.points.len() * format::WINDOW_SUM_LEN);
        for p in &self.points {
            p.rec.encode(&mut points);
            window_sums.extend_from_slice(&p.window_sha256);
        }
        let mut chunks = Vec::with_capacity(self.chunks.len() * format::CHUNK_LEN);
        for c in &self.chunks {
            c.encode(&mut chunks);
        }

        let mut warnings = Vec::new();
        let mut kept: Vec<&str> = self.warnings.iter().map(String::as_str).collect();
        let summary;
        if self.warnings_not_kept > 0 {
            summary = format!("... and {} more warnings, not kept", self.warnings_not_kept);
            kept.push(&summary);
        }
        for w in &kept {
            warnings.extend_from_slice(&(w.len() as u32).to_le_bytes());
            warnings.extend_from_slice(w.as_bytes());
        }

        let count = |n: u64, what: &str| u32::try_from(n).map_err(|_| too_many(what));
        let warning_count = kept.len() as u64;
        drop(kept);
        // In the version's layout order (windows last).
        let bodies: [(Section, Vec<u8>); format::SECTION_KINDS] = [
            (Section::Inodes, inodes),
            (Section::Attrs, attrs),
            (Section::Dirents, dirents),
            (Section::Strings, blob),
            (Section::Sparse, sparse),
            (Section::Xattrs, xattrs),
            (Section::Points, points),
            (Section::WindowSums, window_sums),
            (Section::Chunks, chunks),
            (Section::Warnings, warnings),
            (Section::Windows, std::mem::take(&mut self.windows)),
        ];
        debug_assert!(bodies.iter().map(|b| b.0).eq(Section::LAYOUT));
        let mut sections = [SectionEntry::default(); format::SECTION_KINDS];
        let mut offset = format::HEADER_LEN as u64;
        for (section, body) in &bodies {
            sections[*section as usize] =
                SectionEntry { offset, len: body.len() as u64, crc: crc32fast::hash(body) };
            offset += body.len() as u64;
        }
        let header = Header {
            version: format::VERSION,
            identity,
            compression,
            span,
            uncompressed_size,
            inode_count: count(inode_count, "inodes")?,
            attr_count: count(attr_count, "attribute tuples")?,
            dirent_count: count(dirent_count, "dirents")?,
            sparse_count: count(sparse_count, "sparse segments")?,
            xattr_count: count(xattr_count, "extended attributes")?,
            point_count: count(self.points.len() as u64, "access points")?,
            warning_count: count(warning_count, "warnings")?,
            chunk_count: count(self.chunks.len() as u64, "chunks")?,
            sections,
        };
        let total = usize::try_from(offset).map_err(|_| too_many("bytes"))?;
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&header.encode());
        for (_, body) in bodies {
            // Each section is freed once copied.
            out.extend_from_slice(&body);
        }
        Ok(out)
    }
}

/// Checks a sparse map: runs sorted by logical offset, not overlapping, within the file's size,
/// with no offset overflowing.
fn check_sparse(segments: &[SparseSegment], size: u64) -> Result<(), String> {
    let mut prev_end = 0u64;
    for (i, s) in segments.iter().enumerate() {
        if s.logical < prev_end {
            return Err(format!(
                "run {i} at logical offset {} overlaps or is out of order",
                s.logical
            ));
        }
        let end = s.logical.checked_add(s.len).filter(|&e| e <= size).ok_or_else(|| {
            format!(
                "run {i} ({} bytes at logical offset {}) ends past the size {size}",
                s.len, s.logical
            )
        })?;
        if s.stream_offset.checked_add(s.len).is_none() {
            return Err(format!("run {i}: stream offset {} + length overflows", s.stream_offset));
        }
        prev_end = end;
    }
    Ok(())
}

/// The strings blob, with identical strings (and identical names) stored once.
#[derive(Default)]
struct StringTable<'a> {
    blob: Vec<u8>,
    seen: HashMap<&'a [u8], u32>,
    /// The offsets of the names in `blob`, found by the names' bytes (read back from `blob`:
    /// four bytes a name, not a key of its own).
    names: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

impl<'a> StringTable<'a> {
    fn into_blob(self) -> Vec<u8> {
        self.blob
    }

    /// The offset of the length-prefixed name `s` in the blob, adding it if new.
    fn intern_name(&mut self, s: &'a [u8]) -> Result<u32, IndexError> {
        let hash = self.hasher.hash_one(s);
        if let Some(&off) = self.names.find(hash, |&o| format::read_name(&self.blob, o) == Some(s))
        {
            return Ok(off);
        }
        let too_big = || IndexError::Build("string table over 4 GiB".into());
        let len = u32::try_from(s.len()).map_err(|_| too_big())?;
        let off = u32::try_from(self.blob.len()).map_err(|_| too_big())?;
        format::put_varint(&mut self.blob, len);
        self.blob.extend_from_slice(s);
        if self.blob.len() as u64 > u64::from(u32::MAX) {
            return Err(too_big());
        }
        let (blob, hasher) = (&self.blob, &self.hasher);
        self.names.insert_unique(hash, off, |&o| {
            hasher.hash_one(format::read_name(blob, o).unwrap_or_default())
        });
        Ok(off)
    }

    /// The (offset, length) of `s` in the blob, adding it if new.
    fn intern(&mut self, s: &'a [u8]) -> Result<(u32, u32), IndexError> {
        let too_big = || IndexError::Build("string table over 4 GiB".into());
        let len = u32::try_from(s.len()).map_err(|_| too_big())?;
        if let Some(&off) = self.seen.get(s) {
            return Ok((off, len));
        }
        let off = u32::try_from(self.blob.len()).map_err(|_| too_big())?;
        if u64::from(off) + u64::from(len) > u64::from(u32::MAX) {
            return Err(too_big());
        }
        self.blob.extend_from_slice(s);
        self.seen.insert(s, off);
        Ok((off, len))
    }
}

/// An access point with its window compressed for storage (zlib format, so adler32 checks it
/// on use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressedPoint {
    /// Offset in the uncompressed stream.
    pub uncompressed: u64,
    /// Offset in the compressed file.
    pub compressed: u64,
    /// Bits to prime.
    pub bits: u8,
    /// Length of the window before compression.
    pub window_len: usize,
    /// The compressed window (empty when there is none).
    pub zwindow: Vec<u8>,
    /// SHA-256 of `zwindow` (zeros when there is no window), so that a window fetched alone
    /// is checked before it is used.
    pub window_sha256: [u8; 32],
}

impl CompressedPoint {
    /// Compresses `window` (the point's window, or a sparse version of it of the same length)
    /// for `point`, with a compressor of its own (see [`WindowCompressor`] for many points).
    pub fn new(point: &AccessPoint, window: &[u8]) -> std::io::Result<Self> {
        WindowCompressor::new().point(point, window)
    }
}

/// Compresses the windows of many access points with one zlib stream, reset between them.
/// A fresh stream allocates ~380 KB; under the daemon's fixed 128 KiB `mmap` threshold
/// ([`crate::process::release_large_allocations`]) every window then cost an `mmap`, page
/// faults on fresh memory and an `munmap` (818 of each for a 282 MB archive: a first mount
/// indexed 20–30% slower than `addonfs index`; see docs/benchmarks.md, issue 16).
pub struct WindowCompressor {
    stream: flate2::Compress,
    /// Output space, reused; each window gets an exact copy.
    scratch: Vec<u8>,
}

impl Default for WindowCompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl WindowCompressor {
    /// A compressor at [`WINDOW_ZLIB_LEVEL`], zlib format.
    pub fn new() -> Self {
        WindowCompressor {
            stream: flate2::Compress::new(flate2::Compression::new(WINDOW_ZLIB_LEVEL), true),
            scratch: Vec::new(),
        }
    }

    /// [`CompressedPoint::new`] with this compressor's stream.
    pub fn point(
        &mut self,
        point: &AccessPoint,
        window: &[u8],
    ) -> std::io::Result<CompressedPoint> {
        let zwindow = if window.is_empty() { Vec::new() } else { self.compress(window)? };
        let window_sha256 =
            if zwindow.is_empty() { [0; 32] } else { Sha256::digest(&zwindow).into() };
        Ok(CompressedPoint {
            uncompressed: point.uncompressed,
            compressed: point.compressed,
            bits: point.bits,
            window_len: window.len(),
            zwindow,
            window_sha256,
        })
    }

    /// `window` compressed as one zlib stream; the stream is reset for the next one.
    fn compress(&mut self, window: &[u8]) -> std::io::Result<Vec<u8>> {
        self.stream.reset();
        self.scratch.clear();
        loop {
            let read = usize::try_from(self.stream.total_in()).unwrap_or(usize::MAX);
            let rest = window.get(read..).unwrap_or_default();
            // A window compresses to at most a little more than itself (stored blocks).
            self.scratch.reserve(rest.len() + 1024);
            let status = self
                .stream
                .compress_vec(rest, &mut self.scratch, flate2::FlushCompress::Finish)
                .map_err(std::io::Error::other)?;
            if status == flate2::Status::StreamEnd {
                return Ok(self.scratch.clone());
            }
        }
    }
}
